//! Opt-outs: the unsubscribe page (email) and STOP/START texts (SMS).

use jiff::Timestamp;

use crate::timeline::TimelineEvent;
use crate::tx::on_tx;
use crate::{Result, Source, Store, to_ms};

impl Store {
    /// Records an email opt-out (the unsubscribe page) for the patient the
    /// invite went to. Returns false for an unknown invite.
    pub async fn opt_out_email_by_invite(&self, invite_id: i64, now: Timestamp) -> Result<bool> {
        let Some(invite) = self.invite_by_id(invite_id).await? else {
            return Ok(false);
        };
        let mut tx = self.begin_write().await?;
        tx.lock_patient(invite.patient_id).await?;
        on_tx!(&mut tx, c => {
            sqlx::query("UPDATE patients SET email_opted_out = TRUE, updated_at = $1 WHERE id = $2")
                .bind(to_ms(now))
                .bind(invite.patient_id)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        let source = Source::new("patient", None).with_reference(format!("invite {invite_id}"));
        let opted_out = TimelineEvent::EmailOptedOut { invite_id };
        tx.timeline(invite.patient_id, now, &opted_out, &source)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records an SMS opt-out (STOP) or opt-in (START) for every patient whose
    /// cell phone is `e164`. Returns how many patients it concerned.
    pub async fn set_sms_opt_out_by_phone(
        &self,
        e164: &str,
        opted_out: bool,
        now: Timestamp,
    ) -> Result<usize> {
        let ids: Vec<i64> = crate::on_pool!(self, pool => {
            sqlx::query_scalar("SELECT id FROM patients WHERE cell_phone = $1 ORDER BY id")
                .bind(e164)
                .fetch_all(pool)
                .await
        })?;
        let line = if opted_out {
            TimelineEvent::SmsOptedOut
        } else {
            TimelineEvent::SmsOptedIn
        };
        let source = Source::new("sms", None).with_reference("inbound text");
        for &id in &ids {
            let mut tx = self.begin_write().await?;
            tx.lock_patient(id).await?;
            on_tx!(&mut tx, c => {
                sqlx::query("UPDATE patients SET sms_opted_out = $1, updated_at = $2 WHERE id = $3")
                    .bind(opted_out)
                    .bind(to_ms(now))
                    .bind(id)
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected())
            })?;
            tx.timeline(id, now, &line, &source).await?;
            tx.commit().await?;
        }
        Ok(ids.len())
    }
}
