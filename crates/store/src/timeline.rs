//! The patient's timeline (DESIGN section 4: every state change is a line,
//! which is also the audit trail): what can happen to a patient, typed,
//! and the one place that turns it into the `kind` and `detail` columns.
//!
//! The stored text is what staff and the timeline API read, and older rows
//! keep it, so each event's kind and detail keys are fixed (see the test).

use enroll_core::{AutoDecision, Channel, Field, InviteKind, PatientResponse, Refusal, Trigger};
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;

use crate::batch::BatchRow;
use crate::engine::{Col, JsonRows, to_json};
use crate::tx::{Tx, on_tx};
use crate::webhooks::WebhookEvent;
use crate::{Result, Source, to_ms};

/// What happened to an appointment, as its timeline line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AppointmentChange {
    Booked,
    /// A booking we already had, sent again.
    Repeated,
    Rescheduled,
    Modified,
    Cancelled,
}

/// One line of a patient's timeline.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TimelineEvent<'a> {
    ChartAdded,
    DemographicsUpdated {
        required_fields_changed: &'a [Field],
    },
    /// A trigger of R2 and what the rules decided for it.
    Trigger {
        trigger: &'a Trigger,
        decision: &'a AutoDecision,
        invite_id: Option<i64>,
    },
    InviteQueued {
        invite_id: i64,
        kind: InviteKind,
    },
    /// A chart's turn in an "Invite existing patients" run (go-live) and
    /// what the rules decided for it.
    GoLiveInvite {
        run_id: i64,
        decision: &'a AutoDecision,
        invite_id: Option<i64>,
    },
    EnrollNowRefused {
        refusal: &'a Refusal,
    },
    /// "Enroll in person" refused by the rules of R9 (the same refusals).
    InPersonRefused {
        refusal: &'a Refusal,
    },
    Activated,
    Deceased,
    InviteCancelled {
        invite_id: i64,
        reason: &'a str,
    },
    InviteRescheduled {
        invite_id: i64,
        due_at: Timestamp,
        /// Said when it is not the schedule (R13's limits).
        reason: Option<&'a str>,
    },
    InviteSuppressed {
        invite_id: i64,
        next_possible_at: Timestamp,
        /// Said when it is not the plain cap (a merge combined two histories).
        reason: Option<&'a str>,
    },
    InviteResentAfterInterruption {
        invite_id: i64,
        attempt: i64,
    },
    InviteSent {
        invite_id: i64,
        channels: &'a [Channel],
        attempt: i64,
        other_channel: Option<&'a str>,
    },
    InviteRetryScheduled {
        invite_id: i64,
        attempt: i64,
        retry_at: Timestamp,
        reason: &'a str,
    },
    InviteFailed {
        invite_id: i64,
        attempt: i64,
        reason: &'a str,
    },
    EmailOptedOut {
        invite_id: i64,
    },
    SmsOptedOut,
    SmsOptedIn,
    Encounter {
        encounter_id: i64,
        visit_number: &'a str,
    },
    Appointment {
        change: AppointmentChange,
        appointment_id: &'a str,
        starts_at: Option<&'a str>,
    },
    /// On the surviving chart of an A40.
    ChartMerged {
        merged_patient_id: i64,
    },
    /// On the chart merged away.
    MergedInto {
        surviving_patient_id: i64,
    },
    /// The merged chart was the only one known and took the surviving MRN.
    MrnChanged,
    /// R11: staff confirmed the required fields with the patient.
    FieldsConfirmed,
    /// Staff recorded that the patient declined or deferred the portal.
    ResponseRecorded {
        response: PatientResponse,
    },
    /// Staff removed that response (explicit, confirmed, audited).
    ResponseRemoved {
        was: PatientResponse,
    },
    /// R10: a wrong date of birth or ZIP code on an activation link (which
    /// of the two is not recorded either); `locked` once it was the last.
    ActivationIdentityFailed {
        invite_id: i64,
        failures: i64,
        locked: bool,
    },
    ActivationIdentityConfirmed {
        invite_id: i64,
    },
    /// The one-time code went out (channel "email" or "sms").
    ActivationCodeSent {
        invite_id: i64,
        channel: &'a str,
    },
    ActivationCodeFailed {
        invite_id: i64,
        failures: i64,
    },
    /// A form was sent on a link that no longer works ("used", "locked",
    /// "expired").
    ActivationRefused {
        invite_id: i64,
        link: &'a str,
    },
}

/// Why an invite is sent a second time with the same Message-ID.
const RESENT_NOTE: &str = "the previous attempt stopped after handing the invite over; \
                           sending again with the same Message-ID";

impl TimelineEvent<'_> {
    /// The `kind` column.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            TimelineEvent::ChartAdded => "chart_added",
            TimelineEvent::DemographicsUpdated { .. } => "demographics_updated",
            TimelineEvent::Trigger { .. } => "trigger",
            TimelineEvent::InviteQueued { .. } => "invite_queued",
            TimelineEvent::GoLiveInvite { .. } => "go_live_invite",
            TimelineEvent::EnrollNowRefused { .. } => "enroll_now_refused",
            TimelineEvent::InPersonRefused { .. } => "in_person_refused",
            TimelineEvent::Activated => "activated",
            TimelineEvent::Deceased => "deceased",
            TimelineEvent::InviteCancelled { .. } => "invite_cancelled",
            TimelineEvent::InviteRescheduled { .. } => "invite_rescheduled",
            TimelineEvent::InviteSuppressed { .. } => "invite_suppressed",
            TimelineEvent::InviteResentAfterInterruption { .. } => {
                "invite_resent_after_interruption"
            }
            TimelineEvent::InviteSent { .. } => "invite_sent",
            TimelineEvent::InviteRetryScheduled { .. } => "invite_retry_scheduled",
            TimelineEvent::InviteFailed { .. } => "invite_failed",
            TimelineEvent::EmailOptedOut { .. } => "email_opted_out",
            TimelineEvent::SmsOptedOut => "sms_opted_out",
            TimelineEvent::SmsOptedIn => "sms_opted_in",
            TimelineEvent::Encounter { .. } => "encounter",
            TimelineEvent::Appointment { change, .. } => match change {
                AppointmentChange::Booked => "appointment_booked",
                AppointmentChange::Repeated => "appointment_repeated",
                AppointmentChange::Rescheduled => "appointment_rescheduled",
                AppointmentChange::Modified => "appointment_modified",
                AppointmentChange::Cancelled => "appointment_cancelled",
            },
            TimelineEvent::ChartMerged { .. } => "chart_merged",
            TimelineEvent::MergedInto { .. } => "merged_into",
            TimelineEvent::MrnChanged => "mrn_changed",
            TimelineEvent::FieldsConfirmed => "fields_confirmed",
            TimelineEvent::ResponseRecorded { .. } => "response_recorded",
            TimelineEvent::ResponseRemoved { .. } => "response_removed",
            TimelineEvent::ActivationIdentityFailed { .. } => "activation_identity_failed",
            TimelineEvent::ActivationIdentityConfirmed { .. } => "activation_identity_confirmed",
            TimelineEvent::ActivationCodeSent { .. } => "activation_code_sent",
            TimelineEvent::ActivationCodeFailed { .. } => "activation_code_failed",
            TimelineEvent::ActivationRefused { .. } => "activation_refused",
        }
    }

    /// The `detail` column, a JSON object.
    pub(crate) fn detail(&self) -> Value {
        match self {
            TimelineEvent::ChartAdded
            | TimelineEvent::Activated
            | TimelineEvent::Deceased
            | TimelineEvent::SmsOptedOut
            | TimelineEvent::SmsOptedIn
            | TimelineEvent::MrnChanged
            | TimelineEvent::FieldsConfirmed => json!({}),
            TimelineEvent::ResponseRecorded { response } => json!({ "response": response }),
            TimelineEvent::ResponseRemoved { was } => json!({ "was": was }),
            TimelineEvent::DemographicsUpdated {
                required_fields_changed,
            } => json!({ "required_fields_changed": required_fields_changed }),
            TimelineEvent::Trigger {
                trigger,
                decision,
                invite_id,
            } => json!({ "trigger": trigger, "decision": decision, "invite_id": invite_id }),
            TimelineEvent::InviteQueued { invite_id, kind } => {
                json!({ "invite_id": invite_id, "kind": kind })
            }
            TimelineEvent::GoLiveInvite {
                run_id,
                decision,
                invite_id,
            } => json!({ "run_id": run_id, "decision": decision, "invite_id": invite_id }),
            TimelineEvent::EnrollNowRefused { refusal }
            | TimelineEvent::InPersonRefused { refusal } => {
                json!({ "refusal": refusal, "message": refusal.message() })
            }
            TimelineEvent::InviteCancelled { invite_id, reason } => {
                json!({ "invite_id": invite_id, "reason": reason })
            }
            TimelineEvent::InviteRescheduled {
                invite_id,
                due_at,
                reason,
            } => with_reason(json!({ "invite_id": invite_id, "due_at": due_at }), *reason),
            TimelineEvent::InviteSuppressed {
                invite_id,
                next_possible_at,
                reason,
            } => with_reason(
                json!({ "invite_id": invite_id, "next_possible_at": next_possible_at }),
                *reason,
            ),
            TimelineEvent::InviteResentAfterInterruption { invite_id, attempt } => {
                json!({ "invite_id": invite_id, "attempt": attempt, "note": RESENT_NOTE })
            }
            TimelineEvent::InviteSent {
                invite_id,
                channels,
                attempt,
                other_channel,
            } => json!({ "invite_id": invite_id, "channels": channels, "attempt": attempt,
                "other_channel": other_channel }),
            TimelineEvent::InviteRetryScheduled {
                invite_id,
                attempt,
                retry_at,
                reason,
            } => json!({ "invite_id": invite_id, "attempt": attempt, "retry_at": retry_at,
                "reason": reason }),
            TimelineEvent::InviteFailed {
                invite_id,
                attempt,
                reason,
            } => json!({ "invite_id": invite_id, "attempt": attempt, "reason": reason }),
            TimelineEvent::EmailOptedOut { invite_id } => json!({ "invite_id": invite_id }),
            TimelineEvent::Encounter {
                encounter_id,
                visit_number,
            } => json!({ "encounter_id": encounter_id, "visit_number": visit_number }),
            TimelineEvent::Appointment {
                appointment_id,
                starts_at,
                ..
            } => json!({ "appointment_id": appointment_id, "starts_at": starts_at }),
            TimelineEvent::ChartMerged { merged_patient_id } => {
                json!({ "merged_patient_id": merged_patient_id })
            }
            TimelineEvent::MergedInto {
                surviving_patient_id,
            } => json!({ "surviving_patient_id": surviving_patient_id }),
            TimelineEvent::ActivationIdentityFailed {
                invite_id,
                failures,
                locked,
            } => json!({ "invite_id": invite_id, "failures": failures, "locked": locked }),
            TimelineEvent::ActivationIdentityConfirmed { invite_id } => {
                json!({ "invite_id": invite_id })
            }
            TimelineEvent::ActivationCodeSent { invite_id, channel } => {
                json!({ "invite_id": invite_id, "channel": channel })
            }
            TimelineEvent::ActivationCodeFailed {
                invite_id,
                failures,
            } => json!({ "invite_id": invite_id, "failures": failures }),
            TimelineEvent::ActivationRefused { invite_id, link } => {
                json!({ "invite_id": invite_id, "link": link })
            }
        }
    }
}

/// `detail` with a `reason` key added when there is one (absent, not
/// null, when there is none).
fn with_reason(mut detail: Value, reason: Option<&str>) -> Value {
    if let Some(reason) = reason {
        detail["reason"] = json!(reason);
    }
    detail
}

/// One line of a patient's timeline as [`Tx::timeline_rows`] writes it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TimelineRow {
    pub patient_id: i64,
    pub kind: &'static str,
    /// The `detail` column: a JSON object as text.
    pub detail: String,
    /// The webhook event the line is, published with it.
    #[serde(skip)]
    pub webhook: Option<WebhookEvent>,
}

impl BatchRow for TimelineRow {
    const COLUMNS: &'static [(&'static str, Col)] = &[
        ("patient_id", Col::Int),
        ("kind", Col::Text),
        ("detail", Col::Text),
    ];
}

impl TimelineRow {
    pub(crate) fn new(patient_id: i64, event: &TimelineEvent<'_>) -> TimelineRow {
        TimelineRow {
            patient_id,
            kind: event.kind(),
            detail: event.detail().to_string(),
            webhook: WebhookEvent::of(event),
        }
    }
}

impl Tx {
    /// Appends one line to the patient's timeline, and publishes the
    /// webhook event it is, if any (see `crate::webhooks`).
    pub(crate) async fn timeline(
        &mut self,
        patient_id: i64,
        at: Timestamp,
        event: &TimelineEvent<'_>,
        source: &Source,
    ) -> Result<()> {
        let kind = event.kind();
        let detail = event.detail().to_string();
        on_tx!(self, c => {
            sqlx::query(
                "INSERT INTO timeline (patient_id, at, kind, detail, source, reference, actor) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(patient_id)
            .bind(to_ms(at))
            .bind(kind)
            .bind(&detail)
            .bind(&source.channel)
            .bind(&source.reference)
            .bind(&source.actor)
            .execute(c)
            .await.map(|r| r.rows_affected())
        })?;
        match WebhookEvent::of(event) {
            Some(webhook) => self.publish_webhooks(&[(patient_id, webhook)], at).await,
            None => Ok(()),
        }
    }

    /// Appends `rows` to the timeline in one statement, all at `at` and by
    /// the same source, and publishes the webhook events among them.
    pub(crate) async fn timeline_rows(
        &mut self,
        rows: &[TimelineRow],
        at: i64,
        source: &crate::Source,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let table = JsonRows::new(self.engine(), 1, TimelineRow::COLUMNS).table();
        let sql = format!(
            "INSERT INTO timeline (patient_id, at, kind, detail, source, reference, actor) \
             SELECT v.patient_id, $2, v.kind, v.detail, $3, $4, $5 FROM {table}"
        );
        let json = to_json(rows)?;
        let persistent = self.keeps_batch_plans();
        on_tx!(self, c => {
            sqlx::query(AssertSqlSafe(sql.as_str()))
                .persistent(persistent)
                .bind(&json)
                .bind(at)
                .bind(&source.channel)
                .bind(&source.reference)
                .bind(&source.actor)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        let webhooks: Vec<(i64, WebhookEvent)> = rows
            .iter()
            .filter_map(|row| row.webhook.clone().map(|event| (row.patient_id, event)))
            .collect();
        self.publish_webhooks(&webhooks, crate::from_ms(at)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// Each event against the kind and detail its writer stored before the
    /// events were typed (the `json!` literal each call site had).
    #[test]
    fn every_event_keeps_the_kind_and_detail_it_was_stored_with() {
        let at = ts("2026-11-24T13:00:00Z");
        let fields = [Field::Email, Field::Zip];
        let trigger = Trigger::RequiredFieldsChanged {
            fields: fields.to_vec(),
        };
        let decision = AutoDecision::Queue { at };
        let refusal = Refusal::CapReached {
            next_possible_at: at,
        };
        let channels = [Channel::Email, Channel::Sms];
        let rows: Vec<(TimelineEvent, &str, Value)> = vec![
            (TimelineEvent::ChartAdded, "chart_added", json!({})),
            (
                TimelineEvent::GoLiveInvite {
                    run_id: 3,
                    decision: &decision,
                    invite_id: None,
                },
                "go_live_invite",
                json!({
                    "run_id": 3,
                    "decision": { "decision": "queue", "at": "2026-11-24T13:00:00Z" },
                    "invite_id": null,
                }),
            ),
            (
                TimelineEvent::DemographicsUpdated {
                    required_fields_changed: &fields,
                },
                "demographics_updated",
                json!({ "required_fields_changed": ["email", "zip"] }),
            ),
            (
                TimelineEvent::Trigger {
                    trigger: &trigger,
                    decision: &decision,
                    invite_id: Some(7),
                },
                "trigger",
                json!({
                    "trigger": { "kind": "required_fields_changed", "fields": ["email", "zip"] },
                    "decision": { "decision": "queue", "at": "2026-11-24T13:00:00Z" },
                    "invite_id": 7,
                }),
            ),
            (
                TimelineEvent::Trigger {
                    trigger: &Trigger::ChartAdded,
                    decision: &AutoDecision::Coalesced,
                    invite_id: None,
                },
                "trigger",
                json!({
                    "trigger": { "kind": "chart_added" },
                    "decision": { "decision": "coalesced" },
                    "invite_id": null,
                }),
            ),
            (
                TimelineEvent::InviteQueued {
                    invite_id: 7,
                    kind: InviteKind::Manual,
                },
                "invite_queued",
                json!({ "invite_id": 7, "kind": "manual" }),
            ),
            (
                TimelineEvent::EnrollNowRefused { refusal: &refusal },
                "enroll_now_refused",
                json!({
                    "refusal": { "reason": "cap_reached", "next_possible_at": "2026-11-24T13:00:00Z" },
                    "message": refusal.message(),
                }),
            ),
            (
                TimelineEvent::InPersonRefused { refusal: &refusal },
                "in_person_refused",
                json!({
                    "refusal": { "reason": "cap_reached", "next_possible_at": "2026-11-24T13:00:00Z" },
                    "message": refusal.message(),
                }),
            ),
            (TimelineEvent::Activated, "activated", json!({})),
            (TimelineEvent::Deceased, "deceased", json!({})),
            (
                TimelineEvent::InviteCancelled {
                    invite_id: 7,
                    reason: "superseded",
                },
                "invite_cancelled",
                json!({ "invite_id": 7, "reason": "superseded" }),
            ),
            (
                TimelineEvent::InviteRescheduled {
                    invite_id: 7,
                    due_at: at,
                    reason: None,
                },
                "invite_rescheduled",
                json!({ "invite_id": 7, "due_at": "2026-11-24T13:00:00Z" }),
            ),
            (
                TimelineEvent::InviteRescheduled {
                    invite_id: 7,
                    due_at: at,
                    reason: Some("SMS limit for this number"),
                },
                "invite_rescheduled",
                json!({ "invite_id": 7, "due_at": "2026-11-24T13:00:00Z",
                    "reason": "SMS limit for this number" }),
            ),
            (
                TimelineEvent::InviteSuppressed {
                    invite_id: 7,
                    next_possible_at: at,
                    reason: None,
                },
                "invite_suppressed",
                json!({ "invite_id": 7, "next_possible_at": "2026-11-24T13:00:00Z" }),
            ),
            (
                TimelineEvent::InviteSuppressed {
                    invite_id: 7,
                    next_possible_at: at,
                    reason: Some("merged"),
                },
                "invite_suppressed",
                json!({ "invite_id": 7, "next_possible_at": "2026-11-24T13:00:00Z",
                    "reason": "merged" }),
            ),
            (
                TimelineEvent::InviteResentAfterInterruption {
                    invite_id: 7,
                    attempt: 2,
                },
                "invite_resent_after_interruption",
                json!({ "invite_id": 7, "attempt": 2,
                    "note": "the previous attempt stopped after handing the invite over; sending again with the same Message-ID" }),
            ),
            (
                TimelineEvent::InviteSent {
                    invite_id: 7,
                    channels: &channels,
                    attempt: 1,
                    other_channel: None,
                },
                "invite_sent",
                json!({ "invite_id": 7, "channels": ["email", "sms"], "attempt": 1,
                    "other_channel": null }),
            ),
            (
                TimelineEvent::InviteRetryScheduled {
                    invite_id: 7,
                    attempt: 1,
                    retry_at: at,
                    reason: "email: timed out",
                },
                "invite_retry_scheduled",
                json!({ "invite_id": 7, "attempt": 1, "retry_at": "2026-11-24T13:00:00Z",
                    "reason": "email: timed out" }),
            ),
            (
                TimelineEvent::InviteFailed {
                    invite_id: 7,
                    attempt: 8,
                    reason: "email: rejected",
                },
                "invite_failed",
                json!({ "invite_id": 7, "attempt": 8, "reason": "email: rejected" }),
            ),
            (
                TimelineEvent::EmailOptedOut { invite_id: 7 },
                "email_opted_out",
                json!({ "invite_id": 7 }),
            ),
            (TimelineEvent::SmsOptedOut, "sms_opted_out", json!({})),
            (TimelineEvent::SmsOptedIn, "sms_opted_in", json!({})),
            (
                TimelineEvent::Encounter {
                    encounter_id: 3,
                    visit_number: "V1",
                },
                "encounter",
                json!({ "encounter_id": 3, "visit_number": "V1" }),
            ),
            (
                TimelineEvent::ChartMerged {
                    merged_patient_id: 4,
                },
                "chart_merged",
                json!({ "merged_patient_id": 4 }),
            ),
            (
                TimelineEvent::MergedInto {
                    surviving_patient_id: 5,
                },
                "merged_into",
                json!({ "surviving_patient_id": 5 }),
            ),
            (TimelineEvent::MrnChanged, "mrn_changed", json!({})),
            (
                TimelineEvent::FieldsConfirmed,
                "fields_confirmed",
                json!({}),
            ),
            (
                TimelineEvent::ResponseRecorded {
                    response: PatientResponse::Declined,
                },
                "response_recorded",
                json!({ "response": "declined" }),
            ),
            (
                TimelineEvent::ResponseRemoved {
                    was: PatientResponse::Deferred,
                },
                "response_removed",
                json!({ "was": "deferred" }),
            ),
            (
                TimelineEvent::ActivationIdentityFailed {
                    invite_id: 7,
                    failures: 5,
                    locked: true,
                },
                "activation_identity_failed",
                json!({ "invite_id": 7, "failures": 5, "locked": true }),
            ),
            (
                TimelineEvent::ActivationIdentityConfirmed { invite_id: 7 },
                "activation_identity_confirmed",
                json!({ "invite_id": 7 }),
            ),
            (
                TimelineEvent::ActivationCodeSent {
                    invite_id: 7,
                    channel: "email",
                },
                "activation_code_sent",
                json!({ "invite_id": 7, "channel": "email" }),
            ),
            (
                TimelineEvent::ActivationCodeFailed {
                    invite_id: 7,
                    failures: 1,
                },
                "activation_code_failed",
                json!({ "invite_id": 7, "failures": 1 }),
            ),
            (
                TimelineEvent::ActivationRefused {
                    invite_id: 7,
                    link: "locked",
                },
                "activation_refused",
                json!({ "invite_id": 7, "link": "locked" }),
            ),
        ];
        let appointments = [
            (AppointmentChange::Booked, "appointment_booked"),
            (AppointmentChange::Repeated, "appointment_repeated"),
            (AppointmentChange::Rescheduled, "appointment_rescheduled"),
            (AppointmentChange::Modified, "appointment_modified"),
            (AppointmentChange::Cancelled, "appointment_cancelled"),
        ];
        let mut rows = rows;
        rows.extend(appointments.map(|(change, kind)| {
            (
                TimelineEvent::Appointment {
                    change,
                    appointment_id: "A1",
                    starts_at: None,
                },
                kind,
                json!({ "appointment_id": "A1", "starts_at": null }),
            )
        }));
        for (event, kind, detail) in &rows {
            assert_eq!(event.kind(), *kind, "{event:?}");
            assert_eq!(&event.detail(), detail, "{event:?}");
            let row = TimelineRow::new(1, event);
            assert_eq!(row.detail, detail.to_string(), "{event:?}");
            crate::batch::assert_columns(&row);
        }
    }
}
