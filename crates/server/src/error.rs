//! One error type for the HTTP edge: each case maps to a status and a stable
//! JSON `code`; internal errors are logged with their cause and never shown.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use enroll_core::{FieldProblem, Refusal};
use enroll_store::StoreError;
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "sign in first: send the header `Authorization: Bearer <token>` (create a token with `enroll user add`)"
    )]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    #[error("some fields are missing or invalid")]
    InvalidFields {
        message: String,
        problems: Vec<FieldProblem>,
    },
    #[error("Enroll Now refused")]
    Refused(Refusal),
    /// Enroll Now on a chart an HL7 A40 merged away: 409 naming the
    /// survivor, in words and as `surviving_patient_id`.
    #[error("this chart was merged into patient {surviving_patient_id}")]
    MergedInto { surviving_patient_id: i64 },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(what) => ApiError::NotFound(what),
            StoreError::DuplicateMrn => ApiError::Conflict {
                code: "duplicate_mrn",
                message: "a patient with this MRN already exists in the practice: update that patient instead".into(),
            },
            StoreError::DuplicatePracticeCode => ApiError::Conflict {
                code: "duplicate_practice",
                message: "a practice with this code already exists".into(),
            },
            StoreError::Invalid(message) => ApiError::BadRequest(message),
            StoreError::Conflict(message) => ApiError::Conflict {
                code: "conflict",
                message: message.into(),
            },
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, String, Value) {
        match self {
            ApiError::Forbidden(m) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                (*m).to_string(),
                Value::Null,
            ),
            ApiError::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                m.clone(),
                Value::Null,
            ),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                self.to_string(),
                Value::Null,
            ),
            ApiError::NotFound(_) => (
                StatusCode::NOT_FOUND,
                "not_found",
                self.to_string(),
                Value::Null,
            ),
            ApiError::Conflict { code, message } => {
                (StatusCode::CONFLICT, code, message.clone(), Value::Null)
            }
            ApiError::InvalidFields { message, problems } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_fields",
                message.clone(),
                json!({ "problems": problems_json(problems) }),
            ),
            ApiError::Refused(refusal) => refusal_parts(refusal),
            ApiError::MergedInto {
                surviving_patient_id,
            } => (
                StatusCode::CONFLICT,
                "merged_into",
                format!(
                    "this chart was merged into patient {surviving_patient_id} (HL7 A40), \
                     which holds its invites: use Enroll Now on that chart"
                ),
                json!({ "surviving_patient_id": surviving_patient_id }),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "something went wrong on our side; the error was logged".into(),
                Value::Null,
            ),
        }
    }
}

/// R9 and R7 refusals: 422 missing fields, 409 already active (and other
/// states staff must change first), 429 cap reached with the next time.
fn refusal_parts(refusal: &Refusal) -> (StatusCode, &'static str, String, Value) {
    let message = refusal.message();
    match refusal {
        Refusal::MissingFields { problems } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_fields",
            message,
            json!({ "problems": problems_json(problems) }),
        ),
        Refusal::AlreadyActive => (StatusCode::CONFLICT, "already_active", message, Value::Null),
        Refusal::Deceased => (StatusCode::CONFLICT, "deceased", message, Value::Null),
        Refusal::PatientResponded { response } => (
            StatusCode::CONFLICT,
            "patient_responded",
            message,
            json!({ "response": response }),
        ),
        Refusal::OptedOut => (StatusCode::CONFLICT, "opted_out", message, Value::Null),
        Refusal::CapReached { next_possible_at } => (
            StatusCode::TOO_MANY_REQUESTS,
            "cap_reached",
            message,
            json!({ "next_possible_at": next_possible_at }),
        ),
    }
}

/// Problems as the API shows them: the field key, the reason, and words.
pub(crate) fn problems_json(problems: &[FieldProblem]) -> Vec<Value> {
    problems
        .iter()
        .map(|p| json!({ "field": p.field, "problem": p.problem, "message": p.message() }))
        .collect()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(cause) = &self {
            tracing::error!(error = %cause, "request failed");
        }
        let (status, code, message, details) = self.parts();
        let mut body = json!({ "code": code, "message": message });
        if let (Value::Object(extra), Some(obj)) = (details, body.as_object_mut()) {
            obj.extend(extra);
        }
        (status, Json(body)).into_response()
    }
}
