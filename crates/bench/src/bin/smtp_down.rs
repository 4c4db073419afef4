//! Drill: the SMTP server is down for a minute while invites are due.
//!
//!     cargo build --release -p enroll-bench --bin smtp-down
//!     ./target/release/smtp-down [--invites 2000] [--down-secs 60] [--postgres-url URL]
//!
//! A fresh database (SQLite, and PostgreSQL when given a URL) with an
//! always-open practice and `--invites` complete patients, so as many
//! invites are due. The real dispatcher, with the shipped SMTP client and
//! the real clock, runs a round every second against a loopback port where
//! nothing listens (connections refused) for `--down-secs`; then an SMTP
//! server (`enroll_notify::testing::SmtpSink`) starts on that port, and
//! rounds go on until every invite is sent.
//!
//! Passes when every invite was delivered exactly once (the server got as
//! many distinct Message-IDs as invites, none twice), no invite failed for
//! good, the failed tries are recorded as passing failures, and each
//! patient has exactly one send counted toward the cap (R7: a try no
//! channel took does not count).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use enroll_notify::testing::{SmtpSink, SmtpSinkState};
use enroll_notify::{SmtpConfig, SmtpMailer, SmtpSecurity};
use enroll_server::{
    Application, Clock, DeliveryConfig, MllpConfig, Runtime, Settings, SystemClock,
};
use enroll_store::testing::{Engine, TestDb, scalar};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 2000)]
    invites: usize,
    /// How long the SMTP server stays down.
    #[arg(long, default_value_t = 60)]
    down_secs: u64,
    /// Admin URL of a scratch PostgreSQL server; without it, SQLite only.
    #[arg(long, env = "ENROLL_TEST_POSTGRES_URL")]
    postgres_url: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut engines = vec![Engine::Sqlite];
    if args.postgres_url.is_some() {
        engines.push(Engine::Postgres);
    }
    for engine in engines {
        drill(engine, &args).await?;
    }
    Ok(())
}

async fn drill(engine: Engine, args: &Args) -> anyhow::Result<()> {
    let db = TestDb::create(engine, args.postgres_url.as_deref()).await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    queue_invites(&db, clock.as_ref(), args.invites).await?;

    // A free loopback port, closed again: connecting is refused until the
    // server starts on it.
    let smtp = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let dispatcher = {
        let settings = Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            public_url: Some("http://drill.test".parse()?),
            delivery: DeliveryConfig {
                enabled: false,
                ..DeliveryConfig::default()
            },
            mllp: MllpConfig {
                enabled: false,
                ..MllpConfig::default()
            },
            ..Settings::default()
        };
        let runtime = Runtime {
            clock: clock.clone(),
            store: Some(db.store.clone()),
            mailbox: None,
        };
        let app = Application::build(settings, runtime).await?;
        let mailer = SmtpMailer::new(&SmtpConfig {
            host: smtp.ip().to_string(),
            port: smtp.port(),
            security: SmtpSecurity::Plain,
            username: None,
            password: None,
            pool_size: 4,
            timeout_secs: 10,
        })?;
        app.dispatcher().clone().with_email(Arc::new(mailer))
    };

    let started = Instant::now();
    let down_for = Duration::from_secs(args.down_secs);
    let mut server: Option<SmtpSink> = None;
    let mut back_at = None;
    let mut tries_while_down = 0;
    let deadline = down_for + Duration::from_secs(600);
    loop {
        if server.is_none() && started.elapsed() >= down_for {
            let state = Arc::new(SmtpSinkState::headers_only());
            server = Some(SmtpSink::start_on(smtp, state).await);
            back_at = Some(Instant::now());
        }
        let summary = dispatcher.run_round().await?;
        if server.is_none() {
            tries_while_down += summary.claimed;
        }
        let sent = scalar(
            &db.store,
            "SELECT COUNT(*) FROM invites WHERE state = 'sent'",
        )
        .await?;
        if usize::try_from(sent)? == args.invites {
            break;
        }
        ensure!(
            started.elapsed() < deadline,
            "not all invites were sent after {deadline:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let catch_up = back_at.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let server = server.context("the server never started")?;

    let received = server.count();
    let distinct = server.message_ids().len();
    let failed = scalar(
        &db.store,
        "SELECT COUNT(*) FROM invites WHERE state = 'failed'",
    )
    .await?;
    let passing = scalar(
        &db.store,
        "SELECT COUNT(*) FROM deliveries WHERE state = 'transient_failure'",
    )
    .await?;
    let most_attempts = scalar(&db.store, "SELECT MAX(attempts) FROM invites").await?;
    let patients_counted_once = scalar(
        &db.store,
        "SELECT COUNT(*) FROM (SELECT patient_id FROM invites WHERE counted_at IS NOT NULL \
         AND state = 'sent' GROUP BY patient_id HAVING COUNT(*) = 1) AS once",
    )
    .await?;
    let counted = scalar(
        &db.store,
        "SELECT COUNT(*) FROM invites WHERE counted_at IS NOT NULL",
    )
    .await?;
    let engine_name = match engine {
        Engine::Sqlite => "sqlite",
        Engine::Postgres => "postgres",
    };
    println!(
        "{engine_name}: {} invites, SMTP down {} s: {tries_while_down} tries while down, \
         {passing} passing failures recorded, at most {most_attempts} attempts per invite; \
         all sent {catch_up:.1} s after the server came back; server received {received} \
         emails, {distinct} distinct Message-IDs; {failed} failed; {counted} sends counted \
         toward the cap, {patients_counted_once} patients with exactly one",
        args.invites, args.down_secs
    );
    ensure!(
        received == args.invites,
        "{received} emails for {} invites",
        args.invites
    );
    ensure!(distinct == args.invites, "{distinct} distinct Message-IDs");
    ensure!(failed == 0, "{failed} invites failed for good");
    ensure!(
        passing > 0,
        "no failed try was recorded: the server was not down"
    );
    ensure!(
        usize::try_from(counted)? == args.invites
            && usize::try_from(patients_counted_once)? == args.invites,
        "a failed try was counted toward the cap"
    );
    Ok(())
}

/// `n` complete patients in an always-open practice with auto invites on:
/// creating each queues its chart-added invite.
async fn queue_invites(db: &TestDb, clock: &dyn Clock, n: usize) -> anyhow::Result<()> {
    let practice_id = db.always_open_practice("DRILL", clock.now()).await.id;
    enroll_bench::create_complete_patients(&db.store, practice_id, n, 8, "D", "drill.test").await
}
