//! The store against real databases: a SQLite file and a PostgreSQL server
//! (see `enroll_store::testing`). Every test runs on both engines.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use enroll_core::{AutoDecision, Demographics, Refusal, Schedule, Trigger};
use enroll_core::{PracticeScope, SearchTerms};
use enroll_store::testing::{Engine, TestDb, complete, on_each_engine, wednesday_afternoon};
use enroll_store::{EnrollOutcome, InviteState, PatientSearch, Source, Store, StoreError};
use jiff::{SignedDuration, Timestamp};

fn api() -> Source {
    Source::new("api", Some("tester"))
}

/// Runs `test` on each engine that is available.
async fn new_patient(
    store: &Store,
    practice_id: i64,
    mrn: &str,
    d: &Demographics,
    now: Timestamp,
) -> i64 {
    store
        .create_patient(practice_id, mrn, d, &api(), now)
        .await
        .unwrap()
        .patient
        .id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_enroll_now_never_makes_a_fifth_send() {
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("RACE", now).await;
        // Auto invites off, so the chart-added trigger sends nothing and all
        // four sends are left for the racing clicks.
        db.store
            .set_auto_invites(practice.id, false, None)
            .await
            .unwrap();
        let id = new_patient(&db.store, practice.id, "M1", &complete("Ana", "Race"), now).await;
        let store = Arc::new(db.store.clone());
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let key = format!("click-{i}");
                    store.enroll_now(id, Some(&key), &api(), now).await
                })
            })
            .collect();
        let (mut queued, mut capped) = (0, 0);
        for task in tasks {
            match task.await.unwrap().unwrap() {
                EnrollOutcome::Queued {
                    replayed: false, ..
                } => queued += 1,
                EnrollOutcome::Refused {
                    refusal: Refusal::CapReached { .. },
                } => capped += 1,
                other => panic!("{engine:?}: unexpected {other:?}"),
            }
        }
        assert_eq!((queued, capped), (4, 36), "{engine:?}");
        let invites = db.store.patient_invites(id).await.unwrap();
        assert_eq!(
            invites.iter().filter(|i| i.counts_toward_cap()).count(),
            4,
            "{engine:?}"
        );
    })
    .await;
}

/// Two `Store`s on one SQLite file, as two processes would have: each has
/// its own write turn, so only SQLite's lock taken by `BEGIN IMMEDIATE`
/// keeps them apart. Without it both read the history, then one write
/// fails with "database is locked" (or, worse, both commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_sqlite_file_racing_enroll_now_keep_the_cap() {
    let db = TestDb::new(Engine::Sqlite).await.unwrap();
    let now = wednesday_afternoon();
    let practice = db.always_open_practice("RACE2", now).await;
    db.store
        .set_auto_invites(practice.id, false, None)
        .await
        .unwrap();
    let id = new_patient(&db.store, practice.id, "M1", &complete("Ana", "Race"), now).await;
    let other = Store::connect(&db.url).await.unwrap();
    let stores = [Arc::new(db.store.clone()), Arc::new(other.clone())];
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = stores[i % 2].clone();
            tokio::spawn(async move {
                let key = format!("click-{i}");
                store.enroll_now(id, Some(&key), &api(), now).await
            })
        })
        .collect();
    let (mut queued, mut capped) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(EnrollOutcome::Queued {
                replayed: false, ..
            }) => queued += 1,
            Ok(EnrollOutcome::Refused {
                refusal: Refusal::CapReached { .. },
            }) => capped += 1,
            other => panic!("every click is answered, not refused by a lock: {other:?}"),
        }
    }
    assert_eq!((queued, capped), (4, 36));
    other.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_retries_with_one_idempotency_key_make_one_invite() {
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("IDEM", now).await;
        db.store
            .set_auto_invites(practice.id, false, None)
            .await
            .unwrap();
        let id = new_patient(&db.store, practice.id, "M1", &complete("Bo", "Twice"), now).await;
        let store = Arc::new(db.store.clone());
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    store
                        .enroll_now(id, Some("double-click"), &api(), now)
                        .await
                })
            })
            .collect();
        let mut ids = Vec::new();
        let mut first_requests = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                EnrollOutcome::Queued { invite, replayed } => {
                    ids.push(invite.id);
                    first_requests += usize::from(!replayed);
                }
                other => panic!("{engine:?}: unexpected {other:?}"),
            }
        }
        ids.dedup();
        assert_eq!(
            ids.len(),
            1,
            "{engine:?}: every retry returns the first invite"
        );
        assert_eq!(first_requests, 1, "{engine:?}");
        assert_eq!(
            db.store.patient_invites(id).await.unwrap().len(),
            1,
            "{engine:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_triggers_and_clicks_keep_the_cap_and_one_pending_auto_invite() {
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("MIX", now).await;
        let id = new_patient(&db.store, practice.id, "M1", &complete("Cy", "Mixed"), now).await;
        let store = Arc::new(db.store.clone());
        let tasks: Vec<_> = (0..30)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        store
                            .record_trigger(id, Trigger::NewEncounter, &api(), now)
                            .await
                            .map(|_| ())
                    } else {
                        store
                            .enroll_now(id, Some(&format!("k{i}")), &api(), now)
                            .await
                            .map(|_| ())
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let invites = db.store.patient_invites(id).await.unwrap();
        let counted = invites.iter().filter(|i| i.counts_toward_cap()).count();
        assert_eq!(counted, 4, "{engine:?}: exactly the cap is used");
        let pending_auto = invites
            .iter()
            .filter(|i| i.kind == enroll_store::InviteKind::Auto)
            .filter(|i| matches!(i.state, InviteState::Queued | InviteState::Scheduled))
            .count();
        assert!(
            pending_auto <= 1,
            "{engine:?}: R6 allows one pending auto invite, found {pending_auto}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_cap_frees_a_send_thirty_days_after_the_oldest() {
    on_each_engine(async |engine, db| {
        let start = wednesday_afternoon();
        let practice = db.always_open_practice("CAP", start).await;
        db.store
            .set_auto_invites(practice.id, false, None)
            .await
            .unwrap();
        let id = new_patient(&db.store, practice.id, "M1", &complete("Di", "Cap"), start).await;
        for day in 0..4 {
            let at = start + SignedDuration::from_hours(24 * day);
            let outcome = db.store.enroll_now(id, None, &api(), at).await.unwrap();
            assert!(
                matches!(outcome, EnrollOutcome::Queued { .. }),
                "{engine:?} day {day}"
            );
        }
        let day_29 = start + SignedDuration::from_hours(24 * 29);
        match db.store.enroll_now(id, None, &api(), day_29).await.unwrap() {
            EnrollOutcome::Refused {
                refusal: Refusal::CapReached { next_possible_at },
            } => {
                assert_eq!(
                    next_possible_at,
                    start + SignedDuration::from_hours(24 * 30),
                    "{engine:?}"
                );
            }
            other => panic!("{engine:?}: expected the cap, got {other:?}"),
        }
        let day_30 = start + SignedDuration::from_hours(24 * 30);
        let outcome = db.store.enroll_now(id, None, &api(), day_30).await.unwrap();
        assert!(
            matches!(outcome, EnrollOutcome::Queued { .. }),
            "{engine:?}: the oldest send left the window"
        );
    })
    .await;
}

#[tokio::test]
async fn triggers_outside_the_schedule_wait_for_the_next_opening() {
    on_each_engine(async |engine, db| {
        let friday_night: Timestamp = "2026-11-28T03:00:00Z".parse().unwrap(); // Fri 22:00 New York
        let practice = db
            .store
            .create_practice(
                &enroll_store::NewPractice {
                    code: "SCHED".into(),
                    name: "Scheduled".into(),
                    schedule: Schedule::office_hours("America/New_York"),
                },
                "test",
                friday_night,
            )
            .await
            .unwrap();
        db.store
            .set_auto_invites(practice.id, true, None)
            .await
            .unwrap();
        let saved = db
            .store
            .create_patient(
                practice.id,
                "M1",
                &complete("Eve", "Night"),
                &api(),
                friday_night,
            )
            .await
            .unwrap();
        let monday_open: Timestamp = "2026-11-30T13:00:00Z".parse().unwrap(); // Mon 08:00 EST
        assert_eq!(saved.triggers.len(), 1, "{engine:?}");
        assert_eq!(
            saved.triggers[0].decision,
            AutoDecision::Queue { at: monday_open },
            "{engine:?}"
        );
        let invites = db.store.patient_invites(saved.patient.id).await.unwrap();
        assert_eq!(invites.len(), 1);
        assert_eq!(invites[0].state, InviteState::Scheduled);
        assert_eq!(invites[0].due_at, monday_open);
        assert_eq!(
            invites[0].counted_at, None,
            "{engine:?}: counted only when sent"
        );

        // A second trigger coalesces with the waiting invite (R6).
        let outcome = db
            .store
            .record_trigger(
                saved.patient.id,
                Trigger::NewAppointment,
                &api(),
                friday_night,
            )
            .await
            .unwrap();
        assert_eq!(outcome.decision, AutoDecision::Coalesced, "{engine:?}");

        // Enroll Now replaces the waiting auto invite and goes at once.
        let EnrollOutcome::Queued { invite, .. } = db
            .store
            .enroll_now(saved.patient.id, None, &api(), friday_night)
            .await
            .unwrap()
        else {
            panic!("{engine:?}: Enroll Now refused");
        };
        assert_eq!(invite.state, InviteState::Queued);
        let states: Vec<_> = db
            .store
            .patient_invites(saved.patient.id)
            .await
            .unwrap()
            .iter()
            .map(|i| i.state)
            .collect();
        assert_eq!(
            states,
            [InviteState::Cancelled, InviteState::Queued],
            "{engine:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn only_a_required_field_change_is_a_trigger() {
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("DIFF", now).await;
        let mut d = complete("Fay", "Diff");
        d.email = None;
        let saved = db
            .store
            .create_patient(practice.id, "M1", &d, &api(), now)
            .await
            .unwrap();
        assert!(
            matches!(&saved.triggers[0].decision, AutoDecision::NotInvited { .. }),
            "{engine:?}: no email, no invite"
        );
        d.cell_phone = Some("+1 617 555 0199".into());
        let later = now + SignedDuration::from_mins(5);
        let saved = db
            .store
            .update_patient(saved.patient.id, &d, &api(), later)
            .await
            .unwrap();
        assert!(
            saved.triggers.is_empty(),
            "{engine:?}: a cell-phone-only change is not a trigger"
        );
        d.email = Some("fay@example.org".into());
        let saved = db
            .store
            .update_patient(saved.patient.id, &d, &api(), later)
            .await
            .unwrap();
        assert_eq!(saved.triggers.len(), 1, "{engine:?}");
        assert_eq!(
            saved.triggers[0].decision,
            AutoDecision::SendNow,
            "{engine:?}: the email completed the chart"
        );
        let timeline = db.store.patient_timeline(saved.patient.id).await.unwrap();
        let kinds: Vec<&str> = timeline.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "chart_added",
                "trigger",
                "demographics_updated",
                "demographics_updated",
                "trigger"
            ],
            "{engine:?}"
        );
        let last = &timeline[4].detail;
        assert_eq!(last["decision"]["decision"], "send_now", "{engine:?}");
        assert_eq!(
            last["trigger"]["kind"], "required_fields_changed",
            "{engine:?}"
        );
        assert!(last["invite_id"].is_i64(), "{engine:?}: {last}");
    })
    .await;
}

#[tokio::test]
async fn activation_cancels_waiting_invites_and_refuses_enroll_now() {
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("ACT", now).await;
        let saved = db
            .store
            .create_patient(practice.id, "M1", &complete("Gus", "Active"), &api(), now)
            .await
            .unwrap();
        assert_eq!(
            saved.triggers[0].decision,
            AutoDecision::SendNow,
            "{engine:?}"
        );
        db.store
            .mark_activated(saved.patient.id, &api(), now)
            .await
            .unwrap();
        let invites = db.store.patient_invites(saved.patient.id).await.unwrap();
        assert!(
            invites.iter().all(|i| i.state == InviteState::Cancelled),
            "{engine:?}: {invites:?}"
        );
        let outcome = db
            .store
            .enroll_now(saved.patient.id, None, &api(), now)
            .await
            .unwrap();
        assert!(
            matches!(
                outcome,
                EnrollOutcome::Refused {
                    refusal: Refusal::AlreadyActive
                }
            ),
            "{engine:?}: {outcome:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn mrn_is_unique_per_practice_and_search_finds_patients() {
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let a = db.always_open_practice("A", now).await;
        let b = db.always_open_practice("B", now).await;
        new_patient(&db.store, a.id, "M1", &complete("Hana", "Smith"), now).await;
        new_patient(&db.store, b.id, "M1", &complete("Hugo", "Smithers"), now).await;
        let duplicate = db
            .store
            .create_patient(a.id, "M1", &complete("X", "Y"), &api(), now)
            .await;
        assert!(
            matches!(duplicate, Err(StoreError::DuplicateMrn)),
            "{engine:?}"
        );

        let search = |typed: &str, practice_id: Option<i64>, scope: PracticeScope| {
            let store = db.store.clone();
            let query = PatientSearch {
                terms: SearchTerms::parse(typed),
                practice_id,
                scope,
                limit: None,
            };
            async move {
                let mut names: Vec<String> = store
                    .search_patients(&query)
                    .await
                    .unwrap()
                    .into_iter()
                    .filter_map(|p| p.demographics.first_name)
                    .collect();
                names.sort();
                names
            }
        };
        let all = || PracticeScope::All;
        assert_eq!(
            search("SMITH", None, all()).await,
            ["Hana", "Hugo"],
            "{engine:?}: prefix, any case"
        );
        assert_eq!(
            search("smith, ha", None, all()).await,
            ["Hana"],
            "{engine:?}"
        );
        assert_eq!(
            search("ha smi", None, all()).await,
            ["Hana"],
            "{engine:?}: first last"
        );
        assert_eq!(
            search("smi hu", None, all()).await,
            ["Hugo"],
            "{engine:?}: last first"
        );
        assert_eq!(
            search("M1", Some(b.id), all()).await,
            ["Hugo"],
            "{engine:?}"
        );
        assert_eq!(
            search("smith", None, PracticeScope::Only(vec![a.id])).await,
            ["Hana"],
            "{engine:?}: a search never returns another practice's patient"
        );
        assert!(
            search("smith", None, PracticeScope::Only(vec![]))
                .await
                .is_empty(),
            "{engine:?}"
        );
        let by_dob = || search("02/29/1980", None, all());
        assert_eq!(by_dob().await.len(), 2, "{engine:?}");
    })
    .await;
}

#[tokio::test]
async fn a_name_of_two_words_finds_both_orders_in_name_order_once_each_up_to_the_limit() {
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let a = db.always_open_practice("A", now).await;
        for (mrn, first, last) in [
            ("M1", "Jonah", "Smith"),
            ("M2", "Joan", "Smith"),
            ("M3", "Smitty", "Jones"),
            ("M4", "Joy", "Jordan"),
            ("M5", "Ann", "Smith"),
            ("M6", "Jo", "Smithers"),
        ] {
            new_patient(&db.store, a.id, mrn, &complete(first, last), now).await;
        }
        let merged = new_patient(&db.store, a.id, "M7", &complete("John", "Smith"), now).await;
        let survivor = new_patient(&db.store, a.id, "M8", &complete("Zed", "Zulu"), now).await;
        enroll_store::testing::execute_with(
            &db.store,
            &format!("UPDATE patients SET merged_into = {survivor} WHERE id = {merged}"),
            &[],
        )
        .await
        .unwrap();
        let search = |typed: &str, limit: Option<i64>| {
            let store = db.store.clone();
            let query = PatientSearch {
                terms: SearchTerms::parse(typed),
                practice_id: None,
                scope: PracticeScope::All,
                limit,
            };
            async move {
                store
                    .search_patients(&query)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|p| p.mrn)
                    .take(4)
                    .collect::<Vec<_>>()
            }
        };
        // Twice: with every first name rare (each way is read whole through
        // the first-name index), then with 2,000 more "Joanne"s, so that
        // "jo" as a first name is read in name order up to the limit.
        for (round, more_joannes) in [("rare first names", 2000), ("common first name", 0)] {
            assert_eq!(
                search("smi jo", None).await,
                ["M3", "M2", "M1", "M6"],
                "{engine:?}, {round}: Jones, Smitty (first name smi) then the Smiths named \
                 Jo..., by last then first name; never the merged chart"
            );
            assert_eq!(
                search("smi jo", Some(2)).await,
                ["M3", "M2"],
                "{engine:?}, {round}: the limit applies to both orders together"
            );
            assert_eq!(
                search("jo jo", None).await,
                ["M4"],
                "{engine:?}, {round}: Joy Jordan matches in both orders and is listed once"
            );
            assert_eq!(
                search("jo", Some(3)).await,
                ["M3", "M4", "M2"],
                "{engine:?}, {round}: one word is a last or a first name, in name order"
            );
            assert_eq!(
                search("jo 02/29/1980", None).await,
                ["M3", "M4", "M2", "M1"],
                "{engine:?}, {round}: a name and a date of birth, read through the date"
            );
            enroll_store::testing::execute_with(
                &db.store,
                &format!(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {more_joannes}) \
                     INSERT INTO patients (practice_id, mrn, first_name, last_name, first_name_lc, \
                     last_name_lc, created_at, updated_at) \
                     SELECT {}, 'Z' || i, 'Joanne', 'Zed', 'joanne', 'zed', 0, 0 FROM n WHERE i <= {more_joannes}",
                    a.id
                ),
                &[],
            )
            .await
            .unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn the_statuses_of_a_page_of_results_are_each_patients_own() {
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let a = db.always_open_practice("A", now).await;
        let invited = new_patient(&db.store, a.id, "M1", &complete("Ann", "Able"), now).await;
        let missing_email = Demographics {
            email: None,
            ..complete("Bob", "Baker")
        };
        let not_invited = new_patient(&db.store, a.id, "M2", &missing_email, now).await;
        db.store
            .enroll_now(invited, Some("statuses-1"), &api(), now)
            .await
            .unwrap();
        let mut patients = Vec::new();
        for id in [invited, not_invited] {
            patients.push(db.store.patient(id).await.unwrap().unwrap());
        }
        let statuses = db.store.patient_statuses(&patients, now).await.unwrap();
        for patient in &patients {
            assert_eq!(
                statuses.get(&patient.id),
                Some(&db.store.patient_status(patient, now).await.unwrap()),
                "{engine:?}: patient {}",
                patient.mrn
            );
        }
        assert_ne!(
            statuses.get(&invited),
            statuses.get(&not_invited),
            "{engine:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn migrating_twice_is_harmless() {
    on_each_engine(async |engine, db| {
        db.store.migrate().await.unwrap();
        assert!(
            db.store.applied_migrations().await.unwrap() >= 1,
            "{engine:?}"
        );
        db.store.ping().await.unwrap();
    })
    .await;
}

/// HL7 A40 through the store: the survivor keeps the safe side of every
/// flag (`enroll_core::merged_flags`), written back in the merge's
/// transaction.
#[tokio::test]
async fn a_merge_combines_the_flags_of_both_charts() {
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("MERGE", now).await;
        let survivor = new_patient(&db.store, practice.id, "S-1", &complete("Ada", "A"), now).await;
        let merged = new_patient(&db.store, practice.id, "M-1", &complete("Bea", "B"), now).await;
        let later = now.as_millisecond() + 1_000;
        db.execute(&format!(
            "UPDATE patients SET activated_at = {later}, email_opted_out = TRUE, \
             response = 'deferred' WHERE id = {survivor}"
        ))
        .await
        .unwrap();
        db.execute(&format!(
            "UPDATE patients SET activated_at = {}, deceased = TRUE, sms_opted_out = TRUE, \
             response = 'declined', preferred_language = 'es' WHERE id = {merged}",
            now.as_millisecond()
        ))
        .await
        .unwrap();

        let merge = enroll_store::InboundMessage {
            raw: b"MSH|^~\\&|EHR|MERGE|||20261125||ADT^A40|C-1|P|2.5.1",
            peer: None,
            listener: None,
            received_at: now,
            sending_app: "EHR".into(),
            sending_facility: "MERGE".into(),
            control_id: "C-1".into(),
            message_type: "ADT^A40".into(),
            deduplicate: true,
            notes: None,
            parsed: Ok(enroll_core::IntakeEvent::Merge {
                patient: enroll_core::PatientChange {
                    mrn: "S-1".into(),
                    ..Default::default()
                },
                merged_mrn: "M-1".into(),
                merged_assigning_authority: None,
            }),
        };
        let received = db.store.receive_hl7(&merge, |_| "ACK".into()).await;
        assert!(received.is_ok(), "{engine:?}: {received:?}");

        let after = db.store.patient(survivor).await.unwrap().unwrap();
        assert_eq!(
            after.activated_at,
            Some(now),
            "{engine:?}: the earlier activation"
        );
        assert!(after.deceased, "{engine:?}");
        assert!(after.email_opted_out && after.sms_opted_out, "{engine:?}");
        assert_eq!(
            after.response,
            Some(enroll_core::PatientResponse::Deferred),
            "{engine:?}: the survivor's response"
        );
        assert_eq!(
            after.preferred_language.as_deref(),
            Some("es"),
            "{engine:?}"
        );
    })
    .await;
}

/// A practice's schedule is validated once, when the practice is read: a
/// stored schedule that does not validate (written around the checks) is
/// corrupt, and the error names the practice. One that does not validate,
/// and a code that is not a practice code, are refused when the practice is
/// created.
#[tokio::test]
async fn a_schedule_is_validated_when_the_practice_is_read_and_created() {
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("LAKE", now).await;
        db.execute(&format!(
            "UPDATE practices SET schedule_json = '{{\"time_zone\": \"Mars/Olympus\", \"windows\": []}}' \
             WHERE id = {}",
            practice.id
        ))
        .await
        .unwrap();
        for read in [
            db.store.practice(practice.id).await.map(|_| ()),
            db.store.practices().await.map(|_| ()),
        ] {
            match read {
                Err(StoreError::Corrupt(message)) => assert!(
                    message.contains("LAKE") && message.contains("Mars/Olympus"),
                    "{engine:?}: {message}"
                ),
                other => panic!("{engine:?}: {other:?}"),
            }
        }

        let created = db
            .store
            .create_practice(
                &enroll_store::NewPractice {
                    code: "MARS".into(),
                    name: "Mars".into(),
                    schedule: Schedule::office_hours("Mars/Olympus"),
                },
                "test",
                now,
            )
            .await;
        assert!(
            matches!(&created, Err(StoreError::Invalid(m)) if m.contains("Mars/Olympus")),
            "{engine:?}: {created:?}"
        );
        assert!(
            db.store.practice_by_code("MARS").await.unwrap().is_none(),
            "{engine:?}: nothing written"
        );

        let bad_code = db
            .store
            .create_practice(
                &enroll_store::NewPractice {
                    code: "LAKE SIDE".into(),
                    name: "Lakeside".into(),
                    schedule: Schedule::office_hours("America/Chicago"),
                },
                "test",
                now,
            )
            .await;
        assert!(
            matches!(&bad_code, Err(StoreError::Invalid(m)) if m.contains("invalid practice code")),
            "{engine:?}: {bad_code:?}"
        );
    })
    .await;
}

/// The Integration Tool's go-live count: active, declined and merged-away
/// charts are not ready; a chart lacking fields counts once per field.
#[tokio::test]
async fn readiness_counts_the_charts_an_invite_could_go_to_and_what_the_others_lack() {
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("READY", now).await;
        let other = db.always_open_practice("OTHER", now).await;
        let store = &db.store;
        new_patient(store, practice.id, "R1", &complete("Ana", "One"), now).await;
        new_patient(store, practice.id, "R2", &complete("Bea", "Two"), now).await;
        let active = new_patient(store, practice.id, "R3", &complete("Cy", "Three"), now).await;
        store.mark_activated(active, &api(), now).await.unwrap();
        let declined = new_patient(store, practice.id, "R4", &complete("Di", "Four"), now).await;
        store
            .set_response(
                declined,
                Some(enroll_core::PatientResponse::Declined),
                &api(),
                now,
            )
            .await
            .unwrap();
        let no_email = Demographics {
            email: None,
            ..complete("Ed", "Five")
        };
        new_patient(store, practice.id, "R5", &no_email, now).await;
        let blank_zip_no_email = Demographics {
            email: Some("  ".into()),
            zip: None,
            ..complete("Flo", "Six")
        };
        new_patient(store, practice.id, "R6", &blank_zip_no_email, now).await;
        new_patient(store, other.id, "X1", &complete("Gus", "Other"), now).await;

        let readiness = store.readiness(practice.id).await.unwrap();
        assert_eq!(readiness.patients, 6, "{engine:?}");
        assert_eq!(readiness.ready, 2, "{engine:?}");
        let missing: Vec<(&str, i64)> = readiness
            .missing
            .iter()
            .map(|(field, n)| (field.key(), *n))
            .collect();
        assert_eq!(
            missing,
            [
                ("first_name", 0),
                ("last_name", 0),
                ("date_of_birth", 0),
                ("birth_sex", 0),
                ("zip", 1),
                ("email", 2)
            ],
            "{engine:?}"
        );
        let empty = db.always_open_practice("EMPTY", now).await;
        let none = store.readiness(empty.id).await.unwrap();
        assert_eq!((none.patients, none.ready), (0, 0), "{engine:?}");
    })
    .await;
}

/// The work lists on both engines: each list finds its patients, in name
/// order, a page at a time, and never another practice's.
#[tokio::test]
async fn work_lists_find_their_patients_in_name_order_within_the_users_practices() {
    use enroll_store::{WorkList, WorkListQuery};
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("WORK", now).await;
        let other = db.always_open_practice("ELSEWHERE", now).await;
        for p in [practice.id, other.id] {
            db.store.set_auto_invites(p, false, None).await.unwrap();
        }
        let store = &db.store;
        let add = async |mrn: &str, d: Demographics| new_patient(store, practice.id, mrn, &d, now).await;
        let adams = add("W1", complete("Ann", "Adams")).await;
        let baker = add("W2", Demographics { email: None, ..complete("Bo", "Baker") }).await;
        let clark = add("W3", complete("Cy", "Clark")).await;
        let davis = add("W4", complete("Di", "Davis")).await;
        let evans = add("W5", complete("Eve", "Evans")).await;
        let fox = add("W6", complete("Flo", "Fox")).await;
        let abbot = add("W7", Demographics { zip: None, ..complete("Al", "Abbot") }).await;
        new_patient(store, other.id, "X1", &Demographics { email: None, ..complete("Oz", "Other") }, now).await;
        for id in [adams, clark, davis, fox] {
            store.enroll_now(id, None, &api(), now).await.unwrap();
        }
        let ten_days_ago = (now - SignedDuration::from_hours(240)).as_millisecond();
        db.execute(&format!(
            "UPDATE invites SET state = 'sent', sent_at = {ten_days_ago} WHERE patient_id IN ({adams}, {fox})"
        ))
        .await
        .unwrap();
        db.execute(&format!("UPDATE invites SET state = 'failed', failure_reason = 'mailbox unavailable' WHERE patient_id = {clark}")).await.unwrap();
        db.execute(&format!("UPDATE invites SET state = 'suppressed' WHERE patient_id = {davis}")).await.unwrap();
        db.execute(&format!("UPDATE patients SET email_opted_out = TRUE WHERE id = {evans}")).await.unwrap();
        store.mark_activated(fox, &api(), now).await.unwrap();

        let scope = PracticeScope::Only(vec![practice.id]);
        let list = async |list: WorkList, limit: i64, offset: i64| {
            let q = WorkListQuery { list, scope: scope.clone(), limit, offset, now };
            let page = store.work_list(&q).await.unwrap();
            let ids: Vec<i64> = page.entries.iter().map(|e| e.patient.id).collect();
            (ids, page.total)
        };
        assert_eq!(list(WorkList::MissingFields, 50, 0).await, (vec![abbot, baker], 2), "{engine:?}");
        assert_eq!(list(WorkList::MissingFields, 1, 1).await, (vec![baker], 2), "a page");
        assert_eq!(list(WorkList::FailedDeliveries, 50, 0).await, (vec![clark], 1), "{engine:?}");
        assert_eq!(list(WorkList::Suppressed, 50, 0).await, (vec![davis], 1), "{engine:?}");
        let week = WorkList::NotActiveAfter(SignedDuration::from_hours(168));
        assert_eq!(list(week, 50, 0).await, (vec![adams], 1), "{engine:?}: not Fox, active");
        let fortnight = WorkList::NotActiveAfter(SignedDuration::from_hours(336));
        assert_eq!(list(fortnight, 50, 0).await, (vec![], 0));
        assert_eq!(list(WorkList::OptedOut, 50, 0).await, (vec![evans], 1));
        let failed = store
            .work_list(&WorkListQuery { list: WorkList::FailedDeliveries, scope: scope.clone(), limit: 5, offset: 0, now })
            .await
            .unwrap();
        let reason = failed.entries[0].latest_invite.as_ref().unwrap().failure_reason.clone();
        assert_eq!(reason.as_deref(), Some("mailbox unavailable"));
        let everywhere = WorkListQuery { list: WorkList::MissingFields, scope: PracticeScope::All, limit: 50, offset: 0, now };
        assert_eq!(store.work_list(&everywhere).await.unwrap().total, 3, "{engine:?}");
        let nowhere = WorkListQuery { scope: PracticeScope::Only(vec![]), ..everywhere };
        assert_eq!(store.work_list(&nowhere).await.unwrap().total, 0);
    })
    .await;
}

/// The SQLite file holds PHI: it is created readable and writable by its
/// owner only, whatever the umask, and SQLite gives its WAL the same mode.
#[cfg(unix)]
#[tokio::test]
async fn a_new_sqlite_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.db");
    let store = Store::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600, "{:o}", mode(&path));
    let wal = dir.path().join("new.db-wal");
    assert!(wal.exists());
    assert_eq!(mode(&wal), 0o600, "{:o}", mode(&wal));
    store.close().await;
}

/// The audit lines the go-live tests give the store to write with a run's
/// start and changes.
fn started_audit(run: &enroll_store::GoLiveRun) -> enroll_store::Audit {
    let target = enroll_store::AuditTarget::Practice(run.practice_id);
    enroll_store::Audit::new("admin", "go_live.start", target)
}

fn changed_audit(
    before: &enroll_store::GoLiveRun,
    after: &enroll_store::GoLiveRun,
) -> enroll_store::Audit {
    let target = enroll_store::AuditTarget::Practice(after.practice_id);
    let detail = format!("{} -> {}", before.state.key(), after.state.key());
    enroll_store::Audit::new("admin", "go_live.change", target).with_detail(detail)
}

/// "Invite existing patients" (go-live): the run lists the eligible charts
/// never invited, releases one per interval of its rate, decides each at
/// its turn with the rules of that moment, and a second run lists no one
/// the first invited.
#[tokio::test]
async fn a_go_live_run_invites_each_eligible_chart_once_at_its_rate() {
    use enroll_core::{GoLiveRunState, Throttle};
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("GOLIVE", now).await;
        let store = &db.store;
        // Auto invites off (the charts were there before go-live): the run
        // is the administrator's own action.
        store.set_auto_invites(practice.id, false, None).await.unwrap();
        let ana = new_patient(store, practice.id, "G1", &complete("Ana", "One"), now).await;
        let bea = new_patient(store, practice.id, "G2", &complete("Bea", "Two"), now).await;
        let cy = new_patient(store, practice.id, "G3", &complete("Cy", "Three"), now).await;
        let dee = new_patient(store, practice.id, "G4", &complete("Dee", "Four"), now).await;
        // Invited already (Enroll Now), missing an email, active: not listed.
        let invited = new_patient(store, practice.id, "G5", &complete("Eve", "Five"), now).await;
        store.enroll_now(invited, None, &api(), now).await.unwrap();
        let no_email = Demographics {
            email: None,
            ..complete("Flo", "Six")
        };
        new_patient(store, practice.id, "G6", &no_email, now).await;
        let active = new_patient(store, practice.id, "G7", &complete("Gus", "Seven"), now).await;
        store.mark_activated(active, &api(), now).await.unwrap();

        assert_eq!(store.go_live_candidates(practice.id).await.unwrap(), 4, "{engine:?}");
        let sixty = Throttle::per_hour(60).unwrap();
        let run = store.start_go_live(practice.id, sixty, "admin", started_audit, now).await.unwrap();
        assert_eq!((run.total, run.state), (4, GoLiveRunState::Running), "{engine:?}");
        let again = store.start_go_live(practice.id, sixty, "admin", started_audit, now).await;
        assert!(
            matches!(&again, Err(StoreError::Invalid(m)) if m.contains("already under way")),
            "{engine:?}: {again:?}"
        );

        let minute = SignedDuration::from_mins(1);
        let release = async |at: Timestamp| store.release_go_live(at, 100).await.unwrap();
        assert_eq!(release(now).await, 1, "{engine:?}: the first at once");
        assert_eq!(release(now + SignedDuration::from_secs(59)).await, 0, "{engine:?}");
        // Before Cy's turn, Cy activates and Bea... stays eligible.
        store.mark_activated(cy, &api(), now).await.unwrap();
        assert_eq!(release(now + minute).await, 1, "{engine:?}: one a minute");
        // Dee had 4 Enroll Now sends since the run listed her: capped.
        for _ in 0..4 {
            store.enroll_now(dee, None, &api(), now).await.unwrap();
        }
        assert_eq!(release(now + minute * 3).await, 2, "{engine:?}: Cy's and Dee's turns");

        let progress = store.go_live_progress(practice.id).await.unwrap().unwrap();
        assert_eq!(progress.run.state, GoLiveRunState::Finished, "{engine:?}");
        assert_eq!(
            (progress.sending, progress.skipped, progress.suppressed, progress.waiting),
            (2, 1, 1, 0),
            "{engine:?}: Ana and Bea queued, Cy skipped (active), Dee capped"
        );
        for (patient, expected) in [(ana, 1), (bea, 1), (cy, 0)] {
            let go_live: Vec<_> = store
                .patient_invites(patient)
                .await
                .unwrap()
                .into_iter()
                .filter(|i| i.trigger.as_deref() == Some("go_live"))
                .collect();
            assert_eq!(go_live.len(), expected, "{engine:?} patient {patient}");
            if let Some(invite) = go_live.first() {
                assert_eq!(invite.state, InviteState::Queued, "{engine:?}");
                assert_eq!(invite.actor, None, "{engine:?}: not an Enroll Now");
            }
        }
        let dee_go_live = store.patient_invites(dee).await.unwrap();
        assert!(
            dee_go_live.iter().any(|i| i.state == InviteState::Suppressed
                && i.trigger.as_deref() == Some("go_live")
                && i.next_possible_at.is_some()),
            "{engine:?}: Dee's turn is a suppressed invite with its next possible date"
        );
        // Running it twice invites no one twice.
        assert_eq!(store.go_live_candidates(practice.id).await.unwrap(), 0, "{engine:?}");
        let twice = store.start_go_live(practice.id, sixty, "admin", started_audit, now + minute * 5).await;
        assert!(
            matches!(&twice, Err(StoreError::Invalid(m)) if m.contains("no patient can be invited now")),
            "{engine:?}: {twice:?}"
        );
    })
    .await;
}

/// A run releases only while the schedule is open, catches up at most a
/// minute's worth at the opening, and pauses, resumes and cancels.
#[tokio::test]
async fn a_go_live_run_keeps_to_the_schedule_and_can_be_paused_and_cancelled() {
    use enroll_core::{GoLiveChange, GoLiveRunState, Throttle};
    on_each_engine(async |engine, db| {
        // Wednesday 18:00 in New York: office hours (08:00-17:00) are over.
        let evening: Timestamp = "2026-11-25T23:00:00Z".parse().unwrap();
        let practice = db
            .store
            .create_practice(
                &enroll_store::NewPractice {
                    code: "HOURS".into(),
                    name: "Office hours".into(),
                    schedule: Schedule::office_hours("America/New_York"),
                },
                "test",
                evening,
            )
            .await
            .unwrap();
        let store = &db.store;
        for i in 0..10 {
            let d = complete(&format!("P{i}"), "Patient");
            new_patient(store, practice.id, &format!("H{i}"), &d, evening).await;
        }
        let hourly_120 = Throttle::per_hour(120).unwrap();
        let run = store
            .start_go_live(practice.id, hourly_120, "admin", started_audit, evening)
            .await
            .unwrap();
        assert_eq!(run.total, 10, "{engine:?}");
        let release = async |at: Timestamp| store.release_go_live(at, 100).await.unwrap();
        assert_eq!(
            release(evening).await,
            0,
            "{engine:?}: closed in the evening"
        );
        // Thursday 08:00:30: open for 30 seconds after a night of waiting;
        // a minute's worth (2) plus the one due now, not 14 hours' worth.
        let morning: Timestamp = "2026-11-26T13:00:30Z".parse().unwrap();
        assert_eq!(release(morning).await, 3, "{engine:?}");

        store
            .change_go_live(run.id, GoLiveChange::Pause, changed_audit, morning)
            .await
            .unwrap();
        assert_eq!(
            release(morning + SignedDuration::from_mins(10)).await,
            0,
            "{engine:?}: paused"
        );
        let resumed = store
            .change_go_live(
                run.id,
                GoLiveChange::Resume,
                changed_audit,
                morning + SignedDuration::from_mins(10),
            )
            .await
            .unwrap();
        assert_eq!(resumed.state, GoLiveRunState::Running, "{engine:?}");
        assert_eq!(
            release(morning + SignedDuration::from_mins(10)).await,
            1,
            "{engine:?}"
        );
        let paused_twice = store
            .change_go_live(run.id, GoLiveChange::Resume, changed_audit, morning)
            .await;
        assert!(
            matches!(paused_twice, Err(StoreError::Invalid(_))),
            "{engine:?}"
        );

        let cancelled = store
            .change_go_live(
                run.id,
                GoLiveChange::Cancel,
                changed_audit,
                morning + SignedDuration::from_mins(11),
            )
            .await
            .unwrap();
        assert_eq!(cancelled.state, GoLiveRunState::Cancelled, "{engine:?}");
        assert_eq!(
            release(morning + SignedDuration::from_mins(30)).await,
            0,
            "{engine:?}"
        );
        let progress = store.go_live_progress(practice.id).await.unwrap().unwrap();
        assert_eq!((progress.sending, progress.cancelled), (4, 6), "{engine:?}");
        // Each change is audited with it; the refused resume wrote nothing.
        let audited: Vec<(String, Option<String>)> = store
            .audit_log(None, 20)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.action.starts_with("go_live."))
            .map(|e| (e.action, e.detail))
            .collect();
        let line =
            |action: &str, detail: Option<&str>| (action.to_string(), detail.map(String::from));
        assert_eq!(
            audited,
            [
                line("go_live.change", Some("running -> cancelled")),
                line("go_live.change", Some("paused -> running")),
                line("go_live.change", Some("running -> paused")),
                line("go_live.start", None),
            ],
            "{engine:?}"
        );
        // The six never invited can be listed by a new run; the four not.
        assert_eq!(
            store.go_live_candidates(practice.id).await.unwrap(),
            6,
            "{engine:?}"
        );
    })
    .await;
}

/// Two instances releasing at the same moment share the run's rate: the
/// run's row is locked and read again in each release.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_releasing_a_go_live_run_at_once_release_each_turn_once() {
    use enroll_core::Throttle;
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("RACE", now).await;
        let store = &db.store;
        store
            .set_auto_invites(practice.id, false, None)
            .await
            .unwrap();
        for i in 0..20 {
            let d = complete(&format!("R{i}"), "Racer");
            new_patient(store, practice.id, &format!("R{i}"), &d, now).await;
        }
        let run = store
            .start_go_live(
                practice.id,
                Throttle::per_hour(600).unwrap(),
                "admin",
                started_audit,
                now,
            )
            .await
            .unwrap();
        assert_eq!(run.total, 20, "{engine:?}");
        // 600 an hour: one each 6 s; at +30 s six turns are due.
        let at = now + SignedDuration::from_secs(30);
        let other = store.clone();
        let (a, b) = tokio::join!(
            store.release_go_live(at, 100),
            other.release_go_live(at, 100)
        );
        assert_eq!(a.unwrap() + b.unwrap(), 6, "{engine:?}");
        let progress = store.go_live_progress(practice.id).await.unwrap().unwrap();
        assert_eq!((progress.sending, progress.waiting), (6, 14), "{engine:?}");
    })
    .await;
}
