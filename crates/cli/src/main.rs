//! The `enroll` command: serve, demo, migrate, doctor, user, practice.

mod config;
mod synthetic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use enroll_core::Schedule;
use enroll_hl7::{BirthSexSource, MappingOptions};
use enroll_notify::{
    EmailSender, HttpSmsSender, SmsConfig, SmsSender, SmtpConfig, SmtpMailer, SmtpSecurity,
};
use enroll_server::{
    AppState, Clock, Dispatcher, Intake, LINK_SECRET_SETTING, Links, Mailbox, MllpSettings,
    MllpTls, RunningMllp, SystemClock,
};
use enroll_store::DeliveryPolicy;
use enroll_store::{NewPractice, Source, Store, hash_token};
use jiff::Timestamp;
use rand::{Rng, RngCore};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, Overrides};

#[derive(Parser)]
#[command(
    name = "enroll",
    version,
    about = "Gets a practice's patients onto its patient portal"
)]
struct Cli {
    /// TOML configuration file (keys: database_url, listen).
    #[arg(long, global = true, env = "ENROLL_CONFIG")]
    config: Option<PathBuf>,
    /// sqlite://PATH or postgres://USER:PASSWORD@HOST/DB (overrides the file and ENROLL_DATABASE_URL).
    #[arg(long, global = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (applies migrations first).
    Serve {
        /// Address to listen on, e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Try Enroll on this machine: a SQLite file with synthetic patients and a server on 127.0.0.1.
    Demo {
        /// Folder for the demo's database.
        #[arg(long, default_value = "enroll-demo")]
        data_dir: PathBuf,
        /// HTTP port on 127.0.0.1 (0 picks a free one).
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// MLLP port on 127.0.0.1 for HL7 messages (0 picks a free one).
        #[arg(long, default_value_t = 2575)]
        mllp_port: u16,
        /// How many synthetic patients to create.
        #[arg(long, default_value_t = 1000)]
        patients: usize,
        /// Seed of the synthetic data generator.
        #[arg(long, default_value_t = 2026)]
        seed: u64,
        /// Delete the demo database and start again.
        #[arg(long)]
        reset: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Check the configuration and the database, and say what is wrong.
    Doctor,
    /// Staff users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Practices.
    Practice {
        #[command(subcommand)]
        command: PracticeCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a staff user (or give an existing one a new token) and print its API token.
    Add {
        username: String,
        #[arg(long)]
        display_name: Option<String>,
        #[arg(long, default_value = "staff", value_parser = ["staff", "admin"])]
        role: String,
    },
}

#[derive(Subcommand)]
enum PracticeCommand {
    /// Create a practice with Mon-Fri 08:00-17:00 office hours and auto invites off.
    Add {
        /// Stable code, e.g. the HL7 sending facility.
        #[arg(long)]
        code: String,
        #[arg(long)]
        name: String,
        /// IANA time zone, e.g. America/Chicago.
        #[arg(long, default_value = "America/New_York")]
        time_zone: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_words(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, without repeating a cause that the
/// message before it already quotes (sqlx and our store both say it).
fn error_words(e: &anyhow::Error) -> String {
    let mut words = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !words.contains(&text) {
            if !words.is_empty() {
                words.push_str(": ");
            }
            words.push_str(&text);
        }
    }
    words
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ENROLL_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { listen } => {
            let config = load_config(&cli.config, &cli.database_url, listen)?;
            serve(&config).await
        }
        Command::Demo {
            data_dir,
            port,
            mllp_port,
            patients,
            seed,
            reset,
        } => demo(&data_dir, port, mllp_port, patients, seed, reset).await,
        Command::Migrate => {
            let config = load_config(&cli.config, &cli.database_url, None)?;
            let store = open(&config.database_url).await?;
            println!(
                "migrations applied ({} in all) to the {} database",
                store.applied_migrations().await?,
                store.engine()
            );
            Ok(())
        }
        Command::Doctor => doctor(&cli.config, &cli.database_url).await,
        Command::User {
            command:
                UserCommand::Add {
                    username,
                    display_name,
                    role,
                },
        } => {
            let config = load_config(&cli.config, &cli.database_url, None)?;
            let store = open(&config.database_url).await?;
            let token = add_user(&store, &username, display_name.as_deref(), &role).await?;
            println!("API token for {username} (shown once; store it safely):\n{token}");
            Ok(())
        }
        Command::Practice {
            command:
                PracticeCommand::Add {
                    code,
                    name,
                    time_zone,
                },
        } => {
            let config = load_config(&cli.config, &cli.database_url, None)?;
            let store = open(&config.database_url).await?;
            let schedule = Schedule::office_hours(&time_zone);
            schedule.validate().context("the practice's schedule")?;
            let practice = store
                .create_practice(
                    &NewPractice {
                        code,
                        name,
                        schedule,
                    },
                    Timestamp::now(),
                )
                .await?;
            println!(
                "practice {} created (id {}), auto invites off",
                practice.code, practice.id
            );
            Ok(())
        }
    }
}

fn load_config(
    file: &Option<PathBuf>,
    database_url: &Option<String>,
    listen: Option<SocketAddr>,
) -> anyhow::Result<Config> {
    config::load(
        file.as_deref(),
        &Overrides {
            database_url: database_url.clone(),
            listen,
        },
    )
}

/// Connects and migrates.
async fn open(database_url: &str) -> anyhow::Result<Store> {
    let store = Store::connect(database_url)
        .await
        .with_context(|| format!("cannot open the database ({})", redact(database_url)))?;
    store.migrate().await.context("cannot apply migrations")?;
    Ok(store)
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}

async fn serve(config: &Config) -> anyhow::Result<()> {
    let store = open(&config.database_url).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let links = Links::new(&config.public_url(), &link_secret(&store).await?);
    let email: Arc<dyn EmailSender> = Arc::new(
        SmtpMailer::new(&smtp_config(&config.smtp)?)
            .map_err(|e| anyhow::anyhow!("SMTP settings: {e}"))?,
    );
    let sms: Option<Arc<dyn SmsSender>> = if config.sms.enabled() {
        let sender = HttpSmsSender::new(&sms_config(&config.sms))
            .map_err(|e| anyhow::anyhow!("SMS settings: {e}"))?;
        Some(Arc::new(sender))
    } else {
        None
    };
    let mut state = AppState::new(store.clone(), clock.clone(), links.clone());
    state.sms_webhook_secret = config.sms.webhook_secret.clone();
    state.templates = enroll_server::templates::load(&store).await?;
    state.intake = Arc::new(Intake::new(
        store.clone(),
        clock.clone(),
        mapping_options(&config.mllp)?,
    ));
    let mllp = start_mllp(&state, &config.mllp).await?;
    let dispatcher = dispatcher(&state, email, sms, &config.email_from, &config.delivery)
        .spawn(Duration::from_millis(config.delivery.poll_interval_ms));
    let server = enroll_server::spawn(config.listen, state)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(addr = %server.addr, engine = store.engine(), "enroll is serving");
    announce(&format!("Enroll is serving on http://{}", server.addr));
    if let Some(mllp) = &mllp {
        announce(&format!("HL7 MLLP listener on {}", mllp.addr));
        if let Some(tls) = mllp.tls_addr {
            announce(&format!("HL7 MLLP over TLS on {tls}"));
        }
    }
    wait_for_shutdown().await;
    // The listener first: messages in hand are finished and answered.
    if let Some(mllp) = mllp {
        mllp.stop().await;
    }
    server.stop().await?;
    dispatcher.stop().await;
    store.close().await;
    Ok(())
}

fn mapping_options(settings: &config::MllpConfig) -> anyhow::Result<MappingOptions> {
    let birth_sex_source = match settings.birth_sex_source.trim() {
        "obx_then_pid8" => BirthSexSource::ObxThenPid8,
        "pid8" => BirthSexSource::Pid8Only,
        other => anyhow::bail!("mllp.birth_sex_source {other:?} is not one of obx_then_pid8, pid8"),
    };
    Ok(MappingOptions {
        birth_sex_source,
        mrn_assigning_authority: settings
            .mrn_assigning_authority
            .clone()
            .filter(|a| !a.trim().is_empty()),
    })
}

fn mllp_settings(settings: &config::MllpConfig) -> anyhow::Result<MllpSettings> {
    let tls = match (&settings.tls_listen, &settings.tls_cert, &settings.tls_key) {
        (None, _, _) => None,
        (Some(listen), Some(cert), Some(key)) => Some(MllpTls {
            listen: *listen,
            cert_path: cert.clone(),
            key_path: key.clone(),
        }),
        (Some(_), _, _) => anyhow::bail!(
            "mllp.tls_listen is set: set mllp.tls_cert and mllp.tls_key to PEM files too"
        ),
    };
    if settings.max_message_bytes < 1024 {
        anyhow::bail!("mllp.max_message_bytes must be at least 1024");
    }
    Ok(MllpSettings {
        listen: settings.listen,
        tls,
        max_message_bytes: settings.max_message_bytes,
        idle_timeout: Duration::from_secs(settings.idle_timeout_secs.max(1)),
    })
}

async fn start_mllp(
    state: &AppState,
    settings: &config::MllpConfig,
) -> anyhow::Result<Option<RunningMllp>> {
    if !settings.enabled {
        return Ok(None);
    }
    let running = enroll_server::mllp::start(state.intake.clone(), &mllp_settings(settings)?)
        .await
        .map_err(|e| {
            anyhow::anyhow!("{e} (set mllp.listen to another address, or mllp.enabled = false)")
        })?;
    Ok(Some(running))
}

/// The secret that signs unsubscribe links: made once, kept in the database
/// so every instance and every restart uses the same one.
async fn link_secret(store: &Store) -> anyhow::Result<Vec<u8>> {
    let mut fresh = [0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    let secret = store
        .setting_or_insert(LINK_SECRET_SETTING, &hex::encode(fresh))
        .await?;
    hex::decode(secret).context("the stored link-signing secret is not hex")
}

fn dispatcher(
    state: &AppState,
    email: Arc<dyn EmailSender>,
    sms: Option<Arc<dyn SmsSender>>,
    email_from: &str,
    settings: &config::DeliverySettings,
) -> Dispatcher {
    let policy = DeliveryPolicy {
        max_attempts: settings.max_attempts.max(1),
        sms_enabled: sms.is_some(),
        ..DeliveryPolicy::default()
    };
    Dispatcher {
        store: state.store.clone(),
        clock: state.clock.clone(),
        email,
        sms,
        templates: state.templates.clone(),
        links: state.links.clone(),
        email_from: email_from.to_string(),
        policy,
        worker: format!(
            "enroll-{}-{:08x}",
            std::process::id(),
            rand::rng().next_u32()
        ),
        batch: settings.batch.max(1),
        concurrency: settings.concurrency.max(1),
    }
}

fn smtp_config(settings: &config::SmtpSettings) -> anyhow::Result<SmtpConfig> {
    let security = match settings.security.to_ascii_lowercase().as_str() {
        "plain" | "none" => SmtpSecurity::Plain,
        "starttls" => SmtpSecurity::StartTls,
        "tls" | "ssl" | "implicit" => SmtpSecurity::Tls,
        other => bail!("smtp.security {other:?} is not known: use starttls, tls or plain"),
    };
    Ok(SmtpConfig {
        host: settings.host.clone(),
        port: settings.port,
        security,
        username: settings.username.clone(),
        password: settings.password.clone(),
        pool_size: settings.pool_size.max(1),
        timeout_secs: settings.timeout_secs.max(1),
    })
}

fn sms_config(settings: &config::SmsSettings) -> SmsConfig {
    SmsConfig {
        base_url: settings
            .base_url
            .clone()
            .unwrap_or_else(|| "https://api.twilio.com".into()),
        account_sid: settings.account_sid.clone(),
        auth_token: settings.auth_token.clone(),
        from: settings.from.clone(),
        timeout_secs: 15,
    }
}

async fn wait_for_shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn new_token() -> String {
    hex::encode(rand::rng().random::<[u8; 32]>())
}

async fn add_user(
    store: &Store,
    username: &str,
    display_name: Option<&str>,
    role: &str,
) -> anyhow::Result<String> {
    if username.trim().is_empty() {
        bail!("the username must not be blank");
    }
    let token = new_token();
    store
        .put_staff_user(
            username.trim(),
            display_name.unwrap_or(username),
            role,
            &hash_token(&token),
            Timestamp::now(),
        )
        .await?;
    Ok(token)
}

async fn doctor(file: &Option<PathBuf>, database_url: &Option<String>) -> anyhow::Result<()> {
    let mut failures = 0;
    let config = match load_config(file, database_url, None) {
        Ok(c) => {
            println!(
                "ok    configuration: database {} , listen {}",
                redact(&c.database_url),
                c.listen
            );
            c
        }
        Err(e) => {
            println!("FAIL  {}", error_words(&e));
            bail!("1 problem found");
        }
    };
    match open(&config.database_url).await {
        Ok(store) => {
            println!(
                "ok    database: {} reachable, {} migrations applied",
                store.engine(),
                store.applied_migrations().await?
            );
            // The store validates each schedule as it reads the practice,
            // so a bad one fails the whole list, with an error naming it.
            match store.practices().await {
                Ok(practices) => {
                    for practice in practices {
                        println!(
                            "ok    practice {}: schedule in {}, auto invites {}",
                            practice.code,
                            practice.schedule.schedule.time_zone,
                            if practice.auto_invites_on {
                                "on"
                            } else {
                                "off"
                            }
                        );
                    }
                }
                Err(e) => {
                    failures += 1;
                    println!("FAIL  practices: {e}");
                }
            }
        }
        Err(e) => {
            failures += 1;
            println!("FAIL  {}", error_words(&e));
            println!("      {}", database_hint(&config.database_url));
        }
    }
    failures += check_smtp(&config).await;
    if failures > 0 {
        bail!("{failures} problem(s) found");
    }
    println!("everything checked is in order");
    Ok(())
}

/// Connects to the SMTP server the way the dispatcher will; 1 on failure.
async fn check_smtp(config: &Config) -> usize {
    let where_ = format!(
        "{}:{} ({})",
        config.smtp.host, config.smtp.port, config.smtp.security
    );
    let mailer = smtp_config(&config.smtp)
        .and_then(|c| SmtpMailer::new(&c).map_err(|e| anyhow::anyhow!("{e}")));
    let result = match mailer {
        Ok(mailer) => mailer.check().await.map_err(|e| anyhow::anyhow!("{e}")),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            println!("ok    smtp: {where_} answers");
            0
        }
        Err(e) => {
            println!("FAIL  smtp: {where_}: {}", error_words(&e));
            println!(
                "      invites cannot be emailed: check [smtp] host, port, security and credentials"
            );
            1
        }
    }
}

/// What to check when the database cannot be opened.
fn database_hint(url: &str) -> &'static str {
    if url.starts_with("sqlite:") {
        "check that the folder of the SQLite file exists and that this user may write to it"
    } else if url.starts_with("postgres") {
        "check that PostgreSQL is running at that host and port, and the user, password and database name"
    } else {
        "set database_url to sqlite://PATH or postgres://USER:PASSWORD@HOST/DB"
    }
}

async fn demo(
    data_dir: &Path,
    port: u16,
    mllp_port: u16,
    count: usize,
    seed: u64,
    reset: bool,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let db_path = data_dir.join("enroll.db");
    if reset {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
        }
    }
    let store = open(&format!("sqlite://{}", db_path.display())).await?;
    let now = Timestamp::now();
    if store.count_patients().await? == 0 {
        load_demo_data(&store, count, seed, now).await?;
    } else {
        announce(&format!(
            "Reusing the demo database in {} (run with --reset to start again)",
            data_dir.display()
        ));
    }
    let token = add_user(&store, "demo", Some("Demo front desk"), "admin").await?;
    // Bind first, so the links in the invites carry the real port.
    let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .with_context(|| format!("cannot listen on 127.0.0.1:{port} (try --port 0)"))?;
    let addr = listener.local_addr()?;
    drop(listener);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let links = Links::new(&format!("http://{addr}"), &link_secret(&store).await?);
    let mailbox = Arc::new(Mailbox::default());
    let mut state = AppState::new(store.clone(), clock, links);
    state.mailbox = Some(mailbox.clone());
    state.templates = enroll_server::templates::load(&store).await?;
    let mllp_config = config::MllpConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], mllp_port)),
        ..config::MllpConfig::default()
    };
    let mllp = start_mllp(&state, &mllp_config)
        .await?
        .context("the demo's MLLP listener did not start")?;
    let settings = config::DeliverySettings {
        poll_interval_ms: 500,
        ..config::DeliverySettings::default()
    };
    let running = dispatcher(
        &state,
        mailbox.clone(),
        Some(mailbox),
        "Riverside Family Medicine <portal@riverside.example>",
        &settings,
    )
    .spawn(Duration::from_millis(settings.poll_interval_ms));
    let server = enroll_server::spawn(addr, state)
        .await
        .with_context(|| format!("cannot listen on {addr} (try --port 0)"))?;
    print_demo_banner(server.addr, mllp.addr, &token);
    wait_for_shutdown().await;
    mllp.stop().await;
    server.stop().await?;
    running.stop().await;
    store.close().await;
    Ok(())
}

async fn load_demo_data(
    store: &Store,
    count: usize,
    seed: u64,
    now: Timestamp,
) -> anyhow::Result<()> {
    let schedule = Schedule::office_hours("America/New_York");
    let practice = store
        .create_practice(
            &NewPractice {
                code: "RIVERSIDE".into(),
                name: "Riverside Family Medicine".into(),
                schedule: schedule.clone(),
            },
            now,
        )
        .await?;
    let today = schedule
        .validate()
        .context("demo schedule")?
        .local_date(now);
    let source = Source::new("demo", Some("demo-loader"));
    for patient in synthetic::patients(seed, count, today) {
        let saved = store
            .create_patient(
                practice.id,
                &patient.mrn,
                &patient.demographics,
                &source,
                now,
            )
            .await?;
        if patient.activated {
            store.mark_activated(saved.patient.id, &source, now).await?;
        }
    }
    announce(&format!(
        "Loaded {count} synthetic patients into practice RIVERSIDE (id {}); auto invites are off until you turn them on",
        practice.id
    ));
    Ok(())
}

/// Prints what a server says about itself. A closed standard output (a pipe
/// whose reader went away: `enroll demo | head -3`, a supervisor that
/// read the address and closed the pipe) must not stop the server, which
/// `println!` would do by panicking on the broken pipe.
fn announce(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

fn print_demo_banner(addr: SocketAddr, mllp: SocketAddr, token: &str) {
    announce(&format!(
        "\nEnroll demo is running on http://{addr}\n\
         API token (user demo): {token}\n\
         Mailbox (every email and text the demo sends): http://{addr}/mailbox\n\
         HL7 MLLP listener: {mllp} (sending facility MSH-4 = RIVERSIDE)\n\n\
         Try:\n  \
         curl -H 'Authorization: Bearer {token}' 'http://{addr}/api/patients?name=smi'\n  \
         curl -H 'Authorization: Bearer {token}' http://{addr}/api/patients/1\n  \
         curl -X POST -H 'Authorization: Bearer {token}' http://{addr}/api/patients/1/enroll\n\n\
         Press Ctrl-C to stop."
    ));
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(
            redact("postgres://enroll:secret@db/enroll"),
            "postgres://enroll:***@db/enroll"
        );
        assert_eq!(redact("sqlite://enroll.db"), "sqlite://enroll.db");
    }
}
