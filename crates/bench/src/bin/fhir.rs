//! FHIR Patient creates over HTTP on SQLite from concurrent clients:
//! `POST /fhir/Patient` with the US Core Patient example (a new MRN each
//! time), end to end through the server as `enroll serve` runs it.
//!
//!     cargo build --release -p enroll-bench
//!     ./target/release/fhir [--patients 5000] [--clients 8]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::Parser;
use enroll_core::{Role, Schedule};

use enroll_store::{NewPractice, Store, hash_token};
use jiff::Timestamp;
use serde_json::Value;

const EXAMPLE: &str =
    include_str!("../../../server/tests/fixtures/fhir/us-core-Patient-example.json");

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value_t = 5_000)]
    patients: usize,
    #[arg(long, default_value_t = 8)]
    clients: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("fhir.db");
    let store = Store::connect(&format!("sqlite://{}", path.display())).await?;
    store.migrate().await?;
    let now = Timestamp::now();
    store
        .create_practice(
            &NewPractice {
                code: "BENCH".into(),
                name: "Bench".into(),
                schedule: Schedule::office_hours("America/New_York"),
            },
            "bench",
            now,
        )
        .await?;
    store
        .put_staff_user("bench", "Bench", Role::Admin, &hash_token("bench"), now)
        .await?;
    let running = enroll_bench::start_http_only(&store).await?;
    let url = format!("http://{}/fhir/Patient", running.http_addr);
    let example: Value = serde_json::from_str(EXAMPLE)?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..args.clients {
        let (url, example, next) = (url.clone(), example.clone(), next.clone());
        let total = args.patients;
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return anyhow::Ok(());
                }
                let mut patient = example.clone();
                patient["identifier"][0]["value"] = Value::String(format!("B-{n}"));
                let response = http
                    .post(&url)
                    .bearer_auth("bench")
                    .header("content-type", "application/fhir+json")
                    .body(serde_json::to_vec(&patient)?)
                    .send()
                    .await?;
                anyhow::ensure!(
                    response.status() == reqwest::StatusCode::CREATED,
                    "create {n}: {}",
                    response.status()
                );
            }
        }));
    }
    for client in clients {
        client.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "FHIR Patient creates, SQLite, {} clients: {} in {:.2} s = {:.0} per second",
        args.clients,
        args.patients,
        elapsed,
        args.patients as f64 / elapsed
    );
    running.stop().await?;
    Ok(())
}
