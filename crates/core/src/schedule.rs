//! R5: the practice's Auto Invite Schedule.
//!
//! Weekly open windows per weekday in the practice's IANA time zone, plus
//! closed dates. "Open" is decided on the local wall-clock time, so a window
//! of 08:00-17:00 stays 08:00-17:00 local across DST changes.
//!
//! Precisely: a window on local date `D` is open for the instants `u` with
//! `first(D opens) <= u < first(D closes)`, where `first(x)` is the earliest
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
/// local time, on `weekday`. `closes` must be after `opens` (no overnight
/// windows; split them in two).
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
    #[error("window on {weekday:?} closes at {closes} which is not after it opens at {opens}")]
    EmptyWindow { weekday: Weekday, opens: Time, closes: Time },
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
        if let Some(w) = self.windows.iter().find(|w| w.closes <= w.opens) {
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
#[derive(Debug, Clone)]
pub struct ValidSchedule {
    pub tz: TimeZone,
    pub schedule: Schedule,
}

impl ValidSchedule {
    /// True when `at` is inside an open window on a date that is not closed.
    pub fn is_open(&self, at: Timestamp) -> bool {
        // A window of date D ends before the wall clock first reaches D+1
        // 00:00, and starts no earlier than it first reaches D 00:00; so it
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
        // Windows of earlier dates end before `at` (see `is_open`). Windows
        // of a later date start no earlier than any window of this one, so
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
                let end = self.first_instant_at(date.to_datetime(w.closes))?;
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
