//! HL7 v2 intake over MLLP: N synthetic ADT/SIU messages sent by one client,
//! each over a connection that waits for the ACK of one message before it
//! sends the next (as real senders do), to Enroll (`enroll serve` with its
//! `[mllp]` listener, on SQLite and on PostgreSQL) and to two storage-free
//! peers fed the same messages: a minimal server on the Python `hl7` package
//! and one on the npm `simple-hl7` package (crates/bench/peers).
//!
//!     cargo build --release -p enroll -p enroll-bench
//!     ./target/release/mllp [--messages 100000] [--target python,node,enroll-sqlite,enroll-postgres]
//!                           [--connections 1,4] [--postgres-url ADMIN_URL]
//!     ./target/release/mllp --addr 127.0.0.1:2575 [--pid PID]   # a server that is already running
//!
//! For each target and each connection count, a fresh server process (and,
//! for Enroll, a fresh database with the practice `NORTH` that MSH-4 names)
//! receives the N messages, split across the connections by patient (all
//! messages about one patient go over one connection, in order). Every ACK
//! must have MSA-1 = AA and MSA-2 = the message's MSH-10; anything else
//! counts as an error. Reported: messages per second (ACKs received over
//! the wall time from the first send to the last ACK), the ACK latency (send
//! of a message to its ACK) p50, p99 and max, errors, and the server's peak
//! memory (VmHWM of its process at the end; for the peers, the interpreter).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use enroll_core::{AppointmentStatus, IntakeEvent};
use enroll_hl7::{MappingOptions, MllpCodec, MllpError};
use enroll_store::testing::replace_database;
use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// Sends N synthetic HL7 v2 messages over MLLP and reports messages per
/// second, ACK latency and the server's peak memory.
#[derive(Debug, Parser)]
struct Args {
    /// Messages per scenario (each target x connection count).
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Connection counts: one scenario each, with a fresh server.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4])]
    connections: Vec<usize>,
    /// Servers to measure (a target that is not installed is skipped with a
    /// note; enroll-postgres needs --postgres-url).
    #[arg(
        long = "target",
        alias = "targets",
        value_enum,
        value_delimiter = ',',
        default_values_t = [Target::Python, Target::Node, Target::Rust, Target::EnrollSqlite, Target::EnrollSqliteNormal, Target::EnrollPostgres]
    )]
    targets: Vec<Target>,
    /// Measure the MLLP server already listening at HOST:PORT instead of
    /// spawning targets (it must know the sending facility NORTH).
    #[arg(long)]
    addr: Option<String>,
    /// With --addr: the server's process id, for its peak memory.
    #[arg(long, requires = "addr")]
    pid: Option<u32>,
    /// Admin URL of a scratch PostgreSQL server: a database
    /// enroll_bench_mllp_<pid> is created there for each enroll-postgres
    /// scenario and dropped after it.
    #[arg(long, env = "ENROLL_TEST_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// The `enroll` binary (default: `enroll` beside this program, i.e.
    /// target/release/enroll).
    #[arg(long)]
    enroll_bin: Option<PathBuf>,
    /// The peers' folder (hl7_peer.py, simple_hl7_peer.js, node_modules);
    /// default: crates/bench/peers of the current directory, else of the
    /// source tree this program was built from.
    #[arg(long)]
    peers_dir: Option<PathBuf>,
    /// Seed of the synthetic messages.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Prefix of the MSH-10 control ids (default: from the clock), so that
    /// runs against the same database are not taken for duplicates.
    #[arg(long)]
    run_tag: Option<String>,
    /// Seconds to wait for one ACK before the connection is given up.
    #[arg(long, default_value_t = 30)]
    ack_timeout: u64,
    /// Seconds to wait for a spawned server to accept connections.
    #[arg(long, default_value_t = 60)]
    start_timeout: u64,
    /// Print one synthetic message of each kind and exit.
    #[arg(long)]
    sample: bool,
    /// Run the storage-free Rust peer on this port until killed (how the
    /// `rust` target starts it, in a process of its own).
    #[arg(long, hide = true)]
    serve_peer: Option<u16>,
}

impl Args {
    fn peers_dir(&self) -> &Path {
        self.peers_dir
            .as_deref()
            .unwrap_or(Path::new("crates/bench/peers"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Target {
    /// crates/bench/peers/hl7_peer.py (PyPI `hl7`).
    Python,
    /// crates/bench/peers/simple_hl7_peer.js (npm `simple-hl7`).
    Node,
    /// Enroll's own MLLP framing, parser, mapping and ACK on tokio, storing
    /// nothing: what Enroll's side costs without the database.
    Rust,
    /// `enroll serve` on a fresh SQLite file, as configured by default
    /// (`[sqlite] synchronous = "full"`: every commit fsynced).
    EnrollSqlite,
    /// `enroll serve` on a fresh SQLite file with `[sqlite] synchronous =
    /// "normal"` (commits reach the WAL without an fsync).
    EnrollSqliteNormal,
    /// `enroll serve` on a fresh PostgreSQL database.
    EnrollPostgres,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Python => "python (hl7)",
            Target::Node => "node (simple-hl7)",
            Target::Rust => "rust (enroll-hl7, no storage)",
            Target::EnrollSqlite => "enroll-sqlite (synchronous full)",
            Target::EnrollSqliteNormal => "enroll-sqlite (synchronous normal)",
            Target::EnrollPostgres => "enroll-postgres",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_possible_value() {
            Some(value) => f.write_str(value.get_name()),
            None => write!(f, "{self:?}"),
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(port) = args.serve_peer {
        return serve_peer(port);
    }
    // One thread for the client: the other core stays for the server.
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_words(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

struct Row {
    target: String,
    connections: usize,
    outcome: Outcome,
    peak_rss_mib: Option<f64>,
}

async fn run(mut args: Args) -> anyhow::Result<()> {
    ensure!(args.messages > 0, "--messages must be at least 1");
    ensure!(
        !args.connections.is_empty() && args.connections.iter().all(|&k| k > 0),
        "--connections must be a list of counts of at least 1"
    );
    ensure!(
        args.messages <= 9_999_999,
        "--messages is at most 9999999 (7 digits of MSH-10)"
    );
    if args.sample {
        print_sample(args.seed);
        return Ok(());
    }
    let run_tag = args.run_tag.clone().unwrap_or_else(clock_tag);
    ensure!(
        !run_tag.is_empty()
            && run_tag.len() <= 11
            && run_tag.bytes().all(|b| b.is_ascii_alphanumeric()),
        "--run-tag must be 1 to 11 letters or digits (MSH-10 is at most 20 characters)"
    );

    if args.peers_dir.is_none() {
        let here = PathBuf::from("crates/bench/peers");
        args.peers_dir = Some(if here.is_dir() {
            here
        } else {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/peers"))
        });
    }
    let load_before = load_average();
    let started = Instant::now();
    let corpus = Corpus::generate(args.messages, args.seed);
    corpus.verify()?;
    eprintln!(
        "{} synthetic messages (seed {}, {}), {:.0} bytes on average, made and checked \
         with enroll-hl7 in {:.1} s; run tag {run_tag}",
        args.messages,
        args.seed,
        corpus.mix(),
        corpus.mean_len(),
        started.elapsed().as_secs_f64()
    );

    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut failures = Vec::new();
    let mut scenario = 0usize;
    let ack_timeout = Duration::from_secs(args.ack_timeout);

    if let Some(addr) = &args.addr {
        let addr = tokio::net::lookup_host(addr.as_str())
            .await
            .with_context(|| format!("resolve {addr}"))?
            .next()
            .with_context(|| format!("{addr} resolves to no address"))?;
        for &k in &args.connections {
            let messages = corpus.messages(&scenario_tag(&run_tag, scenario));
            scenario += 1;
            eprintln!("{addr}, {k} connection(s) ...");
            let server_pid = args.pid.map(|pid| pid.to_string());
            let cpu_before = server_pid.as_deref().and_then(cpu_secs);
            let mut outcome = send_all(addr, &messages, k, ack_timeout).await?;
            outcome.server_cpu_secs = server_pid
                .as_deref()
                .and_then(cpu_secs)
                .zip(cpu_before)
                .map(|(after, before)| after - before);
            report_errors(&format!("{addr}"), k, &outcome);
            rows.push(Row {
                target: format!("{addr}"),
                connections: k,
                outcome,
                peak_rss_mib: args.pid.and_then(peak_rss_mib),
            });
        }
    } else {
        let mut targets = args.targets.clone();
        targets.dedup();
        for target in targets {
            let launcher = match Launcher::prepare(target, &args) {
                Ok(launcher) => launcher,
                Err(Skip(why)) => {
                    eprintln!("skipping {target}: {why}");
                    notes.push(format!("{target} skipped: {why}"));
                    continue;
                }
            };
            if let Some(version) = launcher.version() {
                notes.push(version);
            }
            for &k in &args.connections {
                let messages = corpus.messages(&scenario_tag(&run_tag, scenario));
                scenario += 1;
                eprintln!("{}, {k} connection(s) ...", target.name());
                match launcher.measure(&messages, k, ack_timeout, &args).await {
                    Ok((outcome, peak_rss_mib)) => {
                        report_errors(target.name(), k, &outcome);
                        rows.push(Row {
                            target: target.name().to_string(),
                            connections: k,
                            outcome,
                            peak_rss_mib,
                        });
                    }
                    Err(e) => {
                        let words = error_words(&e);
                        eprintln!("FAILED {}, {k} connection(s): {words}", target.name());
                        failures.push(format!("{}, {k} connection(s): {words}", target.name()));
                    }
                }
            }
        }
    }

    print_table(&rows, args.messages, &load_before);
    for note in &notes {
        println!("- {note}");
    }
    if !failures.is_empty() {
        println!();
        for failure in &failures {
            println!("FAILED: {failure}");
        }
        bail!("{} scenario(s) failed", failures.len());
    }
    let with_errors = rows.iter().filter(|r| r.outcome.errors > 0).count();
    ensure!(
        with_errors == 0,
        "{with_errors} scenario(s) had errors (see above)"
    );
    Ok(())
}

/// The 1-minute load average (other work on the machine skews the numbers).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn print_table(rows: &[Row], messages: usize, load_before: &str) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    println!();
    println!(
        "MLLP intake, {messages} messages per scenario; machine: {cpus} CPUs ({model}); \
         client and server share them; 1-minute load average {load_before} before the run, {} \
         after",
        load_average()
    );
    println!();
    println!(
        "| target | connections | messages | seconds | msgs/s | p50 ms | p99 ms | max ms | errors | peak RSS MiB | server CPU s | client CPU s |"
    );
    println!(
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for row in rows {
        let o = &row.outcome;
        let secs = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.1}"));
        let ms =
            |ns: Option<u64>| ns.map_or("-".to_string(), |ns| format!("{:.3}", ns as f64 / 1e6));
        println!(
            "| {} | {} | {} | {:.2} | {:.0} | {} | {} | {} | {} | {} | {} | {} |",
            row.target,
            row.connections,
            o.sent,
            o.secs,
            o.acked as f64 / o.secs,
            ms(o.percentile(0.50)),
            ms(o.percentile(0.99)),
            ms(o.latencies_ns.last().copied()),
            o.errors,
            row.peak_rss_mib
                .map_or("-".to_string(), |m| format!("{m:.1}")),
            secs(o.server_cpu_secs),
            secs(o.client_cpu_secs),
        );
    }
    println!();
    println!(
        "- msgs/s: ACKs received / seconds (first send to last ACK); latency: a message's send to \
         its ACK, each connection waiting for an ACK before its next message; errors: ACKs that \
         are not AA or do not echo MSH-10 in MSA-2, and messages never answered; peak RSS: VmHWM \
         of the server process at the end of the scenario (for the peers, the interpreter's); \
         CPU s: user + system CPU time of the server process and of this client during the \
         timed part (a single-threaded server whose CPU s is close to seconds is CPU-bound)"
    );
}

fn report_errors(target: &str, k: usize, outcome: &Outcome) {
    eprintln!(
        "  {} ACKs in {:.2} s ({:.0}/s), {} error(s)",
        outcome.acked,
        outcome.secs,
        outcome.acked as f64 / outcome.secs,
        outcome.errors
    );
    for error in &outcome.first_errors {
        eprintln!("  error ({target}, {k} connection(s)): {error}");
    }
}

/// The error and its causes on one line.
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

/// Six base-36 digits of the Unix time: a new tag every second.
fn clock_tag() -> String {
    let mut secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut tag = Vec::new();
    while secs > 0 || tag.is_empty() {
        tag.push(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[(secs % 36) as usize]);
        secs /= 36;
    }
    tag.reverse();
    // Every byte is one of the 36 ASCII digits above.
    String::from_utf8_lossy(&tag).into_owned()
}

/// The run tag and a letter per scenario: MSH-10 is unique across the
/// scenarios of a run too (they share a database with --addr).
fn scenario_tag(run_tag: &str, scenario: usize) -> String {
    let letters = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut tag = run_tag.to_string();
    tag.push(char::from(letters[scenario % 26]));
    if scenario >= 26 {
        tag.push(char::from(letters[(scenario / 26) % 26]));
    }
    tag
}

// ---------------------------------------------------------------- messages

const FIRST_F: &[&str] = &[
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Lisa",
    "Nancy",
    "Sandra",
    "Margaret",
    "Ashley",
    "Kimberly",
    "Emily",
    "Donna",
    "Michelle",
    "Sofia",
    "Camila",
    "Valentina",
    "Isabella",
    "Maria",
    "Guadalupe",
    "Mei",
    "Aisha",
    "Fatima",
    "Priya",
    "Anh",
];
const FIRST_M: &[&str] = &[
    "James",
    "Robert",
    "John",
    "Michael",
    "David",
    "William",
    "Richard",
    "Joseph",
    "Thomas",
    "Christopher",
    "Charles",
    "Daniel",
    "Matthew",
    "Anthony",
    "Mark",
    "Donald",
    "Steven",
    "Andrew",
    "Joshua",
    "Kevin",
    "Jose",
    "Luis",
    "Carlos",
    "Juan",
    "Miguel",
    "Wei",
    "Omar",
    "Ahmed",
    "Raj",
    "Minh",
];
const LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "O'Brien",
    "Smith-Jones",
    "Van Dyke",
    "Kowalski",
    "Nakamura",
    "Okafor",
    "Patel",
    "Chen",
    "Kim",
    "Schmidt",
];
const STREETS: &[&str] = &[
    "Main",
    "Oak",
    "Pine",
    "Maple",
    "Cedar",
    "Elm",
    "Washington",
    "Lake",
    "Hill",
    "Park",
    "Walnut",
    "Sunset",
    "Lincoln",
    "Jackson",
    "River",
];
const STREET_KINDS: &[&str] = &["St", "Ave", "Rd", "Blvd", "Ln", "Dr", "Ct"];
/// City, state, ZIP, telephone area code.
const CITIES: &[(&str, &str, &str, &str)] = &[
    ("Springfield", "IL", "62701", "217"),
    ("Chicago", "IL", "60614", "312"),
    ("Peoria", "IL", "61602", "309"),
    ("Madison", "WI", "53703", "608"),
    ("Milwaukee", "WI", "53202", "414"),
    ("Minneapolis", "MN", "55401", "612"),
    ("Saint Paul", "MN", "55102", "651"),
    ("Des Moines", "IA", "50309", "515"),
    ("Columbus", "OH", "43215", "614"),
    ("Indianapolis", "IN", "46204", "317"),
    ("Detroit", "MI", "48226", "313"),
    ("Ann Arbor", "MI", "48104", "734"),
];
const EMAIL_DOMAINS: &[&str] = &[
    "example.com",
    "example.org",
    "example.net",
    "mail.example.com",
];
/// NPI, family name, given name.
const PROVIDERS: &[(&str, &str, &str)] = &[
    ("1003000126", "Nguyen", "Linh"),
    ("1114025228", "Okafor", "Chidi"),
    ("1245319599", "Schmidt", "Anna"),
    ("1376609297", "Rivera", "Daniel"),
    ("1497758544", "Cohen", "Rachel"),
];
const INSURERS: &[&str] = &[
    "BCBS^Blue Cross Blue Shield",
    "AETNA^Aetna",
    "UHC^UnitedHealthcare",
    "MCR^Medicare",
    "MCD^Medicaid",
];
/// SCH-7 / AIS-3: reason, text.
const VISITS: &[(&str, &str)] = &[
    ("99213", "Office visit, established"),
    ("99203", "Office visit, new patient"),
    ("99395", "Preventive visit 18-39"),
    ("99396", "Preventive visit 40-64"),
    ("90686", "Influenza vaccination"),
];

fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
    &items[rng.random_range(0..items.len())]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// ADT^A04, a new patient (no visit number).
    NewPatient,
    /// ADT^A08 of an earlier patient.
    Update,
    /// ADT^A04 with PV1-19 (an encounter).
    Encounter,
    /// SIU^S12 (SCH, PID, AIS, AIL, AIP).
    Appointment,
    /// ADT^A31 of an earlier patient.
    PersonUpdate,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::NewPatient => "A04",
            Kind::Update => "A08",
            Kind::Encounter => "A04+PV1-19",
            Kind::Appointment => "S12",
            Kind::PersonUpdate => "A31",
        }
    }
}

#[derive(Debug, Clone)]
struct Patient {
    mrn: String,
    first: &'static str,
    middle: char,
    last: &'static str,
    dob: String,
    sex: &'static str,
    street: String,
    other_designation: Option<String>,
    city: usize,
    zip4: Option<u16>,
    email: Option<String>,
    /// Area code and local number.
    cell: Option<(&'static str, String)>,
    home_phone: Option<(&'static str, String)>,
    language: Option<(&'static str, &'static str)>,
    provider: usize,
    insurer: Option<(usize, String)>,
}

impl Patient {
    fn new(rng: &mut StdRng, number: usize) -> Patient {
        let sex = match rng.random_range(0..100) {
            0..49 => "F",
            49..98 => "M",
            _ => "U",
        };
        let first = if sex == "M" || (sex == "U" && rng.random_bool(0.5)) {
            *pick(rng, FIRST_M)
        } else {
            *pick(rng, FIRST_F)
        };
        let last = *pick(rng, LAST);
        let dob = format!(
            "{}{:02}{:02}",
            rng.random_range(1935..2024),
            rng.random_range(1..=12),
            rng.random_range(1..=28)
        );
        let mut patient = Patient {
            mrn: format!("{:08}", 10_000_000 + number * 7 + rng.random_range(0..7)),
            first,
            middle: char::from(b'A' + rng.random_range(0..26u8)),
            last,
            dob,
            sex,
            street: String::new(),
            other_designation: None,
            city: 0,
            zip4: None,
            email: None,
            cell: None,
            home_phone: None,
            language: None,
            provider: rng.random_range(0..PROVIDERS.len()),
            insurer: None,
        };
        patient.move_house(rng);
        if rng.random_bool(0.85) {
            patient.new_email(rng);
        }
        if rng.random_bool(0.9) {
            patient.new_cell(rng);
        }
        if rng.random_bool(0.3) {
            patient.home_phone = Some((CITIES[patient.city].3, local_number(rng)));
        }
        patient.language = match rng.random_range(0..100) {
            0..70 => Some(("en", "English")),
            70..85 => Some(("es", "Spanish")),
            85..88 => Some(("vi", "Vietnamese")),
            88..90 => Some(("zh", "Chinese")),
            _ => None,
        };
        if rng.random_bool(0.6) {
            patient.insurer = Some((
                rng.random_range(0..INSURERS.len()),
                format!(
                    "{}{:09}",
                    char::from(b'A' + rng.random_range(0..26u8)),
                    rng.random_range(0..1_000_000_000u32)
                ),
            ));
        }
        patient
    }

    fn move_house(&mut self, rng: &mut StdRng) {
        self.street = format!(
            "{} {} {}",
            rng.random_range(1..9999),
            pick(rng, STREETS),
            pick(rng, STREET_KINDS)
        );
        self.other_designation = rng
            .random_bool(0.2)
            .then(|| format!("Apt {}", rng.random_range(1..400)));
        self.city = rng.random_range(0..CITIES.len());
        self.zip4 = rng.random_bool(0.25).then(|| rng.random_range(1000..9999));
    }

    fn new_email(&mut self, rng: &mut StdRng) {
        self.email = Some(format!(
            "{}.{}{}@{}",
            self.first.to_ascii_lowercase(),
            self.last.to_ascii_lowercase().replace(['\'', ' '], ""),
            rng.random_range(1..1000),
            pick(rng, EMAIL_DOMAINS)
        ));
    }

    fn new_cell(&mut self, rng: &mut StdRng) {
        self.cell = Some((CITIES[self.city].3, local_number(rng)));
    }

    /// Some change of the kind a front desk makes.
    fn change(&mut self, rng: &mut StdRng) {
        match rng.random_range(0..4) {
            0 => self.move_house(rng),
            1 => self.new_email(rng),
            2 => self.new_cell(rng),
            _ => {
                self.provider = rng.random_range(0..PROVIDERS.len());
                if rng.random_bool(0.5) {
                    self.new_email(rng);
                }
            }
        }
    }

    fn zip(&self) -> String {
        let zip = CITIES[self.city].2;
        match self.zip4 {
            Some(plus4) => format!("{zip}-{plus4:04}"),
            None => zip.to_string(),
        }
    }

    fn pid(&self, out: &mut String) {
        let (city, state, _, _) = CITIES[self.city];
        let name = format!("{}^{}^{}^^^^L", self.last, self.first, self.middle);
        let address = format!(
            "{}^{}^{}^{}^{}^USA^H",
            self.street,
            self.other_designation.as_deref().unwrap_or(""),
            city,
            state,
            self.zip()
        );
        let mut telecoms = Vec::new();
        if let Some((area, local)) = &self.home_phone {
            telecoms.push(format!("^PRN^PH^^1^{area}^{local}"));
        }
        if let Some(email) = &self.email {
            telecoms.push(format!("^NET^Internet^{email}"));
        }
        if let Some((area, local)) = &self.cell {
            telecoms.push(format!("^PRN^CP^^1^{area}^{local}"));
        }
        let telecoms = telecoms.join("~");
        let language = self
            .language
            .map(|(code, text)| format!("{code}^{text}^ISO639"))
            .unwrap_or_default();
        segment(
            out,
            "PID",
            &[
                (1, "1"),
                (3, &format!("{}^^^NORTH^MR", self.mrn)),
                (5, &name),
                (7, &self.dob),
                (8, self.sex),
                (11, &address),
                (13, &telecoms),
                (15, &language),
            ],
        );
    }

    fn pd1(&self, out: &mut String) {
        let (npi, last, first) = PROVIDERS[self.provider];
        segment(
            out,
            "PD1",
            &[(4, &format!("{npi}^{last}^{first}^^^^MD^^^^NPI"))],
        );
    }

    fn in1(&self, out: &mut String) {
        if let Some((insurer, member)) = &self.insurer {
            segment(
                out,
                "IN1",
                &[
                    (1, "1"),
                    (2, "PPO"),
                    (3, INSURERS[*insurer].split('^').next().unwrap_or("")),
                    (4, INSURERS[*insurer].split('^').nth(1).unwrap_or("")),
                    (16, &format!("{}^{}", self.last, self.first)),
                    (17, "SEL^Self^HL70063"),
                    (36, member),
                ],
            );
        }
    }
}

/// A spouse for an adult, else a mother.
fn next_of_kin(dob: &str) -> &'static str {
    if dob.as_bytes() < b"2006".as_slice() {
        "SPO^Spouse^HL70063"
    } else {
        "MTH^Mother^HL70063"
    }
}

fn local_number(rng: &mut StdRng) -> String {
    format!(
        "{}{:04}",
        rng.random_range(200..1000),
        rng.random_range(0..10_000)
    )
}

/// Appends a segment: `fields` are (number, value) in increasing order;
/// empty values are left out (no trailing separators).
fn segment(out: &mut String, name: &str, fields: &[(usize, &str)]) {
    out.push_str(name);
    let mut at = 0;
    for &(n, value) in fields {
        if value.is_empty() {
            continue;
        }
        while at < n {
            out.push('|');
            at += 1;
        }
        out.push_str(value);
    }
    out.push('\r');
}

/// An HL7 DTM: 2026-09-05 08:00:00 plus `secs` (kept within September).
fn dtm(secs: u64) -> String {
    let t = 8 * 3600 + secs;
    let day = 5 + (t / 86_400) % 24;
    let s = t % 86_400;
    format!(
        "202609{day:02}{:02}{:02}{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// One message with a placeholder for MSH-10.
struct Template {
    kind: Kind,
    /// Index of its patient: messages about one patient share a connection.
    patient: usize,
    /// The message before and after MSH-10.
    head: String,
    tail: String,
    /// What enroll-hl7 must read from it.
    expect_email: Option<String>,
    expect_zip: String,
}

/// N messages, deterministic for a seed, with MSH-10 filled in per scenario.
struct Corpus {
    templates: Vec<Template>,
}

/// One message ready to send.
#[derive(Clone)]
struct Outgoing {
    patient: usize,
    control_id: String,
    bytes: Bytes,
}

impl Corpus {
    fn generate(n: usize, seed: u64) -> Corpus {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut patients: Vec<Patient> = Vec::new();
        let mut templates = Vec::with_capacity(n);
        let mut appointments = 0usize;
        for i in 0..n {
            let mut kind = match rng.random_range(0..100) {
                0..40 => Kind::NewPatient,
                40..65 => Kind::Update,
                65..80 => Kind::Encounter,
                80..95 => Kind::Appointment,
                _ => Kind::PersonUpdate,
            };
            if patients.is_empty() && kind != Kind::Encounter {
                kind = Kind::NewPatient;
            }
            let new_patient = match kind {
                Kind::NewPatient => true,
                Kind::Encounter => patients.is_empty() || rng.random_bool(0.5),
                _ => false,
            };
            let p = if new_patient {
                patients.push(Patient::new(&mut rng, patients.len()));
                patients.len() - 1
            } else {
                rng.random_range(0..patients.len())
            };
            if matches!(kind, Kind::Update | Kind::PersonUpdate) {
                patients[p].change(&mut rng);
            }
            let patient = &patients[p];
            let now = dtm(i as u64);
            let (message_type, structure) = match kind {
                Kind::NewPatient | Kind::Encounter => ("ADT^A04", "ADT_A01"),
                Kind::Update => ("ADT^A08", "ADT_A01"),
                Kind::PersonUpdate => ("ADT^A31", "ADT_A05"),
                Kind::Appointment => ("SIU^S12", "SIU_S12"),
            };
            let head =
                format!("MSH|^~\\&|EHR|NORTH|ENROLL|PORTAL|{now}||{message_type}^{structure}|");
            let mut tail = String::with_capacity(1024);
            tail.push_str("|P|2.5.1|||AL|NE\r");
            let operator = format!(
                "{}^FRONTDESK^{}",
                100 + i % 7,
                ["ANA", "BEN", "CLARA"][i % 3]
            );
            match kind {
                Kind::Appointment => {
                    appointments += 1;
                    let (code, text) = *pick(&mut rng, VISITS);
                    let start = format!(
                        "202610{:02}{:02}{:02}00",
                        rng.random_range(1..=28),
                        rng.random_range(8..17),
                        [0, 20, 40][rng.random_range(0..3)]
                    );
                    let (npi, last, first) = PROVIDERS[patient.provider];
                    segment(
                        &mut tail,
                        "SCH",
                        &[
                            (1, &format!("P{appointments:07}^EHR")),
                            (2, &format!("A{appointments:07}^NORTH")),
                            (6, "ROUTINE^Routine^HL70276"),
                            (7, &format!("{code}^{text}^CPT")),
                            (8, "ROUTINE^Routine^HL70276"),
                            (9, "20"),
                            (10, "MIN"),
                            (11, &format!("^^20^{start}")),
                            (25, "Booked^Booked^HL70278"),
                        ],
                    );
                    patient.pid(&mut tail);
                    segment(&mut tail, "PV1", &[(1, "1"), (2, "O")]);
                    segment(&mut tail, "RGS", &[(1, "1"), (2, "A")]);
                    segment(
                        &mut tail,
                        "AIS",
                        &[
                            (1, "1"),
                            (2, "A"),
                            (3, &format!("{code}^{text}^CPT")),
                            (4, &start),
                            (5, "0"),
                            (6, "MIN"),
                            (7, "20"),
                            (8, "MIN"),
                        ],
                    );
                    segment(
                        &mut tail,
                        "AIL",
                        &[
                            (1, "1"),
                            (2, "A"),
                            (3, "NORTH^EXAM3^^NORTH^^^^North Clinic"),
                            (4, "CLINIC^Clinic^HL70305"),
                            (6, &start),
                            (7, "0"),
                            (8, "MIN"),
                            (9, "20"),
                            (10, "MIN"),
                        ],
                    );
                    segment(
                        &mut tail,
                        "AIP",
                        &[
                            (1, "1"),
                            (2, "A"),
                            (3, &format!("{npi}^{last}^{first}^^^^MD")),
                            (4, "D^Doctor^HL70182"),
                            (6, &start),
                            (7, "0"),
                            (8, "MIN"),
                            (9, "20"),
                            (10, "MIN"),
                        ],
                    );
                }
                _ => {
                    let event = &message_type[4..];
                    segment(&mut tail, "EVN", &[(1, event), (2, &now), (5, &operator)]);
                    patient.pid(&mut tail);
                    patient.pd1(&mut tail);
                    if rng.random_bool(0.4) {
                        segment(
                            &mut tail,
                            "NK1",
                            &[
                                (1, "1"),
                                (2, &format!("{}^{}", patient.last, pick(&mut rng, FIRST_F))),
                                (3, next_of_kin(&patient.dob)),
                                (
                                    5,
                                    &format!(
                                        "^PRN^PH^^1^{}^{}",
                                        CITIES[patient.city].3,
                                        local_number(&mut rng)
                                    ),
                                ),
                            ],
                        );
                    }
                    let (npi, last, first) = PROVIDERS[patient.provider];
                    let attending = format!("{npi}^{last}^{first}^^^^MD^^^^NPI");
                    if kind == Kind::Encounter {
                        segment(
                            &mut tail,
                            "PV1",
                            &[
                                (1, "1"),
                                (2, "O"),
                                (3, "NORTH^EXAM2^^NORTH"),
                                (4, "R^Routine^HL70007"),
                                (7, &attending),
                                (10, "MED"),
                                (18, "OP"),
                                (19, &format!("V{:08}^^^NORTH^VN", 20_000_000 + i)),
                                (44, &now),
                            ],
                        );
                    } else if kind == Kind::PersonUpdate {
                        segment(&mut tail, "PV1", &[(1, "1"), (2, "N")]);
                    } else {
                        segment(&mut tail, "PV1", &[(1, "1"), (2, "O"), (7, &attending)]);
                    }
                    if kind != Kind::PersonUpdate {
                        patient.in1(&mut tail);
                    }
                    if rng.random_bool(0.1) {
                        segment(
                            &mut tail,
                            "OBX",
                            &[
                                (1, "1"),
                                (2, "CWE"),
                                (3, "76689-9^Sex assigned at birth^LN"),
                                (
                                    5,
                                    &format!(
                                        "{}^{}^HL70001",
                                        patient.sex,
                                        match patient.sex {
                                            "F" => "Female",
                                            "M" => "Male",
                                            _ => "Unknown",
                                        }
                                    ),
                                ),
                                (11, "F"),
                            ],
                        );
                    }
                }
            }
            templates.push(Template {
                kind,
                patient: p,
                head,
                tail,
                expect_email: patient.email.clone(),
                expect_zip: patient.zip(),
            });
        }
        Corpus { templates }
    }

    /// The messages with MSH-10 = `tag` + 7 digits.
    fn messages(&self, tag: &str) -> Vec<Outgoing> {
        self.templates
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let control_id = format!("{tag}{i:07}");
                let mut text =
                    String::with_capacity(t.head.len() + control_id.len() + t.tail.len());
                text.push_str(&t.head);
                text.push_str(&control_id);
                text.push_str(&t.tail);
                Outgoing {
                    patient: t.patient,
                    control_id,
                    bytes: Bytes::from(text),
                }
            })
            .collect()
    }

    /// Every message must map with enroll-hl7 to the event of its kind,
    /// with the email and ZIP it was made with.
    fn verify(&self) -> anyhow::Result<()> {
        let options = MappingOptions::default();
        for (i, message) in self.messages("CHECK").iter().enumerate() {
            let t = &self.templates[i];
            let inbound = enroll_hl7::process(&message.bytes, &options);
            let event = inbound.result.map_err(|e| {
                anyhow::anyhow!(
                    "synthetic message {i} ({}) does not map: {e}\n{}",
                    t.kind.label(),
                    printable(&message.bytes, 2000)
                )
            })?;
            let kind_ok = matches!(
                (t.kind, &event),
                (Kind::NewPatient, IntakeEvent::Register { .. })
                    | (Kind::Update | Kind::PersonUpdate, IntakeEvent::Update(_))
                    | (Kind::Encounter, IntakeEvent::Encounter { .. })
                    | (
                        Kind::Appointment,
                        IntakeEvent::Appointment {
                            status: AppointmentStatus::Booked,
                            ..
                        }
                    )
            );
            let demographics = &event.patient().sent;
            ensure!(
                kind_ok
                    && demographics.email == t.expect_email
                    && demographics.zip.as_deref() == Some(t.expect_zip.as_str()),
                "synthetic message {i} ({}) maps to {event:?}",
                t.kind.label()
            );
        }
        Ok(())
    }

    fn mix(&self) -> String {
        let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
        for t in &self.templates {
            *counts.entry(t.kind).or_default() += 1;
        }
        let patients = self
            .templates
            .iter()
            .map(|t| t.patient)
            .max()
            .map_or(0, |m| m + 1);
        let mut mix = String::new();
        for (kind, count) in counts {
            let _ = write!(mix, "{} {count}, ", kind.label());
        }
        let _ = write!(mix, "{patients} patients");
        mix
    }

    fn mean_len(&self) -> f64 {
        let total: usize = self
            .templates
            .iter()
            .map(|t| t.head.len() + 14 + t.tail.len())
            .sum();
        total as f64 / self.templates.len().max(1) as f64
    }
}

fn print_sample(seed: u64) {
    let corpus = Corpus::generate(200, seed);
    let messages = corpus.messages("SAMPLE");
    let mut shown = Vec::new();
    for (t, m) in corpus.templates.iter().zip(&messages) {
        if !shown.contains(&t.kind) {
            shown.push(t.kind);
            println!("# {}", t.kind.label());
            println!(
                "{}\n",
                String::from_utf8_lossy(&m.bytes).replace('\r', "\n")
            );
        }
    }
}

/// The bytes as one line, `\r` shown as `\r`, cut after `max` characters.
fn printable(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes).replace('\r', "\\r");
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

// ---------------------------------------------------------------- client

/// What the client saw in one scenario.
#[derive(Default)]
struct Outcome {
    sent: usize,
    acked: usize,
    errors: usize,
    secs: f64,
    /// Sorted after the run.
    latencies_ns: Vec<u64>,
    first_errors: Vec<String>,
    /// CPU seconds of this process (the client) during the run.
    client_cpu_secs: Option<f64>,
    /// CPU seconds of the server process during the run, when known.
    server_cpu_secs: Option<f64>,
}

impl Outcome {
    /// Nearest-rank percentile.
    fn percentile(&self, p: f64) -> Option<u64> {
        let n = self.latencies_ns.len();
        if n == 0 {
            return None;
        }
        let rank = ((p * n as f64).ceil() as usize).clamp(1, n);
        Some(self.latencies_ns[rank - 1])
    }

    fn error(&mut self, what: String) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(what);
        }
    }
}

/// Sends `messages` over `k` connections (by patient), each waiting for the
/// ACK of a message before sending the next.
async fn send_all(
    addr: SocketAddr,
    messages: &[Outgoing],
    k: usize,
    ack_timeout: Duration,
) -> anyhow::Result<Outcome> {
    let mut per_connection: Vec<Vec<Outgoing>> = vec![Vec::new(); k];
    for m in messages {
        per_connection[m.patient % k].push(m.clone());
    }
    let mut connections = Vec::with_capacity(k);
    for _ in 0..k {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        connections.push(Framed::new(stream, MllpCodec::default()));
    }
    let started = Instant::now();
    let client_cpu = cpu_secs("self");
    let outcomes = futures::future::join_all(
        connections
            .into_iter()
            .zip(per_connection)
            .enumerate()
            .map(|(c, (framed, messages))| drive(c, framed, messages, ack_timeout)),
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    let mut total = Outcome {
        secs,
        client_cpu_secs: cpu_secs("self")
            .zip(client_cpu)
            .map(|(after, before)| after - before),
        ..Outcome::default()
    };
    for o in outcomes {
        total.sent += o.sent;
        total.acked += o.acked;
        total.errors += o.errors;
        total.latencies_ns.extend(o.latencies_ns);
        for e in o.first_errors {
            if total.first_errors.len() < 5 {
                total.first_errors.push(e);
            }
        }
    }
    total.latencies_ns.sort_unstable();
    Ok(total)
}

async fn drive(
    connection: usize,
    mut framed: Framed<TcpStream, MllpCodec>,
    messages: Vec<Outgoing>,
    ack_timeout: Duration,
) -> Outcome {
    let mut outcome = Outcome {
        latencies_ns: Vec::with_capacity(messages.len()),
        ..Outcome::default()
    };
    for (n, message) in messages.iter().enumerate() {
        let sent_at = Instant::now();
        outcome.sent += 1;
        if let Err(e) = framed.send(message.bytes.clone()).await {
            give_up(
                &mut outcome,
                &messages[n..],
                connection,
                format!("send: {e}"),
            );
            break;
        }
        let ack = match tokio::time::timeout(ack_timeout, framed.next()).await {
            Ok(Some(Ok(Ok(ack)))) => ack,
            Ok(Some(Ok(Err(bad)))) => {
                let head = match &bad {
                    MllpError::TooLarge { head, .. } | MllpError::Incomplete { head, .. } => {
                        printable(head, 200)
                    }
                };
                outcome.error(format!(
                    "connection {connection}: bad ACK frame for {}: {bad}: {head}",
                    message.control_id
                ));
                continue;
            }
            Ok(Some(Err(e))) => {
                give_up(
                    &mut outcome,
                    &messages[n..],
                    connection,
                    format!("read: {e}"),
                );
                break;
            }
            Ok(None) => {
                give_up(
                    &mut outcome,
                    &messages[n..],
                    connection,
                    "the server closed the connection".into(),
                );
                break;
            }
            Err(_) => {
                give_up(
                    &mut outcome,
                    &messages[n..],
                    connection,
                    format!("no ACK within {} s", ack_timeout.as_secs()),
                );
                break;
            }
        };
        outcome
            .latencies_ns
            .push(sent_at.elapsed().as_nanos().try_into().unwrap_or(u64::MAX));
        outcome.acked += 1;
        if let Err(e) = check_ack(&ack, &message.control_id) {
            outcome.error(format!("connection {connection}: {e}"));
        }
    }
    // Messages after a give-up were never sent but count in "messages".
    outcome.sent = messages.len();
    outcome
}

/// The message `rest[0]` was not answered: it and the rest of this
/// connection's messages are errors.
fn give_up(outcome: &mut Outcome, rest: &[Outgoing], connection: usize, why: String) {
    outcome.error(format!(
        "connection {connection}: {why} (message {}); its {} remaining message(s) count as errors",
        rest[0].control_id,
        rest.len()
    ));
    outcome.errors += rest.len() - 1;
}

/// MSA-1 must be AA and MSA-2 the control id sent.
fn check_ack(ack: &[u8], control_id: &str) -> Result<(), String> {
    let text = String::from_utf8_lossy(ack);
    let separator = text
        .find("MSH")
        .and_then(|at| text[at + 3..].chars().next())
        .unwrap_or('|');
    let Some(msa) = text.split(['\r', '\n']).find(|s| {
        s.strip_prefix("MSA")
            .is_some_and(|r| r.starts_with(separator))
    }) else {
        return Err(format!(
            "ACK for {control_id} has no MSA segment: {}",
            printable(ack, 300)
        ));
    };
    let mut fields = msa.split(separator).skip(1);
    let code = fields.next().unwrap_or("");
    let echoed = fields.next().unwrap_or("");
    if code != "AA" {
        return Err(format!(
            "MSA-1 is {code:?}, not AA, for {control_id}: {}",
            printable(ack, 300)
        ));
    }
    if echoed != control_id {
        return Err(format!(
            "MSA-2 is {echoed:?}, not the MSH-10 {control_id:?} sent: {}",
            printable(ack, 300)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- servers

/// The storage-free Rust peer: the same framing (`MllpCodec`), parser,
/// mapping (`enroll_hl7::process`) and ACK builder as `enroll serve`, on a
/// multi-threaded tokio runtime as there, a task per connection reading the
/// next frame only after answering, and nothing stored. The difference
/// between it and `enroll-sqlite` is the database's share.
fn serve_peer(port: u16) -> std::process::ExitCode {
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(peer_accept(port)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_words(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn peer_accept(port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(peer_connection(stream));
    }
}

async fn peer_connection(stream: TcpStream) {
    let mapping = MappingOptions::default();
    let mut frames = Framed::new(stream, MllpCodec::new(1024 * 1024));
    let mut sequence = 0u64;
    while let Some(Ok(frame)) = frames.next().await {
        let Ok(bytes) = frame else {
            continue;
        };
        sequence += 1;
        let inbound = enroll_hl7::process(&bytes, &mapping);
        let error = inbound.result.as_ref().err();
        let ack = enroll_hl7::build_ack(
            inbound.header.as_ref(),
            error,
            &format!("PEER{sequence}"),
            "20261127120000+0000",
        )
        .into_string();
        if frames
            .send(Bytes::from(inbound.charset.encode(&ack)))
            .await
            .is_err()
        {
            break;
        }
    }
}

/// Why a target is not measured.
struct Skip(String);

/// How to start one target's server.
enum Launcher {
    Python {
        interpreter: PathBuf,
        version: String,
    },
    Node {
        version: String,
    },
    Rust,
    Enroll {
        bin: PathBuf,
        postgres: Option<String>,
        /// `[sqlite] synchronous` for a SQLite target.
        synchronous: &'static str,
    },
}

impl Launcher {
    fn prepare(target: Target, args: &Args) -> Result<Launcher, Skip> {
        match target {
            Target::Python => {
                let out = Command::new("python3")
                    .args([
                        "-c",
                        "import sys, hl7, hl7.mllp; print(sys.executable); print(hl7.__version__)",
                    ])
                    .stderr(Stdio::null())
                    .output();
                let out = match out {
                    Ok(out) if out.status.success() => {
                        String::from_utf8_lossy(&out.stdout).into_owned()
                    }
                    _ => {
                        return Err(Skip(
                            "`python3 -c 'import hl7'` fails: `pip install hl7`".into(),
                        ));
                    }
                };
                let mut lines = out.lines();
                let interpreter = PathBuf::from(lines.next().unwrap_or("python3"));
                let hl7_version = lines.next().unwrap_or("?").to_string();
                let python_version = command_output(&interpreter, &["--version"]);
                Ok(Launcher::Python {
                    interpreter,
                    version: format!("python: {python_version}, hl7 {hl7_version}"),
                })
            }
            Target::Node => {
                let peers_dir = args.peers_dir();
                let package = peers_dir.join("node_modules/simple-hl7/package.json");
                let Ok(package) = std::fs::read_to_string(&package) else {
                    return Err(Skip(format!(
                        "{} is missing: `cd {} && npm install --legacy-peer-deps`",
                        package.display(),
                        peers_dir.display()
                    )));
                };
                let node_version = command_output(Path::new("node"), &["--version"]);
                if node_version.is_empty() {
                    return Err(Skip("`node` is not installed".into()));
                }
                let simple_version = package
                    .split("\"version\"")
                    .nth(1)
                    .and_then(|rest| rest.split('"').nth(1))
                    .unwrap_or("?");
                Ok(Launcher::Node {
                    version: format!("node: {node_version}, simple-hl7 {simple_version}"),
                })
            }
            Target::Rust => Ok(Launcher::Rust),
            Target::EnrollSqlite | Target::EnrollSqliteNormal | Target::EnrollPostgres => {
                let bin = match &args.enroll_bin {
                    Some(bin) => bin.clone(),
                    None => std::env::current_exe()
                        .ok()
                        .and_then(|exe| exe.parent().map(|dir| dir.join("enroll")))
                        .unwrap_or_else(|| PathBuf::from("target/release/enroll")),
                };
                let postgres = if target == Target::EnrollPostgres {
                    match &args.postgres_url {
                        Some(url) => Some(url.clone()),
                        None => {
                            return Err(Skip(
                                "no --postgres-url (or ENROLL_TEST_POSTGRES_URL)".into(),
                            ));
                        }
                    }
                } else {
                    None
                };
                // A missing binary is a failure of the scenario, not a skip.
                let synchronous = if target == Target::EnrollSqliteNormal {
                    "normal"
                } else {
                    "full"
                };
                Ok(Launcher::Enroll {
                    bin,
                    postgres,
                    synchronous,
                })
            }
        }
    }

    fn version(&self) -> Option<String> {
        match self {
            Launcher::Python { version, .. } | Launcher::Node { version } => Some(version.clone()),
            Launcher::Rust | Launcher::Enroll { .. } => None,
        }
    }

    /// A fresh server, the messages, its peak memory; the server is stopped
    /// (and a PostgreSQL database dropped) whatever happens.
    async fn measure(
        &self,
        messages: &[Outgoing],
        k: usize,
        ack_timeout: Duration,
        args: &Args,
    ) -> anyhow::Result<(Outcome, Option<f64>)> {
        let start_timeout = Duration::from_secs(args.start_timeout);
        match self {
            Launcher::Python { interpreter, .. } => {
                let port = free_ports::<1>()?[0];
                let mut cmd = Command::new(interpreter);
                cmd.arg(args.peers_dir().join("hl7_peer.py"))
                    .arg(port.to_string());
                let server = Spawned::start(cmd, "hl7_peer.py")?;
                server
                    .measure(port, messages, k, ack_timeout, start_timeout)
                    .await
            }
            Launcher::Node { .. } => {
                let port = free_ports::<1>()?[0];
                let mut cmd = Command::new("node");
                cmd.arg(args.peers_dir().join("simple_hl7_peer.js"))
                    .arg(port.to_string());
                let server = Spawned::start(cmd, "simple_hl7_peer.js")?;
                server
                    .measure(port, messages, k, ack_timeout, start_timeout)
                    .await
            }
            Launcher::Rust => {
                let port = free_ports::<1>()?[0];
                let mut cmd = Command::new(std::env::current_exe()?);
                cmd.arg("--serve-peer").arg(port.to_string());
                let server = Spawned::start(cmd, "mllp --serve-peer")?;
                server
                    .measure(port, messages, k, ack_timeout, start_timeout)
                    .await
            }
            Launcher::Enroll {
                bin,
                postgres,
                synchronous,
            } => {
                ensure!(
                    bin.is_file(),
                    "the enroll binary {} does not exist: build it with \
                     `cargo build --release -p enroll`, or pass --enroll-bin",
                    bin.display()
                );
                let database = match postgres {
                    Some(admin_url) => {
                        let name = format!("enroll_bench_mllp_{}", std::process::id());
                        create_postgres_database(admin_url, &name).await?;
                        Some((admin_url.as_str(), name))
                    }
                    None => None,
                };
                let result = measure_enroll(
                    bin,
                    database
                        .as_ref()
                        .map(|(admin, name)| replace_database(admin, name)),
                    synchronous,
                    messages,
                    k,
                    ack_timeout,
                    start_timeout,
                )
                .await;
                if let Some((admin_url, name)) = &database
                    && let Err(e) = enroll_store::testing::drop_database(admin_url, name).await
                {
                    eprintln!("warning: could not drop the database {name}: {}", e);
                }
                result
            }
        }
    }
}

async fn measure_enroll(
    bin: &Path,
    postgres_url: Option<String>,
    synchronous: &str,
    messages: &[Outgoing],
    k: usize,
    ack_timeout: Duration,
    start_timeout: Duration,
) -> anyhow::Result<(Outcome, Option<f64>)> {
    let dir = tempfile::tempdir()?;
    let database_url = match postgres_url {
        Some(url) => url,
        None => format!("sqlite://{}", dir.path().join("enroll.db").display()),
    };
    let [http_port, mllp_port] = free_ports::<2>()?;
    let config = dir.path().join("enroll.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{database_url}\"\n\
             listen = \"127.0.0.1:{http_port}\"\n\
             public_url = \"http://127.0.0.1:{http_port}\"\n\
             \n\
             [sqlite]\n\
             synchronous = \"{synchronous}\"\n\
             \n\
             [mllp]\n\
             listen = \"127.0.0.1:{mllp_port}\"\n"
        ),
    )?;

    // A staff user's API token, to create the practice over the API.
    let mut add_user = Command::new(bin);
    add_user
        .arg("--config")
        .arg(&config)
        .args(["user", "add", "mllp-bench", "--role", "admin"]);
    clear_enroll_env(&mut add_user);
    let out = add_user
        .output()
        .with_context(|| format!("run {} user add", bin.display()))?;
    ensure!(
        out.status.success(),
        "`enroll user add` failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let token = stdout
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .filter(|t| !t.contains(' '))
        .with_context(|| format!("no token in the output of `enroll user add`: {stdout:?}"))?
        .to_string();

    let mut serve = Command::new(bin);
    serve.arg("--config").arg(&config).arg("serve");
    clear_enroll_env(&mut serve);
    let mut server = Spawned::start_in(serve, "enroll serve", dir)?;
    let http = SocketAddr::from(([127, 0, 0, 1], http_port));
    server
        .wait_listening(http, start_timeout)
        .await
        .context("enroll's HTTP listener")?;
    let remaining = start_timeout.saturating_sub(server.started.elapsed());
    server
        .wait_listening(
            SocketAddr::from(([127, 0, 0, 1], mllp_port)),
            remaining.max(Duration::from_secs(1)),
        )
        .await
        .context("enroll's MLLP listener ([mllp] listen)")?;
    create_practice(http, &token).await?;
    server
        .measure(mllp_port, messages, k, ack_timeout, Duration::ZERO)
        .await
}

/// The config file must win over the caller's `ENROLL_*` settings.
fn clear_enroll_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str()
            && key.starts_with("ENROLL_")
            && key != "ENROLL_LOG"
        {
            cmd.env_remove(key);
        }
    }
}

/// `POST /api/practices`: the practice whose code is MSH-4 (NORTH), with
/// office hours and auto invites off (intake only).
async fn create_practice(http: SocketAddr, token: &str) -> anyhow::Result<()> {
    let windows: Vec<String> = ["monday", "tuesday", "wednesday", "thursday", "friday"]
        .iter()
        .map(|day| format!(r#"{{"weekday":"{day}","opens":"08:00","closes":"17:00"}}"#))
        .collect();
    let body = format!(
        r#"{{"code":"NORTH","name":"North Clinic (MLLP bench)","schedule":{{"time_zone":"America/Chicago","windows":[{}],"closed_dates":[]}}}}"#,
        windows.join(",")
    );
    let (status, response) = http_request(http, "POST", "/api/practices", token, &body).await?;
    match status {
        201 => Ok(()),
        409 => {
            eprintln!("  the practice NORTH exists already");
            Ok(())
        }
        _ => bail!("POST /api/practices answered {status}: {response}"),
    }
}

/// One HTTP/1.1 request with `Connection: close`; the status and body.
async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nAccept: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .context("no HTTP response within 30 s")??;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    Ok((status, body))
}

/// `n` distinct free loopback ports (held together while chosen).
fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// A server process of ours: stopped when dropped.
struct Spawned {
    child: Child,
    what: &'static str,
    log: PathBuf,
    started: Instant,
    _dir: tempfile::TempDir,
}

impl Spawned {
    fn start(cmd: Command, what: &'static str) -> anyhow::Result<Spawned> {
        Spawned::start_in(cmd, what, tempfile::tempdir()?)
    }

    /// Starts `cmd` with its output in `dir`/server.log.
    fn start_in(
        mut cmd: Command,
        what: &'static str,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<Spawned> {
        let log = dir.path().join("server.log");
        let out = File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {what} ({:?})", cmd.get_program()))?;
        Ok(Spawned {
            child,
            what,
            log,
            started: Instant::now(),
            _dir: dir,
        })
    }

    async fn wait_listening(&mut self, addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
        let since = Instant::now();
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before listening on {addr}; its output ends:\n{}",
                    self.what,
                    self.log_tail()
                );
            }
            if since.elapsed() > timeout {
                bail!(
                    "{} did not listen on {addr} within {} s; its output ends:\n{}",
                    self.what,
                    timeout.as_secs(),
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for `port` (unless `start_timeout` is zero: already waited),
    /// sends, reads the peak memory, stops the server.
    async fn measure(
        mut self,
        port: u16,
        messages: &[Outgoing],
        k: usize,
        ack_timeout: Duration,
        start_timeout: Duration,
    ) -> anyhow::Result<(Outcome, Option<f64>)> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if !start_timeout.is_zero() {
            self.wait_listening(addr, start_timeout).await?;
        }
        let pid = self.child.id().to_string();
        let cpu_before = cpu_secs(&pid);
        let mut outcome = send_all(addr, messages, k, ack_timeout).await?;
        outcome.server_cpu_secs = cpu_secs(&pid)
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        let peak = peak_rss_mib(self.child.id());
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}) during the run; its output ends:\n{}",
                self.what,
                self.log_tail()
            );
        }
        self.stop();
        Ok((outcome, peak))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 10 s.
    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let since = Instant::now();
        while since.elapsed() < Duration::from_secs(10) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}

fn command_output(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_string()
        })
        .unwrap_or_default()
}

/// User and system CPU seconds of a process (`self` or a pid), from
/// /proc/<pid>/stat (in clock ticks of 1/100 s, USER_HZ on Linux).
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After "pid (comm) ": state is field 3, utime 14, stime 15.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// VmHWM of a process, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib as f64 / 1024.0)
}

// ---------------------------------------------------------------- PostgreSQL

async fn create_postgres_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = sqlx::postgres::PgConnection::connect(admin_url)
        .await
        .context("connect to the PostgreSQL admin URL")?;
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .with_context(|| format!("create the database {name}"))?;
    }
    admin.close().await?;
    Ok(())
}
