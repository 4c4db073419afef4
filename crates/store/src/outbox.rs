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

pub use enroll_core::Channel;
use enroll_core::{
    AttemptOutcome, ChannelAnswer, Decision, PracticeRules, RetryPolicy, RetryTiming, SMS_DAY,
    SMS_WEEK, SendHistory, TextsToNumber, Trigger, ValidFields, check, decide_auto, decide_manual,
    may_text,
};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::json;
use sqlx::AssertSqlSafe;

use std::collections::{HashMap, HashSet};

use crate::batch::{Col, TimelineRow};
use crate::cap::{CapLedger, ClaimedInvites};
use crate::enrollment::{Tx, on_tx};
use crate::model::{INVITE_COLUMNS, InviteRow, PATIENT_COLUMNS, PatientRow};
use crate::{
    Backend, Invite, InviteState, Patient, Practice, Result, Source, Store, StoreError, from_ms,
    to_ms,
};

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

impl ChannelResult {
    /// The result as the rules weigh it.
    fn answer(&self) -> ChannelAnswer<'_> {
        match self {
            ChannelResult::Sent { .. } => ChannelAnswer::Sent,
            ChannelResult::Transient(e) => ChannelAnswer::Transient(e),
            ChannelResult::Permanent(e) => ChannelAnswer::Permanent(e),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryReport {
    pub email: Option<ChannelResult>,
    pub sms: Option<ChannelResult>,
}

impl DeliveryReport {
    /// The channels that were tried, email first.
    fn results(&self) -> Vec<(Channel, &ChannelResult)> {
        [(Channel::Email, &self.email), (Channel::Sms, &self.sms)]
            .into_iter()
            .filter_map(|(channel, result)| result.as_ref().map(|r| (channel, r)))
            .collect()
    }
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

fn system() -> Source {
    Source::new("system", Some("dispatcher"))
}

impl Store {
    /// Claims up to `limit` invites that are due (scheduled or queued, due
    /// at or before `now`, not claimed by a live lease), oldest first.
    /// PostgreSQL skips rows another instance is claiming at this moment
    /// (`FOR UPDATE SKIP LOCKED`); SQLite runs one writer at a time.
    pub async fn claim_due_invites(
        &self,
        worker: &str,
        now: Timestamp,
        lease: SignedDuration,
        limit: i64,
    ) -> Result<Vec<i64>> {
        // SQLite, without statistics, would rather look up each state in
        // the (state, sent_at) index and sort every pending invite than
        // walk invites_pending in order (migration 0004); it is told.
        let (index, lock) = match self.backend {
            Backend::Sqlite(_) => ("INDEXED BY invites_pending", ""),
            Backend::Postgres(_) => ("", "FOR UPDATE SKIP LOCKED"),
        };
        let sql = format!(
            "UPDATE invites SET claimed_by = $1, claimed_until = $2 WHERE id IN ( \
               SELECT id FROM invites {index} WHERE state IN ('scheduled', 'queued') AND due_at <= $3 \
               AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY due_at, id LIMIT $4 {lock}) \
             RETURNING id"
        );
        let until = now.checked_add(lease).unwrap_or(Timestamp::MAX);
        // Planned afresh on PostgreSQL, as batch statements are (see
        // `Tx::keeps_batch_plans`): a plan kept from when few invites were
        // pending sorts them all once thousands are.
        let persistent = matches!(self.backend, Backend::Sqlite(_));
        let mut ids: Vec<i64> = crate::on_pool!(self, pool => {
            sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
                .persistent(persistent)
                .bind(worker)
                .bind(to_ms(until))
                .bind(to_ms(now))
                .bind(limit)
                .fetch_all(pool)
                .await
        })?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// Checks the rules again for a claimed invite and, when it is still to
    /// be sent, records the attempt and returns the job. See the module doc.
    pub async fn prepare_delivery(
        &self,
        invite_id: i64,
        worker: &str,
        policy: &DeliveryPolicy,
        now: Timestamp,
    ) -> Result<Prepared> {
        let mut prepared = self
            .prepare_deliveries(&[invite_id], worker, policy, now)
            .await?;
        Ok(prepared.pop().map_or_else(
            || Prepared::Skipped {
                reason: "no longer claimed by this dispatcher".into(),
            },
            |(_, p)| p,
        ))
    }

    /// [`Store::prepare_delivery`] for several claimed invites in one
    /// transaction, with the writes of all the attempts made together (see
    /// `batch`): a transaction per invite, and a statement per row, were
    /// most of the dispatcher's time. The result is in the order of
    /// `invite_ids`. Patients are locked in ascending id order, so two
    /// dispatchers cannot deadlock on PostgreSQL. Any error rolls the whole
    /// batch back; the caller can then go one by one (see `Dispatcher`), so
    /// that one bad invite does not hold up the others.
    pub async fn prepare_deliveries(
        &self,
        invite_ids: &[i64],
        worker: &str,
        policy: &DeliveryPolicy,
        now: Timestamp,
    ) -> Result<Vec<(i64, Prepared)>> {
        let mut tx = self.begin_write().await?;
        let invites = tx.claimed_invites(invite_ids, worker, now).await?;
        let patients = tx
            .lock_patients(invites.iter().map(|i| i.patient_id).collect())
            .await?;
        let mut chunk = ChunkSoFar {
            texts: PlannedTexts::default(),
            cap: tx
                .cap_ledger(patients.keys().copied(), ClaimedInvites::StillQueued, now)
                .await?,
        };
        let mut practices = PracticeCache::default();
        let mut attempts = Vec::with_capacity(invites.len());
        let mut prepared = Vec::with_capacity(invite_ids.len());
        for invite in &invites {
            let patient = patients
                .get(&invite.patient_id)
                .ok_or(StoreError::NotFound("patient"))?;
            let practice = practices.get(&mut tx, invite.practice_id).await?;
            match tx
                .decide_delivery(invite, patient, practice, policy, &mut chunk, now)
                .await?
            {
                Decided::Attempt(attempt) => attempts.push(*attempt),
                Decided::Skipped(reason) => {
                    prepared.push((invite.id, Prepared::Skipped { reason }));
                }
            }
        }
        let jobs = tx.record_attempts(attempts, policy, now).await?;
        tx.commit().await?;
        prepared.extend(
            jobs.into_iter()
                .map(|job| (job.invite_id, Prepared::Send(job))),
        );
        Ok(in_order_of(invite_ids, prepared))
    }

    /// Records what the channels said (see `Finished`).
    pub async fn finish_delivery(
        &self,
        job: &DeliveryJob,
        report: &DeliveryReport,
        policy: &DeliveryPolicy,
        jitter: f64,
        now: Timestamp,
    ) -> Result<Finished> {
        let outcome = DeliveryOutcome {
            job: job.clone(),
            report: report.clone(),
            jitter,
        };
        let mut finished = self
            .finish_deliveries(std::slice::from_ref(&outcome), policy, now)
            .await?;
        finished.pop().ok_or(StoreError::NotFound("invite"))
    }

    /// [`Store::finish_delivery`] for several invites in one transaction of
    /// four statements; the result is in the order of `outcomes`. The
    /// invites are locked in ascending id order, and an error rolls the
    /// whole batch back.
    pub async fn finish_deliveries(
        &self,
        outcomes: &[DeliveryOutcome],
        policy: &DeliveryPolicy,
        now: Timestamp,
    ) -> Result<Vec<Finished>> {
        let mut tx = self.begin_write().await?;
        let ids: Vec<i64> = outcomes.iter().map(|o| o.job.invite_id).collect();
        let queued = tx.lock_queued_invites(&ids).await?;
        let retry = policy.retry();
        let mut settled = Settlement::default();
        let finished = outcomes
            .iter()
            .map(|o| {
                if queued.contains(&o.job.invite_id) {
                    settled.settle(&o.job, &o.report, &retry, o.jitter, now)
                } else {
                    // Another dispatcher finished it first (our lease ran out).
                    Finished::AlreadyDone
                }
            })
            .collect();
        tx.record_settlement(&settled, now).await?;
        tx.commit().await?;
        Ok(finished)
    }

    /// Invites that failed, and invites waiting for a retry, newest first.
    pub async fn failed_deliveries(&self, limit: i64) -> Result<Vec<FailedDelivery>> {
        let rows: Vec<FailedRow> = crate::on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT i.id AS invite_id, i.patient_id, p.first_name, p.last_name, i.state, i.created_at, \
                   i.attempts, i.due_at, i.failure_reason, \
                   (SELECT d.channel FROM deliveries d WHERE d.invite_id = i.id AND d.state <> 'sent' \
                      ORDER BY d.id DESC LIMIT 1) AS channel, \
                   (SELECT d.address FROM deliveries d WHERE d.invite_id = i.id AND d.state <> 'sent' \
                      ORDER BY d.id DESC LIMIT 1) AS address \
                 FROM invites i JOIN patients p ON p.id = i.patient_id \
                 WHERE i.state = 'failed' OR (i.state = 'queued' AND i.attempts > 0) \
                 ORDER BY i.id DESC LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter().map(FailedRow::into_failed).collect()
    }

    /// The attempts of one invite, per channel, for the timeline view.
    pub async fn invite_by_id(&self, invite_id: i64) -> Result<Option<Invite>> {
        let sql = format!("SELECT {INVITE_COLUMNS} FROM invites WHERE id = $1");
        let row: Option<InviteRow> = crate::on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(invite_id).fetch_optional(pool).await
        })?;
        row.map(InviteRow::into_invite).transpose()
    }

    /// Records an email opt-out (the unsubscribe page) for the patient the
    /// invite went to. Returns false for an unknown invite.
    pub async fn opt_out_email_by_invite(&self, invite_id: i64, now: Timestamp) -> Result<bool> {
        let Some(invite) = self.invite_by_id(invite_id).await? else {
            return Ok(false);
        };
        let mut tx = self.begin_write().await?;
        tx.lock_patient(invite.patient_id).await?;
        on_tx!(&mut tx, c => {
            sqlx::query("UPDATE patients SET email_opted_out = TRUE, updated_at = $1 WHERE id = $2")
                .bind(to_ms(now))
                .bind(invite.patient_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        let source = Source::new("patient", None).with_reference(format!("invite {invite_id}"));
        tx.timeline(
            invite.patient_id,
            now,
            "email_opted_out",
            json!({ "invite_id": invite_id }),
            &source,
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records an SMS opt-out (STOP) or opt-in (START) for every patient whose
    /// cell phone is `e164`. Returns how many patients it concerned.
    pub async fn set_sms_opt_out_by_phone(
        &self,
        e164: &str,
        opted_out: bool,
        now: Timestamp,
    ) -> Result<usize> {
        let ids: Vec<i64> = crate::on_pool!(self, pool => {
            sqlx::query_scalar("SELECT id FROM patients WHERE cell_phone = $1 ORDER BY id")
                .bind(e164)
                .fetch_all(pool)
                .await
        })?;
        let kind = if opted_out {
            "sms_opted_out"
        } else {
            "sms_opted_in"
        };
        let source = Source::new("sms", None).with_reference("inbound text");
        for &id in &ids {
            let mut tx = self.begin_write().await?;
            tx.lock_patient(id).await?;
            on_tx!(&mut tx, c => {
                sqlx::query("UPDATE patients SET sms_opted_out = $1, updated_at = $2 WHERE id = $3")
                    .bind(opted_out)
                    .bind(to_ms(now))
                    .bind(id)
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected())
            })?;
            tx.timeline(id, now, kind, json!({}), &source).await?;
            tx.commit().await?;
        }
        Ok(ids.len())
    }
}

#[derive(sqlx::FromRow)]
struct FailedRow {
    invite_id: i64,
    patient_id: i64,
    first_name: Option<String>,
    last_name: Option<String>,
    state: String,
    created_at: i64,
    attempts: i64,
    due_at: i64,
    failure_reason: Option<String>,
    channel: Option<String>,
    address: Option<String>,
}

impl FailedRow {
    fn into_failed(self) -> Result<FailedDelivery> {
        let retrying = self.state == "queued";
        Ok(FailedDelivery {
            invite_id: self.invite_id,
            patient_id: self.patient_id,
            first_name: self.first_name,
            last_name: self.last_name,
            state: if retrying {
                InviteState::Queued
            } else {
                InviteState::Failed
            },
            created_at: from_ms(self.created_at)?,
            attempts: self.attempts,
            next_retry_at: if retrying {
                Some(from_ms(self.due_at)?)
            } else {
                None
            },
            channel: self.channel,
            address: self.address,
            reason: self.failure_reason,
        })
    }
}

/// What one delivery attempt came to, for [`Store::finish_deliveries`].
#[derive(Debug, Clone)]
pub struct DeliveryOutcome {
    pub job: DeliveryJob,
    pub report: DeliveryReport,
    /// In [0, 1): spreads the retry time (see `enroll_core::RetryTiming::delay`).
    pub jitter: f64,
}

/// The trigger an auto invite was queued for, as the rules take it. Only
/// the kind matters to `decide_auto` today (see its doc), so an invite
/// without one (or with a key this version does not know) is decided as
/// for a chart added, the trigger every patient has.
fn queued_for(invite: &Invite) -> Trigger {
    invite
        .trigger
        .as_deref()
        .and_then(Trigger::from_key)
        .unwrap_or(Trigger::ChartAdded)
}

/// `prepared` sorted as `invite_ids`, with the invites that were no longer
/// claimed (absent from `prepared`) skipped.
fn in_order_of(invite_ids: &[i64], prepared: Vec<(i64, Prepared)>) -> Vec<(i64, Prepared)> {
    let mut by_id: HashMap<i64, Prepared> = prepared.into_iter().collect();
    invite_ids
        .iter()
        .map(|&id| {
            let prepared = by_id.remove(&id).unwrap_or_else(|| Prepared::Skipped {
                reason: "no longer claimed by this dispatcher".into(),
            });
            (id, prepared)
        })
        .collect()
}

/// The practices of one batch, read once each.
#[derive(Default)]
struct PracticeCache(HashMap<i64, Practice>);

impl PracticeCache {
    async fn get(&mut self, tx: &mut Tx, practice_id: i64) -> Result<&Practice> {
        Ok(match self.0.entry(practice_id) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(tx.practice(practice_id).await?)
            }
        })
    }
}

/// Texts this batch is about to send, per number: R13 counts them with the
/// ones already recorded, since the batch writes its deliveries at the end.
#[derive(Default)]
struct PlannedTexts(HashMap<String, i64>);

/// What the decisions made so far in one chunk changed, for the next ones:
/// texts planned (R13) and sends counted or uncounted (R7).
struct ChunkSoFar {
    texts: PlannedTexts,
    cap: CapLedger,
}

/// An invite that passed the rules again and goes out now.
struct Attempt {
    invite: Invite,
    first_name: String,
    practice_code: String,
    practice_name: String,
    preferred_language: Option<String>,
    email: Option<String>,
    cell_phone: Option<String>,
}

enum Decided {
    Attempt(Box<Attempt>),
    /// Nothing to send now (rescheduled, suppressed or cancelled: already
    /// written), and why.
    Skipped(String),
}

/// The rows [`Tx::record_attempts`] writes for one batch.
#[derive(Serialize)]
struct AttemptRow {
    id: i64,
    attempt: i64,
}

#[derive(Serialize)]
struct TokenRow {
    patient_id: i64,
    invite_id: i64,
    token_hash: String,
    sent_to: String,
    expires_at: i64,
}

#[derive(Serialize)]
struct DeliveryRow<'a> {
    invite_id: i64,
    patient_id: i64,
    channel: &'static str,
    address: &'a str,
    attempt: i64,
}

/// What a batch of outcomes changes, written by [`Tx::record_settlement`].
#[derive(Default)]
struct Settlement {
    deliveries: Vec<DeliveryResultRow>,
    invites: Vec<InviteResultRow>,
    timeline: Vec<TimelineRow>,
}

#[derive(Serialize)]
struct DeliveryResultRow {
    invite_id: i64,
    channel: &'static str,
    attempt: i64,
    state: &'static str,
    provider_id: Option<String>,
    error: Option<String>,
}

/// The invite after an attempt: `sent`, `failed`, or still `queued` with
/// a new `due_at` for the retry.
#[derive(Serialize)]
struct InviteResultRow {
    id: i64,
    state: &'static str,
    sent_at: Option<i64>,
    failure_reason: Option<String>,
    due_at: Option<i64>,
}

impl Settlement {
    /// Adds the rows of one attempt's outcome, as the rules decide it
    /// ([`enroll_core::attempt_outcome`]).
    fn settle(
        &mut self,
        job: &DeliveryJob,
        report: &DeliveryReport,
        retry: &RetryPolicy,
        jitter: f64,
        now: Timestamp,
    ) -> Finished {
        let results = report.results();
        for &(channel, result) in &results {
            self.deliveries.push(delivery_result(job, channel, result));
        }
        let answers: Vec<(Channel, ChannelAnswer)> = results
            .iter()
            .map(|&(channel, result)| (channel, result.answer()))
            .collect();
        match enroll_core::attempt_outcome(&answers, job.attempt, retry, jitter, now) {
            AttemptOutcome::Sent {
                channels,
                other_channel,
            } => {
                let detail = json!({ "invite_id": job.invite_id, "channels": channels, "attempt": job.attempt, "other_channel": other_channel });
                self.invite(job, "sent", Some(to_ms(now)), other_channel, None);
                self.line(job, "invite_sent", detail);
                Finished::Sent
            }
            AttemptOutcome::Retry { at, reason } => {
                let detail = json!({ "invite_id": job.invite_id, "attempt": job.attempt, "retry_at": at, "reason": reason });
                self.invite(job, "queued", None, Some(reason), Some(to_ms(at)));
                self.line(job, "invite_retry_scheduled", detail);
                Finished::Retry { at }
            }
            AttemptOutcome::Failed { reason } => {
                let detail =
                    json!({ "invite_id": job.invite_id, "attempt": job.attempt, "reason": reason });
                self.invite(job, "failed", None, Some(reason.clone()), None);
                self.line(job, "invite_failed", detail);
                Finished::Failed { reason }
            }
        }
    }

    fn invite(
        &mut self,
        job: &DeliveryJob,
        state: &'static str,
        sent_at: Option<i64>,
        failure_reason: Option<String>,
        due_at: Option<i64>,
    ) {
        self.invites.push(InviteResultRow {
            id: job.invite_id,
            state,
            sent_at,
            failure_reason,
            due_at,
        });
    }

    fn line(&mut self, job: &DeliveryJob, kind: &'static str, detail: serde_json::Value) {
        self.timeline.push(TimelineRow {
            patient_id: job.patient_id,
            kind,
            detail: detail.to_string(),
        });
    }
}

fn delivery_result(
    job: &DeliveryJob,
    channel: Channel,
    result: &ChannelResult,
) -> DeliveryResultRow {
    let (state, provider_id, error) = match result {
        ChannelResult::Sent { provider_id } => ("sent", provider_id.clone(), None),
        ChannelResult::Transient(e) => ("transient_failure", None, Some(e.clone())),
        ChannelResult::Permanent(e) => ("permanent_failure", None, Some(e.clone())),
    };
    DeliveryResultRow {
        invite_id: job.invite_id,
        channel: channel.key(),
        attempt: job.attempt,
        state,
        provider_id,
        error,
    }
}

impl Tx {
    /// The invites among `ids` still claimed by `worker`, sorted by patient
    /// then id (the order patients are locked in).
    async fn claimed_invites(
        &mut self,
        ids: &[i64],
        worker: &str,
        now: Timestamp,
    ) -> Result<Vec<Invite>> {
        // The state is checked here rather than in SQL: SQLite, without
        // statistics, would rather walk an index on the state through every
        // pending invite than look the ids up.
        let (ids_match, json) = self.id_list("id", ids.iter().copied())?;
        let persistent = self.keeps_batch_plans();
        let sql = format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE {ids_match} \
             AND claimed_by = $2 AND claimed_until >= $3 ORDER BY patient_id, id"
        );
        let rows: Vec<InviteRow> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).persistent(persistent).bind(&json).bind(worker).bind(to_ms(now)).fetch_all(c).await
        })?;
        let invites: Vec<Invite> = rows
            .into_iter()
            .map(InviteRow::into_invite)
            .collect::<Result<_>>()?;
        Ok(invites
            .into_iter()
            .filter(|invite| matches!(invite.state, InviteState::Scheduled | InviteState::Queued))
            .collect())
    }

    /// Reads and locks the patients, in ascending id order.
    async fn lock_patients(&mut self, mut ids: Vec<i64>) -> Result<HashMap<i64, Patient>> {
        ids.sort_unstable();
        ids.dedup();
        let (ids_match, json) = self.id_list("id", ids.iter().copied())?;
        let persistent = self.keeps_batch_plans();
        let sql = format!(
            "SELECT {PATIENT_COLUMNS} FROM patients WHERE {ids_match} ORDER BY id {}",
            self.row_lock()
        );
        let rows: Vec<PatientRow> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).persistent(persistent).bind(&json).fetch_all(c).await
        })?;
        rows.into_iter()
            .map(|row| row.into_patient().map(|p| (p.id, p)))
            .collect()
    }

    /// Locks the invites among `ids` (ascending) and returns those still
    /// `queued`: the others were finished by someone else.
    async fn lock_queued_invites(&mut self, ids: &[i64]) -> Result<HashSet<i64>> {
        let (ids_match, json) = self.id_list("id", ids.iter().copied())?;
        let persistent = self.keeps_batch_plans();
        let sql = format!(
            "SELECT id, state FROM invites WHERE {ids_match} ORDER BY id {}",
            self.row_lock()
        );
        let states: Vec<(i64, String)> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).persistent(persistent).bind(&json).fetch_all(c).await
        })?;
        Ok(states
            .into_iter()
            .filter(|(_, state)| state == "queued")
            .map(|(id, _)| id)
            .collect())
    }

    /// Checks the rules again for one claimed invite of a locked patient.
    /// What does not lead to a send now (rescheduled, suppressed, cancelled)
    /// is written here, at once: a later invite of the same patient in the
    /// batch must see it (R6, R7).
    async fn decide_delivery(
        &mut self,
        invite: &Invite,
        patient: &Patient,
        practice: &Practice,
        policy: &DeliveryPolicy,
        chunk: &mut ChunkSoFar,
        now: Timestamp,
    ) -> Result<Decided> {
        let ledger = &mut chunk.cap;
        let today = practice.schedule.local_date(now);
        let facts = patient.facts(today);
        let source = system();

        if invite.state == InviteState::Scheduled {
            // An auto invite waiting for the schedule: the whole decision
            // again, as if its trigger happened now (R4-R7), except that it
            // does not coalesce with itself.
            let mut history = self.send_history(patient.id, now).await?;
            history.auto_invite_pending = false;
            let rules = PracticeRules {
                auto_invites_on: practice.auto_invites_on,
                schedule: &practice.schedule,
            };
            let trigger = queued_for(invite);
            match decide_auto(&trigger, &facts, &rules, &history, now) {
                Decision::SendNow => {
                    self.count_now(invite.id, now).await?;
                    ledger.counted(patient.id, invite.id, now);
                }
                Decision::Queue { at } => {
                    self.reschedule(invite.id, at).await?;
                    let detail = json!({ "invite_id": invite.id, "due_at": at });
                    self.timeline(patient.id, now, "invite_rescheduled", detail, &source)
                        .await?;
                    return Ok(Decided::Skipped("outside the schedule".into()));
                }
                Decision::Suppressed { next_possible_at } => {
                    self.suppress_invite(invite.id, next_possible_at).await?;
                    let detail =
                        json!({ "invite_id": invite.id, "next_possible_at": next_possible_at });
                    self.timeline(patient.id, now, "invite_suppressed", detail, &source)
                        .await?;
                    return Ok(Decided::Skipped("cap reached".into()));
                }
                Decision::NotInvited { reasons } => {
                    let words: Vec<String> = reasons.iter().map(|r| r.message()).collect();
                    return self.cancel_one(invite, &words.join("; "), now).await;
                }
                Decision::Coalesced | Decision::Refused { .. } => {
                    return self.cancel_one(invite, "superseded", now).await;
                }
            }
        } else if let Decision::Refused { refusal } =
            decide_manual(&facts, &SendHistory::default(), now)
        {
            // Already counted: first whether the patient may still be
            // invited (activated, opted out, lost a field meanwhile...).
            ledger.uncounted(patient.id, invite.id);
            return self.cancel_one(invite, &refusal.message(), now).await;
        } else if let Some(next_possible_at) = ledger.over_cap(patient.id, invite.id, now) {
            // Then R7 against the whole history: counted when it was queued,
            // but a merge may since have added another chart's sends.
            ledger.uncounted(patient.id, invite.id);
            self.suppress_invite(invite.id, next_possible_at).await?;
            let detail = json!({ "invite_id": invite.id, "next_possible_at": next_possible_at });
            self.timeline(patient.id, now, "invite_suppressed", detail, &source)
                .await?;
            return Ok(Decided::Skipped("cap reached".into()));
        }

        let Some(valid) = check(&patient.demographics, today).valid else {
            ledger.uncounted(patient.id, invite.id);
            return self
                .cancel_one(invite, "required fields are missing", now)
                .await;
        };
        let (email, cell_phone) = self
            .channels(&valid, &facts, policy.sms_enabled, &mut chunk.texts, now)
            .await?;
        if email.is_none() && cell_phone.is_none() {
            // Email opted out and the number has had its texts for now (R13).
            let at = now.checked_add(SMS_DAY).unwrap_or(Timestamp::MAX);
            self.reschedule(invite.id, at).await?;
            let detail = json!({ "invite_id": invite.id, "due_at": at, "reason": "SMS limit for this number" });
            self.timeline(patient.id, now, "invite_rescheduled", detail, &source)
                .await?;
            return Ok(Decided::Skipped("SMS limit".into()));
        }
        Ok(Decided::Attempt(Box::new(Attempt {
            invite: invite.clone(),
            first_name: valid.first_name.as_str().to_string(),
            practice_code: practice.code.clone(),
            practice_name: practice.name.clone(),
            preferred_language: patient.preferred_language.clone(),
            email,
            cell_phone,
        })))
    }

    /// Records "attempt n is being made" for every invite of the batch, in
    /// five statements whatever the batch's size: earlier attempts cut off
    /// (`sending` rows left behind) are marked interrupted, attempts
    /// counted, activation tokens and `sending` deliveries written.
    async fn record_attempts(
        &mut self,
        attempts: Vec<Attempt>,
        policy: &DeliveryPolicy,
        now: Timestamp,
    ) -> Result<Vec<DeliveryJob>> {
        if attempts.is_empty() {
            return Ok(vec![]);
        }
        let resumed = self
            .mark_interrupted(attempts.iter().map(|a| a.invite.id), now)
            .await?;
        let expires_at = to_ms(
            now.checked_add(policy.link_lifetime)
                .unwrap_or(Timestamp::MAX),
        );
        let mut counted = Vec::with_capacity(attempts.len());
        let mut tokens = Vec::with_capacity(attempts.len());
        let mut jobs = Vec::with_capacity(attempts.len());
        for a in attempts {
            let attempt = a.invite.attempts + 1;
            let token = new_token();
            counted.push(AttemptRow {
                id: a.invite.id,
                attempt,
            });
            tokens.push(TokenRow {
                patient_id: a.invite.patient_id,
                invite_id: a.invite.id,
                token_hash: crate::hash_token(&token),
                sent_to: a
                    .email
                    .clone()
                    .or_else(|| a.cell_phone.clone())
                    .unwrap_or_default(),
                expires_at,
            });
            jobs.push(DeliveryJob {
                invite_id: a.invite.id,
                invite_created_at: a.invite.created_at,
                patient_id: a.invite.patient_id,
                attempt,
                first_name: a.first_name,
                practice_code: a.practice_code,
                practice_name: a.practice_name,
                preferred_language: a.preferred_language,
                email: a.email,
                cell_phone: a.cell_phone,
                activation_token: token,
                resumed_after_interruption: resumed.contains(&a.invite.id),
            });
        }
        self.count_attempts(&counted, now).await?;
        self.insert_tokens(&tokens, now).await?;
        self.insert_deliveries(&jobs, now).await?;
        let lines: Vec<TimelineRow> = jobs
            .iter()
            .filter(|job| job.resumed_after_interruption)
            .map(|job| TimelineRow {
                patient_id: job.patient_id,
                kind: "invite_resent_after_interruption",
                detail: json!({ "invite_id": job.invite_id, "attempt": job.attempt,
                    "note": "the previous attempt stopped after handing the invite over; sending again with the same Message-ID" })
                .to_string(),
            })
            .collect();
        self.timeline_rows(&lines, to_ms(now), &system()).await?;
        Ok(jobs)
    }

    /// The addresses this invite goes to: email unless opted out; the cell
    /// phone unless opted out or over the R13 limits for that number.
    async fn channels(
        &mut self,
        valid: &ValidFields,
        facts: &enroll_core::PatientFacts,
        sms_enabled: bool,
        planned: &mut PlannedTexts,
        now: Timestamp,
    ) -> Result<(Option<String>, Option<String>)> {
        let email = (!facts.email_opted_out).then(|| valid.email.as_str().to_string());
        let mut cell_phone = None;
        if let Some(phone) = &valid.cell_phone
            && sms_enabled
            && !facts.sms_opted_out
        {
            let phone = phone.as_str();
            if may_text(self.texts_counted(phone, planned, now).await?) {
                *planned.0.entry(phone.to_string()).or_default() += 1;
                cell_phone = Some(phone.to_string());
            }
        }
        Ok((email, cell_phone))
    }

    /// What R13 weighs for one number: the texts recorded in its day and
    /// week, each plus the ones this batch has already planned.
    async fn texts_counted(
        &mut self,
        phone: &str,
        planned: &PlannedTexts,
        now: Timestamp,
    ) -> Result<TextsToNumber> {
        let in_batch = planned.0.get(phone).copied().unwrap_or(0);
        Ok(TextsToNumber {
            last_day: in_batch + self.texts_to(phone, now - SMS_DAY).await?,
            last_week: in_batch + self.texts_to(phone, now - SMS_WEEK).await?,
        })
    }

    async fn texts_to(&mut self, phone: &str, since: Timestamp) -> Result<i64> {
        Ok(on_tx!(self, c => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM deliveries WHERE channel = 'sms' AND address = $1 \
                 AND state IN ('sending', 'sent', 'interrupted') AND started_at > $2",
            )
            .bind(phone)
            .bind(to_ms(since))
            .fetch_one(c)
            .await
        })?)
    }

    async fn count_now(&mut self, invite_id: i64, now: Timestamp) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query("UPDATE invites SET state = 'queued', counted_at = $1 WHERE id = $2")
                .bind(to_ms(now))
                .bind(invite_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    async fn reschedule(&mut self, invite_id: i64, at: Timestamp) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query("UPDATE invites SET due_at = $1, claimed_by = NULL, claimed_until = NULL WHERE id = $2")
                .bind(to_ms(at))
                .bind(invite_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    async fn cancel_one(
        &mut self,
        invite: &Invite,
        reason: &str,
        now: Timestamp,
    ) -> Result<Decided> {
        on_tx!(self, c => {
            sqlx::query(
                "UPDATE invites SET state = 'cancelled', failure_reason = $1, claimed_by = NULL, \
                 claimed_until = NULL WHERE id = $2",
            )
            .bind(reason)
            .bind(invite.id)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        let detail = json!({ "invite_id": invite.id, "reason": reason });
        self.timeline(
            invite.patient_id,
            now,
            "invite_cancelled",
            detail,
            &system(),
        )
        .await?;
        Ok(Decided::Skipped(reason.to_string()))
    }

    /// Marks `sending` rows of earlier attempts as interrupted; returns the
    /// invites that had any.
    async fn mark_interrupted(
        &mut self,
        invite_ids: impl Iterator<Item = i64>,
        now: Timestamp,
    ) -> Result<HashSet<i64>> {
        let (ids_match, json) = self.id_list("invite_id", invite_ids)?;
        let persistent = self.keeps_batch_plans();
        let sql = format!(
            "UPDATE deliveries SET state = 'interrupted', finished_at = $2 \
             WHERE state = 'sending' AND {ids_match} RETURNING invite_id"
        );
        let interrupted: Vec<i64> = on_tx!(self, c => {
            sqlx::query_scalar(AssertSqlSafe(sql.as_str())).persistent(persistent).bind(&json).bind(to_ms(now)).fetch_all(c).await
        })?;
        Ok(interrupted.into_iter().collect())
    }

    async fn count_attempts(&mut self, rows: &[AttemptRow], now: Timestamp) -> Result<()> {
        self.write_rows(
            &[("id", Col::Int), ("attempt", Col::Int)],
            rows,
            Some(to_ms(now)),
            |v| {
                let (table, only_listed) = (v.table(), v.restrict("invites.id", "id"));
                format!(
                    "UPDATE invites SET attempts = v.attempt, last_attempt_at = $2 FROM {table} \
                     WHERE invites.id = v.id AND {only_listed}"
                )
            },
        )
        .await
    }

    async fn insert_tokens(&mut self, rows: &[TokenRow], now: Timestamp) -> Result<()> {
        self.write_rows(
            &[
                ("patient_id", Col::Int),
                ("invite_id", Col::Int),
                ("token_hash", Col::Text),
                ("sent_to", Col::Text),
                ("expires_at", Col::Int),
            ],
            rows,
            Some(to_ms(now)),
            |v| {
                format!(
                    "INSERT INTO activation_tokens \
                     (patient_id, invite_id, token_hash, sent_to, created_at, expires_at) \
                     SELECT v.patient_id, v.invite_id, v.token_hash, v.sent_to, $2, v.expires_at \
                     FROM {}",
                    v.table()
                )
            },
        )
        .await
    }

    async fn insert_deliveries(&mut self, jobs: &[DeliveryJob], now: Timestamp) -> Result<()> {
        let mut rows = Vec::with_capacity(jobs.len());
        for job in jobs {
            for (channel, address) in [
                (Channel::Email, &job.email),
                (Channel::Sms, &job.cell_phone),
            ] {
                if let Some(address) = address {
                    rows.push(DeliveryRow {
                        invite_id: job.invite_id,
                        patient_id: job.patient_id,
                        channel: channel.key(),
                        address,
                        attempt: job.attempt,
                    });
                }
            }
        }
        self.write_rows(
            &[
                ("invite_id", Col::Int),
                ("patient_id", Col::Int),
                ("channel", Col::Text),
                ("address", Col::Text),
                ("attempt", Col::Int),
            ],
            &rows,
            Some(to_ms(now)),
            |v| {
                format!(
                    "INSERT INTO deliveries \
                     (invite_id, patient_id, channel, address, attempt, state, started_at) \
                     SELECT v.invite_id, v.patient_id, v.channel, v.address, v.attempt, 'sending', $2 \
                     FROM {}",
                    v.table()
                )
            },
        )
        .await
    }

    /// Writes what [`Settlement::settle`] decided for a batch: the channels'
    /// results, the invites' new states (the claim is released in every
    /// outcome), their timeline lines.
    async fn record_settlement(&mut self, settled: &Settlement, now: Timestamp) -> Result<()> {
        self.write_rows(
            &[
                ("invite_id", Col::Int),
                ("channel", Col::Text),
                ("attempt", Col::Int),
                ("state", Col::Text),
                ("provider_id", Col::Text),
                ("error", Col::Text),
            ],
            &settled.deliveries,
            Some(to_ms(now)),
            |v| {
                let (table, only_listed) =
                    (v.table(), v.restrict("deliveries.invite_id", "invite_id"));
                format!(
                    "UPDATE deliveries SET state = v.state, provider_id = v.provider_id, \
                     error = v.error, finished_at = $2 FROM {table} \
                     WHERE deliveries.invite_id = v.invite_id AND deliveries.channel = v.channel \
                     AND deliveries.attempt = v.attempt AND deliveries.state = 'sending' \
                     AND {only_listed}"
                )
            },
        )
        .await?;
        self.write_rows(
            &[
                ("id", Col::Int),
                ("state", Col::Text),
                ("sent_at", Col::Int),
                ("failure_reason", Col::Text),
                ("due_at", Col::Int),
            ],
            &settled.invites,
            None,
            |v| {
                let (table, only_listed) = (v.table(), v.restrict("invites.id", "id"));
                format!(
                    "UPDATE invites SET state = v.state, sent_at = v.sent_at, \
                     failure_reason = v.failure_reason, due_at = COALESCE(v.due_at, invites.due_at), \
                     claimed_by = NULL, claimed_until = NULL \
                     FROM {table} WHERE invites.id = v.id AND {only_listed}"
                )
            },
        )
        .await?;
        self.timeline_rows(&settled.timeline, to_ms(now), &system())
            .await
    }
}

/// 128 random bits (R10's minimum), base64url: 22 characters, so that the
/// activation link fits in a 160-character text (R13).
fn new_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
