//! Patient portal accounts after activation: sign-in lookups and sessions
//! (only the SHA-256 of a session cookie is kept).

use jiff::Timestamp;

use crate::{Result, Store, on_pool, to_ms};

/// What sign-in needs of an account.
#[derive(Debug, Clone)]
pub struct PatientAccount {
    pub id: i64,
    pub patient_id: i64,
    /// argon2id, PHC string.
    pub password_hash: String,
}

/// What the portal's home page shows for a session.
#[derive(Debug, Clone)]
pub struct PortalSession {
    pub account_id: i64,
    pub patient_id: i64,
    pub username: String,
    pub practice_name: String,
    pub preferred_language: Option<String>,
}

#[derive(sqlx::FromRow)]
struct AccountRow {
    id: i64,
    patient_id: i64,
    password_hash: String,
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    account_id: i64,
    patient_id: i64,
    username: String,
    practice_name: String,
    preferred_language: Option<String>,
}

impl Store {
    /// The account called `username` (stored lowercased).
    pub async fn patient_account(&self, username: &str) -> Result<Option<PatientAccount>> {
        let row: Option<AccountRow> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, patient_id, password_hash FROM patient_accounts WHERE username = $1")
                .bind(username)
                .fetch_optional(pool)
                .await
        })?;
        Ok(row.map(|r| PatientAccount {
            id: r.id,
            patient_id: r.patient_id,
            password_hash: r.password_hash,
        }))
    }

    pub async fn create_patient_session(
        &self,
        account_id: i64,
        session_hash: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO patient_sessions (account_id, session_hash, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(account_id)
            .bind(session_hash)
            .bind(to_ms(now))
            .bind(to_ms(expires_at))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// The session whose cookie hashes to `session_hash`, if not expired.
    pub async fn patient_session(
        &self,
        session_hash: &str,
        now: Timestamp,
    ) -> Result<Option<PortalSession>> {
        let row: Option<SessionRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT a.id AS account_id, a.patient_id, a.username, pr.name AS practice_name, \
                 p.preferred_language \
                 FROM patient_sessions s JOIN patient_accounts a ON a.id = s.account_id \
                 JOIN patients p ON p.id = a.patient_id JOIN practices pr ON pr.id = p.practice_id \
                 WHERE s.session_hash = $1 AND s.expires_at > $2",
            )
            .bind(session_hash)
            .bind(to_ms(now))
            .fetch_optional(pool)
            .await
        })?;
        Ok(row.map(|r| PortalSession {
            account_id: r.account_id,
            patient_id: r.patient_id,
            username: r.username,
            practice_name: r.practice_name,
            preferred_language: r.preferred_language,
        }))
    }

    pub async fn delete_patient_session(&self, session_hash: &str) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query("DELETE FROM patient_sessions WHERE session_hash = $1")
                .bind(session_hash)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}
