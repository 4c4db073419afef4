//! The dispatcher: delivers due invites from the outbox (R5-R8, R13).
//!
//! Each round claims a batch of due invites (a lease in the database, so
//! several instances never deliver the same invite), asks the store to check
//! the rules again and record the attempt, renders and sends each invite
//! with bounded concurrency, and records the outcome. Nothing is held in
//! memory between rounds: a restart loses nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use enroll_notify::{
    DeliveryError, E164Phone, EmailAddress, EmailSender, InviteContext, Language, OutgoingEmail,
    OutgoingSms, SmsSender,
};
use enroll_store::{
    ChannelResult, DeliveryJob, DeliveryOutcome, DeliveryPolicy, DeliveryReport, Finished,
    Prepared, Store, StoreError,
};
use futures::StreamExt;
use rand::Rng;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::AppState;
use crate::clock::Clock;
use crate::links::Links;
use crate::rounds::{RunningRounds, spawn_rounds};
use crate::templates::SharedTemplates;

/// `[delivery]`: the dispatcher.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Run a dispatcher in this instance. Any number of instances may; the
    /// tests turn it off to deliver round by round.
    pub enabled: bool,
    /// Attempts before a passing failure (server down) becomes a failure staff see.
    pub max_attempts: i64,
    /// Pause between rounds when there was nothing to send.
    pub poll_interval_ms: u64,
    /// Invites a round delivers at most (claimed 50 at a time as the sends
    /// need them; a stop claims no more). Rounds run back to back while
    /// invites are due; each boundary lets the sends run dry for a moment.
    pub batch: i64,
    /// Emails (and texts) handed to the servers at once.
    pub concurrency: usize,
}

impl Default for DeliveryConfig {
    fn default() -> DeliveryConfig {
        DeliveryConfig {
            enabled: true,
            max_attempts: 8,
            poll_interval_ms: 1000,
            batch: 1000,
            concurrency: 16,
        }
    }
}

impl DeliveryConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }
}

/// What invites go out through.
#[derive(Clone)]
pub struct Channels {
    pub email: Arc<dyn EmailSender>,
    /// None: no SMS provider is configured.
    pub sms: Option<Arc<dyn SmsSender>>,
}

/// What a dispatcher needs; cheap to clone. Made by `Application::build`;
/// the `with_*` methods give a variant of it (another sender, worker name
/// or batch), for tests and the benchmarks.
#[derive(Clone)]
pub struct Dispatcher {
    store: Store,
    clock: Arc<dyn Clock>,
    channels: Channels,
    templates: SharedTemplates,
    links: Links,
    /// The address invites come from, e.g. `"Riverside Portal <portal@example.org>"`.
    email_from: String,
    policy: DeliveryPolicy,
    /// Names this instance in claims; unique per process.
    worker: String,
    /// Invites claimed per round.
    batch: i64,
    /// Invites in flight at once within a round.
    concurrency: usize,
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

impl RoundSummary {
    fn count(&mut self, finished: Option<Finished>) {
        match finished {
            Some(Finished::Sent) => self.sent += 1,
            Some(Finished::Retry { .. }) => self.retrying += 1,
            Some(Finished::Failed { .. }) => self.failed += 1,
            Some(Finished::AlreadyDone) | None => self.skipped += 1,
        }
    }
}

/// Invites per transaction when preparing and when recording outcomes.
/// Small enough that an HL7 message waiting for SQLite's write turn waits
/// a few milliseconds, large enough that commits stop mattering.
pub const STORE_CHUNK: usize = 50;

/// How long the record stage gathers outcomes before writing fewer than
/// [`STORE_CHUNK`]. Outcomes arrive at the SMTP server's pace; written as
/// they came (about five per transaction against a real server), each
/// transaction's fixed cost (begin, lock, four statements, commit) was paid
/// for a handful of invites, in CPU the SMTP server on the same machine
/// then lacks. A crash within the window re-sends those invites once, with
/// their Message-ID, as any crash between sending and recording does.
pub const RECORD_WINDOW: Duration = Duration::from_millis(100);

/// A job on its way to the channels, with the end of the lease this
/// dispatcher's claim had when it was made (`claim_due_invites` sets
/// `claimed_until` to the claim's time plus the lease).
struct InHand {
    job: DeliveryJob,
    held_until: jiff::Timestamp,
}

/// A job whose lease still has more than this left is sent without asking
/// the database: no other dispatcher may claim an invite before its lease
/// ends, and half the lease (2.5 minutes) outlasts a send (bounded by the
/// SMTP and SMS timeouts, 30 s by default) and the record window. With less
/// left, the claim is renewed, or found lost, before the send.
fn renew_below(lease: jiff::SignedDuration) -> jiff::SignedDuration {
    lease / 2
}

/// A dispatcher running in the background.
pub type RunningDispatcher = RunningRounds;

impl Dispatcher {
    pub(crate) fn new(
        state: &AppState,
        channels: Channels,
        email_from: &str,
        config: &DeliveryConfig,
    ) -> Dispatcher {
        let policy = DeliveryPolicy {
            max_attempts: config.max_attempts.max(1),
            sms_enabled: channels.sms.is_some(),
            ..DeliveryPolicy::default()
        };
        Dispatcher {
            store: state.store.clone(),
            clock: state.clock.clone(),
            channels,
            templates: state.templates.clone(),
            links: state.links.clone(),
            email_from: email_from.to_string(),
            policy,
            worker: format!(
                "enroll-{}-{:08x}",
                std::process::id(),
                rand::rng().random::<u32>()
            ),
            batch: config.batch.max(1),
            concurrency: config.concurrency.max(1),
        }
    }

    /// The same dispatcher sending email through `email`.
    pub fn with_email(mut self, email: Arc<dyn EmailSender>) -> Dispatcher {
        self.channels.email = email;
        self
    }

    /// The same dispatcher texting through `sms` (and so allowed to text).
    pub fn with_sms(mut self, sms: Arc<dyn SmsSender>) -> Dispatcher {
        self.channels.sms = Some(sms);
        self.policy.sms_enabled = true;
        self
    }

    /// The same dispatcher giving its activation links `lifetime` (R10).
    pub fn with_link_lifetime(mut self, lifetime: jiff::SignedDuration) -> Dispatcher {
        self.policy.link_lifetime = lifetime;
        self
    }

    /// The same dispatcher claiming under another name (a second instance).
    pub fn with_worker(mut self, worker: &str) -> Dispatcher {
        self.worker = worker.to_string();
        self
    }

    /// The same dispatcher sending `concurrency` invites at once.
    pub fn with_concurrency(mut self, concurrency: usize) -> Dispatcher {
        self.concurrency = concurrency.max(1);
        self
    }

    /// The same dispatcher claiming up to `batch` invites a round.
    pub fn with_batch(mut self, batch: i64) -> Dispatcher {
        self.batch = batch.max(1);
        self
    }

    /// Where emails go (a test wraps it to watch or slow the sends).
    pub fn email(&self) -> Arc<dyn EmailSender> {
        self.channels.email.clone()
    }

    /// Runs rounds until stopped, pausing `idle` when there was nothing to do.
    pub fn spawn(self, idle: Duration) -> RunningDispatcher {
        self.spawn_until(idle, CancellationToken::new())
    }

    /// [`Dispatcher::spawn`], stopping also when `stop` is cancelled.
    pub fn spawn_until(self, idle: Duration, stop: CancellationToken) -> RunningDispatcher {
        let dispatcher = Arc::new(self);
        spawn_rounds("dispatcher", idle, stop, move |stopped| {
            let dispatcher = Arc::clone(&dispatcher);
            async move { Ok::<_, StoreError>(dispatcher.deliver(&stopped).await?.claimed > 0) }
        })
    }

    /// Delivers up to `batch` due invites.
    ///
    /// Three stages run at once, so the SMTP server never waits for the
    /// database and the other way round:
    /// - claim and prepare: invites are claimed [`STORE_CHUNK`] at a time,
    ///   just before they are needed, and each chunk is checked against the
    ///   rules and its attempts recorded in one transaction (a commit per
    ///   invite was most of a round's time), as many chunks at once as the
    ///   engine has use for (`Store::concurrent_writers`). The stage stays
    ///   at most a few chunks ahead of the sends (a bounded queue), so a
    ///   claim's lease is not spent waiting and the sends never run dry
    ///   while due invites remain;
    /// - send: jobs go out `concurrency` at once as soon as their chunk is
    ///   committed;
    /// - record: outcomes are written one transaction at a time, each taking
    ///   up to [`STORE_CHUNK`] outcomes gathered for at most
    ///   [`RECORD_WINDOW`], so transactions grow with the load instead of
    ///   multiplying.
    ///
    /// The round ends when `batch` invites were claimed or none is left due.
    /// A chunk the store refuses is tried again one invite at a time, so one
    /// bad invite holds up no other.
    pub async fn run_round(&self) -> Result<RoundSummary, StoreError> {
        self.deliver(&CancellationToken::new()).await
    }

    /// [`Dispatcher::run_round`], claiming nothing more once `stopping`
    /// turns true (the invites already claimed still go out and are
    /// recorded), so a stop does not wait for a whole round.
    async fn deliver(&self, stopping: &CancellationToken) -> Result<RoundSummary, StoreError> {
        // A template saved on another instance is in force from this round.
        self.templates.refresh(&self.store).await?;
        self.release_go_live().await;
        let (jobs, jobs_in) = futures::channel::mpsc::unbounded::<InHand>();
        let (outcomes, outcomes_in) = futures::channel::mpsc::unbounded::<DeliveryOutcome>();
        // Invites claimed but not yet handed to a sender. A chunk is claimed
        // only when its invites fit, and the permits come back as sends
        // start. The wait is before the claim, not after the prepare: a
        // prepared chunk waiting for the sends would hold its transaction
        // (and SQLite's write turn) open.
        let lead = Semaphore::new(STORE_CHUNK * (self.store.concurrent_writers() + 1));
        let (prepared, claims_lost, mut summary) = tokio::join!(
            self.claim_and_prepare_stage(&lead, stopping, jobs),
            self.send_stage(&lead, jobs_in, outcomes),
            self.record_stage(outcomes_in),
        );
        summary.claimed = prepared.claimed;
        summary.skipped += prepared.not_sent + claims_lost;
        if let Some(e) = prepared.claim_failure {
            if prepared.claimed == 0 {
                return Err(e);
            }
            tracing::warn!(error = %e, "claiming more invites failed; the round ends with those in hand");
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

    /// Lets the charts whose turn has come in a running "Invite existing
    /// patients" run have their invites queued, so they go out in this
    /// round. A failure is logged and the round goes on: the run's charts
    /// are released in a later round.
    async fn release_go_live(&self) {
        let limit = usize::try_from(self.batch).unwrap_or(1).max(1);
        match self.store.release_go_live(self.clock.now(), limit).await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "go-live invites released"),
            Err(e) => {
                tracing::warn!(error = %e, "releasing go-live invites failed; trying again next round")
            }
        }
    }

    /// Claims and prepares chunks until `batch` invites were claimed, none
    /// is left due, or `stopping`; each job goes to `jobs` as soon as its
    /// chunk is committed.
    async fn claim_and_prepare_stage(
        &self,
        lead: &Semaphore,
        stopping: &CancellationToken,
        jobs: futures::channel::mpsc::UnboundedSender<InHand>,
    ) -> PrepareTotals {
        let budget = usize::try_from(self.batch).unwrap_or(0).max(1);
        let chunk_sizes: Vec<usize> = (0..budget)
            .step_by(STORE_CHUNK)
            .map(|start| STORE_CHUNK.min(budget - start))
            .collect();
        let nothing_more_due = AtomicBool::new(false);
        let claim_failure: Mutex<Option<StoreError>> = Mutex::new(None);
        let (mut claimed, mut not_sent) = (0, 0);
        let (nothing_more_due_ref, claim_failure_ref) = (&nothing_more_due, &claim_failure);
        let mut chunks = futures::stream::iter(chunk_sizes)
            .take_while(|_| {
                let more = !nothing_more_due.load(Ordering::Relaxed) && !stopping.is_cancelled();
                std::future::ready(more)
            })
            .map(|size| async move {
                if let Ok(permits) = lead.acquire_many(permit_count(size)).await {
                    permits.forget();
                }
                let (claimed, prepared, held_until) = self
                    .claim_and_prepare(size, nothing_more_due_ref, claim_failure_ref)
                    .await;
                (size, claimed, prepared, held_until)
            })
            .buffered(self.store.concurrent_writers());
        while let Some((size, claimed_now, prepared, held_until)) = chunks.next().await {
            claimed += claimed_now;
            let mut queued = 0;
            for prepared in prepared {
                match prepared {
                    // The receiver lives until every job is in.
                    Prepared::Send(job) => {
                        drop(jobs.unbounded_send(InHand { job, held_until }));
                        queued += 1;
                    }
                    Prepared::Skipped { .. } => not_sent += 1,
                }
            }
            lead.add_permits(size - queued);
        }
        drop(chunks);
        PrepareTotals {
            claimed,
            not_sent,
            claim_failure: claim_failure
                .into_inner()
                .unwrap_or_else(|p| p.into_inner()),
        }
    }

    /// Sends the jobs `concurrency` at once, giving a `lead` permit back as
    /// each starts; each outcome goes to `outcomes`. Returns how many jobs
    /// were not sent because the claim was no longer this dispatcher's.
    async fn send_stage(
        &self,
        lead: &Semaphore,
        jobs: futures::channel::mpsc::UnboundedReceiver<InHand>,
        outcomes: futures::channel::mpsc::UnboundedSender<DeliveryOutcome>,
    ) -> usize {
        let mut claims_lost = 0;
        jobs.map(|in_hand| {
            lead.add_permits(1);
            self.attempt(in_hand)
        })
        .buffer_unordered(self.concurrency.max(1))
        .for_each(|outcome| {
            match outcome {
                // The receiver lives until every outcome is in.
                Some(outcome) => drop(outcomes.unbounded_send(outcome)),
                None => claims_lost += 1,
            }
            std::future::ready(())
        })
        .await;
        claims_lost
    }

    /// Records the outcomes one transaction at a time; counts what became
    /// of each invite.
    async fn record_stage(
        &self,
        outcomes: futures::channel::mpsc::UnboundedReceiver<DeliveryOutcome>,
    ) -> RoundSummary {
        let mut summary = RoundSummary::default();
        tokio_stream::StreamExt::chunks_timeout(outcomes, STORE_CHUNK, RECORD_WINDOW)
            .map(|chunk| self.finish_chunk(chunk))
            .buffered(1)
            .for_each(|finished| {
                for finished in finished {
                    summary.count(finished);
                }
                std::future::ready(())
            })
            .await;
        summary
    }

    /// Claims up to `size` due invites and prepares them; says when fewer
    /// were due (the round need not claim again) or the claim failed, and
    /// until when the claim holds.
    async fn claim_and_prepare(
        &self,
        size: usize,
        nothing_more_due: &AtomicBool,
        claim_failure: &Mutex<Option<StoreError>>,
    ) -> (usize, Vec<Prepared>, jiff::Timestamp) {
        let limit = i64::try_from(size).unwrap_or(i64::MAX);
        let claimed_at = self.clock.now();
        let held_until = claimed_at
            .checked_add(self.policy.lease)
            .unwrap_or(jiff::Timestamp::MAX);
        let claim = self
            .store
            .claim_due_invites(&self.worker, claimed_at, self.policy.lease, limit)
            .await;
        let ids = match claim {
            Ok(ids) => ids,
            Err(e) => {
                nothing_more_due.store(true, Ordering::Relaxed);
                claim_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(e);
                return (0, Vec::new(), held_until);
            }
        };
        if ids.len() < size {
            nothing_more_due.store(true, Ordering::Relaxed);
        }
        if ids.is_empty() {
            return (0, Vec::new(), held_until);
        }
        (ids.len(), self.prepare_chunk(ids).await, held_until)
    }

    /// Checks the rules and records the attempts for one chunk of claimed
    /// invites: in one transaction, or one by one when that fails.
    async fn prepare_chunk(&self, ids: Vec<i64>) -> Vec<Prepared> {
        let now = self.clock.now();
        let batch = self
            .store
            .prepare_deliveries(&ids, &self.worker, &self.policy, now)
            .await;
        match batch {
            Ok(prepared) => prepared.into_iter().map(|(_, p)| p).collect(),
            Err(e) => {
                tracing::warn!(error = %e, invites = ids.len(), "preparing a batch of invites failed; going one by one");
                let mut prepared = Vec::with_capacity(ids.len());
                for id in ids {
                    let one = self
                        .store
                        .prepare_delivery(id, &self.worker, &self.policy, self.clock.now())
                        .await;
                    prepared.push(one.unwrap_or_else(|e| {
                        // The claim runs out and another round takes the invite.
                        tracing::error!(invite_id = id, error = %e, "preparing an invite failed; it will be retried");
                        Prepared::Skipped {
                            reason: e.to_string(),
                        }
                    }));
                }
                prepared
            }
        }
    }

    /// Sends one job, if its claim is still this dispatcher's (`None`
    /// when it is not: nothing was sent and there is nothing to record).
    async fn attempt(&self, in_hand: InHand) -> Option<DeliveryOutcome> {
        if !self.still_holds(&in_hand).await {
            return None;
        }
        let job = in_hand.job;
        let report = self.send(&job).await;
        Some(DeliveryOutcome {
            job,
            report,
            jitter: rand::rng().random::<f64>(),
        })
    }

    /// Whether this dispatcher still holds the claim on the job's invite,
    /// long enough to send it. A chunk's jobs can wait behind the sends in
    /// flight for longer than the lease (a slow or unreachable SMTP server,
    /// up to [`STORE_CHUNK`] x (writers + 1) jobs waiting), and once the
    /// lease has run out another instance may claim the invite and send it
    /// too. So a job whose lease is running low is sent only after its claim
    /// is renewed in the database (`Store::renew_claim`, which fails when
    /// someone else took the invite over). When the database cannot be
    /// asked, the job is not sent: the lease runs out and a later round
    /// sends it, marked as interrupted.
    async fn still_holds(&self, in_hand: &InHand) -> bool {
        let now = self.clock.now();
        if in_hand.held_until.duration_since(now) > renew_below(self.policy.lease) {
            return true;
        }
        let job = &in_hand.job;
        let renewed = self
            .store
            .renew_claim(
                job.invite_id,
                &self.worker,
                job.attempt,
                now,
                self.policy.lease,
            )
            .await;
        match renewed {
            Ok(true) => true,
            Ok(false) => {
                tracing::warn!(
                    invite_id = job.invite_id,
                    attempt = job.attempt,
                    "the claim on this invite ran out and another dispatcher took it; not sending it again"
                );
                false
            }
            Err(e) => {
                tracing::warn!(invite_id = job.invite_id, error = %e, "could not renew the claim on an invite; not sending it now, a later round will");
                false
            }
        }
    }

    /// Records outcomes: in one transaction, or one by one when that fails
    /// (`None` for an outcome that could not be recorded: its claim runs
    /// out and another round sends it again, marked as interrupted).
    async fn finish_chunk(&self, outcomes: Vec<DeliveryOutcome>) -> Vec<Option<Finished>> {
        let now = self.clock.now();
        match self
            .store
            .finish_deliveries(&outcomes, &self.policy, now)
            .await
        {
            Ok(finished) => {
                for (outcome, finished) in outcomes.iter().zip(&finished) {
                    tracing::debug!(
                        invite_id = outcome.job.invite_id,
                        attempt = outcome.job.attempt,
                        ?finished,
                        "invite delivery recorded"
                    );
                }
                finished.into_iter().map(Some).collect()
            }
            Err(e) => {
                tracing::warn!(error = %e, invites = outcomes.len(), "recording a batch of deliveries failed; going one by one");
                let mut finished = Vec::with_capacity(outcomes.len());
                for outcome in &outcomes {
                    let one = self
                        .store
                        .finish_deliveries(std::slice::from_ref(outcome), &self.policy, now)
                        .await;
                    finished.push(match one {
                        Ok(mut one) => one.pop(),
                        Err(e) => {
                            tracing::error!(invite_id = outcome.job.invite_id, error = %e, "recording a delivery failed; it will be retried");
                            None
                        }
                    });
                }
                finished
            }
        }
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
            .current()
            .render_email(&job.practice_code, context);
        let content = match rendered {
            Ok(content) => content,
            Err(e) => {
                return ChannelResult::Permanent(format!(
                    "the email template could not be rendered: {e}"
                ));
            }
        };
        // The stored address passed core's R1 check when it was written;
        // one that no longer parses is refused as the mailer would.
        let Ok(to) = EmailAddress::parse(to) else {
            return ChannelResult::Permanent(
                "the recipient address is not a valid email address".into(),
            );
        };
        let email = OutgoingEmail {
            to,
            from: self.email_from.clone(),
            message_id: self.links.message_id(job.invite_id, job.invite_created_at),
            list_unsubscribe: context.unsubscribe_url.clone(),
            content,
        };
        match self.channels.email.send_email(&email).await {
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
        let Some(sender) = &self.channels.sms else {
            return ChannelResult::Permanent("no SMS provider is configured".into());
        };
        let rendered = self
            .templates
            .current()
            .render_sms(&job.practice_code, context);
        let body = match rendered {
            Ok(body) => body,
            Err(e) => {
                return ChannelResult::Permanent(format!("the SMS text could not be made: {e}"));
            }
        };
        // As for email: stored normalised, so this refusal is for a number
        // written around the checks.
        let Ok(to) = E164Phone::parse(to) else {
            return ChannelResult::Permanent(
                "the recipient is not a phone number in E.164 form".into(),
            );
        };
        match sender.send_sms(&OutgoingSms { to, body }).await {
            Ok(provider_id) => ChannelResult::Sent {
                provider_id: Some(provider_id),
            },
            Err(e) => channel_error(e),
        }
    }
}

/// What the claim and prepare stage of a round did.
struct PrepareTotals {
    claimed: usize,
    /// Claimed, but the rules said not to send (or the store failed).
    not_sent: usize,
    /// The first claim that failed; no more were tried after it.
    claim_failure: Option<StoreError>,
}

/// Semaphore permits for a chunk of `size` invites (at most [`STORE_CHUNK`]).
fn permit_count(size: usize) -> u32 {
    u32::try_from(size).unwrap_or(u32::MAX)
}

fn channel_error(e: DeliveryError) -> ChannelResult {
    match e {
        DeliveryError::Transient(reason) => ChannelResult::Transient(reason),
        DeliveryError::Permanent(reason) => ChannelResult::Permanent(reason),
    }
}
