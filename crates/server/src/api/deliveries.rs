//! Failed deliveries for staff: the list, and sending again once the
//! address is fixed (R7: a permanent failure did not count toward the cap).

use axum::Json;
use axum::extract::State;
use enroll_store::{Audit, AuditTarget};
use enroll_store::{EnrollOutcome, Source};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::dto::{FailedDeliveryDto, list as dto_list};
use super::json::{ApiQuery, JsonBody};
use super::openapi::{BadRequest, NotFound, Unauthorized};
use crate::auth::Staff;
use crate::{ApiError, AppState};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// 1 to 1000; 200 unless given.
    limit: Option<i64>,
}

/// Deliveries that failed or wait for a retry. Audited.
#[utoipa::path(
    get,
    path = "/api/deliveries/failed",
    tag = "deliveries",
    params(ListQuery),
    responses(
        (status = 200, description = "The failed deliveries", body = Vec<FailedDeliveryDto>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
    )
)]
pub(crate) async fn failed(
    State(state): State<AppState>,
    staff: Staff,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<FailedDeliveryDto>>, ApiError> {
    let list = state
        .store
        .failed_deliveries(q.limit.unwrap_or(200).clamp(1, 1000))
        .await?;
    state
        .store
        .audit(
            &Audit::new(
                &staff.0.username,
                "deliveries.failed_list",
                AuditTarget::None,
            ),
            state.clock.now(),
        )
        .await?;
    Ok(Json(dto_list(list)))
}

#[derive(Deserialize, ToSchema)]
pub(crate) struct ResendRequest {
    /// 1 to 500 failed invites.
    #[schema(min_items = 1, max_items = 500)]
    invite_ids: Vec<i64>,
}

/// The answer for one invite of a resend.
#[derive(Serialize, ToSchema)]
pub(crate) struct Resent {
    invite_id: i64,
    /// "queued", "refused" or "not_failed"
    #[schema(value_type = String)]
    outcome: &'static str,
    new_invite_id: Option<i64>,
    message: Option<String>,
}

/// Sends again as an Enroll Now by the staff member, so every rule of R9
/// applies (the fixed address must now be valid, the cap must allow it).
/// The key `resend-<id>` makes a repeated request send nothing more.
#[utoipa::path(
    post,
    path = "/api/deliveries/resend",
    tag = "deliveries",
    request_body = ResendRequest,
    responses(
        (status = 200, description = "What became of each invite", body = Vec<Resent>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn resend(
    State(state): State<AppState>,
    staff: Staff,
    JsonBody(request): JsonBody<ResendRequest>,
) -> Result<Json<Vec<Resent>>, ApiError> {
    if request.invite_ids.is_empty() || request.invite_ids.len() > 500 {
        return Err(ApiError::BadRequest("give 1 to 500 invite_ids".into()));
    }
    let source = Source::new("api", Some(&staff.0.username)).audited("patient.resend_invite");
    let mut answers = Vec::with_capacity(request.invite_ids.len());
    for invite_id in request.invite_ids {
        let now = state.clock.now();
        let invite = state
            .store
            .invite_by_id(invite_id)
            .await?
            .ok_or(ApiError::NotFound("invite"))?;
        if invite.state != enroll_store::InviteState::Failed {
            answers.push(Resent {
                invite_id,
                outcome: "not_failed",
                new_invite_id: None,
                message: Some("only a failed invite can be sent again".into()),
            });
            continue;
        }
        let key = format!("resend-{invite_id}");
        let outcome = state
            .store
            .enroll_now(invite.patient_id, Some(&key), &source, now)
            .await?;
        answers.push(match outcome {
            EnrollOutcome::Queued { invite: new, .. } => Resent {
                invite_id,
                outcome: "queued",
                new_invite_id: Some(new.id),
                message: None,
            },
            EnrollOutcome::Refused { refusal } => Resent {
                invite_id,
                outcome: "refused",
                new_invite_id: None,
                message: Some(refusal.message()),
            },
            // An invite moves with a merge, so its patient is the survivor;
            // this answers a merge committed since the invite was read.
            EnrollOutcome::MergedInto {
                surviving_patient_id,
            } => Resent {
                invite_id,
                outcome: "refused",
                new_invite_id: None,
                message: Some(format!(
                    "the chart was merged into patient {surviving_patient_id}: send it from there"
                )),
            },
        });
    }
    Ok(Json(answers))
}
