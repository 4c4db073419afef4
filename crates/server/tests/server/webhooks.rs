//! Signed webhooks (issue #12 item 4) against a real HTTP receiver started
//! here: an administrator configures the practice's endpoint through the
//! API, a patient activates through the pages (or invites are sent, fail,
//! or are held by the cap), and the receiver gets each event signed
//! (HMAC-SHA256 over "<timestamp>.<body>", checked here with its own
//! code), retried with backoff on the test clock, and given up on after
//! the last attempt. No body carries more than the patient's id and MRN.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use enroll_server::{Clock, Settings};
use hmac::{Hmac, Mac};
use jiff::SignedDuration;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::activation::{invite_token, last_code, on_each_engine_with, send_code, to_code};
use crate::{TestApp, TestSmtp};

/// What the receiver got in one request.
#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: String,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn event_type(&self) -> String {
        self.header("enroll-event").to_string()
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    /// The statuses to answer, in turn; 200 once they run out.
    answers: Mutex<VecDeque<u16>>,
    /// Every answer after the scripted ones (200 unless told).
    then: Mutex<u16>,
    arrivals: tokio::sync::Notify,
}

/// A webhook receiver on 127.0.0.1, as a practice's EHR integration runs.
struct Receiver {
    url: String,
    state: Arc<ReceiverState>,
}

async fn hook(
    State(state): State<Arc<ReceiverState>>,
    headers: HeaderMap,
    body: String,
) -> AxumStatus {
    state
        .received
        .lock()
        .unwrap()
        .push(Received { headers, body });
    let status = state
        .answers
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(*state.then.lock().unwrap());
    state.arrivals.notify_waiters();
    AxumStatus::from_u16(status).unwrap()
}

impl Receiver {
    /// Answers `answers` in turn, then `then` to every request.
    async fn start(answers: &[u16], then: u16) -> Receiver {
        let state = Arc::new(ReceiverState {
            answers: Mutex::new(answers.iter().copied().collect()),
            then: Mutex::new(then),
            ..ReceiverState::default()
        });
        let app = axum::Router::new()
            .route("/enroll-events", axum::routing::post(hook))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/enroll-events"),
            state,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits (up to 20 s, woken by each arrival) until a request of
    /// `event_type` has come, and returns it.
    async fn wait_for(&self, event_type: &str) -> Received {
        let waiting = async {
            loop {
                let arrived = self.state.arrivals.notified();
                if let Some(found) = self
                    .received()
                    .into_iter()
                    .find(|r| r.event_type() == event_type)
                {
                    return found;
                }
                arrived.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .unwrap_or_else(|_| panic!("no {event_type} came: {:?}", self.received()))
    }
}

/// What a receiver does with a request: recompute the signature from its
/// own copy of the secret and compare.
fn assert_signed(received: &Received, secret: &str) {
    let timestamp = received.header("enroll-timestamp");
    assert!(timestamp.parse::<i64>().is_ok(), "{timestamp:?}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{}", received.body).as_bytes());
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(
        received.header("enroll-signature"),
        expected,
        "{received:?}"
    );
    assert_eq!(received.header("content-type"), "application/json");
    let body = received.json();
    assert_eq!(received.header("enroll-delivery"), body["id"], "{body}");
    assert_eq!(received.header("enroll-event"), body["type"], "{body}");
}

/// The test patient's details besides the MRN: none may be in a body.
const PHI: [&str; 6] = [
    "Rosa",
    "Parks",
    "1990-07-04",
    "10027",
    "rosa@example.org",
    "+1",
];

fn assert_no_phi(received: &[Received]) {
    for request in received {
        for value in PHI {
            assert!(!request.body.contains(value), "{value} in {}", request.body);
        }
    }
}

/// Adds an endpoint for the test practice as Ada; returns (id, secret).
async fn add_endpoint(app: &TestApp, url: &str, events: Option<&[&str]>) -> (i64, String) {
    let mut body = json!({ "url": url });
    if let Some(events) = events {
        body["events"] = json!(events);
    }
    let (status, endpoint) = app
        .admin_post(
            &format!("/api/practices/{}/webhooks", app.practice_id),
            body,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{:?}: {endpoint}", app.engine);
    (
        endpoint["id"].as_i64().unwrap(),
        endpoint["secret"].as_str().unwrap().to_string(),
    )
}

async fn deliveries(app: &TestApp, endpoint: i64) -> Vec<Value> {
    let (status, list) = app
        .admin_get(&format!(
            "/api/practices/{}/webhooks/{endpoint}/deliveries",
            app.practice_id
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list.as_array().cloned().unwrap_or_default()
}

/// The deliveries once none is queued any more (up to 20 s), for tests
/// whose sender runs in the background.
async fn deliveries_once_settled(app: &TestApp, endpoint: i64) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list = deliveries(app, endpoint).await;
        let settled = list.iter().all(|d| d["state"] != "queued");
        if settled || tokio::time::Instant::now() > deadline {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The activation pages from the invite's link to "active".
async fn activate(app: &TestApp, smtp: &TestSmtp) {
    let token = invite_token(app, smtp).await;
    let code_page = to_code(app, &token).await;
    let done = send_code(app, &token, &code_page, &last_code(smtp)).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
}

/// The webhook sender runs in the background, as in production.
fn sending_in_the_background(settings: &mut Settings) {
    settings.webhooks.enabled = true;
    settings.webhooks.poll_interval_ms = 20;
}

#[tokio::test]
async fn a_receiver_gets_the_signed_patient_activated_event() {
    on_each_engine_with(sending_in_the_background, async |app, smtp| {
        let receiver = Receiver::start(&[], 200).await;
        let (endpoint, secret) =
            add_endpoint(app, &receiver.url, Some(&["patient.activated"][..])).await;
        assert_eq!(secret.len(), 64, "32 random bytes in hex: {secret}");
        let id = app.patient("M-WEBHOOK", json!({})).await;
        activate(app, smtp).await;

        let event = receiver.wait_for("patient.activated").await;
        assert_signed(&event, &secret);
        assert_eq!(
            event.header("enroll-timestamp"),
            app.clock.now().as_second().to_string()
        );
        let body = event.json();
        let event_id = body["id"].as_str().unwrap();
        assert!(uuid_like(event_id), "{body}");
        assert_eq!(
            body,
            json!({
                "id": event_id,
                "type": "patient.activated",
                "occurred_at": app.clock.now().to_string(),
                "practice": "TEST",
                "patient": { "id": id, "mrn": "M-WEBHOOK" },
            }),
            "{:?}",
            app.engine
        );
        // Subscribed to patient.activated only: the invite's own events
        // were not sent to it.
        assert!(
            receiver
                .received()
                .iter()
                .all(|r| r.event_type() == "patient.activated"),
            "{:?}",
            receiver.received()
        );
        assert_no_phi(&receiver.received());

        // The receiver has the request before the sender records the
        // answer: wait for the record.
        let list = deliveries_once_settled(app, endpoint).await;
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0]["event_id"], event_id);
        assert_eq!(list[0]["state"], "delivered");
        assert_eq!(list[0]["attempts"], 1);
        assert_eq!(list[0]["last_status"], 200);
    })
    .await;
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4
}

/// An SMTP address nobody listens on: every send fails for a passing reason.
async fn dead_smtp() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Four Enroll Nows while auto invites are off, then an appointment with
/// them on: the auto invite is held by the cap (R7).
async fn fifth_invite_over_the_cap(app: &TestApp, mrn: &str) -> i64 {
    let switch_path = format!("/api/practices/{}/auto-invites", app.practice_id);
    let switch = async |on: bool| {
        let (status, _) = app
            .admin_call(
                reqwest::Method::PUT,
                &switch_path,
                Some(json!({ "on": on })),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    };
    switch(false).await;
    let id = app.patient(mrn, json!({})).await;
    for _ in 0..4 {
        assert_eq!(app.enroll(id).await.0, StatusCode::CREATED);
    }
    switch(true).await;
    let (status, outcome) = app
        .post(&format!("/api/patients/{id}/appointments"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(outcome["decision"]["decision"], "suppressed", "{outcome}");
    id
}

#[tokio::test]
async fn invites_sent_failed_and_suppressed_are_signed_webhooks_too() {
    let one_attempt = |settings: &mut Settings| settings.delivery.max_attempts = 1;
    on_each_engine_with(one_attempt, async |app, smtp| {
        let receiver = Receiver::start(&[], 200).await;
        let (_, secret) = add_endpoint(app, &receiver.url, None).await;

        let sent = app.patient("M-SENT", json!({})).await;
        app.dispatcher(smtp.addr, "w1").run_round().await.unwrap();
        let failed = app.patient("M-FAILED", json!({})).await;
        let round = app
            .dispatcher(dead_smtp().await, "w1")
            .run_round()
            .await
            .unwrap();
        assert_eq!(round.failed, 1, "{round:?}");
        let suppressed = fifth_invite_over_the_cap(app, "M-CAP").await;

        let webhooks = app.running_webhooks();
        let round = webhooks.run_round().await.unwrap();
        assert_eq!(round.delivered, 3, "{:?}: {round:?}", app.engine);
        let received = receiver.received();
        let mut types: Vec<String> = received.iter().map(Received::event_type).collect();
        types.sort_unstable();
        assert_eq!(types, ["invite.failed", "invite.sent", "invite.suppressed"]);
        for event in &received {
            assert_signed(event, &secret);
        }
        assert_no_phi(&received);
        let body_of = |event_type: &str| {
            received
                .iter()
                .find(|r| r.event_type() == event_type)
                .unwrap_or_else(|| panic!("no {event_type} in {types:?}"))
                .json()
        };

        let invite_of = async |patient: i64, n: usize| -> i64 {
            app.invites(patient).await[n]["id"].as_i64().unwrap()
        };
        let body = body_of("invite.sent");
        assert_eq!(body["patient"], json!({ "id": sent, "mrn": "M-SENT" }));
        assert_eq!(
            body["invite"],
            json!({ "id": invite_of(sent, 0).await, "channels": ["email"], "attempt": 1 })
        );
        let body = body_of("invite.failed");
        assert_eq!(body["patient"], json!({ "id": failed, "mrn": "M-FAILED" }));
        assert_eq!(
            body["invite"],
            json!({ "id": invite_of(failed, 0).await, "attempts": 1 }),
            "no reason: an SMTP refusal may quote the address"
        );
        let body = body_of("invite.suppressed");
        assert_eq!(body["patient"], json!({ "id": suppressed, "mrn": "M-CAP" }));
        let invites = app.invites(suppressed).await;
        let held = invites.last().unwrap();
        assert_eq!(held["state"], "suppressed");
        assert_eq!(
            body["invite"],
            json!({ "id": held["id"], "reason": "cap_reached", "next_possible_at": held["next_possible_at"] })
        );
        for body in received.iter().map(Received::json) {
            assert_eq!(body["practice"], "TEST");
            assert_eq!(body["occurred_at"], app.clock.now().to_string());
        }
        // Nothing more is due.
        assert_eq!(webhooks.run_round().await.unwrap().claimed, 0);
    })
    .await;
}

#[tokio::test]
async fn a_receiver_that_fails_first_gets_the_event_again_after_the_backoff() {
    on_each_engine_with(
        |_| {},
        async |app, _smtp| {
            let receiver = Receiver::start(&[500], 200).await;
            let (endpoint, secret) = add_endpoint(app, &receiver.url, None).await;
            let (status, ping) = app
                .admin_post(
                    &format!(
                        "/api/practices/{}/webhooks/{endpoint}/ping",
                        app.practice_id
                    ),
                    json!({}),
                )
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{ping}");
            let webhooks = app.running_webhooks();

            let round = webhooks.run_round().await.unwrap();
            assert_eq!((round.claimed, round.retrying), (1, 1), "{round:?}");
            let list = deliveries(app, endpoint).await;
            assert_eq!(list[0]["state"], "queued");
            assert_eq!(list[0]["last_status"], 500);
            assert_eq!(list[0]["last_error"], "the receiver answered HTTP 500");
            // The first retry is 30 s +-20% away: not yet...
            app.clock.advance(SignedDuration::from_secs(20));
            assert_eq!(webhooks.run_round().await.unwrap().claimed, 0);
            // ...but by 36 s.
            app.clock.advance(SignedDuration::from_secs(17));
            let round = webhooks.run_round().await.unwrap();
            assert_eq!(round.delivered, 1, "{round:?}");

            let received = receiver.received();
            assert_eq!(received.len(), 2, "{received:?}");
            for attempt in &received {
                assert_signed(attempt, &secret);
                assert_eq!(attempt.header("enroll-event"), "webhook.ping");
                assert_eq!(attempt.header("enroll-delivery"), ping["event_id"]);
            }
            assert_ne!(
                received[0].header("enroll-timestamp"),
                received[1].header("enroll-timestamp"),
                "each attempt is signed at its own time"
            );
            assert_eq!(received[0].body, received[1].body, "the same event");
            let list = deliveries(app, endpoint).await;
            assert_eq!(list[0]["state"], "delivered");
            assert_eq!(list[0]["attempts"], 2);
            assert_eq!(list[0]["last_status"], 200);
            app.clock.advance(SignedDuration::from_hours(2));
            assert_eq!(webhooks.run_round().await.unwrap().claimed, 0);
            assert_eq!(
                receiver.received().len(),
                2,
                "delivered once after the retry"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn an_endpoint_that_never_takes_the_event_is_given_up_after_the_last_attempt() {
    let three_attempts = |settings: &mut Settings| settings.webhooks.max_attempts = 3;
    on_each_engine_with(three_attempts, async |app, _smtp| {
        let receiver = Receiver::start(&[], 503).await;
        let (endpoint, _) = add_endpoint(app, &receiver.url, None).await;
        let path = format!(
            "/api/practices/{}/webhooks/{endpoint}/ping",
            app.practice_id
        );
        assert_eq!(
            app.admin_post(&path, json!({})).await.0,
            StatusCode::ACCEPTED
        );
        let webhooks = app.running_webhooks();
        let mut rounds = Vec::new();
        for _ in 0..5 {
            rounds.push(webhooks.run_round().await.unwrap());
            app.clock.advance(SignedDuration::from_hours(2));
        }
        let retrying: Vec<usize> = rounds.iter().map(|r| r.retrying).collect();
        let failed: Vec<usize> = rounds.iter().map(|r| r.failed).collect();
        assert_eq!(retrying, [1, 1, 0, 0, 0], "{:?}", app.engine);
        assert_eq!(failed, [0, 0, 1, 0, 0]);
        assert_eq!(receiver.received().len(), 3);
        let list = deliveries(app, endpoint).await;
        assert_eq!(list[0]["state"], "failed");
        assert_eq!(list[0]["attempts"], 3);
        assert_eq!(list[0]["last_status"], 503);
        assert_eq!(
            list[0]["last_error"],
            "gave up after 3 attempts (the receiver answered HTTP 503)"
        );
        assert!(list[0]["next_attempt_at"].is_null(), "{list:?}");
    })
    .await;
}

#[tokio::test]
async fn webhook_endpoints_are_for_administrators_checked_in_words_and_audited() {
    on_each_engine_with(
        |_| {},
        async |app, _smtp| {
            let path = format!("/api/practices/{}/webhooks", app.practice_id);
            let (status, _) = app
                .post(&path, json!({ "url": "https://ehr.example.org/hook" }))
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "a front desk cannot add one");

            for (body, field, words) in [
                (
                    json!({ "url": "http://ehr.example.org/hook" }),
                    "url",
                    "https",
                ),
                (json!({ "url": "ehr.example.org" }), "url", "https://"),
                (
                    json!({ "url": "https://ehr.example.org/", "events": ["patient.deleted"] }),
                    "events",
                    "patient.activated",
                ),
                (
                    json!({ "url": "https://ehr.example.org/", "secret": "short" }),
                    "secret",
                    "24",
                ),
            ] {
                let (status, answer) = app.admin_post(&path, body.clone()).await;
                assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
                assert_eq!(answer["problems"][0]["field"], field, "{answer}");
                let message = answer["message"].as_str().unwrap();
                assert!(message.contains(words), "{body}: {message}");
            }

            let given = "a-secret-the-ehr-team-chose-1234";
            let (status, added) = app
                .admin_post(
                    &path,
                    json!({ "url": "https://ehr.example.org/hook", "secret": given,
                        "events": ["invite.sent", "patient.activated"] }),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{added}");
            assert_eq!(added["secret"], given, "shown once, on creation");
            assert_eq!(added["events"], json!(["patient.activated", "invite.sent"]));
            let id = added["id"].as_i64().unwrap();
            let (_, list) = app.admin_get(&path).await;
            assert_eq!(list.as_array().unwrap().len(), 1);
            assert!(
                !list.to_string().contains(given),
                "never shown again: {list}"
            );

            let (status, off) = app
                .admin_call(
                    reqwest::Method::PUT,
                    &format!("{path}/{id}/enabled"),
                    Some(json!({ "enabled": false })),
                )
                .await;
            assert_eq!((status, &off["enabled"]), (StatusCode::OK, &json!(false)));
            let (status, refused) = app
                .admin_post(&format!("{path}/{id}/ping"), json!({}))
                .await;
            assert_eq!(status, StatusCode::CONFLICT, "{refused}");
            assert_eq!(refused["code"], "webhook_disabled");

            let (status, _) = app
                .admin_call(reqwest::Method::DELETE, &format!("{path}/{id}"), None)
                .await;
            assert_eq!(status, StatusCode::NO_CONTENT);
            let (_, list) = app.admin_get(&path).await;
            assert_eq!(list, json!([]));
            let (status, _) = app
                .admin_call(reqwest::Method::DELETE, &format!("{path}/{id}"), None)
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND);

            let (_, audit) = app.admin_get("/api/audit").await;
            let actions: Vec<&str> = audit
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|e| e["action"].as_str())
                .filter(|a| a.starts_with("webhook."))
                .collect();
            assert_eq!(
                actions,
                ["webhook.remove", "webhook.disable", "webhook.add"],
                "{:?}",
                app.engine
            );
            assert!(
                !audit.to_string().contains(given),
                "no secret in the audit log"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn a_disabled_endpoint_gets_no_events_queued() {
    on_each_engine_with(
        |_| {},
        async |app, smtp| {
            let receiver = Receiver::start(&[], 200).await;
            let (endpoint, _) = add_endpoint(app, &receiver.url, None).await;
            let path = format!(
                "/api/practices/{}/webhooks/{endpoint}/enabled",
                app.practice_id
            );
            let set = async |enabled: bool| {
                let (status, _) = app
                    .admin_call(
                        reqwest::Method::PUT,
                        &path,
                        Some(json!({ "enabled": enabled })),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK);
            };
            set(false).await;
            app.patient("M-OFF", json!({})).await;
            app.dispatcher(smtp.addr, "w1").run_round().await.unwrap();
            set(true).await;
            let round = app.running_webhooks().run_round().await.unwrap();
            assert_eq!(round.claimed, 0, "nothing was queued while it was off");
            assert!(receiver.received().is_empty());
        },
    )
    .await;
}
