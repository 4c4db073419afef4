//! A roster import (issue 15 item 2) in the store: charts added and
//! updated by MRN in batches, nothing triggered, nothing written twice.
//! Both engines.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enroll_core::{Demographics, IntakeEvent, PatientChange};
use enroll_store::testing::{TestDb, on_each_engine, scalar, wednesday_afternoon};
use enroll_store::{Patient, RosterCounts, Source, StoreError};
use jiff::ToSpan;

/// Wednesday 2026-11-25 15:00 in New York.
fn csv() -> Source {
    Source::new("csv", Some("importer"))
        .with_reference("roster.csv")
        .audited("patient.import")
}

/// A roster row as `RosterColumns::patient` gives it: the values in the
/// store's form, blank cells absent.
fn row(mrn: &str, first: &str, zip: Option<&str>) -> PatientChange {
    PatientChange {
        mrn: mrn.into(),
        sent: Demographics {
            first_name: Some(first.into()),
            last_name: Some("Okafor".into()),
            date_of_birth: Some("1984-03-09".into()),
            birth_sex: Some("F".into()),
            zip: zip.map(Into::into),
            email: Some(format!("{}@example.org", first.to_lowercase())),
            cell_phone: None,
        },
        ..PatientChange::default()
    }
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    scalar(&db.store, sql).await.unwrap()
}

/// The chart of `mrn` (the only practice's).
async fn chart(db: &TestDb, mrn: &str) -> Patient {
    let id = count(db, &format!("SELECT id FROM patients WHERE mrn = '{mrn}'")).await;
    db.store.patient(id).await.unwrap().expect("the chart")
}

/// Timeline lines, audit lines, invites, and the latest write to a chart.
async fn footprint(db: &TestDb) -> [i64; 4] {
    [
        count(db, "SELECT COUNT(*) FROM timeline").await,
        count(db, "SELECT COUNT(*) FROM audit_log").await,
        count(db, "SELECT COUNT(*) FROM invites").await,
        count(db, "SELECT COALESCE(MAX(updated_at), 0) FROM patients").await,
    ]
}

#[tokio::test]
async fn a_roster_adds_charts_without_inviting_and_a_second_import_writes_nothing() {
    on_each_engine(async |_, db: &TestDb| {
        let now = wednesday_afternoon();
        // Auto invites on and the office open: a chart added by any other
        // source would be invited at once (R2 a).
        let practice = db.always_open_practice("NORTH", now).await;
        let rows = [
            row("100", "Ada", Some("02134")),
            row("101", "Bea", Some("02135")),
            row("102", "Cy", None),
        ];
        let first = db
            .store
            .import_roster(practice.id, &rows, &csv(), now)
            .await
            .unwrap();
        assert_eq!(
            first,
            RosterCounts {
                created: 3,
                updated: 0,
                unchanged: 0
            }
        );
        assert_eq!(count(db, "SELECT COUNT(*) FROM patients").await, 3);
        assert_eq!(
            count(db, "SELECT COUNT(*) FROM invites").await,
            0,
            "nothing is sent"
        );
        assert_eq!(
            count(
                db,
                "SELECT COUNT(*) FROM timeline WHERE kind = 'chart_added' AND source = 'csv' \
                 AND reference = 'roster.csv' AND actor = 'importer'"
            )
            .await,
            3
        );
        assert_eq!(
            count(
                db,
                "SELECT COUNT(*) FROM audit_log WHERE action = 'patient.import' \
                 AND target_type = 'patient' AND target_id = patient_id"
            )
            .await,
            3
        );
        let ada = chart(db, "100").await;
        assert_eq!(ada.demographics.first_name.as_deref(), Some("Ada"));
        assert_eq!(ada.demographics.zip.as_deref(), Some("02134"));

        let before = footprint(db).await;
        let again = db
            .store
            .import_roster(practice.id, &rows, &csv(), now + 1.hour())
            .await
            .unwrap();
        assert_eq!(
            again,
            RosterCounts {
                created: 0,
                updated: 0,
                unchanged: 3
            }
        );
        assert_eq!(
            footprint(db).await,
            before,
            "a second import writes nothing"
        );
    })
    .await;
}

#[tokio::test]
async fn a_row_of_a_known_chart_writes_what_it_gives_keeps_the_rest_and_triggers_nothing() {
    on_each_engine(async |_, db: &TestDb| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("NORTH", now).await;
        let mut known = row("200", "Dee", Some("02134"));
        known.sent.cell_phone = Some("+16175550100".into());
        db.store
            .apply_intake(
                practice.id,
                &IntakeEvent::register(known),
                &Source::new("hl7", None),
                now,
            )
            .await
            .unwrap()
            .into_saved()
            .unwrap();
        let invites_before = count(db, "SELECT COUNT(*) FROM invites").await;

        // A new ZIP (a required field) and no cell phone in the file.
        let counts = db
            .store
            .import_roster(
                practice.id,
                &[row("200", "Dee", Some("02139"))],
                &csv(),
                now + 1.minute(),
            )
            .await
            .unwrap();
        assert_eq!(counts.updated, 1);
        let chart = chart(db, "200").await;
        assert_eq!(chart.demographics.zip.as_deref(), Some("02139"));
        assert_eq!(
            chart.demographics.cell_phone.as_deref(),
            Some("+16175550100"),
            "a blank cell keeps what the chart has"
        );
        assert_eq!(
            count(db, "SELECT COUNT(*) FROM invites").await,
            invites_before,
            "a changed required field from a roster is no trigger"
        );
        let timeline = db.store.patient_timeline(chart.id).await.unwrap();
        let updated = timeline
            .iter()
            .find(|line| line.kind == "demographics_updated" && line.source == "csv")
            .expect("the import's line");
        assert_eq!(
            updated.detail["required_fields_changed"],
            serde_json::json!(["zip"])
        );
    })
    .await;
}

#[tokio::test]
async fn a_merged_mrn_writes_its_survivor_and_rows_of_one_mrn_make_one_chart() {
    on_each_engine(async |_, db: &TestDb| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("NORTH", now).await;
        let hl7 = Source::new("hl7", None);
        for mrn in ["300", "301"] {
            db.store
                .apply_intake(
                    practice.id,
                    &IntakeEvent::register(row(mrn, "Eve", Some("02134"))),
                    &hl7,
                    now,
                )
                .await
                .unwrap();
        }
        let merge = IntakeEvent::Merge {
            patient: PatientChange {
                mrn: "300".into(),
                ..PatientChange::default()
            },
            merged_mrn: "301".into(),
            merged_assigning_authority: None,
        };
        db.store
            .apply_intake(practice.id, &merge, &hl7, now)
            .await
            .unwrap();

        let rows = [
            row("301", "Eve", Some("02140")),
            row("400", "Fay", None),
            row("400", "Fay", Some("02141")),
        ];
        let counts = db
            .store
            .import_roster(practice.id, &rows, &csv(), now + 1.minute())
            .await
            .unwrap();
        assert_eq!(
            counts,
            RosterCounts {
                created: 1,
                updated: 2,
                unchanged: 0
            }
        );
        assert_eq!(
            count(db, "SELECT COUNT(*) FROM patients WHERE mrn = '400'").await,
            1
        );
        assert_eq!(
            count(
                db,
                "SELECT COUNT(*) FROM patients WHERE mrn = '300' AND zip = '02140'"
            )
            .await,
            1,
            "the merged chart's row lands on the survivor"
        );
        assert_eq!(
            count(
                db,
                "SELECT COUNT(*) FROM patients WHERE mrn = '301' AND zip = '02134'"
            )
            .await,
            1,
            "the chart merged away is left as it was"
        );
        assert_eq!(
            count(
                db,
                "SELECT COUNT(*) FROM patients WHERE mrn = '400' AND zip = '02141'"
            )
            .await,
            1
        );
    })
    .await;
}

#[tokio::test]
async fn the_dashboard_counts_follow_an_import_and_a_wrong_practice_or_mrn_is_refused() {
    on_each_engine(async |_, db: &TestDb| {
        let now = wednesday_afternoon();
        let practice = db.always_open_practice("NORTH", now).await;
        let rows: Vec<PatientChange> = (0..1200)
            .map(|i| row(&format!("M{i}"), "Gus", (i % 3 != 0).then_some("02134")))
            .collect();
        db.store
            .import_roster(practice.id, &rows, &csv(), now)
            .await
            .unwrap();
        let scope = [practice.id];
        let counted = db.store.dashboard_counts(Some(&scope), now).await.unwrap();
        let recounted = db.store.recount_dashboard(Some(&scope), now).await.unwrap();
        assert_eq!(counted, recounted);
        assert_eq!(counted.patients, 1200);
        assert_eq!(counted.missing_fields, 400, "every third row has no ZIP");

        let unknown = db
            .store
            .import_roster(practice.id + 99, &rows, &csv(), now)
            .await;
        assert!(
            matches!(unknown, Err(StoreError::NotFound("practice"))),
            "{unknown:?}"
        );
        let blank = db
            .store
            .import_roster(practice.id, &[row(" ", "Hal", None)], &csv(), now)
            .await;
        assert!(matches!(blank, Err(StoreError::Invalid(_))), "{blank:?}");
    })
    .await;
}
