//! R14: the status staff see, always with words.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::policy::{Ineligible, PatientFacts, PatientResponse};

/// The latest invite, as the status needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteSummary {
    /// queued (waiting for the schedule), sending (queued for delivery now),
    /// sent, failed, suppressed, cancelled
    pub state: String,
    pub created_at: Timestamp,
    pub failure_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StaffStatus {
    Active,
    Deceased,
    Declined,
    Deferred,
    OptedOut,
    DeliveryFailed { reason: String },
    Pending { invited_at: Timestamp, sends_in_30_days: usize, delivery: String },
    NotEnrolled { reasons: Vec<Ineligible> },
}

impl StaffStatus {
    /// One line for staff, e.g. "Pending: invited 2026-11-20, 2 of 4 sends in 30 days, sent".
    pub fn words(&self) -> String {
        todo!()
    }
}

/// Precedence: active, deceased, declined, deferred, opted out, delivery
/// failed (latest invite failed), pending (latest invite not cancelled or
/// suppressed), not enrolled (with every reason: missing fields, auto
/// invites off, not yet invited, suppressed by the cap...).
pub fn staff_status(
    patient: &PatientFacts,
    auto_invites_on: bool,
    latest_invite: Option<&InviteSummary>,
    sends_in_30_days: usize,
) -> StaffStatus {
    todo!()
}

#[allow(dead_code)]
fn _uses(_: PatientResponse) {}
