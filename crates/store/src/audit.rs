//! The audit log: who viewed or changed what. A change's line is written
//! in the change's own transaction ([`Tx::audit_change`], asked for by
//! [`Source::audited`]), so a crash cannot keep the change and lose its
//! line, and a failed line rolls the change back instead of answering an
//! error after it happened. Views have no change to share a transaction
//! with: [`Store::audit`] writes their line in a statement of its own.

use jiff::Timestamp;
use serde_json::json;
use sqlx::AssertSqlSafe;

use crate::batch::BatchRow;
use crate::engine::{Col, JsonRows, to_json};

use crate::model::AuditRow;
use crate::tx::{Tx, on_tx};
use crate::{AuditEntry, Result, Source, Store, from_ms, on_pool, to_ms};

/// What an audit line is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Patient(i64),
    Practice(i64),
    /// An HL7 message (`hl7_messages.id`), with the patient it was about
    /// (its line is kept with that patient's).
    Message {
        id: i64,
        patient_id: Option<i64>,
    },
    /// An invite (a delivery).
    Invite(i64),
    StaffUser(i64),
    /// What a search looked for, as the actor typed it, and the patients
    /// it showed.
    Search {
        terms: String,
        ids: Vec<i64>,
    },
    /// Nothing in particular (a sign-in, a setting of the whole system).
    None,
}

/// One audit line to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    pub actor: String,
    pub action: String,
    pub target: AuditTarget,
    /// What changed or was shown, beyond the target (before/after of a
    /// setting, a period); never PHI beyond what the actor typed. A
    /// search's detail is made from its target.
    pub detail: Option<String>,
}

impl Audit {
    pub fn new(actor: &str, action: &str, target: AuditTarget) -> Audit {
        Audit {
            actor: actor.to_string(),
            action: action.to_string(),
            target,
            detail: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Audit {
        self.detail = Some(detail.into());
        self
    }

    /// The row's (target_type, target_id, patient_id, detail): the one
    /// place a target becomes columns.
    fn columns(
        &self,
    ) -> (
        Option<&'static str>,
        Option<i64>,
        Option<i64>,
        Option<String>,
    ) {
        let detail = self.detail.clone();
        match &self.target {
            AuditTarget::Patient(id) => (Some("patient"), Some(*id), Some(*id), detail),
            AuditTarget::Practice(id) => (Some("practice"), Some(*id), None, detail),
            AuditTarget::Message { id, patient_id } => {
                (Some("message"), Some(*id), *patient_id, detail)
            }
            AuditTarget::Invite(id) => (Some("invite"), Some(*id), None, detail),
            AuditTarget::StaffUser(id) => (Some("staff_user"), Some(*id), None, detail),
            AuditTarget::Search { terms, ids } => {
                let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
                let shown = json!({ "terms": terms, "ids": ids.join(",") }).to_string();
                (Some("search"), None, None, Some(detail.unwrap_or(shown)))
            }
            AuditTarget::None => (None, None, None, detail),
        }
    }
}

const INSERT: &str = "INSERT INTO audit_log (at, actor, action, patient_id, detail, target_type, target_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

impl Store {
    /// Writes `entry` in a transaction of its own: for views and sign-ins,
    /// which change nothing a transaction could share.
    pub async fn audit(&self, entry: &Audit, now: Timestamp) -> Result<()> {
        let mut tx = self.begin_write().await?;
        tx.audit_entry(entry, now).await?;
        tx.commit().await
    }

    pub async fn audit_log(&self, patient_id: Option<i64>, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows: Vec<AuditRow> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, at, actor, action, patient_id, detail, target_type, target_id FROM audit_log \
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
                    detail: r.detail,
                    target_type: r.target_type,
                    target_id: r.target_id,
                })
            })
            .collect()
    }
}

impl Tx {
    /// Writes `entry` in this transaction: it commits with the change, or
    /// neither does.
    pub(crate) async fn audit_entry(&mut self, entry: &Audit, now: Timestamp) -> Result<()> {
        let (target_type, target_id, patient_id, detail) = entry.columns();
        on_tx!(self, c => {
            sqlx::query(INSERT)
                .bind(to_ms(now))
                .bind(&entry.actor)
                .bind(&entry.action)
                .bind(patient_id)
                .bind(&detail)
                .bind(target_type)
                .bind(target_id)
                .execute(c)
                .await.map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// The audit line `source` asked for ([`Source::audited`]), about
    /// `target`, in this transaction; nothing when it asked for none. The
    /// actor is the source's (its channel when it has none).
    pub(crate) async fn audit_change(
        &mut self,
        source: &Source,
        target: AuditTarget,
        now: Timestamp,
    ) -> Result<()> {
        let Some(action) = &source.audit else {
            return Ok(());
        };
        let actor = source.who();
        self.audit_entry(&Audit::new(actor, action, target), now)
            .await
    }

    /// The audit line `source` asked for, once for each of `patients`
    /// (the charts a roster batch wrote), in one statement.
    pub(crate) async fn audit_patients(
        &mut self,
        source: &Source,
        patients: &[i64],
        now: Timestamp,
    ) -> Result<()> {
        let Some(action) = &source.audit else {
            return Ok(());
        };
        let actor = source.who();
        let ids: Vec<PatientId> = patients.iter().map(|&id| PatientId { id }).collect();
        let table = JsonRows::new(self.engine(), 1, PatientId::COLUMNS).table();
        let sql = format!(
            "INSERT INTO audit_log (at, actor, action, patient_id, target_type, target_id) \
             SELECT $2, $3, $4, v.id, 'patient', v.id FROM {table}"
        );
        let json = to_json(&ids)?;
        let persistent = self.keeps_batch_plans();
        on_tx!(self, c => {
            sqlx::query(AssertSqlSafe(sql.as_str()))
                .persistent(persistent)
                .bind(&json)
                .bind(to_ms(now))
                .bind(actor)
                .bind(action)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}

/// A patient's id as a row of a batch's JSON.
#[derive(serde::Serialize)]
struct PatientId {
    id: i64,
}

impl BatchRow for PatientId {
    const COLUMNS: &'static [(&'static str, Col)] = &[("id", Col::Int)];
}
