//! One delivery attempt as the store records it (outbox/attempts.rs and
//! claim.rs), and what the enrollment transactions write beside their
//! invites (enrollment.rs), called directly on both engines: the
//! activation link of an attempt, an attempt cut off and resumed, a claim
//! renewed only by its holder, a trigger held by the cap with its date, and
//! the timeline line of an invite that Enroll Now superseded.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enroll_core::{ActivationRules, CAP_WINDOW, Demographics, Schedule, Trigger};
use enroll_store::testing::{TestDb, on_each_engine, scalar};
use enroll_store::{
    DeliveryJob, DeliveryPolicy, EnrollOutcome, InviteState, Prepared, Source, StoreError,
    TriggerOutcome,
};
use jiff::{SignedDuration, Timestamp};

/// Wednesday 2026-11-25 15:00 in New York.
fn wednesday() -> Timestamp {
    "2026-11-25T20:00:00Z".parse().unwrap()
}

fn api() -> Source {
    Source::new("api", Some("tester"))
}

fn complete(first: &str) -> Demographics {
    Demographics {
        first_name: Some(first.into()),
        last_name: Some("Lindqvist".into()),
        date_of_birth: Some("1985-11-02".into()),
        birth_sex: Some("F".into()),
        zip: Some("02139".into()),
        email: Some(format!("{}@example.org", first.to_lowercase())),
        cell_phone: None,
    }
}

/// A new database's first chart, in an always-open practice: its
/// chart-added invite is queued at once. Returns the patient's id.
async fn first_chart(db: &TestDb, now: Timestamp) -> i64 {
    let practice = db.always_open_practice("ATT", now).await;
    db.store
        .create_patient(practice.id, "A-1", &complete("Mae"), &api(), now)
        .await
        .unwrap()
        .patient
        .id
}

/// Claims what is due for `worker` and prepares it; the one job expected.
async fn prepare_one(db: &TestDb, worker: &str, now: Timestamp) -> DeliveryJob {
    let policy = DeliveryPolicy::default();
    let ids = db
        .store
        .claim_due_invites(worker, now, policy.lease, 10)
        .await
        .unwrap();
    let prepared = db
        .store
        .prepare_deliveries(&ids, worker, &policy, now)
        .await
        .unwrap();
    match prepared.as_slice() {
        [(_, Prepared::Send(job))] => job.clone(),
        other => panic!("one send expected: {other:?}"),
    }
}

/// R10: the link an attempt sends opens that patient's activation.
#[tokio::test]
async fn the_link_of_an_attempt_opens_the_patients_activation() {
    on_each_engine(async |engine, db| {
        let now = wednesday();
        let patient_id = first_chart(db, now).await;
        let job = prepare_one(db, "w1", now).await;
        let link = db
            .store
            .activation_token(&job.activation_token, &ActivationRules::default(), now)
            .await
            .unwrap();
        let link = link.unwrap_or_else(|| panic!("{engine:?}: the link is stored"));
        assert_eq!(link.patient_id, patient_id, "{engine:?}");
        assert_eq!(link.invite_id, job.invite_id, "{engine:?}");
    })
    .await;
}

/// At most once again with the same Message-ID: an attempt cut off before
/// its outcome was recorded (the process died) is marked interrupted when
/// the invite is claimed again after the lease, and the next attempt says
/// so (the mailer then reuses the Message-ID) and puts it on the timeline.
#[tokio::test]
async fn an_attempt_cut_off_is_resumed_as_the_next_attempt_and_said_so() {
    on_each_engine(async |engine, db| {
        let now = wednesday();
        let patient_id = first_chart(db, now).await;
        let first = prepare_one(db, "w1", now).await;
        assert_eq!(first.attempt, 1, "{engine:?}");
        assert!(!first.resumed_after_interruption, "{engine:?}: {first:?}");

        let later = now + DeliveryPolicy::default().lease + SignedDuration::from_secs(1);
        let second = prepare_one(db, "w2", later).await;
        assert_eq!(second.invite_id, first.invite_id, "{engine:?}");
        assert_eq!(second.attempt, 2, "{engine:?}");
        assert!(second.resumed_after_interruption, "{engine:?}: {second:?}");
        assert_eq!(
            second.activation_token, first.activation_token,
            "{engine:?}: one link per delivery"
        );
        let interrupted = scalar(
            &db.store,
            &format!(
                "SELECT COUNT(*) FROM deliveries WHERE invite_id = {} AND state = 'interrupted'",
                first.invite_id
            ),
        )
        .await
        .unwrap();
        assert_eq!(interrupted, 1, "{engine:?}");
        let timeline = db.store.patient_timeline(patient_id).await.unwrap();
        assert!(
            timeline
                .iter()
                .any(|line| line.kind == "invite_resent_after_interruption"),
            "{engine:?}: {timeline:?}"
        );
    })
    .await;
}

/// A dispatcher extends its lease only while the claim is still its own,
/// for the attempt it is making: another worker, or a stale attempt, is
/// told no (sending then would send twice).
#[tokio::test]
async fn a_claim_is_renewed_only_by_its_holder_for_its_attempt() {
    on_each_engine(async |engine, db| {
        let now = wednesday();
        first_chart(db, now).await;
        let job = prepare_one(db, "w1", now).await;
        let lease = DeliveryPolicy::default().lease;
        let later = now + SignedDuration::from_mins(3);
        let store = &db.store;
        let renew = async |worker: &str, attempt: i64| {
            store
                .renew_claim(job.invite_id, worker, attempt, later, lease)
                .await
                .unwrap()
        };
        assert!(!renew("w2", 1).await, "{engine:?}: not w2's claim");
        assert!(!renew("w1", 2).await, "{engine:?}: not the attempt w1 made");
        assert!(renew("w1", 1).await, "{engine:?}: the holder renews");
        let until = scalar(
            store,
            &format!(
                "SELECT claimed_until FROM invites WHERE id = {}",
                job.invite_id
            ),
        )
        .await
        .unwrap();
        assert_eq!(until, (later + lease).as_millisecond(), "{engine:?}");
    })
    .await;
}

/// R7 for a trigger: a patient with four sends in 30 days gets a
/// suppressed invite that says when a send becomes possible again.
#[tokio::test]
async fn a_trigger_held_by_the_cap_records_when_a_send_becomes_possible() {
    on_each_engine(async |engine, db| {
        let now = wednesday();
        let patient_id = first_chart(db, now).await;
        for n in 0..3 {
            let key = format!("click-{n}");
            let outcome = db
                .store
                .enroll_now(patient_id, Some(&key), &api(), now)
                .await
                .unwrap();
            assert!(
                matches!(outcome, EnrollOutcome::Queued { .. }),
                "{outcome:?}"
            );
        }
        // The chart-added invite went out, so no auto invite is waiting for
        // the trigger to join (R6).
        db.execute(&format!(
            "UPDATE invites SET state = 'sent', sent_at = counted_at \
             WHERE patient_id = {patient_id} AND kind = 'auto'"
        ))
        .await
        .unwrap();
        let later = now + SignedDuration::from_hours(1);
        let outcome: TriggerOutcome = db
            .store
            .record_trigger(patient_id, Trigger::NewEncounter, &api(), later)
            .await
            .unwrap();
        let held = outcome
            .invite_id
            .unwrap_or_else(|| panic!("{engine:?}: a suppressed invite is kept: {outcome:?}"));
        let invites = db.store.patient_invites(patient_id).await.unwrap();
        let held = invites.iter().find(|i| i.id == held).unwrap();
        assert_eq!(held.state, InviteState::Suppressed, "{engine:?}");
        assert_eq!(
            held.next_possible_at,
            Some(now + CAP_WINDOW),
            "{engine:?}: 30 days after the four sends"
        );
    })
    .await;
}

/// Enroll Now supersedes an auto invite waiting for office hours, and the
/// chart's timeline says which invite was cancelled and why.
#[tokio::test]
async fn enroll_now_cancels_the_waiting_auto_invite_and_says_so_on_the_timeline() {
    on_each_engine(async |engine, db| {
        // Saturday: the weekday office hours are closed, so the chart-added
        // invite waits for Monday.
        let saturday: Timestamp = "2026-11-28T20:00:00Z".parse().unwrap();
        let practice = db.always_open_practice("SUP", saturday).await;
        let hours = Schedule::office_hours("America/New_York")
            .validate()
            .unwrap();
        db.store.set_schedule(practice.id, &hours).await.unwrap();
        let patient_id = db
            .store
            .create_patient(practice.id, "S-1", &complete("Ivy"), &api(), saturday)
            .await
            .unwrap()
            .patient
            .id;
        let invites = db.store.patient_invites(patient_id).await.unwrap();
        let [waiting] = invites.as_slice() else {
            panic!("{engine:?}: {invites:?}");
        };
        assert_eq!(waiting.state, InviteState::Scheduled, "{engine:?}");

        let outcome = db
            .store
            .enroll_now(patient_id, None, &api(), saturday)
            .await
            .unwrap();
        assert!(
            matches!(outcome, EnrollOutcome::Queued { .. }),
            "{outcome:?}"
        );
        let timeline = db.store.patient_timeline(patient_id).await.unwrap();
        let cancelled = timeline
            .iter()
            .find(|line| line.kind == "invite_cancelled")
            .unwrap_or_else(|| panic!("{engine:?}: {timeline:?}"));
        assert_eq!(cancelled.detail["invite_id"], waiting.id, "{engine:?}");
        assert_eq!(
            cancelled.detail["reason"], "superseded by Enroll Now",
            "{engine:?}"
        );
    })
    .await;
}

/// Activation of a chart that does not exist is an error the caller sees
/// (the patient row is locked first, and there is none), not a silent
/// success.
#[tokio::test]
async fn marking_an_unknown_chart_active_says_it_is_not_found() {
    on_each_engine(async |engine, db| {
        let now = wednesday();
        let patient_id = first_chart(db, now).await;
        let unknown = patient_id + 1000;
        let result = db.store.mark_activated(unknown, &api(), now).await;
        assert!(
            matches!(result, Err(StoreError::NotFound("patient"))),
            "{engine:?}: {result:?}"
        );
        db.store
            .mark_activated(patient_id, &api(), now)
            .await
            .unwrap();
        let invites = db.store.patient_invites(patient_id).await.unwrap();
        assert!(
            invites.iter().all(|i| i.state == InviteState::Cancelled),
            "{engine:?}: the queued invite is cancelled: {invites:?}"
        );
    })
    .await;
}

/// The unsubscribe page's opt-out: the patient the invite went to is
/// opted out of email, with the line on the timeline; an unknown invite
/// changes nothing and says so.
#[tokio::test]
async fn an_email_opt_out_by_invite_opts_out_its_patient_only() {
    on_each_engine(async |engine, db| {
        let now = wednesday();
        let patient_id = first_chart(db, now).await;
        let invite_id = db.store.patient_invites(patient_id).await.unwrap()[0].id;
        let unknown = db
            .store
            .opt_out_email_by_invite(invite_id + 1000, now)
            .await
            .unwrap();
        assert!(!unknown, "{engine:?}: an unknown invite");
        let patient = db.store.patient(patient_id).await.unwrap().unwrap();
        assert!(!patient.email_opted_out, "{engine:?}");

        let known = db
            .store
            .opt_out_email_by_invite(invite_id, now)
            .await
            .unwrap();
        assert!(known, "{engine:?}");
        let patient = db.store.patient(patient_id).await.unwrap().unwrap();
        assert!(patient.email_opted_out, "{engine:?}");
        let timeline = db.store.patient_timeline(patient_id).await.unwrap();
        let line = timeline.iter().find(|l| l.kind == "email_opted_out");
        let line = line.unwrap_or_else(|| panic!("{engine:?}: {timeline:?}"));
        assert_eq!(line.detail["invite_id"], invite_id, "{engine:?}");
    })
    .await;
}

/// STOP and START by text: every chart with that cell phone is opted out,
/// then in again, each with its timeline line; others are untouched.
#[tokio::test]
async fn stop_and_start_texts_opt_every_chart_of_the_number_out_and_in() {
    on_each_engine(async |engine, db| {
        let now = wednesday();
        let practice = db.always_open_practice("SMS", now).await;
        let shared = "+16175550123";
        let mut ids = Vec::new();
        for (mrn, first, phone) in [
            ("P-1", "Ann", shared),
            ("P-2", "Ben", shared),
            ("P-3", "Cal", "+16175550199"),
        ] {
            let demographics = Demographics {
                cell_phone: Some(phone.into()),
                ..complete(first)
            };
            let saved = db
                .store
                .create_patient(practice.id, mrn, &demographics, &api(), now)
                .await
                .unwrap();
            ids.push(saved.patient.id);
        }
        let opted_out =
            |id: i64| async move { db.store.patient(id).await.unwrap().unwrap().sms_opted_out };
        let count = db.store.set_sms_opt_out_by_phone(shared, true, now).await;
        assert_eq!(count.unwrap(), 2, "{engine:?}");
        assert!(
            opted_out(ids[0]).await && opted_out(ids[1]).await,
            "{engine:?}"
        );
        assert!(!opted_out(ids[2]).await, "{engine:?}: another number");
        let timeline = db.store.patient_timeline(ids[1]).await.unwrap();
        assert!(
            timeline.iter().any(|l| l.kind == "sms_opted_out"),
            "{engine:?}: {timeline:?}"
        );

        let later = now + SignedDuration::from_hours(2);
        let count = db
            .store
            .set_sms_opt_out_by_phone(shared, false, later)
            .await;
        assert_eq!(count.unwrap(), 2, "{engine:?}");
        assert!(
            !opted_out(ids[0]).await && !opted_out(ids[1]).await,
            "{engine:?}"
        );
        let timeline = db.store.patient_timeline(ids[0]).await.unwrap();
        assert!(
            timeline.iter().any(|l| l.kind == "sms_opted_in"),
            "{engine:?}: {timeline:?}"
        );
        let none = db
            .store
            .set_sms_opt_out_by_phone("+16175550000", true, now)
            .await;
        assert_eq!(none.unwrap(), 0, "{engine:?}: no chart has that number");
    })
    .await;
}
