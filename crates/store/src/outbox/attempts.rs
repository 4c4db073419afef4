//! "Attempt n is being made": interrupted attempts, attempt counts,
//! activation tokens (one per delivery, reused by its retries) and `sending` deliveries, a statement each per chunk.

use jiff::Timestamp;
use serde::Serialize;
use sqlx::AssertSqlSafe;
use std::collections::HashSet;

use super::decide::Attempt;
use super::{Channel, DeliveryJob, DeliveryPolicy, system};
use crate::activation::derive_token;
use crate::batch::BatchRow;
use crate::engine::Col;
use crate::timeline::{TimelineEvent, TimelineRow};
use crate::tx::{Tx, on_tx};
use crate::{Result, to_ms};

impl Tx {
    /// Records "attempt n is being made" for every invite of the batch, in
    /// five statements whatever the batch's size: earlier attempts cut off
    /// (`sending` rows left behind) are marked interrupted, attempts
    /// counted, activation tokens and `sending` deliveries written.
    pub(super) async fn record_attempts(
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
        let key = self.token_key().await?;
        for a in attempts {
            let attempt = a.invite.attempts + 1;
            let sent_to = a
                .email
                .clone()
                .or_else(|| a.cell_phone.clone())
                .unwrap_or_default();
            // A retry derives the same token as the attempt before it (R10:
            // one link per delivery); its row is already there.
            let token = derive_token(&key, a.invite.id, &sent_to)?;
            counted.push(AttemptRow {
                id: a.invite.id,
                attempt,
            });
            tokens.push(TokenRow {
                patient_id: a.invite.patient_id,
                invite_id: a.invite.id,
                token_hash: crate::hash_token(&token),
                sent_to,
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
            .map(|job| {
                let resent = TimelineEvent::InviteResentAfterInterruption {
                    invite_id: job.invite_id,
                    attempt: job.attempt,
                };
                TimelineRow::new(job.patient_id, &resent)
            })
            .collect();
        self.timeline_rows(&lines, to_ms(now), &system()).await?;
        Ok(jobs)
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
        self.write_rows(rows, Some(to_ms(now)), |v| {
            let (table, only_listed) = (v.table(), v.restrict("invites.id", "id"));
            format!(
                "UPDATE invites SET attempts = v.attempt, last_attempt_at = $2 FROM {table} \
                     WHERE invites.id = v.id AND {only_listed}"
            )
        })
        .await
    }

    async fn insert_tokens(&mut self, rows: &[TokenRow], now: Timestamp) -> Result<()> {
        self.write_rows(rows, Some(to_ms(now)), |v| {
            format!(
                "INSERT INTO activation_tokens \
                     (patient_id, invite_id, token_hash, sent_to, created_at, expires_at) \
                     SELECT v.patient_id, v.invite_id, v.token_hash, v.sent_to, $2, v.expires_at \
                     FROM {} WHERE TRUE ON CONFLICT (token_hash) DO NOTHING",
                v.table()
            )
        })
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
}

/// The rows [`Tx::record_attempts`] writes for one batch.
#[derive(Serialize)]
struct AttemptRow {
    id: i64,
    attempt: i64,
}

impl BatchRow for AttemptRow {
    const COLUMNS: &'static [(&'static str, Col)] = &[("id", Col::Int), ("attempt", Col::Int)];
}

#[derive(Serialize)]
struct TokenRow {
    patient_id: i64,
    invite_id: i64,
    token_hash: String,
    sent_to: String,
    expires_at: i64,
}

impl BatchRow for TokenRow {
    const COLUMNS: &'static [(&'static str, Col)] = &[
        ("patient_id", Col::Int),
        ("invite_id", Col::Int),
        ("token_hash", Col::Text),
        ("sent_to", Col::Text),
        ("expires_at", Col::Int),
    ];
}

#[derive(Serialize)]
struct DeliveryRow<'a> {
    invite_id: i64,
    patient_id: i64,
    channel: &'static str,
    address: &'a str,
    attempt: i64,
}

impl BatchRow for DeliveryRow<'_> {
    const COLUMNS: &'static [(&'static str, Col)] = &[
        ("invite_id", Col::Int),
        ("patient_id", Col::Int),
        ("channel", Col::Text),
        ("address", Col::Text),
        ("attempt", Col::Int),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::assert_columns;

    #[test]
    fn attempt_rows_serialize_to_their_columns() {
        assert_columns(&AttemptRow { id: 1, attempt: 2 });
        assert_columns(&TokenRow {
            patient_id: 1,
            invite_id: 2,
            token_hash: "h".into(),
            sent_to: "a@example.org".into(),
            expires_at: 3,
        });
        assert_columns(&DeliveryRow {
            invite_id: 1,
            patient_id: 2,
            channel: "email",
            address: "a@example.org",
            attempt: 1,
        });
    }
}
