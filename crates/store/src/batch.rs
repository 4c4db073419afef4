//! Many rows in one statement, on both engines.
//!
//! The dispatcher records a batch of deliveries at once. Statement by
//! statement that was a round trip (PostgreSQL) or a hand-off to sqlx's
//! SQLite thread per row, and those, not the work, were most of its time.
//! Here the rows travel as one JSON array parameter and the database turns
//! it into a table `v`: `json_each` on SQLite, `jsonb_to_recordset` on
//! PostgreSQL. JSON rather than one placeholder per value because both
//! engines read it the same way and the statement text does not depend on
//! the number of rows (so it is prepared once and cached).

use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::enrollment::{Tx, on_tx};
use crate::{Result, StoreError};

/// The SQL type of a column of `v`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Col {
    Int,
    Text,
}

/// The rows of one JSON array parameter (objects whose keys are the
/// column names), as SQL for a statement to read them.
pub(crate) struct JsonRows<'a> {
    postgres: bool,
    param: usize,
    columns: &'a [(&'a str, Col)],
}

impl<'a> JsonRows<'a> {
    pub(crate) fn new(postgres: bool, param: usize, columns: &'a [(&'a str, Col)]) -> Self {
        JsonRows {
            postgres,
            param,
            columns,
        }
    }

    /// `FROM`-able table `v(columns)`.
    pub(crate) fn table(&self) -> String {
        let param = self.param;
        if self.postgres {
            let columns: Vec<String> = self
                .columns
                .iter()
                .map(|(name, col)| {
                    let sql_type = match col {
                        Col::Int => "BIGINT",
                        Col::Text => "TEXT",
                    };
                    format!("{name} {sql_type}")
                })
                .collect();
            format!(
                "jsonb_to_recordset(${param}::jsonb) AS v({})",
                columns.join(", ")
            )
        } else {
            let columns: Vec<String> = self
                .columns
                .iter()
                .map(|(name, _)| format!("json_extract(value, '$.{name}') AS {name}"))
                .collect();
            format!(
                "(SELECT {} FROM json_each(${param})) AS v",
                columns.join(", ")
            )
        }
    }

    /// A condition limiting `column` (of the table a statement joins with
    /// `v`) to the values of the integer `key` in the rows, for the
    /// planner's sake.
    ///
    /// PostgreSQL guesses that a set-returning function yields 100 rows,
    /// so on a table of a few thousand rows it joins `v` by scanning the
    /// whole table (about 3 ms per statement at 10,000 rows, and growing
    /// with the table) instead of looking the rows up by index. An
    /// `= ANY(ARRAY(...))` condition is estimated as a handful of index
    /// lookups, which is what it is. SQLite already drives such a join from
    /// `v` and looks rows up by key, and a second scan of the JSON per row
    /// would only slow it down, so there the condition is `TRUE`.
    pub(crate) fn restrict(&self, column: &str, key: &str) -> String {
        if self.postgres {
            format!(
                "{column} = ANY(ARRAY(SELECT (x->>'{key}')::bigint \
                 FROM jsonb_array_elements(${}::jsonb) AS x))",
                self.param
            )
        } else {
            "TRUE".to_string()
        }
    }
}

/// A condition `column IN ids`, with `ids` bound at `$param` as the JSON
/// returned alongside. On PostgreSQL an array compared with `= ANY`, which
/// the planner sizes as a few index lookups (see [`JsonRows::restrict`]);
/// on SQLite `IN (json_each)`, which it reads as a list of keys.
pub(crate) fn id_list(
    postgres: bool,
    param: usize,
    column: &str,
    ids: impl IntoIterator<Item = i64>,
) -> Result<(String, String)> {
    let ids: Vec<i64> = ids.into_iter().collect();
    let condition = if postgres {
        format!("{column} = ANY(ARRAY(SELECT jsonb_array_elements_text(${param}::jsonb)::bigint))")
    } else {
        format!("{column} IN (SELECT value FROM json_each(${param}))")
    };
    Ok((condition, to_json(&ids)?))
}

/// One line of a patient's timeline, for [`Tx::timeline_rows`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TimelineRow {
    pub patient_id: i64,
    pub kind: &'static str,
    /// The `detail` column: a JSON object as text.
    pub detail: String,
}

impl Tx {
    pub(crate) fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(_))
    }

    /// [`id_list`] for this engine, bound at `$1`.
    pub(crate) fn id_list(
        &self,
        column: &str,
        ids: impl IntoIterator<Item = i64>,
    ) -> Result<(String, String)> {
        id_list(self.is_postgres(), 1, column, ids)
    }

    /// Whether a batch statement may be kept prepared with its plan.
    ///
    /// Not on PostgreSQL: after a few runs it keeps one generic plan per
    /// prepared statement, made with the table sizes of that moment, until
    /// the table is next analyzed. The tables a batch reads (deliveries,
    /// invites) can grow from nothing to thousands of rows within a minute
    /// of a big import, and a plan made while they were tiny scans them
    /// whole for every batch (measured: 1.2 ms instead of 0.1 ms per
    /// statement at 7,000 deliveries). Planned afresh, each statement sees
    /// the tables as they are; there are five or so such statements per 50
    /// invites, so the planning is a small cost.
    pub(crate) fn keeps_batch_plans(&self) -> bool {
        !self.is_postgres()
    }

    /// Appends `rows` to the timeline in one statement, all at `at` and by
    /// the same source.
    pub(crate) async fn timeline_rows(
        &mut self,
        rows: &[TimelineRow],
        at: i64,
        source: &crate::Source,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let table = JsonRows::new(
            self.is_postgres(),
            1,
            &[
                ("patient_id", Col::Int),
                ("kind", Col::Text),
                ("detail", Col::Text),
            ],
        )
        .table();
        let sql = format!(
            "INSERT INTO timeline (patient_id, at, kind, detail, source, reference, actor) \
             SELECT v.patient_id, $2, v.kind, v.detail, $3, $4, $5 FROM {table}"
        );
        let json = to_json(rows)?;
        let persistent = self.keeps_batch_plans();
        on_tx!(self, c => {
            sqlx::query(AssertSqlSafe(sql.as_str()))
                .persistent(persistent)
                .bind(&json)
                .bind(at)
                .bind(&source.channel)
                .bind(&source.reference)
                .bind(&source.actor)
                .execute(c)
                .await
                .map(|r| r.rows_affected())
        })?;
        Ok(())
    }

    /// Runs the statement `sql` writes for `rows` (bound at `$1` and read
    /// through the [`JsonRows`] it is given), with `at` as `$2` when given.
    pub(crate) async fn write_rows<T: Serialize>(
        &mut self,
        columns: &[(&str, Col)],
        rows: &[T],
        at: Option<i64>,
        sql: impl FnOnce(&JsonRows) -> String,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = sql(&JsonRows::new(self.is_postgres(), 1, columns));
        let json = to_json(rows)?;
        let persistent = self.keeps_batch_plans();
        on_tx!(self, c => {
            let query = sqlx::query(AssertSqlSafe(sql.as_str()))
                .persistent(persistent)
                .bind(&json);
            let query = match at {
                Some(at) => query.bind(at),
                None => query,
            };
            query.execute(c).await.map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}

pub(crate) fn to_json<T: Serialize + ?Sized>(rows: &T) -> Result<String> {
    serde_json::to_string(rows).map_err(|e| StoreError::Corrupt(format!("batch rows: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_rows_read_each_key_as_a_column_on_both_engines() {
        let columns = [("id", Col::Int), ("state", Col::Text)];
        assert_eq!(
            JsonRows::new(true, 2, &columns).table(),
            "jsonb_to_recordset($2::jsonb) AS v(id BIGINT, state TEXT)"
        );
        assert_eq!(
            JsonRows::new(false, 2, &columns).table(),
            "(SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.state') AS state \
             FROM json_each($2)) AS v"
        );
    }

    #[test]
    fn postgres_gets_key_lists_as_arrays_it_can_size() {
        let columns = [("id", Col::Int)];
        assert_eq!(
            JsonRows::new(true, 1, &columns).restrict("invites.id", "id"),
            "invites.id = ANY(ARRAY(SELECT (x->>'id')::bigint \
             FROM jsonb_array_elements($1::jsonb) AS x))"
        );
        assert_eq!(
            JsonRows::new(false, 1, &columns).restrict("invites.id", "id"),
            "TRUE"
        );
        let (condition, json) = id_list(true, 1, "id", [3, 1]).expect("ids serialize");
        assert_eq!(
            condition,
            "id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)::bigint))"
        );
        assert_eq!(json, "[3,1]");
        let (condition, _) = id_list(false, 1, "id", [3, 1]).expect("ids serialize");
        assert_eq!(condition, "id IN (SELECT value FROM json_each($1))");
    }
}
