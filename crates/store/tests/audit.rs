//! The audit line of a change commits with the change (issue 10 item 6):
//! a refused or failed change leaves no line, a line that cannot be
//! written undoes the change, and each line names its target. Both
//! engines.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enroll_core::{E164Phone, Trigger};
use enroll_store::testing::{Engine, TestDb, complete, on_each_engine, wednesday_afternoon};
use enroll_store::{Audit, AuditEntry, AuditTarget, Practice, PracticeChange, Source, StoreError};

fn staff(action: &str) -> Source {
    Source::new("staff", Some("frontdesk")).audited(action)
}

/// The audit lines, oldest first, but for the harness's own (the test
/// practice's creation, by "test").
async fn lines(db: &TestDb) -> Vec<AuditEntry> {
    let mut lines = db.store.audit_log(None, 1000).await.unwrap();
    lines.retain(|line| line.actor != "test");
    lines.reverse();
    lines
}

/// Makes every insert into audit_log fail, as a full disk or a lost
/// connection would at that statement.
async fn refuse_audit_lines(engine: Engine, db: &TestDb) {
    match engine {
        Engine::Sqlite => {
            db.execute(
                "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log \
                 BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
            )
            .await
            .unwrap();
        }
        Engine::Postgres => {
            db.execute(
                "CREATE FUNCTION audit_refused() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$",
            )
            .await
            .unwrap();
            db.execute(
                "CREATE TRIGGER audit_refused BEFORE INSERT ON audit_log \
                 FOR EACH ROW EXECUTE FUNCTION audit_refused()",
            )
            .await
            .unwrap();
        }
    }
}

async fn accept_audit_lines(engine: Engine, db: &TestDb) {
    let sql = match engine {
        Engine::Sqlite => "DROP TRIGGER audit_refused",
        Engine::Postgres => "DROP TRIGGER audit_refused ON audit_log",
    };
    db.execute(sql).await.unwrap();
}

#[tokio::test]
async fn a_change_and_its_audit_line_commit_together_or_not_at_all() {
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("AUD", now).await;
        db.store
            .set_auto_invites(practice.id, false, None)
            .await
            .unwrap();

        // A change asked for by staff: exactly one line, about the chart.
        let created = db
            .store
            .create_patient(
                practice.id,
                "M1",
                &complete("Ana", "Audit"),
                &staff("patient.create"),
                now,
            )
            .await
            .unwrap();
        let id = created.patient.id;
        let after_create = lines(db).await;
        assert_eq!(after_create.len(), 1, "{engine:?}");
        let line = &after_create[0];
        assert_eq!(line.action, "patient.create", "{engine:?}");
        assert_eq!(line.actor, "frontdesk", "{engine:?}");
        assert_eq!(line.target_type.as_deref(), Some("patient"), "{engine:?}");
        assert_eq!(line.target_id, Some(id), "{engine:?}");
        assert_eq!(line.patient_id, Some(id), "{engine:?}");

        // A refused change (a known MRN) writes no line.
        let duplicate = db
            .store
            .create_patient(
                practice.id,
                "M1",
                &complete("Bo", "Again"),
                &staff("patient.create"),
                now,
            )
            .await;
        assert!(
            matches!(duplicate, Err(StoreError::DuplicateMrn)),
            "{engine:?}"
        );
        assert_eq!(lines(db).await.len(), 1, "{engine:?}");

        // A line that cannot be written undoes its change: the error comes
        // before anything is kept, never after.
        refuse_audit_lines(engine, db).await;
        let failed = db
            .store
            .update_patient(
                id,
                &complete("Ana", "Changed"),
                &staff("patient.update"),
                now,
            )
            .await;
        assert!(failed.is_err(), "{engine:?}");
        let failed_trigger = db
            .store
            .record_trigger(id, Trigger::NewEncounter, &staff("patient.trigger"), now)
            .await;
        assert!(failed_trigger.is_err(), "{engine:?}");
        let failed_enroll = db
            .store
            .enroll_now(id, Some("k1"), &staff("patient.enroll_now"), now)
            .await;
        assert!(failed_enroll.is_err(), "{engine:?}");
        // A change no one audits is not held up.
        let unaudited = Source::new("hl7", None);
        db.store
            .record_trigger(id, Trigger::NewAppointment, &unaudited, now)
            .await
            .unwrap();
        accept_audit_lines(engine, db).await;
        let chart = db.store.patient(id).await.unwrap().unwrap();
        assert_eq!(
            chart.demographics.last_name.as_deref(),
            Some("Audit"),
            "{engine:?}"
        );
        assert!(
            db.store.patient_invites(id).await.unwrap().is_empty(),
            "{engine:?}: the failed Enroll Now queued nothing"
        );
        assert_eq!(lines(db).await.len(), 1, "{engine:?}");

        // Once lines can be written, the same changes leave one line each.
        db.store
            .update_patient(
                id,
                &complete("Ana", "Changed"),
                &staff("patient.update"),
                now,
            )
            .await
            .unwrap();
        db.store
            .enroll_now(id, Some("k1"), &staff("patient.enroll_now"), now)
            .await
            .unwrap();
        let all = lines(db).await;
        let actions: Vec<&str> = all.iter().map(|l| l.action.as_str()).collect();
        assert_eq!(
            actions,
            ["patient.create", "patient.update", "patient.enroll_now"],
            "{engine:?}"
        );
        assert!(
            all.iter()
                .all(|l| l.target_type.as_deref() == Some("patient") && l.target_id == Some(id)),
            "{engine:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_view_line_names_its_target_a_search_its_terms_and_the_ids_shown() {
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("VIEW", now).await;
        let search = AuditTarget::Search {
            terms: "smith 1980".into(),
            ids: vec![3, 5],
        };
        db.store
            .audit(&Audit::new("frontdesk", "patient.search", search), now)
            .await
            .unwrap();
        db.store
            .audit(
                &Audit::new(
                    "admin",
                    "practice.phone",
                    AuditTarget::Practice(practice.id),
                ),
                now,
            )
            .await
            .unwrap();
        db.store
            .audit(
                &Audit::new(
                    "frontdesk",
                    "hl7.message_view",
                    AuditTarget::Message {
                        id: 9,
                        patient_id: Some(3),
                    },
                ),
                now,
            )
            .await
            .unwrap();
        let all = lines(db).await;
        assert_eq!(all.len(), 3, "{engine:?}");
        assert_eq!(all[0].target_type.as_deref(), Some("search"), "{engine:?}");
        assert_eq!(all[0].target_id, None, "{engine:?}");
        assert_eq!(all[0].patient_id, None, "{engine:?}");
        let detail: serde_json::Value =
            serde_json::from_str(all[0].detail.as_deref().unwrap()).unwrap();
        assert_eq!(
            detail,
            serde_json::json!({ "terms": "smith 1980", "ids": "3,5" }),
            "{engine:?}"
        );
        assert_eq!(
            all[1].target_type.as_deref(),
            Some("practice"),
            "{engine:?}"
        );
        assert_eq!(all[1].target_id, Some(practice.id), "{engine:?}");
        assert_eq!(all[1].patient_id, None, "{engine:?}");
        assert_eq!(all[2].target_type.as_deref(), Some("message"), "{engine:?}");
        assert_eq!(all[2].target_id, Some(9), "{engine:?}");
        // Kept with the patient's lines.
        let patients = db.store.audit_log(Some(3), 10).await.unwrap();
        assert_eq!(patients.len(), 1, "{engine:?}");
    })
    .await;
}

#[tokio::test]
async fn a_practice_setting_and_its_audit_line_commit_together() {
    on_each_engine(async |engine, db| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("SET", now).await;
        let phone = E164Phone::parse("+1 617 555 0199").unwrap();
        let audit = |changed: &Practice| {
            Audit::new("admin", "practice.phone", AuditTarget::Practice(changed.id))
                .with_detail(format!("after {:?}", changed.phone))
        };

        refuse_audit_lines(engine, db).await;
        let failed = db
            .store
            .change_practice(practice.id, PracticeChange::Phone(Some(&phone)), audit, now)
            .await;
        assert!(failed.is_err(), "{engine:?}");
        accept_audit_lines(engine, db).await;
        let kept = db.store.practice(practice.id).await.unwrap().unwrap();
        assert_eq!(
            kept.phone, None,
            "{engine:?}: the failed line undid the change"
        );
        assert!(lines(db).await.is_empty(), "{engine:?}");

        let changed = db
            .store
            .change_practice(practice.id, PracticeChange::Phone(Some(&phone)), audit, now)
            .await
            .unwrap();
        assert_eq!(changed.phone.as_deref(), Some(phone.as_str()), "{engine:?}");
        let all = lines(db).await;
        assert_eq!(all.len(), 1, "{engine:?}");
        assert_eq!(
            all[0].target_type.as_deref(),
            Some("practice"),
            "{engine:?}"
        );
        assert_eq!(all[0].target_id, Some(practice.id), "{engine:?}");
        assert_eq!(
            all[0].detail.as_deref(),
            Some("after Some(\"+16175550199\")"),
            "{engine:?}: made from the practice as written"
        );
    })
    .await;
}
