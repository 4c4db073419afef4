//! The server over real HTTP and SMTP, with a test clock, on a SQLite file
//! and on PostgreSQL. One test binary (link time); modules by subject.

mod api;
mod delivery;
mod mllp;
mod sms;

use std::sync::Arc;

pub use enroll_notify::testing::SmtpSink as TestSmtp;
use enroll_server::{
    AppState, Dispatcher, Links, MllpSettings, RunningMllp, RunningServer, TestClock,
};

use enroll_store::testing::{ENGINES, Engine, TestDb};
use jiff::Timestamp;
use reqwest::StatusCode;
use serde_json::{Value, json};

pub const TOKEN: &str = "test-token-of-frida";
pub const ADMIN_TOKEN: &str = "test-token-of-ada";
pub const SMS_WEBHOOK_SECRET: &str = "hook-secret";

pub struct TestApp {
    pub engine: Engine,
    pub db: TestDb,
    pub clock: Arc<TestClock>,
    server: Option<RunningServer>,
    mllp: Option<RunningMllp>,
    /// The MLLP listener (facility TEST maps to the test practice by code).
    pub mllp_addr: std::net::SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    pub practice_id: i64,
    pub templates: enroll_server::SharedTemplates,
}

/// Wednesday 2026-11-25 10:00 in New York: inside office hours.
pub fn wednesday_morning() -> Timestamp {
    "2026-11-25T15:00:00Z".parse().unwrap()
}

impl TestApp {
    pub async fn start(engine: Engine) -> Option<TestApp> {
        let db = TestDb::new(engine).await?;
        let now = wednesday_morning();
        let practice = db.always_open_practice("TEST", now).await;
        db.store
            .put_staff_user(
                "frida",
                "Frida Front Desk",
                "staff",
                &enroll_store::hash_token(TOKEN),
                now,
            )
            .await
            .unwrap();
        let clock = Arc::new(TestClock::new(now));
        let links = Links::new("http://invites.test", b"test secret");
        let mut state = AppState::new(db.store.clone(), clock.clone(), links);
        state.sms_webhook_secret = Some(SMS_WEBHOOK_SECRET.to_string());
        db.store
            .put_staff_user(
                "ada",
                "Ada Admin",
                "admin",
                &enroll_store::hash_token(ADMIN_TOKEN),
                now,
            )
            .await
            .unwrap();
        let templates = state.templates.clone();
        let mllp = enroll_server::mllp::start(state.intake.clone(), &test_mllp_settings())
            .await
            .unwrap();
        let server = enroll_server::spawn("127.0.0.1:0".parse().unwrap(), state)
            .await
            .unwrap();
        let base = format!("http://{}", server.addr);
        Some(TestApp {
            engine,
            db,
            clock,
            server: Some(server),
            mllp_addr: mllp.addr,
            mllp: Some(mllp),
            base,
            http: reqwest::Client::new(),
            practice_id: practice.id,
            templates,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
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

    pub async fn stop(mut self) {
        if let Some(mllp) = self.mllp.take() {
            mllp.stop().await;
        }
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
        self.db.store.close().await;
    }
}

/// The listener as `enroll serve` runs it, on a free loopback port.
pub fn test_mllp_settings() -> MllpSettings {
    MllpSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        max_message_bytes: 1024 * 1024,
        idle_timeout: std::time::Duration::from_secs(30),
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
    /// The links the app's pages verify (same secret as `start`).
    pub fn links(&self) -> Links {
        Links::new("http://invites.test", b"test secret")
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
        Dispatcher {
            store: self.db.store.clone(),
            clock: self.clock.clone(),
            email: Arc::new(mailer),
            sms: None,
            templates: self.templates.clone(),
            links: self.links(),
            email_from: "Test Practice <portal@practice.test>".into(),
            policy: enroll_store::DeliveryPolicy::default(),
            worker: worker.into(),
            batch: 100,
            concurrency: 8,
        }
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
