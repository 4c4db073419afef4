//! The "Provide Patients Electronic Access" measure that practices report
//! to CMS, decided per patient from facts (DESIGN.md section 6, "The
//! dashboard and the CMS measure").
//!
//! A patient with a visit in the period is in the denominator. They are
//! in the numerator when, for at least one of those visits, access was
//! given by the visit's deadline, the 4th business day after the visit
//! date (Monday to Friday, minus the practice's closed dates): the
//! patient was active by then (already before the visit, or activated
//! within the window), or an invite that is still delivered (sent, not
//! later failed) went out on a date from the visit date to the deadline.
//! Every date is the practice's local date.

use jiff::civil::{Date, Weekday};

/// Business days between a visit and the deadline of timely access.
pub const ACCESS_BUSINESS_DAYS: u32 = 4;

/// True for Monday to Friday when the date is not one of `closed`.
pub fn is_business_day(date: Date, closed: &[Date]) -> bool {
    !matches!(date.weekday(), Weekday::Saturday | Weekday::Sunday) && !closed.contains(&date)
}

/// The `n`th business day after `date` (`date` itself never counts);
/// `date` itself for `n = 0`. Stops at the end of the calendar (year 9999).
pub fn business_days_after(date: Date, n: u32, closed: &[Date]) -> Date {
    let mut day = date;
    let mut counted = 0;
    while counted < n {
        let Ok(next) = day.tomorrow() else {
            return day;
        };
        day = next;
        if is_business_day(day, closed) {
            counted += 1;
        }
    }
    day
}

/// The last date on which access given for a visit on `visit` is timely.
pub fn access_deadline(visit: Date, closed: &[Date]) -> Date {
    business_days_after(visit, ACCESS_BUSINESS_DAYS, closed)
}

/// The date of a visit: the date part (`YYYYMMDD`) of the admit time the
/// EHR sent (PV1-44), else the date the encounter was recorded on.
pub fn visit_date(admitted_at: Option<&str>, recorded_on: Date) -> Date {
    admitted_at.and_then(dtm_date).unwrap_or(recorded_on)
}

fn dtm_date(dtm: &str) -> Option<Date> {
    let digits = dtm.trim().get(..8)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year = digits.get(..4)?.parse().ok()?;
    let month = digits.get(4..6)?.parse().ok()?;
    let day = digits.get(6..8)?.parse().ok()?;
    Date::new(year, month, day).ok()
}

/// What is known about one patient for the measure, in local dates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessFacts {
    /// The dates of the patient's visits inside the period.
    pub visits: Vec<Date>,
    /// The dates on which invites that are still delivered were sent.
    pub delivered: Vec<Date>,
    /// The date the patient activated the portal account, if they have.
    pub activated: Option<Date>,
}

/// How a patient of the denominator fares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasureOutcome {
    /// No visit in the period: not counted at all.
    NotSeen,
    /// Seen, and access given by a visit's deadline.
    Timely {
        visit: Date,
        deadline: Date,
        access: Access,
    },
    /// Seen, and no access by any visit's deadline (the first visit named).
    NotTimely { visit: Date, deadline: Date },
}

/// How access was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Active on or before the visit date.
    AlreadyActive(Date),
    /// Activated after the visit, by the deadline.
    Activated(Date),
    /// An invite delivered on this date, from the visit to the deadline.
    InviteDelivered(Date),
}

impl Access {
    /// In words, for the page and the CSV.
    pub fn words(self) -> String {
        match self {
            Access::AlreadyActive(d) => format!("already active (since {d})"),
            Access::Activated(d) => format!("activated on {d}"),
            Access::InviteDelivered(d) => format!("invite delivered on {d}"),
        }
    }
}

impl MeasureOutcome {
    pub fn in_denominator(&self) -> bool {
        !matches!(self, MeasureOutcome::NotSeen)
    }

    pub fn in_numerator(&self) -> bool {
        matches!(self, MeasureOutcome::Timely { .. })
    }
}

/// Decides the measure for one patient; visits are taken earliest first.
pub fn measure_patient(facts: &AccessFacts, closed: &[Date]) -> MeasureOutcome {
    let mut visits = facts.visits.clone();
    visits.sort();
    visits.dedup();
    let Some(&first) = visits.first() else {
        return MeasureOutcome::NotSeen;
    };
    for &visit in &visits {
        let deadline = access_deadline(visit, closed);
        if let Some(access) = access_for(facts, visit, deadline) {
            return MeasureOutcome::Timely {
                visit,
                deadline,
                access,
            };
        }
    }
    MeasureOutcome::NotTimely {
        visit: first,
        deadline: access_deadline(first, closed),
    }
}

/// True when access was given for a visit on `visit` by its deadline: the
/// per-visit half of [`measure_patient`] (a patient is in the numerator
/// when any of their visits in the period is timely), which the store's
/// rollup of the measure keeps per visit.
pub fn visit_is_timely(facts: &AccessFacts, visit: Date, closed: &[Date]) -> bool {
    access_for(facts, visit, access_deadline(visit, closed)).is_some()
}

fn access_for(facts: &AccessFacts, visit: Date, deadline: Date) -> Option<Access> {
    match facts.activated {
        Some(on) if on <= visit => return Some(Access::AlreadyActive(on)),
        Some(on) if on <= deadline => return Some(Access::Activated(on)),
        _ => {}
    }
    facts
        .delivered
        .iter()
        .filter(|&&sent| visit <= sent && sent <= deadline)
        .min()
        .map(|&sent| Access::InviteDelivered(sent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    /// Thanksgiving week 2026 and a Monday holiday (2026-11-30 closed).
    fn closed() -> Vec<Date> {
        vec![date(2026, 11, 26), date(2026, 11, 30)]
    }

    #[test]
    fn the_fourth_business_day_skips_weekends_and_closed_dates() {
        let table = [
            // (visit, deadline, why)
            (
                date(2026, 11, 2),
                date(2026, 11, 6),
                "Monday: Friday of the same week",
            ),
            (
                date(2026, 11, 6),
                date(2026, 11, 12),
                "Friday: the weekend does not count",
            ),
            (
                date(2026, 11, 7),
                date(2026, 11, 12),
                "Saturday: Monday is the first day",
            ),
            (
                date(2026, 11, 24),
                date(2026, 12, 2),
                "Tuesday before Thanksgiving",
            ),
            (
                date(2026, 11, 27),
                date(2026, 12, 4),
                "Friday before the Monday holiday: Tue, Wed, Thu, Fri",
            ),
        ];
        for (visit, deadline, why) in table {
            assert_eq!(access_deadline(visit, &closed()), deadline, "{why}");
        }
        assert_eq!(
            business_days_after(date(2026, 11, 2), 0, &[]),
            date(2026, 11, 2)
        );
        assert!(!is_business_day(date(2026, 11, 30), &closed()));
        assert!(is_business_day(date(2026, 12, 1), &closed()));
    }

    #[test]
    fn a_visit_date_comes_from_the_admit_time_or_the_day_it_was_recorded() {
        let recorded = date(2026, 11, 25);
        assert_eq!(
            visit_date(Some("20261127083000-0500"), recorded),
            date(2026, 11, 27)
        );
        assert_eq!(visit_date(Some("20261127"), recorded), date(2026, 11, 27));
        for odd in ["", "2026", "2026-11-27", "20261340"] {
            assert_eq!(visit_date(Some(odd), recorded), recorded, "{odd:?}");
        }
        assert_eq!(visit_date(None, recorded), recorded);
    }

    #[test]
    fn the_measure_per_patient_from_facts() {
        let friday = date(2026, 11, 27);
        let deadline = date(2026, 12, 4);
        let facts = |visits: &[Date], delivered: &[Date], activated: Option<Date>| AccessFacts {
            visits: visits.to_vec(),
            delivered: delivered.to_vec(),
            activated,
        };
        let table = [
            (
                facts(&[], &[friday], None),
                MeasureOutcome::NotSeen,
                "no visit",
            ),
            (
                facts(&[friday], &[date(2026, 12, 4)], None),
                MeasureOutcome::Timely {
                    visit: friday,
                    deadline,
                    access: Access::InviteDelivered(date(2026, 12, 4)),
                },
                "delivered on the 4th business day after a holiday Monday",
            ),
            (
                facts(&[friday], &[date(2026, 12, 7)], None),
                MeasureOutcome::NotTimely {
                    visit: friday,
                    deadline,
                },
                "delivered a business day late",
            ),
            (
                facts(&[friday], &[date(2026, 11, 20)], None),
                MeasureOutcome::NotTimely {
                    visit: friday,
                    deadline,
                },
                "an invite before the visit is not access given for it",
            ),
            (
                facts(&[friday], &[], Some(date(2025, 1, 3))),
                MeasureOutcome::Timely {
                    visit: friday,
                    deadline,
                    access: Access::AlreadyActive(date(2025, 1, 3)),
                },
                "already active before the visit",
            ),
            (
                facts(&[friday], &[], Some(date(2026, 12, 2))),
                MeasureOutcome::Timely {
                    visit: friday,
                    deadline,
                    access: Access::Activated(date(2026, 12, 2)),
                },
                "activated inside the window",
            ),
            (
                facts(&[friday], &[], Some(date(2026, 12, 8))),
                MeasureOutcome::NotTimely {
                    visit: friday,
                    deadline,
                },
                "activated too late",
            ),
            (
                facts(
                    &[date(2026, 12, 14), date(2026, 11, 2)],
                    &[date(2026, 12, 15)],
                    None,
                ),
                MeasureOutcome::Timely {
                    visit: date(2026, 12, 14),
                    deadline: date(2026, 12, 18),
                    access: Access::InviteDelivered(date(2026, 12, 15)),
                },
                "a later visit of the period can be the timely one",
            ),
        ];
        for (facts, outcome, why) in table {
            let got = measure_patient(&facts, &closed());
            assert_eq!(got, outcome, "{why}");
            assert_eq!(
                got.in_denominator(),
                outcome != MeasureOutcome::NotSeen,
                "{why}"
            );
            assert_eq!(
                got.in_numerator(),
                matches!(outcome, MeasureOutcome::Timely { .. }),
                "{why}"
            );
        }
    }

    /// The store keeps the measure per visit: a patient is in the
    /// numerator exactly when one of their visits is timely.
    #[test]
    fn a_patient_is_timely_exactly_when_one_of_their_visits_is() {
        let days: Vec<Date> = (0..30)
            .filter_map(|n| {
                date(2026, 11, 10)
                    .checked_add(jiff::Span::new().days(n))
                    .ok()
            })
            .collect();
        let mut checked = 0;
        for (v, &visit) in days.iter().enumerate().step_by(3) {
            for (d, &delivered) in days.iter().enumerate().step_by(2) {
                for activated in [None, Some(days[(v + d) % days.len()])] {
                    let facts = AccessFacts {
                        visits: vec![visit, days[(v + 11) % days.len()]],
                        delivered: vec![delivered],
                        activated,
                    };
                    let per_visit = facts
                        .visits
                        .iter()
                        .any(|&visit| visit_is_timely(&facts, visit, &closed()));
                    let patient = measure_patient(&facts, &closed()).in_numerator();
                    assert_eq!(per_visit, patient, "{facts:?}");
                    checked += usize::from(patient);
                }
            }
        }
        assert!(checked > 0, "some of the cases are timely");
    }

    /// How access was given, in the words of the page and the CSV.
    #[test]
    fn access_in_words() {
        let day = date(2026, 12, 2);
        assert_eq!(
            Access::AlreadyActive(day).words(),
            "already active (since 2026-12-02)"
        );
        assert_eq!(Access::Activated(day).words(), "activated on 2026-12-02");
        assert_eq!(
            Access::InviteDelivered(day).words(),
            "invite delivered on 2026-12-02"
        );
    }
}
