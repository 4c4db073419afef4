//! Staff sign-in for the pages: argon2id passwords, a session cookie whose
//! hash is kept in the database (so every instance on one database accepts
//! it), CSRF on every state-changing request, automatic sign-out when idle,
//! a lockout per account and a throttle per IP address.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OriginalUri};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use enroll_store::{Audit, AuditTarget, Lockout, StaffSession, StaffUser, hash_token};
use jiff::SignedDuration;
use rand::RngCore;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::throttle::Throttle;

/// The session cookie's name. `__Host-` would pin it to https only; the
/// demo runs on plain http, so the prefix is not used.
pub(crate) const SESSION_COOKIE: &str = "enroll_session";

/// How the staff pages sign people in and out (the `[staff_ui]` table of
/// the configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct StaffUiConfig {
    /// Signed out after this many minutes without a request.
    pub idle_timeout_minutes: u32,
    /// Wrong passwords in a row that lock an account...
    pub max_failed_sign_ins: u32,
    /// ...for this many minutes.
    pub lockout_minutes: u32,
    /// Sign-in attempts one IP address may make per minute.
    pub sign_ins_per_minute_per_ip: u32,
}

impl Default for StaffUiConfig {
    fn default() -> StaffUiConfig {
        StaffUiConfig {
            idle_timeout_minutes: 15,
            max_failed_sign_ins: 5,
            lockout_minutes: 15,
            sign_ins_per_minute_per_ip: 10,
        }
    }
}

/// The staff pages' sign-in policy, built once from [`StaffUiConfig`].
pub struct StaffUi {
    pub(crate) idle: SignedDuration,
    pub(crate) lockout: Lockout,
    /// Cookies are marked Secure when patients and staff reach us by https.
    pub(crate) secure_cookies: bool,
    throttle: Throttle,
}

impl StaffUi {
    pub fn new(config: &StaffUiConfig, secure_cookies: bool) -> Arc<StaffUi> {
        Arc::new(StaffUi {
            idle: SignedDuration::from_mins(i64::from(config.idle_timeout_minutes.max(1))),
            lockout: Lockout {
                max_failures: i64::from(config.max_failed_sign_ins.max(1)),
                lock_for: SignedDuration::from_mins(i64::from(config.lockout_minutes)),
            },
            secure_cookies,
            throttle: Throttle::new(config.sign_ins_per_minute_per_ip),
        })
    }

    /// False when this address has tried to sign in too often just now.
    pub(crate) fn may_try_sign_in(&self, ip: Option<IpAddr>) -> bool {
        self.throttle.allow(ip)
    }
}

/// A random value for a cookie, a CSRF token or a generated password: 128
/// bits or more, URL-safe.
pub fn random_secret(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A request refused before it changed anything: the status and, in words,
/// why and what to do.
#[derive(Debug)]
pub struct Refused(pub StatusCode, pub &'static str);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

/// The signed-in staff member of a page request. Without a valid session a
/// page answers with a redirect to sign-in (an in-page request with 401).
pub struct SignedIn {
    pub user: StaffUser,
    pub csrf: String,
}

impl SignedIn {
    /// Refuses a state-changing request whose CSRF value is not this
    /// session's (compared in constant time).
    pub(crate) fn check_csrf(&self, sent: &str) -> Result<(), Refused> {
        if bool::from(sent.as_bytes().ct_eq(self.csrf.as_bytes())) {
            Ok(())
        } else {
            Err(Refused(
                StatusCode::FORBIDDEN,
                "This form has expired. Go back, reload the page and try again.",
            ))
        }
    }

    /// The CSRF value of an in-page request's `X-CSRF-Token` header.
    pub(crate) fn check_csrf_header(&self, headers: &HeaderMap) -> Result<(), Refused> {
        let sent = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        self.check_csrf(sent)
    }

    /// An audit line of something this staff member viewed or did.
    pub(crate) fn audit_line(&self, action: &str, target: AuditTarget) -> Audit {
        Audit::new(&self.user.username, action, target)
    }

    /// Writes `line` to the audit log now (pages call it before they show
    /// what they audit, so a view that cannot be audited is not shown).
    pub(crate) async fn audit(&self, state: &AppState, line: Audit) -> enroll_store::Result<()> {
        state.store.audit(&line, state.clock.now()).await
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<SignedIn, Response> {
        let jar = CookieJar::from_headers(&parts.headers);
        let session = match jar.get(SESSION_COOKIE) {
            Some(cookie) => state
                .store
                .session(
                    &hash_token(cookie.value()),
                    state.staff_ui.idle,
                    state.clock.now(),
                )
                .await
                .map_err(super::internal)?,
            None => None,
        };
        match session {
            Some(StaffSession { user, csrf_token }) => Ok(SignedIn {
                user,
                csrf: csrf_token,
            }),
            None => Err(sign_in_first(parts)),
        }
    }
}

/// A page that needs a signed-in user: to sign-in, coming back here after.
fn sign_in_first(parts: &Parts) -> Response {
    let wants_json = parts
        .headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    if wants_json {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({
                "error": "you were signed out; sign in again",
                "sign_in": "/signin",
            })),
        )
            .into_response();
    }
    let here = parts
        .extensions
        .get::<OriginalUri>()
        .map(|u| u.0.to_string())
        .unwrap_or_else(|| parts.uri.to_string());
    let next: String = form_urlencoded_value(&here);
    Redirect::to(&format!("/signin?next={next}")).into_response()
}

fn form_urlencoded_value(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// The session cookie for a new session.
pub(crate) fn session_cookie(value: String, secure: bool) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, value))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .build()
}

/// Only a path on this site may be where sign-in leads (no open redirect).
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/search".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_leads_only_to_a_page_of_this_site() {
        assert_eq!(safe_next(Some("/patients/4")), "/patients/4");
        assert_eq!(safe_next(Some("//evil.example")), "/search");
        assert_eq!(safe_next(Some("https://evil.example")), "/search");
        assert_eq!(safe_next(Some("/\\evil.example")), "/search");
        assert_eq!(safe_next(None), "/search");
    }

    #[test]
    fn the_throttle_counts_per_address() {
        let ui = StaffUi::new(
            &StaffUiConfig {
                sign_ins_per_minute_per_ip: 2,
                ..StaffUiConfig::default()
            },
            false,
        );
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        assert!(ui.may_try_sign_in(a) && ui.may_try_sign_in(a));
        assert!(
            !ui.may_try_sign_in(a),
            "a third try in the minute is refused"
        );
        assert!(ui.may_try_sign_in(b), "another address is not affected");
    }
}
