//! The staff pages in a real browser (the harness: `webdriver.rs`), axe-core
//! run on every page, and a screenshot of every page at 1366x768 and
//! 768x1024 saved under `target/screenshots/` for a person to look at.

use std::time::Duration;

use fantoccini::actions::{InputSource, MOUSE_BUTTON_RIGHT, MouseActions, PointerAction};
use fantoccini::key::Key;
use fantoccini::{Client, Locator};
use serde_json::json;

use crate::webdriver::{
    Tools, axe_check, browser, screenshot_dir, start_driver, text_of, tools_and_app_or_skip,
    wait_for, wait_for_text,
};
use crate::{PASSWORD, TestApp, TestSmtp};

/// axe, then a screenshot at both sizes.
pub async fn look_at(client: &Client, tools: &Tools, name: &str) {
    axe_check(client, tools, name).await;
    let dir = screenshot_dir();
    for (w, h, size) in [(1366, 768, "1366x768"), (768, 1024, "768x1024")] {
        client.set_window_size(w, h).await.unwrap();
        let png = client.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("staff-{name}-{size}.png")), png).unwrap();
    }
    client.set_window_size(1366, 768).await.unwrap();
}

pub async fn sign_in(client: &Client, app: &TestApp, username: &str) {
    client.goto(&app.url("/")).await.unwrap();
    client
        .wait()
        .for_element(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys(username)
        .await
        .unwrap();
    client
        .find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(&format!("{PASSWORD}{}", char::from(Key::Enter)))
        .await
        .unwrap();
    wait_for(client, Locator::Id("q")).await;
}

async fn search(client: &Client, app: &TestApp, typed: &str) {
    client
        .goto(&app.url(&format!(
            "/search?q={}",
            url::form_urlencoded::byte_serialize(typed.as_bytes()).collect::<String>()
        )))
        .await
        .unwrap();
}

async fn answer_text(client: &Client) -> String {
    wait_for_text(client, "#answer", |t| !t.trim().is_empty()).await
}

async fn right_click(client: &Client, css: &str) {
    let row = client.find(Locator::Css(css)).await.unwrap();
    let actions = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement {
            element: row,
            duration: None,
            x: 0.0,
            y: 0.0,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_RIGHT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_RIGHT,
        });
    client.perform_actions(actions).await.unwrap();
}

async fn menu_item(client: &Client, action: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .for_element(Locator::Css(&format!(
            "#portal-menu:not([hidden]) [data-action=\"{action}\"]"
        )))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_front_desk_sends_invites_both_ways_the_article_describes_in_a_real_browser() {
    let Some((tools, app)) = tools_and_app_or_skip().await else {
        return;
    };
    let smtp = TestSmtp::start().await;
    let dispatcher = app.dispatcher(smtp.addr, "browser");
    let complete = app
        .patient(
            "B-1",
            json!({ "first_name": "Ada", "last_name": "Lovelace",
        "email": "ada@example.org" }),
        )
        .await;
    let no_email = app
        .patient(
            "B-2",
            json!({ "first_name": "Alan", "last_name": "Lovelace",
        "email": null }),
        )
        .await;
    let banner = app
        .patient(
            "B-3",
            json!({ "first_name": "Grace", "last_name": "Hopper",
        "email": "grace@example.org" }),
        )
        .await;
    // Deliver the auto invites of the charts just added, so each send below is Enroll Now's.
    dispatcher.run_round().await.unwrap();
    smtp.clear();

    let driver = start_driver(&tools).await;
    let client = browser(&driver, &tools, (1366, 768)).await;

    // Sign-in page, then search.
    client.goto(&app.url("/")).await.unwrap();
    wait_for(&client, Locator::Id("username")).await;
    look_at(&client, &tools, "signin").await;
    sign_in(&client, &app, "frida").await;
    search(&client, &app, "lovelace").await;
    wait_for(
        &client,
        Locator::Css(&format!("tr[data-patient=\"{complete}\"]")),
    )
    .await;
    look_at(&client, &tools, "search").await;

    // Path 1: right-click the result -> Patient Portal -> Enroll Now.
    right_click(&client, &format!("tr[data-patient=\"{complete}\"]")).await;
    look_at(&client, &tools, "search-menu").await;
    menu_item(&client, "enroll").await.click().await.unwrap();
    let text = answer_text(&client).await;
    assert!(text.contains("Sent"), "{text}");
    look_at(&client, &tools, "search-sent").await;
    dispatcher.run_round().await.unwrap();
    assert!(
        smtp.received().iter().any(|m| m.to == ["ada@example.org"]),
        "Enroll Now's email reached the SMTP server"
    );

    // Refused for want of an email; Update now -> save -> sent.
    right_click(&client, &format!("tr[data-patient=\"{no_email}\"]")).await;
    menu_item(&client, "enroll").await.click().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = answer_text(&client).await;
    assert!(text.contains("Email address is missing"), "{text}");
    look_at(&client, &tools, "search-refused").await;
    client
        .find(Locator::Css("#answer [data-update]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let email = wait_for(&client, Locator::Id("field-email")).await;
    let focused = client
        .execute("return document.activeElement.id", vec![])
        .await
        .unwrap();
    assert_eq!(
        focused, "field-email",
        "Update now opens the form at the missing field"
    );
    look_at(&client, &tools, "chart-update-now").await;
    email.send_keys("alan@example.org").await.unwrap();
    client
        .find(Locator::Id("save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Auto invites are on in the test practice: the new email is itself a
    // trigger that invites, so saving sends one invite, not two.
    let notice = wait_for_text(&client, ".notice", |t| !t.is_empty()).await;
    assert!(notice.contains("no second invite was sent"), "{notice}");
    dispatcher.run_round().await.unwrap();
    let to_alan = smtp
        .received()
        .iter()
        .filter(|m| m.to == ["alan@example.org"])
        .count();
    assert_eq!(to_alan, 1, "one invite after Update now");

    // Path 2: open the chart, confirm, click the banner icon -> Enroll Now.
    client
        .goto(&app.url(&format!("/patients/{banner}")))
        .await
        .unwrap();
    wait_for(&client, Locator::Id("portal-icon")).await;
    look_at(&client, &tools, "chart").await;
    client
        .find(Locator::Css("#confirm-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_text(&client, "#confirmed-line", |t| t.contains("by frida")).await;
    client
        .find(Locator::Id("portal-icon"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    look_at(&client, &tools, "chart-menu").await;
    menu_item(&client, "enroll").await.click().await.unwrap();
    let text = answer_text(&client).await;
    assert!(text.contains("Sent"), "{text}");
    dispatcher.run_round().await.unwrap();
    assert!(
        smtp.received()
            .iter()
            .any(|m| m.to == ["grace@example.org"])
    );
    let (_, chart) = app.get(&format!("/api/patients/{banner}")).await;
    assert_eq!(chart["patient"]["fields_confirmed_by"], "frida");

    // The keyboard alone: search box -> arrow to the row -> Shift+F10 -> arrows -> Enter.
    search(&client, &app, "hopper").await;
    let q = wait_for(&client, Locator::Id("q")).await;
    q.send_keys(&(char::from(Key::Down)).to_string())
        .await
        .unwrap();
    let focused = client
        .execute(
            "return document.activeElement.getAttribute('data-patient')",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        focused,
        banner.to_string(),
        "the arrow key moves to the first row"
    );
    let row = client
        .find(Locator::Css(&format!("tr[data-patient=\"{banner}\"]")))
        .await
        .unwrap();
    row.send_keys(&format!(
        "{}{}",
        char::from(Key::Shift),
        char::from(Key::F10)
    ))
    .await
    .unwrap();
    menu_item(&client, "enroll").await;
    let focused = client
        .execute(
            "return document.activeElement.getAttribute('data-action')",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(focused, "enroll", "the menu opens with Enroll Now focused");
    // Keys go where the focus is, as a person's would (past Enroll in
    // person and Resend to Invite history).
    for _ in 0..3 {
        client
            .active_element()
            .await
            .unwrap()
            .send_keys(&char::from(Key::Down).to_string())
            .await
            .unwrap();
    }
    let focused = client
        .execute(
            "return document.activeElement.getAttribute('data-action')",
            vec![],
        )
        .await
        .unwrap();
    let visible = client
        .execute(
            "return Array.from(document.querySelectorAll('#portal-menu button:not([hidden])')).map(b => b.dataset.action).join(',')",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        focused, "history",
        "arrow keys move through the menu ({visible})"
    );
    client
        .active_element()
        .await
        .unwrap()
        .send_keys(&char::from(Key::Enter).to_string())
        .await
        .unwrap();
    wait_for(&client, Locator::Id("invites")).await;
    let url = client.current_url().await.unwrap();
    assert!(
        url.path().ends_with(&format!("/patients/{banner}")),
        "{url}"
    );

    // Another practice's chart does not exist for Frida.
    let other = crate::ui::other_practice_patient(&app).await;
    client
        .goto(&app.url(&format!("/patients/{other}")))
        .await
        .unwrap();
    let body = text_of(&client, "body").await;
    assert!(body.contains("no such patient"), "{body}");

    // A front desk cannot open admin pages.
    client.goto(&app.url("/admin/users")).await.unwrap();
    let body = text_of(&client, "body").await;
    assert!(body.contains("Only an administrator"), "{body}");

    // The admin's pages, then idle sign-out.
    client.delete_all_cookies().await.unwrap();
    sign_in(&client, &app, "ada").await;
    client.goto(&app.url("/admin/users")).await.unwrap();
    wait_for(&client, Locator::Id("new-username")).await;
    look_at(&client, &tools, "admin-users").await;
    client.goto(&app.url("/admin/audit")).await.unwrap();
    look_at(&client, &tools, "admin-audit").await;
    app.clock.advance(jiff::SignedDuration::from_mins(16));
    client.goto(&app.url("/search")).await.unwrap();
    wait_for(&client, Locator::Id("username")).await;
    let url = client.current_url().await.unwrap();
    assert_eq!(url.path(), "/signin", "signed out after 15 idle minutes");

    client.close().await.unwrap();
    drop(driver);
    app.stop().await;
}
