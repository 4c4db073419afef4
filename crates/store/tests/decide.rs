//! The dispatcher's decision for one claimed invite (outbox/decide.rs),
//! called directly on both engines through `claim_due_invites` and
//! `prepare_deliveries`: the channels a practice allows, and a scheduled
//! auto invite counted when it goes or moved to the next opening. Also the
//! store's answer to two creates of one MRN racing (the unique index).

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;

use enroll_core::{Demographics, IntakeEvent, PatientChange, Schedule};
use enroll_store::testing::{Engine, TestDb, on_each_engine, scalar};
use enroll_store::{
    Channels, DeliveryPolicy, IntakeOutcome, InviteState, Prepared, Source, StoreError,
};
use jiff::Timestamp;

/// Wednesday 2026-11-25 15:00 in New York.
fn wednesday() -> Timestamp {
    "2026-11-25T20:00:00Z".parse().unwrap()
}

/// Saturday 2026-11-28 15:00 in New York: office hours are closed.
fn saturday() -> Timestamp {
    "2026-11-28T20:00:00Z".parse().unwrap()
}

fn api() -> Source {
    Source::new("api", Some("tester"))
}

fn chart(first: &str, cell_phone: Option<&str>) -> Demographics {
    Demographics {
        first_name: Some(first.into()),
        last_name: Some("Okafor".into()),
        date_of_birth: Some("1971-03-09".into()),
        birth_sex: Some("M".into()),
        zip: Some("60616".into()),
        email: Some(format!("{}@example.org", first.to_lowercase())),
        cell_phone: cell_phone.map(str::to_string),
    }
}

/// Creates the chart (its chart-added auto invite is queued at once: the
/// practice is always open) and returns its id and that invite's id.
async fn chart_with_invite(
    db: &TestDb,
    practice_id: i64,
    mrn: &str,
    demographics: &Demographics,
    now: Timestamp,
) -> (i64, i64) {
    let saved = db
        .store
        .create_patient(practice_id, mrn, demographics, &api(), now)
        .await
        .unwrap();
    let invites = db.store.patient_invites(saved.patient.id).await.unwrap();
    assert_eq!(invites.len(), 1, "{invites:?}");
    (saved.patient.id, invites[0].id)
}

/// Claims every due invite as one dispatcher would and prepares them.
async fn prepare_all(
    db: &TestDb,
    policy: &DeliveryPolicy,
    now: Timestamp,
) -> HashMap<i64, Prepared> {
    let ids = db
        .store
        .claim_due_invites("w1", now, policy.lease, 50)
        .await
        .unwrap();
    db.store
        .prepare_deliveries(&ids, "w1", policy, now)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

async fn invite(db: &TestDb, patient_id: i64, invite_id: i64) -> enroll_store::Invite {
    db.store
        .patient_invites(patient_id)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == invite_id)
        .unwrap()
}

/// R8 with the practice's channels: a practice that texts only texts a
/// chart with a cell phone (no email), and cancels, with the reason in
/// words, the invite of a chart with no cell phone or one opted out of
/// texts (waiting would not change that). A practice that also emails
/// sends a chart without a cell phone its email, and one that only
/// emails does not text a chart that has a cell phone.
#[tokio::test]
async fn a_text_only_practice_texts_a_cell_phone_and_cancels_a_chart_it_cannot_text() {
    on_each_engine(async |engine, db| {
        let now = wednesday();
        let texts = db.always_open_practice("TXT", now).await;
        let both = db.always_open_practice("BTH", now).await;
        let no_cell = chart_with_invite(db, texts.id, "T-1", &chart("Nia", None), now).await;
        let opted_out_phone = "+13125550101";
        let opted_out = chart_with_invite(
            db,
            texts.id,
            "T-2",
            &chart("Ola", Some(opted_out_phone)),
            now,
        )
        .await;
        let (_, textable) = chart_with_invite(
            db,
            texts.id,
            "T-3",
            &chart("Pia", Some("+13125550102")),
            now,
        )
        .await;
        let (_, emailed) = chart_with_invite(db, both.id, "B-1", &chart("Ria", None), now).await;
        let emails = db.always_open_practice("EML", now).await;
        let (_, not_texted) = chart_with_invite(
            db,
            emails.id,
            "E-1",
            &chart("Sia", Some("+13125550103")),
            now,
        )
        .await;
        let email_only = Channels {
            email: true,
            sms: false,
        };
        db.store.set_channels(emails.id, email_only).await.unwrap();
        db.store
            .set_sms_opt_out_by_phone(opted_out_phone, true, now)
            .await
            .unwrap();
        // Switched to texts only after the invites were queued.
        let text_only = Channels {
            email: false,
            sms: true,
        };
        db.store.set_channels(texts.id, text_only).await.unwrap();

        let policy = DeliveryPolicy {
            sms_enabled: true,
            ..DeliveryPolicy::default()
        };
        let prepared = prepare_all(db, &policy, now).await;
        assert_eq!(prepared.len(), 5, "{engine:?}: {prepared:?}");

        let Some(Prepared::Send(job)) = prepared.get(&textable) else {
            panic!("{engine:?}: the chart with a cell phone is texted: {prepared:?}");
        };
        assert_eq!(job.email, None, "{engine:?}: the practice does not email");
        assert_eq!(
            job.cell_phone.as_deref(),
            Some("+13125550102"),
            "{engine:?}"
        );

        let Some(Prepared::Send(job)) = prepared.get(&emailed) else {
            panic!("{engine:?}: the emailing practice sends: {prepared:?}");
        };
        assert_eq!(job.email.as_deref(), Some("ria@example.org"), "{engine:?}");
        assert_eq!(job.cell_phone, None, "{engine:?}");

        let Some(Prepared::Send(job)) = prepared.get(&not_texted) else {
            panic!("{engine:?}: the email-only practice emails: {prepared:?}");
        };
        assert_eq!(job.email.as_deref(), Some("sia@example.org"), "{engine:?}");
        assert_eq!(
            job.cell_phone, None,
            "{engine:?}: texts are off for this practice"
        );

        for (patient_id, id) in [no_cell, opted_out] {
            assert!(
                matches!(prepared.get(&id), Some(Prepared::Skipped { .. })),
                "{engine:?}: {prepared:?}"
            );
            let cancelled = invite(db, patient_id, id).await;
            assert_eq!(cancelled.state, InviteState::Cancelled, "{engine:?}");
            let reason = cancelled.failure_reason.unwrap_or_default();
            assert!(
                reason.contains("text message only"),
                "{engine:?}: the reason in words: {reason}"
            );
        }
    })
    .await;
}

/// R5 and R7 at send time for an auto invite that waited for the schedule:
/// when the office is open it is counted toward the cap from that moment
/// and goes; when the office is closed it is moved to the next opening and
/// released for whichever dispatcher is running then.
#[tokio::test]
async fn a_scheduled_invite_is_counted_when_it_goes_and_moved_to_the_opening_when_closed() {
    on_each_engine(async |engine, db| {
        let created = wednesday();
        let practice = db.always_open_practice("SCH", created).await;
        let (open_patient, goes) =
            chart_with_invite(db, practice.id, "S-1", &chart("Uma", None), created).await;
        let (closed_patient, waits) =
            chart_with_invite(db, practice.id, "S-2", &chart("Vic", None), created).await;
        // Both waited for the schedule: scheduled, not yet counted.
        db.execute("UPDATE invites SET state = 'scheduled', counted_at = NULL")
            .await
            .unwrap();

        // Only the first is due on Wednesday.
        db.execute(&format!(
            "UPDATE invites SET due_at = due_at + 86400000 WHERE id = {waits}"
        ))
        .await
        .unwrap();
        let policy = DeliveryPolicy::default();
        let prepared = prepare_all(db, &policy, created).await;
        assert!(
            matches!(prepared.get(&goes), Some(Prepared::Send(_))),
            "{engine:?}: {prepared:?}"
        );
        let sent = invite(db, open_patient, goes).await;
        assert_eq!(sent.state, InviteState::Queued, "{engine:?}: counted now");
        assert_eq!(sent.counted_at, Some(created), "{engine:?}");

        // The second is due on Saturday, with the office on its weekday hours.
        let hours = Schedule::office_hours("America/New_York")
            .validate()
            .unwrap();
        db.store.set_schedule(practice.id, &hours).await.unwrap();
        db.execute(&format!(
            "UPDATE invites SET due_at = due_at - 86400000 WHERE id = {waits}"
        ))
        .await
        .unwrap();
        let prepared = prepare_all(db, &policy, saturday()).await;
        assert!(
            matches!(prepared.get(&waits), Some(Prepared::Skipped { .. })),
            "{engine:?}: {prepared:?}"
        );
        let moved = invite(db, closed_patient, waits).await;
        let monday_opening: Timestamp = "2026-11-30T13:00:00Z".parse().unwrap();
        assert_eq!(moved.state, InviteState::Scheduled, "{engine:?}");
        assert_eq!(
            moved.due_at, monday_opening,
            "{engine:?}: Monday 08:00 in New York"
        );
        assert_eq!(
            moved.counted_at, None,
            "{engine:?}: not counted while it waits"
        );
        let claimed = scalar(
            &db.store,
            &format!("SELECT COUNT(*) FROM invites WHERE id = {waits} AND claimed_by IS NOT NULL"),
        )
        .await
        .unwrap();
        assert_eq!(claimed, 0, "{engine:?}: released from the claim");
    })
    .await;
}

/// Two requests creating one MRN at once: one chart, and the other is told
/// the MRN is taken, on PostgreSQL by the unique index (both looked and
/// found nothing) rather than a database error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_of_one_mrn_make_one_chart_and_say_the_mrn_is_taken() {
    on_each_engine(async |engine, db| {
        let now = wednesday();
        let practice = db.always_open_practice("DUP", now).await;
        let store = Arc::new(db.store.clone());
        let tasks: Vec<_> = (0..12)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .create_patient(practice.id, "D-1", &chart("Wes", None), &api(), now)
                        .await
                })
            })
            .collect();
        let (mut created, mut taken) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => created += 1,
                Err(StoreError::DuplicateMrn) => taken += 1,
                Err(other) => panic!("{engine:?}: a duplicate MRN is not {other:?}"),
            }
        }
        assert_eq!((created, taken), (1, 11), "{engine:?}");
    })
    .await;
}

/// Only the unique index's refusal means "this MRN is taken": another
/// refusal of the insert (here PostgreSQL's of a NUL byte in the first
/// name, which no text column can hold) is passed on as the error it is, so the caller does not
/// tell staff to look for a chart that does not exist.
#[tokio::test]
async fn an_insert_refused_for_another_reason_is_not_called_a_duplicate_mrn() {
    on_each_engine(async |engine, db| {
        let now = wednesday();
        let practice = db.always_open_practice("NUL", now).await;
        let result = db
            .store
            .create_patient(practice.id, "N-1", &chart("X\u{0}an", None), &api(), now)
            .await;
        match engine {
            Engine::Postgres => assert!(
                matches!(result, Err(StoreError::Database(_))),
                "{engine:?}: {result:?}"
            ),
            // SQLite keeps a NUL inside a text value.
            Engine::Sqlite => assert!(result.is_ok(), "{engine:?}: {result:?}"),
        }
    })
    .await;
}

/// Registrations that update a known chart (what an HL7 A04 means), sent
/// at once for one new MRN: each is applied, one adds the chart and the
/// others update it. On PostgreSQL all but one lose the race to add it and
/// are tried again, as an HL7 message is, instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_registrations_of_one_new_mrn_add_one_chart_and_update_it() {
    on_each_engine(async |engine, db| {
        let now = wednesday();
        let practice = db.always_open_practice("REG", now).await;
        let store = Arc::new(db.store.clone());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let change = PatientChange::replacing("R-1", &chart("Yara", None));
                    let event = IntakeEvent::register(change);
                    store.apply_intake(practice.id, &event, &api(), now).await
                })
            })
            .collect();
        let mut created = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(IntakeOutcome::Applied(saved)) => created += usize::from(saved.created),
                other => panic!("{engine:?}: every registration is applied: {other:?}"),
            }
        }
        assert_eq!(created, 1, "{engine:?}");
        let charts = scalar(&db.store, "SELECT COUNT(*) FROM patients WHERE mrn = 'R-1'").await;
        assert_eq!(charts.unwrap(), 1, "{engine:?}");
    })
    .await;
}
