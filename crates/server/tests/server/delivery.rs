//! Delivery: the dispatcher against real SMTP servers over TCP, the
//! schedule, retries, interruptions, two dispatchers racing, unsubscribe and
//! SMS consent.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use enroll_server::{Clock, RoundSummary};
use enroll_store::{DeliveryPolicy, InviteState, Source};
use jiff::{SignedDuration, Timestamp};
use reqwest::StatusCode;
use serde_json::json;

use crate::{SMS_WEBHOOK_SECRET, TestApp, TestSmtp, on_each_engine};
use enroll_notify::testing::SmtpSinkState as SmtpState;

/// The test SMTP server answers mail to `address` with a permanent 550.
fn reject_mail_to(smtp: &TestSmtp, address: &str) {
    smtp.state.reject.lock().unwrap().insert(address.into());
}

/// The test SMTP server answers mail to `address` with a passing 451.
fn defer_mail_to(smtp: &TestSmtp, address: &str) {
    smtp.state.defer.lock().unwrap().insert(address.into());
}

fn sent(n: usize) -> RoundSummary {
    RoundSummary {
        claimed: n,
        sent: n,
        ..RoundSummary::default()
    }
}

#[tokio::test]
async fn an_invite_is_emailed_with_its_links_and_no_other_phi() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        let dispatcher = app.dispatcher(smtp.addr, "w1");
        let id = app
            .patient("MRN-4711", json!({ "cell_phone": "617-555-0100" }))
            .await;
        assert_eq!(
            dispatcher.run_round().await.unwrap(),
            sent(1),
            "{:?}",
            app.engine
        );

        let mail = &smtp.received()[0];
        assert_eq!(mail.to, ["rosa@example.org"]);
        let invite = &app.invites(id).await[0];
        assert_eq!(invite["state"], "sent", "{invite}");
        let created: Timestamp = invite["created_at"].as_str().unwrap().parse().unwrap();
        let message_id = app
            .links()
            .message_id(invite["id"].as_i64().unwrap(), created);
        assert_eq!(mail.header("Message-ID"), Some(format!("<{message_id}>")));
        let unsubscribe = mail.header("List-Unsubscribe").unwrap();
        assert!(
            unsubscribe.contains("http://invites.test/unsubscribe/"),
            "{unsubscribe}"
        );
        assert!(
            mail.data.contains("Rosa"),
            "the first name greets the patient"
        );
        // What a mail client shows: the headers, and every part decoded
        // (quoted-printable or base64 would hide a name from a raw scan).
        let parsed = mail_parser::MessageParser::default()
            .parse(mail.data.as_bytes())
            .expect("a MIME message");
        let shown = [
            mail.data.clone(),
            parsed.subject().unwrap_or_default().to_string(),
            parsed.body_text(0).unwrap_or_default().into_owned(),
            parsed.body_html(0).unwrap_or_default().into_owned(),
        ]
        .join("\n");
        assert!(
            shown.contains("Rosa") && shown.contains("http://invites.test/a/"),
            "the decoded parts were read: {shown}"
        );
        for phi in [
            "Parks",
            "PARKS",
            "1990-07-04",
            "07/04/1990",
            "19900704",
            "10027",
            "MRN-4711",
            "4711",
            // The phone in every way it could be written. Not "617" alone:
            // three digits turn up by chance in a MIME boundary, a token
            // or the Message-ID (this test failed so about one run in a
            // hundred).
            "617-555",
            "617 555",
            "(617)",
            "6175550100",
            "555-0100",
            "5550100",
        ] {
            assert!(
                !shown.contains(phi),
                "{:?}: the email must not contain {phi:?} (R12)",
                app.engine
            );
        }
        assert!(
            app.timeline_kinds(id)
                .await
                .contains(&"invite_sent".to_string())
        );

        // The activation link in the email leads to a page for this patient.
        let link = mail
            .data
            .split_whitespace()
            .find_map(|w| w.find("http://invites.test/a/").map(|i| w[i..].to_string()))
            .expect("an activation link");
        let token: String = link
            .rsplit('/')
            .next()
            .unwrap()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        assert_eq!(token.len(), 22, "128 bits, base64url: {link}");
        let page = app.fetch(&format!("/a/{token}")).await;
        assert_eq!(page.status(), StatusCode::OK);
        // The activation landing (which names no patient: whoever holds the
        // link sees it).
        assert!(
            page.text()
                .await
                .unwrap()
                .contains("Set up your patient portal account")
        );
        let bad = app.fetch("/a/AAAAAAAAAAAAAAAAAAAAAA").await;
        assert_eq!(bad.status(), StatusCode::NOT_FOUND);
    })
    .await;
}

/// R5 across the spring-forward weekend, through the store and the
/// dispatcher (core's own tests cover the arithmetic): a chart added on
/// Friday evening 2026-03-06 (EST, UTC-5) in a Mon-Fri 08:00-17:00
/// practice is due Monday 2026-03-09 08:00 EDT, which is 12:00 UTC, an
/// hour earlier in UTC than the Monday before.
#[tokio::test]
async fn an_auto_invite_queued_over_a_dst_weekend_goes_at_local_opening_time() {
    on_each_engine(async |app| {
        let schedule = enroll_core::Schedule::office_hours("America/New_York");
        app.admin_call(
            reqwest::Method::PUT,
            &format!("/api/practices/{}/schedule", app.practice_id),
            Some(serde_json::to_value(&schedule).unwrap()),
        )
        .await;
        app.clock.set("2026-03-06T23:30:00Z".parse().unwrap()); // Friday 18:30 EST
        let smtp = TestSmtp::start().await;
        let dispatcher = app.dispatcher(smtp.addr, "w1");
        let id = app.patient("M-DST", json!({})).await;
        let invite = &app.invites(id).await[0];
        assert_eq!(invite["state"], "scheduled", "{invite}");
        assert_eq!(
            invite["due_at"], "2026-03-09T12:00:00Z",
            "{:?}: Monday 08:00 EDT",
            app.engine
        );
        app.clock.set("2026-03-09T11:59:59Z".parse().unwrap()); // Monday 07:59:59 EDT
        assert_eq!(dispatcher.run_round().await.unwrap().claimed, 0);
        assert!(smtp.received().is_empty());
        app.clock.set("2026-03-09T12:00:00Z".parse().unwrap());
        assert_eq!(
            dispatcher.run_round().await.unwrap(),
            sent(1),
            "{:?}",
            app.engine
        );
        assert_eq!(smtp.received().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn auto_invites_wait_for_the_schedule_window() {
    on_each_engine(async |app| {
        let schedule = json!({
            "time_zone": "America/New_York",
            "windows": [{ "weekday": "monday", "opens": "08:00", "closes": "17:00" }],
        });
        app.admin_call(
            reqwest::Method::PUT,
            &format!("/api/practices/{}/schedule", app.practice_id),
            Some(schedule),
        )
        .await;
        let smtp = TestSmtp::start().await;
        let dispatcher = app.dispatcher(smtp.addr, "w1");
        let id = app.patient("M1", json!({})).await;
        assert_eq!(
            dispatcher.run_round().await.unwrap().claimed,
            0,
            "Wednesday: wait for Monday"
        );

        app.clock.set("2026-11-30T12:59:59Z".parse().unwrap()); // Monday 07:59:59 EST
        assert_eq!(
            dispatcher.run_round().await.unwrap().claimed,
            0,
            "{:?}: not yet open",
            app.engine
        );
        app.clock.set("2026-11-30T13:00:00Z".parse().unwrap()); // Monday 08:00 EST
        assert_eq!(
            dispatcher.run_round().await.unwrap(),
            sent(1),
            "{:?}: sent when the window opens",
            app.engine
        );
        assert_eq!(smtp.received().len(), 1);
        let invite = &app.invites(id).await[0];
        assert_eq!(
            invite["counted_at"], "2026-11-30T13:00:00Z",
            "counted when it was sent: {invite}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_rules_are_checked_again_when_sending() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        let dispatcher = app.dispatcher(smtp.addr, "w1");
        let id = app.patient("M1", json!({})).await;
        // The email is removed before the dispatcher gets to the invite.
        let (status, _) = app
            .call(
                reqwest::Method::PUT,
                &format!("/api/patients/{id}"),
                Some(json!({ "first_name": "Rosa", "last_name": "Parks", "date_of_birth": "1990-07-04",
                             "birth_sex": "F", "zip": "10027", "email": null })),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let summary = dispatcher.run_round().await.unwrap();
        assert_eq!((summary.claimed, summary.sent), (1, 0), "{:?}", app.engine);
        assert!(smtp.received().is_empty());
        let invite = &app.invites(id).await[0];
        assert_eq!(invite["state"], "cancelled");
        assert!(invite["failure_reason"].as_str().unwrap().contains("email"), "{invite}");
    })
    .await;
}

#[tokio::test]
async fn smtp_down_then_back_delivers_every_invite_exactly_once() {
    on_each_engine(async |app| {
        let state = Arc::new(SmtpState::default());
        let mut smtp = TestSmtp::start_on("127.0.0.1:0".parse().unwrap(), state.clone()).await;
        let addr = smtp.addr;
        smtp.stop();
        let dispatcher = app.dispatcher(addr, "w1");
        let ids = [
            app.patient("M1", json!({})).await,
            app.patient("M2", json!({})).await,
        ];
        let summary = dispatcher.run_round().await.unwrap();
        assert_eq!(
            (summary.claimed, summary.retrying),
            (2, 2),
            "{:?}: SMTP is down",
            app.engine
        );
        let invite = &app.invites(ids[0]).await[0];
        assert_eq!(invite["state"], "queued");
        assert_eq!(invite["attempts"], 1);
        let (_, failed) = app.get("/api/deliveries/failed").await;
        assert_eq!(
            failed.as_array().unwrap().len(),
            2,
            "retrying invites are listed: {failed}"
        );
        assert!(failed[0]["next_retry_at"].is_string(), "{failed}");

        assert_eq!(
            dispatcher.run_round().await.unwrap().claimed,
            0,
            "not before the retry time"
        );
        let _smtp = TestSmtp::start_on(addr, state.clone()).await;
        app.clock.advance(SignedDuration::from_mins(2));
        assert_eq!(
            dispatcher.run_round().await.unwrap(),
            sent(2),
            "{:?}: back up",
            app.engine
        );
        app.clock.advance(SignedDuration::from_hours(2));
        assert_eq!(dispatcher.run_round().await.unwrap().claimed, 0);
        let received = state.received.lock().unwrap().clone();
        let message_ids: HashSet<_> = received
            .iter()
            .filter_map(|m| m.header("Message-ID"))
            .collect();
        assert_eq!(
            (received.len(), message_ids.len()),
            (2, 2),
            "{:?}: each invite arrived once",
            app.engine
        );
    })
    .await;
}

#[tokio::test]
async fn one_round_records_sent_failed_and_retried_invites_each_as_its_own() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        reject_mail_to(&smtp, "bad@example.org");
        defer_mail_to(&smtp, "later@example.org");
        let dispatcher = app.dispatcher(smtp.addr, "w1");
        let good = app.patient("M1", json!({})).await;
        let bad = app
            .patient("M2", json!({ "email": "bad@example.org" }))
            .await;
        let later = app
            .patient("M3", json!({ "email": "later@example.org" }))
            .await;

        let summary = dispatcher.run_round().await.unwrap();
        let expected = RoundSummary {
            claimed: 3,
            sent: 1,
            retrying: 1,
            failed: 1,
            skipped: 0,
        };
        assert_eq!(summary, expected, "{:?}", app.engine);
        let state = async |id| app.invites(id).await[0]["state"].clone();
        assert_eq!(state(good).await, "sent", "{:?}", app.engine);
        assert_eq!(state(bad).await, "failed");
        assert_eq!(state(later).await, "queued");
        assert!(
            app.timeline_kinds(good)
                .await
                .contains(&"invite_sent".into())
        );
        assert!(
            app.timeline_kinds(bad)
                .await
                .contains(&"invite_failed".into())
        );
        assert!(
            app.timeline_kinds(later)
                .await
                .contains(&"invite_retry_scheduled".into())
        );
        let (_, failed) = app.get("/api/deliveries/failed").await;
        let reasons: Vec<(i64, String, String)> = failed
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["patient_id"].as_i64().unwrap(),
                    r["state"].as_str().unwrap().to_string(),
                    r["reason"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(reasons.len(), 2, "{failed}");
        assert!(
            reasons
                .iter()
                .any(|(p, s, r)| *p == bad && s == "failed" && r.contains("550"))
        );
        assert!(
            reasons
                .iter()
                .any(|(p, s, r)| *p == later && s == "queued" && r.contains("451"))
        );

        // Not due again yet; after the back-off the deferred one goes.
        assert_eq!(dispatcher.run_round().await.unwrap().claimed, 0);
        smtp.state.defer.lock().unwrap().clear();
        app.clock.advance(SignedDuration::from_mins(1));
        assert_eq!(
            dispatcher.run_round().await.unwrap(),
            sent(1),
            "{:?}",
            app.engine
        );
        assert_eq!(state(later).await, "sent");
        assert_eq!(smtp.count(), 2);
    })
    .await;
}

#[tokio::test]
async fn an_invite_the_store_cannot_prepare_does_not_hold_up_its_batch() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        let dispatcher = app.dispatcher(smtp.addr, "w1");
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(app.patient(&format!("M{n}"), json!({})).await);
        }
        // A row the store cannot read: the batch fails as a whole, and is
        // then taken one invite at a time.
        let broken = ids[2];
        app.db
            .execute(&format!(
                "UPDATE patients SET response = 'garbled' WHERE id = {broken}"
            ))
            .await
            .unwrap();
        let summary = dispatcher.run_round().await.unwrap();
        assert_eq!(
            (summary.claimed, summary.sent, summary.skipped),
            (5, 4, 1),
            "{:?}: {summary:?}",
            app.engine
        );
        assert_eq!(smtp.count(), 4);
        for &id in &ids {
            let invite = &app.db.store.patient_invites(id).await.unwrap()[0];
            let expected = if id == broken {
                InviteState::Queued
            } else {
                InviteState::Sent
            };
            assert_eq!(invite.state, expected, "{:?}: patient {id}", app.engine);
        }
    })
    .await;
}

#[tokio::test]
async fn a_rejected_address_fails_for_staff_does_not_count_and_can_be_sent_again() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        reject_mail_to(&smtp, "rosa@example.org");
        let dispatcher = app.dispatcher(smtp.addr, "w1");
        let id = app.patient("M1", json!({})).await;
        let summary = dispatcher.run_round().await.unwrap();
        assert_eq!(
            (summary.claimed, summary.failed),
            (1, 1),
            "{:?}",
            app.engine
        );
        let (_, failed) = app.get("/api/deliveries/failed").await;
        let row = &failed[0];
        assert_eq!(row["patient_id"], id);
        assert_eq!(row["state"], "failed");
        assert_eq!(row["address"], "rosa@example.org");
        assert_eq!(row["attempts"], 1);
        assert!(row["reason"].as_str().unwrap().contains("550"), "{row}");
        let view = app.get(&format!("/api/patients/{id}")).await.1;
        assert_eq!(view["status"]["status"], "delivery_failed", "{view}");

        // Four more sends fit in the cap: the failure did not count (R7).
        smtp.state.reject.lock().unwrap().clear();
        let invite_id = row["invite_id"].as_i64().unwrap();
        let (status, answer) = app
            .post(
                "/api/deliveries/resend",
                json!({ "invite_ids": [invite_id] }),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer[0]["outcome"], "queued", "{answer}");
        let (_, again) = app
            .post(
                "/api/deliveries/resend",
                json!({ "invite_ids": [invite_id] }),
            )
            .await;
        assert_eq!(
            again[0]["new_invite_id"], answer[0]["new_invite_id"],
            "a repeated resend sends nothing more"
        );
        for _ in 0..3 {
            assert_eq!(
                app.enroll(id).await.0,
                StatusCode::CREATED,
                "{:?}",
                app.engine
            );
        }
        assert_eq!(app.enroll(id).await.0, StatusCode::TOO_MANY_REQUESTS);
        let summary = dispatcher.run_round().await.unwrap();
        assert_eq!(summary.sent, 4, "{:?}: {summary:?}", app.engine);
    })
    .await;
}

#[tokio::test]
async fn an_interrupted_attempt_is_sent_again_once_with_the_same_message_id() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        let id = app.patient("M1", json!({})).await;
        // A dispatcher hands the invite to the SMTP server... and its
        // process dies before recording the outcome.
        let first = app.dispatcher(smtp.addr, "crashed");
        let crashing = first.clone().with_email(Arc::new(DiesAfterSending {
            inner: first.email(),
        }));
        let round = tokio::spawn(async move { crashing.run_round().await });
        tokio::time::timeout(Duration::from_secs(10), async {
            while smtp.count() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the first copy reaches the server");
        round.abort();
        let _ = round.await;

        let dispatcher = app.dispatcher(smtp.addr, "w2");
        assert_eq!(
            dispatcher.run_round().await.unwrap().claimed,
            0,
            "the lease still holds"
        );
        let policy = DeliveryPolicy::default();
        app.clock
            .advance(policy.lease + SignedDuration::from_secs(1));
        assert_eq!(
            dispatcher.run_round().await.unwrap(),
            sent(1),
            "{:?}",
            app.engine
        );
        app.clock.advance(SignedDuration::from_hours(1));
        assert_eq!(
            dispatcher.run_round().await.unwrap().claimed,
            0,
            "sent once more, not again"
        );

        // Two copies arrived, one Message-ID: a mail client shows one.
        let mails = smtp.received();
        assert_eq!(mails.len(), 2, "{:?}", app.engine);
        let invite = &app.invites(id).await[0];
        let created: Timestamp = invite["created_at"].as_str().unwrap().parse().unwrap();
        let expected = app
            .links()
            .message_id(invite["id"].as_i64().unwrap(), created);
        for mail in &mails {
            assert_eq!(mail.header("Message-ID"), Some(format!("<{expected}>")));
            assert_eq!(mail.to, ["rosa@example.org"]);
        }
        assert_eq!(mails[0].header("Subject"), mails[1].header("Subject"));
        let kinds = app.timeline_kinds(id).await;
        assert!(
            kinds.contains(&"invite_resent_after_interruption".to_string()),
            "{:?}: {kinds:?}",
            app.engine
        );
        assert_eq!(invite["attempts"], 2);
    })
    .await;
}

#[tokio::test]
async fn an_invite_whose_lease_ran_out_before_its_send_is_sent_once_by_whoever_took_it_over() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        app.patient("L1", json!({"email": "first@example.org"}))
            .await;
        app.patient("L2", json!({"email": "second@example.org"}))
            .await;
        // w1 claims and prepares both invites and sends one at a time. Its
        // first send hangs past the lease; meanwhile w2 claims both (their
        // leases ran out) and sends them. w1's second invite, prepared
        // before all this, must not go out again.
        let first = app.dispatcher(smtp.addr, "w1").with_concurrency(1);
        let hangs = Arc::new(LeaseRunsOutDuringSend {
            clock: app.clock.clone(),
            lease: DeliveryPolicy::default().lease,
            other: app.dispatcher(smtp.addr, "w2"),
            taken_over: std::sync::Mutex::new(None),
        });
        let summary = first.with_email(hangs.clone()).run_round().await.unwrap();
        let took_over = hangs.taken_over.lock().unwrap().clone();
        assert_eq!(took_over, Some(sent(2)), "{:?}", app.engine);
        assert_eq!(
            (summary.claimed, summary.sent),
            (2, 0),
            "{:?}: {summary:?}",
            app.engine
        );
        let mut to: Vec<String> = smtp.received().into_iter().flat_map(|m| m.to).collect();
        to.sort();
        assert_eq!(
            to,
            ["first@example.org", "second@example.org"],
            "{:?}: each invite exactly once",
            app.engine
        );
    })
    .await;
}

/// The first email: the lease runs out while it is in hand (the clock
/// moves past it), another dispatcher runs a round, and this send fails
/// (the connection dropped). Later emails are not expected.
struct LeaseRunsOutDuringSend {
    clock: Arc<enroll_server::TestClock>,
    lease: SignedDuration,
    other: enroll_server::Dispatcher,
    taken_over: std::sync::Mutex<Option<RoundSummary>>,
}

#[async_trait::async_trait]
impl enroll_notify::EmailSender for LeaseRunsOutDuringSend {
    async fn send_email(
        &self,
        email: &enroll_notify::OutgoingEmail,
    ) -> Result<(), enroll_notify::DeliveryError> {
        if self.taken_over.lock().unwrap().is_some() {
            // Only a dispatcher that ignores the lost claim gets here.
            return self.other.email().send_email(email).await;
        }
        self.clock
            .advance(self.lease + SignedDuration::from_secs(1));
        let summary = self.other.run_round().await.unwrap();
        *self.taken_over.lock().unwrap() = Some(summary);
        Err(enroll_notify::DeliveryError::Transient(
            "the connection dropped".into(),
        ))
    }
}

/// Sends the email, then never answers: a process that dies between the
/// SMTP server's 250 and recording it.
struct DiesAfterSending {
    inner: Arc<dyn enroll_notify::EmailSender>,
}

#[async_trait::async_trait]
impl enroll_notify::EmailSender for DiesAfterSending {
    async fn send_email(
        &self,
        email: &enroll_notify::OutgoingEmail,
    ) -> Result<(), enroll_notify::DeliveryError> {
        self.inner.send_email(email).await?;
        std::future::pending().await
    }
}

/// Hands each email on, first noting how many invites are claimed and not
/// yet recorded at that moment.
struct ClaimProbe {
    inner: Arc<dyn enroll_notify::EmailSender>,
    store: enroll_store::Store,
    most_claimed: std::sync::atomic::AtomicI64,
}

#[async_trait::async_trait]
impl enroll_notify::EmailSender for ClaimProbe {
    async fn send_email(
        &self,
        email: &enroll_notify::OutgoingEmail,
    ) -> Result<(), enroll_notify::DeliveryError> {
        let claimed = enroll_store::testing::scalar(
            &self.store,
            "SELECT COUNT(*) FROM invites WHERE claimed_by IS NOT NULL \
             AND state IN ('scheduled', 'queued')",
        )
        .await
        .expect("count claimed invites");
        self.most_claimed
            .fetch_max(claimed, std::sync::atomic::Ordering::Relaxed);
        self.inner.send_email(email).await
    }
}

#[tokio::test]
async fn a_round_claims_invites_as_the_sends_need_them() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        create_patients(app, 600).await;
        let dispatcher = app.dispatcher(smtp.addr, "w1");
        let probe = Arc::new(ClaimProbe {
            inner: dispatcher.email(),
            store: app.db.store.clone(),
            most_claimed: 0.into(),
        });
        let dispatcher = dispatcher.with_email(probe.clone()).with_batch(1000);
        // One round takes every due invite...
        assert_eq!(
            dispatcher.run_round().await.unwrap(),
            sent(600),
            "{:?}",
            app.engine
        );
        assert_eq!(smtp.count(), 600);
        // ...but claims them a chunk at a time, a few chunks ahead of the
        // sends, not all 600 at once: at most the chunks being prepared or
        // waiting (100 on SQLite, 250 on PostgreSQL), the sends in flight
        // (8) and the outcomes not yet recorded.
        let most = probe
            .most_claimed
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            (1..=450).contains(&most),
            "{:?}: {most} invites were claimed at once",
            app.engine
        );
        assert_eq!(
            dispatcher.run_round().await.unwrap(),
            RoundSummary::default()
        );
    })
    .await;
}

/// Hands each email on after `delay`.
struct SlowSender {
    inner: Arc<dyn enroll_notify::EmailSender>,
    delay: Duration,
}

#[async_trait::async_trait]
impl enroll_notify::EmailSender for SlowSender {
    async fn send_email(
        &self,
        email: &enroll_notify::OutgoingEmail,
    ) -> Result<(), enroll_notify::DeliveryError> {
        tokio::time::sleep(self.delay).await;
        self.inner.send_email(email).await
    }
}

async fn create_patients(app: &TestApp, count: usize) {
    let source = Source::new("test", None);
    let now = app.clock.now();
    for n in 0..count {
        let d = enroll_core::Demographics {
            first_name: Some(format!("Pat{n}")),
            last_name: Some("Many".into()),
            date_of_birth: Some("1970-01-01".into()),
            birth_sex: Some("M".into()),
            zip: Some("02134".into()),
            email: Some(format!("pat{n}@example.org")),
            cell_phone: None,
        };
        app.db
            .store
            .create_patient(app.practice_id, &format!("R{n}"), &d, &source, now)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_stopped_dispatcher_sends_what_it_claimed_and_claims_no_more() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        // More than a stop leaves claimed on either engine (100 or 250 invites
        // claimed ahead of the sends, 8 in flight).
        create_patients(app, 800).await;
        let dispatcher = app.dispatcher(smtp.addr, "w1");
        let slow = Arc::new(SlowSender {
            inner: dispatcher.email(),
            delay: Duration::from_millis(20),
        });
        let dispatcher = dispatcher.with_email(slow).with_batch(1000);
        let running = dispatcher.spawn(Duration::from_millis(50));
        tokio::time::timeout(Duration::from_secs(10), async {
            while smtp.count() == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the first email within 10 s");
        running.stop().await;

        // At 8 sends of 20 ms at a time, the round was far from done.
        let sent = smtp.count();
        assert!(sent < 800, "{:?}: {sent} sent", app.engine);
        let sent_invites = enroll_store::testing::scalar(
            &app.db.store,
            "SELECT COUNT(*) FROM invites WHERE state = 'sent' AND claimed_by IS NULL",
        )
        .await
        .unwrap();
        let waiting_unclaimed = enroll_store::testing::scalar(
            &app.db.store,
            "SELECT COUNT(*) FROM invites WHERE state = 'queued' AND claimed_by IS NULL",
        )
        .await
        .unwrap();
        // Everything claimed went out and was recorded; the rest waits,
        // unclaimed, for the next start.
        assert_eq!(
            sent_invites,
            i64::try_from(sent).unwrap(),
            "{:?}",
            app.engine
        );
        assert_eq!(sent_invites + waiting_unclaimed, 800, "{:?}", app.engine);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_dispatchers_on_one_database_send_each_of_1000_invites_once() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        create_patients(app, 1000).await;
        let race = |worker: &'static str| {
            let dispatcher = app.dispatcher(smtp.addr, worker).with_batch(50);
            async move {
                let mut sent = 0;
                loop {
                    let summary = dispatcher.run_round().await.unwrap();
                    if summary.claimed == 0 {
                        return sent;
                    }
                    sent += summary.sent;
                }
            }
        };
        let (a, b) = tokio::join!(race("a"), race("b"));
        let received = smtp.received();
        let ids: HashSet<_> = received
            .iter()
            .filter_map(|m| m.header("Message-ID"))
            .collect();
        assert_eq!(a + b, 1000, "{:?}: a sent {a}, b sent {b}", app.engine);
        assert_eq!(
            (received.len(), ids.len()),
            (1000, 1000),
            "{:?}: each invite once",
            app.engine
        );
    })
    .await;
}

#[tokio::test]
async fn the_unsubscribe_link_records_the_email_opt_out() {
    on_each_engine(async |app| {
        let smtp = TestSmtp::start().await;
        let id = app.patient("M1", json!({})).await;
        app.dispatcher(smtp.addr, "w1").run_round().await.unwrap();
        let url = smtp.received()[0].header("List-Unsubscribe").unwrap();
        let path = url
            .trim_matches(['<', '>'])
            .replace("http://invites.test", "");

        let form = app.fetch(&path).await;
        assert_eq!(form.status(), StatusCode::OK);
        assert!(form.text().await.unwrap().contains("<form method=\"post\""));
        let view = app.get(&format!("/api/patients/{id}")).await.1;
        assert_eq!(
            view["patient"]["email_opted_out"], false,
            "opening the link alone changes nothing"
        );

        let done = app.http.post(app.url(&path)).send().await.unwrap();
        assert_eq!(done.status(), StatusCode::OK, "{:?}", app.engine);
        let view = app.get(&format!("/api/patients/{id}")).await.1;
        assert_eq!(view["patient"]["email_opted_out"], true);
        assert!(
            app.timeline_kinds(id)
                .await
                .contains(&"email_opted_out".to_string())
        );

        let forged = path
            .rsplit_once('/')
            .map(|(head, _)| format!("{head}/00112233445566778899aabbccddeeff"))
            .unwrap();
        let refused = app.http.post(app.url(&forged)).send().await.unwrap();
        assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn stop_and_start_texts_change_sms_consent_at_once() {
    on_each_engine(async |app| {
        let id = app
            .patient("M1", json!({ "cell_phone": "(617) 555-0100" }))
            .await;
        let text = |secret: &str, body: &str| {
            app.http
                .post(app.url(&format!("/webhooks/sms/{secret}")))
                .form(&[
                    ("From", "+16175550100"),
                    ("To", "+16175550000"),
                    ("Body", body),
                ])
                .send()
        };
        let answer = text(SMS_WEBHOOK_SECRET, " Stop ").await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK);
        assert!(answer.text().await.unwrap().contains("<Response>"));
        let view = app.get(&format!("/api/patients/{id}")).await.1;
        assert_eq!(view["patient"]["sms_opted_out"], true, "{:?}", app.engine);

        text(SMS_WEBHOOK_SECRET, "hello?").await.unwrap();
        assert_eq!(
            app.get(&format!("/api/patients/{id}")).await.1["patient"]["sms_opted_out"],
            true
        );
        text(SMS_WEBHOOK_SECRET, "START").await.unwrap();
        assert_eq!(
            app.get(&format!("/api/patients/{id}")).await.1["patient"]["sms_opted_out"],
            false
        );

        let forged = text("guess", "STOP").await.unwrap();
        assert_eq!(forged.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            app.get(&format!("/api/patients/{id}")).await.1["patient"]["sms_opted_out"],
            false
        );
    })
    .await;
}

/// Python's aiosmtpd, a third-party SMTP server, receives the invite into a
/// maildir. `scripts/test` installs it and sets ENROLL_REQUIRE_AIOSMTPD=1.
#[tokio::test]
async fn a_third_party_smtp_server_receives_the_invite() {
    let available = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        assert_ne!(
            std::env::var("ENROLL_REQUIRE_AIOSMTPD").as_deref(),
            Ok("1"),
            "aiosmtpd is required: pip install aiosmtpd"
        );
        eprintln!("skipping: python3 -m aiosmtpd is not installed");
        return;
    }
    let Some(app) = TestApp::start(enroll_store::testing::Engine::Sqlite).await else {
        return;
    };
    let maildir = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut server = tokio::process::Command::new("python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        // aiosmtpd creates the maildir itself and refuses an empty folder.
        .arg(maildir.path().join("maildir"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.patient("M1", json!({})).await;
    assert_eq!(
        app.dispatcher(addr, "w1").run_round().await.unwrap(),
        sent(1)
    );
    let new = maildir.path().join("maildir").join("new");
    let files: Vec<_> = std::fs::read_dir(&new).unwrap().collect();
    assert_eq!(files.len(), 1, "one message in the maildir");
    let message = std::fs::read_to_string(files[0].as_ref().unwrap().path()).unwrap();
    assert!(message.contains("To: rosa@example.org"), "{message}");
    assert!(message.contains("Message-ID: <invite-"), "{message}");
    server.kill().await.unwrap();
    app.stop().await;
}
