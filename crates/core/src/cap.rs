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
