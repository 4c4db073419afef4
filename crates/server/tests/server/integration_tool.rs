//! The Integration Tool over real HTTP, on both engines: who may open it,
//! the auto-invite switch with its confirmation and go-live date (R3), the
//! Auto Invite Schedule editor with its next send windows (R5), the
//! practice's phone and the template editor (R12); every change checked
//! with the error next to its field and audited with before and after.
//! (The same pages in a real browser: `browser.rs`.)

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::ui::Staff;
use crate::{TestApp, on_each_engine};

fn tool_path(app: &TestApp) -> String {
    format!("/admin/practices/{}", app.practice_id)
}

/// The audit lines of `action`, newest first, with their detail parsed.
pub(crate) async fn audited(app: &TestApp, action: &str) -> Vec<Value> {
    app.audit_lines()
        .await
        .into_iter()
        .filter(|entry| entry.action == action)
        .map(|entry| serde_json::from_str(entry.detail.as_deref().unwrap_or("null")).unwrap())
        .collect()
}

#[tokio::test]
async fn the_integration_tool_is_for_administrators_of_the_practice() {
    on_each_engine(async |app| {
        let frida = Staff::sign_in(app, "frida").await;
        for path in ["/admin/practices".to_string(), tool_path(app)] {
            let (status, body) = frida.get(&path).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
            assert!(body.contains("Only an administrator"), "{body}");
        }
        let ada = Staff::sign_in(app, "ada").await;
        // Ada administers every practice; with one, the list leads to it.
        let (status, location) = ada.get("/admin/practices").await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location, tool_path(app));
        let (status, page) = ada.get(&tool_path(app)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("Practice TEST"), "{page}");
        assert!(page.contains("Auto Invite Schedule"), "{page}");
        let (status, _) = ada.get("/admin/practices/999999").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn turning_auto_invites_on_asks_first_says_how_many_are_ready_and_is_audited() {
    on_each_engine(async |app| {
        app.patient("M-READY", json!({})).await;
        app.patient("M-NOEMAIL", json!({ "email": null })).await;
        let ada = Staff::sign_in(app, "ada").await;
        let csrf = ada.csrf().await;
        let switch = format!("{}/auto-invites", tool_path(app));

        // The test practice starts with auto invites on: off needs no
        // confirmation.
        let (status, location) = ada
            .post(&switch, &[("csrf", &csrf), ("switch", "off")])
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
        assert!(!app.practice().await.auto_invites_on);
        let off = audited(app, "practice.auto_invites_off").await;
        assert_eq!(off[0]["practice"], "TEST", "{off:?}");
        assert_eq!(off[0]["before"]["on"], true);
        assert_eq!(off[0]["after"]["on"], false);
        let (_, page) = ada.get(&location).await;
        assert!(page.contains("Auto invites are off"), "{page}");
        assert!(
            page.contains("2 charts; <strong>1</strong> could be invited now"),
            "{page}"
        );
        assert!(page.contains("1 missing the email address"), "{page}");

        // On: first the confirmation, which changes nothing.
        let on = [
            ("csrf", csrf.as_str()),
            ("switch", "on"),
            ("go_live_date", "2026-11-24"),
        ];
        let (status, page) = ada.post(&switch, &on).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            page.contains("Turn auto invites on for Practice TEST?"),
            "{page}"
        );
        assert!(
            page.contains("Today <strong>1</strong> patient could be invited;"),
            "{page}"
        );
        assert!(page.contains("a new appointment"), "{page}");
        assert!(page.contains("November 24, 2026"), "{page}");
        assert!(
            !app.practice().await.auto_invites_on,
            "not before confirming"
        );

        // A go-live date after today (Nov 25 in New York) is refused next
        // to its field.
        let later = [
            ("csrf", csrf.as_str()),
            ("switch", "on"),
            ("go_live_date", "2026-12-01"),
        ];
        let (status, page) = ada.post(&switch, &later).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains("id=\"err-go-live\""), "{page}");
        assert!(page.contains("is after today (2026-11-25)"), "{page}");

        let confirmed = [on.as_slice(), &[("confirmed", "yes")]].concat();
        let (status, _) = ada.post(&switch, &confirmed).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let now_on = app.practice().await;
        assert!(now_on.auto_invites_on);
        assert_eq!(now_on.go_live_date.unwrap().to_string(), "2026-11-24");
        let on_lines = audited(app, "practice.auto_invites_on").await;
        assert_eq!(on_lines[0]["before"]["on"], false, "{on_lines:?}");
        assert_eq!(on_lines[0]["after"]["go_live_date"], "2026-11-24");

        // Without this session's CSRF value nothing changes.
        let (status, _) = ada
            .post(&switch, &[("csrf", "forged"), ("switch", "off")])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(app.practice().await.auto_invites_on);
    })
    .await;
}

fn schedule_form<'a>(
    csrf: &'a str,
    monday: &'a str,
    time_zone: &'a str,
) -> Vec<(&'a str, &'a str)> {
    vec![
        ("csrf", csrf),
        ("time_zone", time_zone),
        ("monday", monday),
        ("tuesday", "08:00-17:00"),
        ("wednesday", ""),
        ("thursday", ""),
        ("friday", "08:00-12:00"),
        ("saturday", ""),
        ("sunday", ""),
        ("closed_dates", "2026-11-27\r\n"),
    ]
}

#[tokio::test]
async fn the_schedule_editor_saves_several_windows_and_shows_each_problem_next_to_its_field() {
    on_each_engine(async |app| {
        let ada = Staff::sign_in(app, "ada").await;
        let csrf = ada.csrf().await;
        let path = format!("{}/schedule", tool_path(app));
        let before = app.practice().await.schedule.schedule;

        let (status, page) = ada
            .post(&path, &schedule_form(&csrf, "8-12", "America/Springfield"))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains("id=\"err-monday\""), "{page}");
        assert!(
            page.contains("Monday: &quot;8-12&quot; is not a window"),
            "{page}"
        );
        assert!(
            page.contains("value=\"8-12\""),
            "what was typed stays: {page}"
        );
        assert!(
            page.contains("Nothing was saved: fix this problem"),
            "{page}"
        );
        assert!(page.contains("href=\"#day-monday\""), "{page}");
        assert_eq!(app.practice().await.schedule.schedule, before);

        let (status, page) = ada
            .post(
                &path,
                &schedule_form(&csrf, "08:00-12:00", "America/Springfield"),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains("id=\"err-time-zone\""), "{page}");

        let typed = schedule_form(&csrf, "08:00-12:00, 13:00-17:00", "America/New_York");
        let (status, location) = ada.post(&path, &typed).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
        let saved = app.practice().await.schedule.schedule;
        assert_eq!(saved.windows.len(), 4, "{saved:?}");
        assert_eq!(saved.closed_dates.len(), 1);

        // Wednesday Nov 25, 10:00 in New York; Friday Nov 27 is closed.
        let (_, page) = ada.get(&location).await;
        assert!(
            page.contains("The Auto Invite Schedule is saved."),
            "{page}"
        );
        let next = [
            "Monday, November 30: 8:00 AM EST to 12:00 PM EST",
            "Monday, November 30: 1:00 PM EST to 5:00 PM EST",
            "Tuesday, December 1: 8:00 AM EST to 5:00 PM EST",
            "Friday, December 4: 8:00 AM EST to 12:00 PM EST",
            "Monday, December 7: 8:00 AM EST to 12:00 PM EST",
        ];
        let mut at = 0;
        for window in next {
            let found = page[at..]
                .find(window)
                .unwrap_or_else(|| panic!("{window}: {page}"));
            at += found;
        }
        assert!(
            page.contains("value=\"08:00-12:00, 13:00-17:00\""),
            "{page}"
        );
        let lines = audited(app, "practice.schedule").await;
        assert_eq!(lines[0]["before"], serde_json::to_value(&before).unwrap());
        assert_eq!(lines[0]["after"]["windows"].as_array().unwrap().len(), 4);

        // No open hour at all: said plainly.
        let closed: Vec<(&str, &str)> = schedule_form(&csrf, "", "America/New_York")
            .into_iter()
            .map(|(k, v)| {
                if ["tuesday", "friday"].contains(&k) {
                    (k, "")
                } else {
                    (k, v)
                }
            })
            .collect();
        let (status, location) = ada.post(&path, &closed).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, page) = ada.get(&location).await;
        assert!(
            page.contains("This schedule has no open hour at all"),
            "{page}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_practice_phone_is_checked_and_audited() {
    on_each_engine(async |app| {
        let ada = Staff::sign_in(app, "ada").await;
        let csrf = ada.csrf().await;
        let path = format!("{}/phone", tool_path(app));
        let (status, page) = ada.post(&path, &[("csrf", &csrf), ("phone", "555")]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains("id=\"err-phone\""), "{page}");
        assert!(page.contains("value=\"555\""), "{page}");
        let (status, location) = ada
            .post(&path, &[("csrf", &csrf), ("phone", "(617) 555-0100")])
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(app.practice().await.phone.as_deref(), Some("+16175550100"));
        let (_, page) = ada.get(&location).await;
        assert!(page.contains("value=\"(617) 555-0100\""), "{page}");
        let lines = audited(app, "practice.phone").await;
        assert_eq!(lines[0]["before"], Value::Null);
        assert_eq!(lines[0]["after"], "+16175550100");
    })
    .await;
}

/// The editor's form as the page sends it: every part, as shown.
fn shown_parts(page: &str) -> Vec<(String, String)> {
    ["subject", "text", "html", "sms"]
        .into_iter()
        .map(|key| {
            let source = if key == "subject" {
                let marker = "name=\"subject\" value=\"";
                let start = page.find(marker).unwrap() + marker.len();
                page[start..start + page[start..].find('"').unwrap()].to_string()
            } else {
                let marker = format!("name=\"{key}\"");
                let tag = page.find(&marker).unwrap();
                let start = tag + page[tag..].find('>').unwrap() + 1;
                page[start..start + page[start..].find("</textarea>").unwrap()].to_string()
            };
            (key.to_string(), unescape(&source))
        })
        .collect()
}

fn unescape(html: &str) -> String {
    html.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

#[tokio::test]
async fn the_template_editor_previews_refuses_phi_and_saves_what_invites_then_use() {
    on_each_engine(async |app| {
        let ada = Staff::sign_in(app, "ada").await;
        let csrf = ada.csrf().await;
        let path = format!("{}/templates", tool_path(app));
        let (status, page) = ada.get(&format!("{path}?language=en")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("The built-in template."), "{page}");
        assert!(page.contains("of 160 characters"), "{page}");
        let mut parts = shown_parts(&page);
        let form = |parts: &[(String, String)], action: &'static str| {
            let mut form: Vec<(String, String)> = vec![
                ("csrf".into(), csrf.clone()),
                ("language".into(), "en".into()),
                ("action".into(), action.into()),
            ];
            form.extend(parts.iter().cloned());
            form
        };
        let post = async |form: Vec<(String, String)>| {
            let pairs: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            ada.post(&path, &pairs).await
        };

        // A subject naming the patient's last name: R12 refuses it.
        parts[0].1 = "Your portal, {{ last_name }}".into();
        let (status, page) = post(form(&parts, "save")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains("id=\"err-subject\""), "{page}");
        assert!(
            page.contains("it uses a name other than first_name, practice_name, activation_url and unsubscribe_url (line 1)"),
            "{page}"
        );
        assert!(page.contains("Your portal, {{ last_name }}"), "typed text stays: {page}");

        // A preview shows it and saves nothing.
        parts[0].1 = "{{ first_name }}, your {{ practice_name }} portal awaits".into();
        let (status, page) = post(form(&parts, "preview")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("nothing is saved yet"), "{page}");
        assert!(page.contains("Alex, your Practice TEST portal awaits"), "{page}");
        let (_, api) = app
            .admin_get(&format!("/api/practices/{}/templates/preview", app.practice_id))
            .await;
        assert_ne!(api["email"]["subject"], "Alex, your Practice TEST portal awaits");

        let (status, location) = post(form(&parts, "save")).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
        let (_, api) = app
            .admin_get(&format!("/api/practices/{}/templates/preview", app.practice_id))
            .await;
        assert_eq!(api["email"]["subject"], "Alex, your Practice TEST portal awaits", "{api}");
        let (_, page) = ada.get(&location).await;
        assert!(page.contains("The template is saved"), "{page}");
        assert!(page.contains("This practice's own template."), "{page}");
        let lines = audited(app, "practice.template").await;
        assert_eq!(lines.len(), 1, "only the changed part: {lines:?}");
        assert_eq!(lines[0]["after"]["part"], "subject");
        assert_eq!(lines[0]["after"]["source"], parts[0].1);
        let before = lines[0]["before"]["source"].as_str().unwrap();
        assert!(!before.is_empty() && before != parts[0].1, "{before}");

        // The Spanish templates are their own.
        let (_, page) = ada.get(&format!("{path}?language=es")).await;
        assert!(page.contains("(Spanish)"), "{page}");
        assert!(page.contains("The built-in template."), "{page}");
    })
    .await;
}

/// Two instances on one database: a template saved on the other one (its
/// own connection, its own templates in memory) is what this instance's
/// next invite and its editor use, without a restart.
#[tokio::test]
async fn a_template_saved_on_another_instance_is_in_force_here_without_a_restart() {
    on_each_engine(async |app| {
        let smtp = crate::TestSmtp::start().await;
        let other_store = enroll_store::Store::connect(&app.db.url).await.unwrap();
        let other = enroll_server::templates::load(&other_store).await.unwrap();
        let subject = "{{ first_name }}, a word from the other instance";
        enroll_server::templates::save(&other_store, &other, "TEST", "en", "subject", subject)
            .await
            .unwrap()
            .unwrap();

        app.patient("M-OTHER", json!({})).await;
        let round = app.dispatcher(smtp.addr, "here").run_round().await.unwrap();
        assert_eq!(round.sent, 1, "{round:?}");
        let mail = &smtp.received()[0];
        assert_eq!(
            mail.header("Subject").as_deref(),
            Some("Rosa, a word from the other instance"),
            "{:?}",
            app.engine
        );
        let ada = Staff::sign_in(app, "ada").await;
        let (_, page) = ada.get(&format!("{}/templates", tool_path(app))).await;
        assert!(page.contains("a word from the other instance"), "{page}");
        other_store.close().await;
    })
    .await;
}

#[tokio::test]
async fn the_channel_switches_keep_one_channel_on_and_are_audited() {
    on_each_engine(async |app| {
        let ada = Staff::sign_in(app, "ada").await;
        let csrf = ada.csrf().await;
        let path = format!("{}/channels", tool_path(app));
        // Both boxes unticked: the form sends neither.
        let (status, page) = ada.post(&path, &[("csrf", &csrf)]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains("id=\"err-channels\""), "{page}");
        assert!(page.contains("keep at least one channel on"), "{page}");
        assert!(app.practice().await.channels.email);
        let (status, _) = ada.post(&path, &[("csrf", &csrf), ("sms", "on")]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let channels = app.practice().await.channels;
        assert_eq!((channels.email, channels.sms), (false, true));
        let lines = audited(app, "practice.channels").await;
        assert_eq!(lines[0]["before"], json!({ "email": true, "sms": true }));
        assert_eq!(lines[0]["after"], json!({ "email": false, "sms": true }));
        let (_, page) = ada.get(&tool_path(app)).await;
        assert!(
            page.contains("id=\"channel-email\" name=\"email\" value=\"on\">"),
            "unticked: {page}"
        );
    })
    .await;
}
