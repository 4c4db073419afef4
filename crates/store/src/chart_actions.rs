//! What staff record on a chart besides demographics: the R11
//! confirmation of the required fields, and the patient's response
//! (declined or deferred the portal). Each is one transaction that writes
//! the fact, its timeline line and the audit line together, so an audited
//! change cannot exist without its record, nor the other way round.

use enroll_core::PatientResponse;
use jiff::Timestamp;

use crate::timeline::TimelineEvent;
use crate::tx::on_tx;
use crate::{Audit, AuditTarget, Patient, Result, Source, Store, StoreError, to_ms};

impl Store {
    /// R11: the required fields were confirmed with the patient by the
    /// source's actor, now.
    pub async fn confirm_fields(
        &self,
        patient_id: i64,
        source: &Source,
        now: Timestamp,
    ) -> Result<Patient> {
        let actor = source.who();
        let mut tx = self.begin_write().await?;
        tx.lock_patient(patient_id).await?;
        on_tx!(&mut tx, c => {
            sqlx::query("UPDATE patients SET fields_confirmed_at = $1, fields_confirmed_by = $2 WHERE id = $3")
                .bind(to_ms(now))
                .bind(actor)
                .bind(patient_id)
                .execute(c)
                .await.map(|r| r.rows_affected())
        })?;
        tx.timeline(patient_id, now, &TimelineEvent::FieldsConfirmed, source)
            .await?;
        tx.audit_entry(
            &Audit::new(
                actor,
                "patient.confirm_fields",
                AuditTarget::Patient(patient_id),
            ),
            now,
        )
        .await?;
        let patient = tx.patient(patient_id).await?;
        tx.commit().await?;
        Ok(patient)
    }

    /// Records (`Some`) or removes (`None`) the patient's response. Removing
    /// when there is none is refused, so a stale page cannot clear a
    /// response recorded since.
    pub async fn set_response(
        &self,
        patient_id: i64,
        response: Option<PatientResponse>,
        source: &Source,
        now: Timestamp,
    ) -> Result<Patient> {
        let actor = source.who();
        let mut tx = self.begin_write().await?;
        let before = tx.locked_patient(patient_id).await?;
        let event = match (response, before.response) {
            (Some(response), _) => TimelineEvent::ResponseRecorded { response },
            (None, Some(was)) => TimelineEvent::ResponseRemoved { was },
            (None, None) => {
                return Err(StoreError::Conflict(
                    "the patient has no recorded response to remove",
                ));
            }
        };
        on_tx!(&mut tx, c => {
            sqlx::query("UPDATE patients SET response = $1, updated_at = $2 WHERE id = $3")
                .bind(response.map(PatientResponse::key))
                .bind(to_ms(now))
                .bind(patient_id)
                .execute(c)
                .await.map(|r| r.rows_affected())
        })?;
        tx.timeline(patient_id, now, &event, source).await?;
        let action = if response.is_some() {
            "patient.record_response"
        } else {
            "patient.remove_response"
        };
        tx.audit_entry(
            &Audit::new(actor, action, AuditTarget::Patient(patient_id)),
            now,
        )
        .await?;
        let patient = tx.patient(patient_id).await?;
        tx.commit().await?;
        Ok(patient)
    }
}
