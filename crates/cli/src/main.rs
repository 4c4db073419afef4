//! The `enroll` command: serve, demo, migrate, doctor, user, practice, webhook.

mod config;
mod import;
mod synthetic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use enroll_core::{E164Phone, IfKnown, IntakeEvent, PatientChange, Role, Schedule};
use enroll_notify::SmtpMailer;
use enroll_server::{
    Application, DatabaseUrl, DeliveryConfig, Mailbox, MllpConfig, RunningApplication, Runtime,
    Settings,
};
use enroll_server::{hash_password, random_secret};
use enroll_store::{
    NewPractice, NewStaffUser, Source, StaffChange, Store, Synchronous, hash_token,
};
use jiff::Timestamp;
use rand::Rng;
use tracing_subscriber::EnvFilter;

use crate::config::Overrides;

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
    /// Import a roster export (CSV) into a practice: charts are added and
    /// updated by MRN, and nothing is sent (the go-live action invites).
    Import {
        /// The CSV file; its first line names the columns (mrn, first_name,
        /// last_name, date_of_birth, birth_sex, zip, email, and optionally
        /// cell_phone and preferred_language, in any order and common spellings).
        file: PathBuf,
        /// The practice's code.
        #[arg(long)]
        practice: String,
        /// Names what a header of the file holds, e.g. --map "Patient Number=mrn"
        /// or --map "Notes=ignore" (repeat for each header).
        #[arg(long = "map", value_name = "HEADER=COLUMN")]
        map: Vec<String>,
    },
    /// A practice's signed webhooks (as `/api/practices/{id}/webhooks`).
    Webhook {
        #[command(subcommand)]
        command: WebhookCommand,
    },
}

#[derive(Subcommand)]
enum WebhookCommand {
    /// Add an endpoint; prints its id and its secret, once. The secret is
    /// always generated here (a secret typed on the command line would stay
    /// in the shell's history; the API takes a given one).
    Add {
        /// The practice's code.
        #[arg(long)]
        practice: String,
        /// https://..., or http:// to this machine only.
        url: String,
        /// An event to send (patient.activated, invite.sent, invite.failed,
        /// invite.suppressed); repeat for several; none: all of them.
        #[arg(long = "event")]
        events: Vec<String>,
    },
    /// List the practice's endpoints (never their secrets).
    List {
        #[arg(long)]
        practice: String,
    },
    /// Remove an endpoint and its deliveries.
    Remove {
        #[arg(long)]
        practice: String,
        id: i64,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a staff user; prints a generated password and an API token, once.
    Add {
        username: String,
        #[arg(long)]
        display_name: Option<String>,
        /// front-desk or admin.
        #[arg(long, default_value = "front-desk", value_parser = parse_role)]
        role: Role,
        /// A practice (its code) the user works for; repeat for several. An
        /// admin with none works for every practice.
        #[arg(long = "practice")]
        practices: Vec<String>,
        /// Read the password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// API tokens are never shown again after creation: `--rotate` issues a
    /// new one (the old one stops working at once).
    Token {
        username: String,
        #[arg(long)]
        rotate: bool,
    },
    /// Give the user a new generated password (their sessions end).
    Password { username: String },
    /// Disable the user: sessions end, the token stops working.
    Disable { username: String },
    /// Enable a disabled user again.
    Enable { username: String },
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
            serve(config).await
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
            let store = open(&config).await?;
            println!(
                "migrations applied ({} in all) to the {} database",
                store.applied_migrations().await?,
                store.engine()
            );
            Ok(())
        }
        Command::Doctor => doctor(&cli.config, &cli.database_url).await,
        Command::User { command } => {
            let config = load_config(&cli.config, &cli.database_url, None)?;
            let store = open(&config).await?;
            user_command(&store, command).await
        }
        Command::Import {
            file,
            practice,
            map,
        } => {
            let config = load_config(&cli.config, &cli.database_url, None)?;
            let store = open(&config).await?;
            import::run(&store, &file, &practice, &map).await
        }
        Command::Webhook { command } => {
            let config = load_config(&cli.config, &cli.database_url, None)?;
            let store = open(&config).await?;
            webhook_command(&store, command).await
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
            let store = open(&config).await?;
            let schedule = Schedule::office_hours(&time_zone);
            schedule.validate().context("the practice's schedule")?;
            let practice = store
                .create_practice(
                    &NewPractice {
                        code,
                        name,
                        schedule,
                    },
                    CLI_ACTOR,
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
) -> anyhow::Result<Settings> {
    config::load(
        file.as_deref(),
        &Overrides {
            database_url: database_url.clone(),
            listen,
        },
    )
}

/// Connects to the configured database (SQLite with `[sqlite]
/// synchronous`, full by default) and migrates.
async fn open(config: &Settings) -> anyhow::Result<Store> {
    Ok(enroll_server::app::open(&config.database_url, config.sqlite.synchronous).await?)
}

async fn serve(config: Settings) -> anyhow::Result<()> {
    let app = Application::build(config, Runtime::production()).await?;
    let running = app.start().await?;
    tracing::info!(addr = %running.http_addr, engine = running.state().store.engine(), "enroll is serving");
    announce(&format!(
        "Enroll is serving on http://{}",
        running.http_addr
    ));
    if let Some(mllp) = running.mllp_addr {
        announce(&format!("HL7 MLLP listener on {mllp}"));
    }
    if let Some(tls) = running.mllp_tls_addr {
        announce(&format!("HL7 MLLP over TLS on {tls}"));
    }
    wait_for_shutdown().await;
    running.stop().await?;
    Ok(())
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

fn parse_role(name: &str) -> Result<Role, String> {
    Role::from_name(name).ok_or_else(|| format!("{name:?} is not a role: use front-desk or admin"))
}

fn new_token() -> String {
    hex::encode(rand::rng().random::<[u8; 32]>())
}

/// A new staff user: the password (generated unless given) and the API
/// token, both shown once and stored only as hashes.
struct NewUser {
    password: String,
    token: String,
}

async fn add_user(
    store: &Store,
    username: &str,
    display_name: Option<&str>,
    role: Role,
    practice_ids: &[i64],
    password: Option<String>,
) -> anyhow::Result<NewUser> {
    let password = password.unwrap_or_else(|| random_secret(9));
    if password.chars().count() < 12 {
        bail!("the password must be at least 12 characters");
    }
    let token = new_token();
    let password_hash =
        hash_password(&password).map_err(|e| anyhow!("cannot hash the password: {e}"))?;
    store
        .add_staff_user(
            &NewStaffUser {
                username: username.trim(),
                display_name: display_name.unwrap_or(username).trim(),
                role,
                password_hash: Some(&password_hash),
                token_hash: Some(&hash_token(&token)),
                practice_ids,
            },
            CLI_ACTOR,
            Timestamp::now(),
        )
        .await?;
    Ok(NewUser { password, token })
}

/// Who the audit log names for what was done on the command line.
pub(crate) const CLI_ACTOR: &str = "enroll (command line)";

async fn webhook_command(store: &Store, command: WebhookCommand) -> anyhow::Result<()> {
    let code = match &command {
        WebhookCommand::Add { practice, .. }
        | WebhookCommand::List { practice }
        | WebhookCommand::Remove { practice, .. } => practice.clone(),
    };
    let practice = store.practice_by_code(&code).await?.with_context(|| {
        format!("there is no practice with code {code:?} (see `enroll practice add`)")
    })?;
    match command {
        WebhookCommand::Add { url, events, .. } => {
            enroll_notify::check_webhook_url(&url).map_err(|words| anyhow!("url: {words}"))?;
            let asked = (!events.is_empty()).then_some(events.as_slice());
            let events = enroll_core::parse_subscriptions(asked)
                .map_err(|words| anyhow!("--event: {words}"))?;
            let secret = random_secret(32);
            let endpoint = store
                .add_webhook_endpoint(
                    &enroll_store::NewWebhookEndpoint {
                        practice_id: practice.id,
                        url: url.trim(),
                        secret: &secret,
                        events: &events,
                        created_by: CLI_ACTOR,
                    },
                    Timestamp::now(),
                )
                .await?;
            println!(
                "webhook endpoint {} added for practice {}\nsecret (shown once; the receiver checks Enroll-Signature with it): {secret}",
                endpoint.id, practice.code
            );
        }
        WebhookCommand::List { .. } => {
            for endpoint in store.webhook_endpoints(practice.id).await? {
                let events: Vec<&str> = endpoint.events.iter().map(|e| e.key()).collect();
                println!(
                    "{}\t{}\t{}\t{}",
                    endpoint.id,
                    if endpoint.enabled { "on" } else { "off" },
                    endpoint.url,
                    events.join(",")
                );
            }
        }
        WebhookCommand::Remove { id, .. } => {
            store
                .remove_webhook_endpoint(practice.id, id, CLI_ACTOR, Timestamp::now())
                .await?
                .with_context(|| {
                    format!("practice {} has no webhook endpoint {id}", practice.code)
                })?;
            println!("webhook endpoint {id} removed");
        }
    }
    Ok(())
}

async fn user_command(store: &Store, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            username,
            display_name,
            role,
            practices,
            password_stdin,
        } => {
            let mut ids = Vec::new();
            for code in &practices {
                let practice = store.practice_by_code(code).await?.with_context(|| {
                    format!("there is no practice with code {code:?} (see `enroll practice add`)")
                })?;
                ids.push(practice.id);
            }
            let password = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                Some(line.trim_end_matches(['\r', '\n']).to_string())
            } else {
                None
            };
            let shown_password = password.is_none();
            let user = add_user(
                store,
                &username,
                display_name.as_deref(),
                role,
                &ids,
                password,
            )
            .await?;
            if shown_password {
                println!("Password for {username} (shown once): {}", user.password);
            }
            println!(
                "API token for {username} (shown once; store it safely):\n{}",
                user.token
            );
        }
        UserCommand::Token { username, rotate } => {
            let user = known_user(store, &username).await?;
            if !rotate {
                bail!(
                    "API tokens are shown only when made; run with --rotate for a new one (the old one stops working)"
                );
            }
            let token = new_token();
            change_user(store, user.id, StaffChange::Token(&hash_token(&token))).await?;
            println!(
                "New API token for {username} (shown once; the old one no longer works):\n{token}"
            );
        }
        UserCommand::Password { username } => {
            let user = known_user(store, &username).await?;
            let password = random_secret(9);
            let hash =
                hash_password(&password).map_err(|e| anyhow!("cannot hash the password: {e}"))?;
            change_user(store, user.id, StaffChange::Password(&hash)).await?;
            println!("New password for {username} (shown once): {password}");
        }
        UserCommand::Disable { username } => {
            let user = known_user(store, &username).await?;
            change_user(store, user.id, StaffChange::Disabled(true)).await?;
            println!(
                "{username} is disabled: signed out everywhere, the API token no longer works"
            );
        }
        UserCommand::Enable { username } => {
            let user = known_user(store, &username).await?;
            change_user(store, user.id, StaffChange::Disabled(false)).await?;
            println!("{username} is enabled again");
        }
    }
    Ok(())
}

/// A change to an account, audited as the command line's.
async fn change_user(store: &Store, user_id: i64, change: StaffChange<'_>) -> anyhow::Result<()> {
    Ok(store
        .change_staff(user_id, change, CLI_ACTOR, Timestamp::now())
        .await?)
}

async fn known_user(store: &Store, username: &str) -> anyhow::Result<enroll_store::StaffUser> {
    Ok(store
        .staff_account(username)
        .await?
        .with_context(|| format!("there is no staff user {username:?}"))?
        .user)
}

/// What `enroll doctor` says about SQLite's `[sqlite] synchronous`.
fn durability_words(synchronous: Synchronous) -> String {
    match synchronous {
        Synchronous::Full => {
            "ok    sqlite: synchronous = full (every commit fsynced: an ACK survives a power loss)".into()
        }
        Synchronous::Normal => "note  sqlite: synchronous = normal (a power loss can undo the last \
             ACKed messages and recorded sends; set [sqlite] synchronous = \"full\" unless the disk \
             protects its cache)"
            .into(),
    }
}

async fn doctor(file: &Option<PathBuf>, database_url: &Option<String>) -> anyhow::Result<()> {
    let mut failures = 0;
    let config = match load_config(file, database_url, None) {
        Ok(c) => {
            println!(
                "ok    configuration: database {} , listen {}",
                c.database_url.redacted(),
                c.listen
            );
            c
        }
        Err(e) => {
            println!("FAIL  {}", error_words(&e));
            bail!("1 problem found");
        }
    };
    match open(&config).await {
        Ok(store) => {
            println!(
                "ok    database: {} reachable, {} migrations applied",
                store.engine(),
                store.applied_migrations().await?
            );
            if let Some(synchronous) = store.synchronous().await? {
                println!("{}", durability_words(synchronous));
            }
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
            println!("      {}", config.database_url.hint());
        }
    }
    check_http(&config);
    failures += check_mllp(&config.mllp);
    failures += check_smtp(&config).await;
    if failures > 0 {
        bail!("{failures} problem(s) found");
    }
    println!("everything checked is in order");
    Ok(())
}

/// Says whether the HTTP listeners speak TLS, and warns (without failing:
/// a TLS proxy in front may do it) when one that other machines can reach
/// speaks plain HTTP.
fn check_http(config: &enroll_server::Settings) {
    let listeners = std::iter::once(("listen", config.listen)).chain(
        config
            .http
            .patient_listen
            .map(|a| ("http.patient_listen", a)),
    );
    for (key, addr) in listeners {
        if config.http.tls_cert.is_some() {
            println!("ok    HTTP: {key} {addr} speaks HTTPS only");
        } else if addr.ip().is_loopback() {
            println!("ok    HTTP: {key} {addr} is this machine only (plain HTTP)");
        } else {
            println!(
                "WARN  HTTP: {key} {addr} is reachable from other machines in plain HTTP: \
                 set http.tls_cert and http.tls_key, or keep a TLS proxy in front"
            );
        }
    }
}

/// Says who may send HL7 to the MLLP listeners, and warns when a port
/// other machines can reach takes patient changes from any of them or in
/// clear; 1 when `[[mllp.senders]]` cannot be used.
fn check_mllp(mllp: &MllpConfig) -> usize {
    if !mllp.enabled {
        println!("ok    mllp: off");
        return 0;
    }
    let senders =
        match enroll_server::Senders::from_rules(&mllp.senders, mllp.tls_client_ca.is_some()) {
            Ok(senders) => senders,
            Err(e) => {
                println!("FAIL  mllp: {e}");
                return 1;
            }
        };
    let plain = ("mllp.listen", mllp.listen, &mllp.allow, false);
    let tls = mllp.tls_listen.map(|addr| {
        (
            "mllp.tls_listen",
            addr,
            mllp.tls_allow.as_ref().unwrap_or(&mllp.allow),
            true,
        )
    });
    for (key, addr, allow, encrypted) in std::iter::once(plain).chain(tls) {
        if addr.ip().is_loopback() {
            println!("ok    mllp: {key} {addr} is this machine only");
            continue;
        }
        if allow.is_empty() && senders.is_open() {
            println!(
                "WARN  mllp: {key} {addr} takes patient changes from any machine that can reach \
                 it: list the EHR's addresses in mllp.allow or [[mllp.senders]]"
            );
        } else if allow.is_empty() {
            println!("ok    mllp: {key} {addr} takes the facilities in [[mllp.senders]] only");
        } else {
            println!(
                "ok    mllp: {key} {addr} takes connections from {} address block(s)",
                allow.len()
            );
        }
        if !encrypted {
            println!(
                "WARN  mllp: {key} {addr} carries HL7 in clear: keep it on a trusted network, or \
                 send over mllp.tls_listen"
            );
        } else if mllp.tls_client_ca.is_some() {
            println!("ok    mllp: {key} {addr} asks every sender for a client certificate");
        }
    }
    if !senders.is_open() {
        let n = mllp.senders.len();
        let facilities = if n == 1 { "facility" } else { "facilities" };
        println!("ok    mllp: [[mllp.senders]] lists {n} sending {facilities}; others are refused");
    }
    0
}

/// Connects to the SMTP server the way the dispatcher will; 1 on failure.
async fn check_smtp(config: &Settings) -> usize {
    let where_ = format!(
        "{}:{} ({})",
        config.smtp.host, config.smtp.port, config.smtp.security
    );
    let result = match SmtpMailer::new(&config.smtp) {
        Ok(mailer) => mailer.check().await.map_err(|e| anyhow::anyhow!("{e}")),
        Err(e) => Err(anyhow::anyhow!("{e}")),
    };
    if config.smtp.is_plain_over_network() {
        println!(
            "WARN  smtp: {where_} is reached without TLS: invites (a first name and the activation link) cross the network in clear; use security = \"starttls\" or \"tls\""
        );
    }
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
    let store = open_demo_store(&db_path).await?;
    let now = Timestamp::now();
    if store.count_patients().await? == 0 {
        load_demo_data(&store, count, seed, now).await?;
    } else {
        announce(&format!(
            "Reusing the demo database in {} (run with --reset to start again)",
            data_dir.display()
        ));
    }
    let sign_ins = demo_users(&store).await?;
    let running = start_demo(store.clone(), port, mllp_port).await?;
    let mllp = running
        .mllp_addr
        .context("the demo's MLLP listener did not start")?;
    print_demo_banner(running.http_addr, mllp, &sign_ins);
    wait_for_shutdown().await;
    running.stop().await?;
    store.close().await;
    Ok(())
}

/// The demo's database. `synchronous = normal`, an explicit choice: the
/// demo's data is made up and reloaded with `--reset`, so a power loss that
/// undoes its last commits costs nothing, and the demo stays quick on a
/// laptop's disk. `enroll serve` keeps the default, `full`.
async fn open_demo_store(db_path: &Path) -> anyhow::Result<Store> {
    let url = DatabaseUrl::from(format!("sqlite://{}", db_path.display()));
    Ok(enroll_server::app::open(&url, Synchronous::Normal).await?)
}

/// The demo's Enroll: everything on 127.0.0.1, invites to the mailbox page.
async fn start_demo(store: Store, port: u16, mllp_port: u16) -> anyhow::Result<RunningApplication> {
    let settings = Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        email_from: "Riverside Family Medicine <portal@riverside.example>".into(),
        mllp: MllpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], mllp_port)),
            ..MllpConfig::default()
        },
        delivery: DeliveryConfig {
            poll_interval_ms: 500,
            ..DeliveryConfig::default()
        },
        ..Settings::default()
    };
    let runtime = Runtime {
        store: Some(store),
        mailbox: Some(Arc::new(Mailbox::default())),
        ..Runtime::production()
    };
    let app = Application::build(settings, runtime)
        .await
        .context("the demo cannot start (try --port 0 --mllp-port 0)")?;
    Ok(app.start().await?)
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
            CLI_ACTOR,
            now,
        )
        .await?;
    // A number from the range set aside for fiction (555-0100 to 0199).
    let phone = E164Phone::parse("(617) 555-0100")
        .map_err(|_| anyhow::anyhow!("the demo practice phone is not a phone number"))?;
    store.set_practice_phone(practice.id, Some(&phone)).await?;
    let today = schedule
        .validate()
        .context("demo schedule")?
        .local_date(now);
    let source = Source::new("demo", Some("demo-loader"));
    for patient in synthetic::patients(seed, count, today) {
        let event = IntakeEvent::Register {
            patient: PatientChange::replacing(&patient.mrn, &patient.demographics),
            if_known: IfKnown::Refuse,
        };
        let saved = store
            .apply_intake(practice.id, &event, &source, now)
            .await?
            .into_saved()?;
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

/// What the demo prints so anyone can sign in: fresh each start.
struct DemoSignIns {
    front_desk: String,
    admin: String,
    token: String,
}

/// The demo's users: `frontdesk` (front desk of every demo practice),
/// `admin` (administrator of all) and `demo` (the API token's user). Their
/// passwords and the token are made anew at every start.
async fn demo_users(store: &Store) -> anyhow::Result<DemoSignIns> {
    let practice_ids: Vec<i64> = store.practices().await?.iter().map(|p| p.id).collect();
    let mut secrets = Vec::new();
    for (username, name, role, ids) in [
        (
            "frontdesk",
            "Front Desk",
            Role::FrontDesk,
            practice_ids.as_slice(),
        ),
        ("admin", "Demo Administrator", Role::Admin, &[][..]),
        ("demo", "Demo API user", Role::Admin, &[][..]),
    ] {
        let password = random_secret(9);
        let token = new_token();
        match store.staff_account(username).await? {
            Some(account) => {
                let hash = hash_password(&password)
                    .map_err(|e| anyhow!("cannot hash the password: {e}"))?;
                change_user(store, account.user.id, StaffChange::Password(&hash)).await?;
                change_user(
                    store,
                    account.user.id,
                    StaffChange::Token(&hash_token(&token)),
                )
                .await?;
                change_user(store, account.user.id, StaffChange::Disabled(false)).await?;
            }
            None => {
                add_user(
                    store,
                    username,
                    Some(name),
                    role,
                    ids,
                    Some(password.clone()),
                )
                .await?;
                let id = known_user(store, username).await?.id;
                change_user(store, id, StaffChange::Token(&hash_token(&token))).await?;
            }
        }
        secrets.push((password, token));
    }
    let mut secrets = secrets.into_iter();
    let (front_desk, _) = secrets.next().context("demo users")?;
    let (admin, _) = secrets.next().context("demo users")?;
    let (_, token) = secrets.next().context("demo users")?;
    Ok(DemoSignIns {
        front_desk,
        admin,
        token,
    })
}

fn print_demo_banner(addr: SocketAddr, mllp: SocketAddr, sign_ins: &DemoSignIns) {
    let DemoSignIns {
        front_desk,
        admin,
        token,
    } = sign_ins;
    announce(&format!(
        "\nEnroll demo is running on http://{addr}\n\
         Sign in at http://{addr}/ as\n  \
         front desk: frontdesk / {front_desk}\n  \
         administrator: admin / {admin}\n\
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
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// `enroll serve` reads the configuration and opens the store with its
    /// `[sqlite]` section: with nothing said, every commit is fsynced.
    #[tokio::test]
    async fn serve_defaults_to_synchronous_full_and_the_demo_to_normal() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("serve.db").display());
        let settings = config::load(
            None,
            &Overrides {
                database_url: Some(url),
                listen: None,
            },
        )
        .unwrap();
        let served = open(&settings).await.unwrap();
        assert_eq!(served.synchronous().await.unwrap(), Some(Synchronous::Full));
        served.close().await;

        let demo = open_demo_store(&dir.path().join("demo.db")).await.unwrap();
        assert_eq!(demo.synchronous().await.unwrap(), Some(Synchronous::Normal));
        demo.close().await;
    }

    /// `normal` is a choice made in the configuration file.
    #[tokio::test]
    async fn synchronous_normal_is_an_explicit_setting() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("enroll.toml");
        let url = format!("sqlite://{}", dir.path().join("e.db").display());
        std::fs::write(
            &file,
            format!("database_url = \"{url}\"\n[sqlite]\nsynchronous = \"normal\"\n"),
        )
        .unwrap();
        let settings = config::load(Some(&file), &Overrides::default()).unwrap();
        let store = open(&settings).await.unwrap();
        assert_eq!(
            store.synchronous().await.unwrap(),
            Some(Synchronous::Normal)
        );
        store.close().await;
        std::fs::write(&file, "[sqlite]\nsynchronous = \"off\"\n").unwrap();
        let refused = config::load(Some(&file), &Overrides::default()).unwrap_err();
        assert!(refused.to_string().contains("normal"), "{refused}");
    }
}
