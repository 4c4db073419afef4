//! Invite templates per practice and language (R12): preview, and saving an
//! override (administrators only).

use axum::Json;
use axum::extract::State;
use enroll_notify::{Language, RenderedEmail};
use enroll_store::{Audit, AuditTarget};
use serde::{Deserialize, Serialize};

use super::json::{ApiPath, ApiQuery, JsonBody};
use crate::auth::{Admin, Staff};
use crate::templates::{TemplatePart, sample_invite, save_audited};
use crate::{ApiError, AppState};

#[derive(Deserialize)]
pub(crate) struct PreviewQuery {
    language: Option<String>,
    first_name: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct Preview {
    language: &'static str,
    email: EmailPreview,
    /// The text message, or `None` with `sms_problem` saying why this
    /// practice's SMS template cannot make one (too long, for example).
    sms: Option<String>,
    sms_problem: Option<String>,
}

#[derive(Serialize)]
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

#[derive(Deserialize)]
pub(crate) struct TemplateSource {
    source: String,
}

/// `PUT /api/practices/{id}/templates/{language}/{kind}` with `{"source": "..."}`.
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
