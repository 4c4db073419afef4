//! Staff authentication for the API: a bearer token per staff user, stored
//! only as a hash. Every handler that touches a patient takes `Staff`; one
//! that changes what only an administrator may change takes `Admin`, which
//! answers 403 with `why` for anyone else.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use enroll_store::StaffUser;

use crate::{ApiError, AppState};

/// The signed-in staff user.
pub struct Staff(pub StaffUser);

impl FromRequestParts<AppState> for Staff {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Staff, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let user = state
            .store
            .staff_by_token(token)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Staff(user))
    }
}

/// A signed-in administrator.
pub struct Admin(pub StaffUser);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admin, ApiError> {
        let Staff(user) = Staff::from_request_parts(parts, state).await?;
        if !user.role.is_admin() {
            return Err(ApiError::Forbidden(
                "only an administrator can do this: ask one of your practice's administrators",
            ));
        }
        Ok(Admin(user))
    }
}
