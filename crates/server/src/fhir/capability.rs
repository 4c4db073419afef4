//! `GET /fhir/metadata`: the CapabilityStatement, saying exactly what
//! Enroll's FHIR endpoint supports (no authentication needed, as FHIR
//! expects of `metadata`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use super::mapping::{BIRTHSEX_URL, STATUS_URL};
use super::outcome::fhir_json;
use crate::AppState;

const PRACTICE_RULE: &str = "The practice of a Patient is managingOrganization = \
    Organization/{practice code}; without it, the one practice the token's user works for \
    (or the install's one practice, for an administrator of all); otherwise 422. \
    Encounter and Appointment go to their patient's practice.";

const SELECTION_RULE: &str = "Stored: the first given and the family name of the current \
    name (official, then usual, then without use; never old or with an ended period), the \
    postalCode of the current address (home, then without use, temp, work; never old or \
    billing), the current email (system email, not old), the cell phone (system phone, use \
    mobile; a home or work phone is not stored), birthDate, the us-core-birthsex extension, \
    the preferred communication language, deceased[x]. The identifier typed MR (else usual or \
    official) is the MRN. Create and update replace the demographics.";

pub(crate) fn statement() -> Value {
    let interaction =
        |codes: &[&str]| -> Vec<Value> { codes.iter().map(|c| json!({ "code": c })).collect() };
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-12-02",
        "kind": "instance",
        "software": { "name": "Enroll" },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": PRACTICE_RULE,
            "security": {
                "description": "Authorization: Bearer {API token} (`enroll user add`); \
                    a user reads and writes only the practices they work for.",
            },
            "interaction": interaction(&["transaction"]),
            "resource": [
                {
                    "type": "Patient",
                    "supportedProfile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
                    "documentation": format!("{SELECTION_RULE} Birth sex is read from {BIRTHSEX_URL}; the enrollment status is answered (read only) as the extension {STATUS_URL}, a valueCoding whose code is the status key and whose display is its words."),
                    "interaction": interaction(&["read", "create", "update", "search-type"]),
                    "versioning": "no-version",
                    "readHistory": false,
                    "updateCreate": false,
                    "conditionalCreate": true,
                    "conditionalUpdate": true,
                    "conditionalDelete": "not-supported",
                    "searchParam": [
                        { "name": "identifier", "type": "token", "documentation": "the MRN; a system before | is ignored" },
                        { "name": "family", "type": "string" },
                        { "name": "given", "type": "string" },
                        { "name": "birthdate", "type": "date", "documentation": "a whole date, eq only" },
                    ],
                },
                {
                    "type": "Encounter",
                    "documentation": "A new Encounter (status not cancelled or entered-in-error) \
                        for subject Patient/{id} is a new-encounter trigger; the visit number is \
                        its identifier value, else its id. Not stored as a resource: no read.",
                    "interaction": interaction(&["create", "update"]),
                },
                {
                    "type": "Appointment",
                    "documentation": "A new booked Appointment with a participant actor \
                        Patient/{id} is a new-appointment trigger; cancelled, noshow and \
                        entered-in-error cancel it; arrived, checked-in, fulfilled are recorded. \
                        Not stored as a resource: no read.",
                    "interaction": interaction(&["create", "update"]),
                },
            ],
        }],
    })
}

pub(crate) async fn metadata(State(_state): State<AppState>) -> Response {
    fhir_json(StatusCode::OK, &statement())
}
