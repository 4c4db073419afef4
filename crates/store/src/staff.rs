//! Staff users, their API tokens, and the audit log of who viewed what.

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::model::AuditRow;
use crate::{AuditEntry, Result, StaffUser, Store, StoreError, from_ms, on_pool, to_ms};
use enroll_core::Role;

/// API tokens are long random strings, so one SHA-256 is enough to keep them
/// unusable if the database leaks (passwords, which are guessable, use argon2).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(sqlx::FromRow)]
struct StaffRow {
    id: i64,
    username: String,
    display_name: String,
    role: String,
}

impl TryFrom<StaffRow> for StaffUser {
    type Error = StoreError;

    fn try_from(r: StaffRow) -> Result<StaffUser> {
        let role = Role::from_key(&r.role)
            .ok_or_else(|| StoreError::Corrupt(format!("staff user {} role {:?}", r.id, r.role)))?;
        Ok(StaffUser {
            id: r.id,
            username: r.username,
            display_name: r.display_name,
            role,
        })
    }
}

impl Store {
    /// Creates a staff user whose API token hashes to `token_hash`, or, when
    /// the username exists, replaces that user's token.
    pub async fn put_staff_user(
        &self,
        username: &str,
        display_name: &str,
        role: Role,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<StaffUser> {
        let row: StaffRow = on_pool!(self, pool => {
            sqlx::query_as(
                "INSERT INTO staff_users (username, display_name, role, api_token_hash, created_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (username) DO UPDATE SET api_token_hash = excluded.api_token_hash, \
                 display_name = excluded.display_name, role = excluded.role \
                 RETURNING id, username, display_name, role",
            )
            .bind(username)
            .bind(display_name)
            .bind(role.key())
            .bind(token_hash)
            .bind(to_ms(now))
            .fetch_one(pool)
            .await
        })?;
        row.try_into()
    }

    /// The enabled staff user holding this API token, if any.
    pub async fn staff_by_token(&self, token: &str) -> Result<Option<StaffUser>> {
        let hash = hash_token(token);
        let row: Option<StaffRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, username, display_name, role FROM staff_users \
                 WHERE api_token_hash = $1 AND NOT disabled",
            )
            .bind(&hash)
            .fetch_optional(pool)
            .await
        })?;
        row.map(StaffUser::try_from).transpose()
    }

    /// Records that `actor` did `action` (view, search, update...) on a patient.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        patient_id: Option<i64>,
        now: Timestamp,
    ) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO audit_log (at, actor, action, patient_id) VALUES ($1, $2, $3, $4)")
                .bind(to_ms(now))
                .bind(actor)
                .bind(action)
                .bind(patient_id)
                .execute(pool)
                .await.map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    pub async fn audit_log(&self, patient_id: Option<i64>, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows: Vec<AuditRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, at, actor, action, patient_id FROM audit_log \
                 WHERE (CAST($1 AS BIGINT) IS NULL OR patient_id = $1) ORDER BY id DESC LIMIT $2",
            )
            .bind(patient_id)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?;
        rows.into_iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.id,
                    at: from_ms(r.at)?,
                    actor: r.actor,
                    action: r.action,
                    patient_id: r.patient_id,
                })
            })
            .collect()
    }
}
