//! What one delivery attempt of an invite comes to: sent, retried later, or
//! failed (R7: a failed invite does not count toward the cap).
//!
//! The store writes the rows; the decision and the retry timing are here.

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

/// A way an invite reaches the patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    /// Shown or printed at the front desk (a QR code and a short code):
    /// handed over at once, so it never waits in the outbox.
    InPerson,
}

impl Channel {
    /// The stored spelling, also used in the reasons staff read.
    pub fn key(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::InPerson => "in_person",
        }
    }
}

/// What one channel said about one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelAnswer<'a> {
    Sent,
    /// A passing failure (server down, rate limit): worth another try.
    Transient(&'a str),
    /// A refusal for good (bad address): another try would fail the same.
    Permanent(&'a str),
}

/// How long to wait before trying a transiently failed invite again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryTiming {
    pub first_retry: SignedDuration,
    pub longest_retry: SignedDuration,
}

impl Default for RetryTiming {
    /// 30 s, doubling up to 1 h.
    fn default() -> RetryTiming {
        RetryTiming {
            first_retry: SignedDuration::from_secs(30),
            longest_retry: SignedDuration::from_hours(1),
        }
    }
}

impl RetryTiming {
    /// Exponential backoff after attempt `attempt` (1-based), with `jitter`
    /// in [0, 1) spreading retries over +-20% so that many invites failing
    /// together (an SMTP server down) do not come back in one burst.
    pub fn delay(&self, attempt: i64, jitter: f64) -> SignedDuration {
        let doublings = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let base =
            self.first_retry.as_secs_f64() * f64::from(2u32.saturating_pow(doublings.min(20)));
        let capped = base.min(self.longest_retry.as_secs_f64());
        let spread = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        SignedDuration::from_secs_f64(capped * spread)
    }
}

/// When the dispatcher gives up on an invite and how it spaces the tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before a transient failure becomes a failure staff see.
    pub max_attempts: i64,
    pub timing: RetryTiming,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            timing: RetryTiming::default(),
        }
    }
}

/// The outcome of one attempt, with the words the timeline and staff see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// At least one channel took the invite.
    Sent {
        /// The channels that took it, in the order they were given.
        channels: Vec<Channel>,
        /// What went wrong on another channel, if anything ("sms: ...").
        other_channel: Option<String>,
    },
    /// Nothing went out, a channel failed for a passing reason, and
    /// attempts remain.
    Retry { at: Timestamp, reason: String },
    /// Every channel refused for good, or the attempts ran out.
    Failed { reason: String },
}

/// Sent when any channel took the invite; retried while a channel failed
/// for a passing reason and attempts remain; failed otherwise. `attempt`
/// is the 1-based number of the attempt just made, `jitter` in [0, 1)
/// (see [`RetryTiming::delay`]).
pub fn attempt_outcome(
    answers: &[(Channel, ChannelAnswer<'_>)],
    attempt: i64,
    policy: &RetryPolicy,
    jitter: f64,
    now: Timestamp,
) -> AttemptOutcome {
    let sent: Vec<Channel> = answers
        .iter()
        .filter(|(_, answer)| *answer == ChannelAnswer::Sent)
        .map(|&(channel, _)| channel)
        .collect();
    let transient = first_failure(answers, |a| match a {
        ChannelAnswer::Transient(e) => Some(e),
        _ => None,
    });
    let permanent = first_failure(answers, |a| match a {
        ChannelAnswer::Permanent(e) => Some(e),
        _ => None,
    });
    if !sent.is_empty() {
        return AttemptOutcome::Sent {
            channels: sent,
            other_channel: permanent.or(transient),
        };
    }
    if let Some(reason) = transient.clone()
        && attempt < policy.max_attempts
    {
        let at = now
            .checked_add(policy.timing.delay(attempt, jitter))
            .unwrap_or(Timestamp::MAX);
        return AttemptOutcome::Retry { at, reason };
    }
    let reason = match (permanent, transient.is_some()) {
        (Some(permanent), false) => permanent,
        (permanent, _) => format!(
            "gave up after {attempt} attempts{}",
            permanent.map(|p| format!(" ({p})")).unwrap_or_default()
        ),
    };
    AttemptOutcome::Failed { reason }
}

/// "channel: error" for the first answer `pick` accepts.
fn first_failure<'a>(
    answers: &[(Channel, ChannelAnswer<'a>)],
    pick: impl Fn(ChannelAnswer<'a>) -> Option<&'a str>,
) -> Option<String> {
    answers
        .iter()
        .find_map(|&(channel, answer)| pick(answer).map(|e| format!("{}: {e}", channel.key())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_within_bounds() {
        let timing = RetryTiming::default();
        let cases = [
            (1, 0.5, 30.0),
            (2, 0.5, 60.0),
            (3, 0.5, 120.0),
            (20, 0.5, 3600.0),
            (1, 0.0, 24.0),
            (1, 0.999_999, 36.0),
        ];
        for (attempt, jitter, seconds) in cases {
            let delay = timing.delay(attempt, jitter).as_secs_f64();
            assert!(
                (delay - seconds).abs() < 0.01,
                "attempt {attempt} jitter {jitter}: {delay}"
            );
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn retry_at(attempt: i64) -> AttemptOutcome {
        AttemptOutcome::Retry {
            at: now() + RetryTiming::default().delay(attempt, 0.5),
            reason: "email: 421 try later".into(),
        }
    }

    fn failed(reason: &str) -> AttemptOutcome {
        AttemptOutcome::Failed {
            reason: reason.into(),
        }
    }

    /// What the channels said in one row of the table below.
    type Answers<'a> = Vec<(Channel, ChannelAnswer<'a>)>;

    /// Every combination that matters: one channel taking it is enough;
    /// a passing failure is retried until the attempts run out; a refusal
    /// for good fails at once unless another channel may still pass.
    #[test]
    fn what_an_attempt_comes_to() {
        use Channel::{Email, Sms};
        use ChannelAnswer::{Permanent, Sent, Transient};
        let busy = Transient("421 try later");
        let bounced = Permanent("550 no such user");
        #[rustfmt::skip]
        let rows: Vec<(&str, Answers, i64, AttemptOutcome)> = vec![
            ("email sent", vec![(Email, Sent)], 1,
                AttemptOutcome::Sent { channels: vec![Email], other_channel: None }),
            ("both sent", vec![(Email, Sent), (Sms, Sent)], 1,
                AttemptOutcome::Sent { channels: vec![Email, Sms], other_channel: None }),
            ("sms sent, email bounced", vec![(Email, bounced), (Sms, Sent)], 1,
                AttemptOutcome::Sent { channels: vec![Sms], other_channel: Some("email: 550 no such user".into()) }),
            ("email sent, sms busy", vec![(Email, Sent), (Sms, Transient("rate limited"))], 8,
                AttemptOutcome::Sent { channels: vec![Email], other_channel: Some("sms: rate limited".into()) }),
            ("busy on the first attempt", vec![(Email, busy)], 1, retry_at(1)),
            ("busy on the third attempt", vec![(Email, busy)], 3, retry_at(3)),
            ("busy one attempt before the last", vec![(Email, busy)], 7, retry_at(7)),
            ("busy and bounced: the busy one may pass", vec![(Email, busy), (Sms, Permanent("invalid number"))], 1, retry_at(1)),
            ("busy on the last attempt", vec![(Email, busy)], 8, failed("gave up after 8 attempts")),
            ("bounced", vec![(Email, bounced)], 1, failed("email: 550 no such user")),
            ("busy and bounced on the last attempt", vec![(Email, busy), (Sms, Permanent("invalid number"))], 8,
                failed("gave up after 8 attempts (sms: invalid number)")),
            ("no channel answered", vec![], 1, failed("gave up after 1 attempts")),
        ];
        let policy = RetryPolicy::default();
        for (name, answers, attempt, expected) in rows {
            assert_eq!(
                attempt_outcome(&answers, attempt, &policy, 0.5, now()),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn a_retry_past_the_end_of_time_waits_forever() {
        let outcome = attempt_outcome(
            &[(Channel::Email, ChannelAnswer::Transient("busy"))],
            1,
            &RetryPolicy::default(),
            0.5,
            Timestamp::MAX,
        );
        assert!(
            matches!(outcome, AttemptOutcome::Retry { at, .. } if at == Timestamp::MAX),
            "{outcome:?}"
        );
    }
}
