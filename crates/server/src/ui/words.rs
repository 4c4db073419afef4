//! The timeline and the invite history in plain words for the chart.

use enroll_core::{GO_LIVE_TRIGGER, StaffStatus};
use enroll_store::{Invite, TimelineEntry};
use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::Value;

use super::local_time;

fn text<'a>(detail: &'a Value, key: &str) -> &'a str {
    detail.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A detail's list of words joined: `["email", "sms"]` -> "email and sms".
fn joined(detail: &Value, key: &str, separator: &str) -> String {
    detail
        .get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(separator)
        })
        .unwrap_or_default()
}

/// A recorded decision's tag in words: "send now", "suppressed", ...
fn decision_words(detail: &Value) -> String {
    detail
        .get("decision")
        .and_then(|v| v.get("decision").or(Some(v)))
        .and_then(Value::as_str)
        .unwrap_or("recorded")
        .replace('_', " ")
}

/// One timeline line, e.g. "Invite 12 sent by email and text message".
pub(crate) fn timeline_words(e: &TimelineEntry) -> String {
    let d = &e.detail;
    let invite = d.get("invite_id").and_then(Value::as_i64).unwrap_or(0);
    match e.kind.as_str() {
        "chart_added" => "Chart added".into(),
        "demographics_updated" => {
            let changed = joined(d, "required_fields_changed", ", ");
            if changed.is_empty() {
                "Demographics updated".into()
            } else {
                format!("Demographics updated (required fields changed: {changed})")
            }
        }
        "trigger" => format!(
            "Trigger: {} ({})",
            text(d, "trigger").replace('_', " "),
            decision_words(d)
        ),
        "invite_queued" => format!("Invite {invite} queued ({})", text(d, "kind")),
        "go_live_invite" => format!(
            "Go-live invite (Invite existing patients): {}",
            decision_words(d)
        ),
        "enroll_now_refused" => format!("Enroll Now refused: {}", text(d, "message")),
        "in_person_refused" => format!("Enroll in person refused: {}", text(d, "message")),
        "activated" => "The patient activated the portal account".into(),
        "deceased" => "Recorded as deceased".into(),
        "invite_cancelled" => format!("Invite {invite} cancelled: {}", text(d, "reason")),
        "invite_rescheduled" => format!("Invite {invite} waits for the Auto Invite Schedule"),
        "invite_suppressed" => format!(
            "Invite {invite} not sent: the cap of 4 in 30 days (next possible {})",
            text(d, "next_possible_at")
        ),
        "invite_resent_after_interruption" => {
            format!("Invite {invite} sent again after an interruption")
        }
        "invite_sent" if joined(d, "channels", ",") == "in_person" => {
            format!("Invite {invite} handed over in person (QR code and short code)")
        }
        "invite_sent" => {
            let channels = joined(d, "channels", " and ");
            format!("Invite {invite} sent by {channels}")
        }
        "invite_retry_scheduled" => {
            format!("Invite {invite} will be retried: {}", text(d, "reason"))
        }
        "invite_failed" => format!(
            "Invite {invite} could not be delivered: {}",
            text(d, "reason")
        ),
        "email_opted_out" => "The patient unsubscribed from invitation emails".into(),
        "sms_opted_out" => "The patient's cell phone opted out of texts".into(),
        "sms_opted_in" => "The patient's cell phone opted back in to texts".into(),
        "encounter" => format!("Encounter (visit {})", text(d, "visit_number")),
        "chart_merged" => "Another chart was merged into this one".into(),
        "merged_into" => "This chart was merged into another".into(),
        "mrn_changed" => "MRN changed by a merge".into(),
        "fields_confirmed" => "Required fields confirmed with the patient".into(),
        "response_recorded" => format!("The patient {} the portal", text(d, "response")),
        "response_removed" => format!("The patient's response ({}) was removed", text(d, "was")),
        kind if kind.starts_with("appointment_") => {
            let starts = text(d, "starts_at");
            let change = kind.trim_start_matches("appointment_");
            if starts.is_empty() {
                format!("Appointment {change}")
            } else {
                format!("Appointment {change} for {starts}")
            }
        }
        other => other.replace('_', " "),
    }
}

/// The status in words with times in the practice's zone (the core's
/// words give UTC, which is right for the API and wrong for a front desk).
pub(crate) fn status_line(status: &StaffStatus, tz: &TimeZone) -> String {
    match status {
        StaffStatus::Pending {
            invited_at,
            sends_in_30_days,
            delivery,
        } => format!(
            "Invited {}: {sends_in_30_days} of 4 invitations in the last 30 days; {delivery}.",
            local_time(*invited_at, tz)
        ),
        other => other.words(),
    }
}

/// One row of the invite history.
#[derive(Serialize)]
pub(crate) struct InviteLine {
    id: i64,
    created: String,
    how: String,
    state: &'static str,
    channels: String,
    sent: Option<String>,
    note: Option<String>,
}

pub(crate) fn invite_words(
    invite: &Invite,
    timeline: &[TimelineEntry],
    tz: &TimeZone,
) -> InviteLine {
    let channels = timeline
        .iter()
        .rev()
        .find(|e| {
            e.kind == "invite_sent"
                && e.detail.get("invite_id").and_then(Value::as_i64) == Some(invite.id)
        })
        .map(|e| joined(&e.detail, "channels", ", ").replace('_', " "))
        .unwrap_or_default();
    let how = match (&invite.actor, &invite.trigger) {
        (Some(actor), _) if channels == "in person" => format!("In person by {actor}"),
        (Some(actor), _) => format!("Enroll Now by {actor}"),
        (None, Some(trigger)) if trigger == GO_LIVE_TRIGGER => "Go-live invite".to_string(),
        (None, Some(trigger)) => format!("Auto: {}", trigger.replace('_', " ")),
        (None, None) => invite.kind.key().to_string(),
    };
    InviteLine {
        id: invite.id,
        created: local_time(invite.created_at, tz),
        how,
        state: invite.state.key(),
        channels,
        sent: invite.sent_at.map(|t| local_time(t, tz)),
        note: invite.failure_reason.clone().or_else(|| {
            invite
                .next_possible_at
                .map(|t| format!("next possible {}", local_time(t, tz)))
        }),
    }
}
