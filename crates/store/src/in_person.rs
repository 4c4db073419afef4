//! In-person invites (issue #12 item 5): at the front desk, staff show the
//! patient a QR code of a fresh activation link, or print a letter with it
//! and a short code to type at `<public_url>/code`.
//!
//! It is a manual invite like Enroll Now (the same `decide_manual`, so R4's
//! and R9's refusals, and R7's cap: an in-person invite is a send and
//! counts), whose one channel, "in person", takes it at once: the invite is
//! `sent` in the transaction that decides it and never waits in the outbox.
//! The link is bound to the address the one-time code will go to (the
//! chart's email, or the cell phone when email is opted out), so it stops
//! working when that address changes, as an emailed link does.
//!
//! Token and short code are derived (HMAC with the installation's token
//! key, as for emailed links) rather than drawn, so the staff page and the
//! letter can show them again from the invite id while the database keeps
//! only their SHA-256.

use enroll_core::{
    ActivationRules, Channel, E164Phone, EmailAddress, InviteKind, InviteState, LinkState,
    ManualDecision, Refusal, decide_manual, short_code_from_bytes,
};
use hmac::{Hmac, Mac};
use jiff::{SignedDuration, Timestamp};
use sha2::Sha256;
use sqlx::AssertSqlSafe;

use crate::activation::{TOKEN_KEY_SETTING, TOKEN_SELECT, TokenRow, derive_token};
use crate::enrollment::NewInvite;
use crate::timeline::TimelineEvent;
use crate::tx::on_tx;
use crate::{AuditTarget, Patient, Result, Source, Store, StoreError, hash_token, on_pool, to_ms};

/// Derivations tried for a short code: a second one is needed only when
/// the first clashes with an earlier link's code (40 bits, so rarely).
const SHORT_CODE_TRIES: u32 = 4;

/// A second "Enroll in person" this soon after one (a double click, a
/// retry, the page opened again) shows that invite again instead of making
/// another: one patient at the desk is one send toward the cap, not two.
const SHOWN_AGAIN_WITHIN: SignedDuration = SignedDuration::from_mins(10);

/// What "Enroll in person" came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InPersonOutcome {
    /// The invite is made and counted; show it with [`Store::in_person_invite`].
    Ready {
        invite_id: i64,
    },
    Refused {
        refusal: Refusal,
    },
    /// The chart was merged into another (HL7 A40); nothing was made (as
    /// for Enroll Now, `EnrollOutcome::MergedInto`).
    MergedInto {
        surviving_patient_id: i64,
    },
}

/// An in-person invite as the staff page and the letter show it.
#[derive(Debug, Clone)]
pub struct InPersonInvite {
    pub invite_id: i64,
    pub patient_id: i64,
    /// The activation token (the link is `<public_url>/a/<token>`).
    pub token: String,
    /// The short code, canonical (8 characters, no dash).
    pub short_code: String,
    /// Whether the link still works (used, locked, expired...).
    pub state: LinkState,
    pub expires_at: Timestamp,
    /// Where the one-time code will go.
    pub sent_to: String,
    pub practice_name: String,
    pub first_name: Option<String>,
    pub preferred_language: Option<String>,
}

impl Store {
    /// "Enroll in person" (R9 with the channel "in person"): decides as
    /// Enroll Now does, and when it may go, records the invite as sent
    /// (counted toward the cap), its delivery, the link and its short code
    /// (hashes only) and the timeline lines, in one transaction that locks
    /// the patient (so racing clicks cannot pass the cap).
    pub async fn invite_in_person(
        &self,
        patient_id: i64,
        source: &Source,
        link_lifetime: SignedDuration,
        now: Timestamp,
    ) -> Result<InPersonOutcome> {
        let mut tx = self.begin_write().await?;
        let patient = tx.locked_patient(patient_id).await?;
        if let Some(surviving_patient_id) = patient.merged_into {
            tx.audit_change(source, AuditTarget::Patient(patient_id), now)
                .await?;
            tx.commit().await?;
            return Ok(InPersonOutcome::MergedInto {
                surviving_patient_id,
            });
        }
        let practice = tx.practice(patient.practice_id).await?;
        let today = practice.schedule.local_date(now);
        let history = tx.send_history(patient_id, now).await?;
        if let Some(address) = code_address(&patient) {
            let since = to_ms(now - SHOWN_AGAIN_WITHIN);
            let recent: Option<i64> = on_tx!(&mut tx, c => {
                sqlx::query_scalar(
                    "SELECT invite_id FROM activation_tokens WHERE patient_id = $1 \
                     AND short_code_hash IS NOT NULL AND used_at IS NULL AND revoked_at IS NULL \
                     AND sent_to = $2 AND created_at >= $3 ORDER BY id DESC LIMIT 1",
                )
                .bind(patient_id)
                .bind(&address)
                .bind(since)
                .fetch_optional(c)
                .await
            })?;
            if let Some(invite_id) = recent {
                tx.audit_change(source, AuditTarget::Patient(patient_id), now)
                    .await?;
                tx.commit().await?;
                return Ok(InPersonOutcome::Ready { invite_id });
            }
        }
        let decided = decide_manual(&patient.facts(today), &history, now);
        let sent_to = match (decided, code_address(&patient)) {
            (ManualDecision::Refused { refusal }, _) => {
                let refused = TimelineEvent::InPersonRefused { refusal: &refusal };
                tx.timeline(patient_id, now, &refused, source).await?;
                tx.audit_change(source, AuditTarget::Patient(patient_id), now)
                    .await?;
                tx.commit().await?;
                return Ok(InPersonOutcome::Refused { refusal });
            }
            (ManualDecision::SendNow, Some(address)) => address,
            // decide_manual lets through only a patient with a valid email
            // or a cell phone that takes texts.
            (ManualDecision::SendNow, None) => {
                return Err(StoreError::Conflict("no address for the one-time code"));
            }
        };
        tx.cancel_scheduled(patient_id, "superseded by an in-person invite", source, now)
            .await?;
        let new = NewInvite {
            kind: InviteKind::Manual,
            state: InviteState::Sent,
            trigger_kind: None,
            due_at: now,
            counted: true,
            next_possible_at: None,
            idempotency_key: None,
        };
        let invite = tx.insert_invite(&patient, &new, source, now).await?;
        let key = tx.token_key().await?;
        let token = derive_token(&key, invite.id, &sent_to)?;
        let mut code_hash = None;
        for n in 0..SHORT_CODE_TRIES {
            let hash = hash_token(&derive_short_code(&key, invite.id, n)?);
            if !tx.short_code_taken(&hash).await? {
                code_hash = Some(hash);
                break;
            }
        }
        let code_hash = code_hash.ok_or_else(|| StoreError::Conflict("no free short code"))?;
        let (at, expires) = (to_ms(now), to_ms(now + link_lifetime));
        on_tx!(&mut tx, c => {
            sqlx::query("UPDATE invites SET sent_at = $1, attempts = 1, last_attempt_at = $1 WHERE id = $2")
                .bind(at)
                .bind(invite.id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        on_tx!(&mut tx, c => {
            sqlx::query(
                "INSERT INTO deliveries (invite_id, patient_id, channel, address, attempt, state, \
                 started_at, finished_at) VALUES ($1, $2, $3, $4, 1, 'sent', $5, $5)",
            )
            .bind(invite.id)
            .bind(patient_id)
            .bind(Channel::InPerson.key())
            .bind(&sent_to)
            .bind(at)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        on_tx!(&mut tx, c => {
            sqlx::query(
                "INSERT INTO activation_tokens (patient_id, invite_id, token_hash, sent_to, \
                 created_at, expires_at, short_code_hash) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(patient_id)
            .bind(invite.id)
            .bind(hash_token(&token))
            .bind(&sent_to)
            .bind(at)
            .bind(expires)
            .bind(&code_hash)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        let queued = TimelineEvent::InviteQueued {
            invite_id: invite.id,
            kind: InviteKind::Manual,
        };
        tx.timeline(patient_id, now, &queued, source).await?;
        let sent = TimelineEvent::InviteSent {
            invite_id: invite.id,
            channels: &[Channel::InPerson],
            attempt: 1,
            other_channel: None,
        };
        tx.timeline(patient_id, now, &sent, source).await?;
        tx.audit_change(source, AuditTarget::Patient(patient_id), now)
            .await?;
        tx.commit().await?;
        Ok(InPersonOutcome::Ready {
            invite_id: invite.id,
        })
    }

    /// The in-person invite `invite_id` of the patient, with its link and
    /// short code derived again and whether the link works now; none when
    /// the invite is not an in-person one of this patient.
    pub async fn in_person_invite(
        &self,
        patient_id: i64,
        invite_id: i64,
        rules: &ActivationRules,
        now: Timestamp,
    ) -> Result<Option<InPersonInvite>> {
        let sql = format!(
            "{TOKEN_SELECT} WHERE t.invite_id = $1 AND t.patient_id = $2 \
             AND t.short_code_hash IS NOT NULL"
        );
        let row: Option<TokenRow> = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(invite_id)
                .bind(patient_id)
                .fetch_optional(pool)
                .await
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let link = row.into_token(rules, now)?;
        let (token_hash, code_hash): (String, String) = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT token_hash, short_code_hash FROM activation_tokens WHERE id = $1",
            )
            .bind(link.token_id)
            .fetch_one(pool)
            .await
        })?;
        let key = self.token_key_stored().await?;
        let token = derive_token(&key, invite_id, &link.sent_to)?;
        // A token key replaced since would give links that lead nowhere.
        if hash_token(&token) != token_hash {
            return Err(StoreError::Corrupt("in-person activation token".into()));
        }
        let mut short_code = None;
        for n in 0..SHORT_CODE_TRIES {
            let code = derive_short_code(&key, invite_id, n)?;
            if hash_token(&code) == code_hash {
                short_code = Some(code);
                break;
            }
        }
        let short_code =
            short_code.ok_or_else(|| StoreError::Corrupt("in-person short code".into()))?;
        Ok(Some(InPersonInvite {
            invite_id,
            patient_id,
            token,
            short_code,
            state: link.state,
            expires_at: link.expires_at,
            sent_to: link.sent_to,
            practice_name: link.practice_name,
            first_name: link.first_name,
            preferred_language: link.preferred_language,
        }))
    }

    /// The activation token a short code (canonical form) leads to; none
    /// for a code no link has. Whether that link still works is for
    /// [`Store::activation_token`] to say, as for any link.
    pub async fn token_for_short_code(&self, code: &str) -> Result<Option<String>> {
        let row: Option<(i64, String)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT invite_id, sent_to FROM activation_tokens WHERE short_code_hash = $1",
            )
            .bind(hash_token(code))
            .fetch_optional(pool)
            .await
        })?;
        let Some((invite_id, sent_to)) = row else {
            return Ok(None);
        };
        let key = self.token_key_stored().await?;
        derive_token(&key, invite_id, &sent_to).map(Some)
    }

    /// The token key as stored (an in-person link exists, so it does).
    async fn token_key_stored(&self) -> Result<Vec<u8>> {
        let stored = self
            .setting(TOKEN_KEY_SETTING)
            .await?
            .ok_or_else(|| StoreError::Corrupt("activation token key missing".into()))?;
        hex::decode(stored).map_err(|_| StoreError::Corrupt("activation token key".into()))
    }
}

impl crate::tx::Tx {
    async fn short_code_taken(&mut self, hash: &str) -> Result<bool> {
        let n: i64 = on_tx!(self, c => {
            sqlx::query_scalar("SELECT COUNT(*) FROM activation_tokens WHERE short_code_hash = $1")
                .bind(hash)
                .fetch_one(c)
                .await
        })?;
        Ok(n > 0)
    }
}

/// Where the one-time code of an in-person link goes: the email, unless
/// the patient unsubscribed from it and has a cell phone that takes texts.
fn code_address(patient: &Patient) -> Option<String> {
    let d = &patient.demographics;
    let email = d
        .email
        .as_deref()
        .and_then(|e| EmailAddress::parse(e).ok())
        .map(|e| e.as_str().to_string());
    let cell = d
        .cell_phone
        .as_deref()
        .and_then(|c| E164Phone::parse(c).ok())
        .map(|c| c.as_str().to_string());
    match (email, cell) {
        (Some(email), _) if !patient.email_opted_out => Some(email),
        (_, Some(cell)) if !patient.sms_opted_out => Some(cell),
        _ => None,
    }
}

/// The `n`th short code of an invite: 40 bits of HMAC-SHA256 with the
/// token key, in Crockford's base32.
fn derive_short_code(key: &[u8], invite_id: i64, n: u32) -> Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key)
        .map_err(|_| StoreError::Corrupt("activation token key".into()))?;
    mac.update(format!("short-code\n{invite_id}\n{n}").as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut bytes = [0u8; 5];
    bytes.copy_from_slice(&digest[..5]);
    Ok(short_code_from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_codes_differ_per_invite_and_per_try() {
        let key = [7u8; 32];
        let a = derive_short_code(&key, 1, 0).unwrap_or_default();
        assert_eq!(a.len(), enroll_core::SHORT_CODE_LEN);
        assert_eq!(derive_short_code(&key, 1, 0).ok(), Some(a.clone()));
        assert_ne!(derive_short_code(&key, 2, 0).ok(), Some(a.clone()));
        assert_ne!(derive_short_code(&key, 1, 1).ok(), Some(a.clone()));
        assert_ne!(derive_short_code(&[8u8; 32], 1, 0).ok(), Some(a));
    }
}
