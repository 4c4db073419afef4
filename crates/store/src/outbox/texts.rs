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
    /// The addresses this invite goes to: email unless opted out; the cell
    /// phone unless opted out or over the R13 limits for that number.
    pub(super) async fn channels(
        &mut self,
        valid: &ValidFields,
        facts: &enroll_core::PatientFacts,
        sms_enabled: bool,
        planned: &mut PlannedTexts,
        now: Timestamp,
    ) -> Result<(Option<String>, Option<String>)> {
        let email = (!facts.email_opted_out).then(|| valid.email.as_str().to_string());
        let mut cell_phone = None;
        if let Some(phone) = &valid.cell_phone
            && sms_enabled
            && !facts.sms_opted_out
        {
            let phone = phone.as_str();
            if may_text(self.texts_counted(phone, planned, now).await?) {
                *planned.0.entry(phone.to_string()).or_default() += 1;
                cell_phone = Some(phone.to_string());
            }
        }
        Ok((email, cell_phone))
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
