//! The outbox's rule paths called directly, on both engines: what the
//! dispatcher's prepare step (`Store::prepare_deliveries`, outbox/decide.rs)
//! and a merge (store/src/cap.rs) do with more queued invites than R7
//! allows. The server's delivery and MLLP tests reach the same code through
//! SMTP and TCP.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enroll_core::{CAP_WINDOW, Demographics, IntakeEvent, PatientChange};
use enroll_store::testing::{TestDb, on_each_engine};
use enroll_store::{DeliveryPolicy, EnrollOutcome, InboundMessage, InviteState, Prepared, Source};
use jiff::Timestamp;

/// Wednesday 2026-11-25 15:00 in New York.
fn now() -> Timestamp {
    "2026-11-25T20:00:00Z".parse().unwrap()
}

fn complete(first: &str) -> Demographics {
    Demographics {
        first_name: Some(first.into()),
        last_name: Some("Wells".into()),
        date_of_birth: Some("1962-07-16".into()),
        birth_sex: Some("F".into()),
        zip: Some("60616".into()),
        email: Some(format!("{}@example.org", first.to_lowercase())),
        cell_phone: None,
    }
}

/// A chart with three counted, queued invites: the chart-added one and two
/// Enroll Nows.
async fn chart_with_three_queued(db: &TestDb, practice_id: i64, mrn: &str, first: &str) -> i64 {
    let source = Source::new("api", Some("tester"));
    let saved = db
        .store
        .create_patient(practice_id, mrn, &complete(first), &source, now())
        .await
        .unwrap();
    let id = saved.patient.id;
    for n in 1..=2 {
        let key = format!("{mrn}-{n}");
        let outcome = db
            .store
            .enroll_now(id, Some(&key), &source, now())
            .await
            .unwrap();
        assert!(
            matches!(
                outcome,
                EnrollOutcome::Queued {
                    replayed: false,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
    id
}

async fn merge(db: &TestDb, survivor_mrn: &str, merged_mrn: &str, code: &str) {
    let message = InboundMessage {
        raw: b"MSH|^~\\&|EHR|CAP|||20261125||ADT^A40|C-1|P|2.5.1",
        peer: None,
        listener: None,
        received_at: now(),
        sending_app: "EHR".into(),
        sending_facility: code.into(),
        control_id: "C-1".into(),
        message_type: "ADT^A40".into(),
        deduplicate: true,
        notes: None,
        parsed: Ok(IntakeEvent::Merge {
            patient: PatientChange {
                mrn: survivor_mrn.into(),
                ..Default::default()
            },
            merged_mrn: merged_mrn.into(),
            merged_assigning_authority: None,
        }),
    };
    let received = db.store.receive_hl7(&message, |_| "ACK".into()).await;
    assert!(received.is_ok(), "{received:?}");
}

/// R6 and R7 after a merge: two charts with three queued invites each
/// become one patient with six. The merged chart's auto invite gives way
/// to the survivor's (one waiting auto invite); of the five left four go
/// out and the one counted last waits for the date the cap gives (30 days
/// after the first send); the dispatcher sends no fifth.
#[tokio::test]
async fn after_a_merge_four_invites_go_and_the_rest_wait_for_the_cap() {
    on_each_engine(async |engine, db| {
        let practice = db.always_open_practice("CAP", now()).await;
        let survivor = chart_with_three_queued(db, practice.id, "S-1", "Ida").await;
        let merged = chart_with_three_queued(db, practice.id, "M-1", "Ada").await;
        merge(db, "S-1", "M-1", "CAP").await;

        let invites = db.store.patient_invites(survivor).await.unwrap();
        assert_eq!(invites.len(), 6, "{engine:?}: both charts' invites moved");
        let held: Vec<_> = invites
            .iter()
            .filter(|i| i.state == InviteState::Suppressed)
            .collect();
        assert_eq!(held.len(), 1, "{engine:?}: {invites:?}");
        let coalesced = invites
            .iter()
            .filter(|i| i.state == InviteState::Cancelled)
            .count();
        assert_eq!(coalesced, 1, "{engine:?}: {invites:?}");
        for invite in &held {
            assert_eq!(
                invite.next_possible_at,
                Some(now() + CAP_WINDOW),
                "{engine:?}: the date the cap gives"
            );
        }

        let policy = DeliveryPolicy::default();
        let ids = db
            .store
            .claim_due_invites("w1", now(), policy.lease, 10)
            .await
            .unwrap();
        let prepared = db
            .store
            .prepare_deliveries(&ids, "w1", &policy, now())
            .await
            .unwrap();
        let sends = prepared
            .iter()
            .filter(|(_, p)| matches!(p, Prepared::Send(_)))
            .count();
        assert_eq!(sends, 4, "{engine:?}: {prepared:?}");
        let after = db.store.patient_invites(survivor).await.unwrap();
        let suppressed = after
            .iter()
            .filter(|i| i.state == InviteState::Suppressed)
            .count();
        assert_eq!(suppressed, 1, "{engine:?}: still held");
        assert!(
            db.store.patient_invites(merged).await.unwrap().is_empty(),
            "{engine:?}: nothing left on the merged chart"
        );
    })
    .await;
}

/// R7 in the dispatcher itself: invites claimed before the merge are
/// decided again against the combined history when they are prepared, so
/// the batch still sends four and holds the fifth with the cap's date.
#[tokio::test]
async fn invites_claimed_before_a_merge_are_checked_against_the_combined_history() {
    on_each_engine(async |engine, db| {
        let practice = db.always_open_practice("CAP", now()).await;
        let survivor = chart_with_three_queued(db, practice.id, "S-1", "Ida").await;
        chart_with_three_queued(db, practice.id, "M-1", "Ada").await;
        let policy = DeliveryPolicy::default();
        let ids = db
            .store
            .claim_due_invites("w1", now(), policy.lease, 10)
            .await
            .unwrap();
        assert_eq!(ids.len(), 6, "{engine:?}");
        merge(db, "S-1", "M-1", "CAP").await;
        let prepared = db
            .store
            .prepare_deliveries(&ids, "w1", &policy, now())
            .await
            .unwrap();
        let sends = prepared
            .iter()
            .filter(|(_, p)| matches!(p, Prepared::Send(_)))
            .count();
        assert_eq!(sends, 4, "{engine:?}: {prepared:?}");
        let invites = db.store.patient_invites(survivor).await.unwrap();
        let held: Vec<_> = invites
            .iter()
            .filter(|i| i.state == InviteState::Suppressed)
            .collect();
        assert_eq!(held.len(), 1, "{engine:?}: {invites:?}");
        assert_eq!(
            held[0].next_possible_at,
            Some(now() + CAP_WINDOW),
            "{engine:?}"
        );
        // The earliest counted go first (all at one instant: the lower id),
        // so the one held is the last of them.
        let last = invites
            .iter()
            .filter(|i| i.state != InviteState::Cancelled)
            .map(|i| i.id)
            .max();
        assert_eq!(Some(held[0].id), last, "{engine:?}: {invites:?}");
    })
    .await;
}

/// R7 in the dispatcher when several invites of one patient are over the
/// cap in one batch: each held invite leaves the count, and only it, so
/// the next one is weighed against the same four. Two charts at the cap
/// each (all claimed before the merge) still make four sends.
#[tokio::test]
async fn several_invites_over_the_cap_in_one_batch_are_all_held() {
    on_each_engine(async |engine, db| {
        let practice = db.always_open_practice("CAP", now()).await;
        let source = Source::new("api", Some("tester"));
        let mut charts = Vec::new();
        for (mrn, first) in [("S-1", "Ida"), ("M-1", "Ada")] {
            let id = chart_with_three_queued(db, practice.id, mrn, first).await;
            let key = format!("{mrn}-fourth");
            let outcome = db.store.enroll_now(id, Some(&key), &source, now()).await;
            assert!(
                matches!(outcome, Ok(EnrollOutcome::Queued { .. })),
                "{engine:?}: {outcome:?}"
            );
            charts.push(id);
        }
        let policy = DeliveryPolicy::default();
        let ids = db
            .store
            .claim_due_invites("w1", now(), policy.lease, 10)
            .await
            .unwrap();
        assert_eq!(ids.len(), 8, "{engine:?}");
        merge(db, "S-1", "M-1", "CAP").await;
        let prepared = db
            .store
            .prepare_deliveries(&ids, "w1", &policy, now())
            .await
            .unwrap();
        let sends = prepared
            .iter()
            .filter(|(_, p)| matches!(p, Prepared::Send(_)))
            .count();
        assert_eq!(sends, 4, "{engine:?}: {prepared:?}");
        let invites = db.store.patient_invites(charts[0]).await.unwrap();
        let held = invites
            .iter()
            .filter(|i| i.state == InviteState::Suppressed)
            .count();
        // Eight: four sends, the merged chart's auto invite gives way to
        // the survivor's (R6), three held.
        assert_eq!(held, 3, "{engine:?}: {invites:?}");
    })
    .await;
}
