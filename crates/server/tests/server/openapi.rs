//! The JSON API's OpenAPI document (`/api/openapi.json`) and its page
//! (`/api/docs`): OpenAPI 3.1, every route of the `/api` router documented
//! with its error answers, and answers that have the documented fields.

use std::collections::BTreeSet;

use enroll_store::testing::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{ADMIN_TOKEN, TOKEN, TestApp};

/// Every route of `api::router()` (crates/server/src/api/mod.rs) but the
/// document and its page. A route added there and not here, or not
/// documented, fails `every_route_of_the_api_is_documented`.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/practices"),
    ("post", "/api/practices"),
    ("get", "/api/practices/{id}"),
    ("put", "/api/practices/{id}/auto-invites"),
    ("put", "/api/practices/{id}/schedule"),
    ("put", "/api/practices/{id}/phone"),
    ("put", "/api/practices/{id}/channels"),
    ("get", "/api/practices/{id}/templates/preview"),
    ("put", "/api/practices/{id}/templates/{language}/{kind}"),
    ("get", "/api/practices/{id}/webhooks"),
    ("post", "/api/practices/{id}/webhooks"),
    ("delete", "/api/practices/{id}/webhooks/{endpoint}"),
    ("put", "/api/practices/{id}/webhooks/{endpoint}/enabled"),
    ("post", "/api/practices/{id}/webhooks/{endpoint}/ping"),
    ("get", "/api/practices/{id}/webhooks/{endpoint}/deliveries"),
    ("get", "/api/patients"),
    ("post", "/api/patients"),
    ("get", "/api/patients/{id}"),
    ("put", "/api/patients/{id}"),
    ("get", "/api/patients/{id}/timeline"),
    ("get", "/api/patients/{id}/invites"),
    ("post", "/api/patients/{id}/encounters"),
    ("post", "/api/patients/{id}/appointments"),
    ("post", "/api/patients/{id}/enroll"),
    ("get", "/api/audit"),
    ("get", "/api/deliveries/failed"),
    ("post", "/api/deliveries/resend"),
    ("get", "/api/hl7/messages"),
    ("get", "/api/hl7/messages/{id}"),
    ("post", "/api/hl7/messages/{id}/reprocess"),
    ("get", "/api/hl7/facilities"),
    ("put", "/api/hl7/facilities/{facility}"),
];

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

async fn document(app: &TestApp) -> Value {
    // No token: the document holds no data.
    let response = app.fetch("/api/openapi.json").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    response.json().await.unwrap()
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                out.push((method.to_string(), path.clone(), op.clone()));
            }
        }
    }
    out
}

/// The response object, following a `$ref` into `components.responses`.
fn resolve<'a>(doc: &'a Value, response: &'a Value) -> &'a Value {
    match response["$ref"].as_str() {
        Some(r) => {
            let name = r.strip_prefix("#/components/responses/").unwrap();
            let resolved = &doc["components"]["responses"][name];
            assert!(resolved.is_object(), "{r} is not in the document");
            resolved
        }
        None => response,
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_api_document_is_openapi_3_1_with_a_bearer_scheme() {
    let Some(app) = TestApp::start(Engine::Sqlite).await else {
        return;
    };
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "Enroll API");
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(bearer["type"], "http");
    assert_eq!(bearer["scheme"], "bearer");
    assert_eq!(doc["security"], json!([{ "bearer": [] }]));
    // Every reference leads somewhere.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 50, "{refs:?}");
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "{r} leads nowhere");
    }
    // The error shape every error response names.
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], json!(["code", "message"]), "{error}");
    app.stop().await;
}

#[tokio::test]
async fn every_route_of_the_api_is_documented_with_its_error_answers() {
    let Some(app) = TestApp::start(Engine::Sqlite).await else {
        return;
    };
    let doc = document(&app).await;
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented.difference(&routed).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "documented, not routed"
    );
    assert_eq!(
        routed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routed, not documented"
    );

    let all = operations(&doc);
    let ids: BTreeSet<&str> = all
        .iter()
        .map(|(_, _, op)| op["operationId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), documented.len(), "operationIds are not unique");
    for (method, path, op) in operations(&doc) {
        let what = format!("{method} {path}");
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{what}: no success answer"
        );
        // Every operation needs a token; every one with a path parameter
        // can answer 400 (not a number) and, but the facility mapping
        // (an MSH-4 names no resource), 404; admins-only ones 403.
        assert!(responses.contains_key("401"), "{what}: no 401");
        if path.contains('{') {
            assert!(responses.contains_key("400"), "{what}: no 400");
            if !path.starts_with("/api/hl7/facilities/") {
                assert!(responses.contains_key("404"), "{what}: no 404");
            }
        }
        if op["requestBody"].is_object() {
            assert!(responses.contains_key("400"), "{what}: a body, no 400");
            assert!(responses.contains_key("413"), "{what}: a body, no 413");
        }
        assert!(!responses.contains_key("500"), "{what}: 500 is a bug");
        for (status, response) in responses {
            let response = resolve(&doc, response);
            assert!(
                !response["description"].as_str().unwrap().is_empty(),
                "{what} {status}: no description"
            );
            if status.starts_with('4') && status != "413" {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{what} {status}: not the JSON error shape"
                );
            }
        }
        // Each documented operation is routed at that method: without a
        // token it answers our 401, not axum's 404 or 405.
        let concrete = path
            .replace("{id}", "1")
            .replace("{endpoint}", "1")
            .replace("{language}", "en")
            .replace("{kind}", "subject")
            .replace("{facility}", "NORTH");
        let response = app
            .http
            .request(method.to_uppercase().parse().unwrap(), app.url(&concrete))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unauthorized", "{what}");
    }
    app.stop().await;
}

/// The schemas of the core's enums (mirrors in `api/schemas.rs`, since
/// the core has no OpenAPI derive) list exactly the core's values.
#[tokio::test]
async fn the_documented_enums_are_the_cores() {
    let Some(app) = TestApp::start(Engine::Sqlite).await else {
        return;
    };
    let doc = document(&app).await;
    let values = |name: &str| -> Vec<String> {
        doc["components"]["schemas"][name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is not an enum"))
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let keys = |ks: &[&str]| ks.iter().map(|k| k.to_string()).collect::<Vec<_>>();
    use enroll_core::{
        Field, InviteKind, InviteState, Language, PatientResponse, WebhookEventType,
    };
    assert_eq!(values("Field"), keys(&Field::ALL.map(Field::key)));
    assert_eq!(
        values("InviteKind"),
        keys(&InviteKind::ALL.map(InviteKind::key))
    );
    assert_eq!(
        values("InviteState"),
        keys(&InviteState::ALL.map(InviteState::key))
    );
    assert_eq!(
        values("PatientResponse"),
        keys(&PatientResponse::ALL.map(PatientResponse::key))
    );
    assert_eq!(values("Language"), keys(&Language::ALL.map(Language::code)));
    let mut events = WebhookEventType::SUBSCRIBABLE
        .map(WebhookEventType::key)
        .to_vec();
    events.push(WebhookEventType::Ping.key());
    assert_eq!(values("WebhookEventType"), keys(&events));
    let kinds: Vec<&str> = enroll_server::templates::KINDS
        .iter()
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(values("TemplateKind"), keys(&kinds));
    assert_eq!(
        values("MessageStatus"),
        keys(&["applied", "error", "rejected", "duplicate"])
    );
    app.stop().await;
}

/// A few answers checked against their schemas' properties: every field
/// answered is documented, and every required one is there.
#[tokio::test]
async fn answers_have_the_documented_fields() {
    let Some(app) = TestApp::start(Engine::Sqlite).await else {
        return;
    };
    let doc = document(&app).await;
    let schemas = &doc["components"]["schemas"];
    let check = |name: &str, value: &Value| {
        let schema = &schemas[name];
        let properties = schema["properties"].as_object().unwrap();
        let object = value.as_object().unwrap();
        for key in object.keys() {
            assert!(properties.contains_key(key), "{name}: {key} undocumented");
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let required = required.as_str().unwrap();
            assert!(object.contains_key(required), "{name}: no {required}");
        }
    };
    let id = app.patient("M-DOC", json!({})).await;
    let (status, chart) = app.get(&format!("/api/patients/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{chart}");
    check("PatientView", &chart);
    check("Patient", &chart["patient"]);
    check("Demographics", &chart["patient"]["demographics"]);
    for invite in chart["invites"].as_array().unwrap() {
        check("Invite", invite);
    }
    let (_, practices) = app.get("/api/practices").await;
    check("Practice", &practices[0]);
    let (status, enrolled) = app.enroll(id).await;
    assert_eq!(status, StatusCode::CREATED, "{enrolled}");
    check("Enrolled", &enrolled);
    let refused: Value = app
        .http
        .get(app.url("/api/patients/x"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    check("Error", &refused);
    let forbidden: Value = app
        .http
        .get(app.url("/api/audit"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    check("Error", &forbidden);
    let audit: Value = app
        .http
        .get(app.url("/api/audit?limit=5"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    check("AuditEntry", &audit[0]);
    app.stop().await;
}

#[tokio::test]
async fn the_api_docs_page_lists_every_operation_without_a_script_of_its_own() {
    let Some(app) = TestApp::start(Engine::Sqlite).await else {
        return;
    };
    let doc = document(&app).await;
    let response = app.fetch("/api/docs").await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    // minijinja escapes a slash in HTML.
    let html = response.text().await.unwrap().replace("&#x2f;", "/");
    for (method, path, _) in operations(&doc) {
        let heading = format!("<code>{} {path}</code>", method.to_uppercase());
        assert!(html.contains(&heading), "{heading} is not on the page");
    }
    for name in doc["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            html.contains(&format!("id=\"schema-{name}\"")),
            "schema {name} is not on the page"
        );
    }
    // Scripts and styles come from our own files only (no inline script,
    // nothing from elsewhere).
    for tag in html.split("<script").skip(1) {
        assert!(tag.trim_start().starts_with("src=\"/static/"), "{tag}");
    }
    assert!(!html.contains("http://") && !html.contains("https://"));
    app.stop().await;
}

/// The page in a real browser: axe-core finds nothing, and screenshots
/// (`staff-api-docs-*.png` in `target/screenshots/`) for a person to see.
#[tokio::test]
async fn the_api_docs_page_passes_axe_in_a_real_browser() {
    let Some((tools, app)) = crate::webdriver::tools_and_app_or_skip().await else {
        return;
    };
    let driver = crate::webdriver::start_driver(&tools).await;
    let client = crate::webdriver::browser(&driver, &tools, (1366, 768)).await;
    client.goto(&app.url("/api/docs")).await.unwrap();
    let heading = crate::webdriver::text_of(&client, "h1").await;
    assert!(heading.contains("Enroll API"), "{heading}");
    crate::browser::look_at(&client, &tools, "api-docs").await;
    client
        .goto(&app.url("/api/docs#post-api-patients-id-enroll"))
        .await
        .unwrap();
    let png = client.screenshot().await.unwrap();
    let file = crate::webdriver::screenshot_dir().join("staff-api-docs-enroll-1366x768.png");
    std::fs::write(file, png).unwrap();
    client.close().await.unwrap();
    app.stop().await;
}

/// The DTOs answer exactly what the store's records serialize to (the JSON
/// the API answered before it had types of its own): same fields, same
/// values, on both engines.
#[tokio::test]
async fn answers_are_the_json_of_the_store_records() {
    crate::on_each_engine(async |app| {
        let store = &app.db.store;
        let id = app.patient("M-SAME", json!({})).await;
        let (status, enrolled) = app.enroll(id).await;
        assert_eq!(status, StatusCode::CREATED, "{enrolled}");
        let (status, _) = app
            .post(&format!("/api/patients/{id}/encounters"), json!({}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let endpoint = json!({ "url": "https://portal.example.com/hooks" });
        let path = format!("/api/practices/{}/webhooks", app.practice_id);
        let (status, added) = app.admin_post(&path, endpoint).await;
        assert_eq!(status, StatusCode::CREATED, "{added}");

        let patient = store.patient(id).await.unwrap().unwrap();
        let invites = store.patient_invites(id).await.unwrap();
        let (_, found) = app.get("/api/patients?mrn=M-SAME").await;
        assert_eq!(found, json!([record(&patient)]));
        let (_, chart) = app.get(&format!("/api/patients/{id}")).await;
        assert_eq!(chart["patient"], record(&patient));
        assert_eq!(chart["invites"], record(&invites));
        let (_, listed) = app.get(&format!("/api/patients/{id}/invites")).await;
        assert_eq!(listed, record(&invites));
        let enrolled_id = enrolled["invite"]["id"].as_i64().unwrap();
        let invite = store.invite_by_id(enrolled_id).await.unwrap().unwrap();
        assert_eq!(enrolled["invite"], record(&invite));
        let (_, timeline) = app.get(&format!("/api/patients/{id}/timeline")).await;
        let lines = store.patient_timeline(id).await.unwrap();
        assert_eq!(timeline, record(&lines));
        assert_eq!(chart["timeline"], record(&lines));
        let (_, practices) = app.admin_get("/api/practices").await;
        assert_eq!(practices, record(&store.practices().await.unwrap()));
        let (_, hooks) = app.admin_get(&path).await;
        let endpoints = store.webhook_endpoints(app.practice_id).await.unwrap();
        assert_eq!(hooks, record(&endpoints));
        let mut with_secret = record(&endpoints[0]);
        with_secret["secret"] = added["secret"].clone();
        assert_eq!(added, with_secret);
        let (_, failed) = app.get("/api/deliveries/failed").await;
        assert_eq!(failed, record(&store.failed_deliveries(200).await.unwrap()));
        let (_, audit) = app.admin_get("/api/audit?limit=20").await;
        assert_eq!(audit, record(&store.audit_log(None, 20).await.unwrap()));
    })
    .await;
}

/// A store record as serde writes it.
fn record<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}
