//! Patients: create, update, search, view, timeline, triggers, Enroll Now.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use enroll_core::{
    Demographics, IfKnown, IntakeEvent, PatientChange, Refusal, SearchTerms, Trigger, parse_date,
};
use enroll_store::{Audit, AuditTarget, EnrollOutcome, Patient, PatientSearch, Source};
use serde::Deserialize;
use utoipa::IntoParams;

use super::dto::{
    AuditEntryDto, DemographicsDto, EnrolledDto, InviteDto, NewPatientRequest, PatientDto,
    PatientViewDto, SaveOutcomeDto, TimelineEntryDto, TriggerOutcomeDto, list,
};
use super::json::{ApiPath, ApiQuery, JsonBody};
use super::openapi::{
    BadRequest, CapReached, Conflict, Forbidden, InvalidFields, NotFound, Unauthorized,
};
use crate::auth::{Admin, Staff};
use crate::{ApiError, AppState};

/// The longest idempotency key we keep; longer ones are refused, not cut.
const MAX_IDEMPOTENCY_KEY: usize = 200;

fn source(staff: &Staff) -> Source {
    Source::new("api", Some(&staff.0.username))
}

/// Registers a patient: the whole record, and the chart-added trigger (R2).
#[utoipa::path(
    post,
    path = "/api/patients",
    tag = "patients",
    request_body = NewPatientRequest,
    responses(
        (status = 201, description = "Created, with the triggers' decisions", body = SaveOutcomeDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    staff: Staff,
    JsonBody(new): JsonBody<NewPatientRequest>,
) -> Result<(StatusCode, Json<SaveOutcomeDto>), ApiError> {
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
    let demographics = Demographics::from(new.demographics);
    let event = IntakeEvent::Register {
        patient: PatientChange::replacing(mrn, &demographics),
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
    Ok((StatusCode::CREATED, Json(outcome.into())))
}

/// Replaces the patient's demographics: a field not given is cleared.
#[utoipa::path(
    put,
    path = "/api/patients/{id}",
    tag = "patients",
    params(("id" = i64, Path, description = "The patient", example = 1)),
    request_body = DemographicsDto,
    responses(
        (status = 200, description = "Saved, with the triggers' decisions", body = SaveOutcomeDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
pub(crate) async fn update(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
    JsonBody(demographics): JsonBody<DemographicsDto>,
) -> Result<Json<SaveOutcomeDto>, ApiError> {
    let patient = scoped(&state, &staff, id).await?;
    let now = state.clock.now();
    // PUT replaces the record: a field not given is cleared. Addressed by
    // the chart's MRN, so a chart merged away updates the survivor.
    let demographics = Demographics::from(demographics);
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
    Ok(Json(outcome.into()))
}

/// The chart: record, status (R14), problems (R1), invites and timeline.
/// Audited.
#[utoipa::path(
    get,
    path = "/api/patients/{id}",
    tag = "patients",
    params(("id" = i64, Path, description = "The patient", example = 1)),
    responses(
        (status = 200, description = "The chart", body = PatientViewDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<PatientViewDto>, ApiError> {
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
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchQuery {
    /// What the staff search box understands: names ("smi jo", "Smith,
    /// John"), a date of birth, an MRN, a phone number or an email address.
    q: Option<String>,
    name: Option<String>,
    /// A date such as 1990-07-04 or 07/04/1990.
    #[param(format = Date)]
    dob: Option<String>,
    mrn: Option<String>,
    practice_id: Option<i64>,
    limit: Option<i64>,
}

impl SearchQuery {
    fn terms(&self) -> Result<SearchTerms, ApiError> {
        // A dob that is no date is refused even beside q, which is searched
        // instead: a typo there is never silently ignored.
        let dob = match self.dob.as_deref() {
            Some(raw) => Some(parse_date(raw.trim()).ok_or_else(|| {
                ApiError::BadRequest("dob must be a date such as 1990-07-04 or 07/04/1990".into())
            })?),
            None => None,
        };
        if let Some(q) = &self.q {
            return Ok(SearchTerms::parse(q));
        }
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

/// Searches the caller's practices' patients: give `q`, or at least one of
/// `name`, `dob`, `mrn`. Audited with the terms and the ids shown.
#[utoipa::path(
    get,
    path = "/api/patients",
    tag = "patients",
    params(SearchQuery),
    responses(
        (status = 200, description = "The patients found", body = Vec<PatientDto>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
    )
)]
pub(crate) async fn search(
    State(state): State<AppState>,
    staff: Staff,
    ApiQuery(query): ApiQuery<SearchQuery>,
) -> Result<Json<Vec<PatientDto>>, ApiError> {
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
    Ok(Json(list(found)))
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

/// The patient's timeline, oldest first. Audited.
#[utoipa::path(
    get,
    path = "/api/patients/{id}/timeline",
    tag = "patients",
    params(("id" = i64, Path, description = "The patient", example = 1)),
    responses(
        (status = 200, description = "The timeline", body = Vec<TimelineEntryDto>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn timeline(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Vec<TimelineEntryDto>>, ApiError> {
    audit_read(&state, &staff, id, "patient.timeline").await?;
    Ok(Json(list(state.store.patient_timeline(id).await?)))
}

/// The patient's invites, oldest first. Audited.
#[utoipa::path(
    get,
    path = "/api/patients/{id}/invites",
    tag = "patients",
    params(("id" = i64, Path, description = "The patient", example = 1)),
    responses(
        (status = 200, description = "The invites", body = Vec<InviteDto>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn invites(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<Vec<InviteDto>>, ApiError> {
    audit_read(&state, &staff, id, "patient.invites").await?;
    Ok(Json(list(state.store.patient_invites(id).await?)))
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

/// A new encounter: a trigger (R2); the answer says what it led to.
#[utoipa::path(
    post,
    path = "/api/patients/{id}/encounters",
    tag = "patients",
    params(("id" = i64, Path, description = "The patient", example = 1)),
    responses(
        (status = 201, description = "Recorded, with its decision", body = TriggerOutcomeDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn new_encounter(
    state: State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
) -> Result<(StatusCode, Json<TriggerOutcomeDto>), ApiError> {
    record(state, staff, id, Trigger::NewEncounter).await
}

/// A new appointment: a trigger (R2); the answer says what it led to.
#[utoipa::path(
    post,
    path = "/api/patients/{id}/appointments",
    tag = "patients",
    params(("id" = i64, Path, description = "The patient", example = 1)),
    responses(
        (status = 201, description = "Recorded, with its decision", body = TriggerOutcomeDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn new_appointment(
    state: State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
) -> Result<(StatusCode, Json<TriggerOutcomeDto>), ApiError> {
    record(state, staff, id, Trigger::NewAppointment).await
}

async fn record(
    State(state): State<AppState>,
    staff: Staff,
    id: i64,
    trigger: Trigger,
) -> Result<(StatusCode, Json<TriggerOutcomeDto>), ApiError> {
    scoped(&state, &staff, id).await?;
    let now = state.clock.now();
    let outcome = state
        .store
        .record_trigger(id, trigger, &source(&staff).audited("patient.trigger"), now)
        .await?;
    Ok((StatusCode::CREATED, Json(outcome.into())))
}

/// Enroll Now (R9). `Idempotency-Key` makes a retried request or a double
/// click one send: the repeat answers 200 with the first invite.
#[utoipa::path(
    post,
    path = "/api/patients/{id}/enroll",
    tag = "patients",
    params(
        ("id" = i64, Path, description = "The patient", example = 1),
        ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 200,
            description = "1 to 200 characters; a repeat with the same key sends nothing more"),
    ),
    responses(
        (status = 201, description = "An invite was queued", body = EnrolledDto),
        (status = 200, description = "A repeat of an earlier request with the same Idempotency-Key", body = EnrolledDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 422, response = InvalidFields),
        (status = 429, response = CapReached),
    )
)]
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
            let body = EnrolledDto {
                invite: invite.into(),
                replayed,
            };
            (status, Json(body)).into_response()
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditQuery {
    patient_id: Option<i64>,
    /// 1 to 1000; 100 unless given.
    limit: Option<i64>,
}

/// The audit log, for administrators; reading it is itself audited.
#[utoipa::path(
    get,
    path = "/api/audit",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "The newest lines first", body = Vec<AuditEntryDto>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    )
)]
pub(crate) async fn audit_log(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Vec<AuditEntryDto>>, ApiError> {
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
    Ok(Json(list(
        state
            .store
            .audit_log(q.patient_id, q.limit.unwrap_or(100).clamp(1, 1000))
            .await?,
    )))
}
