//! Invite templates per practice and language (R12): preview, and saving an
//! override (administrators only).

use axum::Json;
use axum::extract::State;
use enroll_notify::{Language, RenderedEmail};
use enroll_store::{Audit, AuditTarget};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::json::{ApiPath, ApiQuery, JsonBody};
use super::openapi::{BadRequest, Forbidden, NotFound, Unauthorized};
use super::schemas::{LanguageDoc, TemplateKindDoc};
use crate::auth::{Admin, Staff};
use crate::templates::{TemplatePart, sample_invite, save_audited};
use crate::{ApiError, AppState};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PreviewQuery {
    /// en (the default) or es
    #[param(value_type = Option<LanguageDoc>)]
    language: Option<String>,
    /// The sample patient's first name.
    first_name: Option<String>,
}

/// What a patient would receive: the email and the text message.
#[derive(Serialize, ToSchema)]
pub(crate) struct Preview {
    /// en or es
    language: &'static str,
    email: EmailPreview,
    /// The text message, or `None` with `sms_problem` saying why this
    /// practice's SMS template cannot make one (too long, for example).
    sms: Option<String>,
    sms_problem: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct EmailPreview {
    subject: String,
    text: String,
    html: String,
}

impl From<RenderedEmail> for EmailPreview {
    fn from(e: RenderedEmail) -> EmailPreview {
        EmailPreview {
            subject: e.subject,
            text: e.text,
            html: e.html,
        }
    }
}

/// What a patient of this practice would receive, with sample links.
#[utoipa::path(
    get,
    path = "/api/practices/{id}/templates/preview",
    tag = "templates",
    params(("id" = i64, Path, description = "The practice", example = 1), PreviewQuery),
    responses(
        (status = 200, description = "The rendered invite", body = Preview),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn preview(
    State(state): State<AppState>,
    staff: Staff,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> Result<Json<Preview>, ApiError> {
    if !staff.0.scope.allows(id) {
        return Err(ApiError::NotFound("practice"));
    }
    let practice = super::practice_or_404(&state, id).await?;
    let language = match q.language.as_deref() {
        None => Language::English,
        Some(raw) => Language::from_code(raw).ok_or_else(|| {
            ApiError::BadRequest(format!("unknown language {raw:?}: use en or es"))
        })?,
    };
    let context = sample_invite(&state.links, &practice.name, language, q.first_name);
    state.templates.refresh(&state.store).await?;
    let templates = state.templates.current();
    let email = templates
        .render_email(&practice.code, &context)
        .map_err(|e| ApiError::BadRequest(format!("the email template cannot be rendered: {e}")))?;
    let (sms, sms_problem) = match templates.render_sms(&practice.code, &context) {
        Ok(text) => (Some(text), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(Json(Preview {
        language: language.code(),
        email: email.into(),
        sms,
        sms_problem,
    }))
}

/// A template's source (minijinja); R12 checks what it may show.
#[derive(Deserialize, ToSchema)]
pub(crate) struct TemplateSource {
    source: String,
}

/// `PUT /api/practices/{id}/templates/{language}/{kind}` with `{"source": "..."}`:
/// saves a practice's override (administrators) and answers the preview.
#[utoipa::path(
    put,
    path = "/api/practices/{id}/templates/{language}/{kind}",
    tag = "templates",
    params(
        ("id" = i64, Path, description = "The practice", example = 1),
        ("language" = LanguageDoc, Path, description = "en or es"),
        ("kind" = TemplateKindDoc, Path, description = "The template part"),
    ),
    request_body = TemplateSource,
    responses(
        (status = 200, description = "Saved; the preview in that language", body = Preview),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
pub(crate) async fn put(
    State(state): State<AppState>,
    Admin(admin): Admin,
    ApiPath((id, language, kind)): ApiPath<(i64, String, String)>,
    JsonBody(body): JsonBody<TemplateSource>,
) -> Result<Json<Preview>, ApiError> {
    // An administrator of some practices changes only theirs.
    if !admin.scope.allows(id) {
        return Err(ApiError::NotFound("practice"));
    }
    let practice = super::practice_or_404(&state, id).await?;
    let part = TemplatePart {
        practice_code: &practice.code,
        language: &language,
        kind: &kind,
    };
    let audit = Audit::new(
        &admin.username,
        "practice.template",
        AuditTarget::Practice(id),
    );
    save_audited(
        &state.store,
        &state.templates,
        &part,
        &body.source,
        &audit,
        state.clock.now(),
    )
    .await?
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    preview(
        State(state),
        Staff(admin),
        ApiPath(id),
        ApiQuery(PreviewQuery {
            language: Some(language),
            first_name: None,
        }),
    )
    .await
}
