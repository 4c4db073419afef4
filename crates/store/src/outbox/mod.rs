//! Delivery of the outbox (R4-R8, R13): claim due invites, check the rules
//! again with the patient's data of this moment, hand the invite to the
//! channels, and record what came of it.
//!
//! The dispatcher never holds a transaction while it talks to an SMTP server
//! or an SMS provider: `prepare_delivery` commits "attempt n is being made"
//! (with a `sending` row per channel) before anything leaves, and
//! `finish_delivery` records the outcome afterwards. A process that dies in
//! between leaves `sending` rows behind; when its claim (a lease) runs out,
//! another dispatcher takes the invite, marks those rows `interrupted`, and
//! sends once more with the same Message-ID, which the timeline records.

mod attempts;
mod claim;
mod decide;
mod opt_out;
mod prepare;
mod read;
mod settle;
mod texts;

pub use enroll_core::Channel;
use enroll_core::{RetryPolicy, RetryTiming};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::{InviteState, Source};

/// How the dispatcher retries and how long its claims and links last. The
/// retry numbers are the rules' (`enroll_core::RetryPolicy`), kept here as
/// plain fields so that configuration can set them.
#[derive(Debug, Clone)]
pub struct DeliveryPolicy {
    /// How long a claimed invite is reserved for one dispatcher. Longer than
    /// any send can take; after it another instance may take the invite over.
    pub lease: SignedDuration,
    /// Attempts before a transient failure becomes a failure staff see.
    pub max_attempts: i64,
    pub first_retry: SignedDuration,
    pub longest_retry: SignedDuration,
    /// Lifetime of the activation link (R10: 30 days by default).
    pub link_lifetime: SignedDuration,
    /// False when no SMS provider is configured: invites go by email only.
    pub sms_enabled: bool,
}

impl Default for DeliveryPolicy {
    fn default() -> DeliveryPolicy {
        let retry = RetryPolicy::default();
        DeliveryPolicy {
            lease: SignedDuration::from_mins(5),
            max_attempts: retry.max_attempts,
            first_retry: retry.timing.first_retry,
            longest_retry: retry.timing.longest_retry,
            link_lifetime: SignedDuration::from_hours(30 * 24),
            sms_enabled: false,
        }
    }
}

impl DeliveryPolicy {
    /// The part of the policy the outcome of an attempt depends on.
    pub fn retry(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            timing: RetryTiming {
                first_retry: self.first_retry,
                longest_retry: self.longest_retry,
            },
        }
    }
}

/// Everything the dispatcher needs to render and send one invite. The
/// activation token is here in clear only in memory; the store keeps its hash.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    pub invite_id: i64,
    pub invite_created_at: Timestamp,
    pub patient_id: i64,
    pub attempt: i64,
    pub first_name: String,
    pub practice_code: String,
    pub practice_name: String,
    pub preferred_language: Option<String>,
    pub email: Option<String>,
    pub cell_phone: Option<String>,
    pub activation_token: String,
    /// An earlier attempt was cut off after handing the invite over, so the
    /// patient may get it twice (with the same Message-ID).
    pub resumed_after_interruption: bool,
}

#[derive(Debug, Clone)]
pub enum Prepared {
    Send(DeliveryJob),
    /// Nothing to send now; the invite was rescheduled, suppressed,
    /// cancelled, or is no longer this dispatcher's.
    Skipped {
        reason: String,
    },
}

/// What one channel said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelResult {
    Sent { provider_id: Option<String> },
    Transient(String),
    Permanent(String),
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryReport {
    pub email: Option<ChannelResult>,
    pub sms: Option<ChannelResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    Sent,
    Retry {
        at: Timestamp,
    },
    Failed {
        reason: String,
    },
    /// Another dispatcher finished the invite first (our lease ran out).
    AlreadyDone,
}

/// A delivery that failed or is waiting for a retry, for staff.
#[derive(Debug, Clone, Serialize)]
pub struct FailedDelivery {
    pub invite_id: i64,
    pub patient_id: i64,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub state: InviteState,
    pub created_at: Timestamp,
    pub attempts: i64,
    /// For an invite still being retried.
    pub next_retry_at: Option<Timestamp>,
    pub channel: Option<String>,
    pub address: Option<String>,
    pub reason: Option<String>,
}

/// What one delivery attempt came to, for [`Store::finish_deliveries`].
#[derive(Debug, Clone)]
pub struct DeliveryOutcome {
    pub job: DeliveryJob,
    pub report: DeliveryReport,
    /// In [0, 1): spreads the retry time (see `enroll_core::RetryTiming::delay`).
    pub jitter: f64,
}

fn system() -> Source {
    Source::new("system", Some("dispatcher"))
}
