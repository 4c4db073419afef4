//! `enroll demo` as a user runs it: the real binary, a SQLite file, HTTP.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The demo's URL and API token, read from what it prints.
async fn start_demo(data_dir: &std::path::Path) -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_enroll"))
        .args(["demo", "--port", "0", "--mllp-port", "0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start enroll demo");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (mut url, mut token) = (None, None);
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read the demo's output") {
            if let Some(rest) = line.split("running on ").nth(1) {
                url = Some(rest.trim().to_string());
            }
            if let Some(rest) = line.split("(user demo): ").nth(1) {
                token = Some(rest.trim().to_string());
            }
            if url.is_some() && token.is_some() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the demo starts within 2 minutes");
    (
        child,
        url.expect("the demo prints its URL"),
        token.expect("the demo prints a token"),
    )
}

#[tokio::test]
async fn the_demo_serves_1000_patients_and_enroll_now_names_the_missing_email() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, token) = start_demo(dir.path()).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let request = http.get(format!("{url}{path}")).bearer_auth(&token);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    assert_eq!(
        get("/api/patients/1000".into()).await.0,
        200,
        "1,000 patients"
    );
    assert_eq!(get("/api/patients/1001".into()).await.0, 404, "and no more");

    // Find a synthetic patient whose only problem is the missing email.
    let mut without_email = None;
    for id in 1..=1000 {
        let (_, view) = get(format!("/api/patients/{id}")).await;
        let problems = view["problems"].as_array().unwrap();
        let only_email_missing = problems.len() == 1
            && problems[0]["field"] == "email"
            && problems[0]["problem"]["reason"] == "missing";
        if only_email_missing && view["patient"]["activated_at"].is_null() {
            without_email = Some(id);
            break;
        }
    }
    let id = without_email.expect("the demo data has patients without an email");
    let response = http
        .post(format!("{url}/api/patients/{id}/enroll"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "missing_fields");
    assert_eq!(body["problems"][0]["field"], "email", "{body}");

    // Auto invites on, then the missing email is filled in: a trigger (R2).
    // Inside office hours it is sent at once, outside it waits (R5); the
    // demo runs on the real clock, so the test accepts either and checks
    // that the mailbox agrees with the decision.
    let put = |path: String, body: Value| {
        http.put(format!("{url}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let on = put(
        "/api/practices/1/auto-invites".into(),
        serde_json::json!({ "on": true }),
    )
    .await
    .unwrap();
    assert_eq!(on.status().as_u16(), 200);
    let (_, view) = get(format!("/api/patients/{id}")).await;
    let mut fields = view["patient"]["demographics"].clone();
    fields["email"] = Value::from("filled.in@example.org");
    let saved: Value = put(format!("/api/patients/{id}"), fields)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let decision = saved["triggers"][0]["decision"]["decision"]
        .as_str()
        .unwrap()
        .to_string();
    let mailbox_to = |address: &'static str| {
        let request = http.get(format!("{url}/mailbox.json"));
        async move {
            let messages: Value = request.send().await.unwrap().json().await.unwrap();
            messages
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["to"] == address)
                .cloned()
                .collect::<Vec<_>>()
        }
    };
    let mut delivered = Vec::new();
    // The dispatcher polls every 500 ms: 10 s is ample for a send, and 2 s
    // shows that a waiting invite did not go out.
    let polls = if decision == "send_now" { 50 } else { 10 };
    for _ in 0..polls {
        delivered = mailbox_to("filled.in@example.org").await;
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match decision.as_str() {
        "send_now" => {
            assert_eq!(
                delivered.len(),
                1,
                "inside office hours the invite reaches the mailbox"
            );
            let link = delivered[0]["links"][0].as_str().unwrap().to_string();
            let page = http.get(&link).send().await.unwrap();
            assert_eq!(
                page.status().as_u16(),
                200,
                "the activation link of {link} opens"
            );
        }
        "queue" => assert!(
            delivered.is_empty(),
            "outside office hours the invite waits"
        ),
        other => panic!("unexpected decision {other}: {saved}"),
    }
    let page = http.get(format!("{url}/mailbox")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("Demo mailbox"));

    child.kill().await.unwrap();

    // A second start reuses the data and prints a fresh token.
    let (mut child, url, token) = start_demo(dir.path()).await;
    let response = http
        .get(format!("{url}/api/patients/1000"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let again = http
        .get(format!("{url}/api/patients/1001"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status().as_u16(),
        404,
        "the restart did not load the patients twice"
    );
    child.kill().await.unwrap();
}

#[test]
fn doctor_explains_a_database_it_cannot_open() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_enroll"))
        .args([
            "--database-url",
            "sqlite:///nonexistent-folder/x/enroll.db",
            "doctor",
        ])
        .env("ENROLL_SMTP__PORT", "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("FAIL  cannot open the database"),
        "{stdout}"
    );
    assert!(stdout.contains("check that the folder"), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: 2 problem(s) found"),
        "the database and the SMTP server: {stderr}"
    );
}

#[test]
fn doctor_checks_the_database_and_explains_an_unreachable_smtp_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("enroll.db").display());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_enroll"))
        .args(["--database-url", &url, "doctor"])
        .env("ENROLL_SMTP__PORT", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains("ok    database: sqlite reachable"),
        "{stdout}"
    );
    assert!(
        stdout.contains("FAIL  smtp: localhost:1 (starttls)"),
        "{stdout}"
    );
    assert!(stdout.contains("check [smtp] host, port"), "{stdout}");
}

/// Doctor warns of an SMTP server reached without TLS over the network,
/// and the mailer refuses to send a password that way.
#[test]
fn doctor_warns_of_plain_smtp_to_another_machine_and_refuses_a_password_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("enroll.db").display());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_enroll"))
        .args(["--database-url", &url, "doctor"])
        // 192.0.2.1 is TEST-NET-1: never a real server.
        .env("ENROLL_SMTP__HOST", "192.0.2.1")
        .env("ENROLL_SMTP__SECURITY", "plain")
        .env("ENROLL_SMTP__USERNAME", "clinic")
        .env("ENROLL_SMTP__PASSWORD", "secret")
        .env("ENROLL_SMTP__TIMEOUT_SECS", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains("WARN  smtp: 192.0.2.1:587 (plain) is reached without TLS"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the password would cross the network in clear"),
        "{stdout}"
    );
    assert!(!stdout.contains("secret"), "{stdout}");
}

#[tokio::test]
async fn migrate_and_doctor_work_on_both_engines() {
    for engine in enroll_store::testing::ENGINES {
        let Some(db) = enroll_store::testing::TestDb::new(engine).await else {
            continue;
        };
        let run = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_enroll"))
                .args(["--database-url", &db.url])
                .args(args)
                .output()
                .unwrap()
        };
        let migrate = run(&["migrate"]);
        assert!(
            migrate.status.success(),
            "{engine:?}: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );
        let added = run(&[
            "practice",
            "add",
            "--code",
            "LAKE",
            "--name",
            "Lakeside",
            "--time-zone",
            "America/Chicago",
        ]);
        assert!(
            added.status.success(),
            "{engine:?}: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let bad_zone = run(&[
            "practice",
            "add",
            "--code",
            "MOON",
            "--name",
            "Moon",
            "--time-zone",
            "Moon/Base",
        ]);
        assert!(!bad_zone.status.success());
        assert!(
            String::from_utf8_lossy(&bad_zone.stderr).contains("unknown time zone \"Moon/Base\""),
            "{engine:?}"
        );
        let doctor = run(&["doctor"]);
        let stdout = String::from_utf8_lossy(&doctor.stdout);
        assert!(
            stdout.contains(&format!(
                "ok    database: {}",
                if engine == enroll_store::testing::Engine::Sqlite {
                    "sqlite"
                } else {
                    "postgres"
                }
            )),
            "{stdout}"
        );
        assert!(
            stdout.contains("practice LAKE: schedule in America/Chicago, auto invites off"),
            "{engine:?}: {stdout}"
        );
    }
}

#[tokio::test]
async fn the_demo_keeps_serving_when_nobody_reads_its_output() {
    // A closed standard output (`enroll demo | head -3`) used to stop the
    // demo: printing its banner panicked on the broken pipe.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_enroll"))
        .args(["demo", "--port", &port.to_string(), "--mllp-port", "0"])
        .args(["--patients", "20", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start enroll demo");
    drop(child.stdout.take());

    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let mut answered = false;
    for _ in 0..600 {
        if let Ok(response) = http.get(&url).send().await {
            answered = response.status().is_success();
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the demo exited before serving"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(answered, "the demo serves /healthz");
    // Past the banner, it is still running and serving.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the demo is still running"
    );
    assert!(http.get(&url).send().await.unwrap().status().is_success());
    child.kill().await.unwrap();
}

/// Doctor says who may send HL7: a port open to the network without an
/// allowlist is a warning, a sender rule that cannot work is a failure.
#[test]
fn doctor_warns_of_an_open_mllp_port_and_fails_an_unusable_sender_rule() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("enroll.db").display());
    let doctor = |config: &str| {
        let path = dir.path().join("enroll.toml");
        std::fs::write(&path, config).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_enroll"))
            .args(["--database-url", &url, "--config"])
            .arg(&path)
            .arg("doctor")
            .env("ENROLL_SMTP__PORT", "1")
            .env("ENROLL_SMTP__TIMEOUT_SECS", "1")
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let open = doctor("[mllp]\nlisten = \"0.0.0.0:2575\"\n");
    assert!(
        open.contains(
            "WARN  mllp: mllp.listen 0.0.0.0:2575 takes patient changes from any machine"
        ),
        "{open}"
    );
    assert!(open.contains("carries HL7 in clear"), "{open}");

    let listed = doctor(
        "[mllp]\nlisten = \"0.0.0.0:2575\"\n\n[[mllp.senders]]\nfacility = \"GENHOSP\"\n\
         allow = [\"10.20.0.0/16\"]\n",
    );
    assert!(!listed.contains("any machine"), "{listed}");
    assert!(
        listed
            .contains("ok    mllp: [[mllp.senders]] lists 1 sending facility; others are refused"),
        "{listed}"
    );

    let unusable = doctor(
        "[[mllp.senders]]\nfacility = \"GENHOSP\"\ncertificate_names = [\"ehr.genhosp.example\"]\n",
    );
    assert!(
        unusable.contains(
            "FAIL  mllp: mllp.senders \"GENHOSP\" names certificates: set mllp.tls_client_ca"
        ),
        "{unusable}"
    );
}
