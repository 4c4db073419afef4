//! R3-R9: what to do with a trigger (auto) or an Enroll Now (manual).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::cap::{CAP_MAX_SENDS, next_send_possible_at};
use crate::fields::FieldProblem;
use crate::schedule::ValidSchedule;
use crate::trigger::Trigger;

/// A response the patient gave and staff recorded. Only an audited
/// "remove the patient's response" clears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PatientResponse {
    Declined,
    Deferred,
}

/// What the rules need to know about a patient.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PatientFacts {
    pub activated: bool,
    pub deceased: bool,
    pub response: Option<PatientResponse>,
    pub email_opted_out: bool,
    pub sms_opted_out: bool,
    /// True when the chart has a valid cell phone.
    pub has_cell_phone: bool,
    /// The blocking problems of R1 (`Checked::blocking`); empty = complete.
    pub missing: Vec<FieldProblem>,
}

impl PatientFacts {
    /// R4's "opted out of the channel": an invite goes by email and, with a
    /// cell phone, by SMS, so the patient is unreachable only when email is
    /// opted out and there is no cell phone that has not opted out.
    pub fn is_opted_out(&self) -> bool {
        self.email_opted_out && !(self.has_cell_phone && !self.sms_opted_out)
    }
}

/// The practice's side of the decision.
#[derive(Debug, Clone)]
pub struct PracticeRules<'a> {
    pub auto_invites_on: bool,
    pub schedule: &'a ValidSchedule,
}

/// The patient's invite history as the cap and coalescing need it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendHistory {
    /// Counted sends (see `cap::next_send_possible_at`).
    pub counted_sends: Vec<Timestamp>,
    /// An auto invite is queued and not yet delivered (R6).
    pub auto_invite_pending: bool,
}

/// Why a trigger did not lead to an invite (R4), in words via `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Ineligible {
    AutoInvitesOff,
    AlreadyActive,
    Deceased,
    Declined,
    Deferred,
    /// Email opted out, and no cell phone that has not opted out.
    OptedOut,
    MissingFields { problems: Vec<FieldProblem> },
    /// The schedule has no open window at all.
    ScheduleNeverOpens,
    /// For the status (R14): eligible, but no invite is queued or sent
    /// (none yet, or the last one was cancelled).
    NotYetInvited,
    /// For the status (R14): the last auto invite was suppressed by the cap
    /// (R7); a send becomes possible at `next_possible_at`.
    CapReached { next_possible_at: Timestamp },
}

impl Ineligible {
    /// One sentence for staff, without patient data.
    pub fn message(&self) -> String {
        match self {
            Ineligible::AutoInvitesOff => "auto invites are off for this practice".to_string(),
            Ineligible::AlreadyActive => {
                "the patient has already activated the portal account".to_string()
            }
            Ineligible::Deceased => "the patient is recorded as deceased".to_string(),
            Ineligible::Declined => {
                "the patient declined the portal (remove the patient's response to invite again)"
                    .to_string()
            }
            Ineligible::Deferred => {
                "the patient deferred the portal (remove the patient's response to invite again)"
                    .to_string()
            }
            Ineligible::OptedOut => opted_out_words().to_string(),
            Ineligible::MissingFields { problems } => missing_fields_words(problems),
            Ineligible::ScheduleNeverOpens => {
                "the practice's Auto Invite Schedule has no open window".to_string()
            }
            Ineligible::NotYetInvited => "no invite is waiting or sent".to_string(),
            Ineligible::CapReached { next_possible_at } => cap_words(*next_possible_at),
        }
    }
}

fn opted_out_words() -> &'static str {
    "the patient opted out of email and has no cell phone that accepts texts"
}

/// "missing or invalid: email address, ZIP code", each field once, in the
/// order given (which `check` makes the order staff see the fields in).
fn missing_fields_words(problems: &[FieldProblem]) -> String {
    let mut labels: Vec<&str> = Vec::new();
    for p in problems {
        if !labels.contains(&p.field.label()) {
            labels.push(p.field.label());
        }
    }
    format!("missing or invalid: {}", labels.join(", "))
}

fn cap_words(next_possible_at: Timestamp) -> String {
    format!(
        "{CAP_MAX_SENDS} invites were already sent in the last 30 days; \
         the next invite can be sent at {next_possible_at} or later"
    )
}

/// Why an Enroll Now was refused (R9, R7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    AlreadyActive,
    MissingFields { problems: Vec<FieldProblem> },
    CapReached { next_possible_at: Timestamp },
    Deceased,
    /// The patient declined or deferred: staff must remove the response first.
    PatientResponded { response: PatientResponse },
    OptedOut,
}

impl Refusal {
    /// One sentence for staff, shown where they clicked Enroll Now.
    pub fn message(&self) -> String {
        match self {
            Refusal::AlreadyActive => {
                "already active: the patient has activated the portal account".to_string()
            }
            Refusal::MissingFields { problems } => missing_fields_words(problems),
            Refusal::CapReached { next_possible_at } => cap_words(*next_possible_at),
            Refusal::Deceased => "the patient is recorded as deceased".to_string(),
            Refusal::PatientResponded { response } => {
                let verb = match response {
                    PatientResponse::Declined => "declined",
                    PatientResponse::Deferred => "deferred",
                };
                format!(
                    "the patient {verb} the portal; remove the patient's response before inviting"
                )
            }
            Refusal::OptedOut => opted_out_words().to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Record a send now (it counts toward the cap from now).
    SendNow,
    /// Auto only: outside the schedule; queue until `at` (the next opening).
    Queue { at: Timestamp },
    /// Auto only: an auto invite is already queued; this trigger attaches to it.
    Coalesced,
    /// Auto only: the cap (R7) would be exceeded at the time of sending.
    Suppressed { next_possible_at: Timestamp },
    /// Auto only: not eligible (R3/R4); every reason is listed.
    NotInvited { reasons: Vec<Ineligible> },
    /// Manual only.
    Refused { refusal: Refusal },
}

/// The decision for an auto trigger at `now`. Order: eligibility (all
/// reasons collected), then coalescing, then the schedule (send time = next
/// opening), then the cap evaluated at that send time.
///
/// The cap is checked at the send time, not at `now`, because that is when
/// the send will count: a trigger at night may be capped now and fine by
/// the morning, or the other way round. The dispatcher must check again
/// when it sends (a manual send may have happened meanwhile). Every kind of
/// trigger leads to the same decision today; `trigger` is taken so that a
/// rule that depends on it changes no caller.
pub fn decide_auto(
    trigger: &Trigger,
    patient: &PatientFacts,
    practice: &PracticeRules<'_>,
    history: &SendHistory,
    now: Timestamp,
) -> Decision {
    let _ = trigger;
    let mut reasons = Vec::new();
    if !practice.auto_invites_on {
        reasons.push(Ineligible::AutoInvitesOff);
    }
    if patient.activated {
        reasons.push(Ineligible::AlreadyActive);
    }
    if patient.deceased {
        reasons.push(Ineligible::Deceased);
    }
    match patient.response {
        Some(PatientResponse::Declined) => reasons.push(Ineligible::Declined),
        Some(PatientResponse::Deferred) => reasons.push(Ineligible::Deferred),
        None => {}
    }
    if patient.is_opted_out() {
        reasons.push(Ineligible::OptedOut);
    }
    if !patient.missing.is_empty() {
        reasons.push(Ineligible::MissingFields {
            problems: patient.missing.clone(),
        });
    }
    if !reasons.is_empty() {
        return Decision::NotInvited { reasons };
    }
    if history.auto_invite_pending {
        return Decision::Coalesced;
    }
    let Some(send_at) = practice.schedule.next_open(now) else {
        return Decision::NotInvited {
            reasons: vec![Ineligible::ScheduleNeverOpens],
        };
    };
    if let Some(next_possible_at) = next_send_possible_at(&history.counted_sends, send_at) {
        return Decision::Suppressed { next_possible_at };
    }
    if send_at == now {
        Decision::SendNow
    } else {
        Decision::Queue { at: send_at }
    }
}

/// The decision for Enroll Now at `now`: ignores the schedule and auto
/// switch; refused when already active, deceased, responded, opted out,
/// fields missing (all listed), or the cap is reached (with the time the
/// next send becomes possible). The first refusal in that order wins.
///
/// Only one refusal is given because staff act on one at a time, and the
/// order puts first what no edit of the chart can fix.
pub fn decide_manual(patient: &PatientFacts, history: &SendHistory, now: Timestamp) -> Decision {
    let refusal = if patient.activated {
        Some(Refusal::AlreadyActive)
    } else if patient.deceased {
        Some(Refusal::Deceased)
    } else if let Some(response) = patient.response {
        Some(Refusal::PatientResponded { response })
    } else if patient.is_opted_out() {
        Some(Refusal::OptedOut)
    } else if !patient.missing.is_empty() {
        Some(Refusal::MissingFields {
            problems: patient.missing.clone(),
        })
    } else {
        next_send_possible_at(&history.counted_sends, now)
            .map(|next_possible_at| Refusal::CapReached { next_possible_at })
    };
    match refusal {
        Some(refusal) => Decision::Refused { refusal },
        None => Decision::SendNow,
    }
}
