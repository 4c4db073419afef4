//! A go-live roster import: how fast `enroll import` loads a CSV export of
//! a million patients, and in how much memory.
//!
//!     cargo build --release -p enroll-bench --bin roster
//!     ./target/release/roster [--rows 1000000] [--postgres ADMIN_URL]
//!
//! It writes a synthetic roster file (the columns of an export: MRN, names,
//! date of birth in US order, sex, ZIP, email, a cell phone for two rows in
//! three), then for each engine imports it into a fresh database through
//! the same function `enroll import` calls (`enroll_server::roster::
//! import_roster`), twice: the first import adds every chart, the second
//! finds every row unchanged. Beside them, as the ceiling, SQLite's own
//! batched-insert rate on this machine: the same rows, already parsed,
//! into a table of the same columns without indexes, 5,000 rows a
//! transaction, through rusqlite (direct C calls).
//!
//! Peak memory is the process's VmHWM, reset (`/proc/self/clear_refs`)
//! before each import, so each figure is that import's own.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use enroll_core::{HeaderMap, Schedule};
use enroll_server::roster::{ROSTER_BATCH_ROWS, import_roster};
use enroll_store::testing::{Engine, TestDb};
use enroll_store::{NewPractice, Source};
use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Parser)]
struct Args {
    /// Rows in the roster.
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// A PostgreSQL admin URL (postgres://USER@HOST:PORT/postgres): also
    /// import into a fresh database there.
    #[arg(long)]
    postgres: Option<String>,
}

const FIRST: [&str; 12] = [
    "Ada", "Bea", "Cyrus", "Dee", "Eli", "Fay", "Gus", "Hana", "Ivo", "June", "Kofi", "Lena",
];
const LAST: [&str; 12] = [
    "Okafor", "Nguyen", "Garcia", "Smith", "Cohen", "Patel", "Kim", "Novak", "Silva", "Haddad",
    "Moreau", "Jensen",
];

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.rows > 0, "--rows must be at least 1");
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("roster.csv");
    let bytes = write_roster(&file, args.rows)?;
    println!(
        "roster: {} rows, {:.1} MB, {} rows a batch",
        args.rows,
        bytes as f64 / 1e6,
        ROSTER_BATCH_ROWS
    );
    println!("| import | engine | seconds | rows/s | peak RSS MiB |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut engines = vec![(Engine::Sqlite, None)];
    if let Some(url) = &args.postgres {
        engines.push((Engine::Postgres, Some(url.as_str())));
    }
    for (engine, admin_url) in engines {
        runtime.block_on(async {
            let (store, _db) = fresh_store(engine, admin_url, dir.path()).await?;
            let practice = store
                .create_practice(
                    &NewPractice {
                        code: "BENCH".into(),
                        name: "Bench".into(),
                        schedule: Schedule::office_hours("America/Chicago"),
                    },
                    "bench",
                    Timestamp::now(),
                )
                .await?;
            for (label, expect_created) in
                [("first (all new)", true), ("second (all unchanged)", false)]
            {
                reset_peak_memory();
                let started = Instant::now();
                let opened = std::fs::File::open(&file)?;
                let source = Source::new("csv", Some("bench")).audited("patient.import");
                let summary = import_roster(
                    &store,
                    practice.id,
                    opened,
                    HeaderMap::default(),
                    &source,
                    Timestamp::now(),
                    |_| {},
                )
                .await?;
                let seconds = started.elapsed().as_secs_f64();
                let expected = if expect_created {
                    summary.counts.created
                } else {
                    summary.counts.unchanged
                };
                anyhow::ensure!(
                    expected == args.rows as u64 && summary.rejected == 0,
                    "unexpected summary {summary:?}"
                );
                let peak = peak_rss_mib().map_or("-".to_string(), |m| format!("{m:.1}"));
                row(
                    label,
                    &format!("{engine:?}").to_lowercase(),
                    args.rows,
                    seconds,
                    &peak,
                );
            }
            anyhow::Ok(())
        })?;
    }
    // Last: its parsed rows stay in this process's memory.
    let ceiling = sqlite_ceiling(&dir.path().join("ceiling.db"), args.rows)?;
    row(
        "ceiling: rusqlite batched INSERT",
        "sqlite",
        args.rows,
        ceiling,
        "n/a",
    );
    Ok(())
}

/// A fresh, migrated database: SQLite as `enroll import` opens it
/// (synchronous=full), PostgreSQL a new database on the given server.
async fn fresh_store(
    engine: Engine,
    admin_url: Option<&str>,
    dir: &Path,
) -> anyhow::Result<(enroll_store::Store, Option<TestDb>)> {
    match engine {
        Engine::Sqlite => {
            let url = format!("sqlite://{}", dir.join("enroll.db").display());
            let store =
                enroll_store::Store::connect_with(&url, enroll_store::Synchronous::Full).await?;
            store.migrate().await?;
            Ok((store, None))
        }
        Engine::Postgres => {
            let db = TestDb::create(engine, admin_url).await;
            Ok((db.store.clone(), Some(db)))
        }
    }
}

fn row(label: &str, engine: &str, rows: usize, seconds: f64, peak: &str) {
    println!(
        "| {label} | {engine} | {seconds:.2} | {:.0} | {peak} |",
        rows as f64 / seconds
    );
}

/// One synthetic patient's cells, in the roster's column order.
fn patient(rng: &mut StdRng, i: usize) -> [String; 8] {
    let first = FIRST[rng.random_range(0..FIRST.len())];
    let last = LAST[rng.random_range(0..LAST.len())];
    let phone = if i.is_multiple_of(3) {
        String::new()
    } else {
        format!("(617) 555-{:04}", i % 10_000)
    };
    [
        format!("MRN{i:07}"),
        first.to_string(),
        last.to_string(),
        format!(
            "{:02}/{:02}/{}",
            rng.random_range(1..=12),
            rng.random_range(1..=28),
            rng.random_range(1930..=2020)
        ),
        if i.is_multiple_of(2) { "F" } else { "M" }.to_string(),
        format!("{:05}", rng.random_range(1001..99_950)),
        format!(
            "{}.{}{i}@example.org",
            first.to_lowercase(),
            last.to_lowercase()
        ),
        phone,
    ]
}

/// Writes the roster file; its size in bytes.
fn write_roster(path: &Path, rows: usize) -> anyhow::Result<u64> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "MRN,First Name,Last Name,Date of Birth,Sex,ZIP,Email,Cell Phone"
    )?;
    let mut rng = StdRng::seed_from_u64(2026);
    for i in 0..rows {
        writeln!(out, "{}", patient(&mut rng, i).join(","))?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Seconds to insert `rows` parsed rows into a table of the patients'
/// columns without indexes, `ROSTER_BATCH_ROWS` a transaction.
fn sqlite_ceiling(path: &Path, rows: usize) -> anyhow::Result<f64> {
    let mut connection = rusqlite::Connection::open(path)?;
    connection.pragma_update(None, "journal_mode", "wal")?;
    connection.pragma_update(None, "synchronous", "full")?;
    connection.execute_batch(
        "CREATE TABLE patients (id INTEGER PRIMARY KEY, practice_id BIGINT, mrn TEXT, \
         first_name TEXT, last_name TEXT, date_of_birth TEXT, birth_sex TEXT, zip TEXT, \
         email TEXT, cell_phone TEXT, created_at BIGINT, updated_at BIGINT)",
    )?;
    let mut rng = StdRng::seed_from_u64(2026);
    let parsed: Vec<[String; 8]> = (0..rows).map(|i| patient(&mut rng, i)).collect();
    reset_peak_memory();
    let started = Instant::now();
    for chunk in parsed.chunks(ROSTER_BATCH_ROWS) {
        let tx = connection.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO patients (practice_id, mrn, first_name, last_name, date_of_birth, \
                 birth_sex, zip, email, cell_phone, created_at, updated_at) \
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, 0)",
            )?;
            for p in chunk {
                insert
                    .execute(rusqlite::params![
                        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
                    ])
                    .context("insert")?;
            }
        }
        tx.commit()?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Resets VmHWM to the current RSS (Linux; nothing elsewhere).
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
