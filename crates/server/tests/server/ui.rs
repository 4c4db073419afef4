//! The staff pages over real HTTP, on both engines: sign-in, sessions,
//! CSRF, lockout, idle sign-out, practice scoping, roles, search, the
//! chart, Enroll Now, the R11 confirmation and the patient's response.
//! (The same pages in a real browser: `browser.rs`.)

use jiff::SignedDuration;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::{Value, json};

use crate::{ADMIN_TOKEN, PASSWORD, TestApp, on_each_engine};

/// A browser without a browser: keeps the session cookie, follows nothing.
pub struct Staff<'a> {
    app: &'a TestApp,
    http: reqwest::Client,
    cookie: String,
}

impl<'a> Staff<'a> {
    /// Signs in; panics unless sign-in redirected with a session cookie.
    pub async fn sign_in(app: &'a TestApp, username: &str) -> Staff<'a> {
        let (status, cookie, _) = try_sign_in(app, username, PASSWORD).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{:?}", app.engine);
        Staff {
            app,
            http: no_redirects(),
            cookie: cookie.expect("a session cookie"),
        }
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(self.app.url(path))
            .header(COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        status_and_location_or_body(response).await
    }

    /// The session cookie, for a request the helpers here do not make.
    pub fn cookie(&self) -> &str {
        &self.cookie
    }

    /// The CSRF value the pages carry (on `<body data-csrf>`).
    pub async fn csrf(&self) -> String {
        let (status, page) = self.get("/search").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let start = page.find("data-csrf=\"").expect("data-csrf") + 11;
        page[start..start + page[start..].find('"').unwrap()].to_string()
    }

    /// A form post; answers the status and the redirect target or body.
    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, String) {
        self.send_post(path, |request| request.form(form)).await
    }

    /// A file upload (`multipart/form-data`); answers as [`Staff::post`].
    pub async fn post_multipart(
        &self,
        path: &str,
        form: reqwest::multipart::Form,
    ) -> (StatusCode, String) {
        self.send_post(path, |request| request.multipart(form))
            .await
    }

    async fn send_post(
        &self,
        path: &str,
        body: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> (StatusCode, String) {
        let request = self
            .http
            .post(self.app.url(path))
            .header(COOKIE, &self.cookie);
        let response = body(request).send().await.unwrap();
        status_and_location_or_body(response).await
    }

    /// What the page script sends for Enroll Now, and the JSON answer.
    pub async fn enroll_in_place(&self, id: i64, csrf: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.app.url(&format!("/patients/{id}/enroll")))
            .header(COOKIE, &self.cookie)
            .header("accept", "application/json")
            .header("x-csrf-token", csrf)
            .form(&[("csrf", csrf)])
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }
}

/// The status, and the redirect target if there is one, else the body.
async fn status_and_location_or_body(response: reqwest::Response) -> (StatusCode, String) {
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .map(|l| l.to_str().unwrap().to_string());
    let body = response.text().await.unwrap();
    (status, location.unwrap_or(body))
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Posts the sign-in form: the status, the session cookie if one was set,
/// and the body.
async fn try_sign_in(
    app: &TestApp,
    username: &str,
    password: &str,
) -> (StatusCode, Option<String>, String) {
    let response = no_redirects()
        .post(app.url("/signin"))
        .form(&[
            ("username", username),
            ("password", password),
            ("next", "/search"),
        ])
        .send()
        .await
        .unwrap();
    let status = response.status();
    let cookie = response
        .headers()
        .get(SET_COOKIE)
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string());
    (status, cookie, response.text().await.unwrap())
}

/// A patient of another practice than Frida's (made by the administrator).
pub async fn other_practice_patient(app: &TestApp) -> i64 {
    let other = app
        .db
        .always_open_practice("OTHER", crate::wednesday_morning())
        .await;
    let response = app
        .http
        .post(app.url("/api/patients"))
        .bearer_auth(ADMIN_TOKEN)
        .json(
            &json!({ "practice_id": other.id, "mrn": "O-1", "first_name": "Otto",
                       "last_name": "Parks", "date_of_birth": "1970-01-01", "birth_sex": "M",
                       "zip": "10001", "email": "otto@example.org" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED, "{:?}", app.engine);
    let saved: Value = response.json().await.unwrap();
    saved["patient"]["id"].as_i64().unwrap()
}

#[tokio::test]
async fn signing_in_sets_a_session_cookie_that_is_kept_only_as_a_hash() {
    on_each_engine(async |app| {
        let response = no_redirects()
            .post(app.url("/signin"))
            .form(&[
                ("username", "frida"),
                ("password", PASSWORD),
                ("next", "/patients/1"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            response.headers()[LOCATION],
            "/patients/1",
            "back where sign-in was asked"
        );
        let cookie = response.headers()[SET_COOKIE].to_str().unwrap().to_string();
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        assert!(!cookie.contains("Secure"), "plain http in tests: {cookie}");
        let value = cookie.split(';').next().unwrap().split('=').nth(1).unwrap();
        let stored = enroll_store::testing::scalar(
            &app.db.store,
            &format!(
                "SELECT COUNT(*) FROM staff_sessions WHERE token_hash = '{}'",
                enroll_store::hash_token(value)
            ),
        )
        .await
        .unwrap();
        assert_eq!(stored, 1, "{:?}: the hash is stored", app.engine);
        let raw = enroll_store::testing::scalar(
            &app.db.store,
            &format!("SELECT COUNT(*) FROM staff_sessions WHERE token_hash = '{value}'"),
        )
        .await
        .unwrap();
        assert_eq!(raw, 0, "{:?}: the cookie itself is not", app.engine);
    })
    .await;
}

#[tokio::test]
async fn a_signed_out_visitor_is_sent_to_sign_in_and_a_wrong_password_says_so_without_naming_users()
{
    on_each_engine(async |app| {
        let (status, location) = Staff {
            app,
            http: no_redirects(),
            cookie: "enroll_session=forged".into(),
        }
        .get("/patients/3")
        .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(location, "/signin?next=%2Fpatients%2F3");
        let root = no_redirects().get(app.url("/")).send().await.unwrap();
        assert_eq!(root.headers()[LOCATION], "/signin");

        let (wrong, cookie, page) = try_sign_in(app, "frida", "not it").await;
        let (unknown, _, unknown_page) = try_sign_in(app, "nobody", "not it").await;
        assert_eq!(wrong, StatusCode::UNAUTHORIZED);
        assert_eq!(unknown, StatusCode::UNAUTHORIZED);
        assert!(cookie.is_none());
        assert!(page.contains("do not match"), "{page}");
        assert_eq!(
            page.replace("frida", "nobody"),
            unknown_page,
            "an unknown user and a wrong password get the same page"
        );
    })
    .await;
}

#[tokio::test]
async fn five_wrong_passwords_lock_the_account_until_the_lockout_ends() {
    on_each_engine(async |app| {
        for _ in 0..5 {
            let (status, _, _) = try_sign_in(app, "ada", "guess").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
        let (status, cookie, page) = try_sign_in(app, "ada", PASSWORD).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{:?}", app.engine);
        assert!(cookie.is_none());
        assert!(page.contains("locked"), "{page}");
        app.clock.advance(SignedDuration::from_mins(16));
        let (status, cookie, _) = try_sign_in(app, "ada", PASSWORD).await;
        assert_eq!(
            status,
            StatusCode::SEE_OTHER,
            "{:?}: unlocked after 15 minutes",
            app.engine
        );
        assert!(cookie.is_some());
        // Each wrong password and the sign-in are audited on the account
        // (the harness set the password as the "test" actor).
        let ada_id = app
            .db
            .store
            .staff_account("ada")
            .await
            .unwrap()
            .unwrap()
            .user
            .id;
        let mut actions: Vec<String> = app
            .audit_lines()
            .await
            .into_iter()
            .filter(|e| {
                e.actor == "ada"
                    && e.target_type.as_deref() == Some("staff_user")
                    && e.target_id == Some(ada_id)
            })
            .map(|e| e.action)
            .collect();
        actions.reverse();
        let mut expected = vec!["staff.sign_in_failed"; 5];
        expected.push("staff.sign_in");
        assert_eq!(actions, expected, "{:?}", app.engine);
    })
    .await;
}

#[tokio::test]
async fn one_address_is_throttled_after_ten_tries_a_minute() {
    // One engine is enough: the throttle is in memory, before the store.
    let Some(app) = TestApp::start(enroll_store::testing::Engine::Sqlite).await else {
        return;
    };
    for _ in 0..10 {
        let (status, _, _) = try_sign_in(&app, "nobody", "x").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _, page) = try_sign_in(&app, "frida", PASSWORD).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(page.contains("Too many sign-in attempts"), "{page}");
    app.stop().await;
}

#[tokio::test]
async fn fifteen_idle_minutes_sign_the_user_out_and_any_request_keeps_the_session_alive() {
    on_each_engine(async |app| {
        let staff = Staff::sign_in(app, "frida").await;
        app.clock.advance(SignedDuration::from_mins(14));
        assert_eq!(staff.get("/search").await.0, StatusCode::OK);
        app.clock.advance(SignedDuration::from_mins(14));
        assert_eq!(
            staff.get("/search").await.0,
            StatusCode::OK,
            "28 minutes signed in, never 15 idle"
        );
        app.clock.advance(SignedDuration::from_mins(15));
        let (status, location) = staff.get("/search").await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{:?}", app.engine);
        assert!(location.starts_with("/signin"), "{location}");
    })
    .await;
}

#[tokio::test]
async fn a_form_without_this_sessions_csrf_value_changes_nothing() {
    on_each_engine(async |app| {
        let id = app.patient("C-1", json!({})).await;
        let staff = Staff::sign_in(app, "frida").await;
        for csrf in ["", "a-guess"] {
            let (status, _) = staff
                .post(&format!("/patients/{id}/confirm"), &[("csrf", csrf)])
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{:?}", app.engine);
            let (status, _) = staff
                .post(&format!("/patients/{id}/enroll"), &[("csrf", csrf)])
                .await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{:?}", app.engine);
        }
        let manual = app
            .invites(id)
            .await
            .into_iter()
            .filter(|i| i["kind"] == "manual")
            .count();
        assert_eq!(manual, 0, "no Enroll Now was made");
        let (_, chart) = app.get(&format!("/api/patients/{id}")).await;
        assert_eq!(chart["patient"]["fields_confirmed_at"], Value::Null);
        // Signing out needs it too, then the cookie is worthless.
        let csrf = staff.csrf().await;
        let (status, location) = staff.post("/signout", &[("csrf", &csrf)]).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert!(location.starts_with("/signin"));
        assert_eq!(staff.get("/search").await.0, StatusCode::SEE_OTHER);
    })
    .await;
}

#[tokio::test]
async fn search_understands_the_box_and_never_shows_another_practices_patient() {
    on_each_engine(async |app| {
        let rosa = app
            .patient("S-1", json!({ "cell_phone": "617-555-0100" }))
            .await;
        let other = other_practice_patient(app).await;
        let staff = Staff::sign_in(app, "frida").await;
        for typed in [
            "par ro",
            "Parks, Rosa",
            "rosa parks",
            "07/04/1990",
            "7/4/1990",
            "1990-07-04",
            "S-1",
            "(617) 555-0100",
            "ROSA@example.org",
        ] {
            let (status, page) = staff.get(&format!("/search?q={}", urlencode(typed))).await;
            assert_eq!(status, StatusCode::OK, "{typed}");
            assert!(
                page.contains(&format!("data-patient=\"{rosa}\"")),
                "{:?}: {typed:?} finds Rosa",
                app.engine
            );
        }
        let (_, page) = staff.get("/search?q=parks").await;
        // Her chart was added with every field, so the auto invite waits for delivery.
        assert!(
            page.contains("Parks, Rosa") && page.contains("Invite waiting"),
            "{page}"
        );
        assert!(
            !page.contains("Otto"),
            "{:?}: Otto Parks is another practice's patient",
            app.engine
        );
        // The chart of another practice's patient does not exist for Frida.
        assert_eq!(
            staff.get(&format!("/patients/{other}")).await.0,
            StatusCode::NOT_FOUND
        );
        let (status, _) = app.get(&format!("/api/patients/{other}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "the API scopes alike");
        let (_, found) = app.get("/api/patients?q=parks").await;
        assert_eq!(found.as_array().unwrap().len(), 1, "{found}");

        // The search is audited with its terms and the ids it showed.
        let (_, audit) = admin_get(app, "/api/audit?limit=50").await;
        let search = audit
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "patient.search" && e["actor"] == "frida")
            .expect("a search line")
            .clone();
        let detail: Value = serde_json::from_str(search["detail"].as_str().unwrap()).unwrap();
        assert_eq!(detail["ids"], rosa.to_string(), "{detail}");
    })
    .await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn admin_get(app: &TestApp, path: &str) -> (StatusCode, Value) {
    let response = app
        .http
        .get(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    (
        response.status(),
        response.json().await.unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn enroll_now_in_place_sends_refuses_with_the_missing_fields_and_update_now_sends() {
    on_each_engine(async |app| {
        let complete = app.patient("E-1", json!({})).await;
        let no_email = app.patient("E-2", json!({ "email": null })).await;
        let staff = Staff::sign_in(app, "frida").await;
        let csrf = staff.csrf().await;

        let before = app.invites(complete).await.len();
        let (status, sent) = staff.enroll_in_place(complete, &csrf).await;
        assert_eq!(status, StatusCode::OK, "{sent}");
        assert_eq!(sent["result"], "sent");
        assert_eq!(app.invites(complete).await.len(), before + 1);
        let words = sent["status_words"].as_str().unwrap_or_default();
        assert!(
            words.starts_with("Invited ")
                && words.contains(" of 4 invitations in the last 30 days"),
            "the status in the front desk's words and time zone, not UTC: {sent}"
        );

        let (status, refused) = staff.enroll_in_place(no_email, &csrf).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
        assert_eq!(refused["result"], "refused");
        assert_eq!(refused["missing"][0]["field"], "email");
        assert_eq!(refused["missing"][0]["label"], "Email address");
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("email address"),
            "{refused}"
        );
        assert!(app.invites(no_email).await.is_empty());

        // Update now -> save: the invite goes out, once. With auto invites
        // on, the new email is itself a trigger that invites (R2), so no
        // Enroll Now follows; with them off, the Enroll Now is sent.
        let update_now = async |id: i64| {
            staff
                .post(
                    &format!("/patients/{id}/demographics"),
                    &[
                        ("csrf", &csrf),
                        ("first_name", "Rosa"),
                        ("last_name", "Parks"),
                        ("date_of_birth", "1990-07-04"),
                        ("birth_sex", "F"),
                        ("zip", "10027"),
                        ("email", "rosa.p@example.org"),
                        ("cell_phone", ""),
                        ("then", "enroll"),
                    ],
                )
                .await
        };
        let kinds = async |id: i64| -> Vec<String> {
            app.invites(id)
                .await
                .into_iter()
                .map(|i| i["kind"].as_str().unwrap_or_default().to_string())
                .collect()
        };
        let (status, location) = update_now(no_email).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
        assert!(location.contains("no+second+invite"), "{location}");
        assert_eq!(
            kinds(no_email).await,
            ["auto"],
            "{:?}: one invite",
            app.engine
        );
        app.db
            .store
            .set_auto_invites(app.practice_id, false, None)
            .await
            .unwrap();
        let also_no_email = app.patient("E-3", json!({ "email": null })).await;
        let (status, location) = update_now(also_no_email).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{location}");
        assert!(location.contains("notice=Invitation"), "{location}");
        assert_eq!(
            kinds(also_no_email).await,
            ["manual"],
            "{:?}: the Enroll Now",
            app.engine
        );

        // A front desk cannot reach admin pages; the API says 403 in words.
        assert_eq!(staff.get("/admin/users").await.0, StatusCode::FORBIDDEN);
        assert_eq!(staff.get("/admin/audit").await.0, StatusCode::FORBIDDEN);
        let (status, why) = app
            .call(
                reqwest::Method::PUT,
                &format!("/api/practices/{}/auto-invites", app.practice_id),
                Some(json!({ "on": true })),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{why}");
        assert!(why.to_string().contains("administrator"), "{why}");
        let (status, _) = app.get("/api/audit").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    })
    .await;
}

#[tokio::test]
async fn the_chart_shows_the_six_fields_and_confirmed_records_who_and_when() {
    on_each_engine(async |app| {
        let id = app.patient("K-1", json!({ "zip": "1234" })).await;
        let staff = Staff::sign_in(app, "frida").await;
        let (status, page) = staff.get(&format!("/patients/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        for label in [
            "First name",
            "Last name",
            "Date of birth",
            "Birth sex",
            "ZIP code",
            "Email address",
        ] {
            assert!(page.contains(label), "{label}");
        }
        assert!(page.contains("class=\"bad\""), "the bad ZIP is highlighted");
        assert!(
            page.contains("aria-invalid=\"true\" aria-describedby=\"err-zip\""),
            "{page}"
        );
        assert!(page.contains("Fields not confirmed yet"));
        let csrf = staff.csrf().await;
        let (status, _) = staff
            .post(&format!("/patients/{id}/confirm"), &[("csrf", &csrf)])
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        let (_, page) = staff.get(&format!("/patients/{id}")).await;
        assert!(
            page.contains("Fields confirmed") && page.contains("by frida"),
            "{:?}",
            app.engine
        );
        let (_, chart) = app.get(&format!("/api/patients/{id}")).await;
        assert_eq!(chart["patient"]["fields_confirmed_by"], "frida");
        assert!(
            app.timeline_kinds(id)
                .await
                .contains(&"fields_confirmed".to_string())
        );
        let (status, badge) = staff.get(&format!("/patients/{id}/status")).await;
        assert_eq!(status, StatusCode::OK, "{badge}");
        let (_, audit) = admin_get(app, &format!("/api/audit?patient_id={id}")).await;
        let actions: Vec<&str> = audit
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["action"].as_str())
            .collect();
        assert!(actions.contains(&"patient.view"), "{actions:?}");
        assert!(actions.contains(&"patient.confirm_fields"), "{actions:?}");
        assert!(
            actions.contains(&"patient.status"),
            "the badge's status poll is a view too: {actions:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_declined_patient_is_not_invited_until_the_response_is_removed_explicitly() {
    on_each_engine(async |app| {
        let id = app.patient("D-1", json!({})).await;
        let staff = Staff::sign_in(app, "frida").await;
        let csrf = staff.csrf().await;
        let path = format!("/patients/{id}/response");
        staff
            .post(&path, &[("csrf", &csrf), ("response", "declined")])
            .await;
        let (status, refused) = staff.enroll_in_place(id, &csrf).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
        assert_eq!(refused["badge"], "Declined");
        // Without the tick, nothing is removed.
        staff
            .post(&path, &[("csrf", &csrf), ("response", "remove")])
            .await;
        let (_, chart) = app.get(&format!("/api/patients/{id}")).await;
        assert_eq!(chart["patient"]["response"], "declined", "{:?}", app.engine);
        staff
            .post(
                &path,
                &[
                    ("csrf", &csrf),
                    ("response", "remove"),
                    ("confirm_remove", "yes"),
                ],
            )
            .await;
        let (status, sent) = staff.enroll_in_place(id, &csrf).await;
        assert_eq!(status, StatusCode::OK, "{sent}");
        let kinds = app.timeline_kinds(id).await;
        assert!(
            kinds.contains(&"response_recorded".to_string()),
            "{kinds:?}"
        );
        assert!(kinds.contains(&"response_removed".to_string()), "{kinds:?}");
    })
    .await;
}

#[tokio::test]
async fn an_admin_adds_a_user_whose_generated_password_signs_in_and_disabling_ends_it() {
    on_each_engine(async |app| {
        let ada = Staff::sign_in(app, "ada").await;
        let csrf = ada.csrf().await;
        let practice = app.practice_id.to_string();
        let (status, page) = ada
            .post(
                "/admin/users",
                &[
                    ("csrf", &csrf),
                    ("username", "gus"),
                    ("display_name", "Gus"),
                    ("role", "front-desk"),
                    ("practice", &practice),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let marker = "<code class=\"secret\">";
        let start = page.find(marker).unwrap() + marker.len();
        let password = &page[start..start + page[start..].find('<').unwrap()];
        let (status, cookie, _) = try_sign_in(app, "gus", password).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{:?}", app.engine);
        let gus = Staff {
            app,
            http: no_redirects(),
            cookie: cookie.unwrap(),
        };
        assert_eq!(gus.get("/search").await.0, StatusCode::OK);
        let (status, page) = ada
            .post(
                "/admin/users",
                &[
                    ("csrf", &csrf),
                    ("username", "gus"),
                    ("display_name", ""),
                    ("role", "admin"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(page.contains("already exists"), "{page}");
        let gus_id = app
            .db
            .store
            .staff_account("gus")
            .await
            .unwrap()
            .unwrap()
            .user
            .id;
        // Another practice for Gus: he now finds its patients too.
        let other = other_practice_patient(app).await;
        let other_practice = app
            .db
            .store
            .patient(other)
            .await
            .unwrap()
            .unwrap()
            .practice_id;
        let (status, _) = ada
            .post(
                &format!("/admin/users/{gus_id}"),
                &[
                    ("csrf", &csrf),
                    ("action", "practices"),
                    ("practice", &practice),
                    ("practice", &other_practice.to_string()),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        assert_eq!(
            gus.get(&format!("/patients/{other}")).await.0,
            StatusCode::OK
        );
        ada.post(
            &format!("/admin/users/{gus_id}"),
            &[("csrf", &csrf), ("action", "disable")],
        )
        .await;
        assert_eq!(
            gus.get("/search").await.0,
            StatusCode::SEE_OTHER,
            "signed out"
        );
        let (status, _, _) = try_sign_in(app, "gus", password).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, page) = ada.get("/admin/audit").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains("<td>staff.disable</td>"), "{page}");
        // Each change is audited with the account as its target, by ada.
        let changes: Vec<(String, String, Option<i64>)> = app
            .audit_lines()
            .await
            .into_iter()
            .filter(|e| e.target_type.as_deref() == Some("staff_user") && e.actor == "ada")
            .map(|e| (e.action, e.detail.unwrap_or_default(), e.target_id))
            .collect();
        let gus_target = Some(gus_id);
        let disable = (
            "staff.disable".to_string(),
            r#"{"username":"gus"}"#.to_string(),
            gus_target,
        );
        assert_eq!(changes.first(), Some(&disable), "{changes:?}");
        assert!(
            changes
                .iter()
                .any(|(action, _, id)| action == "staff.practices" && *id == gus_target),
            "{changes:?}"
        );
    })
    .await;
}
