//! Texts through the dispatcher to an SMS provider stand-in served over HTTP
//! on loopback (the provider API shape of R13 / issue 4), with the per-number
//! limits of R13 and STOP.

use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use enroll_notify::{HttpSmsSender, SmsConfig};
use jiff::SignedDuration;
use serde_json::{Value, json};

use crate::{SMS_WEBHOOK_SECRET, TestApp, TestSmtp, on_each_engine};

/// The form fields of one text, with the account it was posted to.
type PostedText = (String, std::collections::HashMap<String, String>);

#[derive(Clone, Default)]
struct Provider {
    texts: Arc<Mutex<Vec<PostedText>>>,
}

async fn messages(
    State(provider): State<Provider>,
    Path(account): Path<String>,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let mut texts = provider.texts.lock().unwrap();
    texts.push((account, form));
    (
        StatusCode::CREATED,
        Json(json!({ "sid": format!("SM{}", texts.len()), "status": "queued" })),
    )
}

async fn start_provider() -> (String, Provider) {
    let provider = Provider::default();
    let app = Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            post(messages),
        )
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, provider)
}

fn texting_dispatcher(
    app: &TestApp,
    smtp: &TestSmtp,
    provider_url: &str,
) -> enroll_server::Dispatcher {
    let config = SmsConfig {
        base_url: provider_url.to_string(),
        account_sid: "AC0123456789".into(),
        auth_token: "token".into(),
        from: "+16175550000".into(),
        timeout_secs: 5,
        webhook_secret: None,
    };
    app.dispatcher(smtp.addr, "w1")
        .with_sms(Arc::new(HttpSmsSender::new(&config).unwrap()))
}

/// R12: no text carries the patient's data beyond the first name (the
/// chart of `TestApp::patient`: Rosa Parks, 1990-07-04, 10027, the MRN
/// given, the cell phone 617-555-0100).
fn assert_no_phi_in_texts(provider: &Provider) {
    let texts = provider.texts.lock().unwrap();
    assert!(!texts.is_empty(), "texts were sent");
    for (_, form) in texts.iter() {
        let body = &form["Body"];
        for phi in [
            "Parks",
            "1990-07-04",
            "07/04/1990",
            "10027",
            "MRN-",
            "617",
            "555-0100",
            "5550100",
        ] {
            assert!(!body.contains(phi), "R12: {phi:?} in {body:?}");
        }
    }
}

#[tokio::test]
async fn invites_are_texted_within_the_r13_limits_and_stop_ends_them() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        let (url, provider) = start_provider().await;
        let dispatcher = texting_dispatcher(app, &smtp, &url);
        let id = app
            .patient("MRN-5521", json!({ "cell_phone": "617-555-0100" }))
            .await;
        assert_eq!(
            dispatcher.run_round().await.unwrap().sent,
            1,
            "{:?}",
            app.engine
        );
        {
            let texts = provider.texts.lock().unwrap();
            assert_eq!(texts.len(), 1, "{:?}: one text", app.engine);
            let (account, form) = &texts[0];
            assert_eq!(account, "AC0123456789");
            assert_eq!(form["To"], "+16175550100");
            assert_eq!(form["From"], "+16175550000");
            let body = &form["Body"];
            assert!(
                body.chars().count() <= 160,
                "R13: {} characters: {body}",
                body.chars().count()
            );
            assert!(
                body.contains("Practice TEST") && body.contains("STOP") && body.contains("Rosa"),
                "{body}"
            );
        }
        assert_eq!(smtp.received().len(), 1, "the email went too");

        // A second invite the same day: email only (R13: one text a day).
        app.clock.advance(SignedDuration::from_hours(2));
        assert_eq!(app.enroll(id).await.0, reqwest::StatusCode::CREATED);
        dispatcher.run_round().await.unwrap();
        assert_eq!(
            provider.texts.lock().unwrap().len(),
            1,
            "{:?}: no second text within 24 h",
            app.engine
        );
        assert_eq!(smtp.received().len(), 2);

        // The next day the number may be texted again.
        app.clock.advance(SignedDuration::from_hours(23));
        assert_eq!(app.enroll(id).await.0, reqwest::StatusCode::CREATED);
        dispatcher.run_round().await.unwrap();
        assert_eq!(provider.texts.lock().unwrap().len(), 2, "{:?}", app.engine);

        // STOP: the number is never texted again; email goes on.
        app.http
            .post(app.url(&format!("/webhooks/sms/{SMS_WEBHOOK_SECRET}")))
            .form(&[("From", "+16175550100"), ("Body", "STOP")])
            .send()
            .await
            .unwrap();
        app.clock.advance(SignedDuration::from_hours(25));
        assert_eq!(app.enroll(id).await.0, reqwest::StatusCode::CREATED);
        assert_eq!(dispatcher.run_round().await.unwrap().sent, 1);
        assert_eq!(
            provider.texts.lock().unwrap().len(),
            2,
            "{:?}: opted out",
            app.engine
        );
        assert_eq!(smtp.received().len(), 4);
        assert_no_phi_in_texts(&provider);
    })
    .await;
}

#[tokio::test]
async fn two_patients_sharing_a_number_get_one_text_between_them_in_one_round() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        let (url, provider) = start_provider().await;
        let dispatcher = texting_dispatcher(app, &smtp, &url);
        // A parent and a child on the parent's phone, invited in one batch:
        // R13's one text a day is per number, so only one of them is texted.
        let parent = app
            .patient("M1", json!({ "cell_phone": "617-555-0100" }))
            .await;
        let child = app
            .patient(
                "M2",
                json!({ "cell_phone": "617-555-0100", "first_name": "Lily" }),
            )
            .await;
        let summary = dispatcher.run_round().await.unwrap();
        assert_eq!((summary.claimed, summary.sent), (2, 2), "{:?}", app.engine);
        assert_eq!(
            provider.texts.lock().unwrap().len(),
            1,
            "{:?}: one text to the shared number",
            app.engine
        );
        assert_eq!(smtp.received().len(), 2, "both were emailed");
        for id in [parent, child] {
            assert_eq!(app.invites(id).await[0]["state"], "sent");
        }
    })
    .await;
}

/// R13's week through the running dispatcher and the store's counts: a
/// number gets at most 3 texts in any 7 x 24 h, even when each day's text
/// is allowed, and across patients sharing it; once the first text is a
/// week old, the number may be texted again.
#[tokio::test]
async fn a_number_gets_at_most_three_texts_in_seven_days() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        let (url, provider) = start_provider().await;
        let dispatcher = texting_dispatcher(app, &smtp, &url);
        let texts = || provider.texts.lock().unwrap().len();
        let start = crate::wednesday_morning();
        let at_hour = |hours: i64| app.clock.set(start + SignedDuration::from_hours(hours));
        let deliver = async || {
            assert_eq!(
                dispatcher.run_round().await.unwrap().sent,
                1,
                "{:?}",
                app.engine
            );
        };

        // Hours 0, 25 and 50: a text each (never two within 24 h).
        let rosa = app
            .patient("MRN-7301", json!({ "cell_phone": "617-555-0100" }))
            .await;
        deliver().await;
        for hour in [25, 50] {
            at_hour(hour);
            assert_eq!(app.enroll(rosa).await.0, reqwest::StatusCode::CREATED);
            deliver().await;
        }
        assert_eq!(texts(), 3, "{:?}", app.engine);

        // Hour 75: a day since the last text, but the week's three are
        // spent: email only (the cap of R7 still allows this 4th send).
        at_hour(75);
        assert_eq!(app.enroll(rosa).await.0, reqwest::StatusCode::CREATED);
        deliver().await;
        assert_eq!(texts(), 3, "{:?}: no 4th text in 7 days", app.engine);

        // Hour 167: another patient on the same number; still the same week.
        at_hour(167);
        let lily = app
            .patient(
                "MRN-7302",
                json!({ "cell_phone": "617-555-0100", "first_name": "Lily" }),
            )
            .await;
        deliver().await;
        assert_eq!(texts(), 3, "{:?}: the limit is per number", app.engine);

        // Hour 169: the first text is more than a week old.
        at_hour(169);
        assert_eq!(app.enroll(lily).await.0, reqwest::StatusCode::CREATED);
        deliver().await;
        assert_eq!(texts(), 4, "{:?}: texted again after the week", app.engine);
        assert_eq!(smtp.received().len(), 6, "every invite was emailed");
        assert!(
            provider
                .texts
                .lock()
                .unwrap()
                .iter()
                .all(|(_, form)| form["To"] == "+16175550100")
        );
    })
    .await;
}

/// The Integration Tool's channel switches reach the dispatcher: a practice
/// that texts only sends no email, and an invite to a chart it cannot text
/// is cancelled with the reason; one that emails only sends no text.
#[tokio::test]
async fn the_practices_channel_switches_decide_email_and_text() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        let (url, provider) = start_provider().await;
        let dispatcher = texting_dispatcher(app, &smtp, &url);
        let channels = format!("/api/practices/{}/channels", app.practice_id);
        let (status, refused) = app
            .admin_call(
                reqwest::Method::PUT,
                &channels,
                Some(json!({ "email": false, "sms": false })),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{refused}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("keep at least one channel on"),
            "{refused}"
        );
        let (status, texts_only) = app
            .admin_call(
                reqwest::Method::PUT,
                &channels,
                Some(json!({ "email": false, "sms": true })),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK, "{texts_only}");
        assert_eq!(
            texts_only["channels"],
            json!({ "email": false, "sms": true })
        );

        let texted = app
            .patient("MRN-TXT", json!({ "cell_phone": "617-555-0100" }))
            .await;
        let no_phone = app.patient("MRN-NOPHONE", json!({})).await;
        dispatcher.run_round().await.unwrap();
        assert_eq!(provider.texts.lock().unwrap().len(), 1, "{:?}", app.engine);
        assert_eq!(smtp.received().len(), 0, "{:?}: no email", app.engine);
        let invites = app.invites(no_phone).await;
        assert_eq!(invites[0]["state"], "cancelled", "{invites:?}");
        assert!(
            invites[0]["failure_reason"]
                .as_str()
                .unwrap_or_default()
                .contains("invites by text message only"),
            "{invites:?}"
        );
        assert_eq!(app.invites(texted).await[0]["state"], "sent");

        let (status, _) = app
            .admin_call(
                reqwest::Method::PUT,
                &channels,
                Some(json!({ "email": true, "sms": false })),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::OK);
        app.clock.advance(SignedDuration::from_hours(25));
        assert_eq!(app.enroll(texted).await.0, reqwest::StatusCode::CREATED);
        assert_eq!(dispatcher.run_round().await.unwrap().sent, 1);
        assert_eq!(
            provider.texts.lock().unwrap().len(),
            1,
            "no text: email only"
        );
        assert_eq!(smtp.received().len(), 1);
    })
    .await;
}

/// R13 across parallel preparations: six dispatchers (six instances) each
/// claiming one invite a round, at the same moment, for twelve patients who
/// share one number. On PostgreSQL their transactions run side by side;
/// each must see the other's planned text, so the number gets one text.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_preparing_at_once_text_a_shared_number_once() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        let (url, provider) = start_provider().await;
        let dispatchers: Vec<_> = (0..6)
            .map(|i| {
                texting_dispatcher(app, &smtp, &url)
                    .with_worker(&format!("w{i}"))
                    .with_batch(1)
            })
            .collect();
        for i in 0..12 {
            app.patient(
                &format!("M-SHARED-{i}"),
                json!({ "cell_phone": "617-555-0100" }),
            )
            .await;
        }
        let mut sent = 0;
        for _ in 0..2 {
            let rounds = dispatchers.iter().map(|d| d.run_round());
            for round in futures::future::join_all(rounds).await {
                sent += round.unwrap().sent;
            }
        }
        assert_eq!(sent, 12, "{:?}: every invite went (by email)", app.engine);
        assert_eq!(
            provider.texts.lock().unwrap().len(),
            1,
            "{:?}: R13, one text a day to the number",
            app.engine
        );
    })
    .await;
}
