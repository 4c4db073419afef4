//! "Load a roster" over real HTTP, on both engines: the administrator's
//! upload of a CSV export (issue #15 item 2). The header is checked before
//! anything loads, an unknown column gets a choice of what it holds, the
//! import runs in the background with its progress as JSON, and ends with
//! the summary and each rejected row's line and reason (never its values).
//! A second upload of the same file changes nothing; nothing is sent.
//! (The same page in a real browser: `integration_browser.rs`.)

use std::time::Duration;

use enroll_store::testing::scalar;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::TestApp;
use crate::integration_tool::audited;
use crate::on_each_engine;
use crate::ui::Staff;

/// Two good rows and two bad ones (lines 4 and 5); "Gender" is not a
/// column Enroll takes for the birth sex unless told.
const ROSTER: &str = "MRN,First Name,Last Name,DOB,Gender,ZIP,Email,Mobile Phone\n\
R-1,Ida,Wells,07/04/1990,F,60616,ida@example.org,(312) 555-0100\n\
R-2,Bo,Li,1980-01-02,M,02139,bo@example.org,\n\
R-3,Cy,Kay,13/13/1990,F,02139,cy@example.org,\n\
R-4,Dee,Ng,19700505,F,10001,dee.example.org,\n";

fn roster_path(app: &TestApp) -> String {
    format!("/admin/practices/{}/roster", app.practice_id)
}

fn upload_path(app: &TestApp) -> String {
    format!("{}/upload", roster_path(app))
}

/// The form as the page sends it: the CSRF value, the column choices
/// (header, column key) and the file.
fn roster_form(csrf: &str, columns: &[(&str, &str)], file: &str) -> Form {
    let mut form = Form::new().text("csrf", csrf.to_string());
    for (header, column) in columns {
        form = form
            .text("map_header", header.to_string())
            .text("map_column", column.to_string());
    }
    let part = Part::bytes(file.as_bytes().to_vec())
        .file_name("exports/roster.csv")
        .mime_str("text/csv")
        .unwrap();
    form.part("file", part)
}

/// Polls the progress JSON until the import has ended; its numbers.
async fn finished_import(staff: &Staff<'_>, app: &TestApp) -> Value {
    for _ in 0..200 {
        let (status, body) = staff.get(&format!("{}/progress", roster_path(app))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let progress: Value = serde_json::from_str(&body).unwrap();
        if progress["run"]["running"] == false {
            return progress["run"].clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the import did not finish in 10 s");
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    scalar(&app.db.store, sql).await.unwrap()
}

#[tokio::test]
async fn a_roster_upload_asks_what_unknown_columns_hold_then_loads_good_rows_and_names_bad_ones() {
    on_each_engine(async |app| {
        let ada = Staff::sign_in(app, "ada").await;
        let csrf = ada.csrf().await;
        let (status, page) = ada.get(&roster_path(app)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("Loading sends no invitations"), "{page}");
        assert!(
            !page.contains("id=\"roster-import\""),
            "no import yet: {page}"
        );

        // The header is checked first: nothing loads, and the unknown
        // column gets a list of what it may hold, next to the file field.
        let (status, page) = ada
            .post_multipart(&upload_path(app), roster_form(&csrf, &[], ROSTER))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
        assert!(
            page.contains("does not know 1 of this file&#x27;s columns"),
            "{page}"
        );
        assert!(page.contains("no column for the birth sex"), "{page}");
        assert!(
            page.contains("name=\"map_header\" value=\"Gender\""),
            "{page}"
        );
        assert!(
            page.contains("<option value=\"birth_sex\">Birth sex</option>"),
            "{page}"
        );
        assert!(page.contains("aria-invalid=\"true\""), "{page}");
        assert_eq!(count(app, "SELECT COUNT(*) FROM patients").await, 0);

        // Told what "Gender" holds, the file loads in the background.
        let mapped = [("Gender", "birth_sex")];
        let (status, location) = ada
            .post_multipart(&upload_path(app), roster_form(&csrf, &mapped, ROSTER))
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
        assert_eq!(location, roster_path(app));
        let run = finished_import(&ada, app).await;
        assert_eq!(run["file_name"], "roster.csv", "no folder: {run}");
        assert_eq!(run["started_by"], "ada");
        let numbers: Vec<&Value> = [
            "rows",
            "created",
            "updated",
            "unchanged",
            "rejected",
            "percent",
        ]
        .iter()
        .map(|k| &run[*k])
        .collect();
        assert_eq!(numbers, [4, 2, 0, 0, 2, 100], "{run}");
        assert!(run["failure"].is_null(), "{run}");

        let (status, page) = ada.get(&roster_path(app)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            page.contains("4 rows: 2 created, 0 updated, 0 unchanged, 2 rejected."),
            "{page}"
        );
        assert!(
            page.contains("<td>4</td><td>date of birth is not a date"),
            "{page}"
        );
        assert!(page.contains("<td>5</td><td>email address"), "{page}");
        let (status, csv) = ada.get(&format!("{}/rejected.csv", roster_path(app))).await;
        assert_eq!(status, StatusCode::OK, "{csv}");
        assert!(csv.starts_with("line,problem\n4,"), "{csv}");
        assert!(csv.contains("\n5,"), "{csv}");
        for phi in ["Cy", "Kay", "13/13/1990", "dee.example.org"] {
            assert!(!csv.contains(phi), "{phi} in {csv}");
            assert!(!page.contains(phi), "{phi} on the page");
        }

        // Stored in the store's form, from the CSV source, audited, and
        // nothing sent.
        let ida = "SELECT COUNT(*) FROM patients WHERE mrn = 'R-1' AND birth_sex = 'F' \
                   AND date_of_birth = $1 AND cell_phone = $2";
        let values = ["1990-07-04", "+13125550100"];
        let stored = enroll_store::testing::scalar_bound(&app.db.store, ida, &values).await;
        assert_eq!(stored.unwrap(), 1);
        let added = "SELECT COUNT(*) FROM timeline WHERE kind = 'chart_added' AND source = 'csv' \
                     AND reference = 'roster.csv' AND actor = 'ada'";
        assert_eq!(count(app, added).await, 2);
        assert_eq!(audited(app, "patient.import").await.len(), 2);
        assert_eq!(count(app, "SELECT COUNT(*) FROM invites").await, 0);

        // The same file again changes nothing.
        let (status, _) = ada
            .post_multipart(&upload_path(app), roster_form(&csrf, &mapped, ROSTER))
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let again = finished_import(&ada, app).await;
        let numbers: Vec<&Value> = ["created", "updated", "unchanged", "rejected"]
            .iter()
            .map(|k| &again[*k])
            .collect();
        assert_eq!(numbers, [0, 0, 2, 2], "{again}");
        assert_eq!(count(app, added).await, 2, "no new timeline line");
        assert_eq!(count(app, "SELECT COUNT(*) FROM patients").await, 2);
    })
    .await;
}

#[tokio::test]
async fn only_an_administrator_with_the_page_s_csrf_value_and_a_file_can_load_a_roster() {
    on_each_engine(async |app| {
        let frida = Staff::sign_in(app, "frida").await;
        let frida_csrf = frida.csrf().await;
        let (status, page) = frida.get(&roster_path(app)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
        let (status, _) = frida
            .post_multipart(
                &upload_path(app),
                roster_form(&frida_csrf, &[("Gender", "birth_sex")], ROSTER),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = frida.get(&format!("{}/progress", roster_path(app))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        let ada = Staff::sign_in(app, "ada").await;
        let csrf = ada.csrf().await;
        let (status, _) = ada
            .post_multipart(
                &upload_path(app),
                roster_form("forged", &[("Gender", "birth_sex")], ROSTER),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        let (status, page) = ada
            .post_multipart(&upload_path(app), roster_form(&csrf, &[], ""))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
        assert!(page.contains("Choose the roster file"), "{page}");

        let (status, page) = ada
            .post_multipart(
                &upload_path(app),
                roster_form(&csrf, &[("Gender", "shoe_size")], ROSTER),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{page}");
        assert!(page.contains("Choose what each column holds"), "{page}");

        let (status, page) = ada.get(&format!("{}/rejected.csv", roster_path(app))).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{page}");
        assert_eq!(count(app, "SELECT COUNT(*) FROM patients").await, 0);
    })
    .await;
}
