//! After the channels answered: the outcome of each attempt (sent, retry,
//! failed) as the rules decide it, written for a batch at once.

use enroll_core::{AttemptOutcome, ChannelAnswer, RetryPolicy};
use jiff::Timestamp;
use serde::Serialize;
use sqlx::AssertSqlSafe;
use std::collections::HashMap;

use super::{
    Channel, ChannelResult, DeliveryJob, DeliveryOutcome, DeliveryPolicy, DeliveryReport, Finished,
    system,
};
use crate::batch::BatchRow;
use crate::engine::Col;
use crate::timeline::{TimelineEvent, TimelineRow};
use crate::tx::{Tx, on_tx};
use crate::{Result, Store, StoreError, to_ms};

impl Store {
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
        // Patients before invites, the order every other writer takes:
        // an invite's change updates its patient's row (the summary the
        // dashboard counts, migration 0016), and taking the patient's lock
        // only then could deadlock with a writer that holds it.
        tx.lock_patient_rows(outcomes.iter().map(|o| o.job.patient_id))
            .await?;
        let ids: Vec<i64> = outcomes.iter().map(|o| o.job.invite_id).collect();
        let queued = tx.lock_queued_invites(&ids).await?;
        let retry = policy.retry();
        let mut settled = Settlement::default();
        let finished = outcomes
            .iter()
            .map(|o| {
                if queued.get(&o.job.invite_id) == Some(&o.job.attempt) {
                    settled.settle(&o.job, &o.report, &retry, o.jitter, now)
                } else {
                    // Our claim is gone: another dispatcher finished the
                    // invite, or took it over after our lease ran out and
                    // prepared its own attempt. The invite is its to
                    // settle; only what our channels did is written, on our
                    // attempt's own rows.
                    settled.channels_only(&o.job, &o.report);
                    Finished::AlreadyDone
                }
            })
            .collect();
        tx.record_settlement(&settled, now).await?;
        tx.commit().await?;
        Ok(finished)
    }
}

impl Tx {
    /// Locks the invites among `ids` (ascending) and returns those still
    /// `queued`, each with its latest prepared attempt: the others were
    /// finished by someone else.
    async fn lock_queued_invites(&mut self, ids: &[i64]) -> Result<HashMap<i64, i64>> {
        let (ids_match, json) = self.id_list("id", ids.iter().copied())?;
        let persistent = self.keeps_batch_plans();
        let sql = format!(
            "SELECT id, state, attempts FROM invites WHERE {ids_match} ORDER BY id {}",
            self.row_lock()
        );
        let states: Vec<(i64, String, i64)> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).persistent(persistent).bind(&json).fetch_all(c).await
        })?;
        Ok(states
            .into_iter()
            .filter(|(_, state, _)| state == "queued")
            .map(|(id, _, attempts)| (id, attempts))
            .collect())
    }

    /// Writes what [`Settlement::settle`] decided for a batch: the channels'
    /// results, the invites' new states (the claim is released in every
    /// outcome), their timeline lines.
    async fn record_settlement(&mut self, settled: &Settlement, now: Timestamp) -> Result<()> {
        self.write_rows(&settled.deliveries, Some(to_ms(now)), |v| {
            let (table, only_listed) = (v.table(), v.restrict("deliveries.invite_id", "invite_id"));
            format!(
                "UPDATE deliveries SET state = v.state, provider_id = v.provider_id, \
                     error = v.error, finished_at = $2 FROM {table} \
                     WHERE deliveries.invite_id = v.invite_id AND deliveries.channel = v.channel \
                     AND deliveries.attempt = v.attempt \
                     AND deliveries.state IN ('sending', 'interrupted') \
                     AND {only_listed}"
            )
        })
        .await?;
        self.write_rows(
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

impl DeliveryReport {
    /// The channels that were tried, email first.
    fn results(&self) -> Vec<(Channel, &ChannelResult)> {
        [(Channel::Email, &self.email), (Channel::Sms, &self.sms)]
            .into_iter()
            .filter_map(|(channel, result)| result.as_ref().map(|r| (channel, r)))
            .collect()
    }
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

impl BatchRow for DeliveryResultRow {
    const COLUMNS: &'static [(&'static str, Col)] = &[
        ("invite_id", Col::Int),
        ("channel", Col::Text),
        ("attempt", Col::Int),
        ("state", Col::Text),
        ("provider_id", Col::Text),
        ("error", Col::Text),
    ];
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

impl BatchRow for InviteResultRow {
    const COLUMNS: &'static [(&'static str, Col)] = &[
        ("id", Col::Int),
        ("state", Col::Text),
        ("sent_at", Col::Int),
        ("failure_reason", Col::Text),
        ("due_at", Col::Int),
    ];
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
        self.channels_only(job, report);
        let answers: Vec<(Channel, ChannelAnswer)> = results
            .iter()
            .map(|&(channel, result)| (channel, result.answer()))
            .collect();
        match enroll_core::attempt_outcome(&answers, job.attempt, retry, jitter, now) {
            AttemptOutcome::Sent {
                channels,
                other_channel,
            } => {
                self.line(
                    job,
                    &TimelineEvent::InviteSent {
                        invite_id: job.invite_id,
                        channels: &channels,
                        attempt: job.attempt,
                        other_channel: other_channel.as_deref(),
                    },
                );
                self.invite(job, "sent", Some(to_ms(now)), other_channel, None);
                Finished::Sent
            }
            AttemptOutcome::Retry { at, reason } => {
                self.line(
                    job,
                    &TimelineEvent::InviteRetryScheduled {
                        invite_id: job.invite_id,
                        attempt: job.attempt,
                        retry_at: at,
                        reason: &reason,
                    },
                );
                self.invite(job, "queued", None, Some(reason), Some(to_ms(at)));
                Finished::Retry { at }
            }
            AttemptOutcome::Failed { reason } => {
                self.line(
                    job,
                    &TimelineEvent::InviteFailed {
                        invite_id: job.invite_id,
                        attempt: job.attempt,
                        reason: &reason,
                    },
                );
                self.invite(job, "failed", None, Some(reason.clone()), None);
                Finished::Failed { reason }
            }
        }
    }

    /// The attempt's own delivery rows, without touching the invite. They
    /// are written while still `sending`, or `interrupted` (a later
    /// attempt found this one unfinished: now we know how it ended).
    fn channels_only(&mut self, job: &DeliveryJob, report: &DeliveryReport) {
        for (channel, result) in report.results() {
            self.deliveries.push(delivery_result(job, channel, result));
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

    fn line(&mut self, job: &DeliveryJob, event: &TimelineEvent<'_>) {
        self.timeline.push(TimelineRow::new(job.patient_id, event));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::assert_columns;

    #[test]
    fn settlement_rows_serialize_to_their_columns() {
        assert_columns(&DeliveryResultRow {
            invite_id: 1,
            channel: "sms",
            attempt: 1,
            state: "sent",
            provider_id: None,
            error: None,
        });
        assert_columns(&InviteResultRow {
            id: 1,
            state: "queued",
            sent_at: None,
            failure_reason: None,
            due_at: Some(2),
        });
    }
}
