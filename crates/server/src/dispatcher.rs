//! The dispatcher: delivers due invites from the outbox (R5-R8, R13).
//!
//! Each round claims a batch of due invites (a lease in the database, so
//! several instances never deliver the same invite), asks the store to check
//! the rules again and record the attempt, renders and sends each invite
//! with bounded concurrency, and records the outcome. Nothing is held in
//! memory between rounds: a restart loses nothing.

use std::sync::Arc;
use std::time::Duration;

use enroll_notify::{
    DeliveryError, EmailSender, InviteContext, Language, OutgoingEmail, OutgoingSms, SmsSender,
};
use enroll_store::{
    ChannelResult, DeliveryJob, DeliveryPolicy, DeliveryReport, Finished, Prepared, Store,
    StoreError,
};
use futures::StreamExt;
use rand::Rng;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::links::Links;
use crate::templates::SharedTemplates;

/// What a dispatcher needs; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub email: Arc<dyn EmailSender>,
    pub sms: Option<Arc<dyn SmsSender>>,
    pub templates: SharedTemplates,
    pub links: Links,
    /// The address invites come from, e.g. `"Riverside Portal <portal@example.org>"`.
    pub email_from: String,
    pub policy: DeliveryPolicy,
    /// Names this instance in claims; unique per process.
    pub worker: String,
    /// Invites claimed per round.
    pub batch: i64,
    /// Invites in flight at once within a round.
    pub concurrency: usize,
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundSummary {
    pub claimed: usize,
    pub sent: usize,
    pub retrying: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// A dispatcher running in the background.
pub struct RunningDispatcher {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningDispatcher {
    /// Lets the round in hand finish, then stops.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl Dispatcher {
    /// Runs rounds until stopped, pausing `idle` when there was nothing to do.
    pub fn spawn(self, idle: Duration) -> RunningDispatcher {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let busy = match self.run_round().await {
                    Ok(summary) => summary.claimed > 0,
                    Err(e) => {
                        tracing::error!(error = %e, "dispatcher round failed; trying again shortly");
                        false
                    }
                };
                if *stopped.borrow() {
                    break;
                }
                if !busy {
                    tokio::select! {
                        _ = tokio::time::sleep(idle) => {}
                        _ = stopped.changed() => break,
                    }
                }
            }
        });
        RunningDispatcher { stop, task }
    }

    /// Claims one batch of due invites and delivers them.
    pub async fn run_round(&self) -> Result<RoundSummary, StoreError> {
        let now = self.clock.now();
        let ids = self
            .store
            .claim_due_invites(&self.worker, now, self.policy.lease, self.batch)
            .await?;
        let mut summary = RoundSummary {
            claimed: ids.len(),
            ..RoundSummary::default()
        };
        let mut results = futures::stream::iter(ids)
            .map(|id| self.deliver(id))
            .buffer_unordered(self.concurrency.max(1));
        while let Some(result) = results.next().await {
            match result {
                Ok(Some(Finished::Sent)) => summary.sent += 1,
                Ok(Some(Finished::Retry { .. })) => summary.retrying += 1,
                Ok(Some(Finished::Failed { .. })) => summary.failed += 1,
                Ok(Some(Finished::AlreadyDone) | None) => summary.skipped += 1,
                Err(e) => {
                    // The claim runs out and another round takes the invite.
                    tracing::error!(error = %e, "delivering an invite failed; it will be retried");
                    summary.skipped += 1;
                }
            }
        }
        if summary.claimed > 0 {
            tracing::info!(
                claimed = summary.claimed,
                sent = summary.sent,
                retrying = summary.retrying,
                failed = summary.failed,
                skipped = summary.skipped,
                "dispatcher round"
            );
        }
        Ok(summary)
    }

    async fn deliver(&self, invite_id: i64) -> Result<Option<Finished>, StoreError> {
        let now = self.clock.now();
        let job = match self
            .store
            .prepare_delivery(invite_id, &self.worker, &self.policy, now)
            .await?
        {
            Prepared::Send(job) => job,
            Prepared::Skipped { reason } => {
                tracing::debug!(invite_id, reason, "invite not sent");
                return Ok(None);
            }
        };
        let report = self.send(&job).await;
        let jitter = rand::rng().random::<f64>();
        let finished = self
            .store
            .finish_delivery(&job, &report, &self.policy, jitter, self.clock.now())
            .await?;
        tracing::debug!(
            invite_id,
            attempt = job.attempt,
            ?finished,
            "invite delivery recorded"
        );
        Ok(Some(finished))
    }

    /// Sends by email and SMS at once; never fails, every problem is a result.
    async fn send(&self, job: &DeliveryJob) -> DeliveryReport {
        let context = InviteContext {
            first_name: job.first_name.clone(),
            practice_name: job.practice_name.clone(),
            activation_url: self.links.activation_url(&job.activation_token),
            unsubscribe_url: self.links.unsubscribe_url(job.invite_id),
            language: Language::from_preference(job.preferred_language.as_deref()),
        };
        let email = async {
            let to = job.email.as_ref()?;
            Some(self.send_email(job, to, &context).await)
        };
        let sms = async {
            let to = job.cell_phone.as_ref()?;
            Some(self.send_sms(job, to, &context).await)
        };
        let (email, sms) = tokio::join!(email, sms);
        DeliveryReport { email, sms }
    }

    async fn send_email(
        &self,
        job: &DeliveryJob,
        to: &str,
        context: &InviteContext,
    ) -> ChannelResult {
        let rendered = self
            .templates
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .render_email(&job.practice_code, context);
        let content = match rendered {
            Ok(content) => content,
            Err(e) => {
                return ChannelResult::Permanent(format!(
                    "the email template could not be rendered: {e}"
                ));
            }
        };
        let email = OutgoingEmail {
            to: to.to_string(),
            from: self.email_from.clone(),
            message_id: self.links.message_id(job.invite_id, job.invite_created_at),
            list_unsubscribe: context.unsubscribe_url.clone(),
            content,
        };
        match self.email.send_email(&email).await {
            Ok(()) => ChannelResult::Sent {
                provider_id: Some(email.message_id),
            },
            Err(e) => channel_error(e),
        }
    }

    async fn send_sms(
        &self,
        job: &DeliveryJob,
        to: &str,
        context: &InviteContext,
    ) -> ChannelResult {
        let Some(sender) = &self.sms else {
            return ChannelResult::Permanent("no SMS provider is configured".into());
        };
        let rendered = self
            .templates
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .render_sms(&job.practice_code, context);
        let body = match rendered {
            Ok(body) => body,
            Err(e) => {
                return ChannelResult::Permanent(format!("the SMS text could not be made: {e}"));
            }
        };
        match sender
            .send_sms(&OutgoingSms {
                to: to.to_string(),
                body,
            })
            .await
        {
            Ok(provider_id) => ChannelResult::Sent {
                provider_id: Some(provider_id),
            },
            Err(e) => channel_error(e),
        }
    }
}

fn channel_error(e: DeliveryError) -> ChannelResult {
    match e {
        DeliveryError::Transient(reason) => ChannelResult::Transient(reason),
        DeliveryError::Permanent(reason) => ChannelResult::Permanent(reason),
    }
}
