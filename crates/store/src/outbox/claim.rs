//! Claiming due invites with a lease, and reading what was claimed.

use jiff::{SignedDuration, Timestamp};
use sqlx::AssertSqlSafe;
use std::collections::HashMap;

use crate::model::{INVITE_COLUMNS, InviteRow, PATIENT_COLUMNS, PatientRow};
use crate::tx::{Tx, on_tx};
use crate::{Invite, InviteState, Patient, Result, Store, to_ms};

impl Store {
    /// Claims up to `limit` invites that are due (scheduled or queued, due
    /// at or before `now`, not claimed by a live lease), oldest first.
    /// PostgreSQL skips rows another instance is claiming at this moment
    /// (`Engine::claim_lock`); SQLite runs one writer at a time.
    pub async fn claim_due_invites(
        &self,
        worker: &str,
        now: Timestamp,
        lease: SignedDuration,
        limit: i64,
    ) -> Result<Vec<i64>> {
        let engine = self.backend.engine();
        let (index, lock) = (engine.claim_index_hint(), engine.claim_lock());
        let sql = format!(
            "UPDATE invites SET claimed_by = $1, claimed_until = $2 WHERE id IN ( \
               SELECT id FROM invites {index} WHERE state IN ('scheduled', 'queued') AND due_at <= $3 \
               AND (claimed_until IS NULL OR claimed_until < $3) ORDER BY due_at, id LIMIT $4 {lock}) \
             RETURNING id"
        );
        let until = now.checked_add(lease).unwrap_or(Timestamp::MAX);
        // Planned afresh on PostgreSQL, as batch statements are (see
        // `Engine::keeps_batch_plans`): a plan kept from when few invites
        // were pending sorts them all once thousands are.
        let persistent = engine.keeps_batch_plans();
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

    /// Renews `worker`'s claim on an invite whose attempt `attempt` is
    /// about to be sent, for another `lease` from `now`, if the claim is
    /// still its own: no other dispatcher has claimed the invite since
    /// (`claimed_by`; a claim is the only way to take one over), no later
    /// attempt was prepared (`attempts`: a later chunk of this worker may
    /// have re-claimed it after the lease ran out) and it still waits to be
    /// sent. One statement, so checking and renewing cannot be split by
    /// another claim. False: the invite is someone else's now (or done),
    /// and sending it would send it twice.
    pub async fn renew_claim(
        &self,
        invite_id: i64,
        worker: &str,
        attempt: i64,
        now: Timestamp,
        lease: SignedDuration,
    ) -> Result<bool> {
        let until = now.checked_add(lease).unwrap_or(Timestamp::MAX);
        let mut tx = self.begin_write().await?;
        let renewed = on_tx!(&mut tx, c => {
            sqlx::query(
                "UPDATE invites SET claimed_until = $1 WHERE id = $2 AND claimed_by = $3 \
                 AND attempts = $4 AND state IN ('scheduled', 'queued')",
            )
            .bind(to_ms(until))
            .bind(invite_id)
            .bind(worker)
            .bind(attempt)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        tx.commit().await?;
        Ok(renewed == 1)
    }
}

impl Tx {
    /// The invites among `ids` still claimed by `worker`, sorted by patient
    /// then id (the order patients are locked in).
    pub(super) async fn claimed_invites(
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

    /// Locks the patients `ids` in ascending order without reading them.
    /// Nothing to do on SQLite, whose write transaction excludes every
    /// other writer.
    pub(crate) async fn lock_patient_rows(
        &mut self,
        ids: impl IntoIterator<Item = i64>,
    ) -> Result<()> {
        if self.row_lock().is_empty() {
            return Ok(());
        }
        let mut ids: Vec<i64> = ids.into_iter().collect();
        ids.sort_unstable();
        ids.dedup();
        let (ids_match, json) = self.id_list("id", ids)?;
        let sql = format!(
            "SELECT id FROM patients WHERE {ids_match} ORDER BY id {}",
            self.row_lock()
        );
        on_tx!(self, c => {
            sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.as_str())).bind(&json).fetch_all(c).await
        })?;
        Ok(())
    }

    /// Reads and locks the patients, in ascending id order.
    pub(super) async fn lock_patients(
        &mut self,
        mut ids: Vec<i64>,
    ) -> Result<HashMap<i64, Patient>> {
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
}
