//! Property tests of the rules that must hold whatever happens: the cap of
//! R7 over any sequence of triggers and Enroll Now clicks, the schedule of
//! R5 across DST changes, and R1 on arbitrary input.

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use enroll_core::{
    AutoDecision, CAP_WINDOW, Demographics, Field, ManualDecision, PatientFacts, PracticeRules,
    Refusal, Schedule, SendHistory, Trigger, ValidSchedule, Window, changed_required_fields, check,
    decide_auto, decide_manual, next_send_possible_at,
};
use jiff::civil::{Date, Time, Weekday, date};
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

const NS: SignedDuration = SignedDuration::from_nanos(1);

// ---------------------------------------------------------------- oracles

/// `s` lies in the 30 x 24 h window that ends at `end`: `(end - 30d, end]`.
fn in_window(s: Timestamp, end: Timestamp) -> bool {
    s <= end && end.duration_since(s) < SignedDuration::from_hours(720)
}

/// The most sends any 30-day window holds (a window's count peaks when it
/// ends at a send, so those windows are enough).
fn max_in_any_window(sends: &[Timestamp]) -> usize {
    sends
        .iter()
        .map(|&end| sends.iter().filter(|&&s| in_window(s, end)).count())
        .max()
        .unwrap_or(0)
}

/// Adding a send at `t` leaves every window containing it with at most 4.
fn allowed(sends: &[Timestamp], t: Timestamp) -> bool {
    let all = [sends, &[t]].concat();
    all.iter()
        .filter(|&&end| in_window(t, end))
        .all(|&end| all.iter().filter(|&&s| in_window(s, end)).count() <= 4)
}

/// Checks what `next_send_possible_at(sends, t)` says against brute force.
fn check_next_send(sends: &[Timestamp], t: Timestamp) -> Result<(), TestCaseError> {
    match next_send_possible_at(sends, t) {
        None => prop_assert!(
            allowed(sends, t),
            "None at {t}, but a send there overfills a window"
        ),
        Some(x) => {
            prop_assert!(x > t, "Some({x}) not after {t}");
            prop_assert!(
                !allowed(sends, t),
                "Some({x}) at {t}, but a send at {t} was fine"
            );
            prop_assert!(allowed(sends, x), "a send at {x} overfills a window");
            prop_assert!(
                !allowed(sends, x - NS),
                "{x} is not the earliest: {} is fine",
                x - NS
            );
            // Nothing earlier either: the only instants where a send can
            // become possible are 30 days after a send.
            for s in sends {
                let Ok(c) = s.checked_add(CAP_WINDOW) else {
                    continue;
                };
                if c > t && c < x {
                    prop_assert!(!allowed(sends, c), "{c} is before {x} and fine");
                }
            }
        }
    }
    Ok(())
}

/// Naive R5 away from DST changes: the local wall clock is in a window of
/// its weekday, on a date that is not closed.
fn naive_is_open(schedule: &ValidSchedule, at: Timestamp) -> bool {
    let wall = schedule.tz.to_datetime(at);
    let (day, time) = (wall.date(), wall.time());
    !schedule.schedule.closed_dates.contains(&day)
        && schedule.schedule.windows.iter().any(|w| {
            w.weekday == day.weekday()
                && w.opens <= time
                && (time < w.closes || w.closes_at_midnight())
        })
}

/// True when `at` is within 6 hours of a change of the zone's offset.
fn near_transition(schedule: &ValidSchedule, at: Timestamp) -> bool {
    let margin = SignedDuration::from_hours(6);
    let near = |t: Timestamp| at.duration_since(t).abs() < margin;
    schedule
        .tz
        .following(at)
        .next()
        .is_some_and(|t| near(t.timestamp()))
        || schedule
            .tz
            .preceding(at)
            .next()
            .is_some_and(|t| near(t.timestamp()))
}

// ------------------------------------------------------------- strategies

const ZONES: [&str; 6] = [
    "America/New_York",
    "Australia/Sydney",
    "America/Havana",
    "Asia/Beirut",
    "Europe/London",
    "America/Los_Angeles",
];

fn weekday(n: u8) -> Weekday {
    Weekday::from_monday_zero_offset(i8::try_from(n % 7).unwrap()).unwrap()
}

fn quarter(q: u16) -> Time {
    let minutes = i32::from(q) * 15;
    Time::new(
        i8::try_from(minutes / 60).unwrap(),
        i8::try_from(minutes % 60).unwrap(),
        0,
        0,
    )
    .unwrap()
}

/// A random valid schedule: 1 to 6 windows in quarter hours (some closing
/// at midnight, some overlapping), in a zone with DST, with a few closed dates in 2026.
fn schedules() -> impl Strategy<Value = ValidSchedule> {
    let window = (0u8..7, 0u16..96)
        .prop_flat_map(|(day, opens)| (Just(day), Just(opens), opens + 1..=96))
        .prop_map(|(day, opens, closes)| Window {
            weekday: weekday(day),
            opens: quarter(opens),
            // 96 quarters is 24:00, written 00:00 (midnight at the end).
            closes: quarter(closes % 96),
        });
    (
        0..ZONES.len(),
        prop::collection::vec(window, 1..6),
        prop::collection::vec(0i64..400, 0..4),
    )
        .prop_map(|(zone, windows, closed)| {
            let closed_dates = closed
                .into_iter()
                .map(|d| {
                    date(2026, 1, 1)
                        .checked_add(jiff::Span::new().days(d))
                        .unwrap()
                })
                .collect();
            Schedule {
                time_zone: ZONES[zone].to_string(),
                windows,
                closed_dates,
            }
            .validate()
            .unwrap()
        })
}

/// An instant in 2026 or early 2027 (covering every DST change of 2026).
fn instants() -> impl Strategy<Value = Timestamp> {
    let start = Timestamp::from_second(1_767_225_600).unwrap(); // 2026-01-01T00:00Z
    (0i64..400 * 86_400, 0i64..1_000_000_000).prop_map(move |(s, ns)| {
        start + SignedDuration::from_secs(s) + SignedDuration::from_nanos(ns)
    })
}

#[derive(Debug, Clone)]
enum Event {
    /// An auto trigger (R2) of the given kind.
    Auto(Trigger),
    /// Staff click Enroll Now.
    Manual,
}

fn triggers() -> impl Strategy<Value = Trigger> {
    prop_oneof![
        Just(Trigger::ChartAdded),
        Just(Trigger::RequiredFieldsChanged {
            fields: vec![Field::Email]
        }),
        Just(Trigger::NewEncounter),
        Just(Trigger::NewAppointment),
    ]
}

/// Events with the time since the previous one: bursts of seconds or
/// minutes, hours, and quiet days; about 100 days on average, up to 200.
fn events() -> impl Strategy<Value = Vec<(SignedDuration, Event)>> {
    let gap = prop_oneof![
        2 => 0i64..3_600,
        1 => 0i64..6 * 3_600,
        2 => 0i64..5 * 86_400,
    ]
    .prop_map(SignedDuration::from_secs);
    let event = prop_oneof![
        3 => triggers().prop_map(Event::Auto),
        1 => Just(Event::Manual),
    ];
    prop::collection::vec((gap, event), 1..200)
}

// ------------------------------------------------------------- simulation

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Auto,
    Manual,
}

/// Runs the events through `decide_auto` / `decide_manual` the way the
/// server and dispatcher do, and checks each decision as it is made.
/// Returns every counted send.
fn simulate(
    schedule: &ValidSchedule,
    start: Timestamp,
    events: &[(SignedDuration, Event)],
) -> Result<Vec<(Timestamp, Via)>, TestCaseError> {
    let practice = PracticeRules {
        auto_invites_on: true,
        schedule,
    };
    let patient = PatientFacts::default();
    let mut sends: Vec<(Timestamp, Via)> = Vec::new();
    // The waiting auto invite: when it is due, and its trigger.
    let mut pending: Option<(Timestamp, Trigger)> = None;
    let counted = |sends: &[(Timestamp, Via)]| sends.iter().map(|&(t, _)| t).collect::<Vec<_>>();

    // The dispatcher, when a waiting auto invite is due, asks `decide_auto`
    // again as if its trigger happened then (without coalescing with
    // itself), and does what it says: the simulation checks nothing itself,
    // so the cap of R7 holds below only if the rules enforce it.
    let deliver = |sends: &mut Vec<(Timestamp, Via)>,
                   at: Timestamp,
                   trigger: &Trigger|
     -> Result<Option<(Timestamp, Trigger)>, TestCaseError> {
        let history = SendHistory {
            counted_sends: counted(sends),
            auto_invite_pending: false,
        };
        Ok(
            match decide_auto(trigger, &patient, &practice, &history, at) {
                AutoDecision::SendNow => {
                    sends.push((at, Via::Auto));
                    None
                }
                AutoDecision::Queue { at: later } => Some((later, trigger.clone())),
                AutoDecision::Suppressed { .. } => None,
                other => {
                    prop_assert!(false, "a due invite decided {other:?}");
                    None
                }
            },
        )
    };

    let mut now = start;
    for (gap, event) in events {
        now += *gap;
        while let Some((at, trigger)) = pending.clone().filter(|(at, _)| *at <= now) {
            pending = deliver(&mut sends, at, &trigger)?;
        }
        let history = SendHistory {
            counted_sends: counted(&sends),
            auto_invite_pending: pending.is_some(),
        };
        check_next_send(&history.counted_sends, now)?;
        match event {
            Event::Auto(trigger) => {
                match decide_auto(trigger, &patient, &practice, &history, now) {
                    AutoDecision::SendNow => {
                        prop_assert!(schedule.is_open(now), "SendNow at {now}, schedule closed");
                        sends.push((now, Via::Auto));
                    }
                    AutoDecision::Queue { at } => {
                        prop_assert!(pending.is_none(), "a second queued auto invite (R6)");
                        prop_assert!(at > now, "queued at {at}, not after {now}");
                        prop_assert!(!schedule.is_open(now), "queued at {now} although open");
                        prop_assert_eq!(schedule.next_open(now), Some(at));
                        pending = Some((at, trigger.clone()));
                    }
                    AutoDecision::Coalesced => {
                        prop_assert!(pending.is_some(), "coalesced with nothing")
                    }
                    AutoDecision::Suppressed { next_possible_at } => {
                        prop_assert!(next_possible_at > now);
                        let send_at = schedule.next_open(now).unwrap();
                        prop_assert_eq!(
                            next_send_possible_at(&history.counted_sends, send_at),
                            Some(next_possible_at)
                        );
                    }
                    other => prop_assert!(false, "unexpected {other:?}"),
                }
            }
            Event::Manual => match decide_manual(&patient, &history, now) {
                ManualDecision::SendNow => sends.push((now, Via::Manual)),
                ManualDecision::Refused {
                    refusal: Refusal::CapReached { next_possible_at },
                } => {
                    prop_assert!(next_possible_at > now);
                    prop_assert_eq!(
                        next_send_possible_at(&history.counted_sends, next_possible_at),
                        None
                    );
                }
                other => prop_assert!(false, "unexpected {other:?}"),
            },
        }
    }
    while let Some((at, trigger)) = pending.clone() {
        pending = deliver(&mut sends, at, &trigger)?;
    }
    Ok(sends)
}

fn check_simulation(
    schedule: &ValidSchedule,
    start: Timestamp,
    events: &[(SignedDuration, Event)],
) -> Result<(), TestCaseError> {
    let sends = simulate(schedule, start, events)?;
    let instants: Vec<Timestamp> = sends.iter().map(|&(t, _)| t).collect();
    prop_assert!(
        instants.windows(2).all(|w| w[0] <= w[1]),
        "sends out of order: {instants:?}"
    );
    // (a) R7: no 30 x 24 h window ever holds more than 4 sends.
    prop_assert!(
        max_in_any_window(&instants) <= 4,
        "more than 4 sends in 30 days: {instants:?}"
    );
    // (b) R5: every auto send is inside the schedule.
    for &(t, via) in &sends {
        if via == Via::Auto {
            prop_assert!(schedule.is_open(t), "auto send at {t} outside the schedule");
        }
    }
    Ok(())
}

/// `cases` cases, and no regression files written into the source tree.
fn config(cases: u32) -> ProptestConfig {
    // PROPTEST_CASES overrides the count for a longer run.
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn new_york() -> ValidSchedule {
    Schedule::office_hours("America/New_York")
        .validate()
        .unwrap()
}

fn sydney() -> ValidSchedule {
    Schedule::office_hours("Australia/Sydney")
        .validate()
        .unwrap()
}

proptest! {
    #![proptest_config(config(96))]

    /// R5 + R6 + R7 over ~120 days of triggers and clicks, New York.
    #[test]
    fn cap_and_schedule_hold_new_york(start in instants(), events in events()) {
        check_simulation(&new_york(), start, &events)?;
    }

    /// The same in Sydney (DST in April and October, southern hemisphere).
    #[test]
    fn cap_and_schedule_hold_sydney(start in instants(), events in events()) {
        check_simulation(&sydney(), start, &events)?;
    }

    /// The same with odd schedules (windows across DST changes, to
    /// midnight, closed dates) in zones that change at 02:00 or midnight.
    #[test]
    fn cap_and_schedule_hold_any_schedule(
        schedule in schedules(),
        start in instants(),
        events in events(),
    ) {
        check_simulation(&schedule, start, &events)?;
    }
}

/// Random counted-send histories that respect the cap (as the store keeps
/// them), with sends before and after `t` and duplicates.
fn histories() -> impl Strategy<Value = (Vec<Timestamp>, Timestamp)> {
    let offset = prop_oneof![
        3 => -90i64 * 86_400..0,
        1 => -3_600i64..3_600,
        1 => 0i64..40 * 86_400,
    ];
    (instants(), prop::collection::vec(offset, 0..16)).prop_map(|(t, offsets)| {
        let mut sends: Vec<Timestamp> = Vec::new();
        for o in offsets {
            let s = t + SignedDuration::from_secs(o);
            if allowed(&sends, s) {
                sends.push(s);
            }
        }
        // Some sends exactly 30 days before `t` or another send.
        if let Some(&first) = sends.first()
            && allowed(&sends, first + CAP_WINDOW)
        {
            sends.push(first + CAP_WINDOW);
        }
        sends.reverse();
        (sends, t)
    })
}

proptest! {
    #![proptest_config(config(512))]

    /// (c) next_send_possible_at against brute force, any order of input.
    #[test]
    fn next_send_possible_at_is_exact((sends, t) in histories()) {
        check_next_send(&sends, t)?;
        if let Some(x) = next_send_possible_at(&sends, t) {
            prop_assert_eq!(next_send_possible_at(&sends, x), None);
        }
    }

    /// R5: next_open is the first open instant at or after `at`.
    #[test]
    fn next_open_is_the_first_opening(schedule in schedules(), at in instants()) {
        let next = schedule.next_open(at);
        let u = next.expect("a schedule with windows opens within weeks");
        prop_assert!(u >= at);
        prop_assert!(schedule.is_open(u), "not open at next_open {u}");
        prop_assert_eq!(schedule.is_open(at), u == at);
        if u > at {
            prop_assert!(!schedule.is_open(u - NS), "open just before next_open {u}");
            // Closed all the way from `at` to `u` (sampled).
            let span = u.duration_since(at);
            for i in 0..64 {
                let probe = at + span / 64 * i;
                prop_assert!(!schedule.is_open(probe), "open at {probe}, before next_open {u}");
            }
        }
        prop_assert!(u.duration_since(at) < SignedDuration::from_hours(24 * 7 * 8));
    }

    /// R5: away from DST changes, open means the local wall clock is
    /// inside a window.
    #[test]
    fn is_open_is_wall_clock_time(schedule in schedules(), at in instants()) {
        if !near_transition(&schedule, at) {
            prop_assert_eq!(schedule.is_open(at), naive_is_open(&schedule, at));
        }
    }
}

// ----------------------------------------------------------------- fields

fn field_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        any::<String>(),
        "[ a-zA-Z0-9@.+()-]{0,24}",
        "[0-9]{5}(-[0-9]{4})?",
        "[+]?[0-9 ().-]{7,18}",
        "(19|20)[0-9]{2}-[01][0-9]-[0-3][0-9]",
        "[a-z]{1,8}@[a-z]{1,8}\\.(org|COM)",
        prop::sample::select(vec!["F", "m", "unk", "Female", "U", " male "]).prop_map(String::from),
    ])
}

fn demographics() -> impl Strategy<Value = Demographics> {
    prop::collection::vec(field_text(), 7).prop_map(|mut v| Demographics {
        first_name: v.remove(0),
        last_name: v.remove(0),
        date_of_birth: v.remove(0),
        birth_sex: v.remove(0),
        zip: v.remove(0),
        email: v.remove(0),
        cell_phone: v.remove(0),
    })
}

proptest! {
    #![proptest_config(config(512))]

    /// R1 on anything a source may send: no panic, every problem named, a
    /// record is complete exactly when nothing blocks, and normalising
    /// first changes nothing (so R2 sees no change).
    #[test]
    fn check_is_total_and_consistent(d in demographics(), day in 0i64..20_000) {
        let today: Date = date(1980, 1, 1).checked_add(jiff::Span::new().days(day)).unwrap();
        let checked = check(&d, today);
        prop_assert_eq!(checked.valid.is_some(), checked.blocking().is_empty());
        for p in &checked.problems {
            prop_assert!(p.message().starts_with(p.field.label()));
            prop_assert!(p.field != Field::CellPhone || d.cell_phone.is_some());
        }
        let fields: Vec<Field> = checked.problems.iter().map(|p| p.field).collect();
        let mut sorted = fields.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(&fields, &sorted, "one problem per field, in staff order");

        let normalized = d.normalized();
        prop_assert_eq!(&normalized.normalized(), &normalized);
        let again = check(&normalized, today);
        prop_assert_eq!(&again.problems, &checked.problems);
        prop_assert_eq!(&again.valid, &checked.valid);
        prop_assert_eq!(changed_required_fields(&d, &normalized), vec![]);
        prop_assert_eq!(changed_required_fields(&d, &d), vec![]);
    }
}
