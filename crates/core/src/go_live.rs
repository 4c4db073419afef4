//! "Invite existing patients" at go-live (issue #14 item 2): the words of a
//! run and its items, and the throttle that spreads the invites over time.
//!
//! A run lists the practice's eligible, never-invited charts once, then
//! releases them one by one at the administrator's rate per hour, only
//! while the Auto Invite Schedule is open; each release is decided by
//! [`crate::decide_go_live`] (eligibility again, coalescing, the cap).

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// The trigger word on a go-live invite (an auto invite whose cause is the
/// administrator's run, not one of R2's four events): the chart shows it
/// as "Go-live invite".
pub const GO_LIVE_TRIGGER: &str = "go_live";

/// The slowest and the fastest rate an administrator may choose.
pub const GO_LIVE_RATE_MIN: u32 = 1;
pub const GO_LIVE_RATE_MAX: u32 = 20_000;

/// How far a run catches up after time without releases (a stopped
/// server, a closed schedule): at most this much of the rate at once, so
/// an opening or a restart never floods the SMTP server.
pub const GO_LIVE_CATCH_UP: SignedDuration = SignedDuration::from_mins(1);

/// The life of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoLiveRunState {
    Running,
    Paused,
    Cancelled,
    /// Every item was released.
    Finished,
}

impl GoLiveRunState {
    pub const ALL: [GoLiveRunState; 4] = [
        GoLiveRunState::Running,
        GoLiveRunState::Paused,
        GoLiveRunState::Cancelled,
        GoLiveRunState::Finished,
    ];

    pub fn key(self) -> &'static str {
        match self {
            GoLiveRunState::Running => "running",
            GoLiveRunState::Paused => "paused",
            GoLiveRunState::Cancelled => "cancelled",
            GoLiveRunState::Finished => "finished",
        }
    }

    pub fn from_key(raw: &str) -> Option<GoLiveRunState> {
        GoLiveRunState::ALL.into_iter().find(|s| s.key() == raw)
    }

    /// Not over yet: a practice has at most one such run.
    pub fn is_open(self) -> bool {
        matches!(self, GoLiveRunState::Running | GoLiveRunState::Paused)
    }
}

/// What an administrator does to a run under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GoLiveChange {
    Pause,
    Resume,
    Cancel,
}

impl GoLiveChange {
    pub const ALL: [GoLiveChange; 3] = [
        GoLiveChange::Pause,
        GoLiveChange::Resume,
        GoLiveChange::Cancel,
    ];

    /// The form's word and the audit action's ending.
    pub fn key(self) -> &'static str {
        match self {
            GoLiveChange::Pause => "pause",
            GoLiveChange::Resume => "resume",
            GoLiveChange::Cancel => "cancel",
        }
    }

    pub fn from_key(raw: &str) -> Option<GoLiveChange> {
        GoLiveChange::ALL.into_iter().find(|c| c.key() == raw)
    }
}

/// What became of one chart of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoLiveItemState {
    /// Not released yet.
    Waiting,
    /// Released: an invite was queued (its own state says sent or failed).
    Invited,
    /// Released, and the cap (R7) held it back; the item notes when a send
    /// becomes possible.
    Suppressed,
    /// Released, and the chart was no longer eligible (or an auto invite
    /// was already waiting, R6); the item notes why.
    Skipped,
    /// The run was cancelled before this chart's turn.
    Cancelled,
}

impl GoLiveItemState {
    pub const ALL: [GoLiveItemState; 5] = [
        GoLiveItemState::Waiting,
        GoLiveItemState::Invited,
        GoLiveItemState::Suppressed,
        GoLiveItemState::Skipped,
        GoLiveItemState::Cancelled,
    ];

    pub fn key(self) -> &'static str {
        match self {
            GoLiveItemState::Waiting => "waiting",
            GoLiveItemState::Invited => "invited",
            GoLiveItemState::Suppressed => "suppressed",
            GoLiveItemState::Skipped => "skipped",
            GoLiveItemState::Cancelled => "cancelled",
        }
    }

    pub fn from_key(raw: &str) -> Option<GoLiveItemState> {
        GoLiveItemState::ALL.into_iter().find(|s| s.key() == raw)
    }
}

/// A rate per hour outside [`GO_LIVE_RATE_MIN`]..=[`GO_LIVE_RATE_MAX`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("choose between {GO_LIVE_RATE_MIN} and {GO_LIVE_RATE_MAX} invites an hour (got {0})")]
pub struct RateOutOfRange(pub i64);

/// Invites released per hour, evenly spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    per_hour: u32,
}

/// The releases due now: `count` of them, the first at `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Releases {
    pub from: Timestamp,
    pub count: u32,
}

impl Throttle {
    pub fn per_hour(rate: i64) -> Result<Throttle, RateOutOfRange> {
        u32::try_from(rate)
            .ok()
            .filter(|r| (GO_LIVE_RATE_MIN..=GO_LIVE_RATE_MAX).contains(r))
            .map(|per_hour| Throttle { per_hour })
            .ok_or(RateOutOfRange(rate))
    }

    pub fn rate(self) -> u32 {
        self.per_hour
    }

    /// The time between two releases.
    pub fn interval(self) -> SignedDuration {
        SignedDuration::from_hours(1) / i32::try_from(self.per_hour).unwrap_or(i32::MAX)
    }

    /// The releases due at `now` when the next one was due at `next_at`:
    /// none before it, one at it, and one more per interval since, but
    /// never more than [`GO_LIVE_CATCH_UP`] of the rate after a gap.
    pub fn due(self, next_at: Timestamp, now: Timestamp) -> Releases {
        if now < next_at {
            return Releases {
                from: next_at,
                count: 0,
            };
        }
        let from = next_at.max(now - GO_LIVE_CATCH_UP);
        let behind = now.duration_since(from);
        let steps = behind.as_nanos() / self.interval().as_nanos();
        Releases {
            from,
            count: u32::try_from(steps + 1).unwrap_or(u32::MAX),
        }
    }

    /// When the next release is due after `released` releases from `from`.
    pub fn next_after(self, from: Timestamp, released: u32) -> Timestamp {
        from + self.interval() * i32::try_from(released).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn a_rate_is_between_one_and_twenty_thousand_an_hour() {
        assert!(Throttle::per_hour(0).is_err());
        assert!(Throttle::per_hour(-5).is_err());
        assert!(Throttle::per_hour(20_001).is_err());
        assert_eq!(Throttle::per_hour(1).map(Throttle::rate), Ok(1));
        assert_eq!(Throttle::per_hour(20_000).map(Throttle::rate), Ok(20_000));
        assert_eq!(
            RateOutOfRange(0).to_string(),
            "choose between 1 and 20000 invites an hour (got 0)"
        );
    }

    #[test]
    fn releases_are_evenly_spaced_and_catch_up_at_most_a_minute() {
        let hourly_60 = Throttle::per_hour(60).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hourly_60.interval(), SignedDuration::from_mins(1));
        let hourly_3600 = Throttle::per_hour(3600).unwrap_or_else(|e| panic!("{e}"));
        let start = ts("2026-12-01T14:00:00Z");
        // (throttle, next due, now, expected from, expected count)
        let cases = [
            (hourly_60, start, ts("2026-12-01T13:59:59Z"), start, 0),
            (hourly_60, start, start, start, 1),
            (hourly_60, start, ts("2026-12-01T14:00:59Z"), start, 1),
            (hourly_60, start, ts("2026-12-01T14:01:00Z"), start, 2),
            // An hour without releases (a night, a stopped server): one
            // minute's worth, not sixty.
            (
                hourly_60,
                start,
                ts("2026-12-01T15:00:00Z"),
                ts("2026-12-01T14:59:00Z"),
                2,
            ),
            (hourly_3600, start, ts("2026-12-01T14:00:10Z"), start, 11),
            (
                hourly_3600,
                start,
                ts("2026-12-01T18:00:00Z"),
                ts("2026-12-01T17:59:00Z"),
                61,
            ),
        ];
        for (throttle, next_at, now, from, count) in cases {
            assert_eq!(
                throttle.due(next_at, now),
                Releases { from, count },
                "{} an hour, due {next_at}, now {now}",
                throttle.rate()
            );
        }
        assert_eq!(
            hourly_60.next_after(start, 3),
            ts("2026-12-01T14:03:00Z"),
            "three releases later"
        );
        assert_eq!(hourly_60.next_after(start, 0), start);
    }

    #[test]
    fn state_words_go_both_ways() {
        for state in GoLiveRunState::ALL {
            assert_eq!(GoLiveRunState::from_key(state.key()), Some(state));
        }
        for state in GoLiveItemState::ALL {
            assert_eq!(GoLiveItemState::from_key(state.key()), Some(state));
        }
        assert_eq!(GoLiveRunState::from_key("done"), None);
        let open: Vec<_> = GoLiveRunState::ALL
            .into_iter()
            .filter(|s| s.is_open())
            .collect();
        assert_eq!(open, [GoLiveRunState::Running, GoLiveRunState::Paused]);
    }
}
