//! Outbound webhooks (issue #12 item 4, R10's "an activated event is
//! published"): which events there are, and what one delivery attempt to
//! a practice's endpoint comes to. The store writes the rows and the
//! server makes the HTTP request; the decision and its timing are here.
//!
//! Any answer but a 2xx is worth another try: a receiver that is down, a
//! deploy in progress and a receiver with a bug all answer that way, and
//! the event is kept until it is taken or the attempts run out.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::delivery::{RetryPolicy, RetryTiming};

/// The kinds of event a practice's endpoint can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WebhookEventType {
    #[serde(rename = "patient.activated")]
    PatientActivated,
    #[serde(rename = "invite.sent")]
    InviteSent,
    #[serde(rename = "invite.failed")]
    InviteFailed,
    #[serde(rename = "invite.suppressed")]
    InviteSuppressed,
    /// Asked for by an administrator to try an endpoint; never subscribed to.
    #[serde(rename = "webhook.ping")]
    Ping,
}

impl WebhookEventType {
    /// The events an endpoint can subscribe to (every one but the ping), and
    /// what a new endpoint gets when it names none.
    pub const SUBSCRIBABLE: [WebhookEventType; 4] = [
        WebhookEventType::PatientActivated,
        WebhookEventType::InviteSent,
        WebhookEventType::InviteFailed,
        WebhookEventType::InviteSuppressed,
    ];

    /// The name on the wire (`Enroll-Event`, the body's `type`) and in the
    /// database.
    pub fn key(self) -> &'static str {
        match self {
            WebhookEventType::PatientActivated => "patient.activated",
            WebhookEventType::InviteSent => "invite.sent",
            WebhookEventType::InviteFailed => "invite.failed",
            WebhookEventType::InviteSuppressed => "invite.suppressed",
            WebhookEventType::Ping => "webhook.ping",
        }
    }

    pub fn from_key(key: &str) -> Option<WebhookEventType> {
        [WebhookEventType::Ping]
            .into_iter()
            .chain(WebhookEventType::SUBSCRIBABLE)
            .find(|t| t.key() == key)
    }
}

/// The events an endpoint subscribes to, from their names (the API's
/// `events`, the CLI's `--event`): each known and subscribable, repeats
/// dropped, in a fixed order; none named means all of them. The error says
/// in words what may be named.
pub fn parse_subscriptions<S: AsRef<str>>(
    asked: Option<&[S]>,
) -> Result<Vec<WebhookEventType>, String> {
    let Some(asked) = asked else {
        return Ok(WebhookEventType::SUBSCRIBABLE.to_vec());
    };
    let names: Vec<&str> = WebhookEventType::SUBSCRIBABLE
        .iter()
        .map(|t| t.key())
        .collect();
    let mut events = Vec::new();
    for name in asked {
        let name = name.as_ref().trim();
        match WebhookEventType::from_key(name) {
            Some(event) if WebhookEventType::SUBSCRIBABLE.contains(&event) => events.push(event),
            _ => {
                return Err(format!(
                    "{name:?} is not an event an endpoint can subscribe to; choose from {}",
                    names.join(", ")
                ));
            }
        }
    }
    if events.is_empty() {
        return Err(format!(
            "name at least one event (one of {}), or none for all of them",
            names.join(", ")
        ));
    }
    events.sort_unstable();
    events.dedup();
    Ok(events)
}

/// What the receiver (or the way to it) said about one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookAnswer<'a> {
    /// The receiver answered with this HTTP status.
    Status(u16),
    /// No answer: could not connect, the request failed, or it timed out
    /// (the words say which, without the URL).
    NoAnswer(&'a str),
}

/// The outcome of one attempt, with the words the administrator reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookOutcome {
    Delivered,
    Retry { at: Timestamp, reason: String },
    Failed { reason: String },
}

/// 12 attempts, 30 s doubling up to 1 h between them: about six hours of
/// trying, enough to ride out a receiver's restart or a night's deploy
/// window without keeping an event forever.
pub fn webhook_retry_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 12,
        timing: RetryTiming {
            first_retry: SignedDuration::from_secs(30),
            longest_retry: SignedDuration::from_hours(1),
        },
    }
}

/// Delivered on a 2xx; otherwise retried with [`RetryTiming::delay`]
/// while attempts remain, failed after the last one with the last reason
/// kept. `attempt` is the 1-based number of the attempt just made,
/// `jitter` in [0, 1).
pub fn webhook_outcome(
    answer: WebhookAnswer<'_>,
    attempt: i64,
    policy: &RetryPolicy,
    jitter: f64,
    now: Timestamp,
) -> WebhookOutcome {
    let reason = match answer {
        WebhookAnswer::Status(status) if (200..300).contains(&status) => {
            return WebhookOutcome::Delivered;
        }
        WebhookAnswer::Status(status) => format!("the receiver answered HTTP {status}"),
        WebhookAnswer::NoAnswer(why) => why.to_string(),
    };
    if attempt < policy.max_attempts {
        let at = now
            .checked_add(policy.timing.delay(attempt, jitter))
            .unwrap_or(Timestamp::MAX);
        return WebhookOutcome::Retry { at, reason };
    }
    WebhookOutcome::Failed {
        reason: format!("gave up after {attempt} attempts ({reason})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn retry(attempt: i64, reason: &str) -> WebhookOutcome {
        WebhookOutcome::Retry {
            at: now() + webhook_retry_policy().timing.delay(attempt, 0.5),
            reason: reason.into(),
        }
    }

    fn failed(reason: &str) -> WebhookOutcome {
        WebhookOutcome::Failed {
            reason: reason.into(),
        }
    }

    #[test]
    fn what_a_webhook_attempt_comes_to() {
        use WebhookAnswer::{NoAnswer, Status};
        let refused = "could not connect to the receiver";
        #[rustfmt::skip]
        let rows: Vec<(&str, WebhookAnswer, i64, WebhookOutcome)> = vec![
            ("200", Status(200), 1, WebhookOutcome::Delivered),
            ("204 on the last attempt", Status(204), 12, WebhookOutcome::Delivered),
            ("299", Status(299), 3, WebhookOutcome::Delivered),
            ("a redirect is not followed, so not taken", Status(301), 1,
                retry(1, "the receiver answered HTTP 301")),
            ("500 first", Status(500), 1, retry(1, "the receiver answered HTTP 500")),
            ("400 is retried too: the receiver may be fixed", Status(400), 2,
                retry(2, "the receiver answered HTTP 400")),
            ("no answer", NoAnswer(refused), 5, retry(5, refused)),
            ("one before the last", Status(503), 11, retry(11, "the receiver answered HTTP 503")),
            ("the last attempt", Status(503), 12,
                failed("gave up after 12 attempts (the receiver answered HTTP 503)")),
            ("no answer on the last attempt", NoAnswer(refused), 12,
                failed("gave up after 12 attempts (could not connect to the receiver)")),
        ];
        let policy = webhook_retry_policy();
        for (name, answer, attempt, expected) in rows {
            assert_eq!(
                webhook_outcome(answer, attempt, &policy, 0.5, now()),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn retries_back_off_from_30_seconds_to_an_hour() {
        let policy = webhook_retry_policy();
        let delays: Vec<i64> = (1..=policy.max_attempts)
            .map(|attempt| policy.timing.delay(attempt, 0.5).as_secs())
            .collect();
        assert_eq!(
            delays,
            [
                30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600, 3600
            ]
        );
    }

    #[test]
    fn subscriptions_default_to_all_and_unknown_ones_are_named() {
        assert_eq!(
            parse_subscriptions::<&str>(None),
            Ok(WebhookEventType::SUBSCRIBABLE.to_vec())
        );
        assert_eq!(
            parse_subscriptions(Some(
                &["invite.sent", "patient.activated", "invite.sent"][..]
            )),
            Ok(vec![
                WebhookEventType::PatientActivated,
                WebhookEventType::InviteSent
            ])
        );
        let ping = parse_subscriptions(Some(&["webhook.ping"][..])).err();
        assert!(
            ping.as_deref()
                .is_some_and(|e| e.contains("\"webhook.ping\" is not")),
            "{ping:?}"
        );
        assert!(parse_subscriptions::<&str>(Some(&[])).is_err());
    }

    #[test]
    fn event_types_round_trip_by_key_and_serde() {
        for event in WebhookEventType::SUBSCRIBABLE
            .into_iter()
            .chain([WebhookEventType::Ping])
        {
            assert_eq!(WebhookEventType::from_key(event.key()), Some(event));
            let json = serde_json::to_string(&event).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", event.key()));
        }
        assert_eq!(WebhookEventType::from_key("patient.deleted"), None);
        assert!(!WebhookEventType::SUBSCRIBABLE.contains(&WebhookEventType::Ping));
    }
}
