//! Practices: time zone, Auto Invite Schedule, the go-live switch (R3, R5).

use enroll_core::{E164Phone, PracticeCode, ValidSchedule};
use jiff::Timestamp;
use jiff::civil::Date;

use crate::model::{PRACTICE_COLUMNS, PracticeRow};
use crate::tx::on_tx;
use crate::{Audit, AuditTarget, Channels, Readiness};
use crate::{NewPractice, Practice, Result, Store, StoreError, on_pool, to_ms, unique_violation};
use enroll_core::Field;
use sqlx::AssertSqlSafe;

/// A chart that an invite could go to once its fields are complete.
pub(crate) const INVITABLE: &str = "(activated_at IS NULL AND NOT deceased AND response IS NULL \
     AND NOT email_opted_out)";

/// SQL true when `field` of the patient is blank. The column names come
/// from `Field::key`, constants of ours.
pub(crate) fn blank(field: Field) -> String {
    let column = field.key();
    format!("({column} IS NULL OR TRIM({column}) = '')")
}

/// A practice setting a staff member changes ([`Store::change_practice`]).
#[derive(Debug, Clone, Copy)]
pub enum PracticeChange<'a> {
    Channels(Channels),
    /// R3's switch; a go-live date of `None` keeps the one set before.
    AutoInvites {
        on: bool,
        go_live: Option<Date>,
    },
    Phone(Option<&'a E164Phone>),
    Schedule(&'a ValidSchedule),
}

/// No audit line: the change is not a staff member's request (tests, the
/// demo, the command line's own audit).
const UNAUDITED: Option<(MakeAudit, Timestamp)> = None;
type MakeAudit = fn(&Practice) -> Audit;

impl Store {
    /// Adds a practice, auto invites off. A code that is not a valid
    /// practice code, and a schedule that does not validate (the practice
    /// could not be read back), are refused here, whoever calls. Audited
    /// (`practice.create`, by `actor`) in the same transaction.
    pub async fn create_practice(
        &self,
        new: &NewPractice,
        actor: &str,
        now: Timestamp,
    ) -> Result<Practice> {
        PracticeCode::parse(&new.code).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let schedule = new
            .schedule
            .validate()
            .map_err(|e| StoreError::Invalid(format!("the practice's schedule: {e}")))?;
        let schedule_json = schedule_json(&schedule)?;
        let sql = format!(
            "INSERT INTO practices (code, name, schedule_json, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING {PRACTICE_COLUMNS}"
        );
        let mut tx = self.begin_write().await?;
        let row: std::result::Result<PracticeRow, sqlx::Error> = on_tx!(&mut tx, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(&new.code)
            .bind(&new.name)
            .bind(&schedule_json)
            .bind(to_ms(now))
            .fetch_one(c)
            .await
        });
        let practice = match row {
            // The unique index on the code decides, so two requests racing
            // with one code cannot both succeed.
            Err(e) if unique_violation(&e) => return Err(StoreError::DuplicatePracticeCode),
            other => other?.into_practice()?,
        };
        let audit = Audit::new(actor, "practice.create", AuditTarget::Practice(practice.id));
        tx.audit_entry(&audit, now).await?;
        tx.commit().await?;
        Ok(practice)
    }

    /// How many of the practice's charts could be invited now and what
    /// the others lack ([`Readiness`]), counted in one pass.
    pub async fn readiness(&self, practice_id: i64) -> Result<Readiness> {
        let any_blank: Vec<String> = Field::REQUIRED.into_iter().map(blank).collect();
        let mut counts = vec![
            "COUNT(*)".to_string(),
            format!(
                "COALESCE(SUM(CASE WHEN {INVITABLE} AND NOT ({}) THEN 1 ELSE 0 END), 0)",
                any_blank.join(" OR ")
            ),
        ];
        counts.extend(any_blank.iter().map(|blank| {
            format!("COALESCE(SUM(CASE WHEN {INVITABLE} AND {blank} THEN 1 ELSE 0 END), 0)")
        }));
        let columns: Vec<String> = counts
            .iter()
            .map(|count| format!("CAST({count} AS BIGINT)"))
            .collect();
        let sql = format!(
            "SELECT {} FROM patients WHERE practice_id = $1 AND merged_into IS NULL",
            columns.join(", ")
        );
        let row: Vec<i64> = on_pool!(self, pool => {
            let row = sqlx::query(AssertSqlSafe(sql.as_str())).bind(practice_id).fetch_one(pool).await?;
            (0..columns.len()).map(|i| sqlx::Row::try_get::<i64, _>(&row, i)).collect::<std::result::Result<Vec<i64>, sqlx::Error>>()
        })?;
        Ok(Readiness {
            patients: row[0],
            ready: row[1],
            missing: Field::REQUIRED
                .into_iter()
                .zip(row[2..].iter().copied())
                .collect(),
        })
    }

    pub async fn practice(&self, id: i64) -> Result<Option<Practice>> {
        let row: Option<PracticeRow> = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(format!("SELECT {PRACTICE_COLUMNS} FROM practices WHERE id = $1"))).bind(id).fetch_optional(pool).await
        })?;
        row.map(PracticeRow::into_practice).transpose()
    }

    pub async fn practice_by_code(&self, code: &str) -> Result<Option<Practice>> {
        let row: Option<PracticeRow> = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(format!("SELECT {PRACTICE_COLUMNS} FROM practices WHERE code = $1"))).bind(code).fetch_optional(pool).await
        })?;
        row.map(PracticeRow::into_practice).transpose()
    }

    pub async fn practices(&self) -> Result<Vec<Practice>> {
        let rows: Vec<PracticeRow> = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(format!("SELECT {PRACTICE_COLUMNS} FROM practices ORDER BY id"))).fetch_all(pool).await
        })?;
        rows.into_iter().map(PracticeRow::into_practice).collect()
    }

    /// The channels the practice's invites go by; refused when both are off
    /// (an invite could then reach no one).
    pub async fn set_channels(&self, practice_id: i64, channels: Channels) -> Result<Practice> {
        self.write_practice_change(practice_id, PracticeChange::Channels(channels), UNAUDITED)
            .await
    }

    /// Turns auto invites on or off (R3). Turning them on does not queue the
    /// backlog: only triggers from now on are decided.
    pub async fn set_auto_invites(
        &self,
        practice_id: i64,
        on: bool,
        go_live: Option<Date>,
    ) -> Result<Practice> {
        let change = PracticeChange::AutoInvites { on, go_live };
        self.write_practice_change(practice_id, change, UNAUDITED)
            .await
    }

    /// Sets (or, with `None`, clears) the practice's phone number, E.164.
    pub async fn set_practice_phone(
        &self,
        practice_id: i64,
        phone: Option<&E164Phone>,
    ) -> Result<Practice> {
        self.write_practice_change(practice_id, PracticeChange::Phone(phone), UNAUDITED)
            .await
    }

    /// Replaces the schedule.
    pub async fn set_schedule(
        &self,
        practice_id: i64,
        schedule: &ValidSchedule,
    ) -> Result<Practice> {
        self.write_practice_change(practice_id, PracticeChange::Schedule(schedule), UNAUDITED)
            .await
    }

    /// A setting changed by a staff member: the change and its audit line,
    /// made by `audit` from the practice as written (the setting after), in
    /// one transaction.
    pub async fn change_practice<F>(
        &self,
        practice_id: i64,
        change: PracticeChange<'_>,
        audit: F,
        now: Timestamp,
    ) -> Result<Practice>
    where
        F: FnOnce(&Practice) -> Audit + Send,
    {
        self.write_practice_change(practice_id, change, Some((audit, now)))
            .await
    }

    async fn write_practice_change<F>(
        &self,
        practice_id: i64,
        change: PracticeChange<'_>,
        audit: Option<(F, Timestamp)>,
    ) -> Result<Practice>
    where
        F: FnOnce(&Practice) -> Audit + Send,
    {
        if let PracticeChange::Channels(channels) = change
            && !channels.email
            && !channels.sms
        {
            return Err(StoreError::Invalid(
                "keep at least one channel on: with email and text messages both off no invite could reach a patient".into(),
            ));
        }
        let mut tx = self.begin_write().await?;
        let changed = match change {
            PracticeChange::Channels(channels) => on_tx!(&mut tx, c => {
                sqlx::query("UPDATE practices SET email_on = $1, sms_on = $2 WHERE id = $3")
                    .bind(channels.email)
                    .bind(channels.sms)
                    .bind(practice_id)
                    .execute(c)
                    .await
                    .map(|r| r.rows_affected())
            })?,
            PracticeChange::AutoInvites { on, go_live } => {
                let go_live = go_live.map(|d| d.to_string());
                on_tx!(&mut tx, c => {
                    sqlx::query(
                        "UPDATE practices SET auto_invites_on = $1, go_live_date = COALESCE($2, go_live_date) WHERE id = $3",
                    )
                    .bind(on)
                    .bind(&go_live)
                    .bind(practice_id)
                    .execute(c)
                    .await.map(|r| r.rows_affected())
                })?
            }
            PracticeChange::Phone(phone) => on_tx!(&mut tx, c => {
                sqlx::query("UPDATE practices SET phone = $1 WHERE id = $2")
                    .bind(phone.map(E164Phone::as_str))
                    .bind(practice_id)
                    .execute(c)
                    .await.map(|r| r.rows_affected())
            })?,
            PracticeChange::Schedule(schedule) => {
                let json = schedule_json(schedule)?;
                on_tx!(&mut tx, c => {
                    sqlx::query("UPDATE practices SET schedule_json = $1 WHERE id = $2")
                        .bind(&json)
                        .bind(practice_id)
                        .execute(c)
                        .await.map(|r| r.rows_affected())
                })?
            }
        };
        if changed == 0 {
            return Err(StoreError::NotFound("practice"));
        }
        let practice = tx.practice(practice_id).await?;
        if let Some((audit, now)) = audit {
            tx.audit_entry(&audit(&practice), now).await?;
        }
        tx.commit().await?;
        Ok(practice)
    }
}

fn schedule_json(schedule: &ValidSchedule) -> Result<String> {
    serde_json::to_string(&schedule.schedule)
        .map_err(|e| StoreError::Corrupt(format!("schedule: {e}")))
}
