//! FHIR R4 REST under `/fhir` (`application/fhir+json`): Patient create,
//! read, update, conditional create and update, search; Encounter and
//! Appointment create and update; a transaction Bundle of these; and the
//! CapabilityStatement at `metadata`. Every write is an
//! [`IntakeEvent`] applied by `Store::apply_intake` with the source `fhir`,
//! so FHIR raises the same triggers (R2) as HL7 and the JSON API. The API
//! tokens authenticate, and a user sees and writes only their practices.
//!
//! Which practice: `Patient.managingOrganization` = `Organization/{code}`
//! (the practice's code); without it, the one practice the user works for
//! (or the one practice of the install, for an administrator of all);
//! otherwise 422 naming `Patient.managingOrganization`.

mod capability;
pub mod mapping;
mod outcome;
pub mod resources;
pub mod select;

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post, put};
use enroll_core::{IfKnown, IntakeEvent, NameTerms, PatientChange, SearchTerms};
use enroll_store::{
    Audit, AuditTarget, BatchOutcome, IntakeItem, IntakeOutcome, PatientSearch, Practice, Source,
};
use jiff::civil::Date;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::AppState;
use crate::auth::Staff;
use mapping::{patient_change, patient_resource};
use outcome::fhir_json;
pub use outcome::{FHIR_JSON, FhirError};
use resources::{
    Appointment, Bundle, BundleEntry, BundleLink, BundleResponse, BundleSearch, Encounter, Patient,
    Reference,
};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/", post(transaction))
        .route("/metadata", get(capability::metadata))
        .route(
            "/Patient",
            get(search).post(create_patient).put(conditional_update),
        )
        .route("/Patient/{id}", get(read_patient).put(update_patient))
        .route("/Encounter", post(create_encounter))
        .route("/Encounter/{id}", put(update_encounter))
        .route("/Appointment", post(create_appointment))
        .route("/Appointment/{id}", put(update_appointment))
}

/// The signed-in staff user, or a 401 OperationOutcome.
pub(crate) struct FhirStaff(Staff);

impl FromRequestParts<AppState> for FhirStaff {
    type Rejection = FhirError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, FhirError> {
        Ok(FhirStaff(Staff::from_request_parts(parts, state).await?))
    }
}

impl FhirStaff {
    fn username(&self) -> &str {
        &self.0.0.username
    }

    fn allows(&self, practice_id: i64) -> bool {
        self.0.0.scope.allows(practice_id)
    }

    fn source(&self, action: &str, reference: impl Into<String>) -> Source {
        Source::new("fhir", Some(self.username()))
            .audited(action)
            .with_reference(reference)
    }
}

/// Today, in UTC: what `period` and `use` are compared with.
fn today(state: &AppState) -> Date {
    jiff::tz::TimeZone::UTC
        .to_datetime(state.clock.now())
        .date()
}

/// A request body as `T`, or 400 naming the element that is not valid.
fn parse<T: DeserializeOwned>(body: &[u8], resource: &str) -> Result<T, FhirError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let expression = if path == "." || path.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{path}")
        };
        FhirError::invalid(
            expression,
            format!("this {resource} is not valid FHIR R4 JSON: {}", e.inner()),
        )
    })
}

fn parse_value<T: DeserializeOwned>(value: Value, resource: &str) -> Result<T, FhirError> {
    let bytes =
        serde_json::to_vec(&value).map_err(|e| FhirError::invalid(resource, e.to_string()))?;
    parse(&bytes, resource)
}

/// The practice a Patient goes to (see the module's comment).
async fn practice_for(
    state: &AppState,
    staff: &FhirStaff,
    organization: Option<&Reference>,
    path: &str,
) -> Result<Practice, FhirError> {
    if let Some(reference) = organization.and_then(|r| r.reference.as_deref()) {
        let code = reference
            .trim()
            .strip_prefix("Organization/")
            .ok_or_else(|| {
                FhirError::unprocessable(path, "the practice is referenced as Organization/{code}")
            })?;
        return match state.store.practice_by_code(code).await? {
            Some(practice) if staff.allows(practice.id) => Ok(practice),
            _ => Err(FhirError::not_found("practice").at(path)),
        };
    }
    let visible: Vec<Practice> = state
        .store
        .practices()
        .await?
        .into_iter()
        .filter(|p| staff.allows(p.id))
        .collect();
    match <[Practice; 1]>::try_from(visible) {
        Ok([only]) => Ok(only),
        Err(_) => Err(FhirError::unprocessable(
            path,
            "name the practice: managingOrganization = Organization/{practice code} \
             (you work for more than one practice, or none)",
        )),
    }
}

/// The charts of the practice with this MRN (none or one).
async fn by_mrn(
    state: &AppState,
    staff: &FhirStaff,
    practice_id: i64,
    mrn: &str,
) -> Result<Vec<enroll_store::Patient>, FhirError> {
    let found = state
        .store
        .search_patients(&PatientSearch {
            terms: SearchTerms {
                mrn: Some(mrn.to_string()),
                ..SearchTerms::default()
            },
            practice_id: Some(practice_id),
            scope: staff.0.0.scope.clone(),
            limit: Some(10),
        })
        .await?;
    Ok(found.into_iter().filter(|p| p.mrn == mrn).collect())
}

/// The chart `id` if it is one of the caller's practices'; else 404.
async fn scoped(
    state: &AppState,
    staff: &FhirStaff,
    id: i64,
) -> Result<enroll_store::Patient, FhirError> {
    state
        .store
        .patient(id)
        .await?
        .filter(|p| staff.allows(p.practice_id))
        .ok_or_else(|| FhirError::not_found("Patient"))
}

/// The chart as a FHIR Patient, with its status.
async fn patient_of(state: &AppState, id: i64) -> Result<Patient, FhirError> {
    let now = state.clock.now();
    let chart = state
        .store
        .chart(id, now)
        .await?
        .ok_or_else(|| FhirError::not_found("Patient"))?;
    let practice = state
        .store
        .practice(chart.patient.practice_id)
        .await?
        .ok_or_else(|| FhirError::not_found("practice"))?;
    Ok(patient_resource(
        &chart.patient,
        &practice.code,
        &chart.status,
    ))
}

fn with_location(mut response: Response, location: &str) -> Response {
    if let Ok(value) = header::HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Applies one event; the chart it wrote.
async fn apply(
    state: &AppState,
    practice_id: i64,
    event: &IntakeEvent,
    source: &Source,
) -> Result<i64, FhirError> {
    match state
        .store
        .apply_intake(practice_id, event, source, state.clock.now())
        .await?
    {
        IntakeOutcome::Applied(saved) => Ok(saved.patient.id),
        IntakeOutcome::Refused(problem) => Err(FhirError::unprocessable(
            "Patient.identifier",
            problem.reason,
        )),
    }
}

/// `identifier=system|value` (or `value`) as the MRN.
fn identifier_token(raw: &str) -> String {
    raw.rsplit('|').next().unwrap_or(raw).trim().to_string()
}

/// The `identifier` of a conditional request's query (`If-None-Exist`, the
/// conditional update's URL); other parameters are not supported.
fn condition(query: &str, path: &str) -> Result<String, FhirError> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    match pairs.as_slice() {
        [(name, value)] if name == "identifier" && !identifier_token(value).is_empty() => {
            Ok(identifier_token(value))
        }
        _ => Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            "not-supported",
            "a condition is identifier={system}|{MRN}, alone",
        )
        .at(path)),
    }
}

struct PatientWrite {
    practice: Practice,
    change: PatientChange,
}

/// A Patient resource to write in a practice.
async fn plan_patient(
    state: &AppState,
    staff: &FhirStaff,
    patient: &Patient,
    mrn: Option<&str>,
) -> Result<PatientWrite, FhirError> {
    let change = patient_change(patient, mrn, today(state))?;
    let practice = practice_for(
        state,
        staff,
        patient.managing_organization.as_ref(),
        "Patient.managingOrganization",
    )
    .await?;
    Ok(PatientWrite { practice, change })
}

pub(crate) async fn create_patient(
    State(state): State<AppState>,
    staff: FhirStaff,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, FhirError> {
    let patient: Patient = parse(&body, "Patient")?;
    let plan = plan_patient(&state, &staff, &patient, None).await?;
    if let Some(raw) = headers.get("if-none-exist") {
        let query = raw
            .to_str()
            .map_err(|_| FhirError::invalid("If-None-Exist", "not plain text"))?;
        let mrn = condition(query, "If-None-Exist")?;
        let found = by_mrn(&state, &staff, plan.practice.id, &mrn).await?;
        match found.as_slice() {
            [] => {}
            [one] => {
                let resource = patient_of(&state, one.id).await?;
                return Ok(with_location(
                    fhir_json(StatusCode::OK, &resource),
                    &format!("Patient/{}", one.id),
                ));
            }
            _ => {
                return Err(FhirError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "multiple-matches",
                    "more than one patient matches If-None-Exist",
                ));
            }
        }
    }
    let event = IntakeEvent::Register {
        patient: plan.change,
        if_known: IfKnown::Refuse,
    };
    let reference = patient.id.clone().unwrap_or_else(|| "Patient".into());
    let id = apply(
        &state,
        plan.practice.id,
        &event,
        &staff.source("patient.create", reference),
    )
    .await?;
    let resource = patient_of(&state, id).await?;
    Ok(with_location(
        fhir_json(StatusCode::CREATED, &resource),
        &format!("Patient/{id}"),
    ))
}

pub(crate) async fn update_patient(
    State(state): State<AppState>,
    staff: FhirStaff,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, FhirError> {
    let patient: Patient = parse(&body, "Patient")?;
    if patient.id.as_deref() != Some(id.as_str()) {
        return Err(FhirError::invalid(
            "Patient.id",
            "the resource's id must be the id in the URL",
        ));
    }
    let number: i64 = id.parse().map_err(|_| FhirError::not_found("Patient"))?;
    let chart = scoped(&state, &staff, number).await?;
    let change = patient_change(&patient, Some(&chart.mrn), today(&state))?;
    if let Some(reference) = patient.managing_organization.as_ref() {
        let named = practice_for(
            &state,
            &staff,
            Some(reference),
            "Patient.managingOrganization",
        )
        .await?;
        if named.id != chart.practice_id {
            return Err(FhirError::unprocessable(
                "Patient.managingOrganization",
                "a chart cannot move to another practice",
            ));
        }
    }
    let id = apply(
        &state,
        chart.practice_id,
        &IntakeEvent::Update(change),
        &staff.source("patient.update", format!("Patient/{number}")),
    )
    .await?;
    Ok(fhir_json(StatusCode::OK, &patient_of(&state, id).await?))
}

pub(crate) async fn conditional_update(
    State(state): State<AppState>,
    staff: FhirStaff,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    body: Bytes,
) -> Result<Response, FhirError> {
    let mrn = condition(query.as_deref().unwrap_or(""), "Patient?identifier")?;
    let patient: Patient = parse(&body, "Patient")?;
    let plan = plan_patient(&state, &staff, &patient, Some(&mrn)).await?;
    let found = by_mrn(&state, &staff, plan.practice.id, &mrn).await?;
    let (status, event, action) = match found.as_slice() {
        [] => (
            StatusCode::CREATED,
            IntakeEvent::Register {
                patient: plan.change,
                if_known: IfKnown::Refuse,
            },
            "patient.create",
        ),
        [_] => (
            StatusCode::OK,
            IntakeEvent::Update(plan.change),
            "patient.update",
        ),
        _ => {
            return Err(FhirError::new(
                StatusCode::PRECONDITION_FAILED,
                "multiple-matches",
                "more than one patient matches the identifier",
            ));
        }
    };
    let id = apply(
        &state,
        plan.practice.id,
        &event,
        &staff.source(action, format!("Patient?identifier={mrn}")),
    )
    .await?;
    let resource = patient_of(&state, id).await?;
    Ok(with_location(
        fhir_json(status, &resource),
        &format!("Patient/{id}"),
    ))
}

pub(crate) async fn read_patient(
    State(state): State<AppState>,
    staff: FhirStaff,
    Path(id): Path<String>,
) -> Result<Response, FhirError> {
    let number: i64 = id.parse().map_err(|_| FhirError::not_found("Patient"))?;
    scoped(&state, &staff, number).await?;
    let resource = patient_of(&state, number).await?;
    state
        .store
        .audit(
            &Audit::new(
                staff.username(),
                "patient.view",
                AuditTarget::Patient(number),
            ),
            state.clock.now(),
        )
        .await?;
    Ok(fhir_json(StatusCode::OK, &resource))
}

/// Patient search: `identifier`, `family`, `given`, `birthdate` (each
/// given must match; names are case-insensitive prefixes), `_count`.
pub(crate) async fn search(
    State(state): State<AppState>,
    staff: FhirStaff,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, FhirError> {
    let lower = |key: &str| {
        query
            .get(key)
            .map(|v| v.trim().to_lowercase())
            .filter(|v| !v.is_empty())
    };
    let family = lower("family");
    let given = lower("given");
    let dob = match query.get("birthdate").map(|v| v.trim()) {
        Some(raw) => {
            let raw = raw.strip_prefix("eq").unwrap_or(raw);
            Some(raw.parse::<Date>().map_err(|_| {
                FhirError::invalid(
                    "birthdate",
                    "birthdate must be a date such as 1987-02-20 (or eq1987-02-20)",
                )
            })?)
        }
        None => None,
    };
    let mrn = query
        .get("identifier")
        .map(|v| identifier_token(v))
        .filter(|v| !v.is_empty());
    let name = match (&family, &given) {
        (Some(last), Some(first)) => Some(NameTerms::LastFirst {
            last: last.clone(),
            first: first.clone(),
        }),
        (Some(word), None) | (None, Some(word)) => Some(NameTerms::Either(word.clone())),
        (None, None) => None,
    };
    let terms = SearchTerms {
        name,
        dob,
        mrn,
        ..SearchTerms::default()
    };
    if terms.is_empty() {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            "not-supported",
            "search with at least one of identifier, family, given, birthdate",
        ));
    }
    let limit = query
        .get("_count")
        .and_then(|c| c.parse::<i64>().ok())
        .unwrap_or(50);
    let found = state
        .store
        .search_patients(&PatientSearch {
            terms,
            practice_id: None,
            scope: staff.0.0.scope.clone(),
            limit: Some(limit),
        })
        .await?;
    let starts = |value: &Option<String>, prefix: &Option<String>| match prefix {
        Some(prefix) => value
            .as_deref()
            .is_some_and(|v| v.to_lowercase().starts_with(prefix.as_str())),
        None => true,
    };
    let found: Vec<_> = found
        .into_iter()
        .filter(|p| {
            starts(&p.demographics.last_name, &family) && starts(&p.demographics.first_name, &given)
        })
        .collect();
    let base = base_url(&headers);
    let mut bundle = Bundle::new("searchset");
    bundle.total = Some(found.len());
    let mut self_query: Vec<(&String, &String)> = query.iter().collect();
    self_query.sort();
    let self_query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(self_query)
        .finish();
    bundle.link.push(BundleLink {
        relation: "self".into(),
        url: format!("{base}/Patient?{self_query}"),
    });
    for patient in &found {
        let resource = patient_of(&state, patient.id).await?;
        bundle.entry.push(BundleEntry {
            full_url: Some(format!("{base}/Patient/{}", patient.id)),
            resource: serde_json::to_value(&resource).ok(),
            search: Some(BundleSearch {
                mode: "match".into(),
            }),
            ..BundleEntry::default()
        });
    }
    let looked_for = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    state
        .store
        .audit(
            &Audit::new(
                staff.username(),
                "patient.search",
                AuditTarget::Search {
                    terms: looked_for,
                    ids: found.iter().map(|p| p.id).collect(),
                },
            ),
            state.clock.now(),
        )
        .await?;
    Ok(fhir_json(StatusCode::OK, &bundle))
}

/// `http://{Host}/fhir`: the base of full URLs in a Bundle.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}/fhir")
}

/// An Encounter or Appointment as an event about a chart the caller sees.
async fn visit_event(
    state: &AppState,
    staff: &FhirStaff,
    resource: &Value,
    id_in_url: Option<&str>,
    patients: &HashMap<String, (i64, String)>,
) -> Result<(i64, IntakeEvent, String), FhirError> {
    let kind = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("");
    let chart = async |reference: Option<&str>, path: &str| -> Result<(i64, String), FhirError> {
        if let Some(planned) = reference.and_then(|r| patients.get(r)) {
            return Ok(planned.clone());
        }
        let id = mapping::patient_reference(reference, path)?;
        let patient = scoped(state, staff, id).await.map_err(|e| e.at(path))?;
        Ok((patient.practice_id, patient.mrn))
    };
    let only_mrn = |mrn: String| PatientChange {
        mrn,
        ..PatientChange::default()
    };
    match kind {
        "Encounter" => {
            let encounter: Encounter = parse_value(resource.clone(), "Encounter")?;
            if let (Some(url), Some(id)) = (id_in_url, encounter.id.as_deref())
                && url != id
            {
                return Err(FhirError::invalid(
                    "Encounter.id",
                    "the id must be the one in the URL",
                ));
            }
            let status = encounter.status.as_deref().ok_or_else(|| {
                FhirError::invalid("Encounter.status", "an Encounter needs a status")
            })?;
            if matches!(status, "cancelled" | "entered-in-error") {
                return Err(FhirError::unprocessable(
                    "Encounter.status",
                    "Enroll records encounters that took or take place, not cancelled ones",
                ));
            }
            let visit_number =
                mapping::source_id(&encounter.identifier, id_in_url.or(encounter.id.as_deref()))
                    .ok_or_else(|| {
                        FhirError::unprocessable(
                            "Encounter.identifier",
                            "an Encounter needs an identifier (the visit number) or an id",
                        )
                    })?;
            let subject = encounter
                .subject
                .as_ref()
                .and_then(|s| s.reference.as_deref());
            let (practice_id, mrn) = chart(subject, "Encounter.subject").await?;
            let event = IntakeEvent::Encounter {
                patient: only_mrn(mrn),
                visit_number: visit_number.clone(),
                patient_class: encounter
                    .class
                    .as_ref()
                    .and_then(|c| c.code.as_deref())
                    .map(mapping::patient_class),
                admitted_at: encounter.period.as_ref().and_then(|p| p.start.clone()),
            };
            Ok((practice_id, event, format!("Encounter/{visit_number}")))
        }
        "Appointment" => {
            let appointment: Appointment = parse_value(resource.clone(), "Appointment")?;
            if let (Some(url), Some(id)) = (id_in_url, appointment.id.as_deref())
                && url != id
            {
                return Err(FhirError::invalid(
                    "Appointment.id",
                    "the id must be the one in the URL",
                ));
            }
            let raw_status = appointment.status.as_deref().ok_or_else(|| {
                FhirError::invalid("Appointment.status", "an Appointment needs a status")
            })?;
            let status = mapping::appointment_status(raw_status).ok_or_else(|| {
                FhirError::unprocessable(
                    "Appointment.status",
                    "Enroll records booked, arrived, fulfilled, checked-in, noshow and \
                     cancelled appointments, not proposed, pending or waitlisted ones",
                )
            })?;
            let appointment_id = mapping::source_id(
                &appointment.identifier,
                id_in_url.or(appointment.id.as_deref()),
            )
            .ok_or_else(|| {
                FhirError::unprocessable(
                    "Appointment.identifier",
                    "an Appointment needs an identifier or an id",
                )
            })?;
            let subject = appointment
                .participant
                .iter()
                .filter_map(|p| p.actor.as_ref().and_then(|a| a.reference.as_deref()))
                .find(|r| r.starts_with("Patient/") || patients.contains_key(*r));
            let (practice_id, mrn) = chart(subject, "Appointment.participant.actor").await?;
            let event = IntakeEvent::Appointment {
                patient: only_mrn(mrn),
                appointment_id: appointment_id.clone(),
                status,
                starts_at: appointment.start.clone(),
            };
            Ok((practice_id, event, format!("Appointment/{appointment_id}")))
        }
        other => Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            "not-supported",
            format!("Enroll takes Patient, Encounter and Appointment, not {other:?}"),
        )),
    }
}

async fn write_visit(
    state: AppState,
    staff: FhirStaff,
    body: Bytes,
    kind: &str,
    id_in_url: Option<&str>,
) -> Result<Response, FhirError> {
    let resource: Value = parse(&body, kind)?;
    if resource.get("resourceType").and_then(Value::as_str) != Some(kind) {
        return Err(FhirError::invalid(
            format!("{kind}.resourceType"),
            format!("expected a {kind}"),
        ));
    }
    let (practice_id, event, reference) =
        visit_event(&state, &staff, &resource, id_in_url, &HashMap::new()).await?;
    let action = if kind == "Encounter" {
        "patient.encounter"
    } else {
        "patient.appointment"
    };
    apply(
        &state,
        practice_id,
        &event,
        &staff.source(action, reference.clone()),
    )
    .await?;
    let mut answer = resource;
    if let Some(obj) = answer.as_object_mut() {
        let id = reference.split('/').nth(1).unwrap_or_default().to_string();
        obj.insert("id".into(), Value::String(id));
    }
    let status = if id_in_url.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(with_location(fhir_json(status, &answer), &reference))
}

pub(crate) async fn create_encounter(
    State(state): State<AppState>,
    staff: FhirStaff,
    body: Bytes,
) -> Result<Response, FhirError> {
    write_visit(state, staff, body, "Encounter", None).await
}

pub(crate) async fn update_encounter(
    State(state): State<AppState>,
    staff: FhirStaff,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, FhirError> {
    write_visit(state, staff, body, "Encounter", Some(&id)).await
}

pub(crate) async fn create_appointment(
    State(state): State<AppState>,
    staff: FhirStaff,
    body: Bytes,
) -> Result<Response, FhirError> {
    write_visit(state, staff, body, "Appointment", None).await
}

pub(crate) async fn update_appointment(
    State(state): State<AppState>,
    staff: FhirStaff,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, FhirError> {
    write_visit(state, staff, body, "Appointment", Some(&id)).await
}

/// One entry of a transaction, checked before anything is written.
struct Planned {
    practice_id: i64,
    event: IntakeEvent,
    source: Source,
    status: &'static str,
}

/// A transaction Bundle of Patient (POST, PUT by id or by identifier),
/// Encounter and Appointment (POST or PUT) entries. Every entry is checked
/// first (a bad one answers its OperationOutcome, naming the entry, and
/// nothing is written); then all are applied in order in one store
/// transaction, so an entry refused while applying (a second POST of the
/// same MRN) leaves nothing of the others written either. A Patient entry's
/// `fullUrl` (`urn:uuid:...`) may be referenced by the entries after it.
pub(crate) async fn transaction(
    State(state): State<AppState>,
    staff: FhirStaff,
    body: Bytes,
) -> Result<Response, FhirError> {
    let bundle: Bundle = parse(&body, "Bundle")?;
    if bundle.resource_type != "Bundle" || bundle.type_ != "transaction" {
        return Err(FhirError::invalid(
            "Bundle.type",
            "POST /fhir takes a Bundle of type transaction",
        ));
    }
    let mut planned = Vec::new();
    let mut patients: HashMap<String, (i64, String)> = HashMap::new();
    for (n, entry) in bundle.entry.iter().enumerate() {
        let at = |e: FhirError| {
            let expression = e
                .expression
                .clone()
                .map_or(format!("Bundle.entry[{n}]"), |x| {
                    // `Appointment.status` in the entry: `...resource.status`.
                    let x = x
                        .split_once('.')
                        .map_or(x.as_str(), |(_, rest)| rest)
                        .to_string();
                    format!("Bundle.entry[{n}].resource.{x}")
                });
            e.at(expression)
        };
        let request = entry.request.as_ref().ok_or_else(|| {
            FhirError::invalid(
                format!("Bundle.entry[{n}].request"),
                "each entry needs a request",
            )
        })?;
        let resource = entry.resource.clone().ok_or_else(|| {
            FhirError::invalid(
                format!("Bundle.entry[{n}].resource"),
                "each entry needs a resource",
            )
        })?;
        let (path, query) = request.url.split_once('?').unwrap_or((&request.url, ""));
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let kind = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("");
        match (request.method.as_str(), kind, parts.as_slice()) {
            (method @ ("POST" | "PUT"), "Patient", ["Patient", rest @ ..]) => {
                let patient: Patient = parse_value(resource, "Patient").map_err(at)?;
                let chart = match (method, rest) {
                    ("PUT", [id]) => {
                        let number: i64 = id
                            .parse()
                            .map_err(|_| at(FhirError::not_found("Patient")))?;
                        Some(scoped(&state, &staff, number).await.map_err(at)?)
                    }
                    ("PUT", []) => {
                        let mrn = condition(query, "request.url").map_err(at)?;
                        let plan = plan_patient(&state, &staff, &patient, Some(&mrn))
                            .await
                            .map_err(at)?;
                        by_mrn(&state, &staff, plan.practice.id, &mrn).await?.pop()
                    }
                    ("POST", []) => None,
                    _ => {
                        return Err(at(FhirError::invalid(
                            "request.url",
                            "not a Patient URL Enroll takes",
                        )));
                    }
                };
                let plan = plan_patient(
                    &state,
                    &staff,
                    &patient,
                    chart.as_ref().map(|c| c.mrn.as_str()),
                )
                .await
                .map_err(at)?;
                let known = by_mrn(&state, &staff, plan.practice.id, &plan.change.mrn).await?;
                if method == "POST" && !known.is_empty() {
                    return Err(at(FhirError::from(enroll_store::StoreError::DuplicateMrn)));
                }
                if let Some(full_url) = &entry.full_url {
                    patients.insert(
                        full_url.clone(),
                        (plan.practice.id, plan.change.mrn.clone()),
                    );
                }
                let created = known.is_empty();
                let reference = entry
                    .full_url
                    .clone()
                    .unwrap_or_else(|| format!("Bundle.entry[{n}]"));
                let (event, action) = if created {
                    (
                        IntakeEvent::Register {
                            patient: plan.change,
                            if_known: IfKnown::Refuse,
                        },
                        "patient.create",
                    )
                } else {
                    (IntakeEvent::Update(plan.change), "patient.update")
                };
                planned.push(Planned {
                    practice_id: plan.practice.id,
                    event,
                    source: staff.source(action, reference),
                    status: if created { "201 Created" } else { "200 OK" },
                });
            }
            (method @ ("POST" | "PUT"), "Encounter" | "Appointment", [first, rest @ ..])
                if *first == kind =>
            {
                let id_in_url = match (method, rest) {
                    ("POST", []) => None,
                    ("PUT", [id]) => Some(*id),
                    _ => {
                        return Err(at(FhirError::invalid(
                            "request.url",
                            "not a URL Enroll takes",
                        )));
                    }
                };
                let (practice_id, event, reference) =
                    visit_event(&state, &staff, &resource, id_in_url, &patients)
                        .await
                        .map_err(at)?;
                let action = if kind == "Encounter" {
                    "patient.encounter"
                } else {
                    "patient.appointment"
                };
                planned.push(Planned {
                    practice_id,
                    event,
                    source: staff.source(action, reference),
                    status: if method == "POST" {
                        "201 Created"
                    } else {
                        "200 OK"
                    },
                });
            }
            _ => {
                return Err(FhirError::new(
                    StatusCode::BAD_REQUEST,
                    "not-supported",
                    "a transaction takes POST or PUT of Patient, Encounter and Appointment",
                )
                .at(format!("Bundle.entry[{n}].request")));
            }
        }
    }
    let items: Vec<IntakeItem<'_>> = planned
        .iter()
        .map(|plan| IntakeItem {
            practice_id: plan.practice_id,
            event: &plan.event,
            source: &plan.source,
        })
        .collect();
    // All or nothing (FHIR's transaction): one store transaction.
    let saved = match state
        .store
        .apply_intake_batch(&items, state.clock.now())
        .await
        .map_err(FhirError::from)?
    {
        BatchOutcome::Applied(saved) => saved,
        BatchOutcome::Refused { index, problem } => {
            return Err(FhirError::unprocessable(
                format!("Bundle.entry[{index}].resource.identifier"),
                problem.reason,
            ));
        }
    };
    let mut answer = Bundle::new("transaction-response");
    for (plan, saved) in planned.iter().zip(&saved) {
        let location = match &plan.event {
            IntakeEvent::Encounter { .. } | IntakeEvent::Appointment { .. } => {
                plan.source.reference.clone()
            }
            _ => Some(format!("Patient/{}", saved.patient.id)),
        };
        answer.entry.push(BundleEntry {
            response: Some(BundleResponse {
                status: plan.status.into(),
                location,
            }),
            ..BundleEntry::default()
        });
    }
    Ok(fhir_json(StatusCode::OK, &answer))
}
