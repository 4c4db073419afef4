//! The webhook sender: delivers the practices' signed webhooks from their
//! outbox (`webhook_deliveries`, written by the store in the transaction
//! of each change), as the dispatcher delivers invites.
//!
//! Each round claims due deliveries with a lease (several instances never
//! post the same one at once), posts them with bounded concurrency and no
//! transaction open, and records each outcome. Delivery is at least once:
//! a process that dies between the post and the record posts again once
//! the lease runs out, with the same `Enroll-Delivery` id, which receivers
//! dedupe by.

use std::sync::Arc;
use std::time::Duration;

use enroll_core::{RetryPolicy, WebhookAnswer, webhook_retry_policy};
use enroll_notify::{DeliveryError, OutgoingWebhook, WebhookSender};
use enroll_store::{Store, StoreError, WebhookFinished, WebhookJob};
use futures::StreamExt;
use jiff::SignedDuration;
use rand::Rng;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::rounds::{RunningRounds, spawn_rounds};

/// `[webhooks]`: the sender of the practices' webhooks.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Run a webhook sender in this instance (any number may; the tests
    /// turn it off to send round by round).
    pub enabled: bool,
    /// Attempts before an event is given up on (the last reason is kept).
    pub max_attempts: i64,
    /// How long one request may take, connecting included.
    pub timeout_secs: u64,
    /// Pause between rounds when nothing was due.
    pub poll_interval_ms: u64,
    /// Deliveries a round claims at most.
    pub batch: i64,
    /// Requests in flight at once.
    pub concurrency: usize,
}

impl Default for WebhookConfig {
    fn default() -> WebhookConfig {
        WebhookConfig {
            enabled: true,
            max_attempts: webhook_retry_policy().max_attempts,
            timeout_secs: 10,
            poll_interval_ms: 1000,
            batch: 100,
            concurrency: 8,
        }
    }
}

impl WebhookConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1))
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WebhookRound {
    pub claimed: usize,
    pub delivered: usize,
    pub retrying: usize,
    pub failed: usize,
    /// Recorded by another sender first, or not recorded (store error).
    pub skipped: usize,
}

impl WebhookRound {
    fn count(&mut self, finished: Option<WebhookFinished>) {
        match finished {
            Some(WebhookFinished::Delivered) => self.delivered += 1,
            Some(WebhookFinished::Retry { .. }) => self.retrying += 1,
            Some(WebhookFinished::Failed { .. }) => self.failed += 1,
            Some(WebhookFinished::AlreadyDone) | None => self.skipped += 1,
        }
    }
}

/// What the webhook sender needs; cheap to clone. Made by
/// `Application::build`.
#[derive(Clone)]
pub struct WebhookDispatcher {
    store: Store,
    clock: Arc<dyn Clock>,
    sender: Arc<dyn WebhookSender>,
    policy: RetryPolicy,
    /// Longer than a request can take (the timeout), so a claim outlives
    /// the post it covers.
    lease: SignedDuration,
    worker: String,
    batch: i64,
    concurrency: usize,
}

/// A webhook sender running in the background.
pub type RunningWebhooks = RunningRounds;

impl WebhookDispatcher {
    pub(crate) fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        sender: Arc<dyn WebhookSender>,
        config: &WebhookConfig,
    ) -> WebhookDispatcher {
        let policy = RetryPolicy {
            max_attempts: config.max_attempts.max(1),
            ..webhook_retry_policy()
        };
        let timeout = i64::try_from(config.timeout().as_secs()).unwrap_or(60);
        let (batch, concurrency) = (config.batch.max(1), config.concurrency.max(1));
        // A claim must outlive its whole round: a receiver that hangs makes
        // every post take the full timeout, `concurrency` at a time, and a
        // post that starts after its claim ran out could be claimed and sent
        // by another instance at the same moment.
        let rounds = u64::try_from(batch)
            .unwrap_or(1)
            .div_ceil(u64::try_from(concurrency).unwrap_or(1));
        let rounds = i64::try_from(rounds).unwrap_or(i64::MAX);
        let lease = timeout.saturating_mul(rounds).saturating_add(60);
        WebhookDispatcher {
            store,
            clock,
            sender,
            policy,
            lease: SignedDuration::from_secs(lease),
            worker: format!(
                "enroll-webhooks-{}-{:08x}",
                std::process::id(),
                rand::rng().random::<u32>()
            ),
            batch,
            concurrency,
        }
    }

    /// Runs rounds until `stop` is cancelled, pausing `idle` when nothing
    /// was due.
    pub fn spawn_until(self, idle: Duration, stop: CancellationToken) -> RunningWebhooks {
        let webhooks = Arc::new(self);
        spawn_rounds("webhook", idle, stop, move |_| {
            let webhooks = Arc::clone(&webhooks);
            async move { Ok::<_, StoreError>(webhooks.run_round().await?.claimed > 0) }
        })
    }

    /// Claims the due deliveries (up to `batch`), posts them
    /// `concurrency` at once, and records each outcome.
    pub async fn run_round(&self) -> Result<WebhookRound, StoreError> {
        let jobs = self
            .store
            .claim_due_webhooks(&self.worker, self.clock.now(), self.lease, self.batch)
            .await?;
        let mut round = WebhookRound {
            claimed: jobs.len(),
            ..WebhookRound::default()
        };
        let finished: Vec<Option<WebhookFinished>> = futures::stream::iter(jobs)
            .map(|job| self.deliver(job))
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        for finished in finished {
            round.count(finished);
        }
        if round.claimed > 0 {
            tracing::info!(
                claimed = round.claimed,
                delivered = round.delivered,
                retrying = round.retrying,
                failed = round.failed,
                "webhook round"
            );
        }
        Ok(round)
    }

    /// Posts one delivery and records what came of it; none when the
    /// record failed (the lease runs out and it is posted again).
    async fn deliver(&self, job: WebhookJob) -> Option<WebhookFinished> {
        let answer = self.sender.post(&outgoing(&job, self.clock.now())).await;
        let reason;
        let answer = match answer {
            Ok(status) => WebhookAnswer::Status(status),
            Err(DeliveryError::Transient(why) | DeliveryError::Permanent(why)) => {
                reason = why;
                WebhookAnswer::NoAnswer(&reason)
            }
        };
        let jitter = rand::rng().random::<f64>();
        let recorded = self
            .store
            .finish_webhook(
                &job,
                &self.worker,
                answer,
                &self.policy,
                jitter,
                self.clock.now(),
            )
            .await;
        // Ids and status only: the body names a patient by MRN.
        match recorded {
            Ok(finished) => {
                log_outcome(&job, answer, &finished);
                Some(finished)
            }
            Err(e) => {
                tracing::error!(endpoint = job.endpoint_id, delivery = job.delivery_id, error = %e,
                    "the webhook's outcome could not be recorded; it will be posted again");
                None
            }
        }
    }
}

/// The request for one attempt: signed with this attempt's time.
fn outgoing(job: &WebhookJob, now: jiff::Timestamp) -> OutgoingWebhook {
    OutgoingWebhook {
        url: job.url.clone(),
        secret: job.secret.clone().into(),
        event_type: job.event_type.clone(),
        delivery_id: job.event_id.clone(),
        timestamp: now.as_second(),
        body: job.body.clone(),
    }
}

fn log_outcome(job: &WebhookJob, answer: WebhookAnswer<'_>, finished: &WebhookFinished) {
    let status = match answer {
        WebhookAnswer::Status(status) => Some(status),
        WebhookAnswer::NoAnswer(_) => None,
    };
    match finished {
        WebhookFinished::Delivered | WebhookFinished::AlreadyDone => tracing::debug!(
            endpoint = job.endpoint_id,
            delivery = job.delivery_id,
            status,
            attempt = job.attempt,
            "webhook posted"
        ),
        WebhookFinished::Retry { at } => tracing::warn!(
            endpoint = job.endpoint_id, delivery = job.delivery_id, status, attempt = job.attempt,
            retry_at = %at, "webhook not taken; will retry"
        ),
        WebhookFinished::Failed { reason } => tracing::warn!(
            endpoint = job.endpoint_id, delivery = job.delivery_id, status, attempt = job.attempt,
            reason = %reason, "webhook given up"
        ),
    }
}
