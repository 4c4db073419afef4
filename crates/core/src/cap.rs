//! R7: at most 4 sends per patient in any rolling 30 x 24 h window.
//!
//! The window is a fixed duration (720 hours), not "30 calendar days", so a
//! DST change in the practice's time zone neither widens nor narrows it.

use jiff::{SignedDuration, Timestamp};

pub const CAP_MAX_SENDS: usize = 4;
pub const CAP_WINDOW: SignedDuration = SignedDuration::from_hours(30 * 24);

/// How many of `sends` fall in the window that ends at `at`
/// (sends `s` with `at - CAP_WINDOW < s <= at`).
///
/// The window is open at its start: a send made exactly 30 days before `at`
/// has left it, which is what lets `next_send_possible_at` answer "30 days
/// after the send that blocks" rather than a nanosecond later.
pub fn sends_in_window(sends: &[Timestamp], at: Timestamp) -> usize {
    sends.iter().filter(|&&s| in_window(s, at)).count()
}

/// `at - CAP_WINDOW < s <= at`, written without arithmetic on `at` so it
/// cannot overflow at the ends of the timestamp range.
fn in_window(s: Timestamp, end: Timestamp) -> bool {
    s <= end && end.duration_since(s) < CAP_WINDOW
}

/// `None` when one more send at `at` keeps every 30-day window at 4 or fewer
/// sends; otherwise the earliest instant at which a send becomes possible.
/// `sends` are the counted sends (handed to a channel or queued for one;
/// permanent failures excluded), in any order.
///
/// In the normal case every send is at or before `at`, and the answer is
/// the 4th most recent send + 30 days. Sends after `at` should not exist
/// (the clock of another server may be ahead, or a queued send may have been
/// counted early); they are counted conservatively: the answer is the
/// earliest `t >= at` at which a send would not make any window, past or
/// future, hold more than 4 sends.
pub fn next_send_possible_at(sends: &[Timestamp], at: Timestamp) -> Option<Timestamp> {
    // Only sends after `at - CAP_WINDOW` can share a window with a send at
    // any t >= at; the rest are history that no longer matters. (A send
    // after `at` gives a negative duration and is kept.)
    let mut relevant: Vec<Timestamp> = sends
        .iter()
        .copied()
        .filter(|&s| at.duration_since(s) < CAP_WINDOW)
        .collect();
    relevant.sort_unstable();
    if allows_send(&relevant, at) {
        return None;
    }
    // As t grows, a send at t can only become allowed when some send s
    // leaves the window behind t, i.e. at t = s + CAP_WINDOW: those are the
    // only candidates, and checking them in order finds the earliest.
    for &s in &relevant {
        let Ok(t) = s.checked_add(CAP_WINDOW) else {
            break;
        };
        if t > at && allows_send(&relevant, t) {
            return Some(t);
        }
    }
    // Only reachable when a send is within 30 days of the end of time.
    Some(Timestamp::MAX)
}

/// True when adding a send at `t` leaves every window with at most
/// `CAP_MAX_SENDS` sends. The windows containing `t` end at `e` in
/// `[t, t + CAP_WINDOW)`; the count over them peaks at `e = t` or at a send
/// inside that range, so those are the only ends to check.
fn allows_send(sorted: &[Timestamp], t: Timestamp) -> bool {
    std::iter::once(t)
        .chain(
            sorted
                .iter()
                .copied()
                .filter(|&s| s >= t && s.duration_since(t) < CAP_WINDOW),
        )
        .all(|end| sends_in_window(sorted, end) < CAP_MAX_SENDS)
}

/// One counted send of a patient (R7), as [`queued_over_cap`] weighs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountedSend {
    /// Breaks ties between sends counted at the same instant.
    pub invite_id: i64,
    pub counted_at: Timestamp,
    /// Already handed to a channel (`sent`): a fact the cap cannot undo.
    /// Otherwise queued: counted, but not yet gone out.
    pub handed_over: bool,
}

/// The queued sends that must not go out at `now`, each with the instant a
/// send becomes possible again: R7 for a history that was not built one
/// decision at a time, such as two charts merged into one (each chart kept
/// its own 4 in 30 days; together they may hold more).
///
/// Sends already handed over are kept whatever their number. The queued
/// ones are then taken in the order they were counted (`counted_at`, then
/// `invite_id`), and each goes only if one more send at `now` keeps every
/// window at 4 or fewer with the sends kept so far; so the earliest-counted
/// invites win, and asking again with the same sends gives the same answer
/// (the dispatcher asks once per invite, the merge once per chart). In a
/// history built by the rules alone, every queued send was allowed when it
/// was counted and the answer is empty.
pub fn queued_over_cap(sends: &[CountedSend], now: Timestamp) -> Vec<(i64, Timestamp)> {
    let mut kept: Vec<Timestamp> = sends
        .iter()
        .filter(|s| s.handed_over)
        .map(|s| s.counted_at)
        .collect();
    let mut queued: Vec<&CountedSend> = sends.iter().filter(|s| !s.handed_over).collect();
    queued.sort_by_key(|s| (s.counted_at, s.invite_id));
    let mut over = Vec::new();
    for send in queued {
        match next_send_possible_at(&kept, now) {
            None => kept.push(send.counted_at),
            Some(next_possible_at) => over.push((send.invite_id, next_possible_at)),
        }
    }
    over
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: SignedDuration = SignedDuration::from_nanos(1);
    const HOUR: SignedDuration = SignedDuration::from_hours(1);
    const DAY: SignedDuration = SignedDuration::from_hours(24);

    fn now() -> Timestamp {
        "2026-11-25T15:00:00Z".parse().unwrap()
    }

    fn days(n: i64) -> SignedDuration {
        DAY * i32::try_from(n).unwrap()
    }

    /// R7: the window is `(at - 30 x 24 h, at]`.
    #[test]
    fn r7_sends_in_window_boundaries() {
        let t = now();
        #[rustfmt::skip]
        let rows: &[(&str, Vec<Timestamp>, usize)] = &[
            ("no sends", vec![], 0),
            ("exactly 30 days before is outside", vec![t - CAP_WINDOW], 0),
            ("a nanosecond inside", vec![t - CAP_WINDOW + NS], 1),
            ("720 hours, not 30 calendar days", vec![t - days(30) + HOUR], 1),
            ("at the end is inside", vec![t], 1),
            ("after the end is outside", vec![t + NS], 0),
            ("duplicates count twice", vec![t - HOUR, t - HOUR], 2),
            ("mixed", vec![t - days(40), t - days(30), t - days(29), t - days(1), t, t + DAY], 3),
        ];
        for (name, sends, expected) in rows {
            assert_eq!(sends_in_window(sends, t), *expected, "{name}");
        }
    }

    /// R7: when one more send is possible, and if not, from when.
    #[test]
    fn r7_next_send_possible_at() {
        let t = now();
        let four = vec![t - days(20), t - days(10), t - days(5), t - HOUR];
        let mut shuffled = four.clone();
        shuffled.swap(0, 3);
        shuffled.swap(1, 2);
        #[rustfmt::skip]
        let rows: Vec<(&str, Vec<Timestamp>, Option<Timestamp>)> = vec![
            ("no sends", vec![], None),
            ("three sends", four[1..].to_vec(), None),
            ("four sends: oldest + 30 days", four.clone(), Some(t - days(20) + CAP_WINDOW)),
            ("unordered input", shuffled, Some(t - days(20) + CAP_WINDOW)),
            ("five sends: 4th most recent + 30 days",
                vec![t - days(25), t - days(20), t - days(10), t - days(5), t - HOUR],
                Some(t - days(20) + CAP_WINDOW)),
            ("oldest exactly 30 days ago has left the window",
                vec![t - CAP_WINDOW, t - days(10), t - days(5), t - HOUR], None),
            ("oldest a nanosecond inside",
                vec![t - CAP_WINDOW + NS, t - days(10), t - days(5), t - HOUR], Some(t + NS)),
            ("old history ignored",
                vec![t - days(90), t - days(80), t - days(70), t - days(60), t - days(1)], None),
            ("four at one instant", vec![t - HOUR; 4], Some(t - HOUR + CAP_WINDOW)),
            ("four at `at` itself", vec![t; 4], Some(t + CAP_WINDOW)),
            ("a future send blocks",
                vec![t - days(10), t - days(5), t - HOUR, t + HOUR],
                Some(t - days(10) + CAP_WINDOW)),
            ("a future send that shares no window with the full one",
                vec![t - days(10), t - days(5), t - days(1), t + days(29)], None),
            ("future sends only, four of them",
                vec![t + HOUR, t + days(1), t + days(2), t + days(3)],
                Some(t + HOUR + CAP_WINDOW)),
            ("three future sends leave room now",
                vec![t + HOUR, t + days(1), t + days(2)], None),
            ("a 4th future send exactly 30 days ahead shares no window with now",
                vec![t + HOUR, t + days(1), t + days(2), t + CAP_WINDOW], None),
            ("a 4th future send a nanosecond less than 30 days ahead does",
                vec![t + HOUR, t + days(1), t + days(2), t + CAP_WINDOW - NS],
                Some(t + HOUR + CAP_WINDOW)),
        ];
        for (name, sends, expected) in &rows {
            let got = next_send_possible_at(sends, t);
            assert_eq!(got, *expected, "{name}");
            match got {
                None => assert!(
                    allowed(sends, t),
                    "{name}: None, yet a send now overfills a window"
                ),
                Some(x) => {
                    assert!(x > t, "{name}");
                    assert!(allowed(sends, x), "{name}");
                    assert!(!allowed(sends, x - NS), "{name}: earliest");
                    assert_eq!(
                        next_send_possible_at(sends, x),
                        None,
                        "{name}: allowed at x"
                    );
                }
            }
        }
    }

    #[test]
    fn r7_ends_of_the_timestamp_range() {
        let max = Timestamp::MAX;
        assert_eq!(sends_in_window(&[Timestamp::MIN], max), 0);
        assert_eq!(sends_in_window(&[max; 4], max), 4);
        assert_eq!(
            next_send_possible_at(&[max; 4], max - DAY),
            Some(Timestamp::MAX)
        );
        assert_eq!(
            next_send_possible_at(&[Timestamp::MIN; 4], Timestamp::MIN + DAY),
            Some(Timestamp::MIN + CAP_WINDOW)
        );
    }

    fn send(invite_id: i64, counted_at: Timestamp, handed_over: bool) -> CountedSend {
        CountedSend {
            invite_id,
            counted_at,
            handed_over,
        }
    }

    /// R7 after a merge: the earliest-counted queued sends go, the rest wait
    /// for the date the cap gives.
    #[test]
    fn r7_queued_over_cap() {
        let t = now();
        #[rustfmt::skip]
        type Row = (&'static str, Vec<CountedSend>, Vec<(i64, Timestamp)>);
        let rows: Vec<Row> = vec![
            ("nothing counted", vec![], vec![]),
            (
                "four queued all go",
                (1..=4).map(|i| send(i, t - HOUR, false)).collect(),
                vec![],
            ),
            (
                "two sent + three queued: the last queued waits",
                vec![
                    send(1, t - days(3), true),
                    send(2, t - days(2), true),
                    send(3, t - days(1), false),
                    send(4, t - HOUR, false),
                    send(5, t - HOUR, false),
                ],
                vec![(5, t - days(3) + CAP_WINDOW)],
            ),
            (
                "counted order, not id order, decides",
                vec![
                    send(9, t - days(2), false),
                    send(1, t - days(1), false),
                    send(2, t - HOUR, false),
                    send(3, t - HOUR, false),
                    send(4, t - HOUR, false),
                ],
                vec![(4, t - days(2) + CAP_WINDOW)],
            ),
            (
                "same instant: the lower id goes first",
                (1..=5).rev().map(|i| send(i, t - HOUR, false)).collect(),
                vec![(5, t - HOUR + CAP_WINDOW)],
            ),
            (
                "four sent: every queued send waits",
                [
                    (1..=4)
                        .map(|i| send(i, t - days(i), true))
                        .collect::<Vec<_>>(),
                    vec![send(5, t - days(10), false), send(6, t - HOUR, false)],
                ]
                .concat(),
                vec![(5, t - days(4) + CAP_WINDOW), (6, t - days(4) + CAP_WINDOW)],
            ),
            (
                "five sent already: kept, queued one waits",
                (1..=5)
                    .map(|i| send(i, t - days(i), true))
                    .chain([send(6, t, false)])
                    .collect(),
                vec![(6, t - days(4) + CAP_WINDOW)],
            ),
            (
                "old sends have left the window",
                (1..=4)
                    .map(|i| send(i, t - days(40 + i), true))
                    .chain([send(5, t, false)])
                    .collect(),
                vec![],
            ),
        ];
        for (name, sends, expected) in &rows {
            assert_eq!(queued_over_cap(sends, t), *expected, "{name}");
            let mut reversed = sends.clone();
            reversed.reverse();
            assert_eq!(
                queued_over_cap(&reversed, t),
                *expected,
                "{name}: input order"
            );
        }
    }

    /// Brute force: adding a send at `t` leaves every window that contains
    /// it with at most 4 sends (a window's count peaks at a send, so the
    /// windows ending at each send are enough).
    fn allowed(sends: &[Timestamp], t: Timestamp) -> bool {
        let all = [sends, &[t]].concat();
        let within = |s: Timestamp, end: Timestamp| {
            s <= end && end.duration_since(s) < SignedDuration::from_hours(720)
        };
        all.iter()
            .filter(|&&end| within(t, end))
            .all(|&end| all.iter().filter(|&&s| within(s, end)).count() <= 4)
    }
}
