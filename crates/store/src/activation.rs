//! R10, the store's side of a patient activating the portal account: what
//! a link leads to (with `enroll_core::link_state` deciding whether it
//! still works), the flow in progress per link, the counted failures, and
//! the one transaction that makes the patient active. Every attempt is a
//! timeline line and an audit row; tokens, flow secrets, codes and
//! passwords are kept only as hashes (passwords as argon2id, made by the
//! server).

use enroll_core::{
    ActivationRules, E164Phone, EmailAddress, LinkFacts, LinkState, Zip, link_state,
};
use hmac::{Hmac, Mac};
use jiff::Timestamp;
use jiff::civil::Date;
use sha2::Sha256;

use crate::timeline::TimelineEvent;
use crate::tx::{Tx, on_tx};
use crate::{
    Result, Source, Store, StoreError, from_ms, on_pool, opt_from_ms, to_ms, unique_violation,
};

/// Who the timeline and the audit log name for what the patient did on the
/// activation pages (the patient has no account yet).
const PATIENT_ACTOR: &str = "patient (activation link)";

/// The settings key of the secret activation tokens are derived with.
pub(crate) const TOKEN_KEY_SETTING: &str = "activation/token-key";

/// What an activation link leads to, with the verdict of R10.
#[derive(Debug, Clone)]
pub struct ActivationToken {
    pub token_id: i64,
    pub patient_id: i64,
    pub invite_id: i64,
    pub state: LinkState,
    pub expires_at: Timestamp,
    pub identity_failures: i64,
    pub practice_name: String,
    /// The practice's phone (E.164), when it has one.
    pub practice_phone: Option<String>,
    pub first_name: Option<String>,
    pub preferred_language: Option<String>,
    /// The chart's answers to the identity check.
    pub date_of_birth: Option<Date>,
    pub zip: Option<String>,
    /// The chart's valid email and cell phone (where the code can go).
    pub email: Option<String>,
    pub cell_phone: Option<String>,
    /// The address the invite went to.
    pub sent_to: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct TokenRow {
    token_id: i64,
    patient_id: i64,
    invite_id: i64,
    sent_to: String,
    expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
    failures: i64,
    practice_name: String,
    practice_phone: Option<String>,
    first_name: Option<String>,
    preferred_language: Option<String>,
    date_of_birth: Option<String>,
    zip: Option<String>,
    email: Option<String>,
    cell_phone: Option<String>,
    activated_at: Option<i64>,
    deceased: bool,
    merged_into: Option<i64>,
}

pub(crate) const TOKEN_SELECT: &str = "SELECT t.id AS token_id, t.patient_id, t.invite_id, t.sent_to, \
     t.expires_at, t.used_at, t.revoked_at, t.failures, pr.name AS practice_name, \
     pr.phone AS practice_phone, p.first_name, \
     p.preferred_language, p.date_of_birth, p.zip, p.email, p.cell_phone, p.activated_at, \
     p.deceased, p.merged_into \
     FROM activation_tokens t JOIN patients p ON p.id = t.patient_id \
     JOIN practices pr ON pr.id = p.practice_id";

impl TokenRow {
    pub(crate) fn into_token(
        self,
        rules: &ActivationRules,
        now: Timestamp,
    ) -> Result<ActivationToken> {
        // The binding compares the address as the dispatcher sent it: the
        // chart's values after validation (a cell phone in E.164).
        let email = self
            .email
            .as_deref()
            .and_then(|e| EmailAddress::parse(e).ok())
            .map(|e| e.as_str().to_string());
        let cell_phone = self
            .cell_phone
            .as_deref()
            .and_then(|c| E164Phone::parse(c).ok())
            .map(|c| c.as_str().to_string());
        let expires_at = from_ms(self.expires_at)?;
        let facts = LinkFacts {
            expires_at,
            used: self.used_at.is_some(),
            revoked: self.revoked_at.is_some(),
            identity_failures: self.failures,
            sent_to: &self.sent_to,
            patient_email: email.as_deref(),
            patient_cell_phone: cell_phone.as_deref(),
            patient_activated: self.activated_at.is_some(),
            patient_deceased: self.deceased,
            patient_merged: self.merged_into.is_some(),
        };
        let state = link_state(&facts, rules, now);
        Ok(ActivationToken {
            token_id: self.token_id,
            patient_id: self.patient_id,
            invite_id: self.invite_id,
            state,
            expires_at,
            identity_failures: self.failures,
            practice_name: self.practice_name,
            practice_phone: self.practice_phone,
            first_name: self.first_name,
            preferred_language: self.preferred_language,
            date_of_birth: self.date_of_birth.as_deref().and_then(|d| d.parse().ok()),
            zip: self
                .zip
                .as_deref()
                .and_then(|z| Zip::parse(z).ok())
                .map(|z| z.as_str().to_string()),
            email,
            cell_phone,
            sent_to: self.sent_to,
        })
    }
}

/// How far an activation on one link has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowStep {
    /// The landing page: date of birth and ZIP code asked.
    Identity,
    /// Identity confirmed: username and password asked.
    Account,
    /// Account chosen, code sent: the code and the terms asked.
    Code,
}

impl FlowStep {
    fn key(self) -> &'static str {
        match self {
            FlowStep::Identity => "identity",
            FlowStep::Account => "account",
            FlowStep::Code => "code",
        }
    }

    fn from_key(key: &str) -> Option<FlowStep> {
        [FlowStep::Identity, FlowStep::Account, FlowStep::Code]
            .into_iter()
            .find(|s| s.key() == key)
    }
}

/// The activation in progress on one link.
#[derive(Debug, Clone)]
pub struct ActivationFlow {
    pub step: FlowStep,
    /// SHA-256 (hex) of the flow secret the forms echo.
    pub secret_hash: String,
    pub username: Option<String>,
    pub password_hash: Option<String>,
    /// SHA-256 (hex) of the one-time code.
    pub code_hash: Option<String>,
    pub code_sent_at: Option<Timestamp>,
    pub code_failures: i64,
}

#[derive(sqlx::FromRow)]
struct FlowRow {
    step: String,
    secret_hash: String,
    username: Option<String>,
    password_hash: Option<String>,
    code_hash: Option<String>,
    code_sent_at: Option<i64>,
    code_failures: i64,
}

/// What finishing an activation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActivationDone {
    Activated {
        account_id: i64,
    },
    /// Someone took the username since it was checked.
    UsernameTaken,
    /// The link stopped working meanwhile (activated, died, merged...).
    LinkGone,
}

impl Store {
    /// The link of `token` (looked up by its hash) and whether it works now.
    pub async fn activation_token(
        &self,
        token: &str,
        rules: &ActivationRules,
        now: Timestamp,
    ) -> Result<Option<ActivationToken>> {
        let sql = format!("{TOKEN_SELECT} WHERE t.token_hash = $1");
        let hash = crate::hash_token(token);
        let row: Option<TokenRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(&hash).fetch_optional(pool).await
        })?;
        row.map(|r| r.into_token(rules, now)).transpose()
    }

    /// Starts (or starts over) the flow of a link at the identity step with
    /// a new secret: opening the link again forgets what was done before.
    pub async fn start_activation_flow(
        &self,
        token_id: i64,
        secret_hash: &str,
        now: Timestamp,
    ) -> Result<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO activation_flows (token_id, secret_hash, step, created_at, updated_at) \
                 VALUES ($1, $2, 'identity', $3, $3) \
                 ON CONFLICT (token_id) DO UPDATE SET secret_hash = excluded.secret_hash, \
                 step = 'identity', username = NULL, password_hash = NULL, code_hash = NULL, \
                 code_sent_at = NULL, code_failures = 0, updated_at = excluded.updated_at",
            )
            .bind(token_id)
            .bind(secret_hash)
            .bind(to_ms(now))
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    pub async fn activation_flow(&self, token_id: i64) -> Result<Option<ActivationFlow>> {
        let row: Option<FlowRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT step, secret_hash, username, password_hash, code_hash, code_sent_at, \
                 code_failures FROM activation_flows WHERE token_id = $1",
            )
            .bind(token_id)
            .fetch_optional(pool)
            .await
        })?;
        row.map(|r| {
            Ok(ActivationFlow {
                step: FlowStep::from_key(&r.step).ok_or_else(|| {
                    StoreError::Corrupt(format!("activation flow step {:?}", r.step))
                })?,
                secret_hash: r.secret_hash,
                username: r.username,
                password_hash: r.password_hash,
                code_hash: r.code_hash,
                code_sent_at: opt_from_ms(r.code_sent_at)?,
                code_failures: r.code_failures,
            })
        })
        .transpose()
    }

    /// Counts a wrong identity answer on the link; returns the failures so
    /// far. Timeline and audit log say so (not which answer was wrong).
    pub async fn activation_identity_failed(
        &self,
        link: &ActivationToken,
        rules: &ActivationRules,
        now: Timestamp,
    ) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let failures: i64 = on_tx!(&mut tx, c => {
            sqlx::query_scalar(
                "UPDATE activation_tokens SET failures = failures + 1 WHERE id = $1 RETURNING failures",
            )
            .bind(link.token_id)
            .fetch_one(c)
            .await
        })?;
        let locked = failures >= rules.max_identity_failures;
        let event = TimelineEvent::ActivationIdentityFailed {
            invite_id: link.invite_id,
            failures,
            locked,
        };
        let action = if locked {
            "activation: wrong date of birth or ZIP code; link locked"
        } else {
            "activation: wrong date of birth or ZIP code"
        };
        tx.patient_line(link.patient_id, &event, action, now)
            .await?;
        tx.commit().await?;
        Ok(failures)
    }

    /// The identity check passed: the flow moves to the account step with
    /// a new secret (only the browser that answered can go on).
    pub async fn activation_identity_confirmed(
        &self,
        link: &ActivationToken,
        secret_hash: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        on_tx!(&mut tx, c => {
            sqlx::query(
                "UPDATE activation_flows SET step = 'account', secret_hash = $1, updated_at = $2 \
                 WHERE token_id = $3",
            )
            .bind(secret_hash)
            .bind(to_ms(now))
            .bind(link.token_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        let event = TimelineEvent::ActivationIdentityConfirmed {
            invite_id: link.invite_id,
        };
        tx.patient_line(
            link.patient_id,
            &event,
            "activation: identity confirmed",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The account is chosen and a code went out by `channel`: the flow
    /// waits for the code (a new code resets its failures).
    pub async fn activation_code_sent(
        &self,
        link: &ActivationToken,
        username: &str,
        password_hash: &str,
        code_hash: &str,
        channel: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        on_tx!(&mut tx, c => {
            sqlx::query(
                "UPDATE activation_flows SET step = 'code', username = $1, password_hash = $2, \
                 code_hash = $3, code_sent_at = $4, code_failures = 0, updated_at = $4 \
                 WHERE token_id = $5",
            )
            .bind(username)
            .bind(password_hash)
            .bind(code_hash)
            .bind(to_ms(now))
            .bind(link.token_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        let event = TimelineEvent::ActivationCodeSent {
            invite_id: link.invite_id,
            channel,
        };
        tx.patient_line(
            link.patient_id,
            &event,
            "activation: one-time code sent",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts a wrong one-time code; returns the failures of this code.
    pub async fn activation_code_failed(
        &self,
        link: &ActivationToken,
        now: Timestamp,
    ) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let failures: i64 = on_tx!(&mut tx, c => {
            sqlx::query_scalar(
                "UPDATE activation_flows SET code_failures = code_failures + 1, updated_at = $1 \
                 WHERE token_id = $2 RETURNING code_failures",
            )
            .bind(to_ms(now))
            .bind(link.token_id)
            .fetch_one(c)
            .await
        })?;
        let event = TimelineEvent::ActivationCodeFailed {
            invite_id: link.invite_id,
            failures,
        };
        tx.patient_line(
            link.patient_id,
            &event,
            "activation: wrong one-time code",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(failures)
    }

    /// A form sent on a link that no longer works, for the timeline.
    pub async fn activation_refused(
        &self,
        link: &ActivationToken,
        link_state: &str,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let event = TimelineEvent::ActivationRefused {
            invite_id: link.invite_id,
            link: link_state,
        };
        tx.patient_line(
            link.patient_id,
            &event,
            "activation: link no longer works",
            now,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether a portal account already has `username` (stored lowercased).
    pub async fn patient_username_taken(&self, username: &str) -> Result<bool> {
        let n: i64 = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM patient_accounts WHERE username = $1")
                .bind(username)
                .fetch_one(pool)
                .await
        })?;
        Ok(n > 0)
    }

    /// R10's end, in one transaction that locks the patient: the link is
    /// checked once more, the account is made, the link is used, the
    /// patient is active and every pending invite is cancelled. Every other
    /// link of the patient stops working because the patient is active
    /// (`enroll_core::link_state`).
    pub async fn complete_activation(
        &self,
        token_id: i64,
        username: &str,
        password_hash: &str,
        rules: &ActivationRules,
        now: Timestamp,
    ) -> Result<ActivationDone> {
        let mut tx = self.begin_write().await?;
        let sql = format!("{TOKEN_SELECT} WHERE t.id = $1");
        let row: Option<TokenRow> = on_tx!(&mut tx, c => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(token_id).fetch_optional(c).await
        })?;
        let link = row
            .ok_or(StoreError::NotFound("activation link"))?
            .into_token(rules, now)?;
        tx.lock_patient(link.patient_id).await?;
        // Read again under the lock: a merge or a death may have just won.
        let row: Option<TokenRow> = on_tx!(&mut tx, c => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.as_str())).bind(token_id).fetch_optional(c).await
        })?;
        let link = match row {
            Some(row) => row.into_token(rules, now)?,
            None => return Ok(ActivationDone::LinkGone),
        };
        if link.state != LinkState::Usable {
            return Ok(ActivationDone::LinkGone);
        }
        let inserted: std::result::Result<i64, sqlx::Error> = on_tx!(&mut tx, c => {
            sqlx::query_scalar(
                "INSERT INTO patient_accounts (patient_id, username, password_hash, \
                 terms_accepted_at, created_at) VALUES ($1, $2, $3, $4, $4) RETURNING id",
            )
            .bind(link.patient_id)
            .bind(username)
            .bind(password_hash)
            .bind(to_ms(now))
            .fetch_one(c)
            .await
        });
        let account_id = match inserted {
            Ok(id) => id,
            Err(e) if unique_violation(&e) => return Ok(ActivationDone::UsernameTaken),
            Err(e) => return Err(e.into()),
        };
        tx.activate_locked(&link, now).await?;
        tx.commit().await?;
        Ok(ActivationDone::Activated { account_id })
    }
}

impl Tx {
    /// A timeline line and an audit row for something done on the
    /// activation pages.
    async fn patient_line(
        &mut self,
        patient_id: i64,
        event: &TimelineEvent<'_>,
        action: &str,
        now: Timestamp,
    ) -> Result<()> {
        self.timeline(patient_id, now, event, &patient_source())
            .await?;
        on_tx!(self, c => {
            sqlx::query("INSERT INTO audit_log (at, actor, action, patient_id) VALUES ($1, $2, $3, $4)")
                .bind(to_ms(now))
                .bind(PATIENT_ACTOR)
                .bind(action)
                .bind(patient_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// The writes of an activation, the patient locked.
    async fn activate_locked(&mut self, link: &ActivationToken, now: Timestamp) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query("UPDATE activation_tokens SET used_at = $1 WHERE id = $2")
                .bind(to_ms(now))
                .bind(link.token_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        on_tx!(self, c => {
            sqlx::query("DELETE FROM activation_flows WHERE token_id = $1")
                .bind(link.token_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        on_tx!(self, c => {
            sqlx::query("UPDATE patients SET activated_at = $1, updated_at = $1 WHERE id = $2")
                .bind(to_ms(now))
                .bind(link.patient_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        self.patient_line(
            link.patient_id,
            &TimelineEvent::Activated,
            "activation: portal account created, patient active",
            now,
        )
        .await?;
        self.cancel_pending(
            link.patient_id,
            "the patient activated the portal account",
            &patient_source(),
            now,
        )
        .await
    }

    /// The key activation tokens are derived from: made once, kept in
    /// `settings`, so every instance derives the same token for a retry.
    pub(crate) async fn token_key(&mut self) -> Result<Vec<u8>> {
        use rand::RngCore;
        let mut fresh = [0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        let fresh = hex::encode(fresh);
        on_tx!(self, c => {
            sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                .bind(TOKEN_KEY_SETTING)
                .bind(&fresh)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        let stored: String = on_tx!(self, c => {
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(TOKEN_KEY_SETTING)
                .fetch_one(c)
                .await
        })?;
        hex::decode(stored).map_err(|_| StoreError::Corrupt("activation token key".into()))
    }

    /// A merge voids the merged chart's links before they move.
    pub(crate) async fn revoke_tokens(&mut self, patient_id: i64, now: Timestamp) -> Result<()> {
        on_tx!(self, c => {
            sqlx::query(
                "UPDATE activation_tokens SET revoked_at = $1 WHERE patient_id = $2 AND revoked_at IS NULL",
            )
            .bind(to_ms(now))
            .bind(patient_id)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}

fn patient_source() -> Source {
    Source::new("patient", Some(PATIENT_ACTOR))
}

/// The activation token of one delivery: 128 bits of HMAC-SHA256 over the
/// invite and the address, base64url (22 characters, so the link fits in a
/// text). Derived rather than drawn so that a retry of the same delivery
/// carries the same link (R10) while the database keeps only its SHA-256;
/// a new invite, or the same invite to a new address, gets a new token.
pub(crate) fn derive_token(key: &[u8], invite_id: i64, sent_to: &str) -> Result<String> {
    use base64::Engine;
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|_| StoreError::Corrupt("activation token key".into()))?;
    mac.update(format!("activation\n{invite_id}\n{sent_to}").as_bytes());
    let digest = mac.finalize().into_bytes();
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_128_bits_and_the_same_only_for_the_same_delivery() {
        let key = [7u8; 32];
        let a = derive_token(&key, 1, "rosa@example.org").unwrap_or_default();
        assert_eq!(a.len(), 22);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(
            derive_token(&key, 1, "rosa@example.org").ok(),
            Some(a.clone())
        );
        assert_ne!(
            derive_token(&key, 2, "rosa@example.org").ok(),
            Some(a.clone())
        );
        assert_ne!(
            derive_token(&key, 1, "new@example.org").ok(),
            Some(a.clone())
        );
        assert_ne!(
            derive_token(&[8u8; 32], 1, "rosa@example.org").ok(),
            Some(a)
        );
    }
}
