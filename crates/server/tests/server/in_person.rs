//! In-person enrollment over HTTP, on both engines: "Enroll in person" from
//! the chart makes a manual invite through the channel "in person" (R4, R7
//! and R9 as for Enroll Now, on the timeline, audited), the staff page and
//! the letter show its QR code, link and short code, and the short code
//! typed at `/code` leads to the same activation flow. (In a real browser:
//! `activation_browser.rs`.)

use enroll_server::Settings;
use enroll_store::testing::ENGINES;
use jiff::SignedDuration;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::TestApp;
use crate::activation::{Page, STRONG, last_code, post, send_code, start, status_of, to_account};
use crate::ui::{Staff, other_practice_patient};

async fn each_engine(
    adjust: impl Fn(&mut Settings),
    test: impl AsyncFn(&TestApp, &crate::TestSmtp),
) {
    for engine in ENGINES {
        if let Some((app, smtp)) = start(engine, &adjust).await {
            test(&app, &smtp).await;
            app.stop().await;
        }
    }
}

/// The text of the element with `id` on a page (our templates put the
/// value right after the opening tag).
fn element_text(page: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in {page}"))
        + marker.len();
    // minijinja escapes `/` as well as `<>&"'`.
    page[start..]
        .split('<')
        .next()
        .unwrap_or_default()
        .trim()
        .replace("&#x2f;", "/")
        .replace("&amp;", "&")
}

/// What "Enroll in person" shows: the invite's page path, its short code
/// and its link.
pub struct Shown {
    pub path: String,
    pub code: String,
    pub link: String,
    pub page: String,
}

/// Frida clicks "Enroll in person" for `id` and opens the page it leads to.
pub async fn enroll_in_person(staff: &Staff<'_>, id: i64) -> Shown {
    let csrf = staff.csrf().await;
    let (status, location) = staff
        .post(&format!("/patients/{id}/in-person"), &[("csrf", &csrf)])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
    assert!(
        location.starts_with(&format!("/patients/{id}/in-person/")),
        "{location}"
    );
    let (status, page) = staff.get(&location).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    Shown {
        code: element_text(&page, "short-code"),
        link: element_text(&page, "in-person-link"),
        path: location,
        page,
    }
}

/// The token of the flow a page belongs to (its forms post to `/a/{token}/...`).
fn token_of(page: &Page) -> String {
    let start = page.body.find("action=\"/a/").expect("an activation form") + 11;
    page.body[start..]
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

async fn invites_counted(app: &TestApp, id: i64) -> usize {
    app.invites(id)
        .await
        .iter()
        .filter(|i| matches!(i["state"].as_str(), Some("queued" | "sent")))
        .count()
}

#[tokio::test]
async fn an_in_person_invite_needs_the_required_fields_and_says_which_are_missing() {
    each_engine(
        |_| {},
        async |app, _| {
            let id = app.patient("P-1", json!({ "email": null })).await;
            let staff = Staff::sign_in(app, "frida").await;
            let csrf = staff.csrf().await;
            let (status, location) = staff
                .post(&format!("/patients/{id}/in-person"), &[("csrf", &csrf)])
                .await;
            assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
            assert!(location.contains("update=email"), "{location}");
            let notice: String = url::form_urlencoded::parse(location.as_bytes())
                .find(|(k, _)| k.ends_with("notice"))
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            assert!(
                notice.starts_with("Not sent: first fill in the email"),
                "{notice}"
            );
            assert_eq!(invites_counted(app, id).await, 0, "nothing was sent");
            assert!(
                app.timeline_kinds(id)
                    .await
                    .contains(&"in_person_refused".to_string())
            );
            // Without the CSRF value, nothing happens.
            let (status, _) = staff
                .post(&format!("/patients/{id}/in-person"), &[("csrf", "forged")])
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN);
        },
    )
    .await;
}

#[tokio::test]
async fn in_person_invites_count_toward_the_cap_and_the_fifth_in_30_days_is_refused_with_the_date()
{
    each_engine(
        |_| {},
        async |app, _| {
            let id = app.patient("P-2", json!({})).await;
            let staff = Staff::sign_in(app, "frida").await;
            // The chart added queued an auto invite: it counts too.
            let before = invites_counted(app, id).await;
            // A double click shows the same invite again: one send, not two.
            let first = enroll_in_person(&staff, id).await;
            let again = enroll_in_person(&staff, id).await;
            assert_eq!(again.path, first.path, "the same invite, shown again");
            assert_eq!(again.code, first.code);
            assert_eq!(invites_counted(app, id).await, before + 1);
            for _ in (before + 1)..4 {
                // Later than the 10 minutes within which it is shown again.
                app.clock.advance(SignedDuration::from_mins(11));
                enroll_in_person(&staff, id).await;
            }
            assert_eq!(invites_counted(app, id).await, 4);
            app.clock.advance(SignedDuration::from_mins(11));
            let csrf = staff.csrf().await;
            let (status, location) = staff
                .post(&format!("/patients/{id}/in-person"), &[("csrf", &csrf)])
                .await;
            assert_eq!(status, StatusCode::SEE_OTHER);
            let notice: String = url::form_urlencoded::parse(location.as_bytes())
                .find(|(k, _)| k.ends_with("notice"))
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            assert!(
                notice.contains("4 invitations in the last 30 days. The next one can go out on"),
                "{notice}"
            );
            assert_eq!(invites_counted(app, id).await, 4, "no fifth send");
            // And Enroll Now sees the in-person sends in the cap.
            let (status, body) = app.enroll(id).await;
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
            // The invite history and timeline say how each went.
            let (_, chart) = staff.get(&format!("/patients/{id}")).await;
            assert!(chart.contains("In person by frida"), "{chart}");
            assert!(chart.contains("handed over in person"), "{chart}");
        },
    )
    .await;
}

#[tokio::test]
async fn the_short_code_leads_to_the_link_works_once_and_the_identity_check_still_applies() {
    each_engine(
        |_| {},
        async |app, smtp| {
            let id = app.patient("P-3", json!({})).await;
            let staff = Staff::sign_in(app, "frida").await;
            let shown = enroll_in_person(&staff, id).await;
            assert_eq!(shown.code.len(), 9, "XXXX-XXXX: {}", shown.code);
            assert!(
                shown.page.contains("<svg role=\"img\""),
                "the QR code is on the page"
            );
            assert_eq!(
                element_text(&shown.page, "code-address"),
                "invites.test/code"
            );
            assert_eq!(status_of(app, id).await, "pending");
            // The code as a patient might type it: lower case, no dash.
            let typed = shown.code.replace('-', "").to_lowercase();
            let landing = post(app, "/code", &[("code", &typed), ("lang", "en")]).await;
            assert_eq!(landing.status, StatusCode::OK, "{}", landing.body);
            assert!(landing.body.contains("Date of birth"), "{}", landing.body);
            let token = token_of(&landing);
            assert_eq!(shown.link, format!("http://invites.test/a/{token}"));
            // Wrong answers count on the link as for an emailed one.
            let wrong = post(
                app,
                &format!("/a/{token}/identity"),
                &[
                    ("flow", &landing.flow()),
                    ("date_of_birth", "07/04/1990"),
                    ("zip", "99999"),
                ],
            )
            .await;
            assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
            // Right answers, account, the code mailed to the chart's email, terms.
            let account = to_account(app, &token).await;
            let code_page = post(
                app,
                &format!("/a/{token}/account"),
                &[
                    ("flow", &account.flow()),
                    ("username", &account.hidden("username")),
                    ("password", STRONG),
                    ("password_again", STRONG),
                ],
            )
            .await;
            assert_eq!(code_page.status, StatusCode::OK, "{}", code_page.body);
            let mailed = smtp.received();
            assert_eq!(
                mailed.last().map(|m| m.to.clone()),
                Some(vec!["rosa@example.org".to_string()])
            );
            let done = send_code(app, &token, &code_page, &last_code(smtp)).await;
            assert_eq!(done.status, StatusCode::OK, "{}", done.body);
            assert_eq!(status_of(app, id).await, "active");
            // Once: the same code now leads to "already used".
            let again = post(app, "/code", &[("code", &shown.code)]).await;
            assert_eq!(again.status, StatusCode::GONE, "{}", again.body);
            // And the staff page says the invitation no longer works.
            let (_, page) = staff.get(&shown.path).await;
            assert!(page.contains("no longer works: it was used"), "{page}");
            // A new in-person invite is refused: already active.
            let csrf = staff.csrf().await;
            let (_, location) = staff
                .post(&format!("/patients/{id}/in-person"), &[("csrf", &csrf)])
                .await;
            assert!(location.contains("already+active"), "{location}");
        },
    )
    .await;
}

#[tokio::test]
async fn wrong_short_codes_lock_the_address_after_the_configured_tries() {
    let adjust = |s: &mut Settings| s.activation.short_code_failures_per_ip = 3;
    each_engine(adjust, async |app, _| {
        let id = app.patient("P-4", json!({})).await;
        let staff = Staff::sign_in(app, "frida").await;
        let shown = enroll_in_person(&staff, id).await;
        // Not a code at all: said next to the field, not counted.
        let typo = post(app, "/code", &[("code", "ABC")]).await;
        assert_eq!(typo.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(typo.body.contains("id=\"code-error\""), "{}", typo.body);
        assert!(
            typo.body.contains("value=\"ABC\""),
            "what was typed stays in the field"
        );
        let wrong_code = if shown.code.starts_with("ZZZZ") {
            "YYYY-YYYY"
        } else {
            "ZZZZ-ZZZZ"
        };
        for left in [2, 1] {
            let wrong = post(app, "/code", &[("code", wrong_code)]).await;
            assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(
                wrong
                    .body
                    .contains(&format!("before this device has to wait: {left}.")),
                "{}",
                wrong.body
            );
        }
        let locked = post(app, "/code", &[("code", wrong_code)]).await;
        assert_eq!(locked.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(
            locked.body.contains("Too many wrong codes"),
            "{}",
            locked.body
        );
        // Locked means locked: the right code waits too.
        let right = post(app, "/code", &[("code", &shown.code)]).await;
        assert_eq!(right.status, StatusCode::TOO_MANY_REQUESTS);
        app.clock.advance(SignedDuration::from_mins(16));
        let right = post(app, "/code", &[("code", &shown.code)]).await;
        assert_eq!(right.status, StatusCode::OK, "{}", right.body);
        assert!(right.body.contains("Date of birth"));
    })
    .await;
}

#[tokio::test]
async fn the_front_desk_cannot_enroll_or_see_another_practices_patient_in_person() {
    each_engine(
        |_| {},
        async |app, _| {
            let own = app.patient("P-5", json!({})).await;
            let other = other_practice_patient(app).await;
            let staff = Staff::sign_in(app, "frida").await;
            let csrf = staff.csrf().await;
            let (status, _) = staff
                .post(&format!("/patients/{other}/in-person"), &[("csrf", &csrf)])
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            assert_eq!(invites_counted(app, other).await, 0);
            // Another patient's invite id under this patient's path: none.
            let shown = enroll_in_person(&staff, own).await;
            let invite = shown.path.rsplit('/').next().unwrap();
            let (status, _) = staff
                .get(&format!("/patients/{other}/in-person/{invite}"))
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND);
            let (status, _) = staff
                .get(&format!("/patients/{other}/in-person/{invite}/letter"))
                .await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        },
    )
    .await;
}

#[tokio::test]
async fn making_showing_and_printing_an_in_person_invite_are_audited_and_the_letter_speaks_spanish()
{
    each_engine(
        |_| {},
        async |app, _| {
            let id = app.patient("P-6", json!({ "first_name": "Lucía" })).await;
            app.db
                .execute(&format!(
                    "UPDATE patients SET preferred_language = 'spa' WHERE id = {id}"
                ))
                .await
                .unwrap();
            let staff = Staff::sign_in(app, "frida").await;
            let shown = enroll_in_person(&staff, id).await;
            assert!(
                shown.page.contains("Print letter (Spanish)"),
                "{}",
                shown.page
            );
            let (status, letter) = staff.get(&format!("{}/letter", shown.path)).await;
            assert_eq!(status, StatusCode::OK);
            assert!(letter.contains("<html lang=\"es\">"), "{letter}");
            assert!(letter.contains("Su invitación al portal del paciente"));
            assert!(letter.contains("Lucía"));
            assert!(letter.contains(&shown.code));
            assert_eq!(element_text(&letter, "letter-address"), "invites.test/code");
            // Its style is a file (the pages' policy allows no inline style).
            assert!(letter.contains("href=\"/static/letter.css\""), "{letter}");
            let css = app.fetch("/static/letter.css").await;
            assert!(css.text().await.unwrap().contains("@media print"));
            assert!(letter.contains("<svg role=\"img\""));
            let (_, audit) = app.admin_get(&format!("/api/audit?patient_id={id}")).await;
            let actions: Vec<(&str, &str)> = audit
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|a| Some((a["actor"].as_str()?, a["action"].as_str()?)))
                .collect();
            for action in [
                "patient.in_person_invite",
                "patient.in_person_show",
                "patient.in_person_letter",
            ] {
                assert!(
                    actions.contains(&("frida", action)),
                    "{action}: {actions:?}"
                );
            }
            let timeline: Value = app.get(&format!("/api/patients/{id}/timeline")).await.1;
            let sent = timeline
                .as_array()
                .unwrap()
                .iter()
                .find(|e| {
                    e["kind"] == "invite_sent" && e["detail"]["channels"] == json!(["in_person"])
                })
                .cloned()
                .unwrap_or_default();
            assert_eq!(sent["actor"], "frida", "{timeline}");
        },
    )
    .await;
}
