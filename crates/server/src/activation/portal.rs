//! The minimal patient portal that proves an activated account works:
//! sign in, a home page naming the practice, sign out.
//!
//! The session is a 256-bit random cookie (HttpOnly, SameSite=Lax, Secure
//! when the public URL is https), kept as its SHA-256, 12 hours. Forms
//! carry a CSRF value: before sign-in a random value that is also in a
//! short-lived cookie (double submit), after it a value derived from the
//! session cookie (SHA-256 of "csrf:" and the cookie), which a page on
//! another site can neither read nor compute.

use enroll_store::{Audit, AuditTarget};
use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use enroll_core::Language;
use enroll_store::hash_token;
use jiff::SignedDuration;
use minijinja::context;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::pages::{LangQuery, internal, new_secret, render, throttled};
use super::text::{Texts, texts};
use crate::AppState;
use crate::password::{hash_password, verify_password};
use crate::throttle::ClientIp;

const SESSION_COOKIE: &str = "enroll_patient";
const SIGN_IN_COOKIE: &str = "enroll_sign_in";
const SESSION_LIFETIME: SignedDuration = SignedDuration::from_hours(12);

/// Checked against when the username is unknown, so that an unknown name
/// and a wrong password take the same time.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_password("no account has this password").unwrap_or_default());

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

fn set_cookie(state: &AppState, name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if state.links.activation_url("").starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let text =
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn equal(a: &str, b: &str) -> bool {
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// The CSRF value of the forms of a signed-in page.
fn session_csrf(session_cookie: &str) -> String {
    hash_token(&format!("csrf:{session_cookie}"))
}

fn language(lang: Option<&str>) -> &'static Texts {
    texts(lang.and_then(Language::from_code).unwrap_or_default())
}

fn sign_in_page(
    state: &AppState,
    status: StatusCode,
    t: &Texts,
    username: &str,
    error: Option<&str>,
) -> Response {
    let csrf = new_secret();
    let errors: BTreeMap<&str, &str> = error.map(|e| ("form", e)).into_iter().collect();
    let mut page = render(
        status,
        "patient_sign_in.html",
        context! { t, csrf, username, errors },
    );
    page.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, SIGN_IN_COOKIE, &csrf, 3600),
    );
    page
}

/// `GET /portal/sign-in`.
pub(crate) async fn sign_in_form(
    State(state): State<AppState>,
    Query(query): Query<LangQuery>,
) -> Response {
    let t = language(query.lang.as_deref());
    sign_in_page(&state, StatusCode::OK, t, "", None)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct SignInForm {
    csrf: String,
    lang: String,
    username: String,
    password: String,
}

/// `POST /portal/sign-in`: throttled per address like the activation
/// pages; one message for an unknown name and a wrong password.
pub(crate) async fn sign_in(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let t = language(Some(&form.lang));
    if !state.activation.throttle.allow(ip) {
        return throttled(t);
    }
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !equal(&expected, &form.csrf) {
        return sign_in_page(&state, StatusCode::FORBIDDEN, t, "", Some(t.restart_text));
    }
    let username = form.username.trim().to_lowercase();
    let account = match state.store.patient_account(&username).await {
        Ok(account) => account,
        Err(e) => return internal(t, e),
    };
    let phc = account
        .as_ref()
        .map_or_else(|| DUMMY_HASH.clone(), |a| a.password_hash.clone());
    let password = form.password.clone();
    let verified = tokio::task::spawn_blocking(move || verify_password(&password, &phc))
        .await
        .unwrap_or(false);
    let now = state.clock.now();
    let Some(account) = account.filter(|_| verified) else {
        return sign_in_page(
            &state,
            StatusCode::UNAUTHORIZED,
            t,
            &username,
            Some(t.sign_in_wrong),
        );
    };
    let session = new_secret();
    let expires = now.checked_add(SESSION_LIFETIME).unwrap_or(now);
    if let Err(e) = state
        .store
        .create_patient_session(account.id, &hash_token(&session), now, expires)
        .await
    {
        return internal(t, e);
    }
    if let Err(e) = state
        .store
        .audit(
            &Audit::new(
                "patient (portal)",
                "portal: signed in",
                AuditTarget::Patient(account.patient_id),
            ),
            now,
        )
        .await
    {
        return internal(t, e);
    }
    let mut response = Redirect::to("/portal").into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, &session, SESSION_LIFETIME.as_secs()),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(&state, SIGN_IN_COOKIE, "", 0),
    );
    response
}

/// `GET /portal`: the home page, or the way to sign in.
pub(crate) async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(session) = cookie(&headers, SESSION_COOKIE) else {
        return Redirect::to("/portal/sign-in").into_response();
    };
    let now = state.clock.now();
    let found = match state
        .store
        .patient_session(&hash_token(&session), now)
        .await
    {
        Ok(found) => found,
        Err(e) => return internal(texts(Language::English), e),
    };
    let Some(found) = found else {
        return Redirect::to("/portal/sign-in").into_response();
    };
    let t = texts(Language::from_preference(
        found.preferred_language.as_deref(),
    ));
    render(
        StatusCode::OK,
        "patient_home.html",
        context! { t, csrf => session_csrf(&session), username => found.username,
        practice_name => found.practice_name },
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct SignOutForm {
    csrf: String,
}

/// `POST /portal/sign-out`: ends the session (with the page's CSRF value).
pub(crate) async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignOutForm>,
) -> Response {
    let Some(session) = cookie(&headers, SESSION_COOKIE) else {
        return Redirect::to("/portal/sign-in").into_response();
    };
    if !equal(&session_csrf(&session), &form.csrf) {
        return (StatusCode::FORBIDDEN, "this form is out of date").into_response();
    }
    if let Err(e) = state
        .store
        .delete_patient_session(&hash_token(&session))
        .await
    {
        return internal(texts(Language::English), e);
    }
    let mut response = Redirect::to("/portal/sign-in").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, "", 0),
    );
    response
}
