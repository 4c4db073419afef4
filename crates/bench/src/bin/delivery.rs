//! Delivery benchmark: N due invites delivered by the real dispatcher to a
//! local SMTP server, on SQLite and on PostgreSQL.
//!
//!     cargo run --release -p enroll-bench --bin delivery -- [--invites 10000] [--postgres-url URL]
//!
//! For each SMTP server (the in-process `enroll_notify::testing::SmtpSink`,
//! and Python's aiosmtpd when `python3 -c 'import aiosmtpd'` works), with
//! the shipped SMTP client (`enroll_notify::SmtpMailer`):
//!
//! 1. ceiling: N emails sent straight through the mailer (same pool size
//!    and concurrency as the dispatcher, no database): what the server
//!    and the client can take, in messages per second; measured just
//!    before and just after each dispatcher run, the row shows the mean;
//! 2. per engine: a fresh database with an always-open practice (auto
//!    invites on) and N complete patients, so N invites are queued ("setup",
//!    timed apart); then `Dispatcher::run_round` until a round claims
//!    nothing, timed: invites per second, and the mean number of emails
//!    being handed to the server at once (near `--concurrency` when the
//!    server, not the dispatcher, sets the pace). The server must have
//!    received exactly N distinct Message-IDs of this run, each once.
//!
//! Peak memory is the process's VmHWM (/proc/self/status), reset before
//! each delivery phase (`echo 5 > /proc/self/clear_refs`); it is for the
//! whole process, which also holds the in-process sink and its received
//! headers.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use enroll_notify::testing::{SmtpSink, SmtpSinkState};
use enroll_notify::{
    EmailAddress, EmailSender, InviteContext, Language, OutgoingEmail, SmtpConfig, SmtpMailer,
    SmtpSecurity, Templates,
};
use enroll_server::{
    Application, Clock, DeliveryConfig, Dispatcher, MllpConfig, RoundSummary, Runtime, Settings,
    SystemClock,
};
use enroll_store::testing::{Engine, TestDb};
use futures::StreamExt;

/// Delivers N due invites to a local SMTP server and reports invites per
/// second and peak memory, on SQLite and PostgreSQL.
#[derive(Debug, Parser)]
struct Args {
    /// Invites to deliver per run.
    #[arg(long, default_value_t = 10_000)]
    invites: usize,
    /// Admin URL of a scratch PostgreSQL server (a fresh database is
    /// created and dropped); without it, only SQLite runs.
    #[arg(long, env = "ENROLL_TEST_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Invites per dispatcher round at most (as `[delivery] batch`).
    #[arg(long, default_value_t = 1000)]
    batch: i64,
    /// Invites in flight at once (dispatcher), messages in flight (ceiling).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// SMTP connections of the mailer's pool (default: --concurrency).
    #[arg(long)]
    pool_size: Option<u32>,
    /// Concurrent `create_patient` calls during setup.
    #[arg(long, default_value_t = 8)]
    setup_concurrency: usize,
    /// Skip aiosmtpd even when it is installed.
    #[arg(long)]
    no_aiosmtpd: bool,
    /// Refresh the planner's statistics after setup (`ANALYZE`), as a
    /// database that has run for a minute has them; `--analyze false`
    /// measures the first minute after a bulk import into a new database.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    analyze: bool,
    /// Only these engines (sqlite, postgres); default: both when possible.
    #[arg(long, value_delimiter = ',')]
    engines: Vec<String>,
}

/// The shipped mailer, as `enroll serve` configures it but for the
/// loopback server and the pool size.
fn mailer(addr: SocketAddr, pool_size: u32) -> anyhow::Result<Arc<dyn EmailSender>> {
    Ok(Arc::new(SmtpMailer::new(&smtp_config(addr, pool_size))?))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

struct Row {
    engine: &'static str,
    server: &'static str,
    invites: usize,
    setup_secs: f64,
    secs: f64,
    ceiling: f64,
    peak_rss_mib: f64,
    /// Mean number of emails being handed to the SMTP server at once.
    sends_in_flight: f64,
    /// Share of the run the SMTP server's process was running or waiting
    /// for a CPU (it had work); `None` for the in-process sink.
    server_busy: Option<(f64, f64)>,
}

async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(args.invites > 0, "--invites must be at least 1");
    let pool_size = args.pool_size.unwrap_or(args.concurrency as u32).max(1);
    let mut engines = Vec::new();
    let wanted = |name: &str| args.engines.is_empty() || args.engines.iter().any(|e| e == name);
    if wanted("sqlite") {
        engines.push(Engine::Sqlite);
    }
    if wanted("postgres") {
        if args.postgres_url.is_some() {
            engines.push(Engine::Postgres);
        } else {
            eprintln!(
                "note: no --postgres-url (or ENROLL_TEST_POSTGRES_URL): PostgreSQL is not measured"
            );
        }
    }

    let mut servers = vec![SmtpServer::sink().await];
    if !args.no_aiosmtpd {
        match SmtpServer::aiosmtpd().await {
            Ok(Some(server)) => servers.push(server),
            Ok(None) => eprintln!("note: python3 -m aiosmtpd is not installed: skipped"),
            Err(e) => eprintln!("note: aiosmtpd did not start: {e:#}"),
        }
    }

    eprintln!(
        "{} invites per run, batch {}, concurrency {}, SMTP pool {}, {} CPUs",
        args.invites,
        args.batch,
        args.concurrency,
        pool_size,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rows = Vec::new();
    // Each run's Message-IDs end in a tag of their own, so a run counts
    // only its own messages.
    let mut run_no = 0;
    let mut next_tag = |kind: &str| {
        run_no += 1;
        format!("{kind}-{run_no}.bench.test")
    };
    for server in &servers {
        for &engine in &engines {
            // The ceiling is measured just before and just after each run
            // (an SMTP server's rate drifts by 20-30% between minutes on this
            // machine); the row shows their mean.
            let before = measure_ceiling(server, &args, pool_size, &next_tag("ceiling")).await?;
            let tag = next_tag("run");
            let Some(mut row) = measure_dispatcher(server, engine, &args, pool_size, &tag).await?
            else {
                continue;
            };
            let after = measure_ceiling(server, &args, pool_size, &next_tag("ceiling")).await?;
            row.ceiling = (before.rate() + after.rate()) / 2.0;
            eprintln!(
                "{} / {}: {} invites in {:.2} s = {:.0} invites/s (setup {:.1} s); ceiling {:.0} before, {:.0} after",
                row.engine,
                row.server,
                row.invites,
                row.secs,
                row.invites as f64 / row.secs,
                row.setup_secs,
                before.rate(),
                after.rate()
            );
            rows.push(row);
        }
    }
    for server in servers {
        server.stop();
    }
    print_table(&rows);
    Ok(())
}

fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| engine   | SMTP server        | invites | seconds | invites/s | ceiling msgs/s | ratio to ceiling | sends in flight | server ran + waited for CPU | peak RSS MiB | setup s |"
    );
    println!(
        "|----------|--------------------|--------:|--------:|----------:|---------------:|-----------------:|----------------:|----------------------------:|-------------:|--------:|"
    );
    for row in rows {
        let rate = row.invites as f64 / row.secs;
        println!(
            "| {:<8} | {:<18} | {:>7} | {:>7.2} | {:>9.0} | {:>14.0} | {:>16.2} | {:>15.1} | {:>27} | {:>12.1} | {:>7.1} |",
            row.engine,
            row.server,
            row.invites,
            row.secs,
            rate,
            row.ceiling,
            rate / row.ceiling,
            row.sends_in_flight,
            row.server_busy
                .map_or("-".to_string(), |(ran, waited)| format!(
                    "{:.0}% + {:.0}%",
                    ran * 100.0,
                    waited * 100.0
                )),
            row.peak_rss_mib,
            row.setup_secs
        );
    }
    println!();
    println!(
        "SMTP client: enroll_notify::SmtpMailer as shipped; ceiling: the same number of emails sent \
         straight through it to the same server, with no database, just before and just after the run \
         (mean); sends in flight: mean emails being handed to the server at once (the dispatcher's \
         --concurrency is the most); server ran + waited for CPU: shares of the run aiosmtpd's \
         event loop was running and was ready but waiting for a CPU (/proc/PID/schedstat; together \
         near 100% means it always had work); peak RSS: VmHWM of this whole \
         process during the delivery phase (includes the in-process sink); setup (creating the \
         patients, which queues the invites) is not part of the rate."
    );
}

// ---------------------------------------------------------------- SMTP servers

enum SmtpServer {
    Sink(SmtpSink),
    Aiosmtpd {
        addr: SocketAddr,
        child: Child,
        ids: PathBuf,
        _dir: tempfile::TempDir,
    },
}

/// An aiosmtpd handler that answers 250 and appends each Message-ID to the
/// file named by ENROLL_BENCH_IDS (so the run can be checked), nothing more.
const AIOSMTPD_HANDLER: &str = r#"
import os

class Handler:
    def __init__(self):
        self.out = open(os.environ["ENROLL_BENCH_IDS"], "a", buffering=1)

    async def handle_DATA(self, server, session, envelope):
        head = envelope.content.split(b"\r\n\r\n", 1)[0]
        for line in head.split(b"\r\n"):
            if line[:11].lower() == b"message-id:":
                self.out.write(line[11:].strip().decode("ascii", "replace") + "\n")
                break
        return "250 2.0.0 OK"
"#;

impl SmtpServer {
    async fn sink() -> SmtpServer {
        let sink = SmtpSink::start_on(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Arc::new(SmtpSinkState::headers_only()),
        )
        .await;
        SmtpServer::Sink(sink)
    }

    /// `python3 -m aiosmtpd` with a handler that only records Message-IDs;
    /// `None` when aiosmtpd is not installed.
    async fn aiosmtpd() -> anyhow::Result<Option<SmtpServer>> {
        let installed = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            return Ok(None);
        }
        let dir = tempfile::tempdir()?;
        std::fs::write(dir.path().join("enroll_bench_sink.py"), AIOSMTPD_HANDLER)?;
        let ids = dir.path().join("message-ids.txt");
        std::fs::write(&ids, "")?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let mut child = Command::new("python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &addr.to_string(),
                "-c",
                "enroll_bench_sink.Handler",
            ])
            .env("PYTHONPATH", dir.path())
            .env("ENROLL_BENCH_IDS", &ids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start python3 -m aiosmtpd")?;
        let started = Instant::now();
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!("aiosmtpd exited: {status}");
            }
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                bail!("aiosmtpd did not listen on {addr} within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Some(SmtpServer::Aiosmtpd {
            addr,
            child,
            ids,
            _dir: dir,
        }))
    }

    fn name(&self) -> &'static str {
        match self {
            SmtpServer::Sink(_) => "SmtpSink (in-proc)",
            SmtpServer::Aiosmtpd { .. } => "aiosmtpd (Python)",
        }
    }

    /// Nanoseconds the server's process has run and waited to run (its
    /// main thread, where aiosmtpd's event loop is), from
    /// /proc/PID/schedstat; `None` for the in-process sink.
    fn scheduled_ns(&self) -> Option<(u64, u64)> {
        let SmtpServer::Aiosmtpd { child, .. } = self else {
            return None;
        };
        let stat = std::fs::read_to_string(format!("/proc/{}/schedstat", child.id())).ok()?;
        let mut fields = stat.split_whitespace().map(str::parse::<u64>);
        Some((fields.next()?.ok()?, fields.next()?.ok()?))
    }

    fn addr(&self) -> SocketAddr {
        match self {
            SmtpServer::Sink(sink) => sink.addr,
            SmtpServer::Aiosmtpd { addr, .. } => *addr,
        }
    }

    /// How many messages of the run `tag` arrived, and how many distinct
    /// Message-IDs they carry (Message-IDs end in `@<tag>>`).
    fn received(&self, tag: &str) -> anyhow::Result<(usize, usize)> {
        let suffix = format!("@{tag}>");
        let ids: Vec<String> = match self {
            SmtpServer::Sink(sink) => {
                let ids = sink
                    .received()
                    .iter()
                    .filter_map(|m| m.header("Message-ID"))
                    .filter(|id| id.ends_with(&suffix))
                    .collect();
                // Frees the headers before the next run (peak memory).
                sink.clear();
                ids
            }
            SmtpServer::Aiosmtpd { ids, .. } => std::fs::read_to_string(ids)?
                .lines()
                .filter(|id| id.ends_with(&suffix))
                .map(str::to_string)
                .collect(),
        };
        let distinct: HashSet<&String> = ids.iter().collect();
        Ok((ids.len(), distinct.len()))
    }

    fn stop(self) {
        match self {
            SmtpServer::Sink(mut sink) => sink.stop(),
            SmtpServer::Aiosmtpd { mut child, .. } => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn smtp_config(addr: SocketAddr, pool_size: u32) -> SmtpConfig {
    SmtpConfig {
        host: addr.ip().to_string(),
        port: addr.port(),
        security: SmtpSecurity::Plain,
        username: None,
        password: None,
        pool_size,
        timeout_secs: 30,
    }
}

// ---------------------------------------------------------------- ceiling

struct Timed {
    count: usize,
    secs: f64,
}

impl Timed {
    fn rate(&self) -> f64 {
        self.count as f64 / self.secs
    }
}

/// N invite emails (rendered once) straight through the mailer.
async fn measure_ceiling(
    server: &SmtpServer,
    args: &Args,
    pool_size: u32,
    tag: &str,
) -> anyhow::Result<Timed> {
    let mailer = mailer(server.addr(), pool_size)?;
    let content = Templates::builtin().render_email(
        "BENCH",
        &InviteContext {
            first_name: "Rosa".into(),
            practice_name: "Practice BENCH".into(),
            activation_url: "http://bench.test/a/Zq3vX9kLm2Pw7RtY8uBn4H".into(),
            unsubscribe_url: "http://bench.test/unsubscribe/1/9f86d081884c7d65".into(),
            language: Language::English,
        },
    )?;
    // Made before the clock starts: the ceiling is the mailer's alone.
    let addresses = (0..args.invites)
        .map(|i| EmailAddress::parse(&format!("patient{i}@bench.test")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| anyhow::anyhow!("a benchmark address did not parse"))?;
    let started = Instant::now();
    let mut sends = futures::stream::iter(0..args.invites)
        .map(|i| {
            let email = OutgoingEmail {
                to: addresses[i].clone(),
                from: "Practice BENCH <portal@bench.test>".into(),
                message_id: format!("ceiling-{i}@{tag}"),
                list_unsubscribe: format!("http://bench.test/unsubscribe/{i}/9f86d081884c7d65"),
                content: content.clone(),
            };
            let mailer = &mailer;
            async move { mailer.send_email(&email).await }
        })
        .buffer_unordered(args.concurrency.max(1));
    let mut failures = 0;
    while let Some(result) = sends.next().await {
        if let Err(e) = result {
            failures += 1;
            if failures <= 3 {
                eprintln!("ceiling: a send failed: {e}");
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    drop(sends);
    ensure!(failures == 0, "{failures} sends failed in the ceiling run");
    let (total, distinct) = server.received(tag)?;
    ensure!(
        (total, distinct) == (args.invites, args.invites),
        "ceiling: the server received {total} messages with {distinct} distinct Message-IDs, expected {}",
        args.invites
    );
    Ok(Timed {
        count: args.invites,
        secs,
    })
}

// ---------------------------------------------------------------- dispatcher

/// The dispatcher of an Enroll built as `enroll serve` builds it, on the
/// benchmark's database, with delivery run round by round from here.
async fn dispatcher_of(
    db: &TestDb,
    clock: Arc<dyn Clock>,
    args: &Args,
    tag: &str,
) -> anyhow::Result<Dispatcher> {
    let settings = Settings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        public_url: Some(format!("http://{tag}").parse()?),
        email_from: "Practice BENCH <portal@bench.test>".into(),
        delivery: DeliveryConfig {
            enabled: false,
            batch: args.batch,
            concurrency: args.concurrency,
            ..DeliveryConfig::default()
        },
        mllp: MllpConfig {
            enabled: false,
            ..MllpConfig::default()
        },
        ..Settings::default()
    };
    let runtime = Runtime {
        clock,
        store: Some(db.store.clone()),
        mailbox: None,
    };
    let app = Application::build(settings, runtime).await?;
    Ok(app
        .dispatcher()
        .clone()
        .with_worker(&format!("bench-{tag}")))
}

async fn measure_dispatcher(
    server: &SmtpServer,
    engine: Engine,
    args: &Args,
    pool_size: u32,
    tag: &str,
) -> anyhow::Result<Option<Row>> {
    let engine_name = match engine {
        Engine::Sqlite => "sqlite",
        Engine::Postgres => "postgres",
    };
    if engine == Engine::Postgres && args.postgres_url.is_none() {
        return Ok(None);
    }
    let db = TestDb::create(engine, args.postgres_url.as_deref()).await;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    // Setup: N complete patients in an always-open practice with auto
    // invites on; creating each queues one invite.
    let setup_started = Instant::now();
    let practice_id = db.always_open_practice("BENCH", clock.now()).await.id;
    enroll_bench::create_complete_patients(
        &db.store,
        practice_id,
        args.invites,
        args.setup_concurrency,
        "MRN",
        "bench.test",
    )
    .await?;
    if args.analyze {
        // What autovacuum (PostgreSQL) or `PRAGMA optimize` (SQLite) would
        // have done within a minute of the import: without it, the planner
        // still believes the invites table is empty.
        db.execute("ANALYZE").await.context("ANALYZE after setup")?;
    }
    let setup_secs = setup_started.elapsed().as_secs_f64();

    // Delivery: the real dispatcher, one round after the other.
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let dispatcher = dispatcher_of(&db, clock.clone(), args, tag)
        .await?
        .with_email(Arc::new(CountingSender {
            inner: mailer(server.addr(), pool_size)?,
            in_flight: in_flight.clone(),
        }));
    let hwm_reset = reset_peak_rss();
    let (sampling_done, sampling) = tokio::sync::oneshot::channel();
    let sampler = tokio::spawn(mean_in_flight(in_flight.clone(), sampling));
    let scheduled_before = server.scheduled_ns();
    let started = Instant::now();
    let mut total = RoundSummary::default();
    let mut rounds = 0;
    loop {
        let summary = dispatcher.run_round().await?;
        if summary.claimed == 0 {
            break;
        }
        rounds += 1;
        total.claimed += summary.claimed;
        total.sent += summary.sent;
        total.retrying += summary.retrying;
        total.failed += summary.failed;
        total.skipped += summary.skipped;
    }
    let secs = started.elapsed().as_secs_f64();
    let server_busy = busy_share(scheduled_before, server.scheduled_ns(), secs);
    let _ = sampling_done.send(());
    let sends_in_flight = sampler.await.unwrap_or(f64::NAN);
    let peak_rss_mib = peak_rss_kib().map_or(f64::NAN, |kib| kib as f64 / 1024.0);
    if !hwm_reset {
        eprintln!("note: VmHWM could not be reset: peak RSS is since the process started");
    }
    ensure!(
        total.sent == args.invites && total.claimed == args.invites,
        "{engine_name}: expected {} invites sent in one claim each, got {total:?} in {rounds} rounds",
        args.invites
    );
    let (received, distinct) = server.received(tag)?;
    ensure!(
        (received, distinct) == (args.invites, args.invites),
        "{engine_name}: the server received {received} messages with {distinct} distinct Message-IDs, expected {}",
        args.invites
    );

    drop(dispatcher);
    let url = db.url.clone();
    db.store.close().await;
    drop(db);
    if let (Engine::Postgres, Some(admin_url)) = (engine, &args.postgres_url) {
        let name = enroll_store::testing::database_name(&url).unwrap_or_default();
        ensure!(
            name.starts_with("enroll_test_"),
            "unexpected benchmark database name {name:?}"
        );
        enroll_store::testing::drop_database(admin_url, &name).await?;
    }
    Ok(Some(Row {
        engine: engine_name,
        server: server.name(),
        invites: args.invites,
        setup_secs,
        secs,
        ceiling: f64::NAN,
        peak_rss_mib,
        sends_in_flight,
        server_busy,
    }))
}

// ---------------------------------------------------------------- sends in flight

/// The mailer, counting the sends in progress, so the run can say whether
/// the SMTP server was kept fed: with `--concurrency 16`, a mean near 16
/// means the server, not the dispatcher, set the pace.
struct CountingSender {
    inner: Arc<dyn EmailSender>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl EmailSender for CountingSender {
    async fn send_email(&self, email: &OutgoingEmail) -> Result<(), enroll_notify::DeliveryError> {
        use std::sync::atomic::Ordering;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let result = self.inner.send_email(email).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        result
    }
}

/// Of `secs`, the shares the process ran and waited for a CPU.
fn busy_share(
    before: Option<(u64, u64)>,
    after: Option<(u64, u64)>,
    secs: f64,
) -> Option<(f64, f64)> {
    let ((run0, wait0), (run1, wait1)) = (before?, after?);
    let share = |ns: u64| ns as f64 / 1e9 / secs;
    Some((
        share(run1.saturating_sub(run0)),
        share(wait1.saturating_sub(wait0)),
    ))
}

/// Samples `in_flight` every millisecond until `done`; the mean.
async fn mean_in_flight(
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    mut done: tokio::sync::oneshot::Receiver<()>,
) -> f64 {
    let mut ticks = tokio::time::interval(Duration::from_millis(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut sum, mut samples) = (0usize, 0usize);
    loop {
        tokio::select! {
            _ = &mut done => break,
            _ = ticks.tick() => {
                sum += in_flight.load(std::sync::atomic::Ordering::Relaxed);
                samples += 1;
            }
        }
    }
    sum as f64 / samples.max(1) as f64
}

// ---------------------------------------------------------------- memory

/// Resets VmHWM to the current RSS (Linux >= 4.0); false if not possible.
fn reset_peak_rss() -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/clear_refs")
        .and_then(|mut f| f.write_all(b"5"))
        .is_ok()
}

/// VmHWM of /proc/self/status, in KiB.
fn peak_rss_kib() -> Option<u64> {
    status_field(Path::new("/proc/self/status"), "VmHWM")
}

fn status_field(path: &Path, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    let fields: HashMap<&str, &str> = status
        .lines()
        .filter_map(|line| line.split_once(':'))
        .collect();
    fields.get(field)?.split_whitespace().next()?.parse().ok()
}
