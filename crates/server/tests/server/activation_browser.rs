//! The patient's side in a real browser at a phone's size (375x812), with
//! the app as `enroll demo` runs it (invites and codes in the demo
//! mailbox): the invite in the mailbox -> its link -> a wrong ZIP code ->
//! the right answers -> username and password -> the code from the mailbox
//! -> success -> sign-in -> home; the patient is then active in the API,
//! on the timeline and on the staff chart. Also the locked page (a 6th try
//! on a locked link), the expired page (a link sent to an email the
//! patient no longer has), and in-person enrollment: the chart's "Enroll
//! in person", the short code read off the staff page and typed by the
//! patient at `/code`. axe-core runs on every patient page (no serious or
//! critical violation) and each is saved as a full-page screenshot
//! `patient-<page>-375.png` (the staff's in-person page and letter at
//! 1366x768) under `<target>/screenshots/`. Harness: `webdriver.rs`.

use std::sync::Arc;

use enroll_server::Mailbox;
use fantoccini::key::Key;
use fantoccini::{Client, Locator};
use serde_json::json;

use crate::webdriver::{
    Tools, axe_check, browser, click_when_there, full_page_screenshot, start_driver, text_of,
    tools_or_skip, wait_for, wait_for_text,
};
use crate::{PASSWORD, TestApp};

const PHONE: (u32, u32) = (375, 812);
const DESKTOP: (u32, u32) = (1366, 768);
const NEW_PASSWORD: &str = "maple violin harbor sunrise";

/// axe on the page as it is, then a full-page screenshot at `size`.
async fn look_at(client: &Client, tools: &Tools, name: &str, size: (u32, u32)) {
    axe_check(client, tools, name).await;
    full_page_screenshot(client, name, size).await;
}

async fn fill(client: &Client, id: &str, text: &str) {
    let field = wait_for(client, Locator::Id(id)).await;
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// Submits the page's form and waits until the next page has replaced it
/// (the old button is gone), so what comes next reads the new page.
async fn submit(client: &Client) {
    let button = client
        .find(Locator::Css("main form button[type=submit]"))
        .await
        .unwrap();
    button.click().await.unwrap();
    for _ in 0..100 {
        if button.text().await.is_err() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the form was not answered within 5 s");
}

async fn heading(client: &Client) -> String {
    wait_for_text(client, "h1", |t| !t.is_empty()).await
}

/// The newest activation link the mailbox shows for `to`, read off the
/// mailbox page the way a person would find it.
/// The delivery may still be on its way (the app's own dispatcher runs
/// beside the test's round), so the page is read again for a few seconds.
async fn link_in_mailbox(client: &Client, app: &TestApp, to: &str) -> String {
    for _ in 0..50 {
        if let Some(link) = link_on_mailbox_page(client, app, to).await {
            return link;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no activation link for {to} on /mailbox after 5 s");
}

async fn link_on_mailbox_page(client: &Client, app: &TestApp, to: &str) -> Option<String> {
    client.goto(&app.url("/mailbox")).await.unwrap();
    let boxes = client.find_all(Locator::Css(".box")).await.unwrap();
    for b in boxes {
        let meta = b
            .find(Locator::Css(".meta"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if !meta.contains(to) {
            continue;
        }
        for a in b.find_all(Locator::Css("a")).await.unwrap() {
            let href = a.attr("href").await.unwrap().unwrap_or_default();
            if href.contains("/a/") {
                return Some(href);
            }
        }
    }
    None
}

/// The newest one-time code in the mailbox, read in a second tab (as a
/// patient switching to the mail app) so the code page stays as it is.
async fn code_from_mailbox(client: &Client, app: &TestApp, tools: &Tools) -> String {
    let flow = client.window().await.unwrap();
    let tab = client.new_window(true).await.unwrap();
    client.switch_to_window(tab.handle).await.unwrap();
    client.goto(&app.url("/mailbox")).await.unwrap();
    // The newest message first; an email's body is the frame's srcdoc.
    let newest = client
        .find(Locator::Css(".box iframe"))
        .await
        .unwrap()
        .attr("srcdoc")
        .await
        .unwrap()
        .unwrap_or_default();
    look_at(client, tools, "patient-mailbox-code-375", PHONE).await;
    client.close_window().await.unwrap();
    client.switch_to_window(flow).await.unwrap();
    let at = newest.find("code is ").expect("a code message") + "code is ".len();
    newest[at..at + 6].to_string()
}

async fn staff_sign_in(client: &Client, app: &TestApp) {
    client.goto(&app.url("/signin")).await.unwrap();
    fill(client, "username", "frida").await;
    client
        .find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(&format!("{PASSWORD}{}", char::from(Key::Enter)))
        .await
        .unwrap();
    wait_for(client, Locator::Id("q")).await;
}

async fn mailbox_app() -> Option<(TestApp, Arc<Mailbox>)> {
    TestApp::start_with_mailbox(enroll_store::testing::Engine::Sqlite).await
}

#[tokio::test]
async fn a_patient_activates_from_the_mailbox_on_a_phone_and_staff_see_the_account_active() {
    let Some(tools) = tools_or_skip() else {
        return;
    };
    let Some((app, _mailbox)) = mailbox_app().await else {
        return;
    };
    let rosa = app.patient("W-1", json!({})).await;
    let locked = app
        .patient(
            "W-2",
            json!({ "first_name": "Lin", "email": "lin@example.org" }),
        )
        .await;
    let moved = app
        .patient(
            "W-3",
            json!({ "first_name": "Omar", "email": "omar.old@example.org" }),
        )
        .await;
    app.deliver().await;
    let driver = start_driver(&tools).await;
    let client = browser(&driver, &tools, PHONE).await;

    // The invite in the demo mailbox, and its link.
    client.goto(&app.url("/mailbox")).await.unwrap();
    look_at(&client, &tools, "patient-mailbox-375", PHONE).await;
    let link = link_in_mailbox(&client, &app, "rosa@example.org").await;
    client.goto(&link).await.unwrap();
    assert_eq!(heading(&client).await, "Set up your patient portal account");
    look_at(&client, &tools, "patient-landing-375", PHONE).await;

    // A wrong ZIP code: the error in words, at the fields.
    fill(&client, "date_of_birth", "07/04/1990").await;
    fill(&client, "zip", "99999").await;
    submit(&client).await;
    let error = wait_for_text(&client, "#form-error", |t| !t.is_empty()).await;
    assert!(error.contains("do not match"), "{error}");
    let kept = client
        .find(Locator::Id("date_of_birth"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(
        kept.as_deref(),
        Some("07/04/1990"),
        "the answers stay to be checked"
    );
    look_at(&client, &tools, "patient-identity-error-375", PHONE).await;
    // A ZIP that cannot be one: said under the field.
    fill(&client, "date_of_birth", "07/04/1990").await;
    fill(&client, "zip", "1002").await;
    submit(&client).await;
    wait_for_text(&client, "#zip-error", |t| t.contains("5-digit")).await;
    look_at(&client, &tools, "patient-identity-field-error-375", PHONE).await;

    // The right answers -> username and password.
    fill(&client, "date_of_birth", "07/04/1990").await;
    fill(&client, "zip", "10027").await;
    submit(&client).await;
    assert_eq!(heading(&client).await, "Choose your username and password");
    look_at(&client, &tools, "patient-account-375", PHONE).await;
    let username = client
        .find(Locator::Id("username"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(username, "rosa@example.org");
    fill(&client, "password", "short").await;
    fill(&client, "password_again", "short").await;
    submit(&client).await;
    wait_for_text(&client, "#password-error", |t| t.contains("too short")).await;
    look_at(&client, &tools, "patient-account-error-375", PHONE).await;
    fill(&client, "password", NEW_PASSWORD).await;
    fill(&client, "password_again", NEW_PASSWORD).await;
    submit(&client).await;
    assert_eq!(heading(&client).await, "Enter the code we sent you");
    look_at(&client, &tools, "patient-code-375", PHONE).await;

    // The code from the mailbox, the terms -> success.
    let code = code_from_mailbox(&client, &app, &tools).await;
    fill(&client, "code", &code).await;
    client
        .find(Locator::Id("terms"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    submit(&client).await;
    assert_eq!(heading(&client).await, "Your account is ready");
    look_at(&client, &tools, "patient-success-375", PHONE).await;

    // Sign in -> home.
    client
        .find(Locator::LinkText("Sign in now"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(heading(&client).await, "Sign in to your patient portal");
    look_at(&client, &tools, "patient-sign-in-375", PHONE).await;
    fill(&client, "username", "rosa@example.org").await;
    fill(&client, "password", NEW_PASSWORD).await;
    submit(&client).await;
    assert_eq!(heading(&client).await, "Your patient portal");
    look_at(&client, &tools, "patient-home-375", PHONE).await;

    // Active in the API, on the timeline and on the staff chart.
    let (_, view) = app.get(&format!("/api/patients/{rosa}")).await;
    assert_eq!(view["status"]["status"], "active", "{view}");
    assert!(
        app.timeline_kinds(rosa)
            .await
            .contains(&"activated".to_string())
    );
    client.set_window_size(DESKTOP.0, DESKTOP.1).await.unwrap();
    staff_sign_in(&client, &app).await;
    client
        .goto(&app.url(&format!("/patients/{rosa}")))
        .await
        .unwrap();
    let badge = wait_for_text(&client, "[data-badge]", |t| !t.is_empty()).await;
    assert_eq!(badge, "Active");
    let timeline = text_of(&client, ".timeline").await;
    assert!(
        timeline.contains("The patient activated the portal account"),
        "{timeline}"
    );
    client.delete_all_cookies().await.unwrap();
    client.set_window_size(PHONE.0, PHONE.1).await.unwrap();

    // Five wrong answers lock a link; a 6th try shows the locked page.
    let link = link_in_mailbox(&client, &app, "lin@example.org").await;
    client.goto(&link).await.unwrap();
    for _ in 0..5 {
        fill(&client, "date_of_birth", "01/01/1980").await;
        fill(&client, "zip", "10027").await;
        submit(&client).await;
        heading(&client).await;
    }
    assert_eq!(heading(&client).await, "This link is locked");
    client.goto(&link).await.unwrap();
    assert_eq!(heading(&client).await, "This link is locked", "the 6th try");
    look_at(&client, &tools, "patient-locked-375", PHONE).await;
    assert_eq!(
        app.get(&format!("/api/patients/{locked}")).await.1["status"]["status"],
        "pending"
    );

    // An invite sent to an email the patient no longer has: expired.
    let link = link_in_mailbox(&client, &app, "omar.old@example.org").await;
    let (status, _) = app
        .call(
            reqwest::Method::PUT,
            &format!("/api/patients/{moved}"),
            Some(json!({
                "first_name": "Omar", "last_name": "Parks", "date_of_birth": "1990-07-04",
                "birth_sex": "F", "zip": "10027", "email": "omar.new@example.org",
            })),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    client.goto(&link).await.unwrap();
    assert_eq!(heading(&client).await, "This link no longer works");
    look_at(&client, &tools, "patient-expired-375", PHONE).await;

    client.close().await.unwrap();
    drop(driver);
    app.stop().await;
}

#[tokio::test]
async fn the_front_desk_enrolls_a_patient_in_person_and_the_short_code_starts_the_activation() {
    let Some(tools) = tools_or_skip() else {
        return;
    };
    let Some((app, _mailbox)) = mailbox_app().await else {
        return;
    };
    let id = app
        .patient(
            "W-9",
            json!({ "first_name": "Grace", "email": "grace@example.org" }),
        )
        .await;
    let driver = start_driver(&tools).await;
    let client = browser(&driver, &tools, DESKTOP).await;

    // Staff: chart -> Patient Portal icon -> Enroll in person.
    staff_sign_in(&client, &app).await;
    client
        .goto(&app.url(&format!("/patients/{id}")))
        .await
        .unwrap();
    click_when_there(&client, Locator::Id("portal-icon")).await;
    click_when_there(
        &client,
        Locator::Css("#portal-menu:not([hidden]) [data-action=\"in-person\"]"),
    )
    .await;
    let code = wait_for_text(&client, "#short-code", |t| t.len() == 9).await;
    look_at(&client, &tools, "staff-in-person-1366x768", DESKTOP).await;
    client
        .find(Locator::Id("print-letter"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let on_letter = wait_for_text(&client, "#letter-code", |t| !t.is_empty()).await;
    assert_eq!(on_letter, code);
    look_at(&client, &tools, "staff-in-person-letter-1366x768", DESKTOP).await;
    let address = text_of(&client, ".scan .address").await;
    assert!(address.ends_with("/code"), "{address}");

    // The patient, on a phone: the address from the letter, the code typed.
    client.delete_all_cookies().await.unwrap();
    client.set_window_size(PHONE.0, PHONE.1).await.unwrap();
    client.goto(&app.url("/code")).await.unwrap();
    assert_eq!(heading(&client).await, "Enter the code from your letter");
    look_at(&client, &tools, "patient-short-code-375", PHONE).await;
    fill(&client, "code", "ZZZZ-ZZZ").await;
    submit(&client).await;
    wait_for_text(&client, "#code-error", |t| t.contains("8 letters")).await;
    look_at(&client, &tools, "patient-short-code-error-375", PHONE).await;
    fill(&client, "code", &code.to_lowercase()).await;
    submit(&client).await;
    assert_eq!(heading(&client).await, "Set up your patient portal account");
    fill(&client, "date_of_birth", "07/04/1990").await;
    fill(&client, "zip", "10027").await;
    submit(&client).await;
    assert_eq!(heading(&client).await, "Choose your username and password");
    look_at(&client, &tools, "patient-account-from-code-375", PHONE).await;

    let kinds = app.timeline_kinds(id).await;
    assert!(kinds.contains(&"invite_sent".to_string()), "{kinds:?}");
    assert!(
        kinds.contains(&"activation_identity_confirmed".to_string()),
        "{kinds:?}"
    );

    client.close().await.unwrap();
    drop(driver);
    app.stop().await;
}
