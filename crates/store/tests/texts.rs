//! The channels of one attempt as the dispatcher's prepare step chooses
//! them (store/src/outbox/texts.rs), on both engines: email unless opted
//! out, a text within R13 (one a day, three a week per number, counting
//! the texts this batch already planned), and on PostgreSQL a number that
//! another transaction is texting is left out rather than texted twice.
//! The server's SMS tests reach the same code through the dispatcher.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use enroll_core::Demographics;
use enroll_store::testing::{Engine, TestDb, on_each_engine, scalar_bound};
use enroll_store::{
    ChannelResult, DeliveryJob, DeliveryOutcome, DeliveryPolicy, DeliveryReport, Prepared, Source,
    Store,
};
use jiff::{SignedDuration, Timestamp};

/// Wednesday 2026-11-25 15:00 in New York.
fn now() -> Timestamp {
    "2026-11-25T20:00:00Z".parse().unwrap()
}

fn policy() -> DeliveryPolicy {
    DeliveryPolicy {
        sms_enabled: true,
        ..DeliveryPolicy::default()
    }
}

fn api() -> Source {
    Source::new("api", Some("tester"))
}

/// A chart with a cell phone in the practice `TXT` (email and texts, always
/// open): its chart-added invite is queued at once.
async fn chart(db: &TestDb, mrn: &str, first: &str, cell_phone: &str) -> i64 {
    chart_at(db, mrn, first, cell_phone, now()).await
}

async fn chart_at(db: &TestDb, mrn: &str, first: &str, cell_phone: &str, at: Timestamp) -> i64 {
    let practice = match db.store.practice_by_code("TXT").await.unwrap() {
        Some(practice) => practice,
        None => db.always_open_practice("TXT", at).await,
    };
    let demographics = Demographics {
        first_name: Some(first.into()),
        last_name: Some("Moreau".into()),
        date_of_birth: Some("1990-05-20".into()),
        birth_sex: Some("F".into()),
        zip: Some("10027".into()),
        email: Some(format!("{}@example.org", first.to_lowercase())),
        cell_phone: Some(cell_phone.into()),
    };
    db.store
        .create_patient(practice.id, mrn, &demographics, &api(), at)
        .await
        .unwrap()
        .patient
        .id
}

/// Claims and prepares what is due: each patient's job.
async fn prepare(db: &TestDb, at: Timestamp) -> HashMap<i64, DeliveryJob> {
    let ids = db
        .store
        .claim_due_invites("w1", at, policy().lease, 20)
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
            Prepared::Send(job) => (job.patient_id, job),
            Prepared::Skipped { reason } => panic!("skipped: {reason}"),
        })
        .collect()
}

/// Both channels took it: the text is on record for R13.
async fn delivered(db: &TestDb, job: &DeliveryJob, at: Timestamp) {
    let sent = || ChannelResult::Sent { provider_id: None };
    let outcome = DeliveryOutcome {
        job: job.clone(),
        report: DeliveryReport {
            email: job.email.as_ref().map(|_| sent()),
            sms: job.cell_phone.as_ref().map(|_| sent()),
        },
        jitter: 0.5,
    };
    db.store
        .finish_deliveries(&[outcome], &policy(), at)
        .await
        .unwrap();
}

/// R8 and R13: an invite goes by email and by text; the same number gets
/// no second text that day (the email still goes), nor two texts from one
/// batch for two charts sharing it; a patient opted out of email is only
/// texted.
#[tokio::test]
async fn an_invite_is_emailed_and_texted_within_the_limits_of_r13() {
    on_each_engine(async |engine, db| {
        let ida = chart(db, "T-1", "Ida", "+12125550101").await;
        let jobs = prepare(db, now()).await;
        let job = &jobs[&ida];
        assert_eq!(job.email.as_deref(), Some("ida@example.org"), "{engine:?}");
        assert_eq!(
            job.cell_phone.as_deref(),
            Some("+12125550101"),
            "{engine:?}"
        );
        delivered(db, job, now()).await;

        // An hour later: Enroll Now for Ida, and two new charts sharing a
        // number, one of them opted out of email.
        let later = now() + SignedDuration::from_hours(1);
        db.store
            .enroll_now(ida, Some("again"), &api(), later)
            .await
            .unwrap();
        let shared = "+12125550102";
        let joe = chart(db, "T-2", "Joe", shared).await;
        let mia = chart(db, "T-3", "Mia", shared).await;
        let kim = chart(db, "T-5", "Kim", "+12125550104").await;
        let invite_of_kim = db.store.patient_invites(kim).await.unwrap()[0].id;
        assert!(
            db.store
                .opt_out_email_by_invite(invite_of_kim, later)
                .await
                .unwrap()
        );

        let jobs = prepare(db, later).await;
        assert_eq!(jobs.len(), 4, "{engine:?}: {jobs:?}");
        let again = &jobs[&ida];
        assert_eq!(
            again.email.as_deref(),
            Some("ida@example.org"),
            "{engine:?}"
        );
        assert_eq!(
            again.cell_phone, None,
            "{engine:?}: one text a day per number"
        );
        let texted: Vec<i64> = [joe, mia]
            .into_iter()
            .filter(|id| jobs[id].cell_phone.as_deref() == Some(shared))
            .collect();
        assert_eq!(
            texted.len(),
            1,
            "{engine:?}: one text for the shared number: {jobs:?}"
        );
        assert_eq!(
            jobs[&joe].email.as_deref(),
            Some("joe@example.org"),
            "{engine:?}"
        );
        assert_eq!(
            jobs[&mia].email.as_deref(),
            Some("mia@example.org"),
            "{engine:?}"
        );
        assert_eq!(jobs[&kim].email, None, "{engine:?}: Kim opted out of email");
        assert_eq!(
            jobs[&kim].cell_phone.as_deref(),
            Some("+12125550104"),
            "{engine:?}"
        );
    })
    .await;
}

/// R13's week: a number texted three times in the last seven days, but
/// not in the last day, gets no fourth text; the email goes.
#[tokio::test]
async fn a_number_texted_three_times_this_week_gets_no_fourth_text() {
    on_each_engine(async |engine, db| {
        let phone = "+12125550105";
        for (n, days_ago) in [6, 4, 2].into_iter().enumerate() {
            let at = now() - SignedDuration::from_hours(24 * days_ago);
            let id = chart_at(db, &format!("W-{n}"), "Sam", phone, at).await;
            let jobs = prepare(db, at).await;
            assert_eq!(
                jobs[&id].cell_phone.as_deref(),
                Some(phone),
                "{engine:?}: {days_ago}"
            );
            delivered(db, &jobs[&id], at).await;
        }
        let fourth = chart(db, "W-4", "Sue", phone).await;
        let jobs = prepare(db, now()).await;
        assert_eq!(jobs[&fourth].cell_phone, None, "{engine:?}: three a week");
        assert_eq!(
            jobs[&fourth].email.as_deref(),
            Some("sue@example.org"),
            "{engine:?}"
        );
    })
    .await;
}

/// PostgreSQL prepares chunks in parallel transactions: a number whose
/// advisory lock another transaction holds is being texted there, so this
/// one leaves it out (the email still goes) instead of counting texts that
/// the other has not committed yet.
#[tokio::test]
async fn a_number_another_transaction_is_texting_is_left_out_on_postgres() {
    let Some(db) = TestDb::new(Engine::Postgres).await else {
        return;
    };
    let phone = "+12125550103";
    let lea = chart(&db, "T-4", "Lea", phone).await;
    // A second pool's connection holds the number's lock, as a parallel
    // chunk's transaction would.
    let other = Store::connect(&db.url).await.unwrap();
    let locked = scalar_bound(
        &other,
        "SELECT COUNT(*) FROM (SELECT pg_advisory_lock(13, hashtext($1))) AS l",
        &[phone],
    )
    .await
    .unwrap();
    assert_eq!(locked, 1);
    let jobs = prepare(&db, now()).await;
    assert_eq!(jobs[&lea].cell_phone, None, "{jobs:?}");
    assert_eq!(jobs[&lea].email.as_deref(), Some("lea@example.org"));
    other.close().await;
}
