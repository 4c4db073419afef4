//! R5: the practice's Auto Invite Schedule.
//!
//! Weekly open windows per weekday in the practice's IANA time zone, plus
//! closed dates. "Open" is decided on the local wall-clock time, so a window
//! of 08:00-17:00 stays 08:00-17:00 local across DST changes.
//!
//! Precisely: a window on local date `D` is open for the instants `u` with
//! `first(D opens) <= u < first(D closes)` (`first(D+1 00:00)` for a window
//! that closes at midnight), where `first(x)` is the earliest
//! instant at which the wall clock shows `x` or later. Away from DST changes
//! that is plain wall-clock time. When a wall time falls in a spring-forward
//! gap, `first` is the instant the gap ends (so a window opening at 02:30 on
//! that day opens at 03:00, and one closing at 02:30 closes at 03:00, the
//! same instant as the 01:59:59 -> 03:00 jump). When it falls in the repeated
//! fall-back hour, `first` is its first occurrence, for opening and closing
//! alike, so every window is one unbroken stretch of time.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use serde::{Deserialize, Serialize};

/// One weekly window: open from `opens` (inclusive) to `closes` (exclusive),
/// local time, on `weekday`. `closes` must be after `opens`, except that a
/// `closes` of 00:00 means midnight at the end of the day (so 18:00-00:00
/// runs to midnight and 00:00-00:00 is the whole day). There are no
/// overnight windows: split one at midnight into two (22:00-00:00 on one
/// day, 00:00-06:00 on the next).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// serde as "monday" .. "sunday"
    #[serde(with = "weekday_name")]
    pub weekday: Weekday,
    /// serde as "HH:MM"
    #[serde(with = "hh_mm")]
    pub opens: Time,
    #[serde(with = "hh_mm")]
    pub closes: Time,
}

impl Window {
    /// True when `closes` is 00:00, which means midnight at the end of the
    /// day (a window cannot close at the start of its own day).
    pub fn closes_at_midnight(&self) -> bool {
        self.closes == Time::midnight()
    }
}

/// The schedule as configured (and stored as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// IANA name, e.g. "America/New_York".
    pub time_zone: String,
    pub windows: Vec<Window>,
    #[serde(default)]
    pub closed_dates: Vec<Date>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("unknown time zone {0:?}: use an IANA name such as America/New_York")]
    UnknownTimeZone(String),
    #[error(
        "window on {weekday:?} closes at {closes} which is not after it opens at {opens} \
         (a window that runs to midnight closes at 00:00)"
    )]
    EmptyWindow {
        weekday: Weekday,
        opens: Time,
        closes: Time,
    },
}

impl Schedule {
    /// Monday to Friday, 08:00-17:00, in `time_zone`.
    pub fn office_hours(time_zone: &str) -> Schedule {
        let window = |weekday| Window {
            weekday,
            opens: Time::constant(8, 0, 0, 0),
            closes: Time::constant(17, 0, 0, 0),
        };
        Schedule {
            time_zone: time_zone.to_string(),
            windows: [
                Weekday::Monday,
                Weekday::Tuesday,
                Weekday::Wednesday,
                Weekday::Thursday,
                Weekday::Friday,
            ]
            .into_iter()
            .map(window)
            .collect(),
            closed_dates: Vec::new(),
        }
    }

    /// Resolves the time zone and rejects windows that could never be open
    /// (or were meant to run overnight, which must be split at midnight).
    pub fn validate(&self) -> Result<ValidSchedule, ScheduleError> {
        let tz = TimeZone::get(&self.time_zone)
            .map_err(|_| ScheduleError::UnknownTimeZone(self.time_zone.clone()))?;
        if let Some(w) = self
            .windows
            .iter()
            .find(|w| w.closes <= w.opens && !w.closes_at_midnight())
        {
            return Err(ScheduleError::EmptyWindow {
                weekday: w.weekday,
                opens: w.opens,
                closes: w.closes,
            });
        }
        Ok(ValidSchedule {
            tz,
            schedule: self.clone(),
        })
    }
}

/// A schedule whose time zone is resolved and whose windows are sane.
/// It serializes as the [`Schedule`] it was made from, so a record that
/// holds one answers in the shape the schedule was configured in.
#[derive(Debug, Clone)]
pub struct ValidSchedule {
    pub tz: TimeZone,
    pub schedule: Schedule,
}

impl Serialize for ValidSchedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.schedule.serialize(serializer)
    }
}

impl ValidSchedule {
    /// True when `at` is inside an open window on a date that is not closed.
    pub fn is_open(&self, at: Timestamp) -> bool {
        // A window of date D ends no later than the wall clock first reaches
        // D+1 00:00 (its end is exclusive), and starts no earlier than it
        // first reaches D 00:00; so it
        // can contain `at` only if D is the local date of `at` or, after a
        // fall-back across midnight, the day after.
        let date = self.local_date(at);
        std::iter::once(date)
            .chain(date.tomorrow().ok())
            .any(|d| self.intervals_on(d).any(|(s, e)| s <= at && at < e))
    }

    /// The earliest instant `u >= at` with `is_open(u)`; `None` when the
    /// schedule has no windows. A window that opens inside a DST gap opens at
    /// the end of the gap; in a repeated hour the first occurrence counts.
    pub fn next_open(&self, at: Timestamp) -> Option<Timestamp> {
        if self.schedule.windows.is_empty() {
            return None;
        }
        // Every weekday that has a window comes round each week; an
        // occurrence is lost only to a closed date or, on a DST-change day,
        // to a window that lies wholly inside the gap. So `closed dates + 4`
        // weeks always contain an opening, and the search is bounded even
        // for a malformed schedule. (None is then "never opens".)
        let horizon_days = self
            .schedule
            .closed_dates
            .len()
            .saturating_add(4)
            .saturating_mul(7);
        // Windows of earlier dates end at or before `at` (see `is_open`); windows
        // of a later date start no earlier than any window of this one ends, so
        // the first date with a window still open after `at` has the answer.
        let mut date = self.local_date(at);
        for _ in 0..horizon_days {
            let earliest = self
                .intervals_on(date)
                .filter(|&(_, end)| end > at)
                .map(|(start, _)| start.max(at))
                .min();
            if earliest.is_some() {
                return earliest;
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The next `count` open stretches `[start, end)` from `at` on, in
    /// order, for the Integration Tool's "next send windows": the first one
    /// starts at `at` when the schedule is open then. Windows of one date
    /// that touch or overlap are one stretch; stretches of different dates
    /// are kept apart, so a schedule open all day every day still lists
    /// days. Empty when the schedule never opens.
    pub fn next_windows(&self, at: Timestamp, count: usize) -> Vec<(Timestamp, Timestamp)> {
        let mut found: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(count);
        if self.schedule.windows.is_empty() {
            return found;
        }
        // As in `next_open`: every `closed dates + 4` weeks hold an
        // opening, so `count` of them fit in this many weeks (none for a
        // `count` of 0).
        let horizon_days = self
            .schedule
            .closed_dates
            .len()
            .saturating_add(4)
            .saturating_mul(count)
            .saturating_mul(7);
        let mut date = self.local_date(at);
        for _ in 0..horizon_days {
            for stretch in self.stretches_on(date, at) {
                found.push(stretch);
                if found.len() == count {
                    return found;
                }
            }
            let Ok(next) = date.tomorrow() else { break };
            date = next;
        }
        found
    }

    /// `date`'s open intervals that end after `at`, each starting no
    /// earlier than `at`, sorted, with touching or overlapping ones joined.
    fn stretches_on(&self, date: Date, at: Timestamp) -> Vec<(Timestamp, Timestamp)> {
        let mut intervals: Vec<_> = self
            .intervals_on(date)
            .filter(|&(_, end)| end > at)
            .map(|(start, end)| (start.max(at), end))
            .collect();
        intervals.sort();
        let mut joined: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(intervals.len());
        for (start, end) in intervals {
            match joined.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => joined.push((start, end)),
            }
        }
        joined
    }

    /// The practice's local date at `at` (for R1's "not in the future").
    pub fn local_date(&self, at: Timestamp) -> Date {
        self.tz.to_datetime(at).date()
    }

    /// The open stretches `[start, end)` of `date`'s windows; none on a
    /// closed date, and none for a window wholly inside a DST gap.
    fn intervals_on(&self, date: Date) -> impl Iterator<Item = (Timestamp, Timestamp)> + '_ {
        let closed = self.schedule.closed_dates.contains(&date);
        self.schedule
            .windows
            .iter()
            .filter(move |w| !closed && w.weekday == date.weekday())
            .filter_map(move |w| {
                let start = self.first_instant_at(date.to_datetime(w.opens))?;
                let closes = if w.closes_at_midnight() {
                    date.tomorrow().ok()?.to_datetime(Time::midnight())
                } else {
                    date.to_datetime(w.closes)
                };
                let end = self.first_instant_at(closes)?;
                (start < end).then_some((start, end))
            })
    }

    /// The earliest instant at which the local wall clock shows `wall` or
    /// later: `wall` itself when it exists once, its first occurrence in a
    /// fall-back fold, and the end of the gap (the transition) when it was
    /// skipped. `None` only at the edges of the supported time range.
    fn first_instant_at(&self, wall: DateTime) -> Option<Timestamp> {
        match self.tz.to_ambiguous_timestamp(wall).offset() {
            AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(wall).ok(),
            AmbiguousOffset::Fold { before, .. } => before.to_timestamp(wall).ok(),
            AmbiguousOffset::Gap { before, after } => {
                // The skipped wall times are [T + before, T + after) for the
                // transition T, so `wall - after` is before T and
                // `wall - before` is at or after it; T is the first
                // transition after the former.
                let lower = after.to_timestamp(wall).ok()?;
                match self.tz.following(lower).next() {
                    Some(transition) => Some(transition.timestamp()),
                    None => before.to_timestamp(wall).ok(),
                }
            }
        }
    }
}

/// Weekdays as lower-case English names; on input also the three-letter
/// abbreviations, in any case, since administrators type these.
mod weekday_name {
    use jiff::civil::Weekday;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(w: &Weekday, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name(*w))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Weekday, D::Error> {
        let raw = String::deserialize(d)?;
        parse(&raw).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown weekday {raw:?}: use monday, tuesday, ... sunday"
            ))
        })
    }

    pub(super) fn name(w: Weekday) -> &'static str {
        match w {
            Weekday::Monday => "monday",
            Weekday::Tuesday => "tuesday",
            Weekday::Wednesday => "wednesday",
            Weekday::Thursday => "thursday",
            Weekday::Friday => "friday",
            Weekday::Saturday => "saturday",
            Weekday::Sunday => "sunday",
        }
    }

    pub(super) fn parse(raw: &str) -> Option<Weekday> {
        let lower = raw.trim().to_ascii_lowercase();
        [
            Weekday::Monday,
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Friday,
            Weekday::Saturday,
            Weekday::Sunday,
        ]
        .into_iter()
        .find(|&w| lower == name(w) || lower == name(w)[..3])
    }
}

/// Times of day as "HH:MM" (24-hour). "HH:MM:SS" is accepted on input and
/// written back with its seconds, so nothing is lost on a round trip.
mod hh_mm {
    use jiff::civil::Time;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Time, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        let raw = String::deserialize(d)?;
        parse(&raw).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid time of day {raw:?}: use HH:MM, 24-hour, e.g. 08:00 or 17:30"
            ))
        })
    }

    pub(super) fn format(t: Time) -> String {
        if t.second() == 0 && t.subsec_nanosecond() == 0 {
            format!("{:02}:{:02}", t.hour(), t.minute())
        } else {
            format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
        }
    }

    pub(super) fn parse(raw: &str) -> Option<Time> {
        let two_digits = |part: &str| -> Option<i8> {
            if part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit()) {
                part.parse().ok()
            } else {
                None
            }
        };
        let mut parts = raw.split(':');
        let hour = two_digits(parts.next()?)?;
        let minute = two_digits(parts.next()?)?;
        let second = match parts.next() {
            Some(part) => two_digits(part)?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Time::new(hour, minute, second, 0).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn hm(s: &str) -> Time {
        hh_mm::parse(s).unwrap_or_else(|| panic!("{s}: not HH:MM"))
    }

    fn schedule(tz: &str, windows: &[(Weekday, &str, &str)], closed: &[Date]) -> ValidSchedule {
        Schedule {
            time_zone: tz.to_string(),
            windows: windows
                .iter()
                .map(|&(weekday, opens, closes)| Window {
                    weekday,
                    opens: hm(opens),
                    closes: hm(closes),
                })
                .collect(),
            closed_dates: closed.to_vec(),
        }
        .validate()
        .unwrap()
    }

    /// Each row: name, instant, `is_open` there, `next_open` from there.
    type Row<'a> = (&'a str, &'a str, bool, Option<&'a str>);

    fn check_rows(label: &str, schedule: &ValidSchedule, rows: &[Row<'_>]) {
        for &(name, at, open, next) in rows {
            let at = ts(at);
            assert_eq!(schedule.is_open(at), open, "{label} / {name}: is_open");
            let next = next.map(ts);
            assert_eq!(schedule.next_open(at), next, "{label} / {name}: next_open");
            if open {
                assert_eq!(next, Some(at), "{label} / {name}: row is inconsistent");
            }
            if let Some(next) = next {
                assert!(
                    schedule.is_open(next),
                    "{label} / {name}: open at next_open"
                );
                if next > at {
                    let before = next - SignedDuration::from_nanos(1);
                    assert!(
                        !schedule.is_open(before),
                        "{label} / {name}: closed just before"
                    );
                }
            }
        }
    }

    use Weekday::*;
    use jiff::SignedDuration;

    #[test]
    fn dst_dates_used_below_are_sundays() {
        for d in [
            date(2026, 3, 8),
            date(2026, 11, 1),
            date(2026, 10, 4),
            date(2026, 4, 5),
        ] {
            assert_eq!(d.weekday(), Sunday, "{d}");
        }
        assert_eq!(date(2026, 11, 23).weekday(), Monday);
    }

    /// R5: Monday to Friday 08:00-17:00 in New York, over a week.
    #[test]
    fn r5_office_hours_over_a_week() {
        let ny = schedule_office_hours("America/New_York");
        #[rustfmt::skip]
        let rows: &[Row<'_>] = &[
            ("Mon 07:59:59", "2026-11-23T07:59:59-05:00", false, Some("2026-11-23T08:00:00-05:00")),
            ("Mon 08:00 opens", "2026-11-23T08:00:00-05:00", true, Some("2026-11-23T08:00:00-05:00")),
            ("Mon 12:34", "2026-11-23T12:34:00-05:00", true, Some("2026-11-23T12:34:00-05:00")),
            ("Mon last instant", "2026-11-23T16:59:59.999999999-05:00", true, Some("2026-11-23T16:59:59.999999999-05:00")),
            ("Mon 17:00 closes", "2026-11-23T17:00:00-05:00", false, Some("2026-11-24T08:00:00-05:00")),
            ("Wed 03:00", "2026-11-25T03:00:00-05:00", false, Some("2026-11-25T08:00:00-05:00")),
            ("Fri 16:00", "2026-11-20T16:00:00-05:00", true, Some("2026-11-20T16:00:00-05:00")),
            ("Fri 17:00 to Monday", "2026-11-20T17:00:00-05:00", false, Some("2026-11-23T08:00:00-05:00")),
            ("Sat 10:00", "2026-11-21T10:00:00-05:00", false, Some("2026-11-23T08:00:00-05:00")),
            ("Sat 22:00", "2026-11-21T22:00:00-05:00", false, Some("2026-11-23T08:00:00-05:00")),
            ("Sun 23:59", "2026-11-22T23:59:00-05:00", false, Some("2026-11-23T08:00:00-05:00")),
            ("Mon 08:00 given in UTC", "2026-11-23T13:00:00Z", true, Some("2026-11-23T13:00:00Z")),
            ("summer Mon 08:00 EDT", "2026-07-06T12:00:00Z", true, Some("2026-07-06T12:00:00Z")),
            ("summer Mon 07:00 EDT", "2026-07-06T11:00:00Z", false, Some("2026-07-06T12:00:00Z")),
            ("winter 12:00Z is 07:00 EST", "2026-01-05T12:00:00Z", false, Some("2026-01-05T13:00:00Z")),
        ];
        check_rows("New York office hours", &ny, rows);

        let sydney = schedule_office_hours("Australia/Sydney");
        #[rustfmt::skip]
        let rows: &[Row<'_>] = &[
            ("Mon 08:00 AEDT", "2026-11-23T08:00:00+11:00", true, Some("2026-11-23T08:00:00+11:00")),
            ("Sun 22:00Z is Mon 09:00 AEDT", "2026-11-22T22:00:00Z", true, Some("2026-11-22T22:00:00Z")),
            ("Fri 17:00 AEST to Monday", "2026-07-10T17:00:00+10:00", false, Some("2026-07-13T08:00:00+10:00")),
        ];
        check_rows("Sydney office hours", &sydney, rows);
    }

    fn schedule_office_hours(tz: &str) -> ValidSchedule {
        Schedule::office_hours(tz).validate().unwrap()
    }

    #[test]
    fn r5_closed_dates_and_empty_schedules() {
        // Thanksgiving and the Friday after.
        let ny = schedule(
            "America/New_York",
            &[
                (Monday, "08:00", "17:00"),
                (Wednesday, "08:00", "17:00"),
                (Thursday, "08:00", "17:00"),
                (Friday, "08:00", "17:00"),
            ],
            &[date(2026, 11, 26), date(2026, 11, 27)],
        );
        #[rustfmt::skip]
        let rows: &[Row<'_>] = &[
            ("Wed open", "2026-11-25T09:00:00-05:00", true, Some("2026-11-25T09:00:00-05:00")),
            ("Wed 17:00 skips Thu and Fri", "2026-11-25T17:00:00-05:00", false, Some("2026-11-30T08:00:00-05:00")),
            ("closed Thu 10:00", "2026-11-26T10:00:00-05:00", false, Some("2026-11-30T08:00:00-05:00")),
            ("closed Fri 10:00", "2026-11-27T10:00:00-05:00", false, Some("2026-11-30T08:00:00-05:00")),
            ("next Thu is open", "2026-12-03T10:00:00-05:00", true, Some("2026-12-03T10:00:00-05:00")),
        ];
        check_rows("closed dates", &ny, rows);

        let none = schedule("America/New_York", &[], &[]);
        assert!(!none.is_open(ts("2026-11-25T09:00:00-05:00")));
        assert_eq!(none.next_open(ts("2026-11-25T09:00:00-05:00")), None);

        // Every Monday of the next ten weeks closed: found after them.
        let mondays: Vec<Date> = (0..10)
            .map(|w| {
                date(2026, 11, 23)
                    .checked_add(jiff::Span::new().weeks(w))
                    .unwrap()
            })
            .collect();
        let closed = schedule("America/New_York", &[(Monday, "08:00", "17:00")], &mondays);
        assert_eq!(
            closed.next_open(ts("2026-11-22T00:00:00-05:00")),
            Some(ts("2027-02-01T08:00:00-05:00"))
        );
    }

    /// A `closes` of 00:00 is midnight at the end of the day, so an
    /// overnight window can be split at midnight without a gap.
    #[test]
    fn r5_window_ending_at_midnight() {
        let split = schedule(
            "America/New_York",
            &[(Saturday, "20:00", "00:00"), (Sunday, "00:00", "02:00")],
            &[],
        );
        #[rustfmt::skip]
        let rows: &[Row<'_>] = &[
            ("Sat 19:59", "2026-11-21T19:59:00-05:00", false, Some("2026-11-21T20:00:00-05:00")),
            ("Sat 20:00", "2026-11-21T20:00:00-05:00", true, Some("2026-11-21T20:00:00-05:00")),
            ("Sat last instant", "2026-11-21T23:59:59.999999999-05:00", true, Some("2026-11-21T23:59:59.999999999-05:00")),
            ("Sun 00:00", "2026-11-22T00:00:00-05:00", true, Some("2026-11-22T00:00:00-05:00")),
            ("Sun 01:59", "2026-11-22T01:59:00-05:00", true, Some("2026-11-22T01:59:00-05:00")),
            ("Sun 02:00", "2026-11-22T02:00:00-05:00", false, Some("2026-11-28T20:00:00-05:00")),
        ];
        check_rows("split overnight window", &split, rows);

        let saturday_only = schedule("America/New_York", &[(Saturday, "20:00", "00:00")], &[]);
        #[rustfmt::skip]
        let rows: &[Row<'_>] = &[
            ("Sat last instant", "2026-11-21T23:59:59.999999999-05:00", true, Some("2026-11-21T23:59:59.999999999-05:00")),
            ("Sun 00:00 is closed", "2026-11-22T00:00:00-05:00", false, Some("2026-11-28T20:00:00-05:00")),
        ];
        check_rows("window to midnight", &saturday_only, rows);

        // The Sunday after a closed Saturday still opens at 00:00.
        let closed_saturday = schedule(
            "America/New_York",
            &[(Saturday, "20:00", "00:00"), (Sunday, "00:00", "02:00")],
            &[date(2026, 11, 21)],
        );
        check_rows(
            "closed Saturday",
            &closed_saturday,
            &[(
                "Sat 21:00",
                "2026-11-21T21:00:00-05:00",
                false,
                Some("2026-11-22T00:00:00-05:00"),
            )],
        );

        let whole_day = schedule("America/New_York", &[(Monday, "00:00", "00:00")], &[]);
        #[rustfmt::skip]
        let rows: &[Row<'_>] = &[
            ("Sun last instant", "2026-11-22T23:59:59.999999999-05:00", false, Some("2026-11-23T00:00:00-05:00")),
            ("Mon 00:00", "2026-11-23T00:00:00-05:00", true, Some("2026-11-23T00:00:00-05:00")),
            ("Mon last instant", "2026-11-23T23:59:59.999999999-05:00", true, Some("2026-11-23T23:59:59.999999999-05:00")),
            ("Tue 00:00", "2026-11-24T00:00:00-05:00", false, Some("2026-11-30T00:00:00-05:00")),
        ];
        check_rows("whole day", &whole_day, rows);
    }

    /// New York springs forward on 2026-03-08: 01:59:59 EST -> 03:00 EDT.
    #[test]
    fn r5_new_york_spring_forward() {
        let tz = "America/New_York";
        #[rustfmt::skip]
        let cases: &[(&str, &str, &[Row<'_>])] = &[
            ("01:30-03:30", "03:30", &[
                ("before", "2026-03-08T01:29:59-05:00", false, Some("2026-03-08T01:30:00-05:00")),
                ("opens", "2026-03-08T01:30:00-05:00", true, Some("2026-03-08T01:30:00-05:00")),
                ("just before the gap", "2026-03-08T01:59:59.999999999-05:00", true, Some("2026-03-08T01:59:59.999999999-05:00")),
                ("end of the gap", "2026-03-08T03:00:00-04:00", true, Some("2026-03-08T03:00:00-04:00")),
                ("last instant", "2026-03-08T03:29:59.999999999-04:00", true, Some("2026-03-08T03:29:59.999999999-04:00")),
                ("closes", "2026-03-08T03:30:00-04:00", false, Some("2026-03-15T01:30:00-04:00")),
            ]),
            ("02:00-04:00", "04:00", &[
                ("Saturday noon", "2026-03-07T12:00:00-05:00", false, Some("2026-03-08T03:00:00-04:00")),
                ("before the gap", "2026-03-08T01:00:00-05:00", false, Some("2026-03-08T03:00:00-04:00")),
                ("just before the gap", "2026-03-08T01:59:59.999999999-05:00", false, Some("2026-03-08T03:00:00-04:00")),
                ("opens at the end of the gap", "2026-03-08T03:00:00-04:00", true, Some("2026-03-08T03:00:00-04:00")),
                ("inside", "2026-03-08T03:59:59-04:00", true, Some("2026-03-08T03:59:59-04:00")),
                ("closes", "2026-03-08T04:00:00-04:00", false, Some("2026-03-15T02:00:00-04:00")),
                ("a normal Sunday before", "2026-03-01T02:00:00-05:00", true, Some("2026-03-01T02:00:00-05:00")),
            ]),
            ("02:30-03:30", "03:30", &[
                ("opens at the end of the gap", "2026-03-08T01:45:00-05:00", false, Some("2026-03-08T03:00:00-04:00")),
                ("inside", "2026-03-08T03:15:00-04:00", true, Some("2026-03-08T03:15:00-04:00")),
            ]),
            ("01:00-02:30", "02:30", &[
                ("closes at the jump", "2026-03-08T01:59:59.999999999-05:00", true, Some("2026-03-08T01:59:59.999999999-05:00")),
                ("closed after the jump", "2026-03-08T03:00:00-04:00", false, Some("2026-03-15T01:00:00-04:00")),
            ]),
            ("02:15-02:45", "02:45", &[
                ("wholly in the gap: not open that day", "2026-03-08T00:00:00-05:00", false, Some("2026-03-15T02:15:00-04:00")),
                ("end of the gap", "2026-03-08T03:00:00-04:00", false, Some("2026-03-15T02:15:00-04:00")),
                ("a normal Sunday before", "2026-03-01T02:20:00-05:00", true, Some("2026-03-01T02:20:00-05:00")),
            ]),
        ];
        for &(window, closes, rows) in cases {
            let opens = &window[..5];
            let s = schedule(tz, &[(Sunday, opens, closes)], &[]);
            check_rows(&format!("{tz} {window}"), &s, rows);
        }
    }

    /// New York falls back on 2026-11-01: 01:59:59 EDT -> 01:00 EST, so
    /// 01:00-02:00 happens twice; a window opens at the first occurrence
    /// and is one unbroken stretch.
    #[test]
    fn r5_new_york_fall_back() {
        let tz = "America/New_York";
        #[rustfmt::skip]
        let cases: &[(&str, &str, &[Row<'_>])] = &[
            ("01:30-03:30", "03:30", &[
                ("before", "2026-11-01T01:29:59-04:00", false, Some("2026-11-01T01:30:00-04:00")),
                ("opens at the first 01:30", "2026-11-01T01:30:00-04:00", true, Some("2026-11-01T01:30:00-04:00")),
                ("just before the fall-back", "2026-11-01T01:59:59.999999999-04:00", true, Some("2026-11-01T01:59:59.999999999-04:00")),
                ("second 01:00: still one stretch", "2026-11-01T01:00:00-05:00", true, Some("2026-11-01T01:00:00-05:00")),
                ("second 01:30", "2026-11-01T01:30:00-05:00", true, Some("2026-11-01T01:30:00-05:00")),
                ("last instant", "2026-11-01T03:29:59.999999999-05:00", true, Some("2026-11-01T03:29:59.999999999-05:00")),
                ("closes", "2026-11-01T03:30:00-05:00", false, Some("2026-11-08T01:30:00-05:00")),
            ]),
            ("02:00-04:00", "04:00", &[
                ("first 01:30", "2026-11-01T01:30:00-04:00", false, Some("2026-11-01T02:00:00-05:00")),
                ("second 01:30", "2026-11-01T01:30:00-05:00", false, Some("2026-11-01T02:00:00-05:00")),
                ("just before 02:00", "2026-11-01T01:59:59.999999999-05:00", false, Some("2026-11-01T02:00:00-05:00")),
                ("opens", "2026-11-01T02:00:00-05:00", true, Some("2026-11-01T02:00:00-05:00")),
                ("closes", "2026-11-01T04:00:00-05:00", false, Some("2026-11-08T02:00:00-05:00")),
            ]),
            ("01:00-01:30", "01:30", &[
                ("before", "2026-11-01T00:59:00-04:00", false, Some("2026-11-01T01:00:00-04:00")),
                ("first occurrence", "2026-11-01T01:15:00-04:00", true, Some("2026-11-01T01:15:00-04:00")),
                ("after the first occurrence", "2026-11-01T01:30:00-04:00", false, Some("2026-11-08T01:00:00-05:00")),
                ("second occurrence is not open", "2026-11-01T01:15:00-05:00", false, Some("2026-11-08T01:00:00-05:00")),
            ]),
        ];
        for &(window, closes, rows) in cases {
            let s = schedule(tz, &[(Sunday, &window[..5], closes)], &[]);
            check_rows(&format!("{tz} {window}"), &s, rows);
        }
    }

    /// Sydney springs forward on 2026-10-04: 01:59:59 AEST -> 03:00 AEDT.
    #[test]
    fn r5_sydney_spring_forward() {
        let tz = "Australia/Sydney";
        #[rustfmt::skip]
        let cases: &[(&str, &str, &[Row<'_>])] = &[
            ("01:30-03:30", "03:30", &[
                ("before", "2026-10-04T01:29:00+10:00", false, Some("2026-10-04T01:30:00+10:00")),
                ("before the gap", "2026-10-04T01:45:00+10:00", true, Some("2026-10-04T01:45:00+10:00")),
                ("end of the gap", "2026-10-04T03:00:00+11:00", true, Some("2026-10-04T03:00:00+11:00")),
                ("closes", "2026-10-04T03:30:00+11:00", false, Some("2026-10-11T01:30:00+11:00")),
            ]),
            ("02:00-04:00", "04:00", &[
                ("before the gap", "2026-10-04T01:00:00+10:00", false, Some("2026-10-04T03:00:00+11:00")),
                ("just before the gap", "2026-10-04T01:59:59.999999999+10:00", false, Some("2026-10-04T03:00:00+11:00")),
                ("opens at the end of the gap", "2026-10-04T03:00:00+11:00", true, Some("2026-10-04T03:00:00+11:00")),
                ("closes", "2026-10-04T04:00:00+11:00", false, Some("2026-10-11T02:00:00+11:00")),
            ]),
        ];
        for &(window, closes, rows) in cases {
            let s = schedule(tz, &[(Sunday, &window[..5], closes)], &[]);
            check_rows(&format!("{tz} {window}"), &s, rows);
        }
    }

    /// Sydney falls back on 2026-04-05: 02:59:59 AEDT -> 02:00 AEST.
    #[test]
    fn r5_sydney_fall_back() {
        let tz = "Australia/Sydney";
        #[rustfmt::skip]
        let cases: &[(&str, &str, &[Row<'_>])] = &[
            ("01:30-03:30", "03:30", &[
                ("before", "2026-04-05T01:29:00+11:00", false, Some("2026-04-05T01:30:00+11:00")),
                ("first 02:30", "2026-04-05T02:30:00+11:00", true, Some("2026-04-05T02:30:00+11:00")),
                ("second 02:30", "2026-04-05T02:30:00+10:00", true, Some("2026-04-05T02:30:00+10:00")),
                ("last minute", "2026-04-05T03:29:00+10:00", true, Some("2026-04-05T03:29:00+10:00")),
                ("closes", "2026-04-05T03:30:00+10:00", false, Some("2026-04-12T01:30:00+10:00")),
            ]),
            ("02:00-04:00", "04:00", &[
                ("before", "2026-04-05T01:59:00+11:00", false, Some("2026-04-05T02:00:00+11:00")),
                ("opens at the first 02:00", "2026-04-05T02:00:00+11:00", true, Some("2026-04-05T02:00:00+11:00")),
                ("second 02:00", "2026-04-05T02:00:00+10:00", true, Some("2026-04-05T02:00:00+10:00")),
                ("closes", "2026-04-05T04:00:00+10:00", false, Some("2026-04-12T02:00:00+10:00")),
            ]),
            ("02:00-02:30", "02:30", &[
                ("first occurrence", "2026-04-05T02:15:00+11:00", true, Some("2026-04-05T02:15:00+11:00")),
                ("after the first occurrence", "2026-04-05T02:45:00+11:00", false, Some("2026-04-12T02:00:00+10:00")),
                ("second occurrence is not open", "2026-04-05T02:15:00+10:00", false, Some("2026-04-12T02:00:00+10:00")),
            ]),
        ];
        for &(window, closes, rows) in cases {
            let s = schedule(tz, &[(Sunday, &window[..5], closes)], &[]);
            check_rows(&format!("{tz} {window}"), &s, rows);
        }
    }

    /// Zones whose clocks change at midnight: Havana (Sat 23:59:59 CST ->
    /// Sun 01:00 CDT on 2026-03-08; Sun 00:59:59 CDT -> Sun 00:00 CST on
    /// 2026-11-01) and Beirut (Sat 23:59:59 EEST -> Sat 23:00 EET on
    /// 2026-10-24, so Saturday's last hour happens twice).
    #[test]
    fn r5_midnight_dst_changes() {
        let split = [(Saturday, "20:00", "00:00"), (Sunday, "00:00", "02:00")];
        let havana = schedule("America/Havana", &split, &[]);
        #[rustfmt::skip]
        let rows: &[Row<'_>] = &[
            ("Sat 19:59", "2026-03-07T19:59:00-05:00", false, Some("2026-03-07T20:00:00-05:00")),
            ("Sat last instant", "2026-03-07T23:59:59.999999999-05:00", true, Some("2026-03-07T23:59:59.999999999-05:00")),
            ("Sun 01:00, after the jump", "2026-03-08T01:00:00-04:00", true, Some("2026-03-08T01:00:00-04:00")),
            ("Sun 02:00", "2026-03-08T02:00:00-04:00", false, Some("2026-03-14T20:00:00-04:00")),
            ("Sat before fall-back", "2026-10-31T23:59:00-04:00", true, Some("2026-10-31T23:59:00-04:00")),
            ("first Sun 00:30", "2026-11-01T00:30:00-04:00", true, Some("2026-11-01T00:30:00-04:00")),
            ("second Sun 00:30", "2026-11-01T00:30:00-05:00", true, Some("2026-11-01T00:30:00-05:00")),
            ("Sun 02:00 CST", "2026-11-01T02:00:00-05:00", false, Some("2026-11-07T20:00:00-05:00")),
        ];
        check_rows("Havana, split overnight window", &havana, rows);

        let saturday_only = schedule("America/Havana", &[(Saturday, "20:00", "00:00")], &[]);
        #[rustfmt::skip]
        let rows: &[Row<'_>] = &[
            ("Sat last instant before the gap", "2026-03-07T23:59:59.999999999-05:00", true, Some("2026-03-07T23:59:59.999999999-05:00")),
            ("the jump ends Saturday's window", "2026-03-08T01:00:00-04:00", false, Some("2026-03-14T20:00:00-04:00")),
            ("first Sun 00:00 ends it", "2026-11-01T00:00:00-04:00", false, Some("2026-11-07T20:00:00-05:00")),
        ];
        check_rows("Havana, Saturday to midnight", &saturday_only, rows);

        let beirut = schedule("Asia/Beirut", &[(Saturday, "22:00", "00:00")], &[]);
        #[rustfmt::skip]
        let rows: &[Row<'_>] = &[
            ("Sat 23:59 EEST", "2026-10-24T23:59:00+03:00", true, Some("2026-10-24T23:59:00+03:00")),
            ("repeated Sat 23:00 EET", "2026-10-24T23:00:00+02:00", true, Some("2026-10-24T23:00:00+02:00")),
            ("repeated Sat last instant", "2026-10-24T23:59:59.999999999+02:00", true, Some("2026-10-24T23:59:59.999999999+02:00")),
            ("Sun 00:00 EET", "2026-10-25T00:00:00+02:00", false, Some("2026-10-31T22:00:00+02:00")),
        ];
        check_rows("Beirut, Saturday to midnight", &beirut, rows);

        let beirut_sunday = schedule("Asia/Beirut", &[(Sunday, "00:00", "01:00")], &[]);
        #[rustfmt::skip]
        let rows: &[Row<'_>] = &[
            ("repeated Sat 23:30", "2026-10-24T23:30:00+02:00", false, Some("2026-10-25T00:00:00+02:00")),
            ("Sun 00:00", "2026-10-25T00:00:00+02:00", true, Some("2026-10-25T00:00:00+02:00")),
        ];
        check_rows("Beirut, Sunday from midnight", &beirut_sunday, rows);
    }

    #[test]
    fn r5_validate_rejects_bad_schedules() {
        let window = |weekday, opens, closes| Window {
            weekday,
            opens: hm(opens),
            closes: hm(closes),
        };
        #[rustfmt::skip]
        let rows: Vec<(&str, &str, Vec<Window>, Option<ScheduleError>)> = vec![
            ("office hours", "America/New_York", vec![window(Monday, "08:00", "17:00")], None),
            ("no windows", "Australia/Sydney", vec![], None),
            ("to midnight", "America/New_York", vec![window(Friday, "18:00", "00:00")], None),
            ("whole day", "America/New_York", vec![window(Friday, "00:00", "00:00")], None),
            ("UTC", "UTC", vec![window(Monday, "08:00", "17:00")], None),
            ("misspelt zone", "America/New_Yrok", vec![],
                Some(ScheduleError::UnknownTimeZone("America/New_Yrok".into()))),
            ("empty zone", "", vec![], Some(ScheduleError::UnknownTimeZone(String::new()))),
            ("abbreviation", "Eastern", vec![], Some(ScheduleError::UnknownTimeZone("Eastern".into()))),
            ("closes == opens", "America/New_York", vec![window(Tuesday, "09:00", "09:00")],
                Some(ScheduleError::EmptyWindow { weekday: Tuesday, opens: hm("09:00"), closes: hm("09:00") })),
            ("closes < opens (overnight)", "America/New_York",
                vec![window(Monday, "08:00", "17:00"), window(Wednesday, "22:00", "06:00")],
                Some(ScheduleError::EmptyWindow { weekday: Wednesday, opens: hm("22:00"), closes: hm("06:00") })),
            ("closes a second before opens", "America/New_York", vec![window(Sunday, "08:00:01", "08:00")],
                Some(ScheduleError::EmptyWindow { weekday: Sunday, opens: hm("08:00:01"), closes: hm("08:00") })),
            ("zone checked first", "Nowhere/City", vec![window(Tuesday, "09:00", "09:00")],
                Some(ScheduleError::UnknownTimeZone("Nowhere/City".into()))),
        ];
        for (name, tz, windows, expected) in rows {
            let s = Schedule {
                time_zone: tz.to_string(),
                windows,
                closed_dates: vec![],
            };
            match (s.validate(), expected) {
                (Ok(valid), None) => assert_eq!(valid.schedule, s, "{name}"),
                (Err(got), Some(expected)) => {
                    assert_eq!(got, expected, "{name}");
                    let words = got.to_string();
                    if let ScheduleError::UnknownTimeZone(zone) = &got {
                        assert!(words.contains(&format!("{zone:?}")), "{name}: {words}");
                    } else {
                        assert!(words.contains("not after it opens"), "{name}: {words}");
                    }
                }
                (got, expected) => panic!("{name}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    #[test]
    fn schedule_json() {
        let json = r#"{"time_zone": "America/New_York",
            "windows": [{"weekday": "Mon", "opens": "08:00", "closes": "17:30:15"},
                        {"weekday": "saturday", "opens": "20:00", "closes": "00:00"}]}"#;
        let s: Schedule = serde_json::from_str(json).unwrap();
        assert_eq!(s.windows[0].weekday, Monday);
        assert_eq!(s.windows[0].closes, Time::constant(17, 30, 15, 0));
        assert!(s.windows[1].closes_at_midnight());
        assert_eq!(s.closed_dates, vec![]);
        let back = serde_json::to_value(&s).unwrap();
        assert_eq!(
            back["windows"],
            serde_json::json!([
                {"weekday": "monday", "opens": "08:00", "closes": "17:30:15"},
                {"weekday": "saturday", "opens": "20:00", "closes": "00:00"},
            ])
        );
        assert_eq!(serde_json::from_value::<Schedule>(back.clone()).unwrap(), s);
        assert_eq!(
            serde_json::to_value(s.validate().unwrap()).unwrap(),
            back,
            "a validated schedule answers as the schedule it was made from"
        );

        #[rustfmt::skip]
        let bad = [
            ("hour 24", r#"{"weekday": "monday", "opens": "08:00", "closes": "24:00"}"#),
            ("one-digit hour", r#"{"weekday": "monday", "opens": "8:00", "closes": "17:00"}"#),
            ("minute 60", r#"{"weekday": "monday", "opens": "08:60", "closes": "17:00"}"#),
            ("extra part", r#"{"weekday": "monday", "opens": "08:00:00:00", "closes": "17:00"}"#),
            ("unknown weekday", r#"{"weekday": "funday", "opens": "08:00", "closes": "17:00"}"#),
        ];
        for (name, json) in bad {
            assert!(serde_json::from_str::<Window>(json).is_err(), "{name}");
        }
    }

    #[test]
    fn local_date_follows_the_zone() {
        let ny = schedule_office_hours("America/New_York");
        let sydney = schedule_office_hours("Australia/Sydney");
        let at = ts("2026-11-25T03:00:00Z");
        assert_eq!(ny.local_date(at), date(2026, 11, 24));
        assert_eq!(sydney.local_date(at), date(2026, 11, 25));
    }
    fn stretches(schedule: &ValidSchedule, at: &str, count: usize) -> Vec<(String, String)> {
        schedule
            .next_windows(ts(at), count)
            .into_iter()
            .map(|(s, e)| {
                let local = |t: Timestamp| schedule.tz.to_datetime(t).to_string();
                (local(s), local(e))
            })
            .collect()
    }

    fn pairs(rows: &[(&str, &str)]) -> Vec<(String, String)> {
        rows.iter()
            .map(|(s, e)| (s.to_string(), e.to_string()))
            .collect()
    }

    /// The Integration Tool's next five send windows: from inside a window
    /// the first starts now; closed dates and weekends are skipped.
    #[test]
    fn the_next_windows_start_now_when_open_and_skip_closed_dates() {
        let ny = schedule(
            "America/New_York",
            &[
                (Monday, "08:00", "17:00"),
                (Tuesday, "08:00", "17:00"),
                (Friday, "09:00", "12:00"),
            ],
            &[date(2026, 11, 24)],
        );
        assert_eq!(
            stretches(&ny, "2026-11-23T10:15:00-05:00", 5),
            pairs(&[
                ("2026-11-23T10:15:00", "2026-11-23T17:00:00"),
                ("2026-11-27T09:00:00", "2026-11-27T12:00:00"),
                ("2026-11-30T08:00:00", "2026-11-30T17:00:00"),
                ("2026-12-01T08:00:00", "2026-12-01T17:00:00"),
                ("2026-12-04T09:00:00", "2026-12-04T12:00:00"),
            ])
        );
        assert!(
            ny.next_windows(ts("2026-11-23T10:15:00-05:00"), 0)
                .is_empty()
        );
        // At the very instant a window closes it is over: the list starts
        // with the next one, not with an empty stretch.
        assert_eq!(
            stretches(&ny, "2026-11-23T17:00:00-05:00", 2),
            pairs(&[
                ("2026-11-27T09:00:00", "2026-11-27T12:00:00"),
                ("2026-11-30T08:00:00", "2026-11-30T17:00:00"),
            ])
        );
    }

    /// Windows of one day that touch or overlap are one stretch; a day
    /// open to midnight and the next from midnight stay two.
    #[test]
    fn touching_windows_of_a_day_are_one_stretch_but_days_stay_apart() {
        let s = schedule(
            "UTC",
            &[
                (Monday, "13:00", "17:00"),
                (Monday, "08:00", "12:00"),
                (Monday, "12:00", "13:30"),
                (Monday, "20:00", "00:00"),
                (Tuesday, "00:00", "00:00"),
            ],
            &[],
        );
        assert_eq!(
            stretches(&s, "2026-11-23T00:00:00Z", 3),
            pairs(&[
                ("2026-11-23T08:00:00", "2026-11-23T17:00:00"),
                ("2026-11-23T20:00:00", "2026-11-24T00:00:00"),
                ("2026-11-24T00:00:00", "2026-11-25T00:00:00"),
            ])
        );
    }

    /// Across New York's fall-back (Sunday Nov 1, 2026) the Monday window
    /// is still 08:00-17:00 local, which is an hour later in UTC.
    #[test]
    fn the_next_windows_follow_the_wall_clock_across_new_york_fall_back() {
        let ny = schedule_office_hours("America/New_York");
        let windows = ny.next_windows(ts("2026-10-30T18:00:00-04:00"), 2);
        assert_eq!(
            windows,
            vec![
                (ts("2026-11-02T13:00:00Z"), ts("2026-11-02T22:00:00Z")),
                (ts("2026-11-03T13:00:00Z"), ts("2026-11-03T22:00:00Z")),
            ]
        );
        let before = ny.next_windows(ts("2026-10-29T18:00:00-04:00"), 1);
        assert_eq!(
            before,
            vec![(ts("2026-10-30T12:00:00Z"), ts("2026-10-30T21:00:00Z"))]
        );
    }

    /// Sydney springs forward on Sunday Oct 4, 2026 (02:00 -> 03:00): a
    /// 02:30-04:00 window opens at 03:00 that day and lasts an hour; one
    /// wholly inside the gap is not listed.
    #[test]
    fn a_window_in_sydneys_spring_forward_gap_opens_when_the_gap_ends() {
        let sydney = schedule(
            "Australia/Sydney",
            &[(Sunday, "02:30", "04:00"), (Sunday, "02:10", "02:50")],
            &[],
        );
        assert_eq!(
            sydney.next_windows(ts("2026-10-03T12:00:00+10:00"), 2),
            vec![
                (
                    ts("2026-10-04T03:00:00+11:00"),
                    ts("2026-10-04T04:00:00+11:00")
                ),
                (
                    ts("2026-10-11T02:10:00+11:00"),
                    ts("2026-10-11T04:00:00+11:00")
                ),
            ]
        );
    }

    #[test]
    fn a_schedule_without_windows_has_no_next_windows() {
        let none = schedule("America/New_York", &[], &[]);
        assert!(none.next_windows(ts("2026-11-23T10:00:00Z"), 5).is_empty());
    }
}
