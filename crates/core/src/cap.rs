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
    // any t >= at; the rest are history that no longer matters.
    let mut relevant: Vec<Timestamp> = sends
        .iter()
        .copied()
        .filter(|&s| s > at || at.duration_since(s) < CAP_WINDOW)
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
