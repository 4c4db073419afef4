//! The Auto Invite Schedule editor's form: one text field per weekday with
//! that day's windows ("08:00-12:00, 13:00-17:00"; blank is closed), the
//! time zone, and the closed dates one per line. Read back into a
//! [`Schedule`] that the rules engine validates, with each problem filed
//! under the field it concerns.

use std::collections::BTreeMap;

use enroll_core::{Schedule, ScheduleError, ValidSchedule, Window};
use jiff::civil::{Date, Time, Weekday};
use serde::{Deserialize, Serialize};

use super::csrf_field;

/// The weekdays in the editor's order, with their form field names.
const DAYS: [(Weekday, &str, &str); 7] = [
    (Weekday::Monday, "monday", "Monday"),
    (Weekday::Tuesday, "tuesday", "Tuesday"),
    (Weekday::Wednesday, "wednesday", "Wednesday"),
    (Weekday::Thursday, "thursday", "Thursday"),
    (Weekday::Friday, "friday", "Friday"),
    (Weekday::Saturday, "saturday", "Saturday"),
    (Weekday::Sunday, "sunday", "Sunday"),
];

/// The zones most practices here use, offered first.
const COMMON_ZONES: [(&str, &str); 8] = [
    ("America/New_York", "Eastern (New York)"),
    ("America/Chicago", "Central (Chicago)"),
    ("America/Denver", "Mountain (Denver)"),
    ("America/Phoenix", "Mountain, no DST (Phoenix)"),
    ("America/Los_Angeles", "Pacific (Los Angeles)"),
    ("America/Anchorage", "Alaska (Anchorage)"),
    ("Pacific/Honolulu", "Hawaii (Honolulu)"),
    ("America/Puerto_Rico", "Atlantic (Puerto Rico)"),
];

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ScheduleForm {
    #[serde(default)]
    pub(super) csrf: String,
    #[serde(default)]
    time_zone: String,
    #[serde(default)]
    monday: String,
    #[serde(default)]
    tuesday: String,
    #[serde(default)]
    wednesday: String,
    #[serde(default)]
    thursday: String,
    #[serde(default)]
    friday: String,
    #[serde(default)]
    saturday: String,
    #[serde(default)]
    sunday: String,
    #[serde(default)]
    closed_dates: String,
}

csrf_field!(ScheduleForm);

#[derive(Serialize)]
pub(crate) struct DayView {
    key: &'static str,
    label: &'static str,
    value: String,
}

#[derive(Serialize)]
pub(crate) struct ScheduleView {
    time_zone: String,
    days: Vec<DayView>,
    closed_dates: String,
}

#[derive(Serialize)]
pub(crate) struct ZoneChoice {
    name: String,
    label: String,
}

/// Field name -> the problem in words.
pub(crate) type Problems = BTreeMap<&'static str, String>;

impl ScheduleForm {
    /// The form filled in with a stored schedule.
    pub(crate) fn from_schedule(schedule: &Schedule) -> ScheduleForm {
        let day = |weekday: Weekday| {
            let mut windows: Vec<&Window> = schedule
                .windows
                .iter()
                .filter(|w| w.weekday == weekday)
                .collect();
            windows.sort_by_key(|w| w.opens);
            windows
                .iter()
                .map(|w| format!("{}-{}", hh_mm(w.opens), hh_mm(w.closes)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut closed = schedule.closed_dates.clone();
        closed.sort();
        ScheduleForm {
            csrf: String::new(),
            time_zone: schedule.time_zone.clone(),
            monday: day(Weekday::Monday),
            tuesday: day(Weekday::Tuesday),
            wednesday: day(Weekday::Wednesday),
            thursday: day(Weekday::Thursday),
            friday: day(Weekday::Friday),
            saturday: day(Weekday::Saturday),
            sunday: day(Weekday::Sunday),
            closed_dates: closed
                .iter()
                .map(Date::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    fn day_text(&self, weekday: Weekday) -> &str {
        match weekday {
            Weekday::Monday => &self.monday,
            Weekday::Tuesday => &self.tuesday,
            Weekday::Wednesday => &self.wednesday,
            Weekday::Thursday => &self.thursday,
            Weekday::Friday => &self.friday,
            Weekday::Saturday => &self.saturday,
            Weekday::Sunday => &self.sunday,
        }
    }

    pub(crate) fn view(&self) -> ScheduleView {
        ScheduleView {
            time_zone: self.time_zone.trim().to_string(),
            days: DAYS
                .iter()
                .map(|&(weekday, key, label)| DayView {
                    key,
                    label,
                    value: self.day_text(weekday).to_string(),
                })
                .collect(),
            closed_dates: self.closed_dates.clone(),
        }
    }

    /// The schedule the form describes, validated by the rules engine;
    /// otherwise every problem found, by field.
    pub(crate) fn to_schedule(&self) -> Result<ValidSchedule, Problems> {
        let mut problems = Problems::new();
        let mut windows = Vec::new();
        for &(weekday, key, label) in &DAYS {
            match parse_day(weekday, self.day_text(weekday)) {
                Ok(day) => windows.extend(day),
                Err(problem) => {
                    problems.insert(key, format!("{label}: {problem}"));
                }
            }
        }
        let closed_dates = parse_closed_dates(&self.closed_dates).unwrap_or_else(|problem| {
            problems.insert("closed_dates", problem);
            Vec::new()
        });
        let time_zone = self.time_zone.trim();
        if time_zone.is_empty() {
            problems.insert("time_zone", "Choose the practice's time zone.".to_string());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let schedule = Schedule {
            time_zone: time_zone.to_string(),
            windows,
            closed_dates,
        };
        schedule.validate().map_err(|e| {
            let key = match &e {
                ScheduleError::UnknownTimeZone(_) => "time_zone",
                ScheduleError::EmptyWindow { weekday, .. } => day_key(*weekday),
            };
            Problems::from([(key, e.to_string())])
        })
    }
}

/// The form field names of the weekdays.
pub(crate) fn day_keys() -> impl Iterator<Item = &'static str> {
    DAYS.iter().map(|(_, key, _)| *key)
}

fn day_key(weekday: Weekday) -> &'static str {
    DAYS.iter()
        .find(|(day, _, _)| *day == weekday)
        .map_or("monday", |(_, key, _)| key)
}

/// "08:00-12:00, 13:00-17:00" (an en dash or "to" also separates; blank is
/// closed all day).
fn parse_day(weekday: Weekday, text: &str) -> Result<Vec<Window>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split([',', ';'])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| parse_window(weekday, part))
        .collect()
}

fn parse_window(weekday: Weekday, part: &str) -> Result<Window, String> {
    let normalised = part.replace(['–', '—'], "-").replace(" to ", "-");
    let not_a_window = || {
        format!(
            "{part:?} is not a window; write opening and closing times as HH:MM-HH:MM in 24-hour time, \
             for example 08:00-12:00, 13:00-17:00 (18:00-00:00 runs to midnight)"
        )
    };
    let (opens, closes) = normalised.split_once('-').ok_or_else(not_a_window)?;
    let opens = parse_time(opens).ok_or_else(not_a_window)?;
    let closes = parse_time(closes).ok_or_else(not_a_window)?;
    Ok(Window {
        weekday,
        opens,
        closes,
    })
}

/// "8:00", "08:00" or "24:00" (midnight at the end of the day); the
/// minutes always in two digits, so "8:5" is refused rather than guessed.
fn parse_time(text: &str) -> Option<Time> {
    let (h, m) = text.trim().split_once(':')?;
    if m.len() != 2 || h.is_empty() || h.len() > 2 {
        return None;
    }
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    if (h, m) == (24, 0) {
        return Some(Time::midnight());
    }
    Time::new(h, m, 0, 0).ok()
}

/// One date per line (or separated by commas), YYYY-MM-DD.
fn parse_closed_dates(text: &str) -> Result<Vec<Date>, String> {
    let mut dates = Vec::new();
    for part in text
        .split(['\n', ',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let date: Date = part.parse().map_err(|_| {
            format!("Closed dates: {part:?} is not a date; write one date per line as YYYY-MM-DD, for example 2026-12-25")
        })?;
        if !dates.contains(&date) {
            dates.push(date);
        }
    }
    dates.sort();
    Ok(dates)
}

fn hh_mm(t: Time) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// The time zones of the picker: the common US ones first, then every
/// area/city zone of the bundled database (no legacy aliases such as
/// "US/Eastern", which name the same zones).
pub(crate) fn time_zone_choices() -> (Vec<ZoneChoice>, Vec<ZoneChoice>) {
    let common = COMMON_ZONES
        .iter()
        .map(|(name, label)| ZoneChoice {
            name: (*name).to_string(),
            label: (*label).to_string(),
        })
        .collect();
    let mut all: Vec<String> = jiff::tz::db()
        .available()
        .map(|name| name.as_str().to_string())
        .filter(|name| is_area_city(name))
        .collect();
    all.push("UTC".to_string());
    all.sort();
    all.dedup();
    let all = all
        .into_iter()
        .map(|name| ZoneChoice {
            label: name.replace('_', " "),
            name,
        })
        .collect();
    (common, all)
}

fn is_area_city(name: &str) -> bool {
    const AREAS: [&str; 10] = [
        "Africa/",
        "America/",
        "Antarctica/",
        "Arctic/",
        "Asia/",
        "Atlantic/",
        "Australia/",
        "Europe/",
        "Indian/",
        "Pacific/",
    ];
    AREAS.iter().any(|area| name.starts_with(area))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(time_zone: &str, monday: &str, closed: &str) -> ScheduleForm {
        ScheduleForm {
            time_zone: time_zone.into(),
            monday: monday.into(),
            closed_dates: closed.into(),
            ..ScheduleForm::default()
        }
    }

    #[test]
    fn several_windows_a_day_and_closed_dates_read_back_into_the_schedule() {
        let typed = form(
            "America/New_York",
            " 8:00-12:00, 13:00 – 17:00 ",
            "2026-12-25\n2026-12-24, 2026-12-25",
        );
        let schedule = typed.to_schedule().unwrap().schedule;
        let monday: Vec<String> = schedule
            .windows
            .iter()
            .map(|w| format!("{:?} {}-{}", w.weekday, hh_mm(w.opens), hh_mm(w.closes)))
            .collect();
        assert_eq!(monday, ["Monday 08:00-12:00", "Monday 13:00-17:00"]);
        assert_eq!(
            schedule.closed_dates,
            [
                jiff::civil::date(2026, 12, 24),
                jiff::civil::date(2026, 12, 25)
            ]
        );
        let again = ScheduleForm::from_schedule(&schedule);
        assert_eq!(again.monday, "08:00-12:00, 13:00-17:00");
        assert_eq!(again.tuesday, "");
        assert_eq!(again.closed_dates, "2026-12-24\n2026-12-25");
    }

    #[test]
    fn a_window_to_midnight_is_written_00_00_or_24_00() {
        for closes in ["00:00", "24:00"] {
            let typed = form("UTC", &format!("18:00-{closes}"), "");
            let schedule = typed.to_schedule().unwrap().schedule;
            assert!(schedule.windows[0].closes_at_midnight(), "{closes}");
        }
    }

    #[test]
    fn each_problem_is_filed_under_its_field_in_words() {
        let typed = ScheduleForm {
            tuesday: "9 to 5".into(),
            ..form("", "8-12", "next friday")
        };
        let problems = typed.to_schedule().unwrap_err();
        assert_eq!(
            problems.keys().copied().collect::<Vec<_>>(),
            ["closed_dates", "monday", "time_zone", "tuesday"]
        );
        assert!(problems["monday"].starts_with("Monday: \"8-12\" is not a window"));
        assert!(problems["tuesday"].contains("HH:MM-HH:MM"));
        assert!(problems["closed_dates"].contains("\"next friday\" is not a date"));

        let unknown = form("America/Springfield", "", "")
            .to_schedule()
            .unwrap_err();
        assert!(
            unknown["time_zone"].contains("unknown time zone"),
            "{unknown:?}"
        );
        let backwards = form("UTC", "17:00-08:00", "").to_schedule().unwrap_err();
        assert!(
            backwards["monday"].contains("not after it opens"),
            "{backwards:?}"
        );
    }

    #[test]
    fn the_picker_offers_area_city_zones_and_utc_without_legacy_aliases() {
        let (common, all) = time_zone_choices();
        assert_eq!(common[0].name, "America/New_York");
        let names: Vec<&str> = all.iter().map(|z| z.name.as_str()).collect();
        for expected in [
            "America/New_York",
            "Australia/Sydney",
            "Europe/London",
            "UTC",
        ] {
            assert!(names.contains(&expected), "{expected}");
        }
        assert!(!names.contains(&"US/Eastern"));
        assert!(all.len() > 300, "{}", all.len());
    }
}
