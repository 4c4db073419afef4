//! The rollup of the CMS measure (migration 0016): one row per patient's
//! visit on a local date of the practice, with whether access was given
//! by that visit's deadline. A patient is in a period's denominator when
//! they have a row in it, and in its numerator when one of those rows is
//! timely (core's `visit_is_timely`, the per-visit half of
//! `measure_patient`), so any period is two distinct counts over an
//! index instead of reading every visit and delivery into Rust.
//!
//! The rows need the practice's zone and closed dates, so they are
//! computed here, not in SQL: the triggers only list in `measure_stale`
//! the patients whose visits, delivered invites or activation changed,
//! and [`Store::refresh_measure`] computes those again before a count.
//! A practice whose zone or closed dates changed is computed again whole.

use std::collections::HashMap;

use enroll_core::{AccessFacts, visit_date, visit_is_timely};
use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::batch::BatchRow;
use crate::dashboard::in_practices;
use crate::engine::Col;
use crate::tx::{Tx, on_tx};
use crate::{Practice, Result, Store, on_pool};

/// Patients one refreshing transaction takes from `measure_stale`.
const REFRESH_BATCH: i64 = 2_000;

/// The CMS measure's two numbers for a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MeasureCounts {
    /// Patients with a visit in the period.
    pub denominator: i64,
    /// Those given access by a visit's deadline.
    pub numerator: i64,
}

/// One row of `measure_visits`.
#[derive(Debug, Serialize)]
struct VisitRow {
    practice_id: i64,
    visit_date: String,
    patient_id: i64,
    timely: i64,
}

impl BatchRow for VisitRow {
    const COLUMNS: &'static [(&'static str, Col)] = &[
        ("practice_id", Col::Int),
        ("visit_date", Col::Text),
        ("patient_id", Col::Int),
        ("timely", Col::Int),
    ];
}

/// What a practice's rows depend on besides the patients' facts.
fn fingerprint(practice: &Practice) -> String {
    let schedule = &practice.schedule;
    let closed: Vec<String> = schedule
        .schedule
        .closed_dates
        .iter()
        .map(Date::to_string)
        .collect();
    format!(
        "{}|{}",
        schedule.tz.iana_name().unwrap_or("fixed"),
        closed.join(",")
    )
}

impl Store {
    /// The measure for `practices` over the local dates `from..=to`, from
    /// the rollup after bringing it up to date.
    pub async fn measure_counts(
        &self,
        practices: &[i64],
        from: Date,
        to: Date,
    ) -> Result<MeasureCounts> {
        self.refresh_measure().await?;
        if practices.is_empty() {
            return Ok(MeasureCounts::default());
        }
        let sql = format!(
            "SELECT COUNT(DISTINCT patient_id), COUNT(DISTINCT CASE WHEN timely THEN patient_id END) \
             FROM measure_visits WHERE visit_date >= $1 AND visit_date <= $2{}",
            in_practices("practice_id", Some(practices))
        );
        let (denominator, numerator): (i64, i64) = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(from.to_string())
                .bind(to.to_string())
                .fetch_one(pool)
                .await
        })?;
        Ok(MeasureCounts {
            denominator,
            numerator,
        })
    }

    /// Computes again the rows of every patient the triggers listed, and
    /// every practice's rows whose zone or closed dates changed since.
    pub async fn refresh_measure(&self) -> Result<()> {
        let practices = self.practices().await?;
        let built: Vec<(i64, String)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT practice_id, fingerprint FROM measure_built")
                .fetch_all(pool)
                .await
        })?;
        let built: HashMap<i64, String> = built.into_iter().collect();
        for practice in &practices {
            let wanted = fingerprint(practice);
            if built.get(&practice.id) != Some(&wanted) {
                self.rebuild_measure(practice, &wanted).await?;
            }
        }
        let by_id: HashMap<i64, Practice> = practices.into_iter().map(|p| (p.id, p)).collect();
        // A read first, so an up-to-date rollup costs no write transaction.
        while self.measure_is_stale().await? {
            if self.refresh_measure_batch(&by_id).await? == 0 {
                break;
            }
        }
        Ok(())
    }

    async fn measure_is_stale(&self) -> Result<bool> {
        let any: Option<i64> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT patient_id FROM measure_stale LIMIT 1")
                .fetch_optional(pool)
                .await
        })?;
        Ok(any.is_some())
    }

    /// Lists every patient of `practice` with a visit for computing again
    /// and records the schedule `wanted` they will be computed with.
    async fn rebuild_measure(&self, practice: &Practice, wanted: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for sql in [
            "DELETE FROM measure_visits WHERE practice_id = $1",
            "INSERT INTO measure_stale (patient_id) SELECT DISTINCT patient_id FROM encounters \
             WHERE practice_id = $1 ON CONFLICT DO NOTHING",
        ] {
            on_tx!(&mut tx, c => {
                sqlx::query(sql).bind(practice.id).execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        on_tx!(&mut tx, c => {
            sqlx::query(
                "INSERT INTO measure_built (practice_id, fingerprint) VALUES ($1, $2) \
                 ON CONFLICT (practice_id) DO UPDATE SET fingerprint = excluded.fingerprint",
            )
            .bind(practice.id)
            .bind(wanted)
            .execute(c)
            .await
            .map(|r| r.rows_affected())
        })?;
        tx.commit().await
    }

    /// Takes up to [`REFRESH_BATCH`] listed patients off the list and
    /// writes their rows; the number taken. The patients are locked
    /// before their facts are read (PostgreSQL), so a change that listed
    /// one of them again either is seen here or lists them afresh after
    /// this commits.
    async fn refresh_measure_batch(&self, practices: &HashMap<i64, Practice>) -> Result<usize> {
        let mut tx = self.begin_write().await?;
        let taken_sql = format!(
            "DELETE FROM measure_stale WHERE patient_id IN \
             (SELECT patient_id FROM measure_stale ORDER BY patient_id LIMIT {REFRESH_BATCH}) \
             RETURNING patient_id"
        );
        let mut ids: Vec<i64> = on_tx!(&mut tx, c => {
            sqlx::query_scalar(AssertSqlSafe(taken_sql.as_str())).fetch_all(c).await
        })?;
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        ids.sort_unstable();
        let rows = tx.measure_rows(&ids, practices).await?;
        let (listed, json) = tx.id_list("patient_id", ids.iter().copied())?;
        let clear = format!("DELETE FROM measure_visits WHERE {listed}");
        on_tx!(&mut tx, c => {
            sqlx::query(AssertSqlSafe(clear.as_str())).bind(&json).execute(c).await.map(|r| r.rows_affected())
        })?;
        tx.write_rows(&rows, None, |v| {
            format!(
                "INSERT INTO measure_visits (practice_id, visit_date, patient_id, timely) \
                 SELECT v.practice_id, v.visit_date, v.patient_id, v.timely <> 0 FROM {} WHERE TRUE \
                 ON CONFLICT (practice_id, visit_date, patient_id) DO UPDATE SET timely = excluded.timely",
                v.table()
            )
        })
        .await?;
        tx.commit().await?;
        Ok(ids.len())
    }
}

/// A patient's facts as the rollup reads them.
type PatientFacts = (i64, i64, Option<i64>, Option<i64>);

impl Tx {
    /// The rows of `ids` (ascending), from their current facts: a chart
    /// merged away has none, and only visits recorded at the patient's
    /// own practice count (as in `Store::cms_measure`).
    async fn measure_rows(
        &mut self,
        ids: &[i64],
        practices: &HashMap<i64, Practice>,
    ) -> Result<Vec<VisitRow>> {
        let (listed, json) = self.id_list("id", ids.iter().copied())?;
        let sql = format!(
            "SELECT id, practice_id, merged_into, activated_at FROM patients WHERE {listed} ORDER BY id {}",
            self.row_lock()
        );
        let patients: Vec<PatientFacts> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(&json).fetch_all(c).await
        })?;
        let (listed, json) = self.id_list("patient_id", ids.iter().copied())?;
        let sql = format!(
            "SELECT patient_id, practice_id, admitted_at, created_at FROM encounters WHERE {listed}"
        );
        let encounters: Vec<(i64, i64, Option<String>, i64)> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(&json).fetch_all(c).await
        })?;
        let sql = format!(
            "SELECT patient_id, sent_at FROM invites WHERE state = 'sent' AND sent_at IS NOT NULL AND {listed}"
        );
        let sent: Vec<(i64, i64)> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(&json).fetch_all(c).await
        })?;
        let mut visits: HashMap<i64, Vec<(i64, Option<String>, i64)>> = HashMap::new();
        for (patient, practice, admitted, created) in encounters {
            visits
                .entry(patient)
                .or_default()
                .push((practice, admitted, created));
        }
        let mut delivered: HashMap<i64, Vec<i64>> = HashMap::new();
        for (patient, at) in sent {
            delivered.entry(patient).or_default().push(at);
        }
        let mut rows = Vec::new();
        for (id, practice_id, merged_into, activated_at) in patients {
            let Some(practice) = practices.get(&practice_id) else {
                continue;
            };
            if merged_into.is_some() {
                continue;
            }
            let own_visits: Vec<(Option<String>, i64)> = visits
                .remove(&id)
                .unwrap_or_default()
                .into_iter()
                .filter(|(at, _, _)| *at == practice_id)
                .map(|(_, admitted, created)| (admitted, created))
                .collect();
            rows.extend(patient_rows(
                id,
                practice,
                &own_visits,
                &delivered.remove(&id).unwrap_or_default(),
                activated_at,
            ));
        }
        Ok(rows)
    }
}

/// One patient's rows: each distinct visit date, timely or not.
fn patient_rows(
    patient_id: i64,
    practice: &Practice,
    visits: &[(Option<String>, i64)],
    delivered: &[i64],
    activated_at: Option<i64>,
) -> Vec<VisitRow> {
    let tz = &practice.schedule.tz;
    let closed = &practice.schedule.schedule.closed_dates;
    let date_of = |ms: i64| {
        Timestamp::from_millisecond(ms)
            .ok()
            .map(|at| tz.to_datetime(at).date())
    };
    let mut dates: Vec<Date> = visits
        .iter()
        .filter_map(|(admitted, created)| {
            date_of(*created).map(|recorded| visit_date(admitted.as_deref(), recorded))
        })
        .collect();
    dates.sort();
    dates.dedup();
    let facts = AccessFacts {
        visits: dates.clone(),
        delivered: delivered.iter().filter_map(|&ms| date_of(ms)).collect(),
        activated: activated_at.and_then(date_of),
    };
    dates
        .into_iter()
        .map(|visit| VisitRow {
            practice_id: practice.id,
            visit_date: visit.to_string(),
            patient_id,
            timely: i64::from(visit_is_timely(&facts, visit, closed)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visit_rows_serialize_to_their_columns() {
        crate::batch::assert_columns(&VisitRow {
            practice_id: 1,
            visit_date: "2026-11-27".into(),
            patient_id: 2,
            timely: 1,
        });
    }
}
