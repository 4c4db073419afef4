//! Many rows in one statement, on both engines.
//!
//! The dispatcher records a batch of deliveries at once. Statement by
//! statement that was a round trip (PostgreSQL) or a hand-off to sqlx's
//! SQLite thread per row, and those, not the work, were most of its time.
//! Here the rows travel as one JSON array parameter and the database turns
//! it into a table `v` (`engine::JsonRows`: `json_each` on SQLite,
//! `jsonb_to_recordset` on PostgreSQL). JSON rather than one placeholder per value because both
//! engines read it the same way and the statement text does not depend on
//! the number of rows (so it is prepared once and cached).

use serde::Serialize;
use sqlx::AssertSqlSafe;

use crate::Result;
use crate::engine::{Col, JsonRows, to_json};
use crate::tx::{Tx, on_tx};

/// A row that travels in a batch's JSON array: `COLUMNS` are the keys it
/// serializes to, with the SQL type each is read as. Declared next to the
/// struct, and checked against its serialization by [`assert_columns`] in
/// a test, so that the column list and the fields cannot drift apart.
pub(crate) trait BatchRow: Serialize {
    const COLUMNS: &'static [(&'static str, Col)];
}

impl Tx {
    /// Runs the statement `sql` writes for `rows` (bound at `$1` and read
    /// through the [`JsonRows`] of `T::COLUMNS` it is given), with `at` as
    /// `$2` when given.
    pub(crate) async fn write_rows<T: BatchRow>(
        &mut self,
        rows: &[T],
        at: Option<i64>,
        sql: impl FnOnce(&JsonRows) -> String,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = sql(&JsonRows::new(self.engine(), 1, T::COLUMNS));
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

/// Panics unless `row` serializes to an object whose keys are exactly
/// `T::COLUMNS` (for the tests next to each row type).
#[cfg(test)]
pub(crate) fn assert_columns<T: BatchRow>(row: &T) {
    let value = serde_json::to_value(row).unwrap_or_else(|e| panic!("serialize: {e}"));
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {value}"))
        .keys()
        .map(String::as_str)
        .collect();
    let mut columns: Vec<&str> = T::COLUMNS.iter().map(|(name, _)| *name).collect();
    keys.sort_unstable();
    columns.sort_unstable();
    assert_eq!(keys, columns, "{}", std::any::type_name::<T>());
}
