//! The server over real HTTP and SMTP, with a test clock, on a SQLite file
//! and on PostgreSQL. One test binary (link time); modules by subject.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod activation;
mod activation_browser;
mod api;
mod browser;
mod connections;
mod dashboard;
mod delivery;
mod fhir;
mod go_live;
mod hardening;
mod in_person;
mod integration_browser;
mod integration_tool;
mod mllp;
mod openapi;
mod pki;
mod roster_upload;
mod sms;
mod ui;
mod webdriver;
mod webhooks;
mod worklists;

use std::sync::Arc;

pub use enroll_notify::testing::SmtpSink as TestSmtp;
use enroll_server::{
    Application, DeliveryConfig, Dispatcher, Links, Mailbox, MllpConfig, RunningApplication,
    Runtime, Settings, TestClock, WebhookConfig, WebhookDispatcher,
};

use enroll_store::testing::{ENGINES, Engine, IntakeFaults, TestDb};
use jiff::Timestamp;
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const TOKEN: &str = "test-token-of-frida";
pub const ADMIN_TOKEN: &str = "test-token-of-ada";
pub const SMS_WEBHOOK_SECRET: &str = "hook-secret";
/// The staff pages' password of both test users.
pub const PASSWORD: &str = "correct horse battery staple";

/// Hashed once per test binary: argon2 is slow on purpose.
static PASSWORD_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| enroll_server::hash_password(PASSWORD).unwrap());

pub struct TestApp {
    pub engine: Engine,
    pub db: TestDb,
    pub clock: Arc<TestClock>,
    /// Faults at the HL7 intake's commit (inert until a test sets one).
    pub faults: Arc<IntakeFaults>,
    running: Option<RunningApplication>,
    /// The MLLP listener (facility TEST maps to the test practice by code).
    pub mllp_addr: std::net::SocketAddr,
    pub mllp_tls_addr: Option<std::net::SocketAddr>,
    /// The patient-facing listener, when `http.patient_listen` is set.
    pub patient_addr: Option<std::net::SocketAddr>,
    pub base: String,
    pub http: reqwest::Client,
    pub practice_id: i64,
    pub templates: enroll_server::SharedTemplates,
}

/// Wednesday 2026-11-25 10:00 in New York: inside office hours.
pub fn wednesday_morning() -> Timestamp {
    "2026-11-25T15:00:00Z".parse().unwrap()
}

/// Enroll as the tests run it: everything on free loopback ports, links to
/// `http://invites.test`, no dispatcher or webhook sender in the
/// background (tests deliver round by round with [`TestApp::dispatcher`]
/// and [`TestApp::running_webhooks`]).
pub fn test_settings() -> Settings {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: Some("http://invites.test".parse().unwrap()),
        email_from: "Test Practice <portal@practice.test>".into(),
        delivery: DeliveryConfig {
            enabled: false,
            batch: 100,
            concurrency: 8,
            ..DeliveryConfig::default()
        },
        webhooks: WebhookConfig {
            enabled: false,
            ..WebhookConfig::default()
        },
        mllp: MllpConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            idle_timeout: std::time::Duration::from_secs(30),
            ..MllpConfig::default()
        },
        ..Settings::default()
    };
    settings.sms.webhook_secret = Some(SMS_WEBHOOK_SECRET.into());
    settings
}

impl TestApp {
    pub async fn start(engine: Engine) -> Option<TestApp> {
        TestApp::start_with(engine, |_| {}).await
    }

    /// [`TestApp::start`] with `adjust` applied to [`test_settings`].
    pub async fn start_with(engine: Engine, adjust: impl FnOnce(&mut Settings)) -> Option<TestApp> {
        TestApp::start_in(engine, adjust, None).await
    }

    /// The app as `enroll demo` runs it: invites and codes go to the demo
    /// mailbox (`/mailbox`), and links point at the app itself (a port
    /// chosen before start), so a browser can follow them.
    pub async fn start_with_mailbox(engine: Engine) -> Option<(TestApp, Arc<Mailbox>)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mailbox = Arc::new(Mailbox::default());
        let app = TestApp::start_in(
            engine,
            |settings| {
                settings.listen = format!("127.0.0.1:{port}").parse().unwrap();
                settings.public_url = Some(format!("http://127.0.0.1:{port}").parse().unwrap());
            },
            Some(mailbox.clone()),
        )
        .await?;
        Some((app, mailbox))
    }

    async fn start_in(
        engine: Engine,
        adjust: impl FnOnce(&mut Settings),
        mailbox: Option<Arc<Mailbox>>,
    ) -> Option<TestApp> {
        let db = TestDb::new(engine).await?;
        let now = wednesday_morning();
        let practice = db.always_open_practice("TEST", now).await;
        for (username, name, role, token) in [
            (
                "frida",
                "Frida Front Desk",
                enroll_core::Role::FrontDesk,
                TOKEN,
            ),
            ("ada", "Ada Admin", enroll_core::Role::Admin, ADMIN_TOKEN),
        ] {
            let user = db
                .store
                .put_staff_user(username, name, role, &enroll_store::hash_token(token), now)
                .await
                .unwrap();
            let password = enroll_store::StaffChange::Password(&PASSWORD_HASH);
            db.store
                .change_staff(user.id, password, "test", now)
                .await
                .unwrap();
            // Frida works at the test practice; Ada administers every practice.
            if role == enroll_core::Role::FrontDesk {
                let practices = enroll_store::StaffChange::Practices(&[practice.id]);
                db.store
                    .change_staff(user.id, practices, "test", now)
                    .await
                    .unwrap();
            }
        }
        let clock = Arc::new(TestClock::new(now));
        let mut settings = test_settings();
        adjust(&mut settings);
        let faults = IntakeFaults::new();
        let runtime = Runtime {
            clock: clock.clone(),
            store: Some(db.store.clone().with_intake_faults(faults.clone())),
            mailbox,
        };
        let app = Application::build(settings, runtime).await.unwrap();
        let templates = app.state().templates.clone();
        let running = app.start().await.unwrap();
        let base = format!("http://{}", running.http_addr);
        Some(TestApp {
            engine,
            db,
            clock,
            faults,
            mllp_addr: running.mllp_addr.expect("the MLLP listener"),
            mllp_tls_addr: running.mllp_tls_addr,
            patient_addr: running.patient_http_addr,
            running: Some(running),
            base,
            http: reqwest::Client::new(),
            practice_id: practice.id,
            templates,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A JSON API call as Frida, the front desk.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(TOKEN, method, path, body).await
    }

    /// A JSON API call as Ada, the administrator (practice settings, HL7
    /// messages, the audit log).
    pub async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(ADMIN_TOKEN, method, path, body).await
    }

    pub async fn admin_get(&self, path: &str) -> (StatusCode, Value) {
        self.admin_call(reqwest::Method::GET, path, None).await
    }

    /// A plain GET of `path`, for a test that reads the status, the
    /// headers or the body itself.
    pub async fn fetch(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    /// The test practice as stored now.
    pub async fn practice(&self) -> enroll_store::Practice {
        let practice = self.db.store.practice(self.practice_id).await.unwrap();
        practice.unwrap()
    }

    /// The audit log, newest first (the last 200 lines).
    pub async fn audit_lines(&self) -> Vec<enroll_store::AuditEntry> {
        self.db.store.audit_log(None, 200).await.unwrap()
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.admin_call(reqwest::Method::POST, path, Some(body))
            .await
    }

    async fn call_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn enroll(&self, id: i64) -> (StatusCode, Value) {
        self.post(&format!("/api/patients/{id}/enroll"), json!({}))
            .await
    }

    /// Creates a patient with every required field; `overrides` replace keys.
    pub async fn patient(&self, mrn: &str, overrides: Value) -> i64 {
        let mut body = json!({
            "practice_id": self.practice_id,
            "mrn": mrn,
            "first_name": "Rosa",
            "last_name": "Parks",
            "date_of_birth": "1990-07-04",
            "birth_sex": "F",
            "zip": "10027",
            "email": "rosa@example.org",
        });
        if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), overrides) {
            body.extend(extra);
        }
        let (status, saved) = self.post("/api/patients", body).await;
        assert_eq!(status, StatusCode::CREATED, "{:?}: {saved}", self.engine);
        saved["patient"]["id"].as_i64().unwrap()
    }

    /// Stops the servers (MLLP first: a message in hand is finished), then
    /// closes the database.
    pub async fn stop(mut self) {
        self.stop_servers().await;
        self.db.store.close().await;
    }

    /// Stops the servers; the database stays open for a last look.
    pub async fn stop_servers(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await.unwrap();
        }
    }
}

/// Runs `test` against a fresh app on each available engine.
pub async fn on_each_engine(test: impl AsyncFn(&TestApp)) {
    for engine in ENGINES {
        if let Some(app) = TestApp::start(engine).await {
            test(&app).await;
            app.stop().await;
        }
    }
}

impl TestApp {
    fn running(&self) -> &RunningApplication {
        self.running.as_ref().expect("the app is running")
    }

    /// The links the app's pages verify.
    pub fn links(&self) -> Links {
        self.running().state().links.clone()
    }

    /// One delivery round of the app's own dispatcher (its channels: SMTP
    /// as configured, or the demo mailbox).
    pub async fn deliver(&self) {
        self.running().dispatcher().run_round().await.unwrap();
    }

    /// A dispatcher of this app that emails through the SMTP server at `smtp`.
    pub fn dispatcher(&self, smtp: std::net::SocketAddr, worker: &str) -> Dispatcher {
        let config = enroll_notify::SmtpConfig {
            host: smtp.ip().to_string(),
            port: smtp.port(),
            security: enroll_notify::SmtpSecurity::Plain,
            username: None,
            password: None,
            pool_size: 4,
            timeout_secs: 5,
        };
        let mailer = enroll_notify::SmtpMailer::new(&config).unwrap();
        self.running()
            .dispatcher()
            .clone()
            .with_email(Arc::new(mailer))
            .with_worker(worker)
    }

    /// The app's webhook sender, for tests that send round by round.
    pub fn running_webhooks(&self) -> WebhookDispatcher {
        self.running().webhooks().clone()
    }

    pub async fn invites(&self, patient_id: i64) -> Vec<Value> {
        let (_, invites) = self
            .get(&format!("/api/patients/{patient_id}/invites"))
            .await;
        invites.as_array().cloned().unwrap_or_default()
    }

    pub async fn timeline_kinds(&self, patient_id: i64) -> Vec<String> {
        let (_, timeline) = self
            .get(&format!("/api/patients/{patient_id}/timeline"))
            .await;
        timeline
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|e| e["kind"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}
