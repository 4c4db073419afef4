//! A roster import: the charts of a practice's export written many at a
//! time (`enroll import`, the admin page's upload).
//!
//! A roster is the state of the practice's system at go-live, not an
//! event: it adds and updates charts but raises no trigger (R2), so
//! importing sends nothing. The go-live action ("Invite existing
//! patients") is what invites them. An MRN is the key: a row whose values
//! the chart already holds changes nothing, so a second import of the same
//! file writes nothing at all (no timeline line, no audit line).
//!
//! Why not one [`IntakeEvent`](enroll_core::IntakeEvent) per row through
//! `Store::apply_intake`: that is five to eight statements a row, and a
//! go-live roster has up to a million rows. Here a batch of rows is a
//! handful of statements whatever its size (the rows travel as one JSON
//! parameter, as in `batch.rs`); the dashboard's counters follow through
//! the triggers on `patients` as for any other write.

use std::collections::HashMap;

use enroll_core::{Demographics, Field, PatientChange, changed_required_fields};
use jiff::Timestamp;
use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::batch::BatchRow;
use crate::engine::{Col, Engine, JsonRows, to_json};
use crate::intake::retry_races;
use crate::timeline::{TimelineEvent, TimelineRow};
use crate::tx::{Tx, on_tx};
use crate::{Result, Source, Store, StoreError, to_ms};

/// What a batch of rows did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RosterCounts {
    /// Charts added.
    pub created: u64,
    /// Rows that changed a chart (a chart changed by two rows counts twice).
    pub updated: u64,
    /// Rows whose values the chart already held.
    pub unchanged: u64,
}

impl RosterCounts {
    pub fn add(&mut self, other: RosterCounts) {
        self.created += other.created;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
    }

    /// Every row counted.
    pub fn rows(&self) -> u64 {
        self.created + self.updated + self.unchanged
    }
}

impl Store {
    /// Writes one batch of roster rows to the practice in one transaction:
    /// a row of a new MRN adds the chart, a row of a known one writes the
    /// values it gives over the chart's (an MRN merged away writes to its
    /// survivor), and a row that changes nothing writes nothing. Rows
    /// apply in order, so a later row of the same MRN wins. No trigger is
    /// raised (see the module's words). Each chart added or changed gets
    /// its timeline line and, when `source` asks ([`Source::audited`]), its
    /// audit line, in the same transaction.
    ///
    /// The rows' values are expected in the store's form (as
    /// `enroll_core::RosterColumns::patient` gives them); `cleared` and
    /// `deceased` are not read: a roster row only adds what it gives.
    pub async fn import_roster(
        &self,
        practice_id: i64,
        rows: &[PatientChange],
        source: &Source,
        now: Timestamp,
    ) -> Result<RosterCounts> {
        if rows.iter().any(|row| row.mrn.trim().is_empty()) {
            return Err(StoreError::Invalid("a roster row has no MRN".into()));
        }
        // PostgreSQL: another writer may add one of the MRNs between our
        // read and our insert; the next try finds it.
        retry_races(true, move || async move {
            let mut tx = self.begin_write().await?;
            tx.practice(practice_id).await?;
            let known = tx.charts_of_mrns(practice_id, rows).await?;
            let plan = RosterPlan::of(rows, known);
            let added = tx.insert_charts(practice_id, &plan.new, now).await?;
            tx.update_charts(&plan.changed, now).await?;
            let mut lines: Vec<TimelineRow> = added
                .iter()
                .map(|&id| TimelineRow::new(id, &TimelineEvent::ChartAdded))
                .collect();
            for chart in &plan.changed {
                let fields = changed_required_fields(&chart.before, &chart.after);
                let updated = TimelineEvent::DemographicsUpdated {
                    required_fields_changed: &fields,
                };
                lines.push(TimelineRow::new(chart.id, &updated));
            }
            tx.timeline_rows(&lines, to_ms(now), source).await?;
            let written: Vec<i64> = lines.iter().map(|line| line.patient_id).collect();
            tx.audit_patients(source, &written, now).await?;
            tx.commit().await?;
            Ok(plan.counts)
        })
        .await
    }
}

/// A chart as a roster row may change it.
#[derive(Debug, Clone)]
struct KnownChart {
    id: i64,
    demographics: Demographics,
    preferred_language: Option<String>,
}

/// A known chart the batch changes: its values before and after.
#[derive(Debug, Clone)]
struct ChangedChart {
    id: i64,
    before: Demographics,
    after: Demographics,
    preferred_language: Option<String>,
}

/// A chart the batch adds.
#[derive(Debug, Clone)]
struct NewChart {
    mrn: String,
    demographics: Demographics,
    preferred_language: Option<String>,
}

/// What a batch writes, worked out from the rows and the charts they name.
struct RosterPlan {
    new: Vec<NewChart>,
    changed: Vec<ChangedChart>,
    counts: RosterCounts,
}

impl RosterPlan {
    /// Applies the rows in order over the charts `known` (by the MRN each
    /// row gives), so that two rows of one MRN make one chart.
    fn of(rows: &[PatientChange], known: HashMap<String, KnownChart>) -> RosterPlan {
        let mut counts = RosterCounts::default();
        // Each chart the batch touches, by its id (two MRNs may lead to
        // one survivor) or, for a new chart, by its MRN.
        let mut charts: Vec<(Option<KnownChart>, NewChart)> = Vec::new();
        let mut slot_of_id: HashMap<i64, usize> = HashMap::new();
        let mut slot_of_new: HashMap<String, usize> = HashMap::new();
        for row in rows {
            let mrn = row.mrn.trim();
            let slot = match known.get(mrn) {
                Some(chart) => *slot_of_id.entry(chart.id).or_insert_with(|| {
                    charts.push((Some(chart.clone()), current(chart)));
                    charts.len() - 1
                }),
                None => match slot_of_new.get(mrn) {
                    Some(&slot) => slot,
                    None => {
                        counts.created += 1;
                        let mut chart = blank(mrn);
                        overlay(&mut chart, row);
                        slot_of_new.insert(mrn.to_string(), charts.len());
                        charts.push((None, chart));
                        continue;
                    }
                },
            };
            let (_, chart) = &mut charts[slot];
            if overlay(chart, row) {
                counts.updated += 1;
            } else {
                counts.unchanged += 1;
            }
        }
        let mut plan = RosterPlan {
            new: vec![],
            changed: vec![],
            counts,
        };
        for (known, after) in charts {
            match known {
                None => plan.new.push(after),
                Some(before) => {
                    let differs = before.demographics != after.demographics
                        || before.preferred_language != after.preferred_language;
                    if differs {
                        plan.changed.push(ChangedChart {
                            id: before.id,
                            before: before.demographics,
                            after: after.demographics,
                            preferred_language: after.preferred_language,
                        });
                    }
                }
            }
        }
        plan
    }
}

fn current(chart: &KnownChart) -> NewChart {
    NewChart {
        mrn: String::new(),
        demographics: chart.demographics.clone(),
        preferred_language: chart.preferred_language.clone(),
    }
}

fn blank(mrn: &str) -> NewChart {
    NewChart {
        mrn: mrn.to_string(),
        demographics: Demographics::default(),
        preferred_language: None,
    }
}

/// Writes what `row` gives over `chart`; true when a value changed.
fn overlay(chart: &mut NewChart, row: &PatientChange) -> bool {
    let mut changed = false;
    for field in Field::ALL {
        if let Some(value) = row.sent.get(field)
            && chart.demographics.get(field) != Some(value)
        {
            chart.demographics.set(field, Some(value.to_string()));
            changed = true;
        }
    }
    if let Some(language) = &row.preferred_language
        && chart.preferred_language.as_ref() != Some(language)
    {
        chart.preferred_language = Some(language.clone());
        changed = true;
    }
    changed
}

/// A row of the batch's JSON: a chart's values, with its MRN when it is
/// new and its id when it is known.
#[derive(Serialize)]
struct ChartRow<'a> {
    id: Option<i64>,
    mrn: &'a str,
    first_name: Option<&'a str>,
    last_name: Option<&'a str>,
    first_name_lc: Option<String>,
    last_name_lc: Option<String>,
    date_of_birth: Option<&'a str>,
    birth_sex: Option<&'a str>,
    zip: Option<&'a str>,
    email: Option<&'a str>,
    cell_phone: Option<&'a str>,
    preferred_language: Option<&'a str>,
}

impl BatchRow for ChartRow<'_> {
    const COLUMNS: &'static [(&'static str, Col)] = &[
        ("id", Col::Int),
        ("mrn", Col::Text),
        ("first_name", Col::Text),
        ("last_name", Col::Text),
        ("first_name_lc", Col::Text),
        ("last_name_lc", Col::Text),
        ("date_of_birth", Col::Text),
        ("birth_sex", Col::Text),
        ("zip", Col::Text),
        ("email", Col::Text),
        ("cell_phone", Col::Text),
        ("preferred_language", Col::Text),
    ];
}

impl<'a> ChartRow<'a> {
    fn new(
        id: Option<i64>,
        mrn: &'a str,
        d: &'a Demographics,
        preferred_language: Option<&'a str>,
    ) -> ChartRow<'a> {
        ChartRow {
            id,
            mrn,
            first_name: d.first_name.as_deref(),
            last_name: d.last_name.as_deref(),
            first_name_lc: d.first_name.as_deref().map(str::to_lowercase),
            last_name_lc: d.last_name.as_deref().map(str::to_lowercase),
            date_of_birth: d.date_of_birth.as_deref(),
            birth_sex: d.birth_sex.as_deref(),
            zip: d.zip.as_deref(),
            email: d.email.as_deref(),
            cell_phone: d.cell_phone.as_deref(),
            preferred_language,
        }
    }
}

/// The MRNs of a batch, as the JSON rows `v(mrn)`.
#[derive(Serialize)]
struct MrnRow<'a> {
    mrn: &'a str,
}

impl BatchRow for MrnRow<'_> {
    const COLUMNS: &'static [(&'static str, Col)] = &[("mrn", Col::Text)];
}

#[derive(sqlx::FromRow)]
struct KnownRow {
    mrn: String,
    id: i64,
    first_name: Option<String>,
    last_name: Option<String>,
    date_of_birth: Option<String>,
    birth_sex: Option<String>,
    zip: Option<String>,
    email: Option<String>,
    cell_phone: Option<String>,
    preferred_language: Option<String>,
}

impl Tx {
    /// The charts the rows' MRNs name in the practice (a chart merged away
    /// answers with its survivor), locked for this transaction.
    async fn charts_of_mrns(
        &mut self,
        practice_id: i64,
        rows: &[PatientChange],
    ) -> Result<HashMap<String, KnownChart>> {
        let mrns: Vec<MrnRow<'_>> = rows
            .iter()
            .map(|row| MrnRow {
                mrn: row.mrn.trim(),
            })
            .collect();
        let table = JsonRows::new(self.engine(), 1, MrnRow::COLUMNS).table();
        // PostgreSQL locks the charts in id order, so two imports (or an
        // import and an HL7 update) wait for each other instead of
        // deadlocking; SQLite already holds the database's write lock.
        let lock = match self.engine() {
            Engine::Postgres => "ORDER BY s.id FOR UPDATE OF s",
            Engine::Sqlite => "",
        };
        // CROSS JOIN: SQLite then keeps the batch's rows as the outer loop
        // and looks each MRN up by index. Left to itself it scanned the
        // patients and read the JSON for each (a batch took seconds at
        // 70,000 charts). PostgreSQL plans a CROSS JOIN as any other.
        let sql = format!(
            "SELECT p.mrn, s.id, s.first_name, s.last_name, s.date_of_birth, s.birth_sex, \
             s.zip, s.email, s.cell_phone, s.preferred_language \
             FROM {table} CROSS JOIN patients p CROSS JOIN patients s \
             WHERE p.practice_id = $2 AND p.mrn = v.mrn \
             AND s.id = COALESCE(p.merged_into, p.id) {lock}"
        );
        let json = to_json(&mrns)?;
        let persistent = self.keeps_batch_plans();
        let found: Vec<KnownRow> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .persistent(persistent)
                .bind(&json)
                .bind(practice_id)
                .fetch_all(c)
                .await
        })?;
        Ok(found
            .into_iter()
            .map(|row| {
                let chart = KnownChart {
                    id: row.id,
                    demographics: Demographics {
                        first_name: row.first_name,
                        last_name: row.last_name,
                        date_of_birth: row.date_of_birth,
                        birth_sex: row.birth_sex,
                        zip: row.zip,
                        email: row.email,
                        cell_phone: row.cell_phone,
                    },
                    preferred_language: row.preferred_language,
                };
                (row.mrn, chart)
            })
            .collect())
    }

    /// Adds the charts; their ids, in the order given.
    async fn insert_charts(
        &mut self,
        practice_id: i64,
        charts: &[NewChart],
        now: Timestamp,
    ) -> Result<Vec<i64>> {
        if charts.is_empty() {
            return Ok(vec![]);
        }
        let rows: Vec<ChartRow<'_>> = charts
            .iter()
            .map(|c| {
                ChartRow::new(
                    None,
                    &c.mrn,
                    &c.demographics,
                    c.preferred_language.as_deref(),
                )
            })
            .collect();
        let table = JsonRows::new(self.engine(), 1, ChartRow::COLUMNS).table();
        let sql = format!(
            "INSERT INTO patients (practice_id, mrn, first_name, last_name, first_name_lc, \
             last_name_lc, date_of_birth, birth_sex, zip, email, cell_phone, preferred_language, \
             created_at, updated_at) \
             SELECT $2, v.mrn, v.first_name, v.last_name, v.first_name_lc, v.last_name_lc, \
             v.date_of_birth, v.birth_sex, v.zip, v.email, v.cell_phone, v.preferred_language, \
             $3, $3 FROM {table} RETURNING id, mrn"
        );
        let json = to_json(&rows)?;
        let persistent = self.keeps_batch_plans();
        let added: Vec<(i64, String)> = on_tx!(self, c => {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .persistent(persistent)
                .bind(&json)
                .bind(practice_id)
                .bind(to_ms(now))
                .fetch_all(c)
                .await
        })?;
        // RETURNING does not promise the order of the rows: match by MRN.
        let id_of: HashMap<&str, i64> = added.iter().map(|(id, mrn)| (mrn.as_str(), *id)).collect();
        charts
            .iter()
            .map(|c| {
                id_of
                    .get(c.mrn.as_str())
                    .copied()
                    .ok_or_else(|| StoreError::Corrupt("a roster chart was not added".into()))
            })
            .collect()
    }

    /// Writes the charts' new values.
    async fn update_charts(&mut self, charts: &[ChangedChart], now: Timestamp) -> Result<()> {
        let rows: Vec<ChartRow<'_>> = charts
            .iter()
            .map(|c| ChartRow::new(Some(c.id), "", &c.after, c.preferred_language.as_deref()))
            .collect();
        self.write_rows(&rows, Some(to_ms(now)), |v| {
            format!(
                "UPDATE patients SET first_name = v.first_name, last_name = v.last_name, \
                 first_name_lc = v.first_name_lc, last_name_lc = v.last_name_lc, \
                 date_of_birth = v.date_of_birth, birth_sex = v.birth_sex, zip = v.zip, \
                 email = v.email, cell_phone = v.cell_phone, \
                 preferred_language = v.preferred_language, updated_at = $2 \
                 FROM {} WHERE patients.id = v.id AND {}",
                v.table(),
                v.restrict("patients.id", "id")
            )
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::assert_columns;

    fn row(mrn: &str, first: Option<&str>, zip: Option<&str>) -> PatientChange {
        PatientChange {
            mrn: mrn.into(),
            sent: Demographics {
                first_name: first.map(Into::into),
                zip: zip.map(Into::into),
                ..Demographics::default()
            },
            ..PatientChange::default()
        }
    }

    #[test]
    fn the_batch_rows_serialize_to_their_columns() {
        let d = Demographics::default();
        assert_columns(&ChartRow::new(Some(1), "M", &d, None));
        assert_columns(&MrnRow { mrn: "M" });
    }

    #[test]
    fn rows_of_one_mrn_make_one_chart_and_a_repeat_changes_nothing() {
        let known = HashMap::from([(
            "K".to_string(),
            KnownChart {
                id: 7,
                demographics: Demographics {
                    first_name: Some("Ida".into()),
                    zip: Some("60616".into()),
                    ..Demographics::default()
                },
                preferred_language: None,
            },
        )]);
        let rows = [
            row("N", Some("Ann"), None),
            row("N", None, Some("02139")),
            row("K", Some("Ida"), Some("60616")),
            row("K", None, Some("60617")),
            row("N", Some("Ann"), None),
        ];
        let plan = RosterPlan::of(&rows, known);
        assert_eq!(
            plan.counts,
            RosterCounts {
                created: 1,
                updated: 2,
                unchanged: 2
            }
        );
        assert_eq!(plan.new.len(), 1);
        assert_eq!(plan.new[0].demographics.first_name.as_deref(), Some("Ann"));
        assert_eq!(plan.new[0].demographics.zip.as_deref(), Some("02139"));
        assert_eq!(plan.changed.len(), 1);
        assert_eq!(plan.changed[0].id, 7);
        assert_eq!(plan.changed[0].before.zip.as_deref(), Some("60616"));
        assert_eq!(plan.changed[0].after.zip.as_deref(), Some("60617"));
        assert_eq!(plan.changed[0].after.first_name.as_deref(), Some("Ida"));
    }
}
