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

impl PatientResponse {
    pub const ALL: [PatientResponse; 2] = [PatientResponse::Declined, PatientResponse::Deferred];

    /// The stored spelling (the same as serde's).
    pub fn key(self) -> &'static str {
        match self {
            PatientResponse::Declined => "declined",
            PatientResponse::Deferred => "deferred",
        }
    }

    pub fn from_key(raw: &str) -> Option<PatientResponse> {
        PatientResponse::ALL.into_iter().find(|r| r.key() == raw)
    }
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
        let reachable_by_sms = self.has_cell_phone && !self.sms_opted_out;
        self.email_opted_out && !reachable_by_sms
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
    MissingFields {
        problems: Vec<FieldProblem>,
    },
    /// The schedule has no open window at all.
    ScheduleNeverOpens,
    /// For the status (R14): eligible, but no invite is queued or sent
    /// (none yet, or the last one was cancelled).
    NotYetInvited,
    /// For the status (R14): the last auto invite was suppressed by the cap
    /// (R7); a send becomes possible at `next_possible_at`.
    CapReached {
        next_possible_at: Timestamp,
    },
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
    MissingFields {
        problems: Vec<FieldProblem>,
    },
    CapReached {
        next_possible_at: Timestamp,
    },
    Deceased,
    /// The patient declined or deferred: staff must remove the response first.
    PatientResponded {
        response: PatientResponse,
    },
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

/// What an auto trigger leads to (R3-R8). Serialized with the tag
/// `decision` (`{"decision": "queue", "at": ...}`), as the API and the
/// timeline show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum AutoDecision {
    /// Record a send now (it counts toward the cap from now).
    SendNow,
    /// Outside the schedule; queue until `at` (the next opening).
    Queue { at: Timestamp },
    /// An auto invite is already queued; this trigger attaches to it.
    Coalesced,
    /// The cap (R7) would be exceeded at the time of sending.
    Suppressed { next_possible_at: Timestamp },
    /// Not eligible (R3/R4); every reason is listed.
    NotInvited { reasons: Vec<Ineligible> },
}

/// What an Enroll Now leads to (R9): a send at once (the schedule does not
/// apply), or one refusal. Serialized with the same `decision` tag as
/// [`AutoDecision`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum ManualDecision {
    /// Record a send now (it counts toward the cap from now).
    SendNow,
    Refused {
        refusal: Refusal,
    },
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
) -> AutoDecision {
    let _ = trigger;
    let mut reasons = Vec::new();
    if !practice.auto_invites_on {
        reasons.push(Ineligible::AutoInvitesOff);
    }
    reasons.extend(ineligible_patient(patient));
    if !reasons.is_empty() {
        return AutoDecision::NotInvited { reasons };
    }
    scheduled_send(practice.schedule, history, now)
}

/// The go-live invite of one existing patient (the "Invite existing
/// patients" run): the auto path's rules without its switch, since an
/// administrator asked for this run. Eligibility (every reason), then
/// coalescing with a waiting auto invite, then the schedule, then the cap
/// at the send time, exactly as [`decide_auto`].
pub fn decide_go_live(
    patient: &PatientFacts,
    schedule: &ValidSchedule,
    history: &SendHistory,
    now: Timestamp,
) -> AutoDecision {
    let reasons = ineligible_patient(patient);
    if !reasons.is_empty() {
        return AutoDecision::NotInvited { reasons };
    }
    scheduled_send(schedule, history, now)
}

/// R4: every reason the patient's own chart gives not to invite.
fn ineligible_patient(patient: &PatientFacts) -> Vec<Ineligible> {
    let mut reasons = Vec::new();
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
    reasons
}

/// R6, R5 and R7 for an eligible patient: coalesce with a waiting auto
/// invite, else send at the next opening unless the cap forbids it then.
fn scheduled_send(schedule: &ValidSchedule, history: &SendHistory, now: Timestamp) -> AutoDecision {
    if history.auto_invite_pending {
        return AutoDecision::Coalesced;
    }
    let Some(send_at) = schedule.next_open(now) else {
        return AutoDecision::NotInvited {
            reasons: vec![Ineligible::ScheduleNeverOpens],
        };
    };
    if let Some(next_possible_at) = next_send_possible_at(&history.counted_sends, send_at) {
        return AutoDecision::Suppressed { next_possible_at };
    }
    if send_at == now {
        AutoDecision::SendNow
    } else {
        AutoDecision::Queue { at: send_at }
    }
}

/// The decision for Enroll Now at `now`: ignores the schedule and auto
/// switch; refused when already active, deceased, responded, opted out,
/// fields missing (all listed), or the cap is reached (with the time the
/// next send becomes possible). The first refusal in that order wins.
///
/// Only one refusal is given because staff act on one at a time, and the
/// order puts first what no edit of the chart can fix.
pub fn decide_manual(
    patient: &PatientFacts,
    history: &SendHistory,
    now: Timestamp,
) -> ManualDecision {
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
        Some(refusal) => ManualDecision::Refused { refusal },
        None => ManualDecision::SendNow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{Field, Problem};
    use crate::schedule::{Schedule, Window};
    use jiff::SignedDuration;
    use jiff::civil::{Time, Weekday};

    const HOUR: SignedDuration = SignedDuration::from_hours(1);
    const DAY: SignedDuration = SignedDuration::from_hours(24);

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn office(tz: &str) -> ValidSchedule {
        Schedule::office_hours(tz).validate().unwrap()
    }

    fn sunday(tz: &str, opens: (i8, i8), closes: (i8, i8)) -> ValidSchedule {
        Schedule {
            time_zone: tz.to_string(),
            windows: vec![Window {
                weekday: Weekday::Sunday,
                opens: Time::constant(opens.0, opens.1, 0, 0),
                closes: Time::constant(closes.0, closes.1, 0, 0),
            }],
            closed_dates: vec![],
        }
        .validate()
        .unwrap()
    }

    fn missing(fields: &[Field]) -> Vec<FieldProblem> {
        fields
            .iter()
            .map(|&field| FieldProblem {
                field,
                problem: Problem::Missing,
            })
            .collect()
    }

    fn eligible() -> PatientFacts {
        PatientFacts::default()
    }

    fn facts(edit: impl FnOnce(&mut PatientFacts)) -> PatientFacts {
        let mut f = eligible();
        edit(&mut f);
        f
    }

    fn sent(sends: Vec<Timestamp>) -> SendHistory {
        SendHistory {
            counted_sends: sends,
            auto_invite_pending: false,
        }
    }

    /// Monday 10:00 in New York, inside office hours.
    fn monday_10() -> Timestamp {
        ts("2026-11-23T10:00:00-05:00")
    }

    fn four_sends_before(t: Timestamp) -> Vec<Timestamp> {
        vec![t - DAY * 20, t - DAY * 10, t - DAY * 5, t - HOUR]
    }

    fn queue(at: &str) -> AutoDecision {
        AutoDecision::Queue { at: ts(at) }
    }

    fn not_invited(reasons: Vec<Ineligible>) -> AutoDecision {
        AutoDecision::NotInvited { reasons }
    }

    #[test]
    fn r4_is_opted_out() {
        #[rustfmt::skip]
        let rows = [
            // (name, email out, has cell, sms out, opted out)
            ("reachable by email", false, false, false, false),
            ("email and SMS", false, true, false, false),
            ("email, SMS opted out", false, true, true, false),
            ("stale SMS opt-out, no phone", false, false, true, false),
            ("email out, no phone", true, false, false, true),
            ("email out, phone not opted out: reachable", true, true, false, false),
            ("email out, phone opted out", true, true, true, true),
            ("email out, SMS out, no phone", true, false, true, true),
        ];
        for (name, email_opted_out, has_cell_phone, sms_opted_out, expected) in rows {
            let f = PatientFacts {
                email_opted_out,
                has_cell_phone,
                sms_opted_out,
                ..eligible()
            };
            assert_eq!(f.is_opted_out(), expected, "{name}");
        }
    }

    /// The go-live run's decision: the auto path without its switch.
    #[test]
    fn go_live_follows_the_auto_rules_except_the_switch() {
        let ny = office("America/New_York");
        let now = monday_10();
        let evening = ts("2026-11-23T18:00:00-05:00");
        let pending = SendHistory {
            counted_sends: vec![],
            auto_invite_pending: true,
        };
        #[rustfmt::skip]
        let rows: Vec<(&str, PatientFacts, SendHistory, Timestamp, AutoDecision)> = vec![
            ("eligible, open: sent now", eligible(), sent(vec![]), now, AutoDecision::SendNow),
            ("closed: queued for the opening", eligible(), sent(vec![]), evening,
                queue("2026-11-24T08:00:00-05:00")),
            ("an auto invite already waits (R6)", eligible(), pending, now, AutoDecision::Coalesced),
            ("four sends in 30 days (R7)", eligible(), sent(four_sends_before(now)), now,
                AutoDecision::Suppressed { next_possible_at: now - DAY * 20 + crate::CAP_WINDOW }),
            ("active since the list was made", facts(|f| f.activated = true), sent(vec![]), now,
                not_invited(vec![Ineligible::AlreadyActive])),
            ("an email went missing", facts(|f| f.missing = missing(&[Field::Email])), sent(vec![]), now,
                not_invited(vec![Ineligible::MissingFields { problems: missing(&[Field::Email]) }])),
        ];
        for (name, patient, history, at, expected) in rows {
            assert_eq!(
                decide_go_live(&patient, &ny, &history, at),
                expected,
                "{name}"
            );
        }
        let never = Schedule {
            time_zone: "America/New_York".into(),
            windows: vec![],
            closed_dates: vec![],
        }
        .validate()
        .unwrap();
        assert_eq!(
            decide_go_live(&eligible(), &never, &sent(vec![]), now),
            not_invited(vec![Ineligible::ScheduleNeverOpens])
        );
    }

    /// R3, R4, R6, R5, R7 for an auto trigger, in that order.
    #[test]
    fn r3_to_r7_decide_auto() {
        let ny = office("America/New_York");
        let now = monday_10();
        let evening = ts("2026-11-23T18:00:00-05:00");
        let all_bad = facts(|f| {
            f.activated = true;
            f.deceased = true;
            f.response = Some(PatientResponse::Declined);
            f.email_opted_out = true;
            f.missing = missing(&[Field::Email, Field::Zip]);
        });
        // Capped at Monday 18:00; the oldest send leaves the window on
        // Tuesday 06:00, before the 08:00 opening.
        let oldest = ts("2026-10-25T07:00:00-04:00");
        let expires_overnight = vec![oldest, evening - DAY * 3, evening - DAY, evening - HOUR];
        #[rustfmt::skip]
        let rows: Vec<(&str, bool, PatientFacts, SendHistory, Timestamp, AutoDecision)> = vec![
            ("eligible, inside the schedule", true, eligible(), sent(vec![]), now, AutoDecision::SendNow),
            ("at the opening instant", true, eligible(), sent(vec![]), ts("2026-11-23T08:00:00-05:00"), AutoDecision::SendNow),
            ("outside: queued for the next opening", true, eligible(), sent(vec![]), evening, queue("2026-11-24T08:00:00-05:00")),
            ("Friday evening: queued for Monday", true, eligible(), sent(vec![]), ts("2026-11-20T17:00:00-05:00"), queue("2026-11-23T08:00:00-05:00")),
            ("auto invites off", false, eligible(), sent(vec![]), now, not_invited(vec![Ineligible::AutoInvitesOff])),
            ("activated", true, facts(|f| f.activated = true), sent(vec![]), now, not_invited(vec![Ineligible::AlreadyActive])),
            ("deceased", true, facts(|f| f.deceased = true), sent(vec![]), now, not_invited(vec![Ineligible::Deceased])),
            ("declined", true, facts(|f| f.response = Some(PatientResponse::Declined)), sent(vec![]), now, not_invited(vec![Ineligible::Declined])),
            ("deferred", true, facts(|f| f.response = Some(PatientResponse::Deferred)), sent(vec![]), now, not_invited(vec![Ineligible::Deferred])),
            ("opted out, no phone", true, facts(|f| f.email_opted_out = true), sent(vec![]), now, not_invited(vec![Ineligible::OptedOut])),
            ("email opted out, phone reachable", true, facts(|f| { f.email_opted_out = true; f.has_cell_phone = true; }), sent(vec![]), now, AutoDecision::SendNow),
            ("missing fields", true, facts(|f| f.missing = missing(&[Field::Email])), sent(vec![]),
                now, not_invited(vec![Ineligible::MissingFields { problems: missing(&[Field::Email]) }])),
            ("every reason listed", false, all_bad.clone(), sent(vec![]), now, not_invited(vec![
                Ineligible::AutoInvitesOff, Ineligible::AlreadyActive, Ineligible::Deceased,
                Ineligible::Declined, Ineligible::OptedOut,
                Ineligible::MissingFields { problems: missing(&[Field::Email, Field::Zip]) },
            ])),
            ("ineligible beats pending and cap", true, facts(|f| f.deceased = true),
                SendHistory { counted_sends: four_sends_before(now), auto_invite_pending: true },
                now, not_invited(vec![Ineligible::Deceased])),
            ("auto off, even when capped", false, eligible(), sent(four_sends_before(now)), now, not_invited(vec![Ineligible::AutoInvitesOff])),
            ("pending auto invite: coalesced", true, eligible(),
                SendHistory { counted_sends: vec![], auto_invite_pending: true }, now, AutoDecision::Coalesced),
            ("pending beats cap", true, eligible(),
                SendHistory { counted_sends: four_sends_before(evening), auto_invite_pending: true }, evening, AutoDecision::Coalesced),
            ("cap reached inside the schedule", true, eligible(), sent(four_sends_before(now)), now,
                AutoDecision::Suppressed { next_possible_at: now - DAY * 20 + DAY * 30 }),
            ("three sends: not capped", true, eligible(), sent(four_sends_before(now)[1..].to_vec()), now, AutoDecision::SendNow),
            ("capped now, free at the next opening", true, eligible(), sent(expires_overnight), evening,
                queue("2026-11-24T08:00:00-05:00")),
            ("capped at the next opening", true, eligible(), sent(four_sends_before(evening)), evening,
                AutoDecision::Suppressed { next_possible_at: evening - DAY * 20 + DAY * 30 }),
            ("a future send caps the send time", true, eligible(),
                sent(vec![evening - DAY * 5, evening - DAY * 3, evening - DAY, ts("2026-11-24T09:00:00-05:00")]),
                evening, AutoDecision::Suppressed { next_possible_at: evening - DAY * 5 + DAY * 30 }),
        ];
        let triggers = [
            Trigger::ChartAdded,
            Trigger::RequiredFieldsChanged {
                fields: vec![Field::Zip],
            },
            Trigger::NewEncounter,
            Trigger::NewAppointment,
        ];
        for (name, auto_invites_on, patient, history, at, expected) in &rows {
            let practice = PracticeRules {
                auto_invites_on: *auto_invites_on,
                schedule: &ny,
            };
            for trigger in &triggers {
                let got = decide_auto(trigger, patient, &practice, history, *at);
                assert_eq!(&got, expected, "{name} ({})", trigger.key());
            }
        }
    }

    #[test]
    fn r5_decide_auto_schedule_never_opens() {
        let empty = Schedule {
            time_zone: "America/New_York".into(),
            windows: vec![],
            closed_dates: vec![],
        }
        .validate()
        .unwrap();
        let practice = PracticeRules {
            auto_invites_on: true,
            schedule: &empty,
        };
        let got = decide_auto(
            &Trigger::ChartAdded,
            &eligible(),
            &practice,
            &sent(vec![]),
            monday_10(),
        );
        assert_eq!(got, not_invited(vec![Ineligible::ScheduleNeverOpens]));
    }

    /// R5 across DST changes: a trigger outside the schedule queues for the
    /// next opening in local wall-clock time.
    #[test]
    fn r5_decide_auto_across_dst() {
        #[rustfmt::skip]
        let rows: Vec<(&str, ValidSchedule, &str, AutoDecision)> = vec![
            ("Saturday 22:00 queues to Monday", office("America/New_York"),
                "2026-11-21T22:00:00-05:00", queue("2026-11-23T08:00:00-05:00")),
            ("Saturday 22:00 EDT, fall-back weekend: Monday 08:00 EST", office("America/New_York"),
                "2026-10-31T22:00:00-04:00", queue("2026-11-02T08:00:00-05:00")),
            ("Saturday 22:00 EST, spring-forward weekend: Monday 08:00 EDT", office("America/New_York"),
                "2026-03-07T22:00:00-05:00", queue("2026-03-09T08:00:00-04:00")),
            ("first 01:30 of the repeated hour", office("America/New_York"),
                "2026-11-01T01:30:00-04:00", queue("2026-11-02T08:00:00-05:00")),
            ("second 01:30 of the repeated hour", office("America/New_York"),
                "2026-11-01T01:30:00-05:00", queue("2026-11-02T08:00:00-05:00")),
            ("second 01:30, Sunday window 01:00-02:00: still open", sunday("America/New_York", (1, 0), (2, 0)),
                "2026-11-01T01:30:00-05:00", AutoDecision::SendNow),
            ("00:30 EDT, Sunday window 01:00-02:00", sunday("America/New_York", (1, 0), (2, 0)),
                "2026-11-01T00:30:00-04:00", queue("2026-11-01T01:00:00-04:00")),
            ("second 01:15, Sunday window 00:00-01:30: closed, next week", sunday("America/New_York", (0, 0), (1, 30)),
                "2026-11-01T01:15:00-05:00", queue("2026-11-08T00:00:00-05:00")),
            ("before the gap, window 02:00-04:00 opens at 03:00 EDT", sunday("America/New_York", (2, 0), (4, 0)),
                "2026-03-08T01:30:00-05:00", queue("2026-03-08T03:00:00-04:00")),
            ("Sydney before the gap", sunday("Australia/Sydney", (2, 0), (4, 0)),
                "2026-10-04T01:30:00+10:00", queue("2026-10-04T03:00:00+11:00")),
            ("Sydney Friday evening, fall-back weekend", office("Australia/Sydney"),
                "2026-04-03T18:00:00+11:00", queue("2026-04-06T08:00:00+10:00")),
            ("Sydney Saturday, spring-forward weekend", office("Australia/Sydney"),
                "2026-10-03T12:00:00+10:00", queue("2026-10-05T08:00:00+11:00")),
        ];
        for (name, schedule, now, expected) in &rows {
            let practice = PracticeRules {
                auto_invites_on: true,
                schedule,
            };
            let got = decide_auto(
                &Trigger::NewAppointment,
                &eligible(),
                &practice,
                &sent(vec![]),
                ts(now),
            );
            assert_eq!(&got, expected, "{name}");
        }
    }

    /// R9 and R7 for Enroll Now: the first refusal in the documented order
    /// wins; the schedule, the auto switch and a pending auto invite do not
    /// matter.
    #[test]
    fn r9_decide_manual() {
        let now = ts("2026-11-22T03:00:00-05:00"); // Sunday night
        let capped = four_sends_before(now);
        let next = now - DAY * 20 + DAY * 30;
        let everything = |f: &mut PatientFacts| {
            f.activated = true;
            f.deceased = true;
            f.response = Some(PatientResponse::Deferred);
            f.email_opted_out = true;
            f.missing = missing(&[Field::DateOfBirth, Field::Email]);
        };
        let refused = |refusal| ManualDecision::Refused { refusal };
        #[rustfmt::skip]
        let rows: Vec<(&str, PatientFacts, SendHistory, ManualDecision)> = vec![
            ("eligible, outside any schedule", eligible(), sent(vec![]), ManualDecision::SendNow),
            ("a pending auto invite does not matter", eligible(),
                SendHistory { counted_sends: vec![], auto_invite_pending: true }, ManualDecision::SendNow),
            ("three sends", eligible(), sent(capped[1..].to_vec()), ManualDecision::SendNow),
            ("email opted out, phone reachable", facts(|f| { f.email_opted_out = true; f.has_cell_phone = true; }),
                sent(vec![]), ManualDecision::SendNow),
            ("already active first", facts(everything), sent(capped.clone()), refused(Refusal::AlreadyActive)),
            ("then deceased", facts(|f| { everything(f); f.activated = false; }), sent(capped.clone()), refused(Refusal::Deceased)),
            ("then responded (deferred)", facts(|f| { everything(f); f.activated = false; f.deceased = false; }),
                sent(capped.clone()), refused(Refusal::PatientResponded { response: PatientResponse::Deferred })),
            ("declined", facts(|f| f.response = Some(PatientResponse::Declined)), sent(vec![]),
                refused(Refusal::PatientResponded { response: PatientResponse::Declined })),
            ("then opted out", facts(|f| { f.email_opted_out = true; f.missing = missing(&[Field::Zip]); }),
                sent(capped.clone()), refused(Refusal::OptedOut)),
            ("then missing fields, all listed", facts(|f| f.missing = missing(&[Field::FirstName, Field::BirthSex, Field::Email])),
                sent(capped.clone()), refused(Refusal::MissingFields { problems: missing(&[Field::FirstName, Field::BirthSex, Field::Email]) })),
            ("then the cap", eligible(), sent(capped.clone()), refused(Refusal::CapReached { next_possible_at: next })),
        ];
        for (name, patient, history, expected) in &rows {
            assert_eq!(&decide_manual(patient, history, now), expected, "{name}");
        }
    }

    #[test]
    fn r4_r9_messages_are_words_without_data() {
        let problems = vec![
            FieldProblem {
                field: Field::Zip,
                problem: Problem::Missing,
            },
            FieldProblem {
                field: Field::Email,
                problem: Problem::Invalid("has nothing after the @".into()),
            },
            FieldProblem {
                field: Field::Zip,
                problem: Problem::Invalid("again".into()),
            },
        ];
        let at = ts("2026-12-13T15:00:00Z");
        assert_eq!(
            Ineligible::MissingFields {
                problems: problems.clone()
            }
            .message(),
            "missing or invalid: ZIP code, email address"
        );
        assert_eq!(
            Refusal::MissingFields { problems }.message(),
            "missing or invalid: ZIP code, email address"
        );
        let cap = Refusal::CapReached {
            next_possible_at: at,
        }
        .message();
        assert!(
            cap.contains("4 invites") && cap.contains("2026-12-13T15:00:00Z"),
            "{cap}"
        );
        assert_eq!(
            cap,
            Ineligible::CapReached {
                next_possible_at: at
            }
            .message()
        );
        assert!(
            Refusal::AlreadyActive
                .message()
                .starts_with("already active")
        );
        for (response, verb) in [
            (PatientResponse::Declined, "declined"),
            (PatientResponse::Deferred, "deferred"),
        ] {
            let words = Refusal::PatientResponded { response }.message();
            assert!(
                words.contains(verb) && words.contains("remove the patient's response"),
                "{words}"
            );
        }
        assert!(Refusal::OptedOut.message().contains("opted out"));
        assert!(Refusal::Deceased.message().contains("deceased"));

        let reasons = [
            Ineligible::AutoInvitesOff,
            Ineligible::AlreadyActive,
            Ineligible::Deceased,
            Ineligible::Declined,
            Ineligible::Deferred,
            Ineligible::OptedOut,
            Ineligible::MissingFields {
                problems: missing(&[Field::Email]),
            },
            Ineligible::ScheduleNeverOpens,
            Ineligible::NotYetInvited,
            Ineligible::CapReached {
                next_possible_at: at,
            },
        ];
        let words: std::collections::BTreeSet<String> =
            reasons.iter().map(Ineligible::message).collect();
        assert_eq!(words.len(), reasons.len(), "every reason has its own words");
        assert!(words.iter().all(|w| !w.is_empty()));
        assert_eq!(
            Ineligible::AutoInvitesOff.message(),
            "auto invites are off for this practice"
        );
    }

    #[test]
    fn decisions_as_json() {
        let at = ts("2026-11-24T13:00:00Z");
        assert_eq!(
            serde_json::to_value(AutoDecision::Queue { at }).unwrap(),
            serde_json::json!({"decision": "queue", "at": "2026-11-24T13:00:00Z"})
        );
        assert_eq!(
            serde_json::to_value(AutoDecision::NotInvited {
                reasons: vec![Ineligible::AutoInvitesOff]
            })
            .unwrap(),
            serde_json::json!({"decision": "not_invited", "reasons": [{"reason": "auto_invites_off"}]})
        );
        assert_eq!(
            serde_json::to_value(ManualDecision::Refused {
                refusal: Refusal::PatientResponded {
                    response: PatientResponse::Declined
                }
            })
            .unwrap(),
            serde_json::json!({"decision": "refused", "refusal": {"reason": "patient_responded", "response": "declined"}})
        );
    }

    /// A patient's response is stored by its key, which is serde's
    /// spelling too; only those keys read back.
    #[test]
    fn a_patient_response_is_stored_by_its_key() {
        for (response, key) in [
            (PatientResponse::Declined, "declined"),
            (PatientResponse::Deferred, "deferred"),
        ] {
            assert_eq!(response.key(), key);
            assert_eq!(PatientResponse::from_key(key), Some(response));
            assert_eq!(
                serde_json::to_string(&response).ok(),
                Some(format!("\"{key}\""))
            );
        }
        assert_eq!(PatientResponse::from_key("Declined"), None);
        assert_eq!(PatientResponse::from_key(""), None);
    }
}
