//! R10 through HTTP: the invite's link, the identity check, the account,
//! the one-time code, the terms, and every page a link that no longer
//! works leads to; the lockout, the throttle and CSRF; and what activation
//! does to the patient (active, invites cancelled, Enroll Now refused).

use enroll_server::Settings;
use enroll_store::testing::{ENGINES, Engine};
use jiff::SignedDuration;
use reqwest::StatusCode;
use serde_json::json;

use crate::{TestApp, TestSmtp};

pub const STRONG: &str = "correct horse battery staple";

/// A test app whose SMTP (invites and codes) is a sink of the test.
pub async fn start(
    engine: Engine,
    adjust: impl FnOnce(&mut Settings),
) -> Option<(TestApp, TestSmtp)> {
    let smtp = TestSmtp::start().await;
    let addr = smtp.addr;
    let app = TestApp::start_with(engine, |settings| {
        settings.smtp = enroll_notify::SmtpConfig {
            host: addr.ip().to_string(),
            port: addr.port(),
            security: enroll_notify::SmtpSecurity::Plain,
            username: None,
            password: None,
            pool_size: 2,
            timeout_secs: 5,
        };
        adjust(settings);
    })
    .await?;
    Some((app, smtp))
}

pub async fn on_each_engine_with(
    adjust: impl Fn(&mut Settings),
    test: impl AsyncFn(&TestApp, &TestSmtp),
) {
    for engine in ENGINES {
        if let Some((app, smtp)) = start(engine, &adjust).await {
            test(&app, &smtp).await;
            app.stop().await;
        }
    }
}

async fn on_each_engine(test: impl AsyncFn(&TestApp, &TestSmtp)) {
    on_each_engine_with(|_| {}, test).await;
}

/// What a page answered.
pub struct Page {
    pub status: StatusCode,
    pub body: String,
}

impl Page {
    /// The value of the hidden field `name`.
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self
            .body
            .find(&marker)
            .unwrap_or_else(|| panic!("no {name} in {}", self.body))
            + marker.len();
        self.body[start..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    pub fn flow(&self) -> String {
        self.hidden("flow")
    }
}

pub async fn get(app: &TestApp, path: &str) -> Page {
    let response = app.fetch(path).await;
    Page {
        status: response.status(),
        body: response.text().await.unwrap(),
    }
}

pub async fn post(app: &TestApp, path: &str, form: &[(&str, &str)]) -> Page {
    let response = app
        .http
        .post(app.url(path))
        .form(form)
        .send()
        .await
        .unwrap();
    Page {
        status: response.status(),
        body: response.text().await.unwrap(),
    }
}

/// The decoded text of every mail the sink got, oldest first.
fn texts(smtp: &TestSmtp) -> Vec<String> {
    smtp.received()
        .iter()
        .map(|mail| {
            let parsed = mail_parser::MessageParser::default()
                .parse(mail.data.as_bytes())
                .expect("a MIME message");
            parsed.body_text(0).unwrap_or_default().into_owned()
        })
        .collect()
}

/// Delivers due invites and returns the token of the newest link mailed.
pub(crate) async fn invite_token(app: &TestApp, smtp: &TestSmtp) -> String {
    app.dispatcher(smtp.addr, "w1").run_round().await.unwrap();
    last_token(smtp)
}

fn last_token(smtp: &TestSmtp) -> String {
    texts(smtp)
        .iter()
        .rev()
        .find_map(|text| {
            let at = text.find("http://invites.test/a/")? + "http://invites.test/a/".len();
            Some(
                text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                    .collect(),
            )
        })
        .expect("an activation link was mailed")
}

/// The 6-digit code of the newest code email.
pub fn last_code(smtp: &TestSmtp) -> String {
    texts(smtp)
        .iter()
        .rev()
        .find_map(|text| {
            let at = text.find("code is ")? + "code is ".len();
            Some(text[at..at + 6].to_string())
        })
        .expect("a code was mailed")
}

/// Landing, identity (right answers) -> the account page.
pub async fn to_account(app: &TestApp, token: &str) -> Page {
    let landing = get(app, &format!("/a/{token}")).await;
    assert_eq!(landing.status, StatusCode::OK, "{}", landing.body);
    let page = post(
        app,
        &format!("/a/{token}/identity"),
        &[
            ("flow", &landing.flow()),
            ("date_of_birth", "07/04/1990"),
            ("zip", "10027"),
        ],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page
}

/// The code page's form sent with `code` and the terms accepted.
pub async fn send_code(app: &TestApp, token: &str, code_page: &Page, code: &str) -> Page {
    let flow = code_page.flow();
    let form = [("flow", flow.as_str()), ("code", code), ("terms", "yes")];
    post(app, &format!("/a/{token}/code"), &form).await
}

/// ... -> the code page.
pub async fn to_code(app: &TestApp, token: &str) -> Page {
    let account = to_account(app, token).await;
    let page = post(
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
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page
}

async fn wrong_identity(app: &TestApp, token: &str, flow: &str) -> Page {
    post(
        app,
        &format!("/a/{token}/identity"),
        &[
            ("flow", flow),
            ("date_of_birth", "1990-07-04"),
            ("zip", "99999"),
        ],
    )
    .await
}

pub async fn status_of(app: &TestApp, id: i64) -> String {
    let (_, view) = app.get(&format!("/api/patients/{id}")).await;
    view["status"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_patient_activates_from_the_invite_link_step_by_step() {
    on_each_engine(async |app, smtp| {
        let id = app.patient("M-1", json!({})).await;
        let token = invite_token(app, smtp).await;

        let landing = get(app, &format!("/a/{token}")).await;
        assert_eq!(landing.status, StatusCode::OK);
        assert!(landing.body.contains("<html lang=\"en\">"));
        assert!(landing.body.contains("<label for=\"date_of_birth\">"));
        assert!(landing.body.contains("<label for=\"zip\">"));
        assert!(
            !landing.body.contains("Rosa"),
            "anyone holding the link sees the page: no name on it"
        );
        let flow = landing.flow();

        // Wrong ZIP: the error is tied to both fields and does not say which.
        let wrong = wrong_identity(app, &token, &flow).await;
        assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(wrong.body.contains("do not match what we have on file"));
        assert!(
            wrong
                .body
                .contains("aria-describedby=\"zip-hint form-error\"")
        );
        assert!(
            wrong
                .body
                .contains("Tries left before this link is locked: 4.")
        );
        // A date that is no date is a field error, not a counted guess.
        let bad = post(
            app,
            &format!("/a/{token}/identity"),
            &[("flow", &flow), ("date_of_birth", "soon"), ("zip", "10027")],
        )
        .await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(bad.body.contains("id=\"date_of_birth-error\""));
        // Text that is no ZIP (multi-byte characters included) is a field error too.
        let bad_zip = post(
            app,
            &format!("/a/{token}/identity"),
            &[
                ("flow", &flow),
                ("date_of_birth", "1990-07-04"),
                ("zip", "1234é6789"),
            ],
        )
        .await;
        assert_eq!(bad_zip.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(bad_zip.body.contains("id=\"zip-error\""));
        assert!(!bad_zip.body.contains("Tries left"));
        assert!(!bad.body.contains("Tries left"));

        let account = post(
            app,
            &format!("/a/{token}/identity"),
            &[
                ("flow", &flow),
                ("date_of_birth", "1990-07-04"),
                ("zip", "10027"),
            ],
        )
        .await;
        assert_eq!(account.status, StatusCode::OK, "{}", account.body);
        assert_eq!(account.hidden("username"), "rosa@example.org");
        assert_ne!(
            account.flow(),
            flow,
            "passing the check replaces the flow secret"
        );
        let flow = account.flow();
        // The old secret (known before the check) no longer opens the next step.
        let stale = post(
            app,
            &format!("/a/{token}/account"),
            &[
                ("flow", &landing.flow()),
                ("username", "rosa"),
                ("password", STRONG),
                ("password_again", STRONG),
            ],
        )
        .await;
        assert_eq!(stale.status, StatusCode::FORBIDDEN);

        for (password, again, error) in [
            ("short", "short", "too short"),
            ("password1234", "password1234", "too easy to guess"),
            (STRONG, "something else", "not the same"),
        ] {
            let page = post(
                app,
                &format!("/a/{token}/account"),
                &[
                    ("flow", &flow),
                    ("username", "rosa@example.org"),
                    ("password", password),
                    ("password_again", again),
                ],
            )
            .await;
            assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "{password}");
            assert!(page.body.contains(error), "{password}: {}", page.body);
        }
        let bad_name = post(
            app,
            &format!("/a/{token}/account"),
            &[
                ("flow", &flow),
                ("username", "rosa parks"),
                ("password", STRONG),
                ("password_again", STRONG),
            ],
        )
        .await;
        assert!(bad_name.body.contains("id=\"username-error\""));

        let mails_before = smtp.count();
        let code_page = post(
            app,
            &format!("/a/{token}/account"),
            &[
                ("flow", &flow),
                ("username", "Rosa@Example.org"),
                ("password", STRONG),
                ("password_again", STRONG),
            ],
        )
        .await;
        assert_eq!(code_page.status, StatusCode::OK, "{}", code_page.body);
        assert!(code_page.body.contains("r•••@example.org"));
        assert_eq!(smtp.count(), mails_before + 1, "the code was emailed");
        assert_eq!(smtp.received().last().unwrap().to, ["rosa@example.org"]);
        let code = last_code(smtp);
        assert!(code.chars().all(|c| c.is_ascii_digit()));

        let wrong_code = if code == "000000" { "111111" } else { "000000" };
        let page = post(
            app,
            &format!("/a/{token}/code"),
            &[("flow", &flow), ("code", wrong_code), ("terms", "yes")],
        )
        .await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.body.contains("id=\"code-error\""));
        let page = post(
            app,
            &format!("/a/{token}/code"),
            &[("flow", &flow), ("code", &code)],
        )
        .await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.body.contains("id=\"terms-error\""));
        assert_ne!(status_of(app, id).await, "active");

        let done = post(
            app,
            &format!("/a/{token}/code"),
            &[("flow", &flow), ("code", &code), ("terms", "yes")],
        )
        .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        assert!(done.body.contains("Your patient portal account with"));
        assert!(
            done.body.contains("rosa@example.org"),
            "the username is lowercased"
        );
        assert_eq!(status_of(app, id).await, "active", "{:?}", app.engine);

        let kinds = app.timeline_kinds(id).await;
        for kind in [
            "activation_identity_failed",
            "activation_identity_confirmed",
            "activation_code_sent",
            "activation_code_failed",
            "activated",
        ] {
            assert!(kinds.contains(&kind.to_string()), "{kind} in {kinds:?}");
        }
        let (_, audit) = app.admin_get(&format!("/api/audit?patient_id={id}")).await;
        let actions: Vec<&str> = audit
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|a| a["action"].as_str())
            .collect();
        assert!(
            actions
                .iter()
                .any(|a| a.contains("wrong date of birth or ZIP")),
            "{actions:?}"
        );
        assert!(
            actions.iter().any(|a| a.contains("patient active")),
            "{actions:?}"
        );

        // The link is used now; Enroll Now says the patient is active.
        let again = get(app, &format!("/a/{token}")).await;
        assert_eq!(again.status, StatusCode::GONE);
        assert!(again.body.contains("already used"));
        let (status, body) = app.enroll(id).await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(body["code"], "already_active");
        // Stored: the argon2id hash, never the password; the code only hashed.
        let stored = enroll_store::testing::scalar(
            &app.db.store,
            "SELECT COUNT(*) FROM patient_accounts WHERE password_hash LIKE '$argon2id$%'",
        )
        .await
        .unwrap();
        assert_eq!(stored, 1);
    })
    .await;
}

#[tokio::test]
async fn activation_cancels_queued_invites_and_later_triggers_send_nothing() {
    on_each_engine(async |app, smtp| {
        let id = app.patient("M-2", json!({})).await;
        let token = invite_token(app, smtp).await;
        // Enroll Now queues a second invite, which activation must cancel.
        let (status, _) = app.enroll(id).await;
        assert_eq!(status, StatusCode::CREATED);
        let code_page = to_code(app, &token).await;
        let done = send_code(app, &token, &code_page, &last_code(smtp)).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        let states: Vec<String> = app
            .invites(id)
            .await
            .iter()
            .map(|i| i["state"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(states, ["sent", "cancelled"], "{:?}", app.engine);

        // A required-field change is recorded and sends nothing.
        let sent_before = smtp.count();
        let (status, _) = app
            .call(
                reqwest::Method::PUT,
                &format!("/api/patients/{id}"),
                Some(json!({
                    "first_name": "Rosa", "last_name": "Parks", "date_of_birth": "1990-07-04",
                    "birth_sex": "F", "zip": "10028", "email": "rosa@example.org",
                })),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        app.clock.advance(SignedDuration::from_mins(5));
        app.dispatcher(smtp.addr, "w1").run_round().await.unwrap();
        assert_eq!(
            smtp.count(),
            sent_before,
            "nothing is sent to an active patient"
        );
        assert_eq!(app.invites(id).await.len(), 2);
        assert!(
            app.timeline_kinds(id)
                .await
                .contains(&"trigger".to_string())
        );
    })
    .await;
}

#[tokio::test]
async fn five_wrong_answers_lock_the_link_and_more_guesses_unlock_nothing() {
    let many = |s: &mut Settings| s.activation.requests_per_minute_per_ip = 10_000;
    on_each_engine_with(many, async |app, smtp| {
        let id = app.patient("M-3", json!({})).await;
        let token = invite_token(app, smtp).await;
        let flow = get(app, &format!("/a/{token}")).await.flow();
        for n in 1..=4 {
            let page = wrong_identity(app, &token, &flow).await;
            assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY, "guess {n}");
        }
        let fifth = wrong_identity(app, &token, &flow).await;
        assert_eq!(fifth.status, StatusCode::LOCKED);
        assert!(fifth.body.contains("This link is locked"));
        assert!(fifth.body.contains("new invitation"));
        // Guesses go on, the right answer among them: all locked.
        for (dob, zip) in (0..40)
            .map(|i| (format!("1990-07-{:02}", 1 + i % 28), format!("100{:02}", i)))
            .chain([("1990-07-04".to_string(), "10027".to_string())])
        {
            let page = post(
                app,
                &format!("/a/{token}/identity"),
                &[("flow", &flow), ("date_of_birth", &dob), ("zip", &zip)],
            )
            .await;
            assert_eq!(page.status, StatusCode::LOCKED);
        }
        // The page names the practice's phone once the practice has one.
        let phone_path = format!("/api/practices/{}/phone", app.practice_id);
        let (status, refused) = app
            .admin_call(
                reqwest::Method::PUT,
                &phone_path,
                Some(json!({ "phone": "555" })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        assert!(refused.to_string().contains("area code"), "{refused}");
        let (status, practice) = app
            .admin_call(
                reqwest::Method::PUT,
                &phone_path,
                Some(json!({ "phone": "(617) 555-0100" })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{practice}");
        assert_eq!(practice["phone"], "+16175550100");
        let landing = get(app, &format!("/a/{token}")).await;
        assert_eq!(
            landing.status,
            StatusCode::LOCKED,
            "the 6th visit shows the locked page"
        );
        assert!(
            landing
                .body
                .contains(r#"href="tel:+16175550100">(617) 555-0100</a>"#),
            "the locked page says whom to call: {}",
            landing.body
        );
        assert_ne!(status_of(app, id).await, "active");
        let failures =
            enroll_store::testing::scalar(&app.db.store, "SELECT failures FROM activation_tokens")
                .await
                .unwrap();
        assert_eq!(
            failures, 5,
            "guesses on a locked link are refused, not counted"
        );
        let kinds = app.timeline_kinds(id).await;
        assert_eq!(
            kinds
                .iter()
                .filter(|k| *k == "activation_identity_failed")
                .count(),
            5
        );
        assert!(kinds.contains(&"activation_refused".to_string()));
    })
    .await;
}

/// Nobody learns which answer was wrong, or whether an unknown link and an
/// expired one belong to anyone.
#[tokio::test]
async fn answers_look_the_same_whichever_answer_was_wrong_and_whoever_the_link_is() {
    on_each_engine(async |app, smtp| {
        app.patient("M-4", json!({})).await;
        let first = invite_token(app, smtp).await;
        app.patient("M-5", json!({ "email": "other@example.org" }))
            .await;
        let second = invite_token(app, smtp).await;
        assert_ne!(first, second);

        let answer = async |token: &str, dob: &str, zip: &str| {
            let flow = get(app, &format!("/a/{token}")).await.flow();
            let page = post(
                app,
                &format!("/a/{token}/identity"),
                &[("flow", &flow), ("date_of_birth", dob), ("zip", zip)],
            )
            .await;
            // The answers typed are shown again to whoever typed them.
            let typed = |name: &str, value: &str| format!("name=\"{name}\" value=\"{value}\"");
            (
                page.status,
                page.body
                    .replace(token, "TOKEN")
                    .replace(&flow, "FLOW")
                    .replace(&typed("date_of_birth", dob), "DOB")
                    .replace(&typed("zip", zip), "ZIP"),
            )
        };
        let wrong_zip = answer(&first, "1990-07-04", "99999").await;
        let wrong_dob = answer(&second, "1991-01-01", "10027").await;
        assert_eq!(wrong_zip.0, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(wrong_zip, wrong_dob, "{:?}", app.engine);

        let unknown = get(app, "/a/AAAAAAAAAAAAAAAAAAAAAA").await;
        app.clock.advance(SignedDuration::from_hours(30 * 24));
        let expired = get(app, &format!("/a/{first}")).await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert_eq!(
            (expired.status, expired.body),
            (unknown.status, unknown.body.clone())
        );
        assert!(
            unknown
                .body
                .contains("Ask your practice to send you a new invitation")
        );
        let posted = post(app, "/a/AAAAAAAAAAAAAAAAAAAAAA/identity", &[("flow", "x")]).await;
        assert_eq!((posted.status, posted.body), (unknown.status, unknown.body));
    })
    .await;
}

#[tokio::test]
async fn a_link_stops_working_when_the_address_changes_or_the_patient_dies() {
    on_each_engine(async |app, smtp| {
        let id = app.patient("M-6", json!({})).await;
        let token = invite_token(app, smtp).await;
        assert_eq!(
            get(app, &format!("/a/{token}")).await.status,
            StatusCode::OK
        );
        let (status, _) = app
            .call(
                reqwest::Method::PUT,
                &format!("/api/patients/{id}"),
                Some(json!({
                    "first_name": "Rosa", "last_name": "Parks", "date_of_birth": "1990-07-04",
                    "birth_sex": "F", "zip": "10027", "email": "rosa.new@example.org",
                })),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let page = get(app, &format!("/a/{token}")).await;
        assert_eq!(
            page.status,
            StatusCode::NOT_FOUND,
            "sent to an address the chart no longer has"
        );
        assert!(page.body.contains("This link no longer works"));

        // The invite to the new address works, until the patient dies.
        app.clock.advance(SignedDuration::from_mins(5));
        let newer = invite_token(app, smtp).await;
        assert_ne!(newer, token);
        assert_eq!(
            get(app, &format!("/a/{newer}")).await.status,
            StatusCode::OK
        );
        app.db
            .execute(&format!(
                "UPDATE patients SET deceased = TRUE WHERE id = {id}"
            ))
            .await
            .unwrap();
        assert_eq!(
            get(app, &format!("/a/{newer}")).await.status,
            StatusCode::NOT_FOUND
        );
    })
    .await;
}

#[tokio::test]
async fn a_delivery_retry_carries_the_same_link() {
    on_each_engine(async |app, smtp| {
        let id = app.patient("M-7", json!({})).await;
        smtp.state
            .defer
            .lock()
            .unwrap()
            .insert("rosa@example.org".into());
        let dispatcher = app.dispatcher(smtp.addr, "w1");
        let first = dispatcher.run_round().await.unwrap();
        assert_eq!(first.retrying, 1, "{first:?}");
        smtp.state.defer.lock().unwrap().clear();
        app.clock.advance(SignedDuration::from_mins(5));
        let second = dispatcher.run_round().await.unwrap();
        assert_eq!(second.sent, 1, "{second:?}");
        let tokens =
            enroll_store::testing::scalar(&app.db.store, "SELECT COUNT(*) FROM activation_tokens")
                .await
                .unwrap();
        assert_eq!(tokens, 1, "the retry reused the token of its delivery");
        let token = last_token(smtp);
        assert_eq!(
            get(app, &format!("/a/{token}")).await.status,
            StatusCode::OK
        );
        assert_eq!(app.invites(id).await[0]["attempts"], 2);
    })
    .await;
}

#[tokio::test]
async fn forms_need_the_flow_secret_of_their_step() {
    on_each_engine(async |app, smtp| {
        app.patient("M-8", json!({})).await;
        let token = invite_token(app, smtp).await;
        let landing = get(app, &format!("/a/{token}")).await;
        let right = [("date_of_birth", "1990-07-04"), ("zip", "10027")];
        for flow in ["", "forged"] {
            let mut form = vec![("flow", flow)];
            form.extend(right);
            let page = post(app, &format!("/a/{token}/identity"), &form).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{flow:?}");
            assert!(page.body.contains("Open the link in your invitation again"));
        }
        // The right secret, but a later step than the flow reached.
        let page = post(
            app,
            &format!("/a/{token}/account"),
            &[
                ("flow", &landing.flow()),
                ("username", "rosa"),
                ("password", STRONG),
                ("password_again", STRONG),
            ],
        )
        .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        let page = post(
            app,
            &format!("/a/{token}/code"),
            &[("flow", &landing.flow()), ("code", "123456")],
        )
        .await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        // Opening the link again starts over with a new secret.
        let reopened = get(app, &format!("/a/{token}")).await;
        let mut form = vec![("flow", landing.flow())];
        form.extend(right.map(|(k, v)| (k, v.to_string())));
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = post(app, &format!("/a/{token}/identity"), &form).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert_ne!(reopened.flow(), landing.flow());
    })
    .await;
}

#[tokio::test]
async fn the_per_address_throttle_answers_429() {
    let few = |s: &mut Settings| s.activation.requests_per_minute_per_ip = 3;
    on_each_engine_with(few, async |app, smtp| {
        app.patient("M-9", json!({})).await;
        let token = invite_token(app, smtp).await;
        for _ in 0..3 {
            assert_eq!(
                get(app, &format!("/a/{token}")).await.status,
                StatusCode::OK
            );
        }
        let response = app.fetch(&format!("/a/{token}")).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()["retry-after"], "60");
        assert!(response.text().await.unwrap().contains("Too many attempts"));
    })
    .await;
}

#[tokio::test]
async fn the_pages_speak_spanish_to_a_spanish_speaking_patient() {
    on_each_engine(async |app, smtp| {
        let id = app.patient("M-10", json!({})).await;
        // The language comes from the EHR (HL7 PID-15); the API does not set it.
        app.db
            .execute(&format!(
                "UPDATE patients SET preferred_language = 'spa' WHERE id = {id}"
            ))
            .await
            .unwrap();
        let token = invite_token(app, smtp).await;
        let landing = get(app, &format!("/a/{token}")).await;
        assert!(
            landing.body.contains("<html lang=\"es\">"),
            "{}",
            landing.body
        );
        assert!(landing.body.contains("Fecha de nacimiento"));
        let english = get(app, &format!("/a/{token}?lang=en")).await;
        assert!(english.body.contains("Date of birth"));
        assert!(english.body.contains("name=\"lang\" value=\"en\""));
        let wrong = post(
            app,
            &format!("/a/{token}/identity"),
            &[
                ("flow", &english.flow()),
                ("lang", "en"),
                ("date_of_birth", "1990-07-04"),
                ("zip", "99999"),
            ],
        )
        .await;
        assert!(
            wrong.body.contains("<html lang=\"en\">"),
            "the choice is kept in the form"
        );
    })
    .await;
}

#[tokio::test]
async fn a_family_sharing_one_email_gets_two_usernames_and_a_new_code_on_request() {
    on_each_engine(async |app, smtp| {
        app.patient("M-11", json!({})).await;
        let first = invite_token(app, smtp).await;
        let code_page = to_code(app, &first).await;
        let done = send_code(app, &first, &code_page, &last_code(smtp)).await;
        assert_eq!(done.status, StatusCode::OK);

        app.patient("M-12", json!({ "first_name": "Ana" })).await;
        app.clock.advance(SignedDuration::from_mins(5));
        let second = invite_token(app, smtp).await;
        let account = to_account(app, &second).await;
        assert_eq!(account.hidden("username"), "ana.rosa@example.org");
        let taken = post(
            app,
            &format!("/a/{second}/account"),
            &[
                ("flow", &account.flow()),
                ("username", "rosa@example.org"),
                ("password", STRONG),
                ("password_again", STRONG),
            ],
        )
        .await;
        assert_eq!(taken.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(taken.body.contains("This username is taken"));
        let code_page = post(
            app,
            &format!("/a/{second}/account"),
            &[
                ("flow", &account.flow()),
                ("username", "ana.rosa@example.org"),
                ("password", STRONG),
                ("password_again", STRONG),
            ],
        )
        .await;
        let old_code = last_code(smtp);
        let resent = post(
            app,
            &format!("/a/{second}/resend"),
            &[("flow", &code_page.flow())],
        )
        .await;
        assert_eq!(resent.status, StatusCode::OK);
        assert!(resent.body.contains("We sent a new code"));
        let new_code = last_code(smtp);
        if old_code != new_code {
            let page = send_code(app, &second, &code_page, &old_code).await;
            assert_eq!(
                page.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "the old code stopped working"
            );
        }
        // Ten minutes later the code has expired.
        app.clock.advance(SignedDuration::from_mins(10));
        let page = send_code(app, &second, &code_page, &new_code).await;
        assert_eq!(page.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.body.contains("This code has expired"));
    })
    .await;
}

/// The `name=value` of the Set-Cookie `name`, and the whole header.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<(String, String)> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let pair = v.split(';').next().unwrap_or_default().to_string();
            (pair, v.to_string())
        })
}

#[tokio::test]
async fn an_activated_patient_signs_in_sees_the_practice_and_signs_out() {
    on_each_engine(async |app, smtp| {
        app.patient("M-13", json!({})).await;
        let token = invite_token(app, smtp).await;
        let code_page = to_code(app, &token).await;
        let done = send_code(app, &token, &code_page, &last_code(smtp)).await;
        assert!(
            done.body.contains("/portal/sign-in"),
            "the success page leads to sign-in"
        );

        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let home = http.get(app.url("/portal")).send().await.unwrap();
        assert_eq!(home.status(), StatusCode::SEE_OTHER);
        assert_eq!(home.headers()["location"], "/portal/sign-in");

        let form_page = http.get(app.url("/portal/sign-in")).send().await.unwrap();
        let (pre, header) = set_cookie(&form_page, "enroll_sign_in").expect("a sign-in cookie");
        assert!(
            header.contains("HttpOnly") && header.contains("SameSite=Lax"),
            "{header}"
        );
        let page = Page {
            status: form_page.status(),
            body: form_page.text().await.unwrap(),
        };
        assert_eq!(page.status, StatusCode::OK);
        let csrf = page.hidden("csrf");

        let attempt = async |cookie: Option<&str>, username: &str, password: &str| {
            let mut request = http.post(app.url("/portal/sign-in")).form(&[
                ("csrf", csrf.as_str()),
                ("username", username),
                ("password", password),
            ]);
            if let Some(cookie) = cookie {
                request = request.header("cookie", cookie);
            }
            request.send().await.unwrap()
        };
        let forged = attempt(None, "rosa@example.org", STRONG).await;
        assert_eq!(
            forged.status(),
            StatusCode::FORBIDDEN,
            "no sign-in cookie: CSRF"
        );
        let wrong = attempt(Some(&pre), "rosa@example.org", "not the password at all").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        assert!(
            wrong
                .text()
                .await
                .unwrap()
                .contains("The username or password is not right.")
        );
        let unknown = attempt(Some(&pre), "nobody@example.org", STRONG).await;
        assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
        assert!(
            unknown
                .text()
                .await
                .unwrap()
                .contains("The username or password is not right.")
        );

        let signed_in = attempt(Some(&pre), "Rosa@Example.org", STRONG).await;
        assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
        assert_eq!(signed_in.headers()["location"], "/portal");
        let (session, header) = set_cookie(&signed_in, "enroll_patient").expect("a session cookie");
        assert!(
            header.contains("HttpOnly") && header.contains("SameSite=Lax"),
            "{header}"
        );
        let value = session.split_once('=').unwrap().1.to_string();
        let stored = enroll_store::testing::scalar(
            &app.db.store,
            &format!(
                "SELECT COUNT(*) FROM patient_sessions WHERE session_hash = '{}'",
                enroll_store::hash_token(&value)
            ),
        )
        .await
        .unwrap();
        assert_eq!(stored, 1, "the session is stored as its hash");

        let home = http
            .get(app.url("/portal"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(home.status(), StatusCode::OK);
        let home = Page {
            status: StatusCode::OK,
            body: home.text().await.unwrap(),
        };
        assert!(
            home.body.contains("Your patient portal account with"),
            "{}",
            home.body
        );
        assert!(home.body.contains("rosa@example.org"));

        let forged = http
            .post(app.url("/portal/sign-out"))
            .header("cookie", &session)
            .form(&[("csrf", "forged")])
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        let out = http
            .post(app.url("/portal/sign-out"))
            .header("cookie", &session)
            .form(&[("csrf", home.hidden("csrf").as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(out.status(), StatusCode::SEE_OTHER);
        let after = http
            .get(app.url("/portal"))
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(after.status(), StatusCode::SEE_OTHER, "the session ended");
    })
    .await;
}

/// Sends one HL7 message over MLLP and returns its ACK.
async fn send_hl7(app: &TestApp, segments: &[&str]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(app.mllp_addr).await.unwrap();
    let mut frame = vec![0x0B];
    frame.extend_from_slice(segments.join("\r").as_bytes());
    frame.extend_from_slice(b"\r\x1C\x0D");
    stream.write_all(&frame).await.unwrap();
    let mut ack = Vec::new();
    while !ack.ends_with(b"\x1C\x0D") {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed without an ACK");
        ack.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&ack).into_owned()
}

#[tokio::test]
async fn a_merge_voids_the_merged_charts_links_and_keeps_the_survivors() {
    on_each_engine(async |app, smtp| {
        app.patient("9001", json!({})).await;
        let survivor = invite_token(app, smtp).await;
        app.patient("9002", json!({ "first_name": "Rosita" })).await;
        app.clock.advance(SignedDuration::from_mins(5));
        let merged = invite_token(app, smtp).await;
        assert_ne!(survivor, merged);
        assert_eq!(get(app, &format!("/a/{merged}")).await.status, StatusCode::OK);

        let ack = send_hl7(
            app,
            &[
                "MSH|^~\\&|EPIC|TEST|ENROLL|PORTAL|20261125100000||ADT^A40^ADT_A39|MERGE-1|P|2.5.1",
                "EVN|A40|20261125100000",
                "PID|1||9001^^^TEST^MR||Parks^Rosa||19900704|F|||1 Main St^^New York^NY^10027||^NET^Internet^rosa@example.org",
                "MRG|9002^^^TEST^MR",
            ],
        )
        .await;
        assert!(ack.contains("MSA|AA"), "{ack}");
        let page = get(app, &format!("/a/{merged}")).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "the merged chart's link stopped working");
        assert_eq!(get(app, &format!("/a/{survivor}")).await.status, StatusCode::OK);
    })
    .await;
}

/// Guesses spread over many client addresses (127.0.0.0/8 is all this
/// machine): the throttle counts each address, the lockout counts the link.
#[tokio::test]
async fn guesses_from_many_addresses_still_lock_the_link() {
    let few = |s: &mut Settings| s.activation.requests_per_minute_per_ip = 3;
    on_each_engine_with(few, async |app, smtp| {
        let id = app.patient("M-14", json!({})).await;
        let token = invite_token(app, smtp).await;
        let from = |last: u8| {
            reqwest::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 0, last]))
                .build()
                .unwrap()
        };
        let flow = {
            let response = from(2)
                .get(app.url(&format!("/a/{token}")))
                .send()
                .await
                .unwrap();
            Page {
                status: response.status(),
                body: response.text().await.unwrap(),
            }
            .flow()
        };
        let mut statuses = vec![];
        for last in 10..40u8 {
            let response = from(last)
                .post(app.url(&format!("/a/{token}/identity")))
                .form(&[
                    ("flow", flow.as_str()),
                    ("date_of_birth", "1990-07-04"),
                    ("zip", &format!("1{last:04}")),
                ])
                .send()
                .await
                .unwrap();
            statuses.push(response.status());
        }
        assert!(
            statuses[..4]
                .iter()
                .all(|s| *s == StatusCode::UNPROCESSABLE_ENTITY),
            "{statuses:?}"
        );
        assert!(
            statuses[4..].iter().all(|s| *s == StatusCode::LOCKED),
            "{statuses:?}"
        );
        // One address past its allowance is throttled; the others are not.
        let busy = from(50);
        for _ in 0..3 {
            busy.get(app.url("/a/AAAAAAAAAAAAAAAAAAAAAA"))
                .send()
                .await
                .unwrap();
        }
        let throttled = busy
            .get(app.url("/a/AAAAAAAAAAAAAAAAAAAAAA"))
            .send()
            .await
            .unwrap();
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        let other = from(51)
            .get(app.url("/a/AAAAAAAAAAAAAAAAAAAAAA"))
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), StatusCode::NOT_FOUND);
        assert_ne!(status_of(app, id).await, "active");
    })
    .await;
}

#[tokio::test]
async fn a_code_that_cannot_be_sent_says_to_try_again_and_the_account_step_stays() {
    on_each_engine(async |app, smtp| {
        app.patient("M-15", json!({})).await;
        let token = invite_token(app, smtp).await;
        let account = to_account(app, &token).await;
        smtp.state
            .reject
            .lock()
            .unwrap()
            .insert("rosa@example.org".into());
        let form = [
            ("flow", account.flow()),
            ("username", "rosa@example.org".to_string()),
            ("password", STRONG.to_string()),
            ("password_again", STRONG.to_string()),
        ];
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = post(app, &format!("/a/{token}/account"), &form).await;
        assert_eq!(page.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(page.body.contains("Please try again in a few minutes."));
        smtp.state.reject.lock().unwrap().clear();
        let page = post(app, &format!("/a/{token}/account"), &form).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body.contains("Enter the code we sent you"));
    })
    .await;
}
