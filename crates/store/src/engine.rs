//! What differs between SQLite and PostgreSQL, in one place.
//!
//! The SQL text is shared (see the crate doc), except for a few clauses
//! that only one engine has or needs: row locks, the claim's `SKIP LOCKED`
//! and index hint, how a statement reads a list of ids or a JSON array of
//! rows, how a write transaction begins, and whether a statement's plan is
//! kept. Callers ask [`Engine`] for the clause instead of matching on the
//! backend themselves, so each difference is decided (and explained) once.

use serde::Serialize;

use crate::{Result, StoreError};

/// The database engine a `Store` or a transaction runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
}

/// How a SQLite write transaction begins: with the database write lock
/// taken at once, which is how it locks the patient (DESIGN, Concurrency).
/// A deferred transaction would take the lock only at its first write, and
/// one that had read first would then fail with SQLITE_BUSY instead of
/// waiting. PostgreSQL begins as usual and locks rows
/// ([`Engine::row_lock`]).
pub(crate) const SQLITE_BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

impl Engine {
    /// "sqlite" or "postgres".
    pub(crate) fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }

    /// The statements that fold the dashboard's change rows into its
    /// totals (migrations 0016 and 0018). PostgreSQL deletes and adds in
    /// one statement, so a change committed meanwhile is neither lost nor
    /// counted twice; SQLite's write transaction excludes every other
    /// writer, so two statements do.
    pub(crate) fn fold_dashboard_changes(self) -> Vec<String> {
        let mut statements = self.fold(
            "dashboard_changes",
            "dashboard_counters",
            &["practice_id"],
            &crate::dashboard::COUNTED,
        );
        statements.extend(self.fold(
            "dashboard_bucket_changes",
            "dashboard_buckets",
            &["bucket", "practice_id"],
            &["invites_sent", "activations"],
        ));
        statements
    }

    /// Adds the rows of `changes` to `totals` by `keys`, and empties it.
    fn fold(self, changes: &str, totals: &str, keys: &[&str], values: &[&str]) -> Vec<String> {
        let keys = keys.join(", ");
        let columns = format!("{keys}, {}", values.join(", "));
        let sums: Vec<String> = values.iter().map(|v| format!("SUM({v})")).collect();
        let add: Vec<String> = values
            .iter()
            .map(|v| format!("{v} = {totals}.{v} + excluded.{v}"))
            .collect();
        let upsert = format!("ON CONFLICT ({keys}) DO UPDATE SET {}", add.join(", "));
        let sums = sums.join(", ");
        match self {
            Engine::Postgres => vec![format!(
                "WITH gone AS (DELETE FROM {changes} RETURNING *) \
                 INSERT INTO {totals} ({columns}) \
                 SELECT {keys}, {sums} FROM gone GROUP BY {keys} {upsert}"
            )],
            Engine::Sqlite => vec![
                format!(
                    "INSERT INTO {totals} ({columns}) \
                     SELECT {keys}, {sums} FROM {changes} WHERE true GROUP BY {keys} {upsert}"
                ),
                format!("DELETE FROM {changes}"),
            ],
        }
    }

    /// How many write transactions are worth running at once: SQLite has
    /// one writer; PostgreSQL overlaps the round trips of a few.
    pub(crate) fn concurrent_writers(self) -> usize {
        match self {
            Engine::Sqlite => 1,
            Engine::Postgres => 4,
        }
    }

    /// What a `SELECT` appends to lock the rows it reads: `FOR UPDATE` on
    /// PostgreSQL; SQLite's write transaction already excludes every other
    /// writer.
    pub(crate) fn row_lock(self) -> &'static str {
        match self {
            Engine::Sqlite => "",
            Engine::Postgres => "FOR UPDATE",
        }
    }

    /// What the claim's inner `SELECT` appends: PostgreSQL skips rows
    /// another instance is claiming at this moment; SQLite runs one writer
    /// at a time, so there is nothing to skip.
    pub(crate) fn claim_lock(self) -> &'static str {
        match self {
            Engine::Sqlite => "",
            Engine::Postgres => "FOR UPDATE SKIP LOCKED",
        }
    }

    /// The index the claim names after `FROM invites`. SQLite, without
    /// statistics, would rather look up each state in the (state, sent_at)
    /// index and sort every pending invite than walk invites_pending in
    /// order (migration 0004); it is told. PostgreSQL's planner needs no
    /// hint (and has no such syntax).
    pub(crate) fn claim_index_hint(self) -> &'static str {
        match self {
            Engine::Sqlite => "INDEXED BY invites_pending",
            Engine::Postgres => "",
        }
    }

    /// What a patient search read in name order names after `FROM
    /// patients`. SQLite, with statistics, would rather read the shorter of
    /// the two name ranges and sort all of it than read the last-name index
    /// in order and stop at a page of results (migration 0010); it is told.
    /// PostgreSQL weighs the limit itself (and has no such syntax).
    pub(crate) fn name_order_hint(self) -> &'static str {
        match self {
            Engine::Sqlite => "INDEXED BY patients_by_last_name",
            Engine::Postgres => "",
        }
    }

    /// Whether a patient search may be kept prepared with its plan. Not on
    /// PostgreSQL: after five runs it may keep one generic plan for every
    /// name, and the right plan depends on the name ("smi" or "zz").
    /// SQLite re-plans a kept statement when a bound value could change
    /// its plan.
    pub(crate) fn keeps_search_plans(self) -> bool {
        self == Engine::Sqlite
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
    pub(crate) fn keeps_batch_plans(self) -> bool {
        self == Engine::Sqlite
    }

    /// A condition `column IN ids`, with `ids` bound at `$param` as the JSON
    /// returned alongside. On PostgreSQL an array compared with `= ANY`, which
    /// the planner sizes as a few index lookups (see [`JsonRows::restrict`]);
    /// on SQLite `IN (json_each)`, which it reads as a list of keys.
    pub(crate) fn id_list(
        self,
        param: usize,
        column: &str,
        ids: impl IntoIterator<Item = i64>,
    ) -> Result<(String, String)> {
        let ids: Vec<i64> = ids.into_iter().collect();
        let condition = match self {
            Engine::Postgres => format!(
                "{column} = ANY(ARRAY(SELECT jsonb_array_elements_text(${param}::jsonb)::bigint))"
            ),
            Engine::Sqlite => format!("{column} IN (SELECT value FROM json_each(${param}))"),
        };
        Ok((condition, to_json(&ids)?))
    }
}

/// The SQL type of a column of `v`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Col {
    Int,
    Text,
}

/// The rows of one JSON array parameter (objects whose keys are the
/// column names), as SQL for a statement to read them: a table `v` made by
/// `json_each` on SQLite, `jsonb_to_recordset` on PostgreSQL.
pub(crate) struct JsonRows<'a> {
    engine: Engine,
    param: usize,
    columns: &'a [(&'a str, Col)],
}

impl<'a> JsonRows<'a> {
    pub(crate) fn new(engine: Engine, param: usize, columns: &'a [(&'a str, Col)]) -> Self {
        JsonRows {
            engine,
            param,
            columns,
        }
    }

    /// `FROM`-able table `v(columns)`.
    pub(crate) fn table(&self) -> String {
        let param = self.param;
        match self.engine {
            Engine::Postgres => {
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
            }
            Engine::Sqlite => {
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
        match self.engine {
            Engine::Postgres => format!(
                "{column} = ANY(ARRAY(SELECT (x->>'{key}')::bigint \
                 FROM jsonb_array_elements(${}::jsonb) AS x))",
                self.param
            ),
            Engine::Sqlite => "TRUE".to_string(),
        }
    }
}

/// `rows` as the text of a JSON parameter (an id list, a [`JsonRows`] array).
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
            JsonRows::new(Engine::Postgres, 2, &columns).table(),
            "jsonb_to_recordset($2::jsonb) AS v(id BIGINT, state TEXT)"
        );
        assert_eq!(
            JsonRows::new(Engine::Sqlite, 2, &columns).table(),
            "(SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.state') AS state \
             FROM json_each($2)) AS v"
        );
    }

    #[test]
    fn postgres_gets_key_lists_as_arrays_it_can_size() {
        let columns = [("id", Col::Int)];
        assert_eq!(
            JsonRows::new(Engine::Postgres, 1, &columns).restrict("invites.id", "id"),
            "invites.id = ANY(ARRAY(SELECT (x->>'id')::bigint \
             FROM jsonb_array_elements($1::jsonb) AS x))"
        );
        assert_eq!(
            JsonRows::new(Engine::Sqlite, 1, &columns).restrict("invites.id", "id"),
            "TRUE"
        );
        let (condition, json) = Engine::Postgres
            .id_list(1, "id", [3, 1])
            .expect("ids serialize");
        assert_eq!(
            condition,
            "id = ANY(ARRAY(SELECT jsonb_array_elements_text($1::jsonb)::bigint))"
        );
        assert_eq!(json, "[3,1]");
        let (condition, _) = Engine::Sqlite
            .id_list(1, "id", [3, 1])
            .expect("ids serialize");
        assert_eq!(condition, "id IN (SELECT value FROM json_each($1))");
    }
}
