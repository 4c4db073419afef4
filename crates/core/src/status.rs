//! R14: the status staff see, always with words.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::cap::CAP_MAX_SENDS;
use crate::policy::{Ineligible, PatientFacts, PatientResponse};

/// The latest invite, as the status needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteSummary {
    /// The outbox state: scheduled (waiting for the schedule to open),
    /// queued (waiting for delivery), sent, failed, suppressed, cancelled.
    pub state: String,
    pub created_at: Timestamp,
    pub failure_reason: Option<String>,
    /// For a suppressed invite: when a send becomes possible again.
    pub next_possible_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StaffStatus {
    Active,
    Deceased,
    Declined,
    Deferred,
    OptedOut,
    DeliveryFailed {
        reason: String,
    },
    Pending {
        invited_at: Timestamp,
        sends_in_30_days: usize,
        delivery: String,
    },
    NotEnrolled {
        reasons: Vec<Ineligible>,
    },
}

impl StaffStatus {
    /// One line for staff, e.g. "Pending: invited 2026-11-20T14:00:00Z,
    /// 2 of 4 sends in 30 days, sent".
    pub fn words(&self) -> String {
        match self {
            StaffStatus::Active => "Active: the patient has activated the portal".to_string(),
            StaffStatus::Deceased => {
                "Deceased: the patient is recorded as deceased and is never invited".to_string()
            }
            StaffStatus::Declined => format!("Declined: {}", Ineligible::Declined.message()),
            StaffStatus::Deferred => format!("Deferred: {}", Ineligible::Deferred.message()),
            StaffStatus::OptedOut => format!("Opted out: {}", Ineligible::OptedOut.message()),
            StaffStatus::DeliveryFailed { reason } => {
                format!("Delivery failed: {reason}; fix the address and send again")
            }
            StaffStatus::Pending {
                invited_at,
                sends_in_30_days,
                delivery,
            } => format!(
                "Pending: invited {invited_at}, {sends_in_30_days} of {CAP_MAX_SENDS} sends in 30 days, {delivery}"
            ),
            StaffStatus::NotEnrolled { reasons } => {
                let words: Vec<String> = reasons.iter().map(Ineligible::message).collect();
                format!("Not enrolled: {}", words.join("; "))
            }
        }
    }
}

/// Precedence: active, deceased, declined, deferred, opted out, delivery
/// failed (latest invite failed), pending (latest invite scheduled, queued
/// or sent), not enrolled (with every reason: missing fields, auto invites
/// off, not yet invited, suppressed by the cap...).
pub fn staff_status(
    patient: &PatientFacts,
    auto_invites_on: bool,
    latest_invite: Option<&InviteSummary>,
    sends_in_30_days: usize,
) -> StaffStatus {
    if patient.activated {
        return StaffStatus::Active;
    }
    if patient.deceased {
        return StaffStatus::Deceased;
    }
    match patient.response {
        Some(PatientResponse::Declined) => return StaffStatus::Declined,
        Some(PatientResponse::Deferred) => return StaffStatus::Deferred,
        None => {}
    }
    if patient.is_opted_out() {
        return StaffStatus::OptedOut;
    }
    if let Some(invite) = latest_invite {
        if let Some(status) = status_from_invite(invite, sends_in_30_days) {
            return status;
        }
    }
    StaffStatus::NotEnrolled {
        reasons: not_enrolled_reasons(patient, auto_invites_on, latest_invite),
    }
}

fn status_from_invite(invite: &InviteSummary, sends_in_30_days: usize) -> Option<StaffStatus> {
    let delivery = match invite.state.as_str() {
        "failed" => {
            let reason = invite
                .failure_reason
                .clone()
                .unwrap_or_else(|| "the invite could not be delivered".to_string());
            return Some(StaffStatus::DeliveryFailed { reason });
        }
        "scheduled" => "waiting for the Auto Invite Schedule to open",
        "queued" => "waiting for delivery",
        "sent" => "sent",
        _ => return None,
    };
    Some(StaffStatus::Pending {
        invited_at: invite.created_at,
        sends_in_30_days,
        delivery: delivery.to_string(),
    })
}

fn not_enrolled_reasons(
    patient: &PatientFacts,
    auto_invites_on: bool,
    latest_invite: Option<&InviteSummary>,
) -> Vec<Ineligible> {
    let mut reasons = Vec::new();
    if !patient.missing.is_empty() {
        reasons.push(Ineligible::MissingFields {
            problems: patient.missing.clone(),
        });
    }
    if !auto_invites_on {
        reasons.push(Ineligible::AutoInvitesOff);
    }
    match latest_invite {
        Some(InviteSummary {
            state,
            next_possible_at: Some(next_possible_at),
            ..
        }) if state == "suppressed" => reasons.push(Ineligible::CapReached {
            next_possible_at: *next_possible_at,
        }),
        _ => reasons.push(Ineligible::NotYetInvited),
    }
    reasons
}
