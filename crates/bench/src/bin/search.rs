//! Patient search over HTTP at a million patients: the staff search box's
//! mix of queries (names typed three ways, a date of birth, an MRN, a phone
//! number, an email), end to end through `GET /api/patients?q=`.
//!
//!     cargo build --release -p enroll-bench
//!     ./target/release/search [--patients 1000000] [--queries 2000] [--postgres-url URL]
//!
//! The patients are inserted straight into a fresh database (the store's
//! own migrations), then the statistics are gathered (ANALYZE) and the
//! server is started through `Application::build` as `enroll serve` would
//! be. Queries go one after another from one client, as a front desk types
//! them; the timings include HTTP, the search, the audit line and JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use enroll_core::{Role, Schedule};
use enroll_server::{Application, Runtime, Settings, SystemClock};
use enroll_store::{NewPractice, Store, hash_token};
use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    patients: usize,
    /// Searches to time (after 100 of warm-up).
    #[arg(long, default_value_t = 2_000)]
    queries: usize,
    /// Run on this PostgreSQL server (an admin URL; a scratch database is
    /// made there) instead of a SQLite file.
    #[arg(long)]
    postgres_url: Option<String>,
}

const LAST: [&str; 40] = [
    "smith",
    "johnson",
    "williams",
    "brown",
    "jones",
    "garcia",
    "miller",
    "davis",
    "rodriguez",
    "martinez",
    "hernandez",
    "lopez",
    "gonzalez",
    "wilson",
    "anderson",
    "thomas",
    "taylor",
    "moore",
    "jackson",
    "martin",
    "lee",
    "perez",
    "thompson",
    "white",
    "harris",
    "sanchez",
    "clark",
    "ramirez",
    "lewis",
    "robinson",
    "walker",
    "young",
    "allen",
    "king",
    "wright",
    "scott",
    "torres",
    "nguyen",
    "hill",
    "flores",
];
const FIRST: [&str; 30] = [
    "james",
    "mary",
    "john",
    "patricia",
    "robert",
    "jennifer",
    "michael",
    "linda",
    "william",
    "elizabeth",
    "david",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "charles",
    "karen",
    "maria",
    "jose",
    "ana",
    "luis",
    "rosa",
    "juan",
    "sofia",
    "carlos",
    "lucia",
    "miguel",
];

/// One synthetic patient; the name gets a number so a million are spread
/// over many distinct last names, as a real panel is.
struct Synthetic {
    mrn: String,
    first: String,
    last: String,
    dob: String,
    email: String,
    phone: String,
}

fn synthetic(n: usize, rng: &mut StdRng) -> Synthetic {
    let first = FIRST[rng.random_range(0..FIRST.len())].to_string();
    let stem = LAST[rng.random_range(0..LAST.len())];
    // 40 stems x 1,000 suffixes: about 25 patients per distinct last name
    // at a million, like a large practice's panel.
    let last = format!("{stem}{}", suffix(rng.random_range(0..1000)));
    let dob = format!(
        "{}-{:02}-{:02}",
        rng.random_range(1930..2024),
        rng.random_range(1..13),
        rng.random_range(1..29)
    );
    Synthetic {
        mrn: format!("M{n:07}"),
        email: format!("{first}.{last}.{n}@example.org"),
        phone: format!("+1617{:07}", rng.random_range(2_000_000..10_000_000)),
        first,
        last,
        dob,
    }
}

/// "", "a", "b", ..., "aa", ...: letters only, so names stay names.
fn suffix(mut i: usize) -> String {
    let mut s = String::new();
    while i > 0 {
        s.push(char::from(b'a' + u8::try_from(i % 26).unwrap_or(0)));
        i /= 26;
    }
    s
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

async fn insert_patients(store: &Store, practice_id: i64, count: usize) -> anyhow::Result<()> {
    const ROWS: usize = 500;
    let mut rng = StdRng::seed_from_u64(2026);
    let now = Timestamp::now().as_millisecond();
    let mut done = 0;
    while done < count {
        let batch: Vec<Synthetic> = (done..(done + ROWS).min(count))
            .map(|n| synthetic(n, &mut rng))
            .collect();
        let mut sql = String::from(
            "INSERT INTO patients (practice_id, mrn, first_name, last_name, first_name_lc, \
             last_name_lc, date_of_birth, birth_sex, zip, email, cell_phone, created_at, updated_at) VALUES ",
        );
        for (i, _) in batch.iter().enumerate() {
            let b = i * 8;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "({practice_id}, ${}, ${}, ${}, ${}, ${}, ${}, 'F', '02134', ${}, ${}, {now}, {now})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8
            ));
        }
        let mut values: Vec<String> = Vec::with_capacity(batch.len() * 8);
        for p in &batch {
            values.extend([
                p.mrn.clone(),
                capitalized(&p.first),
                capitalized(&p.last),
                p.first.clone(),
                p.last.clone(),
                p.dob.clone(),
                p.email.clone(),
                p.phone.clone(),
            ]);
        }
        enroll_store::testing::execute_with(store, &sql, &values).await?;
        done += batch.len();
        if done % 100_000 == 0 {
            eprintln!("search bench: {done} patients");
        }
    }
    enroll_store::testing::execute_with(store, "ANALYZE", &[]).await?;
    Ok(())
}

/// What the box gets, like a front desk types it, for patient `n`.
fn query_for(kind: usize, p: &Synthetic) -> String {
    let last3: String = p.last.chars().take(3).collect();
    let first2: String = p.first.chars().take(2).collect();
    let (y, rest) = p.dob.split_at(4);
    match kind {
        0 => format!("{last3} {first2}"),
        1 => format!("{}, {}", capitalized(&p.last), capitalized(&p.first)),
        2 => format!("{} {}", p.first, p.last),
        3 => format!("{}/{}/{y}", &rest[1..3], &rest[4..6]),
        4 => p.mrn.clone(),
        5 => format!("({}) {}-{}", &p.phone[2..5], &p.phone[5..8], &p.phone[8..]),
        _ => p.email.clone(),
    }
}

const KINDS: [&str; 7] = [
    "smi jo",
    "Last, First",
    "first last",
    "MM/DD/YYYY",
    "MRN",
    "(617) phone",
    "email",
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let (store, engine) = match &args.postgres_url {
        Some(url) => {
            let db = enroll_store::testing::TestDb::create(
                enroll_store::testing::Engine::Postgres,
                Some(url),
            )
            .await;
            (db.store.clone(), "PostgreSQL")
        }
        None => {
            let url = format!("sqlite://{}", dir.path().join("search.db").display());
            let store = Store::connect(&url).await?;
            store.migrate().await?;
            (store, "SQLite")
        }
    };
    let now = Timestamp::now();
    let practice = store
        .create_practice(
            &NewPractice {
                code: "BENCH".into(),
                name: "Bench Practice".into(),
                schedule: Schedule::office_hours("America/New_York"),
            },
            now,
        )
        .await?;
    let started = Instant::now();
    insert_patients(&store, practice.id, args.patients).await?;
    eprintln!(
        "search bench: {} patients on {engine} in {:.1} s",
        args.patients,
        started.elapsed().as_secs_f64()
    );
    let token = "bench-token";
    let user = store
        .put_staff_user("bench", "Bench", Role::FrontDesk, &hash_token(token), now)
        .await?;
    store.set_staff_practices(user.id, &[practice.id]).await?;

    let settings = Settings {
        listen: "127.0.0.1:0".parse()?,
        ..Settings::default()
    };
    let mut settings = settings;
    settings.delivery.enabled = false;
    settings.mllp.enabled = false;
    let runtime = Runtime {
        clock: Arc::new(SystemClock),
        store: Some(store.clone()),
        mailbox: None,
    };
    let running = Application::build(settings, runtime).await?.start().await?;
    let base = format!("http://{}/api/patients", running.http_addr);
    let http = reqwest::Client::new();

    // Patients to look for: regenerate the same sequence and sample it.
    let mut rng = StdRng::seed_from_u64(2026);
    let sample_every = (args.patients / 5_000).max(1);
    let samples: Vec<Synthetic> = (0..args.patients)
        .map(|n| synthetic(n, &mut rng))
        .step_by(sample_every)
        .collect();
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); KINDS.len()];
    let mut found_total = 0usize;
    for i in 0..(args.queries + 100) {
        let kind = i % KINDS.len();
        let patient = &samples[(i * 7919) % samples.len()];
        let q = query_for(kind, patient);
        let t = Instant::now();
        let encoded: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
        let response = http
            .get(format!("{base}?q={encoded}"))
            .bearer_auth(token)
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        let elapsed = t.elapsed();
        anyhow::ensure!(status.is_success(), "{q:?}: {status} {body}");
        let found = body.as_array().map(Vec::len).unwrap_or(0);
        anyhow::ensure!(found > 0, "{q:?} found no one");
        if i >= 100 {
            times[kind].push(elapsed);
            found_total += found;
        }
    }
    running.stop().await?;

    println!(
        "patient search over HTTP, {engine}, {} patients, {} queries ({:.1} results each on average)",
        args.patients,
        args.queries,
        found_total as f64 / args.queries.max(1) as f64
    );
    println!(
        "{:<14} {:>8} {:>8} {:>8}",
        "query", "p50 ms", "p95 ms", "max ms"
    );
    let mut all: Vec<Duration> = Vec::new();
    for (kind, t) in times.iter_mut().enumerate() {
        t.sort();
        all.extend(t.iter().copied());
        println!(
            "{:<14} {:>8.2} {:>8.2} {:>8.2}",
            KINDS[kind],
            percentile(t, 0.5).as_secs_f64() * 1e3,
            percentile(t, 0.95).as_secs_f64() * 1e3,
            t.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );
    }
    all.sort();
    println!(
        "{:<14} {:>8.2} {:>8.2} {:>8.2}",
        "all",
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.95).as_secs_f64() * 1e3,
        all.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}
