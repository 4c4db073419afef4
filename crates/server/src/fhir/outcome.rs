//! FHIR errors: an OperationOutcome whose issue names the element at fault
//! (`Patient.birthDate`), with the HTTP status FHIR's REST API gives.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use enroll_store::StoreError;

use super::resources::{Issue, OperationOutcome};
use crate::ApiError;

/// The media type of every FHIR answer.
pub const FHIR_JSON: &str = "application/fhir+json";

#[derive(Debug)]
pub struct FhirError {
    pub status: StatusCode,
    pub code: &'static str,
    pub diagnostics: String,
    pub expression: Option<String>,
}

impl FhirError {
    pub fn new(status: StatusCode, code: &'static str, diagnostics: impl Into<String>) -> Self {
        FhirError {
            status,
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    /// The element at fault, as a FHIRPath (`Patient.birthDate`).
    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression = Some(expression.into());
        self
    }

    /// 400: the resource is not valid FHIR (a wrong type, a bad date).
    pub fn invalid(expression: impl Into<String>, diagnostics: impl Into<String>) -> Self {
        FhirError::new(StatusCode::BAD_REQUEST, "invalid", diagnostics).at(expression)
    }

    /// 422: valid FHIR, but not what Enroll can take (no MRN, ...).
    pub fn unprocessable(expression: impl Into<String>, diagnostics: impl Into<String>) -> Self {
        FhirError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "business-rule",
            diagnostics,
        )
        .at(expression)
    }

    pub fn not_found(what: &str) -> Self {
        FhirError::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("{what} not found"),
        )
    }

    pub fn outcome(&self) -> OperationOutcome {
        OperationOutcome {
            resource_type: "OperationOutcome",
            issue: vec![Issue {
                severity: "error",
                code: self.code,
                diagnostics: self.diagnostics.clone(),
                expression: self.expression.iter().cloned().collect(),
            }],
        }
    }
}

/// A FHIR answer: `body` as `application/fhir+json` with `status`.
pub fn fhir_json(status: StatusCode, body: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a FHIR answer could not be written");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        fhir_json(self.status, &self.outcome())
    }
}

impl From<ApiError> for FhirError {
    fn from(e: ApiError) -> FhirError {
        match e {
            ApiError::Unauthorized => {
                FhirError::new(StatusCode::UNAUTHORIZED, "login", e.to_string())
            }
            ApiError::Forbidden(m) => FhirError::new(StatusCode::FORBIDDEN, "forbidden", m),
            ApiError::NotFound(what) => FhirError::not_found(what),
            ApiError::BadRequest(m) => FhirError::new(StatusCode::BAD_REQUEST, "invalid", m),
            ApiError::Conflict { message, .. } => {
                FhirError::new(StatusCode::CONFLICT, "conflict", message)
            }
            ApiError::Internal(cause) => {
                // Logged without the request: no PHI in logs.
                tracing::error!(error = %cause, "FHIR request failed");
                FhirError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "exception",
                    "something went wrong on our side; the error was logged",
                )
            }
            other => FhirError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "business-rule",
                other.to_string(),
            ),
        }
    }
}

impl From<StoreError> for FhirError {
    fn from(e: StoreError) -> FhirError {
        match e {
            StoreError::DuplicateMrn => FhirError::new(
                StatusCode::CONFLICT,
                "duplicate",
                "a patient with this MRN already exists in the practice: update it (PUT), \
                 or create with If-None-Exist",
            )
            .at("Patient.identifier"),
            other => ApiError::from(other).into(),
        }
    }
}
