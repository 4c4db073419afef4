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

/// `FROM`-able table `v(columns)` made of the JSON array of objects bound
/// at `$param`; each object's keys are the column names.
pub(crate) fn json_table(postgres: bool, param: usize, columns: &[(&str, Col)]) -> String {
    if postgres {
        let columns: Vec<String> = columns
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
        let columns: Vec<String> = columns
            .iter()
            .map(|(name, _)| format!("json_extract(value, '$.{name}') AS {name}"))
            .collect();
        format!(
            "(SELECT {} FROM json_each(${param})) AS v",
            columns.join(", ")
        )
    }
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
        let table = json_table(
            self.is_postgres(),
            1,
            &[
                ("patient_id", Col::Int),
                ("kind", Col::Text),
                ("detail", Col::Text),
            ],
        );
        let sql = format!(
            "INSERT INTO timeline (patient_id, at, kind, detail, source, reference, actor) \
             SELECT v.patient_id, $2, v.kind, v.detail, $3, $4, $5 FROM {table}"
        );
        let json = to_json(rows)?;
        on_tx!(self, c => {
            sqlx::query(AssertSqlSafe(sql.as_str()))
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

    /// Runs `sql`, in which `{v}` stands for the table of `rows` (see
    /// [`json_table`]) and `$2` for `at` when given.
    pub(crate) async fn write_rows<T: Serialize>(
        &mut self,
        sql: &str,
        columns: &[(&str, Col)],
        rows: &[T],
        at: Option<i64>,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = sql.replace("{v}", &json_table(self.is_postgres(), 1, columns));
        let json = to_json(rows)?;
        on_tx!(self, c => {
            let query = sqlx::query(AssertSqlSafe(sql.as_str())).bind(&json);
            let query = match at {
                Some(at) => query.bind(at),
                None => query,
            };
            query.execute(c).await.map(|r| r.rows_affected())
        })?;
        Ok(())
    }
}

/// The table `v(id)` of `ids`, and its JSON parameter, for `WHERE id IN
/// (SELECT v.id FROM {table})`.
pub(crate) fn id_table(tx: &Tx, ids: impl IntoIterator<Item = i64>) -> Result<(String, String)> {
    let rows: Vec<serde_json::Value> = ids
        .into_iter()
        .map(|id| serde_json::json!({ "id": id }))
        .collect();
    Ok((
        json_table(tx.is_postgres(), 1, &[("id", Col::Int)]),
        to_json(&rows)?,
    ))
}

pub(crate) fn to_json<T: Serialize + ?Sized>(rows: &T) -> Result<String> {
    serde_json::to_string(rows).map_err(|e| StoreError::Corrupt(format!("batch rows: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_table_reads_each_key_as_a_column_on_both_engines() {
        let columns = [("id", Col::Int), ("state", Col::Text)];
        assert_eq!(
            json_table(true, 2, &columns),
            "jsonb_to_recordset($2::jsonb) AS v(id BIGINT, state TEXT)"
        );
        assert_eq!(
            json_table(false, 2, &columns),
            "(SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.state') AS state \
             FROM json_each($2)) AS v"
        );
    }
}
