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

use enroll_core::{
    Decision, PracticeRules, SendHistory, Trigger, ValidFields, check, decide_auto, decide_manual,
};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use serde_json::json;
use sqlx::AssertSqlSafe;

use crate::enrollment::{Tx, local_today, on_tx};
use crate::model::{INVITE_COLUMNS, InviteRow};
use crate::{Backend, Invite, InviteState, Result, Source, Store, StoreError, from_ms, to_ms};

/// How the dispatcher retries and how long its claims and links last.
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
        DeliveryPolicy {
            lease: SignedDuration::from_mins(5),
            max_attempts: 8,
            first_retry: SignedDuration::from_secs(30),
            longest_retry: SignedDuration::from_hours(1),
            link_lifetime: SignedDuration::from_hours(30 * 24),
            sms_enabled: false,
        }
    }
}

impl DeliveryPolicy {
    /// Exponential backoff after attempt `attempt` (1-based), with `jitter`
    /// in [0, 1) spreading retries over +-20% so that many invites failing
    /// together (an SMTP server down) do not come back in one burst.
    pub fn retry_delay(&self, attempt: i64, jitter: f64) -> SignedDuration {
        let doublings = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let base =
            self.first_retry.as_secs_f64() * f64::from(2u32.saturating_pow(doublings.min(20)));
        let capped = base.min(self.longest_retry.as_secs_f64());
        let spread = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
        SignedDuration::from_secs_f64(capped * spread)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    fn key(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
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

/// R13: at most one text a day and three a week to one number.
const SMS_PER_DAY: i64 = 1;
const SMS_PER_WEEK: i64 = 3;

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
        let lock = match self.backend {
            Backend::Sqlite(_) => "",
            Backend::Postgres(_) => "FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE invites SET claimed_by = $1, claimed_until = $2 WHERE id IN ( \
               SELECT id FROM invites WHERE state IN ('scheduled', 'queued') AND due_at <= $3 \
               AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY due_at, id LIMIT $4 {lock}) \
             RETURNING id"
        );
        let until = now.checked_add(lease).unwrap_or(Timestamp::MAX);
        let mut ids: Vec<i64> = crate::on_pool!(self, pool => {
            sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
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
        let mut tx = self.begin_write().await?;
        let Some(invite) = tx.claimed_invite(invite_id, worker, now).await? else {
            tx.commit().await?;
            return Ok(Prepared::Skipped {
                reason: "no longer claimed by this dispatcher".into(),
            });
        };
        tx.lock_patient(invite.patient_id).await?;
        let prepared = tx.prepare_locked(&invite, policy, now).await?;
        tx.commit().await?;
        Ok(prepared)
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
        let mut tx = self.begin_write().await?;
        tx.lock_patient(job.patient_id).await?;
        let state: Option<String> = on_tx!(&mut tx, c => {
            sqlx::query_scalar("SELECT state FROM invites WHERE id = $1").bind(job.invite_id).fetch_optional(c).await
        })?;
        if state.as_deref() != Some("queued") {
            tx.commit().await?;
            return Ok(Finished::AlreadyDone);
        }
        for (channel, result) in [(Channel::Email, &report.email), (Channel::Sms, &report.sms)] {
            if let Some(result) = result {
                tx.record_channel_result(job, channel, result, now).await?;
            }
        }
        let finished = tx.settle_invite(job, report, policy, jitter, now).await?;
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

/// The trigger an auto invite was queued for, as the rules take it. Only
/// the kind matters to `decide_auto` today (see its doc).
fn trigger_from_key(key: Option<&str>) -> Trigger {
    match key {
        Some("new_encounter") => Trigger::NewEncounter,
        Some("new_appointment") => Trigger::NewAppointment,
        Some("required_fields_changed") => Trigger::RequiredFieldsChanged { fields: vec![] },
        _ => Trigger::ChartAdded,
    }
}

impl Tx {
    async fn claimed_invite(
        &mut self,
        invite_id: i64,
        worker: &str,
        now: Timestamp,
    ) -> Result<Option<Invite>> {
        let sql = format!(
            "SELECT {INVITE_COLUMNS} FROM invites WHERE id = $1 AND claimed_by = $2 AND claimed_until >= $3 \
             AND state IN ('scheduled', 'queued')"
        );
        let row: Option<InviteRow> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(invite_id).bind(worker).bind(to_ms(now)).fetch_optional(c).await
        })?;
        row.map(InviteRow::into_invite).transpose()
    }

    async fn prepare_locked(
        &mut self,
        invite: &Invite,
        policy: &DeliveryPolicy,
        now: Timestamp,
    ) -> Result<Prepared> {
        let patient = self.patient(invite.patient_id).await?;
        let practice = self.practice(invite.practice_id).await?;
        let today = local_today(&practice, now)?;
        let facts = patient.facts(today);
        let source = system();

        if invite.state == InviteState::Scheduled {
            // An auto invite waiting for the schedule: the whole decision
            // again, as if its trigger happened now (R4-R7), except that it
            // does not coalesce with itself.
            let schedule = practice.schedule.validate().map_err(|e| {
                StoreError::Corrupt(format!("practice {} schedule: {e}", practice.id))
            })?;
            let mut history = self.send_history(patient.id, now).await?;
            history.auto_invite_pending = false;
            let rules = PracticeRules {
                auto_invites_on: practice.auto_invites_on,
                schedule: &schedule,
            };
            let trigger = trigger_from_key(invite.trigger.as_deref());
            match decide_auto(&trigger, &facts, &rules, &history, now) {
                Decision::SendNow => self.count_now(invite.id, now).await?,
                Decision::Queue { at } => {
                    self.reschedule(invite.id, at).await?;
                    let detail = json!({ "invite_id": invite.id, "due_at": at });
                    self.timeline(patient.id, now, "invite_rescheduled", detail, &source)
                        .await?;
                    return Ok(Prepared::Skipped {
                        reason: "outside the schedule".into(),
                    });
                }
                Decision::Suppressed { next_possible_at } => {
                    self.suppress(invite.id, next_possible_at).await?;
                    let detail =
                        json!({ "invite_id": invite.id, "next_possible_at": next_possible_at });
                    self.timeline(patient.id, now, "invite_suppressed", detail, &source)
                        .await?;
                    return Ok(Prepared::Skipped {
                        reason: "cap reached".into(),
                    });
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
            // Already counted: only whether the patient may still be invited
            // matters (activated, opted out, lost a field meanwhile...).
            return self.cancel_one(invite, &refusal.message(), now).await;
        }

        let Some(valid) = check(&patient.demographics, today).valid else {
            return self
                .cancel_one(invite, "required fields are missing", now)
                .await;
        };
        let (email, cell_phone) = self
            .channels(&valid, &facts, policy.sms_enabled, now)
            .await?;
        if email.is_none() && cell_phone.is_none() {
            // Email opted out and the number has had its texts for now (R13).
            let at = now
                .checked_add(SignedDuration::from_hours(24))
                .unwrap_or(Timestamp::MAX);
            self.reschedule(invite.id, at).await?;
            let detail = json!({ "invite_id": invite.id, "due_at": at, "reason": "SMS limit for this number" });
            self.timeline(patient.id, now, "invite_rescheduled", detail, &source)
                .await?;
            return Ok(Prepared::Skipped {
                reason: "SMS limit".into(),
            });
        }
        let resumed = self.mark_interrupted(invite.id, now).await?;
        let attempt = invite.attempts + 1;
        on_tx!(self, c => {
            sqlx::query("UPDATE invites SET attempts = $1, last_attempt_at = $2 WHERE id = $3")
                .bind(attempt)
                .bind(to_ms(now))
                .bind(invite.id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        let token = new_token();
        let sent_to = email
            .clone()
            .or_else(|| cell_phone.clone())
            .unwrap_or_default();
        self.insert_token(invite, &token, &sent_to, now, policy.link_lifetime)
            .await?;
        for (channel, address) in [(Channel::Email, &email), (Channel::Sms, &cell_phone)] {
            if let Some(address) = address {
                self.insert_delivery(invite, channel, address, attempt, now)
                    .await?;
            }
        }
        if resumed {
            let detail = json!({ "invite_id": invite.id, "attempt": attempt,
                "note": "the previous attempt stopped after handing the invite over; sending again with the same Message-ID" });
            self.timeline(
                patient.id,
                now,
                "invite_resent_after_interruption",
                detail,
                &source,
            )
            .await?;
        }
        Ok(Prepared::Send(DeliveryJob {
            invite_id: invite.id,
            invite_created_at: invite.created_at,
            patient_id: patient.id,
            attempt,
            first_name: valid.first_name.as_str().to_string(),
            practice_code: practice.code,
            practice_name: practice.name,
            preferred_language: patient.preferred_language,
            email,
            cell_phone,
            activation_token: token,
            resumed_after_interruption: resumed,
        }))
    }

    /// The addresses this invite goes to: email unless opted out; the cell
    /// phone unless opted out or over the R13 limits for that number.
    async fn channels(
        &mut self,
        valid: &ValidFields,
        facts: &enroll_core::PatientFacts,
        sms_enabled: bool,
        now: Timestamp,
    ) -> Result<(Option<String>, Option<String>)> {
        let email = (!facts.email_opted_out).then(|| valid.email.as_str().to_string());
        let mut cell_phone = None;
        if let Some(phone) = &valid.cell_phone
            && sms_enabled
            && !facts.sms_opted_out
        {
            let day = self
                .texts_to(phone.as_str(), now - SignedDuration::from_hours(24))
                .await?;
            let week = self
                .texts_to(phone.as_str(), now - SignedDuration::from_hours(7 * 24))
                .await?;
            if day < SMS_PER_DAY && week < SMS_PER_WEEK {
                cell_phone = Some(phone.as_str().to_string());
            }
        }
        Ok((email, cell_phone))
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

    async fn suppress(&mut self, invite_id: i64, next_possible_at: Timestamp) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query(
                "UPDATE invites SET state = 'suppressed', next_possible_at = $1, claimed_by = NULL, \
                 claimed_until = NULL WHERE id = $2",
            )
            .bind(to_ms(next_possible_at))
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
    ) -> Result<Prepared> {
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
        Ok(Prepared::Skipped {
            reason: reason.to_string(),
        })
    }

    /// Marks `sending` rows of an earlier attempt as interrupted; true if any.
    async fn mark_interrupted(&mut self, invite_id: i64, now: Timestamp) -> Result<bool> {
        let changed = on_tx!(self, c => {
            sqlx::query(
                "UPDATE deliveries SET state = 'interrupted', finished_at = $1 \
                 WHERE invite_id = $2 AND state = 'sending'",
            )
            .bind(to_ms(now))
            .bind(invite_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(changed > 0)
    }

    async fn insert_token(
        &mut self,
        invite: &Invite,
        token: &str,
        sent_to: &str,
        now: Timestamp,
        lifetime: SignedDuration,
    ) -> Result<()> {
        let expires = now.checked_add(lifetime).unwrap_or(Timestamp::MAX);
        on_tx!(self, c => {
            sqlx::query(
                "INSERT INTO activation_tokens (patient_id, invite_id, token_hash, sent_to, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(invite.patient_id)
            .bind(invite.id)
            .bind(crate::hash_token(token))
            .bind(sent_to)
            .bind(to_ms(now))
            .bind(to_ms(expires))
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    async fn insert_delivery(
        &mut self,
        invite: &Invite,
        channel: Channel,
        address: &str,
        attempt: i64,
        now: Timestamp,
    ) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query(
                "INSERT INTO deliveries (invite_id, patient_id, channel, address, attempt, state, started_at) \
                 VALUES ($1, $2, $3, $4, $5, 'sending', $6)",
            )
            .bind(invite.id)
            .bind(invite.patient_id)
            .bind(channel.key())
            .bind(address)
            .bind(attempt)
            .bind(to_ms(now))
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    async fn record_channel_result(
        &mut self,
        job: &DeliveryJob,
        channel: Channel,
        result: &ChannelResult,
        now: Timestamp,
    ) -> Result<()> {
        let (state, provider_id, error) = match result {
            ChannelResult::Sent { provider_id } => ("sent", provider_id.as_deref(), None),
            ChannelResult::Transient(e) => ("transient_failure", None, Some(e.as_str())),
            ChannelResult::Permanent(e) => ("permanent_failure", None, Some(e.as_str())),
        };
        on_tx!(self, c => {
            sqlx::query(
                "UPDATE deliveries SET state = $1, provider_id = $2, error = $3, finished_at = $4 \
                 WHERE invite_id = $5 AND channel = $6 AND attempt = $7 AND state = 'sending'",
            )
            .bind(state)
            .bind(provider_id)
            .bind(error)
            .bind(to_ms(now))
            .bind(job.invite_id)
            .bind(channel.key())
            .bind(job.attempt)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Sent when any channel took it; retried while a channel failed for a
    /// passing reason; failed (not counted, R7) when every channel refused
    /// for good or the attempts ran out.
    async fn settle_invite(
        &mut self,
        job: &DeliveryJob,
        report: &DeliveryReport,
        policy: &DeliveryPolicy,
        jitter: f64,
        now: Timestamp,
    ) -> Result<Finished> {
        let results: Vec<(Channel, &ChannelResult)> =
            [(Channel::Email, &report.email), (Channel::Sms, &report.sms)]
                .into_iter()
                .filter_map(|(channel, r)| r.as_ref().map(|r| (channel, r)))
                .collect();
        let sent: Vec<Channel> = results
            .iter()
            .filter(|(_, r)| matches!(r, ChannelResult::Sent { .. }))
            .map(|(c, _)| *c)
            .collect();
        let transient = results.iter().find_map(|(c, r)| match r {
            ChannelResult::Transient(e) => Some(format!("{}: {e}", c.key())),
            _ => None,
        });
        let permanent = results.iter().find_map(|(c, r)| match r {
            ChannelResult::Permanent(e) => Some(format!("{}: {e}", c.key())),
            _ => None,
        });
        let source = system();
        if !sent.is_empty() {
            let note = permanent.clone().or(transient.clone());
            self.set_final(job.invite_id, "sent", Some(now), note.as_deref())
                .await?;
            let detail = json!({ "invite_id": job.invite_id, "channels": sent, "attempt": job.attempt, "other_channel": note });
            self.timeline(job.patient_id, now, "invite_sent", detail, &source)
                .await?;
            return Ok(Finished::Sent);
        }
        if let Some(reason) = transient
            && job.attempt < policy.max_attempts
        {
            let at = now
                .checked_add(policy.retry_delay(job.attempt, jitter))
                .unwrap_or(Timestamp::MAX);
            on_tx!(self, c => {
                sqlx::query(
                    "UPDATE invites SET due_at = $1, failure_reason = $2, claimed_by = NULL, claimed_until = NULL \
                     WHERE id = $3",
                )
                .bind(to_ms(at))
                .bind(&reason)
                .bind(job.invite_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
            })?;
            let detail = json!({ "invite_id": job.invite_id, "attempt": job.attempt, "retry_at": at, "reason": reason });
            self.timeline(
                job.patient_id,
                now,
                "invite_retry_scheduled",
                detail,
                &source,
            )
            .await?;
            return Ok(Finished::Retry { at });
        }
        let reason = match (
            permanent,
            results
                .iter()
                .any(|(_, r)| matches!(r, ChannelResult::Transient(_))),
        ) {
            (Some(p), false) => p,
            (p, _) => format!(
                "gave up after {} attempts{}",
                job.attempt,
                p.map(|p| format!(" ({p})")).unwrap_or_default()
            ),
        };
        self.set_final(job.invite_id, "failed", None, Some(&reason))
            .await?;
        let detail =
            json!({ "invite_id": job.invite_id, "attempt": job.attempt, "reason": reason });
        self.timeline(job.patient_id, now, "invite_failed", detail, &source)
            .await?;
        Ok(Finished::Failed { reason })
    }

    async fn set_final(
        &mut self,
        invite_id: i64,
        state: &str,
        sent_at: Option<Timestamp>,
        note: Option<&str>,
    ) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query(
                "UPDATE invites SET state = $1, sent_at = $2, failure_reason = $3, claimed_by = NULL, \
                 claimed_until = NULL WHERE id = $4",
            )
            .bind(state)
            .bind(sent_at.map(to_ms))
            .bind(note)
            .bind(invite_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_exponentially_within_bounds() {
        let policy = DeliveryPolicy::default();
        let cases = [
            (1, 0.5, 30.0),
            (2, 0.5, 60.0),
            (3, 0.5, 120.0),
            (20, 0.5, 3600.0),
            (1, 0.0, 24.0),
            (1, 0.999_999, 36.0),
        ];
        for (attempt, jitter, seconds) in cases {
            let delay = policy.retry_delay(attempt, jitter).as_secs_f64();
            assert!(
                (delay - seconds).abs() < 0.01,
                "attempt {attempt} jitter {jitter}: {delay}"
            );
        }
    }
}
