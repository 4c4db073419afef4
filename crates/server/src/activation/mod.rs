//! R10, the patient's side: from the invitation link to an active portal
//! account, on server-rendered pages that work without JavaScript.
//!
//! `GET /a/{token}` checks the link (`enroll_core::link_state` through the
//! store) and starts a flow with a fresh random secret, which every form
//! carries back in a hidden field: it is the CSRF guard (a page elsewhere
//! cannot know it) and the proof that this browser passed the earlier
//! steps (it is replaced once the identity check passes). The steps: date
//! of birth and ZIP code (`POST .../identity`), username and password
//! (`.../account`, which sends a 6-digit code to where the invite went),
//! the code and the terms (`.../code`, `.../resend`). Every answer is
//! throttled per IP address, counted on the link, on the patient's
//! timeline and in the audit log.

mod pages;
pub(crate) use pages::masked;
mod portal;
mod short_code;
pub(crate) mod text;

use axum::Router;
use axum::routing::{get, post};
use enroll_core::ActivationRules;
use jiff::SignedDuration;
use serde::Deserialize;

use crate::AppState;
use crate::dispatcher::Channels;
use crate::throttle::Throttle;

/// `[activation]`: the numbers of R10.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActivationConfig {
    /// How long the link in an invite works (R10: 30 days).
    pub link_lifetime_days: u32,
    /// Wrong date-of-birth/ZIP answers before a link locks (R10: 5).
    pub max_identity_failures: i64,
    /// How long a one-time code works.
    pub code_lifetime_minutes: u32,
    /// Wrong codes before a new code is needed.
    pub max_code_failures: i64,
    /// The shortest password accepted (zxcvbn must also rate it strong).
    pub min_password_length: usize,
    /// Requests to the activation pages a minute per IP address.
    pub requests_per_minute_per_ip: u32,
    /// Wrong in-person short codes from one IP address before `/code`
    /// refuses it for `short_code_lockout_minutes`.
    pub short_code_failures_per_ip: u32,
    pub short_code_lockout_minutes: u32,
}

impl Default for ActivationConfig {
    fn default() -> ActivationConfig {
        ActivationConfig {
            link_lifetime_days: 30,
            max_identity_failures: 5,
            code_lifetime_minutes: 10,
            max_code_failures: 5,
            min_password_length: 10,
            requests_per_minute_per_ip: 30,
            short_code_failures_per_ip: 5,
            short_code_lockout_minutes: 15,
        }
    }
}

impl ActivationConfig {
    pub fn link_lifetime(&self) -> SignedDuration {
        SignedDuration::from_hours(i64::from(self.link_lifetime_days.max(1)) * 24)
    }

    pub fn rules(&self) -> ActivationRules {
        ActivationRules {
            max_identity_failures: self.max_identity_failures.max(1),
            code_lifetime: SignedDuration::from_mins(i64::from(self.code_lifetime_minutes.max(1))),
            max_code_failures: self.max_code_failures.max(1),
        }
    }
}

/// What the activation pages share: the rules, the throttle, and the
/// channels the one-time code goes out by (the invites' own: SMTP and the
/// SMS provider, or the demo's mailbox).
pub struct Activation {
    pub(crate) rules: ActivationRules,
    /// How long a link works; the in-person invite makes its link here.
    pub(crate) link_lifetime: SignedDuration,
    code_lockout: short_code::CodeLockout,
    min_password_length: usize,
    throttle: Throttle,
    channels: Channels,
    email_from: String,
}

impl Activation {
    pub fn new(config: &ActivationConfig, channels: Channels, email_from: &str) -> Activation {
        Activation {
            rules: config.rules(),
            link_lifetime: config.link_lifetime(),
            code_lockout: short_code::CodeLockout::new(
                config.short_code_failures_per_ip,
                SignedDuration::from_mins(i64::from(config.short_code_lockout_minutes.max(1))),
            ),
            min_password_length: config.min_password_length.max(8),
            throttle: Throttle::new(config.requests_per_minute_per_ip),
            channels,
            email_from: email_from.to_string(),
        }
    }
}

/// The activation routes, merged into the app's router.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/a/{token}", get(pages::landing))
        .route("/a/{token}/identity", post(pages::identity))
        .route("/a/{token}/account", post(pages::account))
        .route("/a/{token}/code", post(pages::code))
        .route("/a/{token}/resend", post(pages::resend))
        .route("/code", get(short_code::form).post(short_code::enter))
        .route("/portal", get(portal::home))
        .route(
            "/portal/sign-in",
            get(portal::sign_in_form).post(portal::sign_in),
        )
        .route("/portal/sign-out", post(portal::sign_out))
}
