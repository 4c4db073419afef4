//! The HL7 intake transaction (`Store::receive_hl7`, store/src/intake.rs)
//! called directly, on both engines: routing by MSH-4, deduplication, what
//! an update overlays, deceased before triggers, encounters and
//! appointments as triggers only when new, and a merge of a chart we only
//! know by its old MRN. The MLLP tests of the server cover the same path
//! through a socket; these say which part of it is the store's. The same
//! events given to `Store::apply_intake` (the API's, the CLI's, next
//! FHIR's and CSV's way in) answer what they did.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use enroll_core::{
    AppointmentStatus, AutoDecision, Demographics, Field, IfKnown, IntakeEvent, PatientChange,
    Trigger,
};
use enroll_store::testing::{TestDb, on_each_engine, scalar};
use enroll_store::{
    InboundMessage, IntakeOutcome, IntakeProblem, MessageStatus, Patient, PatientSearch,
    ProblemKind, Received, SaveOutcome, Source, Store, StoreError,
};
use jiff::Timestamp;

/// Wednesday 2026-11-25 15:00 in New York.
fn now() -> Timestamp {
    "2026-11-25T20:00:00Z".parse().unwrap()
}

fn complete() -> Demographics {
    Demographics {
        first_name: Some("Ida".into()),
        last_name: Some("Wells".into()),
        date_of_birth: Some("1962-07-16".into()),
        birth_sex: Some("F".into()),
        zip: Some("60616".into()),
        email: Some("ida@example.org".into()),
        cell_phone: None,
    }
}

fn change(mrn: &str, sent: Demographics) -> PatientChange {
    PatientChange {
        mrn: mrn.into(),
        sent,
        ..PatientChange::default()
    }
}

/// A message from EHR at `facility` (the raw bytes only need to be kept).
fn message(
    facility: &str,
    control_id: &str,
    parsed: Result<IntakeEvent, IntakeProblem>,
) -> InboundMessage<'static> {
    InboundMessage {
        raw: b"MSH|^~\\&|EHR|...",
        peer: None,
        listener: None,
        received_at: now(),
        sending_app: "EHR".into(),
        sending_facility: facility.into(),
        control_id: control_id.into(),
        message_type: "ADT^A04".into(),
        deduplicate: true,
        notes: None,
        parsed,
    }
}

/// The ACK texts the store is given: `AA` or `AE <kind> <location>`.
fn ack(problem: Option<&IntakeProblem>) -> String {
    match problem {
        None => "AA".into(),
        Some(p) => format!("AE {:?} {}", p.kind, p.location.as_deref().unwrap_or("")),
    }
}

async fn receive(store: &Store, message: &InboundMessage<'_>) -> Received {
    store.receive_hl7(message, ack).await.unwrap()
}

async fn by_mrn(store: &Store, mrn: &str) -> Option<Patient> {
    let query = PatientSearch {
        terms: enroll_core::SearchTerms {
            mrn: Some(mrn.into()),
            ..enroll_core::SearchTerms::default()
        },
        practice_id: None,
        scope: enroll_core::PracticeScope::All,
        limit: None,
    };
    store.search_patients(&query).await.unwrap().pop()
}

async fn count(db: &TestDb, table: &str) -> i64 {
    scalar(&db.store, &format!("SELECT COUNT(*) FROM {table}"))
        .await
        .unwrap()
}

/// The keys of the triggers on a patient's timeline, oldest first.
async fn triggers(store: &Store, patient_id: i64) -> Vec<String> {
    let timeline = store.patient_timeline(patient_id).await.unwrap();
    let mut keys: Vec<(i64, String)> = timeline
        .iter()
        .filter(|e| e.kind == "trigger")
        .map(|e| (e.id, e.detail["trigger"]["kind"].as_str().unwrap().into()))
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, key)| key).collect()
}

async fn timeline_kinds(store: &Store, patient_id: i64) -> Vec<String> {
    let timeline = store.patient_timeline(patient_id).await.unwrap();
    timeline.into_iter().map(|e| e.kind).collect()
}

#[tokio::test]
async fn a_message_goes_to_the_practice_its_facility_names_and_an_unmapped_one_waits_unapplied() {
    on_each_engine(async |engine, db| {
        let practice = db.always_open_practice("NORTH", now()).await;
        let register = |control_id: &str| {
            message(
                "CLINIC7",
                control_id,
                Ok(IntakeEvent::register(change("M-1", complete()))),
            )
        };

        // No practice has the code CLINIC7 and no setting maps it.
        let first = register("C-1");
        let received = receive(&db.store, &first).await;
        assert_eq!(received.status, MessageStatus::Error, "{engine:?}");
        assert_eq!(received.ack, "AE UnknownValue MSH-4");
        assert_eq!(received.patient_id, None);
        let stored = db
            .store
            .hl7_message(received.message_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                stored.practice_id,
                stored.error_location.as_deref(),
                stored.ack_code.as_str()
            ),
            (None, Some("MSH-4"), "AE"),
        );
        assert!(stored.error.unwrap().contains("hl7/facility/CLINIC7"));
        assert_eq!(count(db, "patients").await, 0, "nothing applied");

        // `hl7/facility/CLINIC7` names the practice: the next message lands.
        db.store
            .put_setting(&enroll_store::facility_setting_key("CLINIC7"), "NORTH")
            .await
            .unwrap();
        let received = receive(&db.store, &register("C-2")).await;
        assert_eq!(received.status, MessageStatus::Applied, "{engine:?}");
        let patient = by_mrn(&db.store, "M-1").await.unwrap();
        assert_eq!(
            (Some(patient.id), patient.practice_id),
            (received.patient_id, practice.id)
        );

        // The first message, reprocessed now that it routes, is applied;
        // an applied message is never applied twice.
        let stored = db
            .store
            .reprocess_hl7(first_id(db, "C-1").await, &first, "ada", now(), ack)
            .await
            .unwrap();
        assert_eq!(stored.status, MessageStatus::Applied);
        assert_eq!(stored.practice_id, Some(practice.id));
        let again = db
            .store
            .reprocess_hl7(stored.id, &first, "ada", now(), ack)
            .await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        assert_eq!(count(db, "patients").await, 1);
    })
    .await;
}

async fn first_id(db: &TestDb, control_id: &str) -> i64 {
    scalar(
        &db.store,
        &format!("SELECT MIN(id) FROM hl7_messages WHERE control_id = '{control_id}'"),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_repeated_control_id_gets_the_stored_ack_and_is_not_applied_again() {
    on_each_engine(async |engine, db| {
        db.always_open_practice("TEST", now()).await;
        let acks_built = AtomicUsize::new(0);
        let counting_ack = |problem: Option<&IntakeProblem>| {
            let n = acks_built.fetch_add(1, Ordering::SeqCst);
            format!("{} #{n}", ack(problem))
        };
        let first = message(
            "TEST",
            "C-1",
            Ok(IntakeEvent::register(change("M-1", complete()))),
        );
        let original = db.store.receive_hl7(&first, counting_ack).await.unwrap();
        assert_eq!(
            (original.status, original.ack.as_str()),
            (MessageStatus::Applied, "AA #0")
        );

        // The same sender and control id with other content.
        let other_zip = Demographics {
            zip: Some("10001".into()),
            ..complete()
        };
        let repeat = message(
            "TEST",
            "C-1",
            Ok(IntakeEvent::Update(change("M-1", other_zip))),
        );
        let received = db.store.receive_hl7(&repeat, counting_ack).await.unwrap();
        assert_eq!(received.status, MessageStatus::Duplicate, "{engine:?}");
        assert_eq!(received.duplicate_of, Some(original.message_id));
        assert_eq!(received.ack, "AA #0", "the stored ACK, not a new one");
        assert_eq!(acks_built.load(Ordering::SeqCst), 1);
        let patient = by_mrn(&db.store, "M-1").await.unwrap();
        assert_eq!(
            patient.demographics.zip.as_deref(),
            Some("60616"),
            "not applied"
        );
        assert_eq!(triggers(&db.store, patient.id).await, ["chart_added"]);

        // Without a control id nothing can be recognised: each is applied.
        for _ in 0..2 {
            let unnamed = message(
                "TEST",
                "",
                Ok(IntakeEvent::register(change("M-2", complete()))),
            );
            let received = db.store.receive_hl7(&unnamed, counting_ack).await.unwrap();
            assert_eq!(received.status, MessageStatus::Applied, "{engine:?}");
        }
        assert_eq!(count(db, "hl7_messages").await, 4);
    })
    .await;
}

#[tokio::test]
async fn an_update_keeps_what_it_did_not_send_and_the_hl7_null_clears() {
    on_each_engine(async |engine, db| {
        db.always_open_practice("TEST", now()).await;
        receive(
            &db.store,
            &message(
                "TEST",
                "C-1",
                Ok(IntakeEvent::register(change("M-1", complete()))),
            ),
        )
        .await;

        let only_zip = Demographics {
            zip: Some("10001".into()),
            ..Demographics::default()
        };
        receive(
            &db.store,
            &message(
                "TEST",
                "C-2",
                Ok(IntakeEvent::Update(change("M-1", only_zip))),
            ),
        )
        .await;
        let patient = by_mrn(&db.store, "M-1").await.unwrap();
        assert_eq!(
            patient.demographics.zip.as_deref(),
            Some("10001"),
            "{engine:?}"
        );
        assert_eq!(
            patient.demographics.email.as_deref(),
            Some("ida@example.org"),
            "not sent: kept"
        );

        let cleared = PatientChange {
            cleared: vec![Field::Email],
            ..change("M-1", Demographics::default())
        };
        receive(
            &db.store,
            &message("TEST", "C-3", Ok(IntakeEvent::Update(cleared))),
        )
        .await;
        let patient = by_mrn(&db.store, "M-1").await.unwrap();
        assert_eq!(patient.demographics.email, None, "{engine:?}: cleared");
        assert_eq!(patient.demographics.first_name.as_deref(), Some("Ida"));
        assert_eq!(
            triggers(&db.store, patient.id).await,
            [
                "chart_added",
                "required_fields_changed",
                "required_fields_changed"
            ],
            "{engine:?}"
        );

        // An update for an MRN we do not know adds the chart.
        receive(
            &db.store,
            &message(
                "TEST",
                "C-4",
                Ok(IntakeEvent::Update(change("M-9", complete()))),
            ),
        )
        .await;
        let added = by_mrn(&db.store, "M-9").await.expect("added");
        assert_eq!(triggers(&db.store, added.id).await, ["chart_added"]);
    })
    .await;
}

#[tokio::test]
async fn a_new_chart_marked_deceased_is_never_invited() {
    on_each_engine(async |engine, db| {
        db.always_open_practice("TEST", now()).await;
        let deceased = PatientChange {
            deceased: true,
            ..change("M-1", complete())
        };
        let received = receive(
            &db.store,
            &message("TEST", "C-1", Ok(IntakeEvent::register(deceased))),
        )
        .await;
        assert_eq!(received.status, MessageStatus::Applied, "{engine:?}");
        let patient = by_mrn(&db.store, "M-1").await.unwrap();
        assert!(patient.deceased);
        // The flag is written before the chart-added trigger is decided.
        assert_eq!(
            count(db, "invites").await,
            0,
            "{engine:?}: no invite, not even one cancelled"
        );
        assert_eq!(triggers(&db.store, patient.id).await, ["chart_added"]);
    })
    .await;
}

#[tokio::test]
async fn encounters_and_appointments_are_triggers_only_when_new() {
    on_each_engine(async |engine, db| {
        db.always_open_practice("TEST", now()).await;
        let upsert = IntakeEvent::register(change("M-1", complete()));
        let patient_id = receive(&db.store, &message("TEST", "C-1", Ok(upsert)))
            .await
            .patient_id
            .unwrap();
        let encounter = || IntakeEvent::Encounter {
            patient: change("M-1", Demographics::default()),
            visit_number: "V-1".into(),
            patient_class: Some("O".into()),
            admitted_at: None,
        };
        let appointment = |status| IntakeEvent::Appointment {
            patient: change("M-1", Demographics::default()),
            appointment_id: "A-1".into(),
            status,
            starts_at: Some("20261201090000".into()),
        };
        let events = [
            encounter(),
            encounter(),
            appointment(AppointmentStatus::Booked),
            appointment(AppointmentStatus::Modified),
            appointment(AppointmentStatus::Booked),
        ];
        for (n, event) in events.into_iter().enumerate() {
            let received = receive(
                &db.store,
                &message("TEST", &format!("C-{}", n + 2), Ok(event)),
            )
            .await;
            assert_eq!(received.status, MessageStatus::Applied, "{engine:?}");
        }
        assert_eq!(
            triggers(&db.store, patient_id).await,
            ["chart_added", "new_encounter", "new_appointment"],
            "{engine:?}"
        );
        assert_eq!(count(db, "encounters").await, 1);
        let kinds = timeline_kinds(&db.store, patient_id).await;
        for kind in [
            "appointment_booked",
            "appointment_modified",
            "appointment_repeated",
        ] {
            assert_eq!(
                kinds.iter().filter(|k| *k == kind).count(),
                1,
                "{kind}: {kinds:?}"
            );
        }
        // R6: one waiting auto invite; the later triggers attached to it.
        assert_eq!(count(db, "invites").await, 1, "{engine:?}");
    })
    .await;
}

#[tokio::test]
async fn a_message_without_an_mrn_or_a_merge_of_an_unknown_survivor() {
    on_each_engine(async |engine, db| {
        db.always_open_practice("TEST", now()).await;
        let no_mrn = IntakeEvent::register(change("  ", complete()));
        let received = receive(&db.store, &message("TEST", "C-1", Ok(no_mrn))).await;
        assert_eq!(
            (received.status, received.ack.as_str()),
            (MessageStatus::Error, "AE MissingField PID-3"),
            "{engine:?}"
        );
        assert_eq!(count(db, "patients").await, 0);

        // A40 naming a survivor we do not know: the merged chart we know
        // takes the surviving MRN, with its history.
        let old = receive(
            &db.store,
            &message(
                "TEST",
                "C-2",
                Ok(IntakeEvent::register(change("OLD-1", complete()))),
            ),
        )
        .await;
        let merge = IntakeEvent::Merge {
            patient: change("NEW-1", Demographics::default()),
            merged_mrn: "OLD-1".into(),
            merged_assigning_authority: None,
        };
        let merged = receive(&db.store, &message("TEST", "C-3", Ok(merge))).await;
        assert_eq!(merged.status, MessageStatus::Applied, "{engine:?}");
        assert_eq!(merged.patient_id, old.patient_id, "the same chart");
        assert!(by_mrn(&db.store, "OLD-1").await.is_none());
        let renamed = by_mrn(&db.store, "NEW-1").await.unwrap();
        assert_eq!(Some(renamed.id), old.patient_id);
        assert!(
            timeline_kinds(&db.store, renamed.id)
                .await
                .contains(&"mrn_changed".to_string())
        );
        assert_eq!(count(db, "patients").await, 1);
    })
    .await;
}

fn applied(outcome: IntakeOutcome) -> SaveOutcome {
    match outcome {
        IntakeOutcome::Applied(saved) => saved,
        IntakeOutcome::Refused(problem) => panic!("refused: {problem:?}"),
    }
}

/// `Store::apply_intake`, the one store function outside the HL7 message
/// transaction: a registration adds the chart and answers with its
/// trigger's decision; an update overlays what it sent, with the source on
/// every line; an appointment is a trigger once; a registration that
/// refuses a known MRN writes nothing; an event without an MRN is refused
/// with the problem and writes nothing either.
#[tokio::test]
async fn apply_intake_answers_what_it_did_and_records_its_source() {
    on_each_engine(async |engine, db| {
        let practice = db.always_open_practice("TEST", now()).await;
        let source = Source::new("fhir", Some("importer")).with_reference("Patient/7");
        let apply = async |event: IntakeEvent| {
            db.store
                .apply_intake(practice.id, &event, &source, now())
                .await
        };

        let added = applied(
            apply(IntakeEvent::register(change("M-1", complete())))
                .await
                .unwrap(),
        );
        assert!(added.created, "{engine:?}");
        assert_eq!(added.patient.mrn, "M-1");
        assert_eq!(added.patient.demographics, complete());
        assert_eq!(added.triggers.len(), 1, "{engine:?}");
        assert_eq!(added.triggers[0].trigger, Trigger::ChartAdded);
        assert_eq!(added.triggers[0].decision, AutoDecision::SendNow);
        assert!(added.triggers[0].invite_id.is_some());

        let zip = Demographics {
            zip: Some("10001".into()),
            ..Demographics::default()
        };
        let updated = applied(
            apply(IntakeEvent::Update(change("M-1", zip)))
                .await
                .unwrap(),
        );
        assert!(!updated.created);
        assert_eq!(updated.patient.id, added.patient.id);
        assert_eq!(updated.patient.demographics.zip.as_deref(), Some("10001"));
        assert_eq!(
            updated.patient.demographics.email.as_deref(),
            Some("ida@example.org"),
            "not sent: kept"
        );
        assert_eq!(
            updated.triggers[0].trigger,
            Trigger::RequiredFieldsChanged {
                fields: vec![Field::Zip]
            }
        );
        // R6: the chart-added invite is still waiting; this one attaches.
        assert_eq!(updated.triggers[0].decision, AutoDecision::Coalesced);

        let booking = || IntakeEvent::Appointment {
            patient: change("M-1", Demographics::default()),
            appointment_id: "A-1".into(),
            status: AppointmentStatus::Booked,
            starts_at: None,
        };
        let booked = applied(apply(booking()).await.unwrap());
        assert_eq!(
            booked.triggers.last().map(|t| &t.trigger),
            Some(&Trigger::NewAppointment)
        );
        let repeated = applied(apply(booking()).await.unwrap());
        assert!(
            repeated.triggers.is_empty(),
            "{engine:?}: {:?}",
            repeated.triggers
        );

        let timeline = db.store.patient_timeline(added.patient.id).await.unwrap();
        assert!(
            timeline.iter().all(|e| e.source == "fhir"
                && e.actor.as_deref() == Some("importer")
                && e.reference.as_deref() == Some("Patient/7")),
            "{engine:?}: {timeline:?}"
        );

        let lines = timeline.len();
        let again = IntakeEvent::Register {
            patient: change("M-1", complete()),
            if_known: IfKnown::Refuse,
        };
        assert!(
            matches!(apply(again).await, Err(StoreError::DuplicateMrn)),
            "{engine:?}"
        );
        let no_mrn = apply(IntakeEvent::register(change(" ", complete())))
            .await
            .unwrap();
        match no_mrn {
            IntakeOutcome::Refused(problem) => {
                assert_eq!(problem.kind, ProblemKind::MissingField, "{engine:?}");
            }
            other => panic!("{engine:?}: {other:?}"),
        }
        let after = db.store.patient_timeline(added.patient.id).await.unwrap();
        assert_eq!(after.len(), lines, "{engine:?}: nothing written");
        assert_eq!(count(db, "patients").await, 1);
        assert!(matches!(
            db.store
                .apply_intake(practice.id + 1000, &booking(), &source, now())
                .await,
            Err(StoreError::NotFound("practice"))
        ));
    })
    .await;
}

/// An encounter or appointment that names a known chart by its MRN alone
/// (a FHIR Encounter, Appointment) leaves the chart as it was: its data
/// and `updated_at` unchanged, and no empty "demographics updated" line.
#[tokio::test]
async fn an_event_naming_only_the_mrn_changes_nothing_of_the_chart() {
    on_each_engine(async |engine, db| {
        let practice = db.always_open_practice("TEST", now()).await;
        let source = Source::new("fhir", Some("importer"));
        let added = applied(
            db.store
                .apply_intake(
                    practice.id,
                    &IntakeEvent::register(change("M-1", complete())),
                    &source,
                    now(),
                )
                .await
                .unwrap(),
        );
        let later = now() + jiff::SignedDuration::from_hours(1);
        let events = [
            IntakeEvent::Encounter {
                patient: change("M-1", Demographics::default()),
                visit_number: "V-1".into(),
                patient_class: None,
                admitted_at: None,
            },
            IntakeEvent::Appointment {
                patient: change("M-1", Demographics::default()),
                appointment_id: "A-1".into(),
                status: AppointmentStatus::Booked,
                starts_at: None,
            },
        ];
        for event in events {
            let saved = applied(
                db.store
                    .apply_intake(practice.id, &event, &source, later)
                    .await
                    .unwrap(),
            );
            assert_eq!(saved.patient.id, added.patient.id, "{engine:?}");
            assert_eq!(saved.patient.demographics, complete(), "{engine:?}");
            assert_eq!(saved.patient.updated_at, added.patient.updated_at);
        }
        let kinds = timeline_kinds(&db.store, added.patient.id).await;
        assert!(
            !kinds.iter().any(|k| k == "demographics_updated"),
            "{engine:?}: {kinds:?}"
        );
        assert_eq!(
            triggers(&db.store, added.patient.id).await,
            ["chart_added", "new_encounter", "new_appointment"],
            "{engine:?}"
        );
    })
    .await;
}
