//! Patient search over HTTP at a million patients: the staff search box's
//! mix of queries (names typed three ways, a date of birth, an MRN, a phone
//! number, an email), end to end through `GET /api/patients?q=`.
//!
//!     cargo build --release -p enroll-bench
//!     ./target/release/search [--patients 1000000] [--queries 2000] [--postgres-url URL | --database FILE]
//!
//! The patients are inserted straight into a fresh database (the store's
//! own migrations), then the statistics are gathered (ANALYZE) and the
//! server is started through `Application::build` as `enroll serve` would
//! be. Queries go one after another from one client, as a front desk types
//! them; the timings include HTTP, the search, the audit line and JSON.

use std::time::{Duration, Instant};

use clap::Parser;
use enroll_core::{Role, Schedule};

use enroll_store::{NewPractice, StaffUser, Store, hash_token};
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
    /// Keep the SQLite database in this file: the first run fills it, later
    /// runs (after a change to the search) reuse it and only apply new
    /// migrations.
    #[arg(long)]
    database: Option<std::path::PathBuf>,
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
    // Statistics, as a running system has them; on PostgreSQL also the
    // visibility map that autovacuum would soon write after a bulk load,
    // without which no read can answer from an index alone.
    let gather = match store.engine() {
        "postgres" => "VACUUM ANALYZE",
        _ => "ANALYZE",
    };
    enroll_store::testing::execute_with(store, gather, &[]).await?;
    Ok(())
}

/// What the box gets, like a front desk types it, for patient `n`.
fn query_for(kind: usize, p: &Synthetic) -> String {
    let last3: String = p.last.chars().take(3).collect();
    let first2: String = p.first.chars().take(2).collect();
    let (y, rest) = p.dob.split_at(4);
    match kind {
        0 => format!("{last3} {first2}"),
        7 => p.last.clone(),
        8 => format!("{} {}/{}/{y}", p.first, &rest[1..3], &rest[4..6]),
        1 => format!("{}, {}", capitalized(&p.last), capitalized(&p.first)),
        2 => format!("{} {}", p.first, p.last),
        3 => format!("{}/{}/{y}", &rest[1..3], &rest[4..6]),
        4 => p.mrn.clone(),
        5 => format!("({}) {}-{}", &p.phone[2..5], &p.phone[5..8], &p.phone[8..]),
        _ => p.email.clone(),
    }
}

const KINDS: [&str; 9] = [
    "smi jo",
    "Last, First",
    "first last",
    "MM/DD/YYYY",
    "MRN",
    "(617) phone",
    "email",
    "last name",
    "first + DOB",
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Which face of the search is timed: the JSON API a front-end or script
/// calls, or the staff search page a front desk sees (HTML with a status
/// badge per row).
#[derive(Clone, Copy)]
enum Face {
    Api,
    Page,
}

impl Face {
    fn name(self) -> &'static str {
        match self {
            Face::Api => "GET /api/patients?q=",
            Face::Page => "GET /search?q= (HTML page)",
        }
    }
}

/// A SQLite database to search, and whether it already holds the patients.
async fn open_sqlite(path: &std::path::Path, patients: usize) -> anyhow::Result<(Store, bool)> {
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect(&url).await?;
    store.migrate().await?;
    let have = usize::try_from(store.count_patients().await?).unwrap_or(0);
    anyhow::ensure!(
        have == 0 || have == patients,
        "{} holds {have} patients, not {patients}: remove it or pass --patients {have}",
        path.display()
    );
    Ok((store, have == patients))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let (store, engine, filled) = match (&args.postgres_url, &args.database) {
        (Some(url), _) => {
            let db = enroll_store::testing::TestDb::create(
                enroll_store::testing::Engine::Postgres,
                Some(url),
            )
            .await;
            (db.store.clone(), "PostgreSQL", false)
        }
        (None, Some(path)) => {
            let (store, filled) = open_sqlite(path, args.patients).await?;
            (store, "SQLite", filled)
        }
        (None, None) => {
            let (store, filled) = open_sqlite(&dir.path().join("search.db"), args.patients).await?;
            (store, "SQLite", filled)
        }
    };
    let now = Timestamp::now();
    let practice = match store.practice_by_code("BENCH").await? {
        Some(practice) => practice,
        None => {
            store
                .create_practice(
                    &NewPractice {
                        code: "BENCH".into(),
                        name: "Bench Practice".into(),
                        schedule: Schedule::office_hours("America/New_York"),
                    },
                    "bench",
                    now,
                )
                .await?
        }
    };
    if filled {
        eprintln!(
            "search bench: {} patients already in the database",
            args.patients
        );
    } else {
        let started = Instant::now();
        insert_patients(&store, practice.id, args.patients).await?;
        eprintln!(
            "search bench: {} patients on {engine} in {:.1} s",
            args.patients,
            started.elapsed().as_secs_f64()
        );
    }
    let token = "bench-token";
    let user = match store.staff_by_token(token).await? {
        Some(user) => user,
        None => {
            store
                .put_staff_user("bench", "Bench", Role::FrontDesk, &hash_token(token), now)
                .await?
        }
    };
    let practices = enroll_store::StaffChange::Practices(&[practice.id]);
    store.change_staff(user.id, practices, "bench", now).await?;

    let running = enroll_bench::start_http_only(&store).await?;
    let client = Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", running.http_addr),
        token,
        cookie: signed_in_browser(&store, &user).await?,
    };

    // Patients to look for: regenerate the same sequence and sample it.
    let mut rng = StdRng::seed_from_u64(2026);
    let sample_every = (args.patients / 5_000).max(1);
    let samples: Vec<Synthetic> = (0..args.patients)
        .map(|n| synthetic(n, &mut rng))
        .step_by(sample_every)
        .collect();
    // The page first: its session was started just now.
    for face in [Face::Page, Face::Api] {
        let (times, found_total) = time_queries(&client, face, &samples, args.queries).await?;
        println!(
            "patient search over HTTP, {engine}, {} patients, {}, {} queries ({:.1} results each on average)",
            args.patients,
            face.name(),
            args.queries,
            found_total as f64 / args.queries.max(1) as f64
        );
        print_table(times);
    }
    running.stop().await?;
    Ok(())
}

/// The cookie of a signed-in browser for the page: a session as the
/// sign-in page makes, started now (the insert takes longer than the idle
/// sign-out) and kept alive by the searches.
async fn signed_in_browser(store: &Store, user: &StaffUser) -> anyhow::Result<String> {
    let cookie = enroll_server::random_secret(32);
    store
        .start_session(user, &hash_token(&cookie), "bench-csrf", Timestamp::now())
        .await?;
    Ok(format!("enroll_session={cookie}"))
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: &'static str,
    cookie: String,
}

impl Client {
    /// One search, end to end; the number of patients it found.
    async fn search(&self, face: Face, q: &str) -> anyhow::Result<usize> {
        let encoded: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
        match face {
            Face::Api => {
                let response = self
                    .http
                    .get(format!("{}/api/patients?q={encoded}", self.base))
                    .bearer_auth(self.token)
                    .send()
                    .await?;
                let status = response.status();
                let body: serde_json::Value = response.json().await?;
                anyhow::ensure!(status.is_success(), "{q:?}: {status} {body}");
                Ok(body.as_array().map(Vec::len).unwrap_or(0))
            }
            Face::Page => {
                let response = self
                    .http
                    .get(format!("{}/search?q={encoded}", self.base))
                    .header(reqwest::header::COOKIE, &self.cookie)
                    .send()
                    .await?;
                let status = response.status();
                let body = response.text().await?;
                anyhow::ensure!(status.is_success(), "{q:?}: {status}");
                // Each result row of the table carries its chart link.
                Ok(body.matches("data-patient=").count())
            }
        }
    }
}

/// Times `queries` searches of the mix (after 100 of warm-up), one after
/// another as a front desk types them; the times per kind and how many
/// patients they found in all.
async fn time_queries(
    client: &Client,
    face: Face,
    samples: &[Synthetic],
    queries: usize,
) -> anyhow::Result<(Vec<Vec<Duration>>, usize)> {
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); KINDS.len()];
    let mut found_total = 0usize;
    let mut slowest: Vec<(Duration, String)> = Vec::new();
    for i in 0..(queries + 100) {
        let kind = i % KINDS.len();
        let patient = &samples[(i * 7919) % samples.len()];
        let q = query_for(kind, patient);
        let t = Instant::now();
        let found = client.search(face, &q).await?;
        let elapsed = t.elapsed();
        anyhow::ensure!(found > 0, "{q:?} found no one");
        if i >= 100 {
            times[kind].push(elapsed);
            found_total += found;
            slowest.push((elapsed, q));
        }
    }
    slowest.sort();
    let names: Vec<String> = slowest
        .iter()
        .rev()
        .take(5)
        .map(|(t, q)| format!("{q:?} {:.1} ms", t.as_secs_f64() * 1e3))
        .collect();
    println!("slowest: {}", names.join(", "));
    Ok((times, found_total))
}

fn print_table(mut times: Vec<Vec<Duration>>) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("| query | p50 ms | p95 ms | max ms |");
    println!("| --- | ---: | ---: | ---: |");
    let mut all: Vec<Duration> = Vec::new();
    for (kind, t) in times.iter_mut().enumerate() {
        t.sort();
        all.extend(t.iter().copied());
        println!(
            "| {} | {:.2} | {:.2} | {:.2} |",
            KINDS[kind],
            ms(percentile(t, 0.5)),
            ms(percentile(t, 0.95)),
            ms(t.last().copied().unwrap_or_default())
        );
    }
    all.sort();
    println!(
        "| all | {:.2} | {:.2} | {:.2} |",
        ms(percentile(&all, 0.5)),
        ms(percentile(&all, 0.95)),
        ms(all.last().copied().unwrap_or_default())
    );
}
