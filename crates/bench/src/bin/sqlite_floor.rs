//! How fast SQLite itself commits on this machine: the floor under HL7
//! intake on SQLite, where every message is one transaction committed
//! before its ACK.
//!
//!     cargo build --release -p enroll-bench
//!     ./target/release/sqlite-floor [--commits 20000] [--dir /tmp]
//!
//! Each loop runs on a fresh database file set up as `enroll serve` sets up
//! its own (WAL, synchronous=normal, automatic checkpoints off and a passive
//! checkpoint every 2,000 commits), one transaction after another on one
//! connection, as one MLLP connection's messages are:
//!
//! 1. one row: `BEGIN IMMEDIATE`, one 560-byte row into a table without
//!    indexes, `COMMIT`, through rusqlite (direct C calls): the least a
//!    durable commit costs;
//! 2. the same through sqlx, as Enroll runs its statements (each statement a
//!    hand-off to sqlx's SQLite thread);
//! 3. intake rows: the statements `Store::receive_hl7` runs for an ADT^A04
//!    of a new patient with auto invites on (duplicate check, practice,
//!    patient by MRN, the patient, two timeline lines, send history, the
//!    invite, the message with its raw bytes and ACK) on Enroll's own
//!    schema (its migrations), through rusqlite.
//!
//! rusqlite is used here only, to measure SQLite without sqlx; it links the
//! same libsqlite3-sys (and so the same SQLite) as sqlx.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use rusqlite::{Connection, params};
use sqlx::ConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

#[derive(Debug, Parser)]
struct Args {
    /// Transactions per loop.
    #[arg(long, default_value_t = 20_000)]
    commits: usize,
    /// Where the scratch database files go (default: a temporary folder).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Enroll's SQLite schema, applied in order.
const MIGRATIONS: [&str; 3] = [
    include_str!("../../../store/migrations/sqlite/0001_init.sql"),
    include_str!("../../../store/migrations/sqlite/0002_delivery.sql"),
    include_str!("../../../store/migrations/sqlite/0003_hl7.sql"),
];

/// The bench's messages are 559 bytes on average.
const RAW_BYTES: usize = 560;

/// How often `enroll serve` would have checkpointed by this many commits.
const CHECKPOINT_EVERY: usize = 2_000;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.commits > 0, "--commits must be at least 1");
    let scratch = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| scratch.path().into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let n = args.commits;
    let rows = [
        (
            "one row, rusqlite",
            one_row_rusqlite(&dir.join("one.db"), n)?,
        ),
        (
            "one row, sqlx (3 statements)",
            runtime.block_on(one_row_sqlx(&dir.join("one-sqlx.db"), n))?,
        ),
        (
            "intake rows of an A04, rusqlite (10 statements)",
            intake_rows(&dir.join("intake.db"), n)?,
        ),
    ];
    println!(
        "\nSQLite {}, {n} transactions per loop, one connection\n",
        rusqlite::version()
    );
    println!("| loop | us per commit | commits/s |");
    println!("| --- | ---: | ---: |");
    for (name, seconds) in rows {
        let per = seconds / n as f64;
        println!("| {name} | {:.1} | {:.0} |", per * 1e6, 1.0 / per);
    }
    println!(
        "\nAt 10,000 messages/s over one MLLP connection a message has 100 us from its send \
         to its ACK, network and parsing included."
    );
    Ok(())
}

fn open(path: &Path) -> anyhow::Result<Connection> {
    let connection = Connection::open(path).with_context(|| format!("open {}", path.display()))?;
    connection.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         PRAGMA wal_autocheckpoint = 0; PRAGMA foreign_keys = ON;",
    )?;
    Ok(connection)
}

fn checkpoint(connection: &Connection, i: usize) -> anyhow::Result<()> {
    if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1 {
        connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    }
    Ok(())
}

/// Seconds for `n` one-row transactions.
fn one_row_rusqlite(path: &Path, n: usize) -> anyhow::Result<f64> {
    let connection = open(path)?;
    connection.execute_batch("CREATE TABLE m (id INTEGER PRIMARY KEY, raw BLOB NOT NULL)")?;
    let raw = vec![b'x'; RAW_BYTES];
    let start = Instant::now();
    for i in 0..n {
        connection.execute_batch("BEGIN IMMEDIATE")?;
        connection
            .prepare_cached("INSERT INTO m (raw) VALUES (?1)")?
            .execute(params![raw])?;
        connection.execute_batch("COMMIT")?;
        checkpoint(&connection, i)?;
    }
    Ok(start.elapsed().as_secs_f64())
}

async fn one_row_sqlx(path: &Path, n: usize) -> anyhow::Result<f64> {
    let url = format!("sqlite://{}", path.display());
    let mut connection = SqliteConnectOptions::from_str(&url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .pragma("wal_autocheckpoint", "0")
        .connect()
        .await?;
    sqlx::query("CREATE TABLE m (id INTEGER PRIMARY KEY, raw BLOB NOT NULL)")
        .execute(&mut connection)
        .await?;
    let raw = vec![b'x'; RAW_BYTES];
    let start = Instant::now();
    for i in 0..n {
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut connection)
            .await?;
        sqlx::query("INSERT INTO m (raw) VALUES ($1)")
            .bind(&raw)
            .execute(&mut connection)
            .await?;
        sqlx::query("COMMIT").execute(&mut connection).await?;
        if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1 {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&mut connection)
                .await?;
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// Seconds for `n` transactions writing what an A04 of a new patient
/// writes, on Enroll's schema.
fn intake_rows(path: &Path, n: usize) -> anyhow::Result<f64> {
    let connection = open(path)?;
    for migration in MIGRATIONS {
        connection.execute_batch(migration)?;
    }
    connection.execute(
        "INSERT INTO practices (code, name, schedule_json, auto_invites_on, created_at) \
         VALUES ('NORTH', 'North Clinic', '{}', TRUE, 0)",
        [],
    )?;
    let raw = vec![b'x'; RAW_BYTES];
    let ack = "MSH|^~\\&|ENROLL|NORTH|EHR|NORTH|20261127120000+0000||ACK^A04^ACK|ENR19ac0f3e1a200001|P|2.5\rMSA|AA|MSG00001";
    let start = Instant::now();
    for i in 0..n {
        let at = i as i64;
        let key = format!("EHR|NORTH|MSG{i}");
        let mrn = format!("MRN{i}");
        connection.execute_batch("BEGIN IMMEDIATE")?;
        let _duplicate: Option<i64> = connection
            .prepare_cached("SELECT id FROM hl7_messages WHERE dedupe_key = ?1")?
            .query_row([&key], |r| r.get(0))
            .ok();
        let practice: i64 = connection
            .prepare_cached(
                "SELECT id FROM practices WHERE code = \
                 COALESCE((SELECT value FROM settings WHERE key = ?1), ?2)",
            )?
            .query_row(["hl7/facility/NORTH", "NORTH"], |r| r.get(0))?;
        let _known: Option<i64> = connection
            .prepare_cached(
                "SELECT COALESCE(merged_into, id) FROM patients WHERE practice_id = ?1 AND mrn = ?2",
            )?
            .query_row(params![practice, mrn], |r| r.get(0))
            .ok();
        let patient: i64 = connection
            .prepare_cached(
                "INSERT INTO patients (practice_id, mrn, first_name, last_name, first_name_lc, \
                 last_name_lc, date_of_birth, birth_sex, zip, email, cell_phone, created_at, \
                 updated_at) VALUES (?1, ?2, 'Rosa', 'Parks', 'rosa', 'parks', '1990-07-04', \
                 'F', '10027', 'rosa@example.org', '+16175550100', ?3, ?3) RETURNING id",
            )?
            .query_row(params![practice, mrn, at], |r| r.get(0))?;
        let mut timeline = connection.prepare_cached(
            "INSERT INTO timeline (patient_id, at, kind, detail, source, reference, actor) \
             VALUES (?1, ?2, ?3, ?4, 'hl7', ?5, NULL)",
        )?;
        timeline.execute(params![patient, at, "chart_added", "{}", key])?;
        let _history: Vec<Option<i64>> = connection
            .prepare_cached(
                "SELECT counted_at FROM invites WHERE patient_id = ?1 AND (counted_at > ?2 \
                 OR (kind = 'auto' AND state IN ('scheduled', 'queued')))",
            )?
            .query_map(params![patient, at - 1], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let invite: i64 = connection
            .prepare_cached(
                "INSERT INTO invites (patient_id, practice_id, kind, state, trigger_kind, \
                 created_at, due_at, counted_at) VALUES (?1, ?2, 'auto', 'queued', \
                 'chart_added', ?3, ?3, ?3) RETURNING id",
            )?
            .query_row(params![patient, practice, at], |r| r.get(0))?;
        let detail = format!("{{\"invite_id\":{invite},\"kind\":\"auto\"}}");
        timeline.execute(params![patient, at, "invite_queued", detail, key])?;
        drop(timeline);
        connection
            .prepare_cached(
                "INSERT INTO hl7_messages (received_at, processed_at, peer, sending_app, \
                 sending_facility, control_id, message_type, dedupe_key, practice_id, patient_id, \
                 status, ack_code, raw, ack) VALUES (?1, ?1, '127.0.0.1:40000', 'EHR', 'NORTH', \
                 ?2, 'ADT^A04', ?3, ?4, ?5, 'applied', 'AA', ?6, ?7)",
            )?
            .execute(params![
                at,
                format!("MSG{i}"),
                key,
                practice,
                patient,
                raw,
                ack
            ])?;
        connection.execute_batch("COMMIT")?;
        checkpoint(&connection, i)?;
    }
    Ok(start.elapsed().as_secs_f64())
}
