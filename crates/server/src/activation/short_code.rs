//! `/code`: the short code of an in-person letter, typed by the patient,
//! leads to the same activation flow as the link (`/a/{token}`, then the
//! date-of-birth and ZIP check as usual).
//!
//! A code only finds a link; everything after it is the link's (expiry,
//! one use, its lockout after wrong identity answers). What is guarded
//! here is guessing codes: every request counts against the per-address
//! throttle of all activation pages, and wrong codes (a well-formed code
//! no link has) lock the address out of this page for a while after a
//! configured number. That lock is per instance and in memory, like the
//! throttle: a guesser spread over many addresses still meets 40 bits per
//! code and, behind it, the identity check.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use enroll_core::{Language, normalize_short_code};
use jiff::{SignedDuration, Timestamp};
use minijinja::context;
use serde::Deserialize;

use super::pages::{LangQuery, internal, render, throttled};
use super::text::{Texts, texts};
use crate::AppState;
use crate::throttle::ClientIp;

/// Addresses remembered before old ones are swept out.
const SWEEP_ABOVE: usize = 10_000;

/// Wrong short codes per client address within a window.
pub(crate) struct CodeLockout {
    max_failures: usize,
    window: SignedDuration,
    failures: Mutex<HashMap<IpAddr, Vec<Timestamp>>>,
}

impl CodeLockout {
    pub(crate) fn new(max_failures: u32, window: SignedDuration) -> CodeLockout {
        CodeLockout {
            max_failures: usize::try_from(max_failures.max(1)).unwrap_or(5),
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn key(ip: Option<IpAddr>) -> IpAddr {
        ip.unwrap_or(IpAddr::from([0, 0, 0, 0]))
    }

    /// Wrong codes from `ip` inside the window ending now.
    fn recent(&self, ip: Option<IpAddr>, now: Timestamp) -> usize {
        let since = now - self.window;
        let mut all = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() > SWEEP_ABOVE {
            all.retain(|_, at| at.iter().any(|t| *t > since));
        }
        let Some(at) = all.get_mut(&Self::key(ip)) else {
            return 0;
        };
        at.retain(|t| *t > since);
        at.len()
    }

    pub(crate) fn is_locked(&self, ip: Option<IpAddr>, now: Timestamp) -> bool {
        self.recent(ip, now) >= self.max_failures
    }

    /// Counts a try as wrong before its code is looked up, in one step
    /// under the lock: parallel guesses cannot all pass a check first and
    /// be counted after. `None` when the address is locked; otherwise the
    /// tries left should this one be wrong. A right code is taken back
    /// with [`CodeLockout::not_wrong`].
    pub(crate) fn attempt(&self, ip: Option<IpAddr>, now: Timestamp) -> Option<usize> {
        let since = now - self.window;
        let mut all = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() > SWEEP_ABOVE {
            all.retain(|_, at| at.iter().any(|t| *t > since));
        }
        let at = all.entry(Self::key(ip)).or_default();
        at.retain(|t| *t > since);
        if at.len() >= self.max_failures {
            return None;
        }
        at.push(now);
        Some(self.max_failures - at.len())
    }

    /// Takes back the try counted at `at` (the code was right, or could
    /// not be looked up).
    pub(crate) fn not_wrong(&self, ip: Option<IpAddr>, at: Timestamp) {
        let mut all = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tries) = all.get_mut(&Self::key(ip))
            && let Some(position) = tries.iter().rposition(|t| *t == at)
        {
            tries.remove(position);
        }
    }

    fn minutes(&self) -> i64 {
        self.window.as_mins().max(1)
    }
}

fn language(chosen: Option<&str>) -> &'static Texts {
    texts(chosen.and_then(Language::from_code).unwrap_or_default())
}

fn page(
    status: StatusCode,
    t: &Texts,
    typed: &str,
    error: Option<&str>,
    tries_left: Option<usize>,
) -> Response {
    let errors: std::collections::BTreeMap<&str, &str> =
        error.map(|e| ("code", e)).into_iter().collect();
    render(
        status,
        "patient_short_code.html",
        context! { t, typed, errors, tries_left },
    )
}

fn locked(t: &Texts, minutes: i64) -> Response {
    let text = t
        .short_code_locked_text
        .replace("{n}", &minutes.to_string());
    let mut response = render(
        StatusCode::TOO_MANY_REQUESTS,
        "patient_message.html",
        context! { t, heading => t.short_code_locked_heading, text },
    );
    let retry = HeaderValue::from_str(&(minutes * 60).to_string())
        .unwrap_or(HeaderValue::from_static("900"));
    response.headers_mut().insert(header::RETRY_AFTER, retry);
    response
}

/// `GET /code`: the form.
pub(crate) async fn form(Query(query): Query<LangQuery>) -> Response {
    page(
        StatusCode::OK,
        language(query.lang.as_deref()),
        "",
        None,
        None,
    )
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct CodeForm {
    code: String,
    lang: String,
}

/// `POST /code`: a code that a link has leads to that link.
pub(crate) async fn enter(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Form(form): Form<CodeForm>,
) -> Response {
    let t = language(Some(&form.lang));
    if !state.activation.throttle.allow(ip) {
        return throttled(t);
    }
    let lockout = &state.activation.code_lockout;
    let now = state.clock.now();
    if lockout.is_locked(ip, now) {
        return locked(t, lockout.minutes());
    }
    // What was typed goes back into the field only as the patient typed it
    // (escaped by the template), so a typo can be fixed in place.
    let typed: String = form.code.chars().take(16).collect();
    let Some(code) = normalize_short_code(&form.code) else {
        return page(
            StatusCode::UNPROCESSABLE_ENTITY,
            t,
            &typed,
            Some(t.short_code_missing),
            None,
        );
    };
    let Some(left) = lockout.attempt(ip, now) else {
        return locked(t, lockout.minutes());
    };
    match state.store.token_for_short_code(&code).await {
        Ok(Some(token)) => {
            lockout.not_wrong(ip, now);
            Redirect::to(&format!("/a/{token}?lang={}", t.lang)).into_response()
        }
        Ok(None) => {
            if left == 0 {
                return locked(t, lockout.minutes());
            }
            page(
                StatusCode::UNPROCESSABLE_ENTITY,
                t,
                &typed,
                Some(t.short_code_wrong),
                Some(left),
            )
        }
        Err(e) => {
            lockout.not_wrong(ip, now);
            internal(t, e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_codes_lock_an_address_for_the_window_only() {
        let lockout = CodeLockout::new(3, SignedDuration::from_mins(15));
        let now: Timestamp = "2026-11-25T15:00:00Z".parse().unwrap_or_default();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        let b = Some(IpAddr::from([10, 0, 0, 2]));
        assert_eq!(lockout.attempt(a, now), Some(2));
        let right = now + SignedDuration::from_secs(1);
        assert_eq!(lockout.attempt(a, right), Some(1));
        lockout.not_wrong(a, right);
        assert_eq!(
            lockout.attempt(a, now),
            Some(1),
            "a right code is not counted"
        );
        assert!(!lockout.is_locked(a, now));
        assert_eq!(lockout.attempt(a, now), Some(0));
        assert!(lockout.is_locked(a, now));
        assert_eq!(lockout.attempt(a, now), None, "locked: not even looked up");
        assert!(!lockout.is_locked(b, now), "another address is not locked");
        assert!(!lockout.is_locked(a, now + SignedDuration::from_mins(16)));
    }
}
