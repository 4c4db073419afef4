//! The handlers of the activation pages and the templates they render.
//! Each POST first goes through [`open_flow`] (throttle, link, flow secret,
//! step); each handler then does one step.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use enroll_core::{
    CodeState, Language, LinkState, UsernameProblem, code_state, identity_matches,
    normalize_username, parse_entered_date, username_candidates,
};
use enroll_core::{E164Phone, EmailAddress, phone_for_people};
use enroll_notify::{OutgoingEmail, OutgoingSms, RenderedEmail};
use enroll_store::{ActivationDone, ActivationFlow, ActivationToken, FlowStep, hash_token};
use minijinja::{Environment, context};
use rand::Rng;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::text::{Texts, texts};
use crate::AppState;
use crate::password::{PasswordProblem, check_password, hash_password};
use crate::throttle::ClientIp;

static PAGES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // Our own templates, compiled in: a failure here is a bug the tests catch.
    for (name, source) in [
        (
            "patient_base.html",
            include_str!("../../templates/patient_base.html"),
        ),
        (
            "patient_identity.html",
            include_str!("../../templates/patient_identity.html"),
        ),
        (
            "patient_account.html",
            include_str!("../../templates/patient_account.html"),
        ),
        (
            "patient_code.html",
            include_str!("../../templates/patient_code.html"),
        ),
        (
            "patient_done.html",
            include_str!("../../templates/patient_done.html"),
        ),
        (
            "patient_message.html",
            include_str!("../../templates/patient_message.html"),
        ),
        (
            "patient_sign_in.html",
            include_str!("../../templates/patient_sign_in.html"),
        ),
        (
            "patient_home.html",
            include_str!("../../templates/patient_home.html"),
        ),
        (
            "patient_short_code.html",
            include_str!("../../templates/patient_short_code.html"),
        ),
    ] {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "patient page template does not compile");
        }
    }
    env
});

pub(super) fn render(status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    match PAGES.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => {
            let mut response = (status, Html(html)).into_response();
            // Pages that carry a flow secret are never cached or framed.
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            response
        }
        Err(e) => {
            tracing::error!(template = name, error = %e, "patient page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "this page could not be shown",
            )
                .into_response()
        }
    }
}

/// A page with a heading and a sentence (a link that does not work, a
/// throttle, a failure).
fn message(
    status: StatusCode,
    t: &Texts,
    heading: &str,
    text: &str,
    practice: Option<&str>,
) -> Response {
    message_with_phone(status, t, heading, text, practice, None)
}

/// [`message`], with the practice's phone to call when it has one.
fn message_with_phone(
    status: StatusCode,
    t: &Texts,
    heading: &str,
    text: &str,
    practice: Option<&str>,
    phone: Option<&str>,
) -> Response {
    let phone = phone.map(|e164| PracticePhone {
        tel: e164.to_string(),
        shown: phone_for_people(e164),
    });
    render(
        status,
        "patient_message.html",
        context! { t, heading, text, practice_name => practice, phone },
    )
}

#[derive(serde::Serialize)]
struct PracticePhone {
    /// For the `tel:` link.
    tel: String,
    /// As people write it: "(617) 555-0100" for a US number.
    shown: String,
}

/// The page for a link that does not work. An expired link and one that
/// never existed get the same page and status, naming no practice, so a
/// link tells nothing about whether its patient exists.
fn link_page(state: LinkState, t: &Texts, link: &ActivationToken) -> Response {
    let (practice, phone) = (
        Some(link.practice_name.as_str()),
        link.practice_phone.as_deref(),
    );
    match state {
        LinkState::Used => message_with_phone(
            StatusCode::GONE,
            t,
            t.used_heading,
            t.used_text,
            practice,
            phone,
        ),
        LinkState::Locked => message_with_phone(
            StatusCode::LOCKED,
            t,
            t.locked_heading,
            t.locked_text,
            practice,
            phone,
        ),
        LinkState::Expired | LinkState::Usable => expired(t),
    }
}

fn expired(t: &Texts) -> Response {
    message(
        StatusCode::NOT_FOUND,
        t,
        t.expired_heading,
        t.expired_text,
        None,
    )
}

pub(super) fn throttled(t: &Texts) -> Response {
    let mut page = message(
        StatusCode::TOO_MANY_REQUESTS,
        t,
        t.throttled_heading,
        t.throttled_text,
        None,
    );
    page.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
    page
}

fn restart(t: &Texts) -> Response {
    message(
        StatusCode::FORBIDDEN,
        t,
        t.restart_heading,
        t.restart_text,
        None,
    )
}

pub(super) fn internal(t: &Texts, e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "activation page failed");
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        t,
        t.failed_heading,
        t.failed_text,
        None,
    )
}

/// 256 random bits, base64url: a flow secret.
pub(super) fn new_secret() -> String {
    use base64::Engine;
    let bytes: [u8; 32] = rand::rng().random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Six random digits.
fn new_code() -> String {
    format!("{:06}", rand::rng().random_range(0..1_000_000u32))
}

/// Hashes compared in constant time, so the time of an answer says nothing
/// about how much of a secret was right.
fn same_hash(given: &str, stored_hash: &str) -> bool {
    bool::from(hash_token(given).as_bytes().ct_eq(stored_hash.as_bytes()))
}

#[derive(Deserialize)]
pub(crate) struct LangQuery {
    pub(super) lang: Option<String>,
}

fn chosen_language(chosen: Option<&str>, link: Option<&ActivationToken>) -> Language {
    chosen.and_then(Language::from_code).unwrap_or_else(|| {
        Language::from_preference(link.and_then(|l| l.preferred_language.as_deref()))
    })
}

/// Field name -> the sentence shown under it.
type Errors = BTreeMap<&'static str, String>;

/// What every step's page shows besides its own fields: the words, the
/// link and the flow secret the forms carry back.
struct Screen<'a> {
    t: &'static Texts,
    token: &'a str,
    link: &'a ActivationToken,
    secret: &'a str,
}

impl Screen<'_> {
    /// `typed`: the answers to show again after an error (what the patient
    /// typed, escaped by the template), so "check both" can be done in place.
    fn identity(
        &self,
        status: StatusCode,
        errors: &Errors,
        attempts_left: Option<i64>,
        typed: Option<&FlowForm>,
    ) -> Response {
        let Screen {
            t,
            token,
            link,
            secret,
        } = self;
        render(
            status,
            "patient_identity.html",
            context! { t, token, secret, errors, attempts_left, practice_name => &link.practice_name,
            typed => typed.map(|f| context! { date_of_birth => f.date_of_birth.trim(), zip => f.zip.trim() }) },
        )
    }

    fn account(
        &self,
        status: StatusCode,
        username: &str,
        errors: &Errors,
        min_length: usize,
    ) -> Response {
        let Screen {
            t,
            token,
            link,
            secret,
        } = self;
        render(
            status,
            "patient_account.html",
            context! { t, token, secret, username, errors, min_length, practice_name => &link.practice_name },
        )
    }

    fn code(&self, status: StatusCode, errors: &Errors, notice: Option<&str>) -> Response {
        let Screen {
            t,
            token,
            link,
            secret,
        } = self;
        render(
            status,
            "patient_code.html",
            context! { t, token, secret, errors, notice, address => masked(&link.sent_to),
            practice_name => &link.practice_name },
        )
    }
}

/// The address the code went to, as the page shows it: enough for the
/// patient to recognise, too little for anyone else to use.
pub(crate) fn masked(address: &str) -> String {
    if let Some((local, domain)) = address.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}•••@{domain}");
    }
    let last: String = address
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("••• {last}")
}

/// `GET /a/{token}`: the landing page with the identity check.
pub(crate) async fn landing(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
    Query(query): Query<LangQuery>,
) -> Response {
    let default_t = texts(chosen_language(query.lang.as_deref(), None));
    if !state.activation.throttle.allow(ip) {
        return throttled(default_t);
    }
    let now = state.clock.now();
    let link = match state
        .store
        .activation_token(&token, &state.activation.rules, now)
        .await
    {
        Ok(Some(link)) => link,
        Ok(None) => return expired(default_t),
        Err(e) => return internal(default_t, e),
    };
    let t = texts(chosen_language(query.lang.as_deref(), Some(&link)));
    if link.state != LinkState::Usable {
        return link_page(link.state, t, &link);
    }
    let secret = new_secret();
    if let Err(e) = state
        .store
        .start_activation_flow(link.token_id, &hash_token(&secret), now)
        .await
    {
        return internal(t, e);
    }
    let screen = Screen {
        t,
        token: &token,
        link: &link,
        secret: &secret,
    };
    screen.identity(StatusCode::OK, &Errors::new(), None, None)
}

/// What every form sends besides its own fields.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct FlowForm {
    flow: String,
    lang: String,
    date_of_birth: String,
    zip: String,
    username: String,
    password: String,
    password_again: String,
    code: String,
    terms: String,
}

/// A POST that may go on: its link, flow and language.
struct Open {
    link: ActivationToken,
    flow: ActivationFlow,
    t: &'static Texts,
}

/// The checks before any step: the throttle, the link (a form on a link
/// that no longer works is on the timeline), the flow secret and the step.
async fn open_flow(
    state: &AppState,
    ip: Option<std::net::IpAddr>,
    token: &str,
    form: &FlowForm,
    step: FlowStep,
) -> Result<Open, Response> {
    let default_t = texts(chosen_language(Some(&form.lang), None));
    if !state.activation.throttle.allow(ip) {
        return Err(throttled(default_t));
    }
    let now = state.clock.now();
    let link = match state
        .store
        .activation_token(token, &state.activation.rules, now)
        .await
    {
        Ok(Some(link)) => link,
        Ok(None) => return Err(expired(default_t)),
        Err(e) => return Err(internal(default_t, e)),
    };
    let t = texts(chosen_language(Some(&form.lang), Some(&link)));
    if link.state != LinkState::Usable {
        let key = match link.state {
            LinkState::Used => "used",
            LinkState::Locked => "locked",
            _ => "expired",
        };
        if let Err(e) = state.store.activation_refused(&link, key, now).await {
            return Err(internal(t, e));
        }
        return Err(link_page(link.state, t, &link));
    }
    let flow = match state.store.activation_flow(link.token_id).await {
        Ok(Some(flow)) => flow,
        Ok(None) => return Err(restart(t)),
        Err(e) => return Err(internal(t, e)),
    };
    if !same_hash(&form.flow, &flow.secret_hash) || flow.step != step {
        return Err(restart(t));
    }
    Ok(Open { link, flow, t })
}

/// `POST /a/{token}/identity`: date of birth and ZIP code, both or nothing.
pub(crate) async fn identity(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
    Form(form): Form<FlowForm>,
) -> Response {
    let Open { link, t, .. } = match open_flow(&state, ip, &token, &form, FlowStep::Identity).await
    {
        Ok(open) => open,
        Err(page) => return page,
    };
    let screen = Screen {
        t,
        token: &token,
        link: &link,
        secret: &form.flow,
    };
    // Answers that cannot be a date or a ZIP are not counted as guesses.
    let mut errors = Errors::new();
    if parse_entered_date(&form.date_of_birth).is_none() {
        errors.insert("date_of_birth", t.dob_missing.to_string());
    }
    let zip = form.zip.trim();
    if enroll_core::Zip::parse(zip).is_err() {
        errors.insert("zip", t.zip_missing.to_string());
    }
    if !errors.is_empty() {
        return screen.identity(StatusCode::UNPROCESSABLE_ENTITY, &errors, None, Some(&form));
    }
    let now = state.clock.now();
    let rules = &state.activation.rules;
    if !identity_matches(
        &form.date_of_birth,
        zip,
        link.date_of_birth,
        link.zip.as_deref(),
    ) {
        let failures = match state
            .store
            .activation_identity_failed(&link, rules, now)
            .await
        {
            Ok(n) => n,
            Err(e) => return internal(t, e),
        };
        if failures >= rules.max_identity_failures {
            return link_page(LinkState::Locked, t, &link);
        }
        errors.insert("form", t.identity_wrong.to_string());
        let left = rules.max_identity_failures - failures;
        return screen.identity(
            StatusCode::UNPROCESSABLE_ENTITY,
            &errors,
            Some(left),
            Some(&form),
        );
    }
    let secret = new_secret();
    if let Err(e) = state
        .store
        .activation_identity_confirmed(&link, &hash_token(&secret), now)
        .await
    {
        return internal(t, e);
    }
    let username = match default_username(&state, &link).await {
        Ok(name) => name,
        Err(e) => return internal(t, e),
    };
    let min = state.activation.min_password_length;
    let screen = Screen {
        secret: &secret,
        ..screen
    };
    screen.account(StatusCode::OK, &username, &Errors::new(), min)
}

/// The email as username, or a variant of it when a family member already
/// took it.
async fn default_username(
    state: &AppState,
    link: &ActivationToken,
) -> enroll_store::Result<String> {
    for candidate in username_candidates(link.email.as_deref(), link.first_name.as_deref()) {
        if !state.store.patient_username_taken(&candidate).await? {
            return Ok(candidate);
        }
    }
    Ok(String::new())
}

fn username_problem(t: &Texts, problem: UsernameProblem) -> String {
    match problem {
        UsernameProblem::TooShort => t.username_short,
        UsernameProblem::TooLong => t.username_long,
        UsernameProblem::BadCharacters => t.username_characters,
    }
    .to_string()
}

/// `POST /a/{token}/account`: username and password; sends the code.
pub(crate) async fn account(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
    Form(form): Form<FlowForm>,
) -> Response {
    let Open { link, t, .. } = match open_flow(&state, ip, &token, &form, FlowStep::Account).await {
        Ok(open) => open,
        Err(page) => return page,
    };
    let screen = Screen {
        t,
        token: &token,
        link: &link,
        secret: &form.flow,
    };
    let min = state.activation.min_password_length;
    let mut errors = Errors::new();
    let username = match normalize_username(&form.username) {
        Ok(name) => match state.store.patient_username_taken(&name).await {
            Ok(true) => {
                errors.insert("username", t.username_taken.to_string());
                name
            }
            Ok(false) => name,
            Err(e) => return internal(t, e),
        },
        Err(problem) => {
            errors.insert("username", username_problem(t, problem));
            form.username.trim().to_string()
        }
    };
    let personal = [
        username.as_str(),
        link.first_name.as_deref().unwrap_or_default(),
        link.practice_name.as_str(),
    ];
    match check_password(&form.password, min, &personal) {
        Err(PasswordProblem::TooShort) => {
            errors.insert(
                "password",
                t.password_short.replace("{n}", &min.to_string()),
            );
        }
        Err(PasswordProblem::TooWeak) => {
            errors.insert("password", t.password_weak.to_string());
        }
        Ok(()) if form.password != form.password_again => {
            errors.insert("password_again", t.password_mismatch.to_string());
        }
        Ok(()) => {}
    }
    if !errors.is_empty() {
        return screen.account(StatusCode::UNPROCESSABLE_ENTITY, &username, &errors, min);
    }
    // argon2id takes tens of milliseconds of CPU: off the async workers.
    let password = form.password.clone();
    let phc = match tokio::task::spawn_blocking(move || hash_password(&password)).await {
        Ok(Ok(phc)) => phc,
        Ok(Err(e)) => return internal(t, e),
        Err(e) => return internal(t, e),
    };
    send_code_and_show(&state, &screen, &username, &phc, None).await
}

/// Sends a fresh code where the invite went, records it, shows the code page.
async fn send_code_and_show(
    state: &AppState,
    screen: &Screen<'_>,
    username: &str,
    password_hash: &str,
    notice: Option<&str>,
) -> Response {
    let (t, link) = (screen.t, screen.link);
    let code = new_code();
    let channel = match send_code(state, t, link, &code).await {
        Ok(channel) => channel,
        // A mail server's answer may quote the address: the log gets ids only.
        Err(_) => {
            return internal(
                t,
                format!("sending the one-time code of link {} failed", link.token_id),
            );
        }
    };
    let now = state.clock.now();
    if let Err(e) = state
        .store
        .activation_code_sent(
            link,
            username,
            password_hash,
            &hash_token(&code),
            channel,
            now,
        )
        .await
    {
        return internal(t, e);
    }
    screen.code(StatusCode::OK, &Errors::new(), notice)
}

/// The code goes to the address the invite went to: by text when that was
/// the cell phone, else by email. Returns the channel's name.
async fn send_code(
    state: &AppState,
    t: &Texts,
    link: &ActivationToken,
    code: &str,
) -> Result<&'static str, String> {
    let body = t
        .code_message
        .replace("{practice}", &link.practice_name)
        .replace("{code}", code);
    let to_cell = link.cell_phone.as_deref() == Some(link.sent_to.as_str());
    let channels = &state.activation.channels;
    if to_cell {
        let sms = channels
            .sms
            .as_ref()
            .ok_or("no SMS provider for the code")?;
        let to = E164Phone::parse(&link.sent_to).map_err(|_| "the cell phone is not valid")?;
        let text = OutgoingSms { to, body };
        sms.send_sms(&text).await.map_err(|e| e.to_string())?;
        return Ok("sms");
    }
    let now = state.clock.now();
    let to = EmailAddress::parse(&link.sent_to).map_err(|_| "the email address is not valid")?;
    let email = OutgoingEmail {
        to,
        from: state.activation.email_from.clone(),
        message_id: state.links.code_message_id(link.token_id, now),
        list_unsubscribe: state.links.unsubscribe_url(link.invite_id),
        content: RenderedEmail {
            subject: t
                .code_email_subject
                .replace("{practice}", &link.practice_name),
            html: format!("<p>{}</p>", minijinja::HtmlEscape(&body)),
            text: body,
        },
    };
    channels
        .email
        .send_email(&email)
        .await
        .map_err(|e| e.to_string())?;
    Ok("email")
}

/// `POST /a/{token}/code`: the code and the terms; activates.
pub(crate) async fn code(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
    Form(form): Form<FlowForm>,
) -> Response {
    let Open { link, flow, t } = match open_flow(&state, ip, &token, &form, FlowStep::Code).await {
        Ok(open) => open,
        Err(page) => return page,
    };
    let screen = Screen {
        t,
        token: &token,
        link: &link,
        secret: &form.flow,
    };
    let (Some(sent_at), Some(code_hash), Some(username), Some(phc)) = (
        flow.code_sent_at,
        &flow.code_hash,
        &flow.username,
        &flow.password_hash,
    ) else {
        return restart(t);
    };
    let now = state.clock.now();
    let rules = &state.activation.rules;
    let mut errors = Errors::new();
    match code_state(sent_at, flow.code_failures, rules, now) {
        CodeState::Expired => {
            errors.insert("code", t.code_expired.to_string());
        }
        CodeState::Spent => {
            errors.insert("code", t.code_spent.to_string());
        }
        CodeState::Open => {
            let entered: String = form.code.chars().filter(|c| !c.is_whitespace()).collect();
            if entered.len() != 6 || !entered.bytes().all(|b| b.is_ascii_digit()) {
                errors.insert("code", t.code_missing.to_string());
            } else if !same_hash(&entered, code_hash) {
                let failures = match state.store.activation_code_failed(&link, now).await {
                    Ok(n) => n,
                    Err(e) => return internal(t, e),
                };
                let text = if failures >= rules.max_code_failures {
                    t.code_spent
                } else {
                    t.code_wrong
                };
                errors.insert("code", text.to_string());
            }
        }
    }
    if form.terms != "yes" {
        errors.insert("terms", t.terms_missing.to_string());
    }
    if !errors.is_empty() {
        return screen.code(StatusCode::UNPROCESSABLE_ENTITY, &errors, None);
    }
    match state
        .store
        .complete_activation(link.token_id, username, phc, rules, now)
        .await
    {
        Ok(ActivationDone::Activated { .. }) => render(
            StatusCode::OK,
            "patient_done.html",
            context! { t, username, practice_name => &link.practice_name },
        ),
        Ok(ActivationDone::UsernameTaken) => restart(t),
        Ok(ActivationDone::LinkGone) => expired(t),
        Err(e) => internal(t, e),
    }
}

/// `POST /a/{token}/resend`: a new code (the old one stops working).
pub(crate) async fn resend(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(token): Path<String>,
    Form(form): Form<FlowForm>,
) -> Response {
    let Open { link, flow, t } = match open_flow(&state, ip, &token, &form, FlowStep::Code).await {
        Ok(open) => open,
        Err(page) => return page,
    };
    let (Some(username), Some(phc)) = (&flow.username, &flow.password_hash) else {
        return restart(t);
    };
    let screen = Screen {
        t,
        token: &token,
        link: &link,
        secret: &form.flow,
    };
    send_code_and_show(&state, &screen, username, phc, Some(t.code_resent)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_masked() {
        assert_eq!(masked("rosa@example.org"), "r•••@example.org");
        assert_eq!(masked("+16175550100"), "••• 0100");
        assert_eq!(phone_for_people("+16175550100"), "(617) 555-0100");
        assert_eq!(phone_for_people("+442071838750"), "+442071838750");
    }

    #[test]
    fn every_page_renders_in_both_languages() {
        for language in Language::ALL {
            let t = texts(language);
            for name in [
                "patient_identity.html",
                "patient_account.html",
                "patient_code.html",
                "patient_done.html",
                "patient_message.html",
                "patient_sign_in.html",
                "patient_home.html",
                "patient_short_code.html",
            ] {
                let page = PAGES
                    .get_template(name)
                    .and_then(|tpl| {
                        tpl.render(context! { t, token => "tok", secret => "s",
                        practice_name => "Clinic", heading => "h", text => "x",
                        errors => Errors::new(), address => "r•••@example.org",
                        username => "u", min_length => 10, csrf => "c", typed => "" })
                    })
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(page.contains(&format!("lang=\"{}\"", t.lang)), "{name}");
            }
        }
    }
}
