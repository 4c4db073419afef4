//! Installation-wide settings (key/value), such as the secret that signs
//! unsubscribe links.

use jiff::Timestamp;
use serde::Serialize;

use crate::tx::on_tx;
use crate::{Audit, Result, Store, from_ms, on_pool};

/// What an activation link leads to (R10), without the token itself.
#[derive(Debug, Clone, Serialize)]
pub struct ActivationLink {
    pub patient_id: i64,
    pub invite_id: i64,
    pub first_name: Option<String>,
    pub practice_name: String,
    pub expires_at: Timestamp,
    pub used: bool,
}

#[derive(sqlx::FromRow)]
struct ActivationRow {
    patient_id: i64,
    invite_id: i64,
    first_name: Option<String>,
    practice_name: String,
    expires_at: i64,
    used_at: Option<i64>,
}

impl Store {
    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(pool).await
        })?)
    }

    /// Stores `value` under `key`, replacing any earlier value.
    pub async fn put_setting(&self, key: &str, value: &str) -> Result<()> {
        self.write_settings(&[(key, value)], None).await
    }

    /// Stores every pair in one transaction: another instance that reads
    /// one of them (a version marker, say) also sees the others.
    pub async fn put_settings(&self, pairs: &[(&str, &str)]) -> Result<()> {
        self.write_settings(pairs, None).await
    }

    /// [`Store::put_settings`] that a staff member asked for: the settings
    /// and the audit line in one transaction.
    pub async fn put_settings_audited(
        &self,
        pairs: &[(&str, &str)],
        audit: &Audit,
        now: Timestamp,
    ) -> Result<()> {
        self.write_settings(pairs, Some((audit, now))).await
    }

    async fn write_settings(
        &self,
        pairs: &[(&str, &str)],
        audit: Option<(&Audit, Timestamp)>,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for (key, value) in pairs {
            on_tx!(&mut tx, c => {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .bind(value)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
            })?;
        }
        if let Some((audit, now)) = audit {
            tx.audit_entry(audit, now).await?;
        }
        tx.commit().await
    }

    /// Every setting whose key starts with `prefix`, by key.
    pub async fn settings_with_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let pattern = format!(
            "{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        Ok(on_pool!(self, pool => {
            sqlx::query_as("SELECT key, value FROM settings WHERE key LIKE $1 ESCAPE '\\' ORDER BY key")
                .bind(&pattern)
                .fetch_all(pool)
                .await
        })?)
    }

    /// Stores `value` unless the key has one; returns the value in force, so
    /// that several instances starting together agree on one.
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String> {
        on_pool!(self, pool => {
            sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(key)
                .bind(value)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(self
            .setting(key)
            .await?
            .unwrap_or_else(|| value.to_string()))
    }

    /// The activation link of `token`, if any (looked up by its hash).
    pub async fn activation_link(&self, token: &str) -> Result<Option<ActivationLink>> {
        let row: Option<ActivationRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT t.patient_id, t.invite_id, p.first_name, pr.name AS practice_name, t.expires_at, t.used_at \
                 FROM activation_tokens t JOIN patients p ON p.id = t.patient_id \
                 JOIN practices pr ON pr.id = p.practice_id WHERE t.token_hash = $1",
            )
            .bind(crate::hash_token(token))
            .fetch_optional(pool)
            .await
        })?;
        row.map(|r| {
            Ok(ActivationLink {
                patient_id: r.patient_id,
                invite_id: r.invite_id,
                first_name: r.first_name,
                practice_name: r.practice_name,
                expires_at: from_ms(r.expires_at)?,
                used: r.used_at.is_some(),
            })
        })
        .transpose()
    }
}
