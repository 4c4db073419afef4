//! A practice's webhook endpoints (administrators only, each change
//! audited): list, add (the secret shown once), turn on or off, remove,
//! send a `webhook.ping`, and the endpoint's last deliveries.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use enroll_core::WebhookEventType;
use enroll_store::{NewWebhookEndpoint, Practice, WebhookEndpoint};
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::dto::{
    NewWebhookEndpointDto, PingQueued, WebhookDeliveryDto, WebhookEndpointDto, list as dto_list,
};
use super::json::{ApiPath, ApiQuery, JsonBody};
use super::openapi::{BadRequest, Conflict, Forbidden, InvalidFields, NotFound, Unauthorized};
use crate::auth::Admin;
use crate::{ApiError, AppState};

/// Bytes of a generated secret (shown as 64 hex characters).
const GENERATED_SECRET_BYTES: usize = 32;
/// A secret an administrator gives must be at least this long: it is the
/// only thing that proves a request came from Enroll.
const MIN_SECRET_CHARS: usize = 24;
const MAX_SECRET_CHARS: usize = 256;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewEndpoint {
    /// https (or http to this machine) URL that receives the events.
    url: String,
    /// Event types; none: every subscribable one.
    events: Option<Vec<String>>,
    /// 24 to 256 printable ASCII characters; none: generated here.
    secret: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Enabled {
    enabled: bool,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveriesQuery {
    /// 1 to 500; 50 unless given.
    limit: Option<i64>,
}

/// The practice's webhook endpoints (administrators).
#[utoipa::path(
    get,
    path = "/api/practices/{id}/webhooks",
    tag = "webhooks",
    params(("id" = i64, Path, description = "The practice", example = 1)),
    responses(
        (status = 200, description = "The endpoints", body = Vec<WebhookEndpointDto>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(practice_id): ApiPath<i64>,
) -> Result<Json<Vec<WebhookEndpointDto>>, ApiError> {
    practice_in_scope(&state, &admin, practice_id).await?;
    Ok(Json(dto_list(
        state.store.webhook_endpoints(practice_id).await?,
    )))
}

/// 201 with the endpoint and its secret, which is never shown again.
#[utoipa::path(
    post,
    path = "/api/practices/{id}/webhooks",
    tag = "webhooks",
    params(("id" = i64, Path, description = "The practice", example = 1)),
    request_body = NewEndpoint,
    responses(
        (status = 201, description = "Added; the secret is shown this once", body = NewWebhookEndpointDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 422, response = InvalidFields),
    )
)]
pub(crate) async fn add(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(practice_id): ApiPath<i64>,
    JsonBody(new): JsonBody<NewEndpoint>,
) -> Result<Response, ApiError> {
    practice_in_scope(&state, &admin, practice_id).await?;
    let url = match enroll_notify::check_webhook_url(&new.url) {
        Ok(_) => new.url.trim().to_string(),
        Err(words) => return Ok(invalid("url", &words)),
    };
    let events = match enroll_core::parse_subscriptions(new.events.as_deref()) {
        Ok(events) => events,
        Err(words) => return Ok(invalid("events", &words)),
    };
    let secret = match new.secret {
        Some(given) => match check_secret(&given) {
            Ok(()) => given,
            Err(words) => return Ok(invalid("secret", &words)),
        },
        None => crate::random_secret(GENERATED_SECRET_BYTES),
    };
    let now = state.clock.now();
    let endpoint = state
        .store
        .add_webhook_endpoint(
            &NewWebhookEndpoint {
                practice_id,
                url: &url,
                secret: &secret,
                events: &events,
                created_by: &admin.0.username,
            },
            now,
        )
        .await?;
    let body = NewWebhookEndpointDto {
        endpoint: endpoint.into(),
        secret,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Turns the endpoint on or off (administrators).
#[utoipa::path(
    put,
    path = "/api/practices/{id}/webhooks/{endpoint}/enabled",
    tag = "webhooks",
    params(
        ("id" = i64, Path, description = "The practice", example = 1),
        ("endpoint" = i64, Path, description = "The endpoint"),
    ),
    request_body = Enabled,
    responses(
        (status = 200, description = "The endpoint as changed", body = WebhookEndpointDto),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn set_enabled(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((practice_id, id)): ApiPath<(i64, i64)>,
    JsonBody(body): JsonBody<Enabled>,
) -> Result<Json<WebhookEndpointDto>, ApiError> {
    practice_in_scope(&state, &admin, practice_id).await?;
    let endpoint = state
        .store
        .set_webhook_endpoint_enabled(
            practice_id,
            id,
            body.enabled,
            &admin.0.username,
            state.clock.now(),
        )
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))?;
    Ok(Json(endpoint.into()))
}

/// 204; the endpoint's queued events are not sent.
#[utoipa::path(
    delete,
    path = "/api/practices/{id}/webhooks/{endpoint}",
    tag = "webhooks",
    params(
        ("id" = i64, Path, description = "The practice", example = 1),
        ("endpoint" = i64, Path, description = "The endpoint"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn remove(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((practice_id, id)): ApiPath<(i64, i64)>,
) -> Result<StatusCode, ApiError> {
    practice_in_scope(&state, &admin, practice_id).await?;
    state
        .store
        .remove_webhook_endpoint(practice_id, id, &admin.0.username, state.clock.now())
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))?;
    Ok(StatusCode::NO_CONTENT)
}

/// 202 with the ping's event id; the sender posts it as any event, and the
/// endpoint's deliveries show what the receiver answered.
#[utoipa::path(
    post,
    path = "/api/practices/{id}/webhooks/{endpoint}/ping",
    tag = "webhooks",
    params(
        ("id" = i64, Path, description = "The practice", example = 1),
        ("endpoint" = i64, Path, description = "The endpoint"),
    ),
    responses(
        (status = 202, description = "Queued", body = PingQueued),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
pub(crate) async fn ping(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((practice_id, id)): ApiPath<(i64, i64)>,
) -> Result<(StatusCode, Json<PingQueued>), ApiError> {
    let practice = practice_in_scope(&state, &admin, practice_id).await?;
    let endpoint = endpoint_or_404(&state, practice_id, id).await?;
    if !endpoint.enabled {
        return Err(ApiError::Conflict {
            code: "webhook_disabled",
            message: "this endpoint is turned off, so nothing is sent to it: turn it on first"
                .into(),
        });
    }
    let event_id = state
        .store
        .queue_webhook_ping(
            &endpoint,
            &practice.code,
            &admin.0.username,
            state.clock.now(),
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(PingQueued {
            event_id,
            event_type: WebhookEventType::Ping.key(),
        }),
    ))
}

/// The endpoint's most recent deliveries (newest first, 50 unless
/// `?limit=` says otherwise, at most 500), without their bodies.
#[utoipa::path(
    get,
    path = "/api/practices/{id}/webhooks/{endpoint}/deliveries",
    tag = "webhooks",
    params(
        ("id" = i64, Path, description = "The practice", example = 1),
        ("endpoint" = i64, Path, description = "The endpoint"),
        DeliveriesQuery,
    ),
    responses(
        (status = 200, description = "The deliveries, newest first", body = Vec<WebhookDeliveryDto>),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn deliveries(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath((practice_id, id)): ApiPath<(i64, i64)>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Vec<WebhookDeliveryDto>>, ApiError> {
    practice_in_scope(&state, &admin, practice_id).await?;
    let endpoint = endpoint_or_404(&state, practice_id, id).await?;
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    Ok(Json(dto_list(
        state.store.webhook_deliveries(endpoint.id, limit).await?,
    )))
}

/// The practice, when the administrator administers it (404 otherwise, as
/// for a practice that does not exist).
async fn practice_in_scope(
    state: &AppState,
    admin: &Admin,
    practice_id: i64,
) -> Result<Practice, ApiError> {
    if !admin.0.scope.allows(practice_id) {
        return Err(ApiError::NotFound("practice"));
    }
    super::practice_or_404(state, practice_id).await
}

async fn endpoint_or_404(
    state: &AppState,
    practice_id: i64,
    id: i64,
) -> Result<WebhookEndpoint, ApiError> {
    state
        .store
        .webhook_endpoint(practice_id, id)
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))
}

fn check_secret(secret: &str) -> Result<(), String> {
    let chars = secret.chars().count();
    if !(MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&chars) {
        return Err(format!(
            "the secret must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters long; \
             leave it out and Enroll makes a random one"
        ));
    }
    if !secret.chars().all(|c| c.is_ascii_graphic()) {
        return Err("the secret must be printable ASCII without spaces".into());
    }
    Ok(())
}

/// 422 in the shape of every invalid-field answer, naming `field`.
fn invalid(field: &str, message: &str) -> Response {
    let problem = json!({
        "field": field,
        "problem": { "reason": "invalid" },
        "message": message,
    });
    let body = json!({ "code": "invalid_fields", "message": message, "problems": [problem] });
    (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_secret_is_long_enough_and_printable() {
        assert!(check_secret(&"x".repeat(24)).is_ok());
        assert!(check_secret("short").is_err());
        assert!(check_secret(&format!("{} y", "x".repeat(30))).is_err());
    }
}
