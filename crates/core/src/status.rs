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
    /// The short word of the status badge (search results, the chart's
    /// Patient Portal icon) and the key of its look.
    pub fn badge(&self) -> (&'static str, &'static str) {
        match self {
            StaffStatus::Active => ("Active", "active"),
            StaffStatus::Deceased => ("Deceased", "deceased"),
            StaffStatus::Declined => ("Declined", "declined"),
            StaffStatus::Deferred => ("Deferred", "deferred"),
            StaffStatus::OptedOut => ("Opted out", "opted-out"),
            StaffStatus::DeliveryFailed { .. } => ("Delivery failed", "failed"),
            StaffStatus::Pending { delivery, .. } if delivery == "sent" => ("Invited", "invited"),
            StaffStatus::Pending { .. } => ("Invite waiting", "waiting"),
            StaffStatus::NotEnrolled { reasons }
                if reasons
                    .iter()
                    .any(|r| matches!(r, Ineligible::CapReached { .. })) =>
            {
                ("Suppressed", "suppressed")
            }
            StaffStatus::NotEnrolled { .. } => ("Not invited", "not-invited"),
        }
    }

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
    if let Some(invite) = latest_invite
        && let Some(status) = status_from_invite(invite, sends_in_30_days)
    {
        return status;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{Field, FieldProblem, Problem};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn invite(state: &str) -> InviteSummary {
        InviteSummary {
            state: state.to_string(),
            created_at: ts("2026-11-20T14:00:00Z"),
            failure_reason: None,
            next_possible_at: None,
        }
    }

    fn facts(edit: impl FnOnce(&mut PatientFacts)) -> PatientFacts {
        let mut f = PatientFacts::default();
        edit(&mut f);
        f
    }

    /// The patient's data in these tests. The status words are built from
    /// R1's real verdict on it (`check`), so a message that quoted the
    /// invalid address would show in the words and fail the PHI assertion.
    const BAD_EMAIL: &str = "ada.quist@";

    fn missing_email() -> Vec<FieldProblem> {
        let demographics = crate::fields::Demographics {
            first_name: Some("Ada".into()),
            last_name: Some("Quist".into()),
            date_of_birth: Some("1990-07-04".into()),
            birth_sex: Some("F".into()),
            zip: Some("10027".into()),
            email: Some(BAD_EMAIL.into()),
            cell_phone: Some("+1 617 555 0100".into()),
        };
        let today = jiff::civil::date(2026, 11, 25);
        let blocking = crate::fields::check(&demographics, today).blocking();
        assert_eq!(
            blocking.iter().map(|p| p.field).collect::<Vec<_>>(),
            [Field::Email],
            "only the email is wrong"
        );
        assert!(matches!(blocking[0].problem, Problem::Invalid(_)));
        blocking
    }

    /// R14: precedence of the statuses, and the words staff read.
    #[test]
    fn r14_staff_status() {
        let failed = InviteSummary {
            failure_reason: Some("the mail server rejected the address".into()),
            ..invite("failed")
        };
        let suppressed = InviteSummary {
            next_possible_at: Some(ts("2026-12-01T13:00:00Z")),
            ..invite("suppressed")
        };
        let everything = |f: &mut PatientFacts| {
            f.activated = true;
            f.deceased = true;
            f.response = Some(PatientResponse::Declined);
            f.email_opted_out = true;
            f.missing = missing_email();
        };
        let pending = |delivery: &str| StaffStatus::Pending {
            invited_at: ts("2026-11-20T14:00:00Z"),
            sends_in_30_days: 2,
            delivery: delivery.to_string(),
        };
        // (name, patient, auto invites on, latest invite, status, words in it)
        type Row<'a> = (
            &'a str,
            PatientFacts,
            bool,
            Option<InviteSummary>,
            StaffStatus,
            &'a [&'a str],
        );
        #[rustfmt::skip]
        let rows: Vec<Row<'_>> = vec![
            ("active first", facts(everything), false, Some(failed.clone()), StaffStatus::Active, &["Active"]),
            ("then deceased", facts(|f| { everything(f); f.activated = false; }), true, Some(invite("sent")),
                StaffStatus::Deceased, &["Deceased", "never invited"]),
            ("then declined", facts(|f| { everything(f); f.activated = false; f.deceased = false; }), true, None,
                StaffStatus::Declined, &["Declined", "remove the patient's response"]),
            ("deferred", facts(|f| f.response = Some(PatientResponse::Deferred)), true, Some(invite("sent")),
                StaffStatus::Deferred, &["Deferred"]),
            ("then opted out", facts(|f| { f.email_opted_out = true; f.missing = missing_email(); }), true, Some(failed.clone()),
                StaffStatus::OptedOut, &["Opted out", "opted out of email"]),
            ("email opted out, reachable by SMS: pending", facts(|f| { f.email_opted_out = true; f.has_cell_phone = true; }),
                true, Some(invite("sent")), pending("sent"), &["Pending"]),
            ("delivery failed with the reason", facts(|f| f.missing = missing_email()), true, Some(failed),
                StaffStatus::DeliveryFailed { reason: "the mail server rejected the address".into() },
                &["Delivery failed: the mail server rejected the address", "send again"]),
            ("delivery failed without a reason", PatientFacts::default(), true, Some(invite("failed")),
                StaffStatus::DeliveryFailed { reason: "the invite could not be delivered".into() }, &["could not be delivered"]),
            ("pending: sent", PatientFacts::default(), true, Some(invite("sent")), pending("sent"),
                &["Pending: invited 2026-11-20T14:00:00Z", "2 of 4 sends in 30 days", "sent"]),
            ("pending: queued", PatientFacts::default(), true, Some(invite("queued")), pending("waiting for delivery"),
                &["2 of 4 sends", "waiting for delivery"]),
            ("pending: scheduled, even with auto invites now off", PatientFacts::default(), false, Some(invite("scheduled")),
                pending("waiting for the Auto Invite Schedule to open"), &["Auto Invite Schedule"]),
            ("not enrolled: missing fields and auto off", facts(|f| f.missing = missing_email()), false, None,
                StaffStatus::NotEnrolled { reasons: vec![
                    Ineligible::MissingFields { problems: missing_email() },
                    Ineligible::AutoInvitesOff,
                    Ineligible::NotYetInvited,
                ] },
                &["Not enrolled: ", "missing or invalid: email address", "auto invites are off"]),
            ("not enrolled: nothing sent yet", PatientFacts::default(), true, None,
                StaffStatus::NotEnrolled { reasons: vec![Ineligible::NotYetInvited] }, &["Not enrolled: no invite is waiting or sent"]),
            ("not enrolled: cancelled", PatientFacts::default(), true, Some(invite("cancelled")),
                StaffStatus::NotEnrolled { reasons: vec![Ineligible::NotYetInvited] }, &["no invite"]),
            ("not enrolled: suppressed by the cap", PatientFacts::default(), true, Some(suppressed),
                StaffStatus::NotEnrolled { reasons: vec![Ineligible::CapReached { next_possible_at: ts("2026-12-01T13:00:00Z") }] },
                &["4 invites were already sent", "2026-12-01T13:00:00Z"]),
            ("suppressed without a time", PatientFacts::default(), true, Some(invite("suppressed")),
                StaffStatus::NotEnrolled { reasons: vec![Ineligible::NotYetInvited] }, &["no invite"]),
            ("cancelled after it was suppressed", PatientFacts::default(), true,
                Some(InviteSummary { next_possible_at: Some(ts("2026-12-01T13:00:00Z")), ..invite("cancelled") }),
                StaffStatus::NotEnrolled { reasons: vec![Ineligible::NotYetInvited] }, &["no invite"]),
        ];
        for (name, patient, auto_on, latest, expected, words) in &rows {
            let got = staff_status(patient, *auto_on, latest.as_ref(), 2);
            assert_eq!(&got, expected, "{name}");
            let text = got.words();
            for fragment in *words {
                assert!(
                    text.contains(fragment),
                    "{name}: {text:?} lacks {fragment:?}"
                );
            }
            for phi in [
                BAD_EMAIL,
                "ada.quist",
                "Quist",
                "1990-07-04",
                "10027",
                "555",
            ] {
                assert!(!text.contains(phi), "{name}: {text:?} shows {phi:?}");
            }
        }
    }

    /// R14: the badge's word and look for each status; a waiting invite
    /// and one sent differ, and so do the cap and the other reasons.
    #[test]
    fn r14_each_status_has_its_badge() {
        let pending = |delivery: &str| StaffStatus::Pending {
            invited_at: ts("2026-11-20T14:00:00Z"),
            sends_in_30_days: 1,
            delivery: delivery.to_string(),
        };
        let capped = Ineligible::CapReached {
            next_possible_at: ts("2026-12-01T13:00:00Z"),
        };
        #[rustfmt::skip]
        let rows = [
            (StaffStatus::Active, ("Active", "active")),
            (StaffStatus::Deceased, ("Deceased", "deceased")),
            (StaffStatus::Declined, ("Declined", "declined")),
            (StaffStatus::Deferred, ("Deferred", "deferred")),
            (StaffStatus::OptedOut, ("Opted out", "opted-out")),
            (StaffStatus::DeliveryFailed { reason: "bounced".into() }, ("Delivery failed", "failed")),
            (pending("sent"), ("Invited", "invited")),
            (pending("waiting for delivery"), ("Invite waiting", "waiting")),
            (StaffStatus::NotEnrolled { reasons: vec![Ineligible::NotYetInvited, capped] }, ("Suppressed", "suppressed")),
            (StaffStatus::NotEnrolled { reasons: vec![Ineligible::NotYetInvited] }, ("Not invited", "not-invited")),
        ];
        for (status, badge) in rows {
            assert_eq!(status.badge(), badge, "{status:?}");
        }
    }

    #[test]
    fn r14_status_json() {
        let status = StaffStatus::Pending {
            invited_at: ts("2026-11-20T14:00:00Z"),
            sends_in_30_days: 3,
            delivery: "sent".into(),
        };
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            serde_json::json!({"status": "pending", "invited_at": "2026-11-20T14:00:00Z",
                "sends_in_30_days": 3, "delivery": "sent"})
        );
        assert_eq!(
            serde_json::to_value(StaffStatus::OptedOut).unwrap(),
            serde_json::json!({"status": "opted_out"})
        );
    }
}
