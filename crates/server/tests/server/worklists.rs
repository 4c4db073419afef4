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

/// The failed deliveries list edits and resends in place: a wrong email is
/// refused next to its row's field, a fixed one is saved (audited) and the
/// invite goes again, by the auto trigger when auto invites are on and by
/// Enroll Now when they are off, and the patient leaves the list.
#[tokio::test]
async fn a_failed_delivery_is_fixed_and_sent_again_from_the_work_list() {
    on_each_engine(async |app| {
        let smtp = crate::TestSmtp::start().await;
        smtp.state
            .reject
            .lock()
            .unwrap()
            .insert("typo@example.org".into());
        let dispatcher = app.dispatcher(smtp.addr, "w1");
        let auto = app
            .patient("F-AUTO", json!({ "email": "typo@example.org" }))
            .await;
        app.db
            .store
            .set_auto_invites(app.practice_id, false, None)
            .await
            .unwrap();
        let manual = app
            .patient("F-MANUAL", json!({ "email": "typo@example.org" }))
            .await;
        let (status, _) = app.enroll(manual).await;
        assert!(status.is_success(), "{status}");
        dispatcher.run_round().await.unwrap();
        assert!(smtp.received().is_empty(), "{:?}", app.engine);

        let frida = Staff::sign_in(app, "frida").await;
        let csrf = frida.csrf().await;
        let (status, page) = frida.get("/worklists?list=failed").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains(&format!("id=\"resend-{auto}\"")), "{page}");
        assert!(page.contains(&format!("id=\"resend-{manual}\"")), "{page}");

        let resend = |id: i64| format!("/worklists/failed/{id}");
        let (status, location) = frida
            .post(
                &resend(manual),
                &[
                    ("csrf", &csrf),
                    ("email", "not-an-email"),
                    ("cell_phone", ""),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, page) = frida.get(&location).await;
        assert!(
            page.contains(&format!("id=\"err-email-{manual}\"")),
            "{page}"
        );

        // Auto invites off: Enroll Now sends again.
        let (status, location) = frida
            .post(
                &resend(manual),
                &[
                    ("csrf", &csrf),
                    ("email", "fixed@example.org"),
                    ("cell_phone", ""),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, page) = frida.get(&location).await;
        assert!(page.contains("saved. "), "{page}");
        // Auto invites on: the changed email is the trigger; no second invite.
        app.db
            .store
            .set_auto_invites(app.practice_id, true, None)
            .await
            .unwrap();
        let (status, location) = frida
            .post(
                &resend(auto),
                &[
                    ("csrf", &csrf),
                    ("email", "right@example.org"),
                    ("cell_phone", ""),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, page) = frida.get(&location).await;
        assert!(
            page.contains("(auto invite); no second invite was sent"),
            "{page}"
        );

        dispatcher.run_round().await.unwrap();
        let mut to: Vec<String> = smtp.received().iter().flat_map(|m| m.to.clone()).collect();
        to.sort();
        assert_eq!(
            to,
            ["fixed@example.org", "right@example.org"],
            "{:?}",
            app.engine
        );
        let (_, page) = frida.get("/worklists?list=failed").await;
        assert!(!page.contains(&format!("id=\"resend-{manual}\"")), "{page}");
        let updates = app.db.store.audit_log(Some(manual), 50).await.unwrap();
        assert!(
            updates.iter().any(|e| e.action == "patient.update"),
            "{updates:?}"
        );
    })
    .await;
}
