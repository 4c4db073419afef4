//! The Integration Tool's Connections page over real HTTP, on both
//! engines: the MLLP listener with the intake's counts by ACK code, the
//! facility mapping (checked, audited), the test email through a real SMTP
//! server (accepted) and through one that is not there (the exact error,
//! next to the field), the test text without a provider, and a webhook
//! endpoint's ping with its delivery listed.

use reqwest::StatusCode;
use serde_json::Value;

use crate::integration_tool::audited;
use crate::mllp::{Sender, a04};
use crate::ui::Staff;
use crate::{TestApp, TestSmtp, on_each_engine};

fn path(app: &TestApp) -> String {
    format!("/admin/practices/{}/connections", app.practice_id)
}

#[tokio::test]
async fn the_connections_page_shows_the_feed_maps_facilities_and_pings_webhooks() {
    on_each_engine(async |app| {
        let frida = Staff::sign_in(app, "frida").await;
        let (status, _) = frida.get(&path(app)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // Two messages over MLLP: one accepted, one with an unmapped facility.
        let mut sender = Sender::connect(app.mllp_addr).await;
        let ack = sender
            .send(&a04("C1", "M-1", "Rosa", "rosa@example.org"))
            .await;
        assert!(ack.contains("MSA|AA"), "{ack}");
        let stranger = String::from_utf8(a04("C2", "M-2", "Ana", "ana@example.org"))
            .unwrap()
            .replace("|EPIC|TEST|", "|EPIC|NORTH|");
        let ack = sender.send(stranger.as_bytes()).await;
        assert!(ack.contains("MSA|AE"), "{ack}");

        let ada = Staff::sign_in(app, "ada").await;
        let csrf = ada.csrf().await;
        let (status, page) = ada.get(&path(app)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        // The address it was bound to, not the configured port 0.
        assert!(
            page.contains(&format!(
                "<h3 id=\"listener-mllp-h\">Listening on {}, without TLS</h3>",
                app.mllp_addr
            )),
            "{page}"
        );
        assert!(
            page.contains("Last message received Nov 25, 2026 10:00 AM."),
            "{page}"
        );
        assert!(
            page.contains("AA: accepted</th><td>1</td><td>1</td>"),
            "{page}"
        );
        assert!(
            page.contains("AE: error (the sender should fix and resend)</th><td>1</td><td>1</td>"),
            "{page}"
        );
        assert!(
            page.contains("localhost:587, STARTTLS required, without signing in"),
            "{page}"
        );

        // A facility with an HL7 delimiter is refused next to the field.
        let facilities = format!("{}/facilities", path(app));
        let (status, page) = ada
            .post(&facilities, &[("csrf", &csrf), ("facility", "NO|RTH")])
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains("id=\"err-facility\""), "{page}");
        let (status, location) = ada
            .post(&facilities, &[("csrf", &csrf), ("facility", "NORTH")])
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
        let (_, page) = ada.get(&location).await;
        assert!(
            page.contains("<code>NORTH</code> <span class=\"muted\">(mapped)</span>"),
            "{page}"
        );
        let mapped = audited(app, "hl7.facility_mapped").await;
        assert_eq!(mapped[0]["after"]["practice"], "TEST", "{mapped:?}");
        assert_eq!(mapped[0]["before"]["practice"], Value::Null, "{mapped:?}");
        // The NORTH message now applies on reprocessing, as the mapping says.
        let ack = sender
            .send(stranger.replace("|C2|", "|C3|").as_bytes())
            .await;
        assert!(ack.contains("MSA|AA"), "{ack}");

        // No SMS provider: the test text says so.
        let (status, page) = ada
            .post(
                &format!("{}/test-sms", path(app)),
                &[("csrf", &csrf), ("to", "617-555-0100")],
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert!(page.contains("No SMS provider is configured"), "{page}");

        // A webhook endpoint's ping is queued and listed.
        let endpoint = app
            .db
            .store
            .add_webhook_endpoint(
                &enroll_store::NewWebhookEndpoint {
                    practice_id: app.practice_id,
                    url: "https://hooks.example.org/enroll",
                    secret: "s3cret-s3cret-s3cret",
                    events: &[enroll_core::WebhookEventType::PatientActivated],
                    created_by: "test",
                },
                crate::wednesday_morning(),
            )
            .await
            .unwrap();
        let (status, _) = ada
            .post(
                &format!("{}/webhooks/{}/ping", path(app), endpoint.id),
                &[("csrf", &csrf)],
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, page) = ada.get(&path(app)).await;
        assert!(
            page.contains("<td>webhook.ping</td><td>queued</td>"),
            "{page}"
        );
        assert_eq!(audited(app, "webhook.ping").await.len(), 1);
        let (status, _) = ada
            .post(
                &format!("{}/webhooks/999999/ping", path(app)),
                &[("csrf", &csrf)],
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn a_test_email_reports_the_smtp_servers_answer_in_words() {
    on_each_engine(async |app| {
        // The test settings' SMTP server (localhost:587) is not running.
        let ada = Staff::sign_in(app, "ada").await;
        let csrf = ada.csrf().await;
        let test = format!("{}/test-email", path(app));
        let (status, page) = ada
            .post(&test, &[("csrf", &csrf), ("to", "not an address")])
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains("id=\"err-test-email\""), "{page}");
        let (status, page) = ada
            .post(&test, &[("csrf", &csrf), ("to", "it@practice.test")])
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("id=\"test-email-result\""), "{page}");
        assert!(
            page.contains("The test email was not sent (SMTP server localhost:587): "),
            "{page}"
        );
        assert!(
            page.contains("localhost:587"),
            "the error names the server: {page}"
        );
        let tests = audited(app, "connections.test_email").await;
        assert_eq!(tests[0]["after"]["accepted"], false, "{tests:?}");
        assert!(
            !tests[0].to_string().contains("it@practice.test"),
            "no address in the audit"
        );
    })
    .await;

    // With a real SMTP server configured: accepted, and it arrives.
    let smtp = TestSmtp::start().await;
    for engine in enroll_store::testing::ENGINES {
        let Some(app) = TestApp::start_with(engine, |settings| {
            settings.smtp.host = smtp.addr.ip().to_string();
            settings.smtp.port = smtp.addr.port();
            settings.smtp.security = enroll_notify::SmtpSecurity::Plain;
        })
        .await
        else {
            continue;
        };
        let ada = Staff::sign_in(&app, "ada").await;
        let csrf = ada.csrf().await;
        let (status, page) = ada
            .post(
                &format!("{}/test-email", path(&app)),
                &[("csrf", &csrf), ("to", "it@practice.test")],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            page.contains("The SMTP server accepted the test email"),
            "{page}"
        );
        let mail = smtp.received().pop().unwrap();
        assert_eq!(mail.to, ["it@practice.test"]);
        app.stop().await;
    }
}
