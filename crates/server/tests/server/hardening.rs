//! HTTP as a hospital's security review wants it (issue 13 item 3): the
//! security headers and a policy the pages keep, request logs without
//! URLs, timeouts and limits proven with raw TCP clients, TLS, and the
//! patient-facing listener.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use enroll_store::testing::Engine;
use reqwest::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ui::Staff;
use crate::{SMS_WEBHOOK_SECRET, TOKEN, TestApp};

/// Writes `request` while reading (a server may answer and close before
/// it has read everything) until the server closes or `limit` passes; the
/// answer's text and whether the server closed.
async fn exchange<S: AsyncRead + AsyncWrite>(
    stream: S,
    request: &[u8],
    limit: Duration,
) -> (String, bool) {
    let (mut reading, mut writing) = tokio::io::split(stream);
    let write = async move {
        // An answer before the whole request is fine: the server may close early.
        let _ = writing.write_all(request).await;
        writing
    };
    let read = async move {
        let mut answer = Vec::new();
        let deadline = Instant::now() + limit;
        let closed = loop {
            let mut chunk = [0u8; 8192];
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, reading.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => answer.extend_from_slice(&chunk[..n]),
                Err(_) => break false,
            }
        };
        (String::from_utf8_lossy(&answer).into_owned(), closed)
    };
    let (_writing, answer) = tokio::join!(write, read);
    answer
}

async fn post_raw(addr: &str, path: &str, content_type: &str, body: &str) -> String {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(tcp, request.as_bytes(), Duration::from_secs(5))
        .await
        .0
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: invites.test\r\nConnection: close\r\n\r\n").into_bytes()
}

/// A header of an HTTP/1.1 answer's head, by name in any case.
fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

async fn start(adjust: impl FnOnce(&mut enroll_server::Settings)) -> TestApp {
    TestApp::start_with(Engine::Sqlite, adjust)
        .await
        .expect("SQLite is always there")
}

#[tokio::test]
async fn every_answer_carries_the_security_headers_and_only_files_may_be_kept() {
    let app = start(|_| {}).await;
    let policy = enroll_server::http::CONTENT_SECURITY_POLICY;
    assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"));
    assert!(policy.contains("frame-ancestors 'none'"));
    let pages = [
        ("/signin", 200),
        ("/code", 200),
        ("/portal/sign-in", 200),
        ("/a/AAAAAAAAAAAAAAAAAAAAAA", 404),
        ("/healthz", 200),
        ("/api/patients?q=Parks", 401),
        ("/no/such/page", 404),
    ];
    for (path, expected) in pages {
        let response = app.fetch(path).await;
        assert_eq!(response.status().as_u16(), expected, "{path}");
        let h = response.headers();
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert_eq!(h["content-security-policy"], policy, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert!(
            h.get("strict-transport-security").is_none(),
            "HSTS only over TLS: {path}"
        );
    }
    // An API answer with PHI, signed in.
    let response = app
        .http
        .get(app.url("/api/patients?q=Parks"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    // Our own files (no patient data) may be kept a while.
    for file in [
        "/static/staff.css",
        "/static/staff.js",
        "/static/patient.css",
        "/static/base.css",
        "/static/letter.css",
        "/static/mailbox.js",
    ] {
        let response = app.fetch(file).await;
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        assert_eq!(
            response.headers()["cache-control"],
            "public, max-age=300",
            "{file}"
        );
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
    app.stop().await;
}

/// The policy allows no inline script, style or event handler: no
/// template may have one (the browser tests run the pages under it).
#[test]
fn no_template_has_inline_script_style_or_handlers() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let handler = |html: &str| {
        html.split(|c: char| c.is_whitespace())
            .any(|word| word.starts_with("on") && word[2..].contains("=\""))
    };
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let html = std::fs::read_to_string(&path).unwrap();
        let name = path.display();
        assert!(!html.contains("<style"), "{name}: a <style> element");
        assert!(!html.contains(" style="), "{name}: a style attribute");
        assert!(!html.contains("javascript:"), "{name}: a javascript: URL");
        assert!(!handler(&html), "{name}: an inline event handler");
        for script in html.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap_or_default();
            assert!(tag.contains(" src="), "{name}: an inline script");
        }
    }
}

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `ENROLL_LOG=debug` (here: everything, at trace) while staff search by
/// name, date of birth and MRN, a patient opens an activation link and the
/// SMS provider posts to the webhook: the log names the route templates and
/// none of the searched words, the token, the secret or the phone number.
#[tokio::test]
async fn request_logs_name_the_route_template_and_never_the_url() {
    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // This test's runtime has one thread: every task of the app runs here.
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = start(|_| {}).await;
    let id = app
        .patient(
            "MRN-77231",
            serde_json::json!({"last_name": "Quistgaard", "date_of_birth": "1961-03-17", "cell_phone": "+12125550147"}),
        )
        .await;
    let (status, _) = app
        .get("/api/patients?q=Quistgaard%201961-03-17&limit=5")
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.get("/api/patients?q=MRN-77231").await;
    assert_eq!(status, StatusCode::OK);
    let staff = Staff::sign_in(&app, "frida").await;
    let (status, page) = staff.get("/search?q=quistgaard+03%2F17%2F1961").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let _ = id;
    let token = "Zq9TokenXyWv3Lm0pQrS1k";
    let response = app.fetch(&format!("/a/{token}")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = app
        .http
        .post(app.url(&format!("/webhooks/sms/{SMS_WEBHOOK_SECRET}")))
        .form(&[("From", "+12125550147"), ("Body", "STOP")])
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    app.stop().await;

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    for route in [
        "/api/patients",
        "/search",
        "/a/{token}",
        "/webhooks/sms/{secret}",
    ] {
        assert!(
            text.contains(&format!("route={route}")),
            "no request line for {route}:\n{text}"
        );
    }
    for secret in [
        "Quistgaard",
        "quistgaard",
        "1961-03-17",
        "03%2F17%2F1961",
        "03/17/1961",
        "MRN-77231",
        token,
        SMS_WEBHOOK_SECRET,
        "2125550147",
        "?q=",
    ] {
        assert!(!text.contains(secret), "{secret:?} in the log:\n{text}");
    }
}

#[tokio::test]
async fn a_slow_loris_is_cut_off_and_connections_beyond_the_limit_wait() {
    let app = start(|settings| {
        settings.http.header_read_timeout = Duration::from_millis(600);
        settings.http.max_connections = 2;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();

    // A head trickled a byte at a time is cut off after the timeout
    // however busy the client looks.
    let started = Instant::now();
    let mut loris = TcpStream::connect(&addr).await.unwrap();
    loris
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let cut_off = loop {
        if loris.write_all(b"X-Slow: y\r\n").await.is_err() {
            break true;
        }
        let mut byte = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(100), loris.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => {} // hyper may answer 408 before closing
            Err(_) => {}
        }
        if started.elapsed() > Duration::from_secs(5) {
            break false;
        }
    };
    assert!(cut_off, "the slow client was never cut off");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // Two connections that say nothing take both places: a third waits
    // for a place, and gets its answer once the silent ones are cut off.
    let _silent: Vec<TcpStream> = vec![
        TcpStream::connect(&addr).await.unwrap(),
        TcpStream::connect(&addr).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let third = TcpStream::connect(&addr).await.unwrap();
    let (answer, _) = exchange(third, &get("/healthz"), Duration::from_secs(5)).await;
    assert_eq!(status(&answer), 200, "{answer}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(400),
        "answered after {waited:?}, while two silent connections held the places"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_and_bodies_over_their_routes_limit_get_413() {
    let app = start(|settings| {
        settings.http.request_timeout = Duration::from_millis(700);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_string();

    // Content-Length promises 100 bytes; 10 come, then nothing.
    let stalled = TcpStream::connect(&addr).await.unwrap();
    let request = b"POST /a/AAAAAAAAAAAAAAAAAAAAAA/identity HTTP/1.1\r\nHost: x\r\n\
        Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nflow=abcde";
    let (answer, _) = exchange(stalled, request, Duration::from_secs(3)).await;
    assert_eq!(status(&answer), 408, "{answer}");

    // Per route: a patient form and the SMS webhook take 32 KiB, a staff
    // form 64 KiB, the JSON API 1 MiB.
    let form_type = "application/x-www-form-urlencoded";
    let form = |bytes: usize| format!("flow={}", "a".repeat(bytes));
    let over_patient = form(40 * 1024);
    for path in [
        "/a/AAAAAAAAAAAAAAAAAAAAAA/identity",
        "/code",
        &format!("/webhooks/sms/{SMS_WEBHOOK_SECRET}"),
    ] {
        let answer = post_raw(&addr, path, form_type, &over_patient).await;
        assert_eq!(status(&answer), 413, "{path}: {answer}");
    }
    // The same size is fine for a staff form (refused for its CSRF, not its size) ...
    let answer = post_raw(&addr, "/signin", form_type, &over_patient).await;
    assert_ne!(status(&answer), 413, "{answer}");
    assert_ne!(status(&answer), 0, "{answer}");
    // ... but not twice the staff limit, ...
    let answer = post_raw(&addr, "/signin", form_type, &form(130 * 1024)).await;
    assert_eq!(status(&answer), 413, "{answer}");
    // ... nor chunked, with no length said up front: cut off while read.
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let mut request = b"POST /signin HTTP/1.1\r\nHost: x\r\n\
        Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\
        Connection: close\r\n\r\n"
        .to_vec();
    for _ in 0..40 {
        request.extend_from_slice(format!("1000\r\n{}\r\n", "a".repeat(4096)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (answer, _) = exchange(tcp, &request, Duration::from_secs(5)).await;
    assert_eq!(status(&answer), 413, "{answer}");
    // A JSON body of 200 KiB reaches the API's handler; 1.1 MiB does not.
    let json = |bytes: usize| {
        serde_json::json!({"practice_id": app.practice_id, "mrn": "BIG", "first_name": "x".repeat(bytes)})
            .to_string()
    };
    let response = app
        .http
        .post(app.url("/api/patients"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(json(200 * 1024))
        .send()
        .await
        .unwrap();
    assert_ne!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let answer = post_raw(
        &addr,
        "/api/patients",
        "application/json",
        &json(1100 * 1024),
    )
    .await;
    assert_eq!(status(&answer), 413, "{answer}");
    app.stop().await;
}

async fn tls_connect(
    addr: std::net::SocketAddr,
    cert: &std::path::Path,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(cert).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

#[tokio::test]
async fn with_a_certificate_both_listeners_speak_https_only_and_send_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = crate::pki::or_skip(crate::pki::self_signed(dir.path())) else {
        return;
    };
    let app = start(|settings| {
        settings.public_url = None;
        settings.http.tls_cert = Some(cert.clone());
        settings.http.tls_key = Some(key.clone());
        settings.http.patient_listen = Some("127.0.0.1:0".parse().unwrap());
        settings.http.header_read_timeout = Duration::from_millis(800);
    })
    .await;
    let main: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let patient = app.patient_addr.expect("the patient listener");
    for (addr, path) in [(main, "/signin"), (patient, "/code")] {
        let tls = tls_connect(addr, &cert).await;
        let (answer, _) = exchange(tls, &get(path), Duration::from_secs(5)).await;
        assert_eq!(status(&answer), 200, "{path}: {answer}");
        assert_eq!(
            header(&answer, "strict-transport-security"),
            Some("max-age=31536000"),
            "{answer}"
        );
        assert_eq!(header(&answer, "cache-control"), Some("no-store"));

        // Plain HTTP to a TLS listener gets no page.
        let plain = TcpStream::connect(addr).await.unwrap();
        let (answer, closed) = exchange(plain, &get(path), Duration::from_secs(3)).await;
        assert!(closed && !answer.contains("HTTP/1.1 200"), "{answer}");
    }
    // Links in invites point at the patient listener, over https.
    let link = app.links().activation_url("TOKEN");
    assert_eq!(link, format!("https://{patient}/a/TOKEN"));
    // A client that never finishes the handshake is cut off.
    let silent = TcpStream::connect(main).await.unwrap();
    let started = Instant::now();
    let (_, closed) = exchange(silent, b"", Duration::from_secs(4)).await;
    assert!(closed && started.elapsed() < Duration::from_secs(3));
    app.stop().await;
}

#[tokio::test]
async fn the_patient_listener_serves_patient_pages_only() {
    let app = start(|settings| {
        settings.http.patient_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let patient = format!("http://{}", app.patient_addr.expect("the patient listener"));
    let status_of = async |base: &str, path: &str| {
        app.http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    for (path, expected) in [
        ("/code", 200),
        ("/portal/sign-in", 200),
        ("/static/patient.css", 200),
        ("/healthz", 200),
        ("/signin", 404),
        ("/search?q=Parks", 404),
        ("/patients/1", 404),
        ("/admin/users", 404),
        ("/api/patients", 404),
        ("/api/practices", 404),
        ("/mailbox", 404),
        ("/readyz", 404),
        ("/static/staff.js", 404),
    ] {
        assert_eq!(status_of(&patient, path).await, expected, "{path}");
    }
    // The activation page answers there (an unknown link: its 404 page).
    let landing = app
        .http
        .get(format!("{patient}/a/AAAAAAAAAAAAAAAAAAAAAA"))
        .send()
        .await
        .unwrap();
    assert_eq!(landing.status(), StatusCode::NOT_FOUND);
    assert!(landing.text().await.unwrap().contains("<html"));
    // So does the SMS webhook.
    let response = app
        .http
        .post(format!("{patient}/webhooks/sms/{SMS_WEBHOOK_SECRET}"))
        .form(&[("From", "+12125550148"), ("Body", "HELLO")])
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    // The main listener still has everything.
    assert_eq!(status_of(&app.base, "/signin").await, 200);
    assert_eq!(status_of(&app.base, "/code").await, 200);
    app.stop().await;
}
