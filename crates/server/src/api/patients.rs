//! Patients: create, update, search, view, timeline, triggers, Enroll Now.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use enroll_core::{
    Demographics, IfKnown, IntakeEvent, PatientChange, Refusal, SearchTerms, StaffStatus, Trigger,
    parse_date,
};
use enroll_store::{
    Audit, AuditEntry, AuditTarget, Chart, EnrollOutcome, Invite, Patient, PatientSearch,
    SaveOutcome, Source, TimelineEntry, TriggerOutcome,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::json::{ApiPath, ApiQuery, JsonBody};
use crate::auth::{Admin, Staff};
use crate::error::problems_json;
use crate::{ApiError, AppState};

/// The longest idempotency key we keep; longer ones are refused, not cut.
const MAX_IDEMPOTENCY_KEY: usize = 200;

#[derive(Deserialize)]
pub(crate) struct NewPatient {
    practice_id: i64,
    mrn: String,
    #[serde(flatten)]
    demographics: Demographics,
}

/// A chart as staff see it: the record, the status and its words (R14),
/// the fields that are missing or invalid (R1, R11), the invites and the
/// timeline (`Store::chart`, shared with the staff pages).
#[derive(Serialize)]
pub(crate) struct PatientView {
    patient: Patient,
    status: StaffStatus,
    status_words: String,
    problems: Vec<Value>,
    invites: Vec<Invite>,
    timeline: Vec<TimelineEntry>,
}

impl From<Chart> for PatientView {
    fn from(chart: Chart) -> PatientView {
        PatientView {
            status_words: chart.status.words(),
            problems: problems_json(&chart.problems),
            patient: chart.patient,
            status: chart.status,
            invites: chart.invites,
            timeline: chart.timeline,
        }
    }
}

fn source(staff: &Staff) -> Source {
    Source::new("api", Some(&staff.0.username))
}

pub(crate) async fn create(
    State(state): State<AppState>,
    staff: Staff,
    JsonBody(new): JsonBody<NewPatient>,
) -> Result<(StatusCode, Json<SaveOutcome>), ApiError> {
    let mrn = new.mrn.trim();
    if mrn.is_empty() {
        return Err(ApiError::BadRequest("mrn must not be blank".into()));
    }
    if !staff.0.scope.allows(new.practice_id) {
        return Err(ApiError::NotFound("practice"));
    }
    super::practice_or_404(&state, new.practice_id).await?;
    let now = state.clock.now();
    // The whole record, as a registration that a known MRN refuses (409).
    let event = IntakeEvent::Register {
        patient: PatientChange::replacing(mrn, &new.demographics),
        if_known: IfKnown::Refuse,
    };
    let outcome = state
        .store
        .apply_intake(
            new.practice_id,
            &event,
            &source(&staff).audited("patient.create"),
            now,
        )
        .await?
        .into_saved()?;
    Ok((StatusCode::CREATED, Json(outcome)))
}

pub(crate) async fn update(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
    JsonBody(demographics): JsonBody<Demographics>,
) -> Result<Json<SaveOutcome>, ApiError> {
    let patient = scoped(&state, &staff, id).await?;
    let now = state.clock.now();
    // PUT replaces the record: a field not given is cleared. Addressed by
    // the chart's MRN, so a chart merged away updates the survivor.
    let event = IntakeEvent::Update(PatientChange::replacing(&patient.mrn, &demographics));
    let outcome = state
        .store
        .apply_intake(
            patient.practice_id,
            &event,
            &source(&staff).audited("patient.update"),
            now,
        )
        .await?
        .into_saved()?;
    Ok(Json(outcome))
}

pub(crate) async fn show(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<PatientView>, ApiError> {
    scoped(&state, &staff, id).await?;
    let now = state.clock.now();
    let chart = state
        .store
        .chart(id, now)
        .await?
        .ok_or(ApiError::NotFound("patient"))?;
    state
        .store
        .audit(
            &Audit::new(&staff.0.username, "patient.view", AuditTarget::Patient(id)),
            now,
        )
        .await?;
    Ok(Json(chart.into()))
}

/// The search of the JSON API: `q` as the staff search box understands it,
/// or the structured `name`, `dob`, `mrn`; within the caller's practices.
#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    q: Option<String>,
    name: Option<String>,
    dob: Option<String>,
    mrn: Option<String>,
    practice_id: Option<i64>,
    limit: Option<i64>,
}

impl SearchQuery {
    fn terms(&self) -> Result<SearchTerms, ApiError> {
        if let Some(q) = &self.q {
            return Ok(SearchTerms::parse(q));
        }
        let dob = match self.dob.as_deref() {
            Some(raw) => Some(parse_date(raw.trim()).ok_or_else(|| {
                ApiError::BadRequest("dob must be a date such as 1990-07-04 or 07/04/1990".into())
            })?),
            None => None,
        };
        Ok(SearchTerms {
            name: self
                .name
                .as_deref()
                .and_then(|n| SearchTerms::parse(n).name),
            dob,
            mrn: self.mrn.as_deref().map(|m| m.trim().to_string()),
            ..SearchTerms::default()
        })
    }
}

pub(crate) async fn search(
    State(state): State<AppState>,
    staff: Staff,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Json<Vec<Patient>>, ApiError> {
    let terms = query.terms()?;
    if terms.is_empty() {
        return Err(ApiError::BadRequest(
            "give q, or at least one of name, dob or mrn".into(),
        ));
    }
    let found = state
        .store
        .search_patients(&PatientSearch {
            terms,
            practice_id: query.practice_id,
            scope: staff.0.scope.clone(),
            limit: query.limit,
        })
        .await?;
    let looked_for = query.q.clone().unwrap_or_else(|| {
        [&query.name, &query.dob, &query.mrn]
            .into_iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    });
    let shown = AuditTarget::Search {
        terms: looked_for,
        ids: found.iter().map(|p| p.id).collect(),
    };
    state
        .store
        .audit(
            &Audit::new(&staff.0.username, "patient.search", shown),
            state.clock.now(),
        )
        .await?;
    Ok(Json(found))
}

/// The patient `id` if it is one of the caller's practices'; otherwise 404,
/// exactly as for a patient that does not exist.
async fn scoped(state: &AppState, staff: &Staff, id: i64) -> Result<Patient, ApiError> {
    state
        .store
        .patient(id)
        .await?
        .filter(|p| staff.0.scope.allows(p.practice_id))
        .ok_or(ApiError::NotFound("patient"))
}

pub(crate) async fn timeline(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Vec<TimelineEntry>>, ApiError> {
    audit_read(&state, &staff, id, "patient.timeline").await?;
    Ok(Json(state.store.patient_timeline(id).await?))
}

pub(crate) async fn invites(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Vec<Invite>>, ApiError> {
    audit_read(&state, &staff, id, "patient.invites").await?;
    Ok(Json(state.store.patient_invites(id).await?))
}

/// 404 for an unknown patient, else the audit line of a staff read.
async fn audit_read(
    state: &AppState,
    staff: &Staff,
    id: i64,
    action: &str,
) -> Result<(), ApiError> {
    scoped(state, staff, id).await?;
    state
        .store
        .audit(
            &Audit::new(&staff.0.username, action, AuditTarget::Patient(id)),
            state.clock.now(),
        )
        .await?;
    Ok(())
}

pub(crate) async fn new_encounter(
    state: State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
) -> Result<(StatusCode, Json<TriggerOutcome>), ApiError> {
    record(state, staff, id, Trigger::NewEncounter).await
}

pub(crate) async fn new_appointment(
    state: State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
) -> Result<(StatusCode, Json<TriggerOutcome>), ApiError> {
    record(state, staff, id, Trigger::NewAppointment).await
}

async fn record(
    State(state): State<AppState>,
    staff: Staff,
    id: i64,
    trigger: Trigger,
) -> Result<(StatusCode, Json<TriggerOutcome>), ApiError> {
    scoped(&state, &staff, id).await?;
    let now = state.clock.now();
    let outcome = state
        .store
        .record_trigger(id, trigger, &source(&staff).audited("patient.trigger"), now)
        .await?;
    Ok((StatusCode::CREATED, Json(outcome)))
}

#[derive(Serialize)]
struct Enrolled {
    invite: Invite,
    replayed: bool,
}

/// Enroll Now (R9). `Idempotency-Key` makes a retried request or a double
/// click one send: the repeat answers 200 with the first invite.
pub(crate) async fn enroll_now(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    scoped(&state, &staff, id).await?;
    let key = idempotency_key(&headers)?;
    let now = state.clock.now();
    let outcome = state
        .store
        .enroll_now(
            id,
            key.as_deref(),
            &source(&staff).audited("patient.enroll_now"),
            now,
        )
        .await?;
    Ok(match outcome {
        EnrollOutcome::Queued { invite, replayed } => {
            let status = if replayed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (status, Json(Enrolled { invite, replayed })).into_response()
        }
        EnrollOutcome::Refused { refusal } => {
            let retry_after = match &refusal {
                Refusal::CapReached { next_possible_at } => {
                    Some((next_possible_at.as_second() - now.as_second()).max(1))
                }
                _ => None,
            };
            let mut response = ApiError::Refused(refusal).into_response();
            if let Some(value) =
                retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
            {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            response
        }
        EnrollOutcome::MergedInto {
            surviving_patient_id,
        } => ApiError::MergedInto {
            surviving_patient_id,
        }
        .into_response(),
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("Idempotency-Key must be plain ASCII text".into()))?
        .trim();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters"
        )));
    }
    Ok(Some(key.to_string()))
}

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    patient_id: Option<i64>,
    limit: Option<i64>,
}

/// The audit log, for administrators; reading it is itself audited.
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>, ApiError> {
    state
        .store
        .audit(
            &Audit::new(
                &admin.username,
                "audit.read",
                q.patient_id.map_or(AuditTarget::None, AuditTarget::Patient),
            ),
            state.clock.now(),
        )
        .await?;
    Ok(Json(
        state
            .store
            .audit_log(q.patient_id, q.limit.unwrap_or(100).clamp(1, 1000))
            .await?,
    ))
}
