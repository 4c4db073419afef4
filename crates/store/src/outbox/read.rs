//! What staff read of the outbox: failed deliveries, an invite by id.

use sqlx::AssertSqlSafe;

use super::FailedDelivery;
use crate::model::{INVITE_COLUMNS, InviteRow};
use crate::{Invite, InviteState, Result, Store, from_ms};

impl Store {
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
