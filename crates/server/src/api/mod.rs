//! The JSON API under `/api`. Every route needs a staff token (but the
//! OpenAPI document, `/api/openapi.json`, and its page, `/api/docs`), and
//! every view or change of a patient is written to the audit log.

mod deliveries;
mod docs;
mod dto;
mod json;
mod messages;
pub(crate) mod openapi;
mod patients;
mod practices;
mod schemas;
mod templates;
mod webhooks;

use axum::Router;
use axum::routing::{get, post, put};

use enroll_store::Practice;

use crate::{ApiError, AppState};

/// The practice `id`, or 404.
pub(crate) async fn practice_or_404(state: &AppState, id: i64) -> Result<Practice, ApiError> {
    state
        .store
        .practice(id)
        .await?
        .ok_or(ApiError::NotFound("practice"))
}

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        // The document and its page need no token: they hold no data.
        .route("/openapi.json", get(openapi::document))
        .route("/docs", get(docs::page))
        .route("/practices", get(practices::list).post(practices::create))
        .route("/practices/{id}", get(practices::show))
        .route(
            "/practices/{id}/auto-invites",
            put(practices::set_auto_invites),
        )
        .route("/practices/{id}/schedule", put(practices::set_schedule))
        .route("/practices/{id}/phone", put(practices::set_phone))
        .route("/practices/{id}/channels", put(practices::set_channels))
        .route("/practices/{id}/templates/preview", get(templates::preview))
        .route(
            "/practices/{id}/templates/{language}/{kind}",
            put(templates::put),
        )
        .route(
            "/practices/{id}/webhooks",
            get(webhooks::list).post(webhooks::add),
        )
        .route(
            "/practices/{id}/webhooks/{endpoint}",
            axum::routing::delete(webhooks::remove),
        )
        .route(
            "/practices/{id}/webhooks/{endpoint}/enabled",
            put(webhooks::set_enabled),
        )
        .route(
            "/practices/{id}/webhooks/{endpoint}/ping",
            post(webhooks::ping),
        )
        .route(
            "/practices/{id}/webhooks/{endpoint}/deliveries",
            get(webhooks::deliveries),
        )
        .route("/patients", get(patients::search).post(patients::create))
        .route("/patients/{id}", get(patients::show).put(patients::update))
        .route("/patients/{id}/timeline", get(patients::timeline))
        .route("/patients/{id}/invites", get(patients::invites))
        .route("/patients/{id}/encounters", post(patients::new_encounter))
        .route(
            "/patients/{id}/appointments",
            post(patients::new_appointment),
        )
        .route("/patients/{id}/enroll", post(patients::enroll_now))
        .route("/audit", get(patients::audit_log))
        .route("/deliveries/failed", get(deliveries::failed))
        .route("/deliveries/resend", post(deliveries::resend))
        .route("/hl7/messages", get(messages::list))
        .route("/hl7/messages/{id}", get(messages::show))
        .route("/hl7/messages/{id}/reprocess", post(messages::reprocess))
        .route("/hl7/facilities", get(messages::facilities))
        .route("/hl7/facilities/{facility}", put(messages::map_facility))
}
