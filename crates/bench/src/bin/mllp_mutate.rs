//! Drill: mutated HL7 frames over real TCP to a running Enroll.
//!
//!     cargo build --release -p enroll-bench --bin mllp-mutate
//!     ./target/release/mllp-mutate [--frames 100000] [--connections 4] [--seed 7]
//!
//! Starts Enroll (the HTTP side and the MLLP listener, delivery off) on a
//! throwaway SQLite file, then sends `--frames` frames made from four real
//! messages (A04, A08, A40, SIU^S12) with one to four random mutations
//! each: bytes flipped, deleted or repeated, delimiters and escapes
//! inserted (NUL and `\X00\` among them), segments dropped, repeated or
//! garbled, MSH-2 broken, truncation, a frame over `max_message_bytes`,
//! and, in one frame in a hundred, the MLLP framing itself broken (a stray
//! start byte, a frame left without its end). It reads the answer of each
//! frame; a connection the server closes, or one whose frame cannot end,
//! is opened again.
//!
//! Passes when nothing panicked anywhere in the process (a panic hook
//! counts them, including inside the server's connection tasks), every
//! complete frame got an answer, and a valid message sent at the end gets
//! AA. Prints the answers by code, the reconnects, the stored messages and
//! the process's peak memory (VmHWM: client and server together).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use enroll_server::{Application, Runtime, Settings, SystemClock};
use enroll_store::testing::{Engine, TestDb, scalar};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser)]
struct Args {
    /// Frames to send in all.
    #[arg(long, default_value_t = 100_000)]
    frames: usize,
    /// Connections sending at once.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

static PANICS: AtomicUsize = AtomicUsize::new(0);

const MAX_MESSAGE_BYTES: usize = 64 * 1024;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let db = TestDb::create(Engine::Sqlite, None).await;
    db.always_open_practice("NORTH", jiff::Timestamp::now())
        .await;
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse()?,
        ..Settings::default()
    };
    settings.delivery.enabled = false;
    settings.mllp.listen = "127.0.0.1:0".parse()?;
    settings.mllp.max_message_bytes = MAX_MESSAGE_BYTES;
    // The drill is about bad bytes, not about the cap on them: a peer may
    // store as many rejected frames as it sends.
    settings.mllp.rejected_frames_per_minute = u32::MAX;
    let runtime = Runtime {
        clock: Arc::new(SystemClock),
        store: Some(db.store.clone()),
        mailbox: None,
    };
    let app = Application::build(settings, runtime).await?.start().await?;
    let mllp = app.mllp_addr.context("the MLLP listener")?;

    let started = Instant::now();
    let per_connection = args.frames.div_ceil(args.connections.max(1));
    let mut senders = tokio::task::JoinSet::new();
    for n in 0..args.connections.max(1) {
        let seed = args.seed.wrapping_add(n as u64);
        senders.spawn(send_mutated(mllp, per_connection, seed, n));
    }
    let mut tally = Tally::default();
    while let Some(done) = senders.join_next().await {
        tally.add(&done??);
    }
    let elapsed = started.elapsed();

    let mut check = Connection::open(mllp).await?;
    let valid = message(Template::A04, "FINAL-1", "FINALMRN");
    let answer = check
        .exchange(&valid)
        .await?
        .context("no answer to the valid message")?;
    let stored = scalar(&db.store, "SELECT COUNT(*) FROM hl7_messages").await?;
    app.stop().await?;

    let panics = PANICS.load(Ordering::SeqCst);
    println!("frames sent            {}", tally.sent);
    println!("  answered AA          {}", tally.aa);
    println!("  answered AE          {}", tally.ae);
    println!("  answered AR          {}", tally.ar);
    println!(
        "  left open, no answer  {} (sent without an end byte on purpose)",
        tally.unended
    );
    println!("  unanswered otherwise {}", tally.unanswered);
    println!("reconnects             {}", tally.reconnects);
    println!(
        "  closed by the server  {} after broken framing, {} after a whole frame",
        tally.closed_after_broken_framing, tally.closed_after_whole_frame
    );
    println!("messages stored        {stored}");
    println!(
        "elapsed                {:.1} s ({:.0} frames/s)",
        elapsed.as_secs_f64(),
        tally.sent as f64 / elapsed.as_secs_f64()
    );
    println!("peak memory (VmHWM)    {}", peak_memory());
    println!("panics                 {panics}");
    println!("final valid message    {}", ack_code(&answer));
    ensure!(panics == 0, "{panics} panic(s)");
    ensure!(
        tally.unanswered == 0,
        "{} complete frame(s) got no answer",
        tally.unanswered
    );
    ensure!(
        ack_code(&answer) == "AA",
        "the valid message got {answer:?}"
    );
    Ok(())
}

#[derive(Default)]
struct Tally {
    sent: usize,
    aa: usize,
    ae: usize,
    ar: usize,
    unended: usize,
    unanswered: usize,
    reconnects: usize,
    /// Connections the server closed after answering, by what the last
    /// frame was: broken framing, or a whole frame.
    closed_after_broken_framing: usize,
    closed_after_whole_frame: usize,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.sent += other.sent;
        self.aa += other.aa;
        self.ae += other.ae;
        self.ar += other.ar;
        self.unended += other.unended;
        self.unanswered += other.unanswered;
        self.reconnects += other.reconnects;
        self.closed_after_broken_framing += other.closed_after_broken_framing;
        self.closed_after_whole_frame += other.closed_after_whole_frame;
    }

    fn answered(&mut self, ack: &str) {
        match ack_code(ack) {
            "AA" => self.aa += 1,
            "AE" => self.ae += 1,
            _ => self.ar += 1,
        }
    }
}

async fn send_mutated(
    addr: SocketAddr,
    frames: usize,
    seed: u64,
    connection: usize,
) -> anyhow::Result<Tally> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    let mut conn = Connection::open(addr).await?;
    for i in 0..frames {
        let template =
            [Template::A04, Template::A08, Template::A40, Template::S12][rng.random_range(0..4)];
        let id = format!("M{connection}-{i}");
        let mrn = format!("MUT{}", rng.random_range(0..500));
        let mut body = message(template, &id, &mrn);
        for _ in 0..rng.random_range(1..=4) {
            mutate(&mut body, &mut rng);
        }
        let framing = rng.random_range(0..100) == 0;
        let (frame, ends) = if framing {
            broken_frame(&body, &mut rng)
        } else {
            (mllp_frame(&body), true)
        };
        tally.sent += 1;
        conn.write(&frame).await?;
        match conn
            .read_answer(if ends {
                Duration::from_secs(30)
            } else {
                Duration::from_millis(300)
            })
            .await
        {
            Some(ack) => tally.answered(&ack),
            None if !ends => tally.unended += 1,
            // The server closing after a whole frame without answering it
            // is a failure as much as silence is.
            None => tally.unanswered += 1,
        }
        // Any further answers already there (a frame split in two by a
        // stray end byte gets two).
        while let Some(ack) = conn.read_answer(Duration::ZERO).await {
            tally.answered(&ack);
        }
        if conn.closed && framing {
            tally.closed_after_broken_framing += 1;
        } else if conn.closed {
            tally.closed_after_whole_frame += 1;
        }
        if conn.closed || !ends {
            conn = Connection::open(addr).await?;
            tally.reconnects += 1;
        }
    }
    Ok(tally)
}

struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    closed: bool,
}

impl Connection {
    async fn open(addr: SocketAddr) -> anyhow::Result<Connection> {
        Ok(Connection {
            stream: TcpStream::connect(addr).await.context("connect to MLLP")?,
            buffer: Vec::new(),
            closed: false,
        })
    }

    async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        if self.stream.write_all(bytes).await.is_err() {
            self.closed = true;
        }
        Ok(())
    }

    async fn exchange(&mut self, message: &[u8]) -> anyhow::Result<Option<String>> {
        self.write(&mllp_frame(message)).await?;
        Ok(self.read_answer(Duration::from_secs(30)).await)
    }

    /// The next answer within `wait`; `None` on timeout or close.
    async fn read_answer(&mut self, wait: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == [0x1C, 0x0D]) {
                let frame: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let start = frame.iter().position(|&b| b == 0x0B).map_or(0, |p| p + 1);
                return Some(String::from_utf8_lossy(&frame[start..end]).into_owned());
            }
            if self.closed {
                return None;
            }
            let mut chunk = [0u8; 8192];
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await;
            match read {
                Err(_) => return None,
                Ok(Ok(n)) if n > 0 => self.buffer.extend_from_slice(&chunk[..n]),
                Ok(_) => {
                    self.closed = true;
                }
            }
        }
    }
}

fn ack_code(ack: &str) -> &str {
    ack.split('\r')
        .find(|s| s.starts_with("MSA"))
        .and_then(|s| s.get(4..6))
        .unwrap_or("")
}

#[derive(Clone, Copy)]
enum Template {
    A04,
    A08,
    A40,
    S12,
}

/// A realistic message of the practice NORTH (made-up patient).
fn message(template: Template, control_id: &str, mrn: &str) -> Vec<u8> {
    let msh = |event: &str| {
        format!("MSH|^~\\&|EPIC|NORTH|ENROLL|PORTAL|20261125100000||{event}|{control_id}|P|2.5.1")
    };
    let pid = format!(
        "PID|1||{mrn}^^^NORTH^MR||Mutant^Drill^Q^^^^L||19800214|F|||1 Test St^^Springfield^IL^62704^USA^H||^PRN^CP^^1^217^5550100~^NET^Internet^drill@example.test|||||||||||||||||"
    );
    let segments: Vec<String> = match template {
        Template::A04 => vec![
            msh("ADT^A04^ADT_A01"),
            "EVN|A04|20261125100000".into(),
            pid,
            "PV1|1|O|CLINIC^101^1^NORTH||||||||||||||||V1".into(),
        ],
        Template::A08 => vec![
            msh("ADT^A08^ADT_A01"),
            "EVN|A08|20261125100000".into(),
            pid,
            "PV1|1|O".into(),
        ],
        Template::A40 => vec![
            msh("ADT^A40^ADT_A39"),
            "EVN|A40|20261125100000".into(),
            pid,
            format!("MRG|{mrn}X^^^NORTH^MR"),
        ],
        Template::S12 => vec![
            msh("SIU^S12^SIU_S12"),
            "SCH|1||||||ROUTINE|||30|min|^^30^20261201090000".into(),
            pid,
            "AIL|1||CLINIC^101".into(),
        ],
    };
    let mut text = segments.join("\r");
    text.push('\r');
    text.into_bytes()
}

const INSERTS: &[&[u8]] = &[
    b"|",
    b"^",
    b"~",
    b"\\",
    b"&",
    b"\r",
    b"\n",
    b"\0",
    b"\\X00\\",
    b"\\X0D\\",
    b"\\E\\",
    b"\\F\\",
    b"\xff\xfe",
    b"\xc3\x28",
    b"MSH|",
    b"PID|",
    b"||||||||||",
    b"^^^^^^",
];

/// One random change to a message's bytes.
fn mutate(body: &mut Vec<u8>, rng: &mut StdRng) {
    if body.is_empty() {
        body.extend_from_slice(b"MSH|");
        return;
    }
    let at = rng.random_range(0..body.len());
    match rng.random_range(0..10) {
        0 => body[at] ^= 1 << rng.random_range(0..8),
        1 => body[at] = rng.random(),
        2 => {
            let end = (at + rng.random_range(1..40)).min(body.len());
            body.drain(at..end);
        }
        3 | 4 => {
            let insert = INSERTS[rng.random_range(0..INSERTS.len())];
            body.splice(at..at, insert.iter().copied());
        }
        5 => {
            // Repeat a stretch (a repeated segment or field).
            let end = (at + rng.random_range(1..200)).min(body.len());
            let copy = body[at..end].to_vec();
            body.splice(end..end, copy);
        }
        6 => body.truncate(at),
        7 => {
            // MSH-2's encoding characters broken.
            if body.len() > 8 {
                body[4 + rng.random_range(0..4)] = INSERTS[rng.random_range(0..5)][0];
            }
        }
        8 => {
            // A segment garbled into random bytes.
            let len = rng.random_range(1..80);
            let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            body.splice(at..at, junk);
        }
        _ => {
            // Rarely, larger than the listener takes.
            if rng.random_range(0..50) == 0 {
                body.extend(std::iter::repeat_n(b'A', MAX_MESSAGE_BYTES + 10));
            } else {
                body.extend_from_slice(b"\rZZZ|1|2|3");
            }
        }
    }
}

fn mllp_frame(body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(body.len() + 3);
    frame.push(0x0B);
    frame.extend_from_slice(body);
    frame.extend_from_slice(&[0x1C, 0x0D]);
    frame
}

/// A frame whose MLLP framing is broken; the bool says whether it still
/// ends (so an answer must come).
fn broken_frame(body: &[u8], rng: &mut StdRng) -> (Vec<u8>, bool) {
    match rng.random_range(0..3) {
        0 => {
            // A stray start byte before the frame.
            let mut frame = vec![0x0B, b'x', b'y'];
            frame.extend(mllp_frame(body));
            (frame, true)
        }
        1 => {
            // A start byte inside the message.
            let mut inner = body.to_vec();
            let at = rng.random_range(0..=inner.len());
            inner.insert(at, 0x0B);
            (mllp_frame(&inner), true)
        }
        _ => {
            // No end: the listener keeps waiting for the rest.
            let mut frame = vec![0x0B];
            frame.extend_from_slice(body);
            (frame, false)
        }
    }
}

fn peak_memory() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}
