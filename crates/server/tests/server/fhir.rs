//! FHIR R4 under `/fhir`, on both engines: the US Core Patient example
//! (tests/fixtures/fhir, with its source) stores its current name, ZIP and
//! email and not its home phone; read, update, conditional create and
//! update, search; an Encounter and a booked Appointment raise their
//! triggers; a transaction Bundle; metadata; OperationOutcome errors that
//! name the element; the practices a token's user works for.

use enroll_server::Clock;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{TOKEN, TestApp, on_each_engine};

const US_CORE_PATIENT: &str = include_str!("../fixtures/fhir/us-core-Patient-example.json");
const OTTO_TOKEN: &str = "test-token-of-otto";

fn example() -> Value {
    serde_json::from_str(US_CORE_PATIENT).unwrap()
}

async fn fhir_as(
    app: &TestApp,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut request = app.http.request(method, app.url(&format!("/fhir{path}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/fhir+json")
            .body(serde_json::to_vec(&body).unwrap());
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let text = response.text().await.unwrap();
    assert_eq!(
        content_type.as_deref(),
        Some("application/fhir+json"),
        "{status}: {text}"
    );
    (status, serde_json::from_str(&text).unwrap())
}

async fn fhir(
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    fhir_as(app, Some(TOKEN), method, path, body, &[]).await
}

/// The chart as the JSON API shows it.
async fn stored(app: &TestApp, id: &str) -> Value {
    let (status, view) = app.get(&format!("/api/patients/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{view}");
    view["patient"].clone()
}

async fn trigger_kinds(app: &TestApp, id: &str) -> Vec<String> {
    let (_, timeline) = app.get(&format!("/api/patients/{id}/timeline")).await;
    timeline
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "trigger")
        .map(|e| e["detail"]["trigger"]["kind"].as_str().unwrap().to_string())
        .collect()
}

async fn create_example(app: &TestApp) -> String {
    let (status, created) = fhir(app, Method::POST, "/Patient", Some(example())).await;
    assert_eq!(status, StatusCode::CREATED, "{:?}: {created}", app.engine);
    created["id"].as_str().unwrap().to_string()
}

async fn chart_count(app: &TestApp) -> i64 {
    enroll_store::testing::scalar(&app.db.store, "SELECT COUNT(*) FROM patients")
        .await
        .unwrap()
}

#[tokio::test]
async fn the_us_core_example_stores_the_current_name_zip_and_email_and_no_home_phone() {
    on_each_engine(async |app| {
        let id = create_example(app).await;
        let patient = stored(app, &id).await;
        let d = &patient["demographics"];
        assert_eq!(patient["mrn"], "1032702", "{:?}: {patient}", app.engine);
        assert_eq!(d["first_name"], "Amy", "{patient}");
        assert_eq!(d["last_name"], "Baxter", "not the old name Shaw: {patient}");
        assert_eq!(d["zip"], "74048", "not the old address's 74047: {patient}");
        assert_eq!(d["email"], "amy.shaw@example.com");
        assert_eq!(
            d["cell_phone"],
            Value::Null,
            "a home phone is not a cell phone"
        );
        assert_eq!(d["date_of_birth"], "1987-02-20");
        assert_eq!(d["birth_sex"], "F");
        assert_eq!(trigger_kinds(app, &id).await, ["chart_added"]);

        // Read: the chart as a US Core Patient, with its enrollment status.
        let (status, read) = fhir(app, Method::GET, &format!("/Patient/{id}"), None).await;
        assert_eq!(status, StatusCode::OK, "{read}");
        assert_eq!(read["resourceType"], "Patient");
        assert_eq!(read["id"], id.as_str());
        assert_eq!(read["name"][0]["family"], "Baxter");
        assert_eq!(read["birthDate"], "1987-02-20");
        assert_eq!(read["address"][0]["postalCode"], "74048");
        assert_eq!(read["identifier"][0]["value"], "1032702");
        assert_eq!(
            read["managingOrganization"]["reference"],
            "Organization/TEST"
        );
        let extensions = read["extension"].as_array().unwrap();
        let status_ext = extensions
            .iter()
            .find(|e| e["url"] == enroll_server::fhir::mapping::STATUS_URL)
            .expect("the enrollment status extension");
        assert!(
            status_ext["valueCoding"]["code"].is_string(),
            "{status_ext}"
        );
        assert!(
            status_ext["valueCoding"]["display"].is_string(),
            "{status_ext}"
        );
        assert!(extensions.iter().any(
            |e| e["url"] == enroll_server::fhir::mapping::BIRTHSEX_URL && e["valueCode"] == "F"
        ));

        // PUT: a new current name and a mobile phone; the home phone stays out.
        let mut updated = example();
        updated["id"] = json!(id);
        updated["name"][1]["family"] = json!("Baxter-Lee");
        updated["telecom"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "system": "phone", "value": "(312) 555-0100", "use": "mobile" }));
        // The status extension is read only: sent back, it is ignored.
        updated["extension"]
            .as_array_mut()
            .unwrap()
            .push(status_ext.clone());
        let (status, answer) =
            fhir(app, Method::PUT, &format!("/Patient/{id}"), Some(updated)).await;
        assert_eq!(status, StatusCode::OK, "{:?}: {answer}", app.engine);
        let d = stored(app, &id).await["demographics"].clone();
        assert_eq!(d["last_name"], "Baxter-Lee");
        assert_eq!(d["cell_phone"], "+13125550100", "{d}");
        assert_eq!(answer["telecom"][1]["use"], "mobile", "{answer}");
        assert_eq!(chart_count(app).await, 1);
    })
    .await;
}

#[tokio::test]
async fn conditional_create_and_update_by_identifier() {
    on_each_engine(async |app| {
        let condition = [(
            "If-None-Exist",
            "identifier=http://hospital.smarthealthit.org|1032702",
        )];
        let (first, created) = fhir_as(
            app,
            Some(TOKEN),
            Method::POST,
            "/Patient",
            Some(example()),
            &condition,
        )
        .await;
        assert_eq!(first, StatusCode::CREATED, "{:?}: {created}", app.engine);
        let (second, existing) = fhir_as(
            app,
            Some(TOKEN),
            Method::POST,
            "/Patient",
            Some(example()),
            &condition,
        )
        .await;
        assert_eq!(second, StatusCode::OK, "{existing}");
        assert_eq!(existing["id"], created["id"]);
        assert_eq!(chart_count(app).await, 1, "one chart");

        // A plain create of a known MRN is a conflict, naming the identifier.
        let (status, outcome) = fhir(app, Method::POST, "/Patient", Some(example())).await;
        assert_eq!(status, StatusCode::CONFLICT, "{outcome}");
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(outcome["issue"][0]["expression"][0], "Patient.identifier");

        // Conditional update: the chart of that MRN, replaced.
        let mut changed = example();
        changed["address"][1]["postalCode"] = json!("74049");
        let (status, answer) = fhir(
            app,
            Method::PUT,
            "/Patient?identifier=http://hospital.smarthealthit.org|1032702",
            Some(changed),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["id"], created["id"]);
        let id = created["id"].as_str().unwrap();
        assert_eq!(stored(app, id).await["demographics"]["zip"], "74049");

        // An identifier no chart has: created.
        let mut other = example();
        other["identifier"][0]["value"] = json!("555");
        let (status, answer) = fhir(app, Method::PUT, "/Patient?identifier=555", Some(other)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_ne!(answer["id"], created["id"]);
        assert_eq!(chart_count(app).await, 2);
    })
    .await;
}

#[tokio::test]
async fn search_by_identifier_family_given_and_birthdate_answers_a_searchset() {
    on_each_engine(async |app| {
        let id = create_example(app).await;
        let mut other = example();
        other["identifier"][0]["value"] = json!("2000");
        other["name"][1]["family"] = json!("Baxley");
        other["name"][1]["given"] = json!(["Ben"]);
        other["birthDate"] = json!("1990-01-01");
        let (status, _) = fhir(app, Method::POST, "/Patient", Some(other)).await;
        assert_eq!(status, StatusCode::CREATED);
        for (query, expected) in [
            ("identifier=http://hospital.smarthealthit.org|1032702", 1),
            ("identifier=1032702", 1),
            ("family=baxter", 1),
            ("family=bax", 2),
            ("given=amy", 1),
            ("family=bax&given=ben", 1),
            ("birthdate=1987-02-20", 1),
            ("family=bax&birthdate=1990-01-01", 1),
            ("family=shaw", 0),
        ] {
            let (status, bundle) = fhir(app, Method::GET, &format!("/Patient?{query}"), None).await;
            assert_eq!(status, StatusCode::OK, "{query}: {bundle}");
            assert_eq!(bundle["resourceType"], "Bundle");
            assert_eq!(bundle["type"], "searchset");
            assert_eq!(
                bundle["total"], expected,
                "{:?} {query}: {bundle}",
                app.engine
            );
            let entries = bundle["entry"].as_array().unwrap();
            assert_eq!(entries.len(), expected);
            for entry in entries {
                assert_eq!(entry["search"]["mode"], "match");
                assert_eq!(entry["resource"]["resourceType"], "Patient");
                assert!(
                    entry["fullUrl"]
                        .as_str()
                        .unwrap()
                        .contains("/fhir/Patient/")
                );
            }
        }
        let (_, bundle) = fhir(app, Method::GET, "/Patient?given=amy", None).await;
        assert_eq!(bundle["entry"][0]["resource"]["id"], id.as_str());
    })
    .await;
}

fn encounter(patient: &str) -> Value {
    json!({
        "resourceType": "Encounter",
        "identifier": [{ "system": "urn:example:visits", "value": "V-1001" }],
        "status": "finished",
        "class": {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
            "code": "AMB",
            "display": "ambulatory"
        },
        "subject": { "reference": patient },
        "period": { "start": "2026-11-25T09:00:00-05:00", "end": "2026-11-25T09:30:00-05:00" }
    })
}

fn appointment(patient: &str, status: &str) -> Value {
    json!({
        "resourceType": "Appointment",
        "identifier": [{ "system": "urn:example:appointments", "value": "A-2001" }],
        "status": status,
        "start": "2026-12-09T14:00:00-05:00",
        "end": "2026-12-09T14:20:00-05:00",
        "participant": [
            { "actor": { "reference": patient, "display": "Amy V. Baxter" }, "status": "accepted" },
            { "actor": { "reference": "Practitioner/1" }, "status": "accepted" }
        ]
    })
}

#[tokio::test]
async fn an_encounter_and_a_booked_appointment_raise_their_triggers() {
    on_each_engine(async |app| {
        let id = create_example(app).await;
        let before = stored(app, &id).await;
        let reference = format!("Patient/{id}");
        let (status, answer) =
            fhir(app, Method::POST, "/Encounter", Some(encounter(&reference))).await;
        assert_eq!(status, StatusCode::CREATED, "{:?}: {answer}", app.engine);
        assert_eq!(answer["id"], "V-1001");
        let (status, answer) = fhir(
            app,
            Method::POST,
            "/Appointment",
            Some(appointment(&reference, "booked")),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(
            trigger_kinds(app, &id).await,
            ["chart_added", "new_encounter", "new_appointment"],
            "{:?}",
            app.engine
        );
        // The events named the chart only: its data and timeline unchanged.
        let after = stored(app, &id).await;
        assert_eq!(after["demographics"], before["demographics"]);
        let kinds = app.timeline_kinds(id.parse().unwrap()).await;
        assert!(
            !kinds.iter().any(|k| k == "demographics_updated"),
            "{kinds:?}"
        );
        // The chart-added invite, which the later triggers attached to.
        assert_eq!(app.invites(id.parse().unwrap()).await.len(), 1);

        // A repeat is not a new trigger; a cancellation is recorded.
        fhir(app, Method::POST, "/Encounter", Some(encounter(&reference))).await;
        let (status, _) = fhir(
            app,
            Method::PUT,
            "/Appointment/A-2001",
            Some(appointment(&reference, "cancelled")),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(trigger_kinds(app, &id).await.len(), 3);

        // A reference to no chart of ours: 404 naming it.
        let (status, outcome) = fhir(
            app,
            Method::POST,
            "/Encounter",
            Some(encounter("Patient/999999")),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{outcome}");
        assert_eq!(outcome["issue"][0]["expression"][0], "Encounter.subject");
    })
    .await;
}

#[tokio::test]
async fn a_transaction_bundle_of_a_patient_and_its_encounter() {
    on_each_engine(async |app| {
        let patient_url = "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a";
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": patient_url,
                    "resource": example(),
                    "request": { "method": "POST", "url": "Patient" }
                },
                {
                    "resource": encounter(patient_url),
                    "request": { "method": "POST", "url": "Encounter" }
                },
                {
                    "resource": appointment(patient_url, "booked"),
                    "request": { "method": "PUT", "url": "Appointment/A-2001" }
                }
            ]
        });
        let (status, answer) = fhir(app, Method::POST, "", Some(bundle.clone())).await;
        assert_eq!(status, StatusCode::OK, "{:?}: {answer}", app.engine);
        assert_eq!(answer["type"], "transaction-response");
        assert_eq!(answer["entry"][0]["response"]["status"], "201 Created");
        let location = answer["entry"][0]["response"]["location"].as_str().unwrap();
        let id = location.strip_prefix("Patient/").unwrap();
        assert_eq!(stored(app, id).await["demographics"]["last_name"], "Baxter");
        assert_eq!(
            trigger_kinds(app, id).await,
            ["chart_added", "new_encounter", "new_appointment"]
        );

        // A bad entry answers its OperationOutcome and writes nothing.
        let mut bad = bundle;
        bad["entry"][0]["resource"]["identifier"][0]["value"] = json!("777");
        bad["entry"][2]["resource"]["status"] = json!("proposed");
        let (status, outcome) = fhir(app, Method::POST, "", Some(bad)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{outcome}");
        assert_eq!(
            outcome["issue"][0]["expression"][0],
            "Bundle.entry[2].resource.status"
        );
        assert_eq!(chart_count(app).await, 1);
    })
    .await;
}

/// All or nothing: an entry refused only when applied (the second POST of
/// one new MRN, which each passes the check alone) takes the first entry
/// with it, its timeline and audit lines too.
#[tokio::test]
async fn a_transaction_bundle_whose_later_entry_fails_writes_none_of_it() {
    on_each_engine(async |app| {
        let post = |mrn: &str| {
            let mut patient = example();
            patient["identifier"][0]["value"] = json!(mrn);
            json!({ "resource": patient, "request": { "method": "POST", "url": "Patient" } })
        };
        let bundle = json!({
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [post("9001"), post("9002"), post("9001")]
        });
        let audit_lines = || async {
            enroll_store::testing::scalar(&app.db.store, "SELECT COUNT(*) FROM audit_log")
                .await
                .unwrap()
        };
        let (charts, audits) = (chart_count(app).await, audit_lines().await);
        let (status, outcome) = fhir(app, Method::POST, "", Some(bundle)).await;
        assert_eq!(status, StatusCode::CONFLICT, "{:?}: {outcome}", app.engine);
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(chart_count(app).await, charts, "{:?}", app.engine);
        assert_eq!(audit_lines().await, audits, "{:?}", app.engine);
        let timeline = enroll_store::testing::scalar(
            &app.db.store,
            "SELECT COUNT(*) FROM timeline WHERE source = 'fhir'",
        )
        .await
        .unwrap();
        assert_eq!(timeline, 0, "{:?}", app.engine);
    })
    .await;
}

#[tokio::test]
async fn metadata_says_what_is_supported() {
    on_each_engine(async |app| {
        let (status, statement) = fhir_as(app, None, Method::GET, "/metadata", None, &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(statement["resourceType"], "CapabilityStatement");
        assert_eq!(statement["fhirVersion"], "4.0.1");
        let resources = statement["rest"][0]["resource"].as_array().unwrap();
        let types: Vec<&str> = resources
            .iter()
            .map(|r| r["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Patient", "Encounter", "Appointment"]);
        let params: Vec<&str> = resources[0]["searchParam"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(params, ["identifier", "family", "given", "birthdate"]);
        assert_eq!(resources[0]["conditionalCreate"], true);
    })
    .await;
}

#[tokio::test]
async fn a_bad_birth_date_answers_an_outcome_naming_it_and_writes_nothing() {
    on_each_engine(async |app| {
        for bad in [json!("02/20/1987"), json!("1987-02-30"), json!(19870220)] {
            let mut patient = example();
            patient["birthDate"] = bad.clone();
            let (status, outcome) = fhir(app, Method::POST, "/Patient", Some(patient)).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{:?} {bad}: {outcome}",
                app.engine
            );
            assert_eq!(outcome["resourceType"], "OperationOutcome");
            assert_eq!(outcome["issue"][0]["severity"], "error");
            assert_eq!(
                outcome["issue"][0]["expression"][0], "Patient.birthDate",
                "{bad}: {outcome}"
            );
        }
        let mut no_mrn = example();
        no_mrn["identifier"] = json!([]);
        let (status, outcome) = fhir(app, Method::POST, "/Patient", Some(no_mrn)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{outcome}");
        assert_eq!(outcome["issue"][0]["expression"][0], "Patient.identifier");
        assert_eq!(chart_count(app).await, 0);
    })
    .await;
}

#[tokio::test]
async fn a_user_of_another_practice_cannot_read_or_write_and_no_token_is_401() {
    on_each_engine(async |app| {
        let id = create_example(app).await;
        let now = app.clock.now();
        let other = app.db.always_open_practice("OTHER", now).await;
        let otto = app
            .db
            .store
            .put_staff_user(
                "otto",
                "Otto Other",
                enroll_core::Role::FrontDesk,
                &enroll_store::hash_token(OTTO_TOKEN),
                now,
            )
            .await
            .unwrap();
        app.db
            .store
            .change_staff(
                otto.id,
                enroll_store::StaffChange::Practices(&[other.id]),
                "test",
                now,
            )
            .await
            .unwrap();
        let otto_call = |method: Method, path: String, body: Option<Value>| async move {
            fhir_as(app, Some(OTTO_TOKEN), method, &path, body, &[]).await
        };
        let (status, outcome) = otto_call(Method::GET, format!("/Patient/{id}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{:?}: {outcome}", app.engine);
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        let mut put = example();
        put["id"] = json!(id);
        let (status, _) = otto_call(Method::PUT, format!("/Patient/{id}"), Some(put)).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let mut into_test = example();
        into_test["identifier"][0]["value"] = json!("9");
        into_test["managingOrganization"] = json!({ "reference": "Organization/TEST" });
        let (status, outcome) = otto_call(Method::POST, "/Patient".into(), Some(into_test)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{outcome}");
        assert_eq!(
            outcome["issue"][0]["expression"][0],
            "Patient.managingOrganization"
        );
        let (_, bundle) = otto_call(Method::GET, "/Patient?family=baxter".into(), None).await;
        assert_eq!(bundle["total"], 0, "{bundle}");
        let (status, _) = otto_call(
            Method::POST,
            "/Encounter".into(),
            Some(encounter(&format!("Patient/{id}"))),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Otto's own practice, his only one, takes his patients.
        let (status, created) = otto_call(Method::POST, "/Patient".into(), Some(example())).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(
            created["managingOrganization"]["reference"],
            "Organization/OTHER"
        );
        assert_eq!(trigger_kinds(app, &id).await, ["chart_added"]);

        for token in [None, Some("wrong")] {
            let (status, outcome) = fhir_as(
                app,
                token,
                Method::GET,
                &format!("/Patient/{id}"),
                None,
                &[],
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert_eq!(outcome["issue"][0]["code"], "login");
            let (status, _) =
                fhir_as(app, token, Method::POST, "/Patient", Some(example()), &[]).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    })
    .await;
}
