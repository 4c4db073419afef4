//! Admin pages: staff users (add, disable, reset password, role and
//! practices) and the audit log (reading it is itself audited).

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use enroll_core::Role;
use enroll_store::AuditTarget;
use enroll_store::{NewStaffUser, StaffChange};
use minijinja::context;
use serde::Deserialize;
use serde_json::json;

use super::session::{Refused, SignedIn, random_secret};
use super::{internal, local_time, staff_page};
use crate::AppState;
use crate::password::hash_password;

/// An admin page for anyone else: 403 in words.
fn admins_only(signed_in: &SignedIn) -> Result<(), Refused> {
    if signed_in.user.role.is_admin() {
        Ok(())
    } else {
        Err(Refused(
            StatusCode::FORBIDDEN,
            "Only an administrator can open this page. Ask one of your practice's administrators.",
        ))
    }
}

/// A signed-in administrator, for the admin pages: anyone else signed in
/// gets [`admins_only`]'s 403 in words (and no one signed in, the sign-in
/// page).
pub(crate) struct SignedInAdmin(SignedIn);

impl FromRequestParts<AppState> for SignedInAdmin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let signed_in = SignedIn::from_request_parts(parts, state).await?;
        admins_only(&signed_in).map_err(IntoResponse::into_response)?;
        Ok(SignedInAdmin(signed_in))
    }
}

#[derive(Deserialize)]
pub(crate) struct UsersQuery {
    /// A password just generated, shown once.
    #[serde(default)]
    shown: Option<String>,
    notice: Option<String>,
}

pub(crate) async fn users(
    State(state): State<AppState>,
    SignedInAdmin(signed_in): SignedInAdmin,
    Query(q): Query<UsersQuery>,
) -> Response {
    users_page(
        &state,
        &signed_in,
        StatusCode::OK,
        q.shown.as_deref(),
        q.notice.as_deref(),
        None,
    )
    .await
}

async fn users_page(
    state: &AppState,
    signed_in: &SignedIn,
    status: StatusCode,
    shown: Option<&str>,
    notice: Option<&str>,
    error: Option<&str>,
) -> Response {
    let (users, practices) = match (
        state.store.staff_users().await,
        state.store.practices().await,
    ) {
        (Ok(u), Ok(p)) => (u, p),
        (Err(e), _) | (_, Err(e)) => return internal(e),
    };
    let practices: Vec<_> = practices
        .iter()
        .map(|p| json!({ "id": p.id, "code": p.code, "name": p.name }))
        .collect();
    let users: Vec<_> = users
        .iter()
        .map(|u| {
            json!({ "id": u.user.id, "username": u.user.username, "name": u.user.display_name,
                    "role": u.user.role.to_string(), "is_admin": u.user.role.is_admin(),
                    "disabled": u.disabled, "practices": u.practice_codes.join(", "),
                    "codes": u.practice_codes })
        })
        .collect();
    staff_page(
        status,
        "staff_users.html",
        signed_in,
        context! { users, practices, shown, notice, error },
    )
}

#[derive(Deserialize)]
pub(crate) struct NewUserForm {
    csrf: String,
    username: String,
    display_name: String,
    role: String,
    /// Practice ids, comma-separated (the form sends one field per box).
    #[serde(default)]
    practice: Vec<i64>,
}

pub(crate) async fn add_user(
    State(state): State<AppState>,
    SignedInAdmin(signed_in): SignedInAdmin,
    axum_extra::extract::Form(form): axum_extra::extract::Form<NewUserForm>,
) -> Response {
    if let Err(refused) = signed_in.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    let Some(role) = Role::from_name(&form.role) else {
        return users_page(
            &state,
            &signed_in,
            StatusCode::UNPROCESSABLE_ENTITY,
            None,
            None,
            Some("Role: choose front desk or administrator."),
        )
        .await;
    };
    let password = random_secret(9);
    let hash = match hash_password(&password) {
        Ok(hash) => hash,
        Err(e) => return internal(e),
    };
    let display_name = if form.display_name.trim().is_empty() {
        form.username.trim()
    } else {
        form.display_name.trim()
    };
    let added = state
        .store
        .add_staff_user(
            &NewStaffUser {
                username: form.username.trim(),
                display_name,
                role,
                password_hash: Some(&hash),
                token_hash: None,
                practice_ids: &form.practice,
            },
            &signed_in.user.username,
            state.clock.now(),
        )
        .await;
    match added {
        Ok(user) => {
            let notice = format!("Added {}. Their password (shown once):", user.username);
            users_page(
                &state,
                &signed_in,
                StatusCode::OK,
                Some(&password),
                Some(&notice),
                None,
            )
            .await
        }
        Err(e @ (enroll_store::StoreError::Conflict(_) | enroll_store::StoreError::Invalid(_))) => {
            users_page(
                &state,
                &signed_in,
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                None,
                Some(&e.to_string()),
            )
            .await
        }
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct ChangeForm {
    csrf: String,
    /// disable | enable | reset_password | make_admin | make_front_desk | practices
    action: String,
    #[serde(default)]
    practice: Vec<i64>,
}

pub(crate) async fn change_user(
    State(state): State<AppState>,
    SignedInAdmin(signed_in): SignedInAdmin,
    Path(id): Path<i64>,
    axum_extra::extract::Form(form): axum_extra::extract::Form<ChangeForm>,
) -> Response {
    if let Err(refused) = signed_in.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    let user = match state.store.staff_user(id).await {
        Ok(Some(user)) => user,
        Ok(None) => return (StatusCode::NOT_FOUND, "There is no such staff user.").into_response(),
        Err(e) => return internal(e),
    };
    // A reset's new password, shown once; the store gets only its hash.
    let shown = (form.action == "reset_password").then(|| random_secret(9));
    let hash = match shown.as_deref().map(hash_password).transpose() {
        Ok(hash) => hash.unwrap_or_default(),
        Err(e) => return internal(e),
    };
    let (change, what) = match form.action.as_str() {
        "disable" => (StaffChange::Disabled(true), "disabled"),
        "enable" => (StaffChange::Disabled(false), "enabled"),
        "make_admin" => (StaffChange::Role(Role::Admin), "made an administrator"),
        "make_front_desk" => (StaffChange::Role(Role::FrontDesk), "made front desk"),
        "practices" => (
            StaffChange::Practices(&form.practice),
            "given new practices",
        ),
        "reset_password" => (
            StaffChange::Password(&hash),
            "given a new password (shown once):",
        ),
        _ => return (StatusCode::BAD_REQUEST, "Unknown change.").into_response(),
    };
    let done = state
        .store
        .change_staff(id, change, &signed_in.user.username, state.clock.now())
        .await;
    match done {
        Ok(()) => {
            let notice = format!("{} was {what}", user.username);
            match shown {
                Some(password) => {
                    users_page(
                        &state,
                        &signed_in,
                        StatusCode::OK,
                        Some(&password),
                        Some(&notice),
                        None,
                    )
                    .await
                }
                None => {
                    let notice: String =
                        url::form_urlencoded::byte_serialize(notice.as_bytes()).collect();
                    Redirect::to(&format!("/admin/users?notice={notice}")).into_response()
                }
            }
        }
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
pub(crate) struct AuditQuery {
    patient_id: Option<i64>,
}

pub(crate) async fn audit_log(
    State(state): State<AppState>,
    SignedInAdmin(signed_in): SignedInAdmin,
    Query(q): Query<AuditQuery>,
) -> Response {
    let target = q.patient_id.map_or(AuditTarget::None, AuditTarget::Patient);
    if let Err(e) = signed_in
        .audit(&state, signed_in.audit_line("audit.read", target))
        .await
    {
        return internal(e);
    }
    let entries = match state.store.audit_log(q.patient_id, 200).await {
        Ok(entries) => entries,
        Err(e) => return internal(e),
    };
    let tz = jiff::tz::TimeZone::system();
    let entries: Vec<_> = entries
        .iter()
        .map(|e| {
            json!({ "at": local_time(e.at, &tz), "actor": e.actor, "action": e.action,
                    "patient_id": e.patient_id, "detail": e.detail })
        })
        .collect();
    staff_page(
        StatusCode::OK,
        "staff_audit.html",
        &signed_in,
        context! { entries, patient_id => q.patient_id },
    )
}
