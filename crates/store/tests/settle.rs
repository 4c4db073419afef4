//! The outbox's settlement (`Store::finish_deliveries`,
//! store/src/outbox/settle.rs) called directly, on both engines, after a
//! real claim and prepare: what each outcome writes to the invite, its
//! `deliveries` rows, its claim, its timeline and the cap; and that an
//! outcome for an invite another dispatcher finished changes nothing. The
//! server's delivery tests reach the same code through SMTP.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enroll_core::Demographics;
use enroll_store::testing::{TestDb, on_each_engine, scalar};
use enroll_store::{
    ChannelResult, DeliveryJob, DeliveryOutcome, DeliveryPolicy, DeliveryReport, Finished,
    InviteState, Prepared, Source,
};
use jiff::{SignedDuration, Timestamp};

/// Wednesday 2026-11-25 15:00 in New York.
fn now() -> Timestamp {
    "2026-11-25T20:00:00Z".parse().unwrap()
}

fn policy() -> DeliveryPolicy {
    DeliveryPolicy {
        sms_enabled: true,
        max_attempts: 2,
        ..DeliveryPolicy::default()
    }
}

/// A patient whose chart-added invite is queued (the practice is always
/// open), with a cell phone when `cell` is set.
async fn patient_with_a_queued_invite(db: &TestDb, mrn: &str, cell: bool) -> i64 {
    let practice = match db.store.practice_by_code("SETTLE").await.unwrap() {
        Some(practice) => practice,
        None => db.always_open_practice("SETTLE", now()).await,
    };
    let demographics = Demographics {
        first_name: Some("Ida".into()),
        last_name: Some("Wells".into()),
        date_of_birth: Some("1962-07-16".into()),
        birth_sex: Some("F".into()),
        zip: Some("60616".into()),
        email: Some("ida@example.org".into()),
        cell_phone: cell.then(|| "+1 617 555 0100".into()),
    };
    let source = Source::new("api", Some("tester"));
    let saved = db
        .store
        .create_patient(practice.id, mrn, &demographics, &source, now())
        .await
        .unwrap();
    saved.patient.id
}

/// Claims and prepares what is due at `at`: the jobs to send.
async fn prepare(db: &TestDb, at: Timestamp) -> Vec<DeliveryJob> {
    let lease = policy().lease;
    let ids = db
        .store
        .claim_due_invites("w1", at, lease, 10)
        .await
        .unwrap();
    let prepared = db
        .store
        .prepare_deliveries(&ids, "w1", &policy(), at)
        .await
        .unwrap();
    prepared
        .into_iter()
        .map(|(_, p)| match p {
            Prepared::Send(job) => job,
            Prepared::Skipped { reason } => panic!("skipped: {reason}"),
        })
        .collect()
}

fn outcome(job: &DeliveryJob, email: ChannelResult, sms: Option<ChannelResult>) -> DeliveryOutcome {
    DeliveryOutcome {
        job: job.clone(),
        report: DeliveryReport {
            email: Some(email),
            sms,
        },
        // The middle of the spread: the retry delay exactly as configured.
        jitter: 0.5,
    }
}

async fn finish(db: &TestDb, outcomes: &[DeliveryOutcome], at: Timestamp) -> Vec<Finished> {
    db.store
        .finish_deliveries(outcomes, &policy(), at)
        .await
        .unwrap()
}

async fn count(db: &TestDb, sql_where: &str) -> i64 {
    scalar(&db.store, &format!("SELECT COUNT(*) FROM {sql_where}"))
        .await
        .unwrap()
}

async fn claimed(db: &TestDb) -> i64 {
    count(
        db,
        "invites WHERE claimed_by IS NOT NULL OR claimed_until IS NOT NULL",
    )
    .await
}

#[tokio::test]
async fn one_channel_taking_the_invite_is_enough_and_the_other_channels_failure_is_kept() {
    on_each_engine(async |engine, db| {
        let patient = patient_with_a_queued_invite(db, "M-1", true).await;
        let jobs = prepare(db, now()).await;
        assert_eq!(jobs.len(), 1, "{engine:?}");
        let sent_at = now() + SignedDuration::from_secs(2);
        let sms_refused = ChannelResult::Permanent("21610: the number is unsubscribed".into());
        let email_sent = ChannelResult::Sent {
            provider_id: Some("<id@smtp>".into()),
        };
        let done = finish(db, &[outcome(&jobs[0], email_sent, Some(sms_refused))], sent_at).await;
        assert_eq!(done, [Finished::Sent], "{engine:?}");

        let invite = db.store.invite_by_id(jobs[0].invite_id).await.unwrap().unwrap();
        assert_eq!((invite.state, invite.sent_at), (InviteState::Sent, Some(sent_at)));
        assert!(
            invite.failure_reason.as_deref().is_some_and(|r| r.contains("21610")),
            "{engine:?}: the text's failure is kept: {:?}",
            invite.failure_reason
        );
        let id = jobs[0].invite_id;
        assert_eq!(
            count(db, &format!("deliveries WHERE invite_id = {id} AND channel = 'email' AND state = 'sent' AND provider_id = '<id@smtp>'")).await,
            1,
            "{engine:?}"
        );
        assert_eq!(
            count(db, &format!("deliveries WHERE invite_id = {id} AND channel = 'sms' AND state = 'permanent_failure' AND error LIKE '21610%'")).await,
            1,
            "{engine:?}"
        );
        assert_eq!(count(db, "deliveries WHERE finished_at IS NULL").await, 0);
        assert_eq!(claimed(db).await, 0, "{engine:?}: the claim is released");
        let kinds: Vec<String> = db
            .store
            .patient_timeline(patient)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert!(kinds.contains(&"invite_sent".to_string()), "{kinds:?}");
        let month_ago = sent_at - SignedDuration::from_hours(30 * 24);
        assert_eq!(db.store.counted_sends_since(patient, month_ago).await.unwrap(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_passing_failure_is_retried_at_its_time_and_the_last_attempt_fails_without_counting() {
    on_each_engine(async |engine, db| {
        let patient = patient_with_a_queued_invite(db, "M-1", false).await;
        let jobs = prepare(db, now()).await;
        let busy = || ChannelResult::Transient("421 try again later".into());
        let done = finish(db, &[outcome(&jobs[0], busy(), None)], now()).await;
        let retry_at = now() + SignedDuration::from_secs(30);
        assert_eq!(done, [Finished::Retry { at: retry_at }], "{engine:?}");
        let invite = db
            .store
            .invite_by_id(jobs[0].invite_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (invite.state, invite.due_at),
            (InviteState::Queued, retry_at)
        );
        assert_eq!(claimed(db).await, 0, "{engine:?}: released for the retry");

        // Not due again before its time; then attempt 2 of 2.
        let early = retry_at - SignedDuration::from_secs(1);
        let lease = policy().lease;
        assert!(
            db.store
                .claim_due_invites("w1", early, lease, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let jobs = prepare(db, retry_at).await;
        assert_eq!(jobs.len(), 1, "{engine:?}");
        assert_eq!(jobs[0].attempt, 2);
        let done = finish(db, &[outcome(&jobs[0], busy(), None)], retry_at).await;
        assert!(
            matches!(&done[..], [Finished::Failed { reason }] if reason.contains("2 attempts")),
            "{engine:?}: {done:?}"
        );
        let invite = db
            .store
            .invite_by_id(jobs[0].invite_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(invite.state, InviteState::Failed, "{engine:?}");
        let id = invite.id;
        assert_eq!(
            count(
                db,
                &format!("deliveries WHERE invite_id = {id} AND state = 'transient_failure'")
            )
            .await,
            2,
            "{engine:?}: both attempts recorded"
        );
        // R7: a send no channel took does not count.
        let month_ago = retry_at - SignedDuration::from_hours(30 * 24);
        assert_eq!(
            db.store
                .counted_sends_since(patient, month_ago)
                .await
                .unwrap(),
            0,
            "{engine:?}"
        );
        let kinds: Vec<String> = db
            .store
            .patient_timeline(patient)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        for kind in ["invite_retry_scheduled", "invite_failed"] {
            assert!(kinds.contains(&kind.to_string()), "{kind}: {kinds:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn an_outcome_for_an_invite_already_finished_changes_nothing_and_the_batch_keeps_its_order() {
    on_each_engine(async |engine, db| {
        patient_with_a_queued_invite(db, "M-1", false).await;
        patient_with_a_queued_invite(db, "M-2", false).await;
        let jobs = prepare(db, now()).await;
        assert_eq!(jobs.len(), 2, "{engine:?}");
        let sent = || ChannelResult::Sent { provider_id: None };
        assert_eq!(
            finish(db, &[outcome(&jobs[0], sent(), None)], now()).await,
            [Finished::Sent]
        );

        // A late outcome for the first (a dispatcher whose lease ran out),
        // in one batch with the second's.
        let late = now() + SignedDuration::from_mins(10);
        let refused = ChannelResult::Permanent("550 no such user".into());
        let done = finish(
            db,
            &[
                outcome(&jobs[0], refused, None),
                outcome(&jobs[1], sent(), None),
            ],
            late,
        )
        .await;
        assert_eq!(done, [Finished::AlreadyDone, Finished::Sent], "{engine:?}");
        let first = db
            .store
            .invite_by_id(jobs[0].invite_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (first.state, first.sent_at),
            (InviteState::Sent, Some(now())),
            "{engine:?}"
        );
        let id = first.id;
        assert_eq!(
            count(
                db,
                &format!("deliveries WHERE invite_id = {id} AND state = 'sent'")
            )
            .await,
            1,
            "{engine:?}: its delivery row is untouched"
        );
        assert_eq!(
            count(db, "deliveries WHERE state = 'permanent_failure'").await,
            0
        );
        assert_eq!(count(db, "invites WHERE state = 'sent'").await, 2);
    })
    .await;
}

#[tokio::test]
async fn a_late_outcome_after_another_dispatcher_took_the_invite_over_leaves_it_to_that_one() {
    on_each_engine(async |engine, db| {
        patient_with_a_queued_invite(db, "T-1", false).await;
        let first = prepare(db, now()).await;
        assert_eq!(first.len(), 1, "{engine:?}");

        // w1's SMTP server hangs past the lease; w2 claims the invite and
        // prepares its own attempt.
        let lease = policy().lease;
        let later = now() + lease + SignedDuration::from_mins(1);
        let ids = db
            .store
            .claim_due_invites("w2", later, lease, 10)
            .await
            .unwrap();
        assert_eq!(ids, [first[0].invite_id], "{engine:?}");
        let prepared = db
            .store
            .prepare_deliveries(&ids, "w2", &policy(), later)
            .await
            .unwrap();
        let Some((_, Prepared::Send(second))) = prepared.into_iter().next() else {
            panic!("{engine:?}: w2 sends");
        };
        assert_eq!((first[0].attempt, second.attempt), (1, 2), "{engine:?}");

        // w1's answer comes back now: a passing failure. It must not
        // reschedule the invite or release w2's claim.
        let hung = ChannelResult::Transient("421 timed out".into());
        let done = finish(db, &[outcome(&first[0], hung, None)], later).await;
        assert_eq!(done, [Finished::AlreadyDone], "{engine:?}");
        let id = first[0].invite_id;
        assert_eq!(
            count(
                db,
                &format!(
                    "invites WHERE id = {id} AND state = 'queued' AND claimed_by = 'w2' \
                     AND attempts = 2"
                )
            )
            .await,
            1,
            "{engine:?}: still w2's"
        );
        assert_eq!(
            count(
                db,
                &format!(
                    "deliveries WHERE invite_id = {id} AND attempt = 1 \
                     AND state = 'transient_failure'"
                )
            )
            .await,
            1,
            "{engine:?}: what w1's channel did is kept on its attempt"
        );

        let sent = ChannelResult::Sent { provider_id: None };
        let done = finish(db, &[outcome(&second, sent, None)], later).await;
        assert_eq!(done, [Finished::Sent], "{engine:?}");
        assert_eq!(claimed(db).await, 0, "{engine:?}");
    })
    .await;
}

/// The failed work list: an invite that failed for good and one waiting
/// for its retry, newest first, each with the channel and address of its
/// last failed attempt and the reason; a sent invite is not on it.
#[tokio::test]
async fn the_failed_list_shows_failed_and_retrying_invites_with_channel_and_address() {
    on_each_engine(async |engine, db| {
        for mrn in ["F-1", "F-2", "F-3"] {
            patient_with_a_queued_invite(db, mrn, false).await;
        }
        let jobs = prepare(db, now()).await;
        assert_eq!(jobs.len(), 3, "{engine:?}");
        let at = now() + SignedDuration::from_secs(2);
        let outcomes = [
            outcome(&jobs[0], ChannelResult::Sent { provider_id: None }, None),
            outcome(
                &jobs[1],
                ChannelResult::Transient("421 try later".into()),
                None,
            ),
            outcome(
                &jobs[2],
                ChannelResult::Permanent("550 no such user".into()),
                None,
            ),
        ];
        finish(db, &outcomes, at).await;

        let listed = db.store.failed_deliveries(10).await.unwrap();
        let ids: Vec<i64> = listed.iter().map(|f| f.invite_id).collect();
        assert_eq!(
            ids,
            [jobs[2].invite_id, jobs[1].invite_id],
            "{engine:?}: newest first"
        );
        let (failed, retrying) = (&listed[0], &listed[1]);
        assert_eq!(failed.state, InviteState::Failed, "{engine:?}");
        assert_eq!(failed.next_retry_at, None, "{engine:?}");
        assert!(
            failed.reason.as_deref().is_some_and(|r| r.contains("550")),
            "{engine:?}: {failed:?}"
        );
        assert_eq!(retrying.state, InviteState::Queued, "{engine:?}");
        let retry_at = retrying
            .next_retry_at
            .unwrap_or_else(|| panic!("{engine:?}: {retrying:?}"));
        assert!(retry_at > at, "{engine:?}: {retrying:?}");
        assert_eq!(retrying.attempts, 1, "{engine:?}");
        for entry in &listed {
            assert_eq!(entry.channel.as_deref(), Some("email"), "{engine:?}");
            assert_eq!(
                entry.address.as_deref(),
                Some("ida@example.org"),
                "{engine:?}"
            );
            assert_eq!(entry.first_name.as_deref(), Some("Ida"), "{engine:?}");
        }
    })
    .await;
}

/// Settlement and activation racing over the same patients: settlement
/// updates invites whose changes update their patients' rows (the
/// dashboard's triggers), and activation locks a patient and then cancels
/// its invites. Settlement therefore locks the patients first, in id
/// order; were it to take the invites first, PostgreSQL would find a
/// deadlock and abort one side. Every call must succeed, and each invite
/// ends sent or cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settlement_racing_activations_of_its_patients_never_deadlocks() {
    on_each_engine(async |engine, db| {
        for round in 0..8 {
            let mut patients = Vec::new();
            for n in 0..10 {
                patients
                    .push(patient_with_a_queued_invite(db, &format!("R{round}-{n}"), false).await);
            }
            let jobs = prepare(db, now()).await;
            assert_eq!(jobs.len(), patients.len(), "{engine:?}");
            let sent = || ChannelResult::Sent { provider_id: None };
            let outcomes: Vec<DeliveryOutcome> =
                jobs.iter().map(|job| outcome(job, sent(), None)).collect();
            let at = now() + SignedDuration::from_secs(1);
            let store = db.store.clone();
            let settle =
                tokio::spawn(
                    async move { store.finish_deliveries(&outcomes, &policy(), at).await },
                );
            let activations: Vec<_> = patients
                .iter()
                .rev()
                .map(|&id| {
                    let store = db.store.clone();
                    tokio::spawn(async move {
                        let source = Source::new("portal", None);
                        store.mark_activated(id, &source, at).await
                    })
                })
                .collect();
            let settled = settle.await.unwrap();
            assert!(settled.is_ok(), "{engine:?} round {round}: {settled:?}");
            for activation in activations {
                let result = activation.await.unwrap();
                assert!(result.is_ok(), "{engine:?} round {round}: {result:?}");
            }
            for job in &jobs {
                let invite = db.store.invite_by_id(job.invite_id).await.unwrap().unwrap();
                assert!(
                    matches!(invite.state, InviteState::Sent | InviteState::Cancelled),
                    "{engine:?}: {invite:?}"
                );
            }
        }
    })
    .await;
}
