//! The Integration Tool in a real browser: an administrator reaches it from
//! the header, switches auto invites off and on again through the
//! confirmation, edits the Auto Invite Schedule with the keyboard and sees
//! the next send windows change, and previews a template. axe-core on every
//! page; screenshots under `target/screenshots/`.

use fantoccini::key::Key;
use fantoccini::{Client, Locator};

use crate::browser::{look_at, sign_in};
use crate::webdriver::{
    browser, click_when_there, full_page_screenshot, start_driver, text_of, tools_and_app_or_skip,
    wait_for, wait_for_text,
};

async fn click(client: &Client, css: &str) {
    click_when_there(client, Locator::Css(css)).await;
}

async fn replace_text(client: &Client, css: &str, text: &str) {
    let field = client.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

#[tokio::test]
async fn an_administrator_goes_live_and_sets_office_hours_in_a_real_browser() {
    let Some((tools, app)) = tools_and_app_or_skip().await else {
        return;
    };
    app.patient("T-1", serde_json::json!({})).await;
    app.patient("T-2", serde_json::json!({ "email": null, "zip": null }))
        .await;
    let driver = start_driver(&tools).await;
    let client = browser(&driver, &tools, (1366, 768)).await;
    sign_in(&client, &app, "ada").await;

    // From the header to the tool (one practice: straight to it).
    click(&client, "nav a[href='/admin/practices']").await;
    wait_for(&client, Locator::Id("auto-invites")).await;
    look_at(&client, &tools, "integration-tool").await;
    full_page_screenshot(&client, "staff-integration-tool-full", (1366, 768)).await;
    full_page_screenshot(&client, "staff-integration-tool-phone", (390, 844)).await;
    client.set_window_size(1366, 768).await.unwrap();

    // Off, then on again through the confirmation.
    click(&client, "#auto-off").await;
    let notice = text_of(&client, ".notice").await;
    assert!(notice.contains("Auto invites are off"), "{notice}");
    let counts = text_of(&client, "#auto-invites").await;
    assert!(counts.contains("1 could be invited now"), "{counts}");
    assert!(counts.contains("1 missing the ZIP code"), "{counts}");
    click(&client, "#auto-on").await;
    wait_for(&client, Locator::Id("confirm-on")).await;
    let confirm = text_of(&client, ".confirm").await;
    assert!(
        confirm.contains("Switching on invites no one by itself"),
        "{confirm}"
    );
    look_at(&client, &tools, "integration-confirm").await;
    // The confirmation button has the focus: Enter confirms.
    client
        .active_element()
        .await
        .unwrap()
        .send_keys(&Key::Enter.to_string())
        .await
        .unwrap();
    wait_for(&client, Locator::Css(".notice")).await;
    let notice = text_of(&client, ".notice").await;
    assert!(notice.contains("Auto invites are on"), "{notice}");
    assert!(app.practice().await.auto_invites_on);

    // A typo first: the error is next to Monday and the focus can go there.
    for day in [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ] {
        replace_text(&client, &format!("#day-{day}"), "").await;
    }
    replace_text(&client, "#day-monday", "9-5").await;
    click(&client, "#save-schedule").await;
    let error = text_of(&client, "#err-monday").await;
    assert!(error.contains("is not a window"), "{error}");
    let described = client
        .find(Locator::Id("day-monday"))
        .await
        .unwrap()
        .attr("aria-describedby")
        .await
        .unwrap();
    assert_eq!(described.as_deref(), Some("err-monday"));
    look_at(&client, &tools, "integration-schedule-error").await;

    replace_text(&client, "#day-monday", "08:00-12:00, 13:00-17:00").await;
    replace_text(&client, "#day-thursday", "10:00-14:00").await;
    click(&client, "#save-schedule").await;
    wait_for(&client, Locator::Css(".notice")).await;
    // Wednesday Nov 25, 10:00 in New York: Thursday first.
    let next = text_of(&client, ".next-windows").await;
    let lines: Vec<&str> = next.lines().collect();
    assert_eq!(
        lines,
        [
            "Thursday, November 26: 10:00 AM EST to 2:00 PM EST",
            "Monday, November 30: 8:00 AM EST to 12:00 PM EST",
            "Monday, November 30: 1:00 PM EST to 5:00 PM EST",
            "Thursday, December 3: 10:00 AM EST to 2:00 PM EST",
            "Monday, December 7: 8:00 AM EST to 12:00 PM EST",
        ],
        "{next}"
    );

    // The template editor with its preview.
    click(&client, "a[href$='/templates']").await;
    wait_for(&client, Locator::Id("tpl-subject")).await;
    replace_text(
        &client,
        "#tpl-subject",
        "{{ first_name }}, meet your portal",
    )
    .await;
    click(&client, "#preview").await;
    wait_for(&client, Locator::Css(".notice")).await;
    let subject = text_of(&client, "#preview-subject").await;
    assert_eq!(subject, "Alex, meet your portal");
    // The email itself, in its frame (the page's policy lets its inline
    // styles apply, as in a mail program).
    let frame = client
        .find(Locator::Css("iframe.email-preview"))
        .await
        .unwrap();
    frame.enter_frame().await.unwrap();
    let email = client
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(email.contains("Hi Alex"), "{email}");
    client.enter_parent_frame().await.unwrap();
    look_at(&client, &tools, "integration-templates").await;

    // The work lists, from the header: the chart missing its ZIP and email.
    click(&client, "nav a[href='/worklists']").await;
    let table = text_of(&client, "table.worklist").await;
    assert!(table.contains("ZIP code, email address"), "{table}");
    look_at(&client, &tools, "worklists").await;

    client.close().await.unwrap();
    app.stop().await;
}

/// "Invite existing patients" in a real browser: the counts, the refusal
/// without the confirmation next to its box, a run started with the
/// keyboard, its progress updating in place while the dispatcher sends,
/// pause and resume, and the summary at the end. axe-core on each state.
#[tokio::test]
async fn an_administrator_invites_existing_patients_and_watches_the_progress_in_a_real_browser() {
    let Some((tools, app)) = tools_and_app_or_skip().await else {
        return;
    };
    app.db
        .store
        .set_auto_invites(app.practice_id, false, None)
        .await
        .unwrap();
    for i in 0..4 {
        let email = format!("existing{i}@example.org");
        app.patient(&format!("E-{i}"), serde_json::json!({ "email": email }))
            .await;
    }
    app.patient("E-NOZIP", serde_json::json!({ "zip": null }))
        .await;
    let smtp = crate::TestSmtp::start().await;
    let dispatcher = app.dispatcher(smtp.addr, "browser");
    let driver = start_driver(&tools).await;
    let client = browser(&driver, &tools, (1366, 768)).await;
    sign_in(&client, &app, "ada").await;

    click(&client, "nav a[href='/admin/practices']").await;
    click(&client, "#go-live-link").await;
    let who = wait_for_text(&client, "#candidates", |t| t == "4").await;
    assert_eq!(who, "4");
    let missing = text_of(&client, "#missing-fields").await;
    assert!(missing.contains("1 missing the ZIP code"), "{missing}");
    look_at(&client, &tools, "go-live").await;

    // Without the box ticked: refused, the reason next to the box.
    click(&client, "#go-live-start").await;
    let error = wait_for_text(&client, "#err-confirmed", |t| !t.is_empty()).await;
    assert!(error.contains("tick the box"), "{error}");
    look_at(&client, &tools, "go-live-error").await;

    replace_text(&client, "#rate", "60").await;
    let confirm = client.find(Locator::Id("confirmed")).await.unwrap();
    confirm.send_keys(" ").await.unwrap();
    confirm.send_keys(&Key::Enter.to_string()).await.unwrap();
    let notice = wait_for_text(&client, ".notice", |t| t.contains("Started")).await;
    assert!(
        notice.contains("4 patients will be invited, 60 an hour"),
        "{notice}"
    );

    // The page's script shows each send without a reload.
    dispatcher.run_round().await.unwrap();
    assert_eq!(smtp.received().len(), 1);
    wait_for_text(&client, "#go-live-run [data-field=sent]", |t| t == "1").await;
    wait_for_text(&client, "#go-live-run [data-field=waiting]", |t| t == "3").await;
    look_at(&client, &tools, "go-live-running").await;

    click(&client, "#go-live-pause").await;
    let state = wait_for_text(&client, "#run-h", |t| t.contains("Paused")).await;
    assert!(state.contains("Paused"), "{state}");
    click(&client, "#go-live-resume").await;
    wait_for_text(&client, "#run-h", |t| t.contains("Running")).await;
    for _ in 0..3 {
        app.clock.advance(jiff::SignedDuration::from_mins(1));
        dispatcher.run_round().await.unwrap();
    }
    assert_eq!(smtp.received().len(), 4);
    // Finished: the script reloads the page once for the summary.
    let summary = wait_for_text(&client, "#run-summary", |t| !t.is_empty()).await;
    assert!(
        summary.contains("4 sent, 0 held back by the cap, 0 failed, 0 skipped, of 4."),
        "{summary}"
    );
    look_at(&client, &tools, "go-live-finished").await;
    full_page_screenshot(&client, "staff-go-live-phone", (390, 844)).await;

    client.close().await.unwrap();
    app.stop().await;
}

/// The Connections page in a real browser: the test email's failure is
/// said in the SMTP client's own words next to the address field (the test
/// settings' server, localhost:587, is not running). axe-core on it.
#[tokio::test]
async fn a_test_email_that_fails_says_why_next_to_the_field_in_a_real_browser() {
    let Some(tools) = crate::webdriver::tools_or_skip() else {
        return;
    };
    // Sender rules, so the page shows them too.
    let with_senders = |settings: &mut enroll_server::Settings| {
        settings.mllp.allow = vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.20.0.0/16".parse().unwrap(),
        ];
        settings.mllp.senders = vec![
            enroll_server::SenderRule {
                facility: "TEST".into(),
                allow: vec!["10.20.4.0/24".parse().unwrap()],
                certificate_names: Vec::new(),
            },
            enroll_server::SenderRule {
                facility: "LAB".into(),
                allow: Vec::new(),
                certificate_names: Vec::new(),
            },
        ];
    };
    let Some(app) =
        crate::TestApp::start_with(enroll_store::testing::Engine::Sqlite, with_senders).await
    else {
        return;
    };
    let driver = start_driver(&tools).await;
    let client = browser(&driver, &tools, (1366, 768)).await;
    sign_in(&client, &app, "ada").await;
    click(&client, "nav a[href='/admin/practices']").await;
    click(&client, "#connections-link").await;
    wait_for_text(&client, "#smtp", |t| t.contains("localhost:587")).await;
    let rules = wait_for_text(&client, "#sender-rules", |t| t.contains("LAB")).await;
    assert!(rules.contains("TEST from 10.20.4.0/24"), "{rules}");
    look_at(&client, &tools, "connections").await;

    replace_text(&client, "#test-email-to", "it@practice.test").await;
    client
        .find(Locator::Id("test-email-to"))
        .await
        .unwrap()
        .send_keys(&Key::Enter.to_string())
        .await
        .unwrap();
    let answer = wait_for_text(&client, "#test-email-result", |t| !t.is_empty()).await;
    assert!(
        answer.starts_with("The test email was not sent (SMTP server localhost:587): "),
        "{answer}"
    );
    assert!(answer.contains("localhost:587"), "{answer}");
    let described = client
        .find(Locator::Id("test-email-to"))
        .await
        .unwrap()
        .attr("aria-describedby")
        .await
        .unwrap();
    assert_eq!(described.as_deref(), Some("test-email-result"));
    look_at(&client, &tools, "connections-test-email-error").await;

    client.close().await.unwrap();
    app.stop().await;
}

/// "Load a roster" in a real browser: the file chosen with the file field,
/// the unknown "Gender" column refused next to the field with a choice of
/// what it holds, the choice made and the file loaded, then the summary
/// and the rejected rows' lines after the page's script sees the import
/// end. axe-core on each state, desktop and phone screenshots.
#[tokio::test]
async fn an_administrator_loads_a_roster_and_maps_an_unknown_column_in_a_real_browser() {
    let Some((tools, app)) = tools_and_app_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roster.csv");
    std::fs::write(
        &file,
        "MRN,First Name,Last Name,DOB,Gender,ZIP,Email\n\
         R-1,Ida,Wells,07/04/1990,F,60616,ida@example.org\n\
         R-2,Bo,Li,1980-01-02,M,02139,bo@example.org\n\
         R-3,Cy,Kay,13/13/1990,F,02139,cy@example.org\n",
    )
    .unwrap();
    let file = file.to_str().unwrap().to_string();
    let driver = start_driver(&tools).await;
    let client = browser(&driver, &tools, (1366, 768)).await;
    sign_in(&client, &app, "ada").await;

    click(&client, "nav a[href='/admin/practices']").await;
    click(&client, "#roster-link").await;
    wait_for(&client, Locator::Id("expected-columns")).await;
    look_at(&client, &tools, "roster").await;

    // The header is checked before anything loads: "Gender" is unknown.
    let choose = |client: Client, file: String| async move {
        let field = client.find(Locator::Id("roster-file")).await.unwrap();
        field.send_keys(&file).await.unwrap();
        click(&client, "#roster-load").await;
    };
    choose(client.clone(), file.clone()).await;
    let error = wait_for_text(&client, "#err-file", |t| !t.is_empty()).await;
    assert!(
        error.contains("does not know 1 of this file's columns"),
        "{error}"
    );
    assert!(error.contains("no column for the birth sex"), "{error}");
    let label = text_of(&client, "label[for=column-1]").await;
    assert!(label.contains("Gender"), "{label}");
    look_at(&client, &tools, "roster-header-error").await;
    full_page_screenshot(&client, "staff-roster-error-phone", (390, 844)).await;
    client.set_window_size(1366, 768).await.unwrap();

    // "Gender" holds the birth sex here; the file is chosen again.
    click(&client, "#column-1 option[value=birth_sex]").await;
    choose(client.clone(), file).await;
    let summary = wait_for_text(&client, "#import-summary", |t| !t.is_empty()).await;
    assert!(
        summary.contains("3 rows: 2 created, 0 updated, 0 unchanged, 1 rejected."),
        "{summary}"
    );
    let rejected = text_of(&client, "#rejected-rows").await;
    assert!(rejected.contains('4'), "line 4 is named: {rejected}");
    assert!(
        !rejected.contains("Kay"),
        "no value from the file: {rejected}"
    );
    look_at(&client, &tools, "roster-loaded").await;
    full_page_screenshot(&client, "staff-roster-loaded-phone", (390, 844)).await;

    client.close().await.unwrap();
    app.stop().await;
}
