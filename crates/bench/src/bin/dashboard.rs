//! The enrollment dashboard at 1,000,000 patients and 2,000,000 invites on
//! SQLite: each of the store's dashboard queries, and the page over HTTP
//! (`GET /dashboard`, the whole enterprise and one practice), p50 and p95.
//!
//!     cargo build --release -p enroll-bench --bin dashboard
//!     ./target/release/dashboard [--patients 1000000] [--practices 10] [--requests 30] [--database FILE]
//!
//! The rows are generated inside SQLite (recursive CTEs, 100,000 a
//! statement) into a fresh database with the store's own migrations: per
//! patient two invites (the first delivered over the last two years, the
//! second delivered 80%, failed 8%, held by the cap 4%, cancelled 8%), a
//! third of the patients active a few days after their first invite, 4%
//! without an email, some opted out, and a visit for 30% of them over the
//! last two years; the rollups' triggers (migration 0016) run for every
//! row. Then ANALYZE, the measure's rollup computed once, and the server
//! as `enroll serve` runs it.

use std::time::{Duration, Instant};

use clap::Parser;
use enroll_core::{Role, Schedule};

use enroll_store::{NewPractice, Store, hash_token};
use jiff::Timestamp;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    patients: i64,
    #[arg(long, default_value_t = 10)]
    practices: i64,
    /// Timed requests of each kind (after 3 of warm-up).
    #[arg(long, default_value_t = 30)]
    requests: usize,
    /// Keep the SQLite database in this file (a second run reuses it).
    #[arg(long)]
    database: Option<std::path::PathBuf>,
}

const BATCH: i64 = 100_000;
const DAY_MS: i64 = 86_400_000;

async fn exec(store: &Store, sql: &str) -> anyhow::Result<()> {
    enroll_store::testing::execute_with(store, sql, &[]).await?;
    Ok(())
}

/// Patients `from..to` (ids), their two invites and their visits.
async fn generate(store: &Store, args: &Args, now: i64) -> anyhow::Result<()> {
    let practices = args.practices;
    let mut from = 1;
    while from <= args.patients {
        let to = (from + BATCH - 1).min(args.patients);
        let series = format!(
            "WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {to})"
        );
        // First invite sent `first` ms ago: 10 to 730 days, at any minute
        // of the day (so the charts' 15-minute buckets are all in use).
        let first = format!(
            "(({now}) - (10 + (i * 7919) % 720) * {DAY_MS} - (((i / 720) * 331 + i * 7) % 1440) * 60000)"
        );
        exec(
            store,
            &format!(
                "INSERT INTO patients (id, practice_id, mrn, first_name, last_name, first_name_lc, \
                 last_name_lc, date_of_birth, birth_sex, zip, email, activated_at, email_opted_out, \
                 sms_opted_out, created_at, updated_at) {series} \
                 SELECT i, 1 + i % {practices}, 'M' || i, 'First' || (i % 977), 'Last' || (i % 4093), \
                 'first' || (i % 977), 'last' || (i % 4093), '1980-01-01', 'F', '02134', \
                 CASE WHEN i % 25 = 0 THEN NULL ELSE 'p' || i || '@example.org' END, \
                 CASE WHEN i % 3 = 0 THEN MIN({now}, {first} + (i % 9) * {DAY_MS} + (((i / 360) * 17 + i) % 1440) * 60000) END, \
                 i % 50 = 1, i % 40 = 2, {now} - 800 * {DAY_MS}, {now} FROM n"
            ),
        )
        .await?;
        exec(
            store,
            &format!(
                "INSERT INTO invites (patient_id, practice_id, kind, state, created_at, due_at, \
                 counted_at, sent_at, attempts) {series} \
                 SELECT i, 1 + i % {practices}, 'auto', 'sent', {first}, {first}, {first}, {first}, 1 FROM n"
            ),
        )
        .await?;
        let second = format!("({first} + (i % 5) * {DAY_MS})");
        exec(
            store,
            &format!(
                "INSERT INTO invites (patient_id, practice_id, kind, state, created_at, due_at, \
                 counted_at, sent_at, attempts, failure_reason) {series} \
                 SELECT i, 1 + i % {practices}, 'manual', \
                 CASE WHEN i % 25 < 20 THEN 'sent' WHEN i % 25 < 22 THEN 'failed' \
                      WHEN i % 25 = 22 THEN 'suppressed' ELSE 'cancelled' END, \
                 {second}, {second}, {second}, \
                 CASE WHEN i % 25 < 20 THEN {second} END, 1, \
                 CASE WHEN i % 25 IN (20, 21) THEN 'the mailbox does not exist' END FROM n"
            ),
        )
        .await?;
        let visit = format!("(({now}) - ((i * 104729) % 730) * {DAY_MS} - 3600000 * 5)");
        exec(
            store,
            &format!(
                "INSERT INTO encounters (practice_id, patient_id, visit_number, admitted_at, created_at) \
                 {series} SELECT 1 + i % {practices}, i, 'V' || i, \
                 strftime('%Y%m%d%H%M%S', {visit} / 1000, 'unixepoch'), {visit} FROM n WHERE i % 10 < 3"
            ),
        )
        .await?;
        eprintln!("dashboard bench: {to} patients");
        from = to + 1;
    }
    exec(store, "ANALYZE").await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn timed<F, Fut>(label: &str, runs: usize, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    for _ in 0..3 {
        f().await?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        f().await?;
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "{label:<48} p50 {:>8.1} ms   p95 {:>8.1} ms",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let path = args
        .database
        .clone()
        .unwrap_or_else(|| dir.path().join("dashboard.db"));
    let store = Store::connect(&format!("sqlite://{}", path.display())).await?;
    store.migrate().await?;
    let now = Timestamp::now();
    let mut practices = Vec::new();
    for n in 1..=args.practices {
        let code = format!("P{n}");
        let practice = match store.practice_by_code(&code).await? {
            Some(p) => p,
            None => {
                let mut schedule = Schedule::office_hours("America/New_York");
                schedule.closed_dates = vec![
                    jiff::civil::date(2026, 11, 26),
                    jiff::civil::date(2026, 12, 25),
                ];
                store
                    .create_practice(
                        &NewPractice {
                            code,
                            name: format!("Practice {n}"),
                            schedule,
                        },
                        "bench",
                        now,
                    )
                    .await?
            }
        };
        practices.push(practice);
    }
    if store.count_patients().await? == 0 {
        let started = Instant::now();
        generate(&store, &args, now.as_millisecond()).await?;
        eprintln!(
            "dashboard bench: {} patients, {} invites in {:.1} s",
            args.patients,
            2 * args.patients,
            started.elapsed().as_secs_f64()
        );
    }
    let user = store
        .put_staff_user(
            "bench-admin",
            "Bench",
            Role::Admin,
            &hash_token("bench"),
            now,
        )
        .await?;
    let cookie = enroll_server::random_secret(32);
    store
        .start_session(&user, &hash_token(&cookie), "bench-csrf", now)
        .await?;

    let one = practices
        .first()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no practice"))?;
    let tz = one.schedule.tz.clone();
    let today = one.schedule.local_date(now);
    let from = today.checked_sub(jiff::ToSpan::days(89))?;
    println!(
        "dashboard, SQLite, {} patients, {} invites, {} practices; CMS period {from} to {today}",
        args.patients,
        2 * args.patients,
        args.practices
    );
    let ids = [one.id];
    for (scope, practices_filter) in [("enterprise", None), ("one practice", Some(&ids[..]))] {
        timed(
            &format!("store: counts, {scope}"),
            args.requests,
            || async {
                store.dashboard_counts(practices_filter, now).await?;
                Ok(())
            },
        )
        .await?;
        timed(
            &format!("store: 90 days of both charts, {scope}"),
            args.requests,
            || async {
                store.dashboard_days(practices_filter, &tz, now).await?;
                Ok(())
            },
        )
        .await?;
    }
    let started = Instant::now();
    store.refresh_measure().await?;
    println!(
        "store: the measure's rollup computed whole, once       {:>8.1} s",
        started.elapsed().as_secs_f64()
    );
    let all: Vec<i64> = practices.iter().map(|p| p.id).collect();
    for (scope, ids) in [("enterprise", &all[..]), ("one practice", &ids[..])] {
        timed(
            &format!("store: CMS measure (rollup), {scope}, 90 days"),
            args.requests,
            || async {
                store.measure_counts(ids, from, today).await?;
                Ok(())
            },
        )
        .await?;
    }
    timed(
        "store: CMS measure recomputed (the CSV), one practice",
        args.requests,
        || async {
            store.cms_measure(&one, from, today).await?;
            Ok(())
        },
    )
    .await?;
    let measured = store.cms_measure(&one, from, today).await?;
    println!(
        "  (one practice: {} in the denominator, {} in the numerator)",
        measured
            .iter()
            .filter(|m| m.outcome.in_denominator())
            .count(),
        measured.iter().filter(|m| m.outcome.in_numerator()).count()
    );

    let running = enroll_bench::start_http_only(&store).await?;
    let http = reqwest::Client::new();
    let base = format!("http://{}", running.http_addr);
    for (label, path) in [
        (
            "HTTP: GET /dashboard (enterprise)",
            "/dashboard".to_string(),
        ),
        (
            "HTTP: GET /dashboard?practice=P1",
            format!("/dashboard?practice={}", one.code),
        ),
    ] {
        timed(label, args.requests, || {
            let request = http
                .get(format!("{base}{path}"))
                .header(reqwest::header::COOKIE, format!("enroll_session={cookie}"));
            async move {
                let response = request.send().await?;
                let status = response.status();
                let body = response.text().await?;
                anyhow::ensure!(status.is_success() && body.contains("cms-rate"), "{status}");
                Ok(())
            }
        })
        .await?;
    }
    changes_between_views(&store, &http, &base, &cookie, args.requests).await?;
    running.stop().await?;
    Ok(())
}

/// The enterprise page after 1,000 invites of patients with a visit were
/// delivered since the last view (and the next time taken back), so each
/// view folds change rows and computes 1,000 patients' measure again.
async fn changes_between_views(
    store: &Store,
    http: &reqwest::Client,
    base: &str,
    cookie: &str,
    runs: usize,
) -> anyhow::Result<()> {
    let mut times = Vec::with_capacity(runs);
    for run in 0..runs {
        let (from, to) = if run % 2 == 0 {
            ("cancelled", "sent")
        } else {
            ("sent", "cancelled")
        };
        exec(
            store,
            &format!(
                "UPDATE invites SET state = '{to}', sent_at = CASE WHEN '{to}' = 'sent' \
                 THEN created_at END WHERE id IN (SELECT i.id FROM invites i \
                 JOIN encounters e ON e.patient_id = i.patient_id \
                 WHERE i.kind = 'manual' AND i.state = '{from}' ORDER BY i.id LIMIT 1000)"
            ),
        )
        .await?;
        let started = Instant::now();
        let response = http
            .get(format!("{base}/dashboard"))
            .header(reqwest::header::COOKIE, format!("enroll_session={cookie}"))
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "{}", response.status());
        response.text().await?;
        times.push(started.elapsed());
    }
    times.sort();
    println!(
        "{:<48} p50 {:>8.1} ms   p95 {:>8.1} ms",
        "HTTP: enterprise, 1,000 deliveries since",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3
    );
    Ok(())
}
