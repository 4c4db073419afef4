//! Practices: the schedule and the auto-invite switch (the Integration
//! Tool's settings; its web page comes later).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use enroll_core::{E164Phone, InvalidPracticeCode, PracticeCode, Schedule, ValidSchedule};
use enroll_store::{Audit, AuditTarget};
use enroll_store::{Practice, PracticeChange, StoreError};
use jiff::civil::Date;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::dto::{ChannelsDto, NewPracticeRequest, PracticeDto, list as dto_list};
use super::json::{ApiPath, JsonBody};
use super::openapi::{BadRequest, Conflict, Forbidden, InvalidFields, NotFound, Unauthorized};
use super::schemas::ScheduleDoc;
use crate::auth::{Admin, Staff};
use crate::{ApiError, AppState};

/// The practices the caller works for.
#[utoipa::path(
    get,
    path = "/api/practices",
    tag = "practices",
    responses(
        (status = 200, description = "The caller's practices", body = Vec<PracticeDto>),
        (status = 401, response = Unauthorized),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    staff: Staff,
) -> Result<Json<Vec<PracticeDto>>, ApiError> {
    let mut practices = state.store.practices().await?;
    practices.retain(|p| staff.0.scope.allows(p.id));
    Ok(Json(dto_list(practices)))
}

/// One practice, with its schedule, switches and channels.
#[utoipa::path(
    get,
    path = "/api/practices/{id}",
    tag = "practices",
    params(("id" = i64, Path, description = "The practice", example = 1)),
    responses(
        (status = 200, description = "The practice", body = PracticeDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<PracticeDto>, ApiError> {
    if !staff.0.scope.allows(id) {
        return Err(ApiError::NotFound("practice"));
    }
    Ok(Json(super::practice_or_404(&state, id).await?.into()))
}

/// Adds a practice (administrators); auto invites start off (R3).
#[utoipa::path(
    post,
    path = "/api/practices",
    tag = "practices",
    request_body = NewPracticeRequest,
    responses(
        (status = 201, description = "Created", body = PracticeDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 422, response = InvalidFields),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    staff: Admin,
    JsonBody(new): JsonBody<NewPracticeRequest>,
) -> Response {
    if new.code.trim().is_empty() || new.name.trim().is_empty() {
        return ApiError::BadRequest("a practice needs a non-blank code and name".into())
            .into_response();
    }
    if let Err(invalid) = PracticeCode::parse(&new.code) {
        return invalid_code(&invalid);
    }
    create_checked(state, staff, new).await.into_response()
}

/// The create-practice request whose code is valid.
async fn create_checked(
    state: AppState,
    staff: Admin,
    new: NewPracticeRequest,
) -> Result<(StatusCode, Json<PracticeDto>), ApiError> {
    check_schedule(&new.schedule)?;
    let new = new.into();
    // Audited (`practice.create`) by the store with the insert.
    let practice = state
        .store
        .create_practice(&new, &staff.0.username, state.clock.now())
        .await?;
    Ok((StatusCode::CREATED, Json(practice.into())))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct PracticePhone {
    /// Any common way of writing it ("(617) 555-0100", "+1 617 555 0100");
    /// null clears it.
    #[schema(example = "(617) 555-0100")]
    phone: Option<String>,
}

/// The number patients are told to call when their link no longer works.
#[utoipa::path(
    put,
    path = "/api/practices/{id}/phone",
    tag = "practices",
    params(("id" = i64, Path, description = "The practice", example = 1)),
    request_body = PracticePhone,
    responses(
        (status = 200, description = "The practice as changed", body = PracticeDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn set_phone(
    State(state): State<AppState>,
    staff: Admin,
    ApiPath(id): ApiPath<i64>,
    JsonBody(body): JsonBody<PracticePhone>,
) -> Result<Json<PracticeDto>, ApiError> {
    in_scope(&staff, id)?;
    let phone = match body.phone.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => Some(E164Phone::parse(raw).map_err(|_| {
            ApiError::BadRequest(format!(
                "phone: {raw:?} is not a phone number; write it with its area code, \
                 for example (617) 555-0100 or +44 20 7183 8750"
            ))
        })?),
    };
    let audit = Audit::new(
        &staff.0.username,
        "practice.phone",
        AuditTarget::Practice(id),
    );
    let practice = state
        .store
        .change_practice(
            id,
            PracticeChange::Phone(phone.as_ref()),
            |_| audit,
            state.clock.now(),
        )
        .await?;
    Ok(Json(practice.into()))
}

/// `PUT /api/practices/{id}/channels` with `{"email": true, "sms": false}`:
/// 400 in words when both are off.
#[utoipa::path(
    put,
    path = "/api/practices/{id}/channels",
    tag = "practices",
    params(("id" = i64, Path, description = "The practice", example = 1)),
    request_body = ChannelsDto,
    responses(
        (status = 200, description = "The practice as changed", body = PracticeDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn set_channels(
    State(state): State<AppState>,
    staff: Admin,
    ApiPath(id): ApiPath<i64>,
    JsonBody(channels): JsonBody<ChannelsDto>,
) -> Result<Json<PracticeDto>, ApiError> {
    in_scope(&staff, id)?;
    let before = super::practice_or_404(&state, id).await?.channels;
    let audit = |practice: &Practice| {
        let detail =
            json!({ "practice": practice.code, "before": before, "after": practice.channels });
        Audit::new(
            &staff.0.username,
            "practice.channels",
            AuditTarget::Practice(id),
        )
        .with_detail(detail.to_string())
    };
    let change = PracticeChange::Channels(channels.into());
    let practice = match state
        .store
        .change_practice(id, change, audit, state.clock.now())
        .await
    {
        Err(StoreError::Invalid(why)) => {
            return Err(ApiError::BadRequest(format!("channels: {why}")));
        }
        other => other?,
    };
    Ok(Json(practice.into()))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct AutoInvites {
    on: bool,
    /// YYYY-MM-DD
    #[schema(value_type = Option<String>, format = Date)]
    go_live_date: Option<Date>,
}

/// R3: turning auto invites on does not invite the backlog.
#[utoipa::path(
    put,
    path = "/api/practices/{id}/auto-invites",
    tag = "practices",
    params(("id" = i64, Path, description = "The practice", example = 1)),
    request_body = AutoInvites,
    responses(
        (status = 200, description = "The practice as changed", body = PracticeDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn set_auto_invites(
    State(state): State<AppState>,
    staff: Admin,
    ApiPath(id): ApiPath<i64>,
    JsonBody(body): JsonBody<AutoInvites>,
) -> Result<Json<PracticeDto>, ApiError> {
    in_scope(&staff, id)?;
    let action = if body.on {
        "practice.auto_invites_on"
    } else {
        "practice.auto_invites_off"
    };
    let audit = Audit::new(&staff.0.username, action, AuditTarget::Practice(id));
    let change = PracticeChange::AutoInvites {
        on: body.on,
        go_live: body.go_live_date,
    };
    let practice = state
        .store
        .change_practice(id, change, |_| audit, state.clock.now())
        .await?;
    Ok(Json(practice.into()))
}

/// The Auto Invite Schedule (R5): weekly windows in the practice's time
/// zone and closed dates.
#[utoipa::path(
    put,
    path = "/api/practices/{id}/schedule",
    tag = "practices",
    params(("id" = i64, Path, description = "The practice", example = 1)),
    request_body = ScheduleDoc,
    responses(
        (status = 200, description = "The practice as changed", body = PracticeDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn set_schedule(
    State(state): State<AppState>,
    staff: Admin,
    ApiPath(id): ApiPath<i64>,
    JsonBody(schedule): JsonBody<Schedule>,
) -> Result<Json<PracticeDto>, ApiError> {
    in_scope(&staff, id)?;
    let schedule = check_schedule(&schedule)?;
    let audit = Audit::new(
        &staff.0.username,
        "practice.schedule",
        AuditTarget::Practice(id),
    );
    let practice = state
        .store
        .change_practice(
            id,
            PracticeChange::Schedule(&schedule),
            |_| audit,
            state.clock.now(),
        )
        .await?;
    Ok(Json(practice.into()))
}

/// 422 in the shape of every invalid-field answer (`invalid_fields` with
/// `problems: [{field, problem, message}]`), naming the field `code`. The
/// patient fields' `ApiError::InvalidFields` cannot name a practice's.
/// An administrator of some practices changes only theirs (404 for the
/// others, as for a practice that does not exist).
fn in_scope(admin: &Admin, practice_id: i64) -> Result<(), ApiError> {
    if admin.0.scope.allows(practice_id) {
        Ok(())
    } else {
        Err(ApiError::NotFound("practice"))
    }
}

fn invalid_code(invalid: &InvalidPracticeCode) -> Response {
    let message = invalid.to_string();
    let problem = json!({
        "field": "code",
        "problem": { "reason": "invalid", "detail": invalid.rule() },
        "message": message,
    });
    let body = json!({ "code": "invalid_fields", "message": message, "problems": [problem] });
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

fn check_schedule(schedule: &Schedule) -> Result<ValidSchedule, ApiError> {
    schedule
        .validate()
        .map_err(|e| ApiError::BadRequest(format!("schedule: {e}")))
}
