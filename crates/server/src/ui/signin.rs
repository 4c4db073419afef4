//! Signing in and out.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum_extra::extract::cookie::{Cookie, CookieJar};
use enroll_store::hash_token;
use minijinja::context;
use serde::Deserialize;

use super::session::{SESSION_COOKIE, SignedIn, random_secret, safe_next, session_cookie};
use super::{internal, local_time};
use crate::AppState;
use crate::pages::render;
use crate::password::verify_password;
use crate::throttle::ClientIp;

#[derive(Deserialize)]
pub(crate) struct Next {
    next: Option<String>,
}

pub(crate) async fn form(Query(q): Query<Next>) -> Response {
    sign_in_page(StatusCode::OK, "", &safe_next(q.next.as_deref()), None)
}

fn sign_in_page(status: StatusCode, username: &str, next: &str, error: Option<&str>) -> Response {
    render(
        status,
        "staff_signin.html",
        context! { username, next, error },
    )
}

#[derive(Deserialize)]
pub(crate) struct Credentials {
    username: String,
    password: String,
    next: Option<String>,
}

/// One answer for an unknown user and a wrong password, so the page does
/// not tell which usernames exist.
const WRONG: &str = "That username and password do not match. Check them and try again.";

pub(crate) async fn sign_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    jar: CookieJar,
    Form(c): Form<Credentials>,
) -> Response {
    let next = safe_next(c.next.as_deref());
    let username = c.username.trim();
    if !state.staff_ui.may_try_sign_in(ip) {
        return sign_in_page(
            StatusCode::TOO_MANY_REQUESTS,
            username,
            &next,
            Some("Too many sign-in attempts from this computer. Wait a minute and try again."),
        );
    }
    let now = state.clock.now();
    let account = match state.store.staff_account(username).await {
        Ok(account) => account,
        Err(e) => return internal(e),
    };
    let Some(account) = account.filter(|a| !a.disabled) else {
        return sign_in_page(StatusCode::UNAUTHORIZED, username, &next, Some(WRONG));
    };
    if let Some(until) = account.locked_until.filter(|t| *t > now) {
        let tz = jiff::tz::TimeZone::system();
        let message = format!(
            "This account is locked after too many wrong passwords, until {}. An administrator can reset the password sooner.",
            local_time(until, &tz)
        );
        return sign_in_page(StatusCode::UNAUTHORIZED, username, &next, Some(&message));
    }
    let matches = account
        .password_hash
        .as_deref()
        .is_some_and(|hash| verify_password(&c.password, hash));
    if !matches {
        if let Err(e) = state
            .store
            .record_failed_sign_in(&account.user, state.staff_ui.lockout, now)
            .await
        {
            return internal(e);
        }
        return sign_in_page(StatusCode::UNAUTHORIZED, username, &next, Some(WRONG));
    }
    let cookie_value = random_secret(32);
    let started = state
        .store
        .start_session(
            &account.user,
            &hash_token(&cookie_value),
            &random_secret(32),
            now,
        )
        .await;
    if let Err(e) = started {
        return internal(e);
    }
    let jar = jar.add(session_cookie(cookie_value, state.staff_ui.secure_cookies));
    (jar, Redirect::to(&next)).into_response()
}

#[derive(Deserialize)]
pub(crate) struct CsrfOnly {
    csrf: String,
}

pub(crate) async fn sign_out(
    State(state): State<AppState>,
    signed_in: SignedIn,
    jar: CookieJar,
    Form(form): Form<CsrfOnly>,
) -> Response {
    if let Err(refused) = signed_in.check_csrf(&form.csrf) {
        return refused.into_response();
    }
    let token_hash = jar.get(SESSION_COOKIE).map(|c| hash_token(c.value()));
    let signed_out = state
        .store
        .sign_out(&signed_in.user, token_hash.as_deref(), state.clock.now())
        .await;
    if let Err(e) = signed_out {
        return internal(e);
    }
    let jar = jar.remove(Cookie::build(SESSION_COOKIE).path("/"));
    (jar, Redirect::to("/signin?signed_out=1")).into_response()
}
