//! Inbound HL7 messages for staff and the administrator: the list with
//! filters, one message with its raw text and ACK, reprocessing after a fix,
//! and the MSH-4 facility to practice mapping.

use axum::Json;
use axum::extract::State;
use enroll_store::{Audit, AuditTarget};
use enroll_store::{MessageQuery, MessageStatus, facility_setting_key};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::dto::{MessageDto, MessageViewDto, list as dto_list};
use super::json::{ApiPath, ApiQuery, JsonBody};
use super::openapi::{BadRequest, Conflict, Forbidden, NotFound, Unauthorized};
use super::schemas::MessageStatusDoc;
use crate::auth::{Admin, Staff};
use crate::{ApiError, AppState};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// applied | error | rejected | duplicate
    #[param(value_type = Option<MessageStatusDoc>)]
    status: Option<String>,
    /// e.g. `ADT^A04`
    message_type: Option<String>,
    control_id: Option<String>,
    /// MSH-4
    facility: Option<String>,
    patient_id: Option<i64>,
    /// RFC 3339 instants.
    #[param(format = DateTime)]
    since: Option<String>,
    #[param(format = DateTime)]
    until: Option<String>,
    before_id: Option<i64>,
    limit: Option<i64>,
}

fn status_filter(text: &str) -> Result<MessageStatus, ApiError> {
    Ok(match text {
        "applied" => MessageStatus::Applied,
        "error" => MessageStatus::Error,
        "rejected" => MessageStatus::Rejected,
        "duplicate" => MessageStatus::Duplicate,
        other => {
            return Err(ApiError::BadRequest(format!(
                "status {other:?} is not one of applied, error, rejected, duplicate"
            )));
        }
    })
}

fn instant(name: &str, text: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    text.map(|t| {
        t.parse::<Timestamp>().map_err(|_| {
            ApiError::BadRequest(format!(
                "{name} must be an RFC 3339 instant such as 2026-11-27T09:00:00Z"
            ))
        })
    })
    .transpose()
}

/// The inbound HL7 messages, newest first, with filters (administrators).
#[utoipa::path(
    get,
    path = "/api/hl7/messages",
    tag = "hl7",
    params(ListQuery),
    responses(
        (status = 200, description = "The messages, without their text", body = Vec<MessageDto>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    staff: Admin,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<MessageDto>>, ApiError> {
    let query = MessageQuery {
        status: q.status.as_deref().map(status_filter).transpose()?,
        message_type: q.message_type,
        control_id: q.control_id,
        sending_facility: q.facility,
        patient_id: q.patient_id,
        since: instant("since", q.since.as_deref())?,
        until: instant("until", q.until.as_deref())?,
        before_id: q.before_id,
        limit: q.limit,
    };
    let messages = state.store.hl7_messages(&query).await?;
    state
        .store
        .audit(
            &Audit::new(
                &staff.0.username,
                "hl7.messages_list",
                query
                    .patient_id
                    .map_or(AuditTarget::None, AuditTarget::Patient),
            ),
            state.clock.now(),
        )
        .await?;
    Ok(Json(dto_list(messages)))
}

/// One message with its text and ACK (administrators); its viewing is
/// audited like a chart's.
#[utoipa::path(
    get,
    path = "/api/hl7/messages/{id}",
    tag = "hl7",
    params(("id" = i64, Path, description = "The message", example = 1)),
    responses(
        (status = 200, description = "The message", body = MessageViewDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    staff: Admin,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<MessageViewDto>, ApiError> {
    let mut message = state
        .store
        .hl7_message(id)
        .await?
        .ok_or(ApiError::NotFound("message"))?;
    // The raw message is health data: its viewing is audited like a chart's.
    state
        .store
        .audit(
            &Audit::new(
                &staff.0.username,
                "hl7.message_view",
                AuditTarget::Message {
                    id: message.id,
                    patient_id: message.patient_id,
                },
            ),
            state.clock.now(),
        )
        .await?;
    let raw = message.raw.take().unwrap_or_default();
    Ok(Json(MessageViewDto {
        raw_text: String::from_utf8_lossy(&raw).replace('\r', "\n"),
        message: message.into(),
    }))
}

/// Applies a stored message again, after a fix (administrators).
#[utoipa::path(
    post,
    path = "/api/hl7/messages/{id}/reprocess",
    tag = "hl7",
    params(("id" = i64, Path, description = "The message", example = 1)),
    responses(
        (status = 200, description = "The message as now processed", body = MessageDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
pub(crate) async fn reprocess(
    State(state): State<AppState>,
    staff: Admin,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<MessageDto>, ApiError> {
    // Audited by the store with the change (`hl7.message_reprocess`).
    let message = state.intake.reprocess(id, &staff.0.username).await?;
    Ok(Json(message.into()))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct FacilityMapping {
    practice_code: String,
}

/// An MSH-4 sending facility and the practice its messages go to.
#[derive(Serialize, ToSchema)]
pub(crate) struct FacilityMapped {
    facility: String,
    practice_code: String,
}

/// Maps an MSH-4 sending facility to a practice (administrators only).
#[utoipa::path(
    put,
    path = "/api/hl7/facilities/{facility}",
    tag = "hl7",
    params(("facility" = String, Path, description = "MSH-4 as sent")),
    request_body = FacilityMapping,
    responses(
        (status = 200, description = "Mapped", body = FacilityMapped),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    )
)]
pub(crate) async fn map_facility(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath(facility): ApiPath<String>,
    JsonBody(body): JsonBody<FacilityMapping>,
) -> Result<Json<FacilityMapped>, ApiError> {
    let code = body.practice_code.trim();
    let Some(practice) = state.store.practice_by_code(code).await? else {
        return Err(ApiError::BadRequest(format!(
            "there is no practice with the code {code:?}: create it first or use an existing code"
        )));
    };
    let audit = Audit::new(
        &admin.username,
        "hl7.facility_mapped",
        AuditTarget::Practice(practice.id),
    );
    let key = facility_setting_key(&facility);
    state
        .store
        .put_settings_audited(&[(&key, code)], &audit, state.clock.now())
        .await?;
    Ok(Json(FacilityMapped {
        facility,
        practice_code: code.to_string(),
    }))
}

/// Every facility mapping.
#[utoipa::path(
    get,
    path = "/api/hl7/facilities",
    tag = "hl7",
    responses(
        (status = 200, description = "The mappings", body = Vec<FacilityMapped>),
        (status = 401, response = Unauthorized),
    )
)]
pub(crate) async fn facilities(
    State(state): State<AppState>,
    _staff: Staff,
) -> Result<Json<Vec<FacilityMapped>>, ApiError> {
    let prefix = facility_setting_key("");
    let mappings = state
        .store
        .settings_with_prefix(&prefix)
        .await?
        .into_iter()
        .map(|(key, practice_code)| FacilityMapped {
            facility: key.trim_start_matches(&prefix).to_string(),
            practice_code,
        })
        .collect();
    Ok(Json(mappings))
}
