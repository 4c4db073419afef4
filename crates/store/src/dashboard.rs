//! The enrollment dashboard's numbers and the CMS measure's facts, for
//! one practice or a set of them (`None`: the whole enterprise). The
//! counts come from the rollups migration 0016 keeps with triggers (per
//! practice, so a page at a million patients reads a few rows);
//! [`Store::recount_dashboard`] counts the same afresh from the tables,
//! with the work lists' own conditions, and the tests hold the two equal.

use std::collections::HashMap;

use enroll_core::{
    AccessFacts, Field, MeasureOutcome, access_deadline, measure_patient, visit_date,
};
use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};
use sqlx::AssertSqlSafe;

use crate::practices::{INVITABLE, blank};
use crate::tx::on_tx;
use crate::{Practice, Result, Store, on_pool, to_ms};

/// The days the dashboard's charts cover.
pub const CHART_DAYS: i64 = 90;
/// Events are counted in buckets this long and placed on local dates in
/// Rust, so every zone's days are exact (15 minutes: Nepal is +05:45).
const BUCKET_MS: i64 = 15 * 60 * 1000;
/// A patient's first delivered invite, read from the invites.
const FIRST_DELIVERY: &str =
    "(SELECT MIN(i.sent_at) FROM invites i WHERE i.patient_id = p.id AND i.state = 'sent')";
const DAY_MS: i64 = 86_400_000;
/// Change rows summed on the fly before a view folds them into the totals.
const FOLD_AFTER_CHANGES: i64 = 1_000;
/// The counted columns of `dashboard_counters` and `dashboard_changes`.
pub(crate) const COUNTED: [&str; 8] = [
    "patients",
    "invitable",
    "missing_fields",
    "activated",
    "opted_out",
    "invited",
    "suppressed",
    "failed",
];

/// The dashboard's counts of patients (merged charts excluded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DashboardCounts {
    pub patients: i64,
    /// Could be invited: not active, deceased, declined or deferred, not
    /// opted out of email, every required field present.
    pub eligible: i64,
    /// Sent at least one invite that is delivered (a merged chart's
    /// invites count for the survivor).
    pub invited: i64,
    pub activated: i64,
    /// The work lists' totals.
    pub missing_fields: i64,
    pub suppressed: i64,
    pub opted_out: i64,
    pub failed_deliveries: i64,
    /// Over the patients activated in the chart's days.
    pub median_to_activation: Option<SignedDuration>,
}

/// One local date of the charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayCount {
    pub date: Date,
    pub invites_sent: i64,
    pub activations: i64,
}

/// One patient of the CMS measure's denominator and how they fare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasuredPatient {
    pub patient_id: i64,
    pub practice_id: i64,
    pub outcome: MeasureOutcome,
}

/// `AND <column> IN (...)` for a set of practices; ids are integers we
/// hold, never text from outside, so they are inlined.
pub(crate) fn in_practices(column: &str, practices: Option<&[i64]>) -> String {
    match practices {
        None => String::new(),
        Some(ids) => {
            let list: Vec<String> = ids.iter().map(i64::to_string).collect();
            format!(" AND {column} IN ({})", list.join(", "))
        }
    }
}

impl Store {
    /// The dashboard's counts for `practices` (`None`: every practice),
    /// from the rollups of migration 0016: each practice's folded totals
    /// plus the change rows the triggers wrote since. The change rows are
    /// folded in first once there are more than [`FOLD_AFTER_CHANGES`].
    pub async fn dashboard_counts(
        &self,
        practices: Option<&[i64]>,
        now: Timestamp,
    ) -> Result<DashboardCounts> {
        if practices.is_some_and(<[i64]>::is_empty) {
            return Ok(DashboardCounts::default());
        }
        self.fold_dashboard_changes_if_many().await?;
        let sums: Vec<String> = COUNTED
            .iter()
            .map(|c| format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT)"))
            .collect();
        let columns = COUNTED.join(", ");
        let sql = format!(
            "SELECT {} FROM (SELECT practice_id, {columns} FROM dashboard_counters \
             UNION ALL SELECT practice_id, {columns} FROM dashboard_changes) AS t WHERE TRUE{}",
            sums.join(", "),
            in_practices("practice_id", practices)
        );
        let row: (i64, i64, i64, i64, i64, i64, i64, i64) = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(sql.as_str())).fetch_one(pool).await
        })?;
        let (
            patients,
            invitable,
            missing_fields,
            activated,
            opted_out,
            invited,
            suppressed,
            failed,
        ) = row;
        Ok(DashboardCounts {
            patients,
            eligible: invitable - missing_fields,
            invited,
            activated,
            missing_fields,
            suppressed,
            opted_out,
            failed_deliveries: failed,
            // Kept by the invites' triggers; the index patients_activated
            // holds all three columns.
            median_to_activation: self
                .median_to_activation(practices, now, "p.first_sent_at")
                .await?,
        })
    }

    /// Folds the change rows in when either table holds more than
    /// [`FOLD_AFTER_CHANGES`].
    async fn fold_dashboard_changes_if_many(&self) -> Result<()> {
        for table in ["dashboard_changes", "dashboard_bucket_changes"] {
            let pending = self
                .count(&format!(
                    "SELECT COUNT(*) FROM (SELECT 1 FROM {table} LIMIT {}) AS c",
                    FOLD_AFTER_CHANGES + 1
                ))
                .await?;
            if pending > FOLD_AFTER_CHANGES {
                return self.fold_dashboard_changes().await;
            }
        }
        Ok(())
    }

    /// Adds the change rows to the totals and removes them, in one write
    /// transaction (see [`crate::engine::Engine::fold_dashboard_changes`]).
    pub async fn fold_dashboard_changes(&self) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for sql in tx.engine().fold_dashboard_changes() {
            on_tx!(&mut tx, c => {
                sqlx::query(AssertSqlSafe(sql.as_str())).execute(c).await.map(|r| r.rows_affected())
            })?;
        }
        tx.commit().await
    }

    /// The counts of [`Store::dashboard_counts`] counted afresh from the
    /// tables, over the indexes of migration 0015 (about 5 s for the
    /// enterprise at a million patients). The rollups of migration 0016
    /// must always agree with it: the tests check that they do after every
    /// kind of change.
    pub async fn recount_dashboard(
        &self,
        practices: Option<&[i64]>,
        now: Timestamp,
    ) -> Result<DashboardCounts> {
        if practices.is_some_and(<[i64]>::is_empty) {
            return Ok(DashboardCounts::default());
        }
        let live = format!(
            "merged_into IS NULL{}",
            in_practices("practice_id", practices)
        );
        let any_blank: Vec<String> = Field::REQUIRED.into_iter().map(blank).collect();
        let any_blank = any_blank.join(" OR ");
        // Live patients (of the practices) that also meet `condition`.
        let count_live = |condition: String| {
            let sql = format!("SELECT COUNT(*) FROM patients WHERE {live} AND {condition}");
            async move { self.count(&sql).await }
        };
        let patients = count_live("TRUE".into()).await?;
        let invitable = count_live(INVITABLE.into()).await?;
        let missing_fields = count_live(format!("{INVITABLE} AND ({any_blank})")).await?;
        let activated = count_live("activated_at IS NOT NULL".into()).await?;
        let opted_out = count_live("(email_opted_out OR sms_opted_out)".into()).await?;
        let invited = count_live(
            "EXISTS (SELECT 1 FROM invites i WHERE i.patient_id = patients.id AND i.state = 'sent')"
                .into(),
        )
        .await?;
        Ok(DashboardCounts {
            patients,
            eligible: invitable - missing_fields,
            invited,
            activated,
            missing_fields,
            suppressed: self.latest_invite_count("suppressed", practices).await?,
            opted_out,
            failed_deliveries: self.latest_invite_count("failed", practices).await?,
            median_to_activation: self
                .median_to_activation(practices, now, FIRST_DELIVERY)
                .await?,
        })
    }

    async fn count(&self, sql: &str) -> Result<i64> {
        Ok(on_pool!(self, pool => {
            sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql)).fetch_one(pool).await
        })?)
    }

    /// Patients not active whose latest invite is in `state` (as the work
    /// lists `WorkList::FailedDeliveries` and `Suppressed` count them).
    async fn latest_invite_count(&self, state: &str, practices: Option<&[i64]>) -> Result<i64> {
        let sql = format!(
            "SELECT COUNT(*) FROM invites i JOIN patients p ON p.id = i.patient_id \
             WHERE i.state = '{state}'{} AND p.activated_at IS NULL AND p.merged_into IS NULL \
             AND NOT EXISTS (SELECT 1 FROM invites j WHERE j.patient_id = i.patient_id AND j.id > i.id)",
            in_practices("i.practice_id", practices)
        );
        self.count(&sql).await
    }

    /// The median of (activation - first delivered invite) over the
    /// patients who activated in the chart's days; the first delivery is
    /// `first_sent` of the patient row `p`. The database sorts and picks
    /// the lower middle value (two statements: the count, then that row),
    /// so tens of thousands of durations never travel to Rust.
    async fn median_to_activation(
        &self,
        practices: Option<&[i64]>,
        now: Timestamp,
        first_sent: &str,
    ) -> Result<Option<SignedDuration>> {
        let since = to_ms(now) - CHART_DAYS * 86_400_000;
        let durations = format!(
            "SELECT p.activated_at - {first_sent} AS d \
             FROM patients p WHERE p.activated_at IS NOT NULL AND p.activated_at >= $1 \
             AND p.merged_into IS NULL{} AND p.activated_at - {first_sent} >= 0",
            in_practices("p.practice_id", practices)
        );
        let count_sql = format!("SELECT COUNT(*) FROM ({durations}) AS t");
        let count: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(AssertSqlSafe(count_sql.as_str())).bind(since).fetch_one(pool).await
        })?;
        if count == 0 {
            return Ok(None);
        }
        let middle_sql = format!("SELECT d FROM ({durations}) AS t ORDER BY d LIMIT 1 OFFSET $2");
        let middle: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(AssertSqlSafe(middle_sql.as_str()))
                .bind(since)
                .bind((count - 1) / 2)
                .fetch_one(pool)
                .await
        })?;
        Ok(Some(SignedDuration::from_millis(middle)))
    }

    /// Invites sent and activations per local date (in `tz`) of the last
    /// [`CHART_DAYS`] days, oldest first, today last, from the buckets of
    /// migration 0018 (folded totals plus change rows).
    pub async fn dashboard_days(
        &self,
        practices: Option<&[i64]>,
        tz: &TimeZone,
        now: Timestamp,
    ) -> Result<Vec<DayCount>> {
        self.fold_dashboard_changes_if_many().await?;
        let (mut days, start) = chart_days(tz, now);
        // Summed per local date by the database: the date of a bucket is
        // its start plus the zone's offset then, and the offsets of the
        // chart's days are a few constants (one per DST period).
        let day = local_day_sql("bucket", tz, start, now);
        let sql = format!(
            "SELECT {day} AS day, CAST(SUM(invites_sent) AS BIGINT), CAST(SUM(activations) AS BIGINT) \
             FROM (SELECT bucket, practice_id, invites_sent, activations FROM dashboard_buckets \
                   WHERE bucket >= $1 \
                   UNION ALL SELECT bucket, practice_id, invites_sent, activations \
                   FROM dashboard_bucket_changes WHERE bucket >= $1) AS t \
             WHERE TRUE{} GROUP BY {day}",
            in_practices("practice_id", practices)
        );
        // Local midnight is a whole number of buckets in every zone
        // (offsets are multiples of 15 minutes).
        let rows: Vec<(i64, i64, i64)> = on_pool!(self, pool => {
            sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(to_ms(start).div_euclid(BUCKET_MS))
                .fetch_all(pool)
                .await
        })?;
        let epoch = jiff::civil::date(1970, 1, 1);
        let index: HashMap<Date, usize> =
            days.iter().enumerate().map(|(i, d)| (d.date, i)).collect();
        for (day, sent, activated) in rows {
            let Some(&i) = epoch
                .checked_add(day.days())
                .ok()
                .and_then(|date| index.get(&date))
            else {
                continue;
            };
            days[i].invites_sent += sent;
            days[i].activations += activated;
        }
        Ok(days)
    }

    /// [`Store::dashboard_days`] counted afresh from the invites and
    /// patients (the rollups must always agree with it).
    pub async fn recount_dashboard_days(
        &self,
        practices: Option<&[i64]>,
        tz: &TimeZone,
        now: Timestamp,
    ) -> Result<Vec<DayCount>> {
        let (mut days, start) = chart_days(tz, now);
        let sent = self
            .buckets(
                &format!(
                    "SELECT sent_at / {BUCKET_MS}, COUNT(*) FROM invites WHERE state = 'sent' \
                     AND sent_at >= $1{} GROUP BY sent_at / {BUCKET_MS}",
                    in_practices("practice_id", practices)
                ),
                start,
            )
            .await?;
        let activated = self
            .buckets(
                &format!(
                    "SELECT activated_at / {BUCKET_MS}, COUNT(*) FROM patients \
                     WHERE activated_at >= $1 AND merged_into IS NULL{} \
                     GROUP BY activated_at / {BUCKET_MS}",
                    in_practices("practice_id", practices)
                ),
                start,
            )
            .await?;
        let rows = sent
            .into_iter()
            .map(|(bucket, n)| (bucket, n, 0))
            .chain(activated.into_iter().map(|(bucket, n)| (bucket, 0, n)));
        place_on_days(&mut days, tz, rows);
        Ok(days)
    }

    async fn buckets(&self, sql: &str, since: Timestamp) -> Result<Vec<(i64, i64)>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as::<_, (i64, i64)>(AssertSqlSafe(sql))
                .bind(to_ms(since))
                .fetch_all(pool)
                .await
        })?)
    }

    /// The CMS measure for one practice over the local dates `from..=to`:
    /// every patient with a visit in the period, with the outcome
    /// `enroll_core::measure_patient` gives from their facts.
    pub async fn cms_measure(
        &self,
        practice: &Practice,
        from: Date,
        to: Date,
    ) -> Result<Vec<MeasuredPatient>> {
        let schedule = &practice.schedule;
        let closed = &schedule.schedule.closed_dates;
        let tz = &schedule.tz;
        // Visits by the admit date the EHR sent, or by when they were
        // recorded (a day either side for the zone; filtered below).
        let slack = SignedDuration::from_hours(48);
        let after_to = to.tomorrow().unwrap_or(to);
        let recorded_from = local_start(tz, from)
            .checked_sub(slack)
            .unwrap_or(Timestamp::MIN);
        let recorded_to = local_start(tz, after_to)
            .checked_add(slack)
            .unwrap_or(Timestamp::MAX);
        let visits_sql = "SELECT e.patient_id, e.admitted_at, e.created_at, p.activated_at \
             FROM encounters e JOIN patients p ON p.id = e.patient_id \
             WHERE e.practice_id = $1 AND p.merged_into IS NULL AND p.practice_id = $1 \
             AND ((e.admitted_at >= $2 AND e.admitted_at < $3) \
               OR (e.created_at >= $4 AND e.created_at < $5))";
        let rows: Vec<(i64, Option<String>, i64, Option<i64>)> = on_pool!(self, pool => {
            sqlx::query_as(visits_sql)
                .bind(practice.id)
                .bind(compact(from))
                .bind(compact(after_to))
                .bind(to_ms(recorded_from))
                .bind(to_ms(recorded_to))
                .fetch_all(pool)
                .await
        })?;
        let date_of = |ms: i64| {
            Timestamp::from_millisecond(ms)
                .ok()
                .map(|at| tz.to_datetime(at).date())
        };
        let mut facts: HashMap<i64, AccessFacts> = HashMap::new();
        for (patient_id, admitted_at, created_at, activated_at) in rows {
            let Some(recorded) = date_of(created_at) else {
                continue;
            };
            let visit = visit_date(admitted_at.as_deref(), recorded);
            if visit < from || visit > to {
                continue;
            }
            let entry = facts.entry(patient_id).or_default();
            entry.visits.push(visit);
            entry.activated = activated_at.and_then(date_of);
        }
        let last_deadline = local_start(tz, access_deadline(to, closed).tomorrow().unwrap_or(to));
        for (patient_id, sent_at) in self
            .delivered_between(
                &facts,
                local_start(tz, from)
                    .checked_sub(slack)
                    .unwrap_or(Timestamp::MIN),
                last_deadline.checked_add(slack).unwrap_or(Timestamp::MAX),
            )
            .await?
        {
            if let (Some(entry), Some(date)) = (facts.get_mut(&patient_id), date_of(sent_at)) {
                entry.delivered.push(date);
            }
        }
        let mut measured: Vec<MeasuredPatient> = facts
            .into_iter()
            .map(|(patient_id, facts)| MeasuredPatient {
                patient_id,
                practice_id: practice.id,
                outcome: measure_patient(&facts, closed),
            })
            .collect();
        measured.sort_by_key(|m| m.patient_id);
        Ok(measured)
    }

    /// (patient, sent_at) of the delivered invites of `patients` sent in
    /// `[since, until)`.
    async fn delivered_between(
        &self,
        patients: &HashMap<i64, AccessFacts>,
        since: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<(i64, i64)>> {
        let mut found = Vec::new();
        let ids: Vec<i64> = patients.keys().copied().collect();
        for chunk in ids.chunks(5_000) {
            let list: Vec<String> = chunk.iter().map(i64::to_string).collect();
            let sql = format!(
                "SELECT patient_id, sent_at FROM invites WHERE state = 'sent' \
                 AND sent_at >= $1 AND sent_at < $2 AND patient_id IN ({})",
                list.join(", ")
            );
            let rows: Vec<(i64, i64)> = on_pool!(self, pool => {
                sqlx::query_as(AssertSqlSafe(sql.as_str()))
                    .bind(to_ms(since))
                    .bind(to_ms(until))
                    .fetch_all(pool)
                    .await
            })?;
            found.extend(rows);
        }
        Ok(found)
    }
}

/// The chart's days at zero, and the first instant of the first one.
fn chart_days(tz: &TimeZone, now: Timestamp) -> (Vec<DayCount>, Timestamp) {
    let today = tz.to_datetime(now).date();
    let first = today.checked_sub((CHART_DAYS - 1).days()).unwrap_or(today);
    let days = (0..CHART_DAYS)
        .filter_map(|n| first.checked_add(n.days()).ok())
        .map(|date| DayCount {
            date,
            invites_sent: 0,
            activations: 0,
        })
        .collect();
    (days, local_start(tz, first))
}

/// Adds (bucket, invites sent, activations) to the local date each
/// bucket starts on; buckets outside the days are left out.
fn place_on_days(
    days: &mut [DayCount],
    tz: &TimeZone,
    rows: impl IntoIterator<Item = (i64, i64, i64)>,
) {
    let index: HashMap<Date, usize> = days.iter().enumerate().map(|(i, d)| (d.date, i)).collect();
    for (bucket, sent, activated) in rows {
        let Ok(at) = Timestamp::from_millisecond(bucket.saturating_mul(BUCKET_MS)) else {
            continue;
        };
        if let Some(&i) = index.get(&tz.to_datetime(at).date()) {
            days[i].invites_sent += sent;
            days[i].activations += activated;
        }
    }
}

/// SQL for the local date, as days since 1970-01-01, of the bucket in
/// `column`, exact from `start` to `end`: the zone's offset at each
/// bucket's start, a `CASE` over the zone's transitions in between (DST
/// changes fall on bucket boundaries, offsets being whole quarter hours).
/// Every number is computed here, none comes from outside.
fn local_day_sql(column: &str, tz: &TimeZone, start: Timestamp, end: Timestamp) -> String {
    let offset_ms = |at: Timestamp| i64::from(tz.to_offset(at).seconds()) * 1000;
    let changes: Vec<(i64, i64)> = tz
        .following(start)
        .take_while(|t| t.timestamp() <= end)
        .map(|t| {
            (
                to_ms(t.timestamp()).div_euclid(BUCKET_MS),
                offset_ms(t.timestamp()),
            )
        })
        .collect();
    // No change in the days (most of the year, or a zone without DST):
    // one offset, and no CASE (which needs at least one WHEN).
    let offset = if changes.is_empty() {
        offset_ms(start).to_string()
    } else {
        let whens: Vec<String> = changes
            .iter()
            .rev()
            .map(|(bucket, offset)| format!("WHEN {column} >= {bucket} THEN {offset}"))
            .collect();
        format!("CASE {} ELSE {} END", whens.join(" "), offset_ms(start))
    };
    format!("(({column} * {BUCKET_MS} + {offset}) / {DAY_MS})")
}

/// The first instant of a local date (after a DST gap at midnight, the
/// end of the gap).
fn local_start(tz: &TimeZone, date: Date) -> Timestamp {
    tz.to_ambiguous_timestamp(date.to_datetime(jiff::civil::Time::midnight()))
        .compatible()
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// `YYYYMMDD`, as HL7 writes the date part of a time (PV1-44).
fn compact(date: Date) -> String {
    format!("{:04}{:02}{:02}", date.year(), date.month(), date.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_is_written_as_hl7_writes_it() {
        assert_eq!(compact(jiff::civil::date(2026, 3, 7)), "20260307");
    }
}
