//! The work lists over real HTTP, on both engines: the list of charts
//! missing fields (with which), the "invited, not active" list by days,
//! the CSV export, practice scoping and the audit of what was shown.

use reqwest::StatusCode;
use reqwest::header::{CONTENT_DISPOSITION, CONTENT_TYPE, COOKIE};
use serde_json::json;

use crate::ui::Staff;
use crate::{TestApp, on_each_engine};

async fn audited_ids(app: &TestApp, action: &str) -> Vec<String> {
    let log = app.db.store.audit_log(None, 50).await.unwrap();
    let entry = log
        .iter()
        .find(|e| e.action == action)
        .expect("an audit line");
    let detail: serde_json::Value = serde_json::from_str(entry.detail.as_deref().unwrap()).unwrap();
    detail["ids"]
        .as_str()
        .unwrap()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn the_front_desk_sees_who_lacks_which_field_exports_it_and_each_view_is_audited() {
    on_each_engine(async |app| {
        let lacking = app
            .patient("WL-1", json!({ "last_name": "Zane", "email": null, "zip": " " }))
            .await;
        app.patient("WL-2", json!({ "last_name": "Young" })).await;
        let elsewhere = crate::ui::other_practice_patient(app).await;
        app.db
            .execute(&format!("UPDATE patients SET email = NULL WHERE id = {elsewhere}"))
            .await
            .unwrap();

        let frida = Staff::sign_in(app, "frida").await;
        let (status, page) = frida.get("/worklists").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("Missing fields <span class=\"muted\">(1 patient)</span>"), "{page}");
        assert!(page.contains(&format!("href=\"/patients/{lacking}\">Zane, Rosa</a>")), "{page}");
        assert!(page.contains("<td>ZIP code, email address</td>"), "{page}");
        assert!(!page.contains("Otto"), "another practice's patient: {page}");
        assert_eq!(audited_ids(app, "worklist.view").await, [lacking.to_string()]);

        let (status, csv) = frida.get("/worklists.csv?list=missing").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            csv,
            "Patient,MRN,Date of birth,Practice,Missing\n\"Zane, Rosa\",WL-1,1990-07-04,Practice TEST,\"ZIP code, email address\"\n"
        );
        let response = app
            .http
            .get(app.url("/worklists.csv?list=missing"))
            .header(COOKIE, frida.cookie())
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()[CONTENT_TYPE], "text/csv; charset=utf-8");
        assert_eq!(
            response.headers()[CONTENT_DISPOSITION],
            "attachment; filename=\"enroll-missing.csv\""
        );
        assert_eq!(audited_ids(app, "worklist.export").await, [lacking.to_string()]);

        let (status, _) = frida.get("/worklists?list=nonsense").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, page) = frida.get("/worklists?list=not-active&days=3").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("No patient is on this list"), "{page}");
        assert!(page.contains("value=\"3\""), "{page}");
    })
    .await;
}
