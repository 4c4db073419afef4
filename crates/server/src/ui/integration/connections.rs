//! The Integration Tool's Connections page (issue #14 item 1): the MLLP
//! listeners with the intake's last message and counts by ACK code today
//! and this week, the sending facilities mapped to this practice (and a
//! form to map one), the SMTP server and SMS provider in force with a
//! "send a test message" form that reports the server's exact answer, and
//! the practice's webhook endpoints with a test ping and their last
//! deliveries. Every change is audited.

use std::collections::BTreeMap;

use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use enroll_core::{E164Phone, EmailAddress, Problem};
use enroll_notify::{OutgoingEmail, OutgoingSms, RenderedEmail};
use enroll_store::{IntakeActivity, Practice, facility_setting_key};
use jiff::{SignedDuration, Timestamp};
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::super::session::SignedIn;
use super::super::{internal, local_time, staff_page};
use super::{
    AdminForm, AdminPractice, ToolQuery, back_to_page, change_audit, csrf_field,
    practice_for_admin_form,
};
use crate::AppState;
use crate::connections::ListenerSummary;

/// Deliveries shown per webhook endpoint.
const DELIVERIES_SHOWN: i64 = 5;

fn page_path(practice_id: i64) -> String {
    format!("/admin/practices/{practice_id}/connections")
}

/// `GET /admin/practices/{id}/connections`.
pub(crate) async fn page(
    State(state): State<AppState>,
    AdminPractice(signed_in, practice, Query(q)): AdminPractice<Query<ToolQuery>>,
) -> Response {
    ConnectionsPage {
        notice: q.notice.as_deref(),
        ..ConnectionsPage::of(&practice)
    }
    .render(&state, &signed_in, StatusCode::OK)
    .await
}

#[derive(Deserialize)]
pub(crate) struct TestForm {
    csrf: String,
    #[serde(default)]
    to: String,
}

csrf_field!(TestForm, FacilityForm);

/// `POST .../connections/test-email`: one short email through the SMTP
/// server in force; its answer (accepted, or the exact refusal) is shown
/// next to the form.
pub(crate) async fn test_email(
    State(state): State<AppState>,
    AdminForm(signed_in, practice, Form(form)): AdminForm<Form<TestForm>>,
) -> Response {
    let page = ConnectionsPage {
        typed_email: Some(&form.to),
        ..ConnectionsPage::of(&practice)
    };
    let to = match EmailAddress::parse(&form.to) {
        Ok(to) => to,
        Err(problem) => {
            return ConnectionsPage {
                email_error: Some(problem_words(&problem, "email address")),
                ..page
            }
            .render(&state, &signed_in, StatusCode::UNPROCESSABLE_ENTITY)
            .await;
        }
    };
    let now = state.clock.now();
    let email = test_email_for(&state, &practice, to, now);
    let answer = state.connections.channels.email.send_email(&email).await;
    audit_test(&state, &signed_in, &practice, "email", answer.is_ok()).await;
    let result = match answer {
        Ok(()) => TestResult::accepted(format!(
            "The SMTP server accepted the test email at {}. Check that it arrives.",
            local_time(now, &practice.schedule.tz)
        )),
        Err(e) => {
            let server = state
                .connections
                .smtp_address
                .as_deref()
                .unwrap_or("the mailbox");
            TestResult::refused(format!(
                "The test email was not sent (SMTP server {server}): {}",
                e.message()
            ))
        }
    };
    ConnectionsPage {
        email_result: Some(result),
        ..page
    }
    .render(&state, &signed_in, StatusCode::OK)
    .await
}

/// `POST .../connections/test-sms`: one short text through the provider.
pub(crate) async fn test_sms(
    State(state): State<AppState>,
    AdminForm(signed_in, practice, Form(form)): AdminForm<Form<TestForm>>,
) -> Response {
    let page = ConnectionsPage {
        typed_phone: Some(&form.to),
        ..ConnectionsPage::of(&practice)
    };
    let Some(sms) = state.connections.channels.sms.clone() else {
        return ConnectionsPage {
            sms_result: Some(TestResult::refused(
                "No SMS provider is configured: set [sms] in the configuration file first.".into(),
            )),
            ..page
        }
        .render(&state, &signed_in, StatusCode::CONFLICT)
        .await;
    };
    let to = match E164Phone::parse(&form.to) {
        Ok(to) => to,
        Err(problem) => {
            return ConnectionsPage {
                phone_error: Some(problem_words(&problem, "cell phone number")),
                ..page
            }
            .render(&state, &signed_in, StatusCode::UNPROCESSABLE_ENTITY)
            .await;
        }
    };
    let text = OutgoingSms {
        to,
        body: format!(
            "Test message from Enroll for {}. No reply is needed.",
            practice.name
        ),
    };
    let answer = sms.send_sms(&text).await;
    audit_test(&state, &signed_in, &practice, "sms", answer.is_ok()).await;
    let result = match answer {
        Ok(id) => TestResult::accepted(format!(
            "The SMS provider accepted the test text (its id: {id})."
        )),
        Err(e) => TestResult::refused(format!("The test text was not sent: {}", e.message())),
    };
    ConnectionsPage {
        sms_result: Some(result),
        ..page
    }
    .render(&state, &signed_in, StatusCode::OK)
    .await
}

#[derive(Deserialize)]
pub(crate) struct FacilityForm {
    csrf: String,
    #[serde(default)]
    facility: String,
}

/// `POST .../connections/facilities`: HL7 messages whose MSH-4 is this
/// facility go to this practice.
pub(crate) async fn map_facility(
    State(state): State<AppState>,
    AdminForm(signed_in, practice, Form(form)): AdminForm<Form<FacilityForm>>,
) -> Response {
    let facility = form.facility.trim();
    if let Err(problem) = check_facility(facility) {
        return ConnectionsPage {
            facility_error: Some(problem),
            typed_facility: Some(&form.facility),
            ..ConnectionsPage::of(&practice)
        }
        .render(&state, &signed_in, StatusCode::UNPROCESSABLE_ENTITY)
        .await;
    }
    let key = facility_setting_key(facility);
    let before = match state.store.setting(&key).await {
        Ok(before) => before,
        Err(e) => return internal(e),
    };
    let audit = change_audit(
        &signed_in,
        "hl7.facility_mapped",
        &practice,
        json!({ "facility": facility, "practice": before }),
        json!({ "facility": facility, "practice": practice.code }),
    );
    let pairs = [(key.as_str(), practice.code.as_str())];
    let now = state.clock.now();
    if let Err(e) = state.store.put_settings_audited(&pairs, &audit, now).await {
        return internal(e);
    }
    let notice = format!(
        "HL7 messages from the sending facility {facility} now go to {}.",
        practice.name
    );
    back_to_page(&page_path(practice.id), &notice)
}

#[derive(Deserialize)]
pub(crate) struct PingForm {
    csrf: String,
}

/// `POST .../connections/webhooks/{endpoint}/ping`: queues a signed
/// `webhook.ping`; the webhook sender posts it, and its delivery appears
/// in the endpoint's list.
pub(crate) async fn ping(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path((id, endpoint_id)): Path<(i64, i64)>,
    axum::Form(form): axum::Form<PingForm>,
) -> Response {
    let practice = match practice_for_admin_form(&state, &signed_in, id, &form.csrf).await {
        Ok(practice) => practice,
        Err(refused) => return refused,
    };
    let endpoint = match state.store.webhook_endpoint(practice.id, endpoint_id).await {
        Ok(Some(endpoint)) => endpoint,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                "There is no such webhook endpoint for this practice.",
            )
                .into_response();
        }
        Err(e) => return internal(e),
    };
    let now = state.clock.now();
    let queued = state
        .store
        .queue_webhook_ping(&endpoint, &practice.code, &signed_in.user.username, now)
        .await;
    if let Err(e) = queued {
        return internal(e);
    }
    back_to_page(
        &page_path(practice.id),
        "Ping queued: its delivery shows below within a few seconds (reload the page).",
    )
}

/// A facility as MSH-4 carries it: 1 to 64 visible characters, no HL7
/// delimiters.
fn check_facility(facility: &str) -> Result<(), String> {
    if facility.is_empty() {
        return Err("type the sending facility (MSH-4) of the EHR's messages".into());
    }
    if facility.chars().count() > 64 {
        return Err("a sending facility is at most 64 characters".into());
    }
    if facility
        .chars()
        .any(|c| c.is_control() || matches!(c, '|' | '^' | '~' | '\\' | '&'))
    {
        return Err(
            "a sending facility cannot hold the HL7 delimiters | ^ ~ \\ & or control characters"
                .into(),
        );
    }
    Ok(())
}

fn problem_words(problem: &Problem, what: &str) -> String {
    match problem {
        Problem::Missing => format!("type the {what} to send the test to"),
        Problem::Invalid(words) => format!("this {what} {words}"),
    }
}

fn test_email_for(
    state: &AppState,
    practice: &Practice,
    to: EmailAddress,
    now: Timestamp,
) -> OutgoingEmail {
    let text = format!(
        "This is a test email from Enroll for {}, sent by an administrator from the \
         Integration Tool. No reply is needed.",
        practice.name
    );
    OutgoingEmail {
        to,
        from: state.connections.email_from.clone(),
        message_id: state.links.test_message_id(now),
        // A test email belongs to no invite: nothing to unsubscribe from,
        // so the header points at the installation itself.
        list_unsubscribe: state.links.public_root().to_string(),
        content: RenderedEmail {
            subject: format!("Enroll test email for {}", practice.name),
            html: format!("<p>{text}</p>"),
            text,
        },
    }
}

/// The audit line of a test send: which channel and whether it went, never
/// the address (it may be a patient's). A statement of its own: the send
/// changed nothing in the store a transaction could share.
async fn audit_test(
    state: &AppState,
    signed_in: &SignedIn,
    practice: &Practice,
    channel: &str,
    accepted: bool,
) {
    let after = json!({ "channel": channel, "accepted": accepted });
    let action = format!("connections.test_{channel}");
    let audit = change_audit(signed_in, &action, practice, json!(null), after);
    if let Err(e) = state.store.audit(&audit, state.clock.now()).await {
        tracing::error!(error = %e, "the test send's audit line was not written");
    }
}

#[derive(Serialize)]
struct TestResult {
    accepted: bool,
    words: String,
}

impl TestResult {
    fn accepted(words: String) -> TestResult {
        TestResult {
            accepted: true,
            words,
        }
    }

    fn refused(words: String) -> TestResult {
        TestResult {
            accepted: false,
            words,
        }
    }
}

/// The page and, after a form, what was typed and what came of it.
struct ConnectionsPage<'a> {
    practice: &'a Practice,
    notice: Option<&'a str>,
    typed_email: Option<&'a str>,
    email_error: Option<String>,
    email_result: Option<TestResult>,
    typed_phone: Option<&'a str>,
    phone_error: Option<String>,
    sms_result: Option<TestResult>,
    typed_facility: Option<&'a str>,
    facility_error: Option<String>,
}

impl<'a> ConnectionsPage<'a> {
    fn of(practice: &'a Practice) -> ConnectionsPage<'a> {
        ConnectionsPage {
            practice,
            notice: None,
            typed_email: None,
            email_error: None,
            email_result: None,
            typed_phone: None,
            phone_error: None,
            sms_result: None,
            typed_facility: None,
            facility_error: None,
        }
    }

    async fn render(self, state: &AppState, signed_in: &SignedIn, status: StatusCode) -> Response {
        let now = state.clock.now();
        let tz = &self.practice.schedule.tz;
        // The start of the practice's day (DST-safe: the first instant of
        // the local date).
        let midnight = tz
            .to_datetime(now)
            .date()
            .to_datetime(jiff::civil::Time::midnight());
        let today = tz.to_timestamp(midnight).unwrap_or(now);
        let week = now - SignedDuration::from_hours(24 * 7);
        let listeners = state.connections.mllp_listeners();
        let names: Vec<&str> = listeners.iter().map(|l| l.name).collect();
        let activity = match state.store.intake_activity(&names, today, week).await {
            Ok(activity) => activity,
            Err(e) => return internal(e),
        };
        let facilities = match facilities_of(state, self.practice).await {
            Ok(facilities) => facilities,
            Err(e) => return internal(e),
        };
        let webhooks = match webhooks_of(state, self.practice).await {
            Ok(webhooks) => webhooks,
            Err(e) => return internal(e),
        };
        let connections = &state.connections;
        let errors: BTreeMap<&str, &String> = [
            ("test-email-to", self.email_error.as_ref()),
            ("test-sms-to", self.phone_error.as_ref()),
            ("facility", self.facility_error.as_ref()),
        ]
        .into_iter()
        .filter_map(|(id, e)| e.map(|e| (id, e)))
        .collect();
        staff_page(
            status,
            "staff_connections.html",
            signed_in,
            context! {
                practice => json!({ "id": self.practice.id, "name": self.practice.name, "code": self.practice.code }),
                notice => self.notice,
                errors,
                listeners => listener_views(&listeners, &activity, tz),
                unnamed => activity.iter().find(|a| a.listener.is_none()).map(|a| ack_rows(&a.by_ack_code)),
                allow => connections.mllp_allow,
                senders => connections.mllp_senders,
                client_certificates => connections.mllp_client_certificates,
                facilities,
                typed_facility => self.typed_facility,
                facility_error => self.facility_error,
                smtp => connections.smtp,
                email_from => connections.email_from,
                typed_email => self.typed_email,
                email_error => self.email_error,
                email_result => self.email_result,
                sms => connections.sms,
                typed_phone => self.typed_phone,
                phone_error => self.phone_error,
                sms_result => self.sms_result,
                webhooks,
            },
        )
    }
}

/// Each listener with its own newest message and counts by ACK code.
fn listener_views(
    listeners: &[ListenerSummary],
    activity: &[IntakeActivity],
    tz: &jiff::tz::TimeZone,
) -> Vec<serde_json::Value> {
    listeners
        .iter()
        .map(|l| {
            let mine = activity
                .iter()
                .find(|a| a.listener.as_deref() == Some(l.name));
            json!({
                "name": l.name,
                "address": l.address,
                "tls": l.tls,
                "last_message": mine.and_then(|a| a.last_received_at).map(|t| local_time(t, tz)),
                "ack_codes": mine.map(|a| ack_rows(&a.by_ack_code)).unwrap_or_default(),
            })
        })
        .collect()
}

fn ack_rows(counts: &[(String, i64, i64)]) -> Vec<serde_json::Value> {
    counts
        .iter()
        .map(|(code, today, week)| {
            json!({ "code": code, "words": ack_words(code), "today": today, "week": week })
        })
        .collect()
}

fn ack_words(code: &str) -> &'static str {
    match code {
        "AA" => "accepted",
        "AE" => "error (the sender should fix and resend)",
        "AR" => "rejected",
        _ => "other",
    }
}

/// The facilities whose messages come to this practice: the mapped ones,
/// and its own code (a facility that is a practice's code needs no mapping).
async fn facilities_of(
    state: &AppState,
    practice: &Practice,
) -> enroll_store::Result<Vec<serde_json::Value>> {
    let prefix = facility_setting_key("");
    let mapped = state.store.settings_with_prefix(&prefix).await?;
    let mut facilities: Vec<serde_json::Value> = mapped
        .into_iter()
        .filter(|(_, code)| *code == practice.code)
        .map(|(key, _)| json!({ "facility": key.trim_start_matches(&prefix), "how": "mapped" }))
        .collect();
    facilities.push(json!({ "facility": practice.code, "how": "the practice's own code" }));
    Ok(facilities)
}

async fn webhooks_of(
    state: &AppState,
    practice: &Practice,
) -> enroll_store::Result<Vec<serde_json::Value>> {
    let tz = &practice.schedule.tz;
    let mut views = Vec::new();
    for endpoint in state.store.webhook_endpoints(practice.id).await? {
        let deliveries: Vec<_> = state
            .store
            .webhook_deliveries(endpoint.id, DELIVERIES_SHOWN)
            .await?
            .into_iter()
            .map(|d| {
                json!({
                    "event": d.event_type,
                    "state": d.state,
                    "at": local_time(d.last_attempt_at.unwrap_or(d.created_at), tz),
                    "answer": d.last_status.map(|s| format!("HTTP {s}")).or(d.last_error).unwrap_or_default(),
                })
            })
            .collect();
        views.push(json!({
            "id": endpoint.id,
            "url": endpoint.url,
            "enabled": endpoint.enabled,
            "events": endpoint.events.iter().map(|e| e.key()).collect::<Vec<_>>(),
            "deliveries": deliveries,
        }));
    }
    Ok(views)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_facility_is_what_msh_4_can_carry() {
        assert!(check_facility("RIVERSIDE").is_ok());
        assert!(check_facility("North Clinic 2").is_ok());
        assert!(
            check_facility("")
                .unwrap_err()
                .contains("type the sending facility")
        );
        assert!(check_facility("A|B").unwrap_err().contains("delimiters"));
        assert!(check_facility(&"x".repeat(65)).unwrap_err().contains("64"));
    }
}
