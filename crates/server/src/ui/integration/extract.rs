//! The Integration Tool's requests as extractors: the signed-in
//! administrator and the practice of the path, with what else a handler
//! takes (its query, or its form and the form's CSRF value). Each handler
//! used to begin with the same lines; the checks now live here once.
//!
//! The order is the one those handlers had, so that a refused request is
//! refused for the same reason as before: the session, the path's id, the
//! query or form, and only then the practice (see [`practice_for_admin`])
//! and the CSRF value.

use std::ops::Deref;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use enroll_store::Practice;

use super::super::session::SignedIn;
use super::practice_for_admin;
use crate::AppState;

/// A page of the tool: `/admin/practices/{id}/...` opened by one of its
/// administrators, and `T` (a `Query`, or `()` for nothing more).
pub(crate) struct AdminPractice<T = ()>(pub(crate) SignedIn, pub(crate) Practice, pub(crate) T);

impl<T> FromRequestParts<AppState> for AdminPractice<T>
where
    T: FromRequestParts<AppState> + Send,
    T::Rejection: IntoResponse,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let (signed_in, id) = signed_in_and_id(parts, state).await?;
        let more = T::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let practice = practice_for_admin(state, &signed_in, id).await?;
        Ok(AdminPractice(signed_in, practice, more))
    }
}

/// A form of the tool that changes something: [`AdminPractice`] with the
/// form `F` (an `axum::Form` or an `axum_extra` one), which must carry this
/// session's CSRF value.
pub(crate) struct AdminForm<F>(pub(crate) SignedIn, pub(crate) Practice, pub(crate) F);

/// A form that carries the CSRF value of the session that showed it.
pub(crate) trait CsrfForm {
    fn csrf(&self) -> &str;
}

impl<F> FromRequest<AppState> for AdminForm<F>
where
    F: FromRequest<AppState> + Deref + Send,
    F::Target: CsrfForm,
    F::Rejection: IntoResponse,
{
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let (signed_in, id) = signed_in_and_id(&mut parts, state).await?;
        let form = F::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let practice = practice_for_admin(state, &signed_in, id).await?;
        signed_in
            .check_csrf(form.csrf())
            .map_err(IntoResponse::into_response)?;
        Ok(AdminForm(signed_in, practice, form))
    }
}

/// The session (or the way to the sign-in page) and the practice id of
/// the path (or the path's 400).
async fn signed_in_and_id(
    parts: &mut Parts,
    state: &AppState,
) -> Result<(SignedIn, i64), Response> {
    let signed_in = SignedIn::from_request_parts(parts, state).await?;
    let Path(id) = Path::<i64>::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((signed_in, id))
}

/// [`CsrfForm`] for forms whose CSRF value is their `csrf` field: all of
/// the tool's (a trait implemented for many types wants a macro).
macro_rules! csrf_field {
    ($($form:ty),+) => {
        $(impl $crate::ui::integration::extract::CsrfForm for $form {
            fn csrf(&self) -> &str {
                &self.csrf
            }
        })+
    };
}
pub(crate) use csrf_field;
