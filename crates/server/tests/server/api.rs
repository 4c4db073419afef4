//! The JSON API: patients, Enroll Now refusals, idempotency, audit.

use enroll_server::Clock;
use jiff::{SignedDuration, Timestamp};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{TOKEN, on_each_engine};

#[tokio::test]
async fn health_and_readiness() {
    on_each_engine(async |app| {
        let health = app.fetch("/healthz").await;
        assert_eq!(health.status(), StatusCode::OK);
        let ready = app.fetch("/readyz").await;
        assert_eq!(ready.status(), StatusCode::OK, "{:?}", app.engine);
    })
    .await;
}

#[tokio::test]
async fn the_api_needs_a_valid_token() {
    on_each_engine(async |app| {
        for token in [None, Some("wrong")] {
            let mut request = app.http.get(app.url("/api/patients?name=a"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{:?} token {token:?}",
                app.engine
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "unauthorized");
            assert!(
                body["message"].as_str().unwrap().contains("Authorization"),
                "{body}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn enroll_now_with_a_missing_email_answers_422_naming_email() {
    on_each_engine(async |app| {
        let id = app.patient("M-NOEMAIL", json!({ "email": null })).await;
        let (status, body) = app.enroll(id).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{:?}: {body}",
            app.engine
        );
        assert_eq!(body["code"], "missing_fields");
        assert_eq!(body["problems"][0]["field"], "email", "{body}");
        assert_eq!(
            body["problems"][0]["problem"]["reason"], "missing",
            "{body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains("email"),
            "{body}"
        );

        let id = app
            .patient("M-BADZIP", json!({ "zip": "1234", "email": "x@" }))
            .await;
        let (status, body) = app.enroll(id).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let fields: Vec<&str> = body["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["field"].as_str().unwrap())
            .collect();
        assert_eq!(
            fields,
            ["zip", "email"],
            "{:?}: every invalid field is named",
            app.engine
        );
    })
    .await;
}

#[tokio::test]
async fn enroll_now_for_an_active_patient_answers_409() {
    on_each_engine(async |app| {
        let id = app.patient("M-ACTIVE", json!({})).await;
        app.db
            .store
            .mark_activated(
                id,
                &enroll_store::Source::new("portal", None),
                app.clock.now(),
            )
            .await
            .unwrap();
        let (status, body) = app.enroll(id).await;
        assert_eq!(status, StatusCode::CONFLICT, "{:?}: {body}", app.engine);
        assert_eq!(body["code"], "already_active");
    })
    .await;
}

#[tokio::test]
async fn the_fifth_send_in_thirty_days_answers_429_with_the_next_time() {
    on_each_engine(async |app| {
        // The chart-added trigger sends the first invite (auto invites on).
        let id = app.patient("M-CAP", json!({})).await;
        let first_send = app.clock.now();
        for _ in 0..3 {
            app.clock.advance(SignedDuration::from_hours(24));
            let (status, body) = app.enroll(id).await;
            assert_eq!(status, StatusCode::CREATED, "{:?}: {body}", app.engine);
        }
        app.clock.advance(SignedDuration::from_hours(24));
        let response = app
            .http
            .post(app.url(&format!("/api/patients/{id}/enroll")))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{:?}",
            app.engine
        );
        let retry_after: i64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "cap_reached");
        let next: Timestamp = body["next_possible_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            next,
            first_send + SignedDuration::from_hours(30 * 24),
            "{body}"
        );
        assert_eq!(
            retry_after,
            26 * 24 * 3600,
            "Retry-After counts from the request time"
        );

        app.clock.set(next);
        let (status, _) = app.enroll(id).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{:?}: possible again at the time given",
            app.engine
        );
    })
    .await;
}

#[tokio::test]
async fn a_repeated_idempotency_key_makes_one_invite() {
    on_each_engine(async |app| {
        let id = app.patient("M-IDEM", json!({ "email": null })).await;
        app.call(
            reqwest::Method::PUT,
            &format!("/api/patients/{id}"),
            Some(json!({
                "first_name": "Rosa", "last_name": "Parks", "date_of_birth": "1990-07-04",
                "birth_sex": "F", "zip": "10027", "email": "rosa@example.org"
            })),
        )
        .await;
        let send = || async {
            let response = app
                .http
                .post(app.url(&format!("/api/patients/{id}/enroll")))
                .bearer_auth(TOKEN)
                .header("Idempotency-Key", "click-42")
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        };
        let (first_status, first) = send().await;
        let (second_status, second) = send().await;
        assert_eq!(
            first_status,
            StatusCode::CREATED,
            "{:?}: {first}",
            app.engine
        );
        assert_eq!(second_status, StatusCode::OK, "{second}");
        assert_eq!(second["replayed"], true);
        assert_eq!(first["invite"]["id"], second["invite"]["id"]);
        let (_, invites) = app.get(&format!("/api/patients/{id}/invites")).await;
        let manual = invites
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["kind"] == "manual")
            .count();
        assert_eq!(manual, 1, "{:?}: {invites}", app.engine);
    })
    .await;
}

#[tokio::test]
async fn search_view_and_timeline_are_audited() {
    on_each_engine(async |app| {
        let id = app
            .patient(
                "M-AUD",
                json!({ "first_name": "Zelda", "last_name": "Quist" }),
            )
            .await;
        let (status, found) = app.get("/api/patients?name=quis").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
        let (_, found) = app.get("/api/patients?mrn=M-AUD").await;
        assert_eq!(found[0]["id"], id);
        let (_, found) = app.get("/api/patients?dob=1990-07-04").await;
        assert!(found.as_array().unwrap().iter().any(|p| p["id"] == id));
        let (status, _) = app.get("/api/patients").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "a search needs a filter");

        let (status, view) = app.get(&format!("/api/patients/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(view["status"]["status"], "pending", "{view}");
        assert!(
            view["status_words"]
                .as_str()
                .unwrap()
                .starts_with("Pending"),
            "{view}"
        );
        let (_, timeline) = app.get(&format!("/api/patients/{id}/timeline")).await;
        assert_eq!(timeline[0]["kind"], "chart_added");
        assert_eq!(timeline[0]["actor"], "frida");
        // The chart view carries the same invites and timeline.
        assert_eq!(view["timeline"], timeline, "{view}");
        let (_, invites) = app.get(&format!("/api/patients/{id}/invites")).await;
        assert_eq!(view["invites"], invites, "{view}");
        assert_eq!(view["invites"].as_array().map(Vec::len), Some(1), "{view}");

        let (_, audit) = app.admin_get(&format!("/api/audit?patient_id={id}")).await;
        // Ada's reading of the log is itself in it, first (newest first).
        assert_eq!(audit[0]["action"], "audit.read", "{audit}");
        assert_eq!(audit[0]["actor"], "ada", "{audit}");
        let audit = Value::Array(audit.as_array().unwrap()[1..].to_vec());
        let mut actions: Vec<&str> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["action"].as_str().unwrap())
            .collect();
        actions.sort();
        assert_eq!(
            actions,
            [
                "patient.create",
                "patient.invites",
                "patient.timeline",
                "patient.view"
            ],
            "{:?}",
            app.engine
        );
        assert!(
            audit
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a["actor"] == "frida")
        );
    })
    .await;
}

#[tokio::test]
async fn triggers_outside_office_hours_are_queued_for_the_opening() {
    on_each_engine(async |app| {
        let (status, _) = app
            .admin_call(
                reqwest::Method::PUT,
                &format!("/api/practices/{}/schedule", app.practice_id),
                Some(json!({
                    "time_zone": "America/New_York",
                    "windows": [{ "weekday": "monday", "opens": "08:00", "closes": "17:00" }],
                })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{:?}", app.engine);
        let id = app.patient("M-SCHED", json!({})).await;
        let (_, invites) = app.get(&format!("/api/patients/{id}/invites")).await;
        assert_eq!(invites[0]["state"], "scheduled", "{invites}");
        assert_eq!(
            invites[0]["due_at"], "2026-11-30T13:00:00Z",
            "next Monday 08:00 EST: {invites}"
        );

        let (status, outcome) = app
            .post(&format!("/api/patients/{id}/encounters"), json!({}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(outcome["decision"]["decision"], "coalesced", "{outcome}");
    })
    .await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_json_error() {
    on_each_engine(async |app| {
        let response = app
            .http
            .post(app.url("/api/patients"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body("{\"practice_id\": \"one\"")
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{:?}",
            app.engine
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "bad_request");
        assert!(!body["message"].as_str().unwrap().is_empty());

        let (status, body) = app
            .admin_call(
                reqwest::Method::PUT,
                &format!("/api/practices/{}/schedule", app.practice_id),
                Some(json!({ "time_zone": "Mars/Olympus", "windows": [] })),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(
            body["message"].as_str().unwrap().contains("Mars/Olympus"),
            "{body}"
        );

        let (status, body) = app.enroll(999_999).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert_eq!(body["code"], "not_found");

        let (status, body) = app
            .post(
                "/api/patients",
                json!({ "practice_id": app.practice_id, "mrn": "  " }),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

        // A path or query the endpoint cannot read answers the same JSON shape.
        for path in ["/api/patients/not-a-number", "/api/audit?limit=many"] {
            let (status, body) = app.admin_get(path).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert_eq!(body["code"], "bad_request", "{path}: {body}");
            let message = body["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("address") || message.contains("query string"),
                "{path}: {message}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn templates_preview_per_language_and_an_admin_override_applies_to_one_practice() {
    on_each_engine(async |app| {
        let path = format!("/api/practices/{}/templates/preview", app.practice_id);
        let (status, english) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{english}");
        assert_eq!(english["language"], "en");
        assert!(english["email"]["text"].as_str().unwrap().contains("Alex"));
        assert!(
            english["sms"].as_str().unwrap().contains("STOP"),
            "{english}"
        );
        let (_, spanish) = app.get(&format!("{path}?language=es")).await;
        assert_ne!(
            spanish["email"]["subject"], english["email"]["subject"],
            "{spanish}"
        );
        let (status, _) = app.get(&format!("{path}?language=fr")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let put_path = format!("/api/practices/{}/templates/en/subject", app.practice_id);
        let body =
            json!({ "source": "{{ first_name }}, your {{ practice_name }} portal is ready" });
        let (status, refused) = app
            .call(reqwest::Method::PUT, &put_path, Some(body.clone()))
            .await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "front desk staff cannot: {refused}"
        );

        let admin = |body: Value| {
            app.http
                .put(app.url(&put_path))
                .bearer_auth(crate::ADMIN_TOKEN)
                .json(&body)
                .send()
        };
        let response = admin(body).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{:?}", app.engine);
        let saved: Value = response.json().await.unwrap();
        assert_eq!(
            saved["email"]["subject"],
            "Alex, your Practice TEST portal is ready"
        );
        let (_, again) = app.get(&path).await;
        assert_eq!(
            again["email"]["subject"], saved["email"]["subject"],
            "in force for the preview and the dispatcher"
        );

        let leaky = admin(json!({ "source": "{{ last_name }}" })).await.unwrap();
        assert_eq!(
            leaky.status(),
            StatusCode::BAD_REQUEST,
            "R12: only the first name and practice name"
        );
        let message: Value = leaky.json().await.unwrap();
        assert!(
            message["message"]
                .as_str()
                .unwrap()
                .contains("may use only first_name, practice_name"),
            "{message}"
        );
        let stored = app
            .db
            .store
            .settings_with_prefix("template/")
            .await
            .unwrap();
        assert_eq!(
            stored.len(),
            1,
            "the override is kept for restarts: {stored:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_fifth_auto_invite_in_thirty_days_is_suppressed_with_a_visible_reason() {
    on_each_engine(async |app| {
        // Four Enroll Nows while auto invites are off (R7 counts both kinds).
        let switch_path = format!("/api/practices/{}/auto-invites", app.practice_id);
        let switch = async |on: bool| {
            app.admin_call(
                reqwest::Method::PUT,
                &switch_path,
                Some(json!({ "on": on })),
            )
            .await
        };
        switch(false).await;
        let id = app.patient("M-FIFTH", json!({})).await;
        for _ in 0..4 {
            app.clock.advance(SignedDuration::from_hours(1));
            assert_eq!(app.enroll(id).await.0, StatusCode::CREATED);
        }
        let first = app.invites(id).await[0]["created_at"]
            .as_str()
            .unwrap()
            .to_string();
        app.clock.advance(SignedDuration::from_hours(1));
        switch(true).await;
        let (status, outcome) = app
            .post(&format!("/api/patients/{id}/appointments"), json!({}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(
            outcome["decision"]["decision"], "suppressed",
            "{:?}: {outcome}",
            app.engine
        );
        let first: Timestamp = first.parse().unwrap();
        let next: Timestamp = outcome["decision"]["next_possible_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(next, first + SignedDuration::from_hours(30 * 24));

        let (_, view) = app.get(&format!("/api/patients/{id}")).await;
        let words = view["status_words"].as_str().unwrap();
        assert!(
            words.contains("4 invites were already sent in the last 30 days"),
            "{words}"
        );
        assert!(
            words.contains(&next.to_string()),
            "the time a send becomes possible: {words}"
        );
        let invites = app.invites(id).await;
        assert_eq!(
            invites.last().unwrap()["state"],
            "suppressed",
            "{invites:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_practice_code_must_be_a_plain_token() {
    on_each_engine(async |app| {
        let schedule = json!({ "time_zone": "America/Chicago", "windows": [], "closed_dates": [] });
        for bad in ["has space", "a/b", "NORTH^1.2.3^ISO", &"x".repeat(65)] {
            let (status, body) = app
                .admin_post(
                    "/api/practices",
                    json!({ "code": bad, "name": "North", "schedule": schedule }),
                )
                .await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}: {body}");
            assert_eq!(body["code"], "invalid_fields", "{body}");
            assert_eq!(body["problems"][0]["field"], "code", "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("letters, digits"),
                "{body}"
            );
        }
        let (status, body) = app
            .admin_post(
                "/api/practices",
                json!({ "code": "north-2_B", "name": "North", "schedule": schedule }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{:?}: {body}", app.engine);
        assert_eq!(body["code"], "north-2_B");
        assert_eq!(body["schedule"], schedule, "answered as it was sent");
    })
    .await;
}

/// The unique index decides: two requests racing with one code make one
/// practice and one clear 409.
#[tokio::test]
async fn a_practice_code_is_taken_once_even_by_racing_requests() {
    on_each_engine(async |app| {
        let schedule = json!({ "time_zone": "America/Chicago", "windows": [] });
        let body = json!({ "code": "EAST", "name": "East", "schedule": schedule });
        let (first, second) = tokio::join!(
            app.admin_post("/api/practices", body.clone()),
            app.admin_post("/api/practices", body.clone()),
        );
        let mut statuses = [first.0, second.0];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::CREATED, StatusCode::CONFLICT],
            "{:?}: {first:?} {second:?}",
            app.engine
        );
        let conflict = if first.0 == StatusCode::CONFLICT {
            first.1
        } else {
            second.1
        };
        assert_eq!(conflict["code"], "duplicate_practice", "{conflict}");
        let (status, again) = app.admin_post("/api/practices", body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{again}");
        // One audit line by ada, for the practice made: a refused create
        // writes none (the harness made the test practice as "test").
        let created: Vec<_> = app
            .audit_lines()
            .await
            .into_iter()
            .filter(|e| e.action == "practice.create" && e.actor != "test")
            .map(|e| (e.actor, e.target_type))
            .collect();
        let practice = Some("practice".to_string());
        assert_eq!(created, [("ada".to_string(), practice)], "{:?}", app.engine);
    })
    .await;
}

/// Found by schemathesis: `dob` was ignored (200) when `q` was given, so a
/// date typed wrong beside q went unnoticed; it is refused as without q.
#[tokio::test]
async fn a_dob_that_is_no_date_is_refused_beside_q_too() {
    on_each_engine(async |app| {
        let (status, body) = app.get("/api/patients?q=smith&dob=1990-13-45").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["code"], "bad_request");
        assert!(body["message"].as_str().unwrap().contains("dob"), "{body}");
        let (status, body) = app.get("/api/patients?q=smith&dob=1990-07-04").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    })
    .await;
}
