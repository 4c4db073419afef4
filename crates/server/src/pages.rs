//! Pages for patients (unsubscribe; activation is in `activation`),
//! the demo mailbox, and the SMS provider's inbound webhook.

use std::sync::LazyLock;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use enroll_core::E164Phone;
use enroll_notify::{ExposeSecret, SmsKeyword, is_opt_out_keyword};
use minijinja::{Environment, context};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::mailbox::MailboxMessage;

static PAGES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // Our own templates, compiled in: a failure here is a bug caught by the tests.
    for (name, source) in [
        ("base.html", include_str!("../templates/base.html")),
        ("message.html", include_str!("../templates/message.html")),
        (
            "unsubscribe.html",
            include_str!("../templates/unsubscribe.html"),
        ),
        ("mailbox.html", include_str!("../templates/mailbox.html")),
        ("api_docs.html", include_str!("../templates/api_docs.html")),
        (
            "staff_base.html",
            include_str!("../templates/staff_base.html"),
        ),
        (
            "staff_signin.html",
            include_str!("../templates/staff_signin.html"),
        ),
        (
            "staff_search.html",
            include_str!("../templates/staff_search.html"),
        ),
        (
            "staff_chart.html",
            include_str!("../templates/staff_chart.html"),
        ),
        (
            "staff_users.html",
            include_str!("../templates/staff_users.html"),
        ),
        (
            "staff_audit.html",
            include_str!("../templates/staff_audit.html"),
        ),
        (
            "staff_worklists.html",
            include_str!("../templates/staff_worklists.html"),
        ),
        (
            "staff_connections.html",
            include_str!("../templates/staff_connections.html"),
        ),
        (
            "staff_go_live.html",
            include_str!("../templates/staff_go_live.html"),
        ),
        (
            "staff_roster.html",
            include_str!("../templates/staff_roster.html"),
        ),
        (
            "staff_dashboard.html",
            include_str!("../templates/staff_dashboard.html"),
        ),
        (
            "staff_practices.html",
            include_str!("../templates/staff_practices.html"),
        ),
        (
            "staff_practice.html",
            include_str!("../templates/staff_practice.html"),
        ),
        (
            "staff_practice_confirm.html",
            include_str!("../templates/staff_practice_confirm.html"),
        ),
        (
            "staff_templates.html",
            include_str!("../templates/staff_templates.html"),
        ),
        (
            "staff_in_person.html",
            include_str!("../templates/staff_in_person.html"),
        ),
        (
            "staff_in_person_letter.html",
            include_str!("../templates/staff_in_person_letter.html"),
        ),
    ] {
        if let Err(e) = env.add_template(name, source) {
            tracing::error!(template = name, error = %e, "page template does not compile");
        }
    }
    env
});

pub(crate) fn render(status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    match PAGES.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(template = name, error = %e, "page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "this page could not be shown",
            )
                .into_response()
        }
    }
}

fn message(status: StatusCode, heading: &str, text: &str) -> Response {
    render(status, "message.html", context! { heading, text })
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "page failed");
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "Please try again in a few minutes.",
    )
}

async fn unsubscribe_practice(
    state: &AppState,
    invite_id: i64,
    signature: &str,
) -> Result<String, Response> {
    let not_found = || {
        message(
            StatusCode::NOT_FOUND,
            "This link is not valid",
            "Check that the whole link was copied.",
        )
    };
    if !state.links.verify_unsubscribe(invite_id, signature) {
        return Err(not_found());
    }
    let invite = state
        .store
        .invite_by_id(invite_id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    let practice = state
        .store
        .practice(invite.practice_id)
        .await
        .map_err(internal)?
        .ok_or_else(not_found)?;
    Ok(practice.name)
}

/// Shows the confirmation; opting out needs the POST (mail scanners follow
/// links, they do not submit forms).
pub(crate) async fn unsubscribe_form(
    State(state): State<AppState>,
    Path((invite_id, signature)): Path<(i64, String)>,
) -> Response {
    match unsubscribe_practice(&state, invite_id, &signature).await {
        Ok(practice_name) => render(
            StatusCode::OK,
            "unsubscribe.html",
            context! { practice_name, done => false },
        ),
        Err(page) => page,
    }
}

/// The button of the page, and RFC 8058 one-click from the mail client.
pub(crate) async fn unsubscribe(
    State(state): State<AppState>,
    Path((invite_id, signature)): Path<(i64, String)>,
) -> Response {
    let practice_name = match unsubscribe_practice(&state, invite_id, &signature).await {
        Ok(name) => name,
        Err(page) => return page,
    };
    match state
        .store
        .opt_out_email_by_invite(invite_id, state.clock.now())
        .await
    {
        Ok(_) => render(
            StatusCode::OK,
            "unsubscribe.html",
            context! { practice_name, done => true },
        ),
        Err(e) => internal(e),
    }
}

#[derive(serde::Serialize)]
struct MailboxView {
    #[serde(flatten)]
    message: MailboxMessage,
    links: Vec<String>,
}

fn mailbox_view(state: &AppState) -> Option<Vec<MailboxView>> {
    let mailbox = state.mailbox.as_ref()?;
    Some(
        mailbox
            .messages()
            .into_iter()
            .map(|message| {
                let links = message
                    .text
                    .split_whitespace()
                    .filter(|w| w.starts_with("http://") || w.starts_with("https://"))
                    .map(|w| w.trim_end_matches(['.', ',', ')']).to_string())
                    .collect();
                MailboxView { message, links }
            })
            .collect(),
    )
}

pub(crate) async fn mailbox_page(State(state): State<AppState>) -> Response {
    match mailbox_view(&state) {
        Some(messages) => {
            let mut page = render(StatusCode::OK, "mailbox.html", context! { messages });
            // The emails shown in frames (`srcdoc`, which takes this page's
            // policy) carry their own inline styles; still no inline script.
            page.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static(EMAIL_PREVIEW_POLICY),
            );
            page
        }
        None => message(
            StatusCode::NOT_FOUND,
            "No mailbox",
            "The mailbox exists only in `enroll demo`.",
        ),
    }
}

/// The policy of a page that shows invitation emails in frames (the demo
/// mailbox, the template editor's preview): the pages' own, plus inline
/// styles for the emails.
pub(crate) const EMAIL_PREVIEW_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-src 'self'; \
     form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) async fn mailbox_script() -> Response {
    crate::ui::static_file(
        "text/javascript; charset=utf-8",
        include_str!("../static/mailbox.js"),
    )
}

pub(crate) async fn patient_stylesheet() -> Response {
    crate::ui::static_file(
        "text/css; charset=utf-8",
        include_str!("../static/patient.css"),
    )
}

pub(crate) async fn base_stylesheet() -> Response {
    crate::ui::static_file(
        "text/css; charset=utf-8",
        include_str!("../static/base.css"),
    )
}

pub(crate) async fn mailbox_json(State(state): State<AppState>) -> Response {
    match mailbox_view(&state) {
        Some(messages) => Json(messages).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The form fields of an inbound text, as SMS providers post them.
#[derive(Deserialize)]
pub(crate) struct InboundSms {
    #[serde(rename = "From")]
    from: String,
    #[serde(rename = "Body")]
    body: String,
}

/// R13: STOP and friends opt the number out at once; START opts back in.
/// The URL carries a secret (`sms.webhook_secret`) so only the provider,
/// which was given the URL, can change opt-outs.
pub(crate) async fn sms_webhook(
    State(state): State<AppState>,
    Path(secret): Path<String>,
    Form(inbound): Form<InboundSms>,
) -> Response {
    let expected = state
        .sms_webhook_secret
        .as_ref()
        .map_or("", |s| s.expose_secret());
    if expected.is_empty() || !bool::from(expected.as_bytes().ct_eq(secret.as_bytes())) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(phone) = E164Phone::parse(&inbound.from) else {
        tracing::warn!("inbound text from a number that is not a valid phone number; ignored");
        return twiml();
    };
    let opted_out = match is_opt_out_keyword(&inbound.body) {
        Some(SmsKeyword::OptOut) => true,
        Some(SmsKeyword::OptIn) => false,
        None => return twiml(),
    };
    match state
        .store
        .set_sms_opt_out_by_phone(phone.as_str(), opted_out, state.clock.now())
        .await
    {
        Ok(patients) => {
            tracing::info!(patients, opted_out, "inbound text changed SMS consent");
            twiml()
        }
        Err(e) => {
            tracing::error!(error = %e, "recording an SMS opt-out failed");
            // 500 makes the provider retry the webhook.
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// An empty answer in the provider's XML: no reply text.
fn twiml() -> Response {
    (
        [(header::CONTENT_TYPE, "text/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
    )
        .into_response()
}
