//! The channels an invite goes to, and R13's per-number text limits
//! counted with the texts already planned in the chunk.

use enroll_core::{SMS_DAY, SMS_WEEK, TextsToNumber, ValidFields, may_text};
use jiff::Timestamp;
use std::collections::HashMap;

use crate::tx::{Tx, on_tx};
use crate::{Result, to_ms};

/// Texts this batch is about to send, per number: R13 counts them with the
/// ones already recorded, since the batch writes its deliveries at the end.
#[derive(Default)]
pub(super) struct PlannedTexts(HashMap<String, i64>);

impl Tx {
    /// The addresses this invite goes to: email when the practice sends
    /// email and the patient has not opted out; the cell phone when the
    /// practice texts, unless opted out or over the R13 limits for it.
    pub(super) async fn channels(
        &mut self,
        valid: &ValidFields,
        facts: &enroll_core::PatientFacts,
        email_enabled: bool,
        sms_enabled: bool,
        planned: &mut PlannedTexts,
        now: Timestamp,
    ) -> Result<(Option<String>, Option<String>)> {
        let email =
            (email_enabled && !facts.email_opted_out).then(|| valid.email.as_str().to_string());
        let mut cell_phone = None;
        if let Some(phone) = &valid.cell_phone
            && sms_enabled
            && !facts.sms_opted_out
        {
            let phone = phone.as_str();
            if self.holds_number(phone).await?
                && may_text(self.texts_counted(phone, planned, now).await?)
            {
                *planned.0.entry(phone.to_string()).or_default() += 1;
                cell_phone = Some(phone.to_string());
            }
        }
        Ok((email, cell_phone))
    }

    /// Whether this transaction may decide texts to `phone`. On
    /// PostgreSQL, chunks are prepared in parallel transactions, and two
    /// that each count a number's texts before the other commits would
    /// both text it (R13 broken); so a transaction texts a number only
    /// while it holds that number's advisory lock, until it commits. One
    /// that finds the lock taken does not wait (no deadlock between chunks
    /// locking numbers in different orders) and leaves the number out:
    /// the holder is texting it, so R13 would most likely refuse a second
    /// text today anyway. SQLite has one writer at a time: always true.
    async fn holds_number(&mut self, phone: &str) -> Result<bool> {
        match self {
            Tx::Sqlite(..) => Ok(true),
            Tx::Postgres(t) => Ok(sqlx::query_scalar(
                "SELECT pg_try_advisory_xact_lock(13, hashtext($1))",
            )
            .bind(phone)
            .fetch_one(&mut **t)
            .await?),
        }
    }

    /// What R13 weighs for one number: the texts recorded in its day and
    /// week, each plus the ones this batch has already planned.
    async fn texts_counted(
        &mut self,
        phone: &str,
        planned: &PlannedTexts,
        now: Timestamp,
    ) -> Result<TextsToNumber> {
        let in_batch = planned.0.get(phone).copied().unwrap_or(0);
        Ok(TextsToNumber {
            last_day: in_batch + self.texts_to(phone, now - SMS_DAY).await?,
            last_week: in_batch + self.texts_to(phone, now - SMS_WEEK).await?,
        })
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
}
