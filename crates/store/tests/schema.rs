//! The two engines' migrations (crates/store/migrations/{sqlite,postgres})
//! are written twice; this test fails when they drift: the same tables,
//! the same columns with the same NOT NULL (views' columns too), the same
//! indexes (name, columns in order, unique, partial) and triggers on the
//! same tables for the same events after all migrations. Triggers are
//! compared by table and event, not by name: PostgreSQL keeps the
//! dashboard's rollups with one trigger per statement where SQLite, which
//! has only row triggers, needs a BEFORE and AFTER pair (migrations 0020
//! and 0021).

// A test's helpers fail the test when a step fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use enroll_store::testing::{Engine, TestDb};
use sqlx::Row;

/// Everything compared, as sorted sets of lines so a difference reads well.
#[derive(Debug, Default, PartialEq, Eq)]
struct Schema {
    columns: BTreeSet<String>,
    indexes: BTreeSet<String>,
    triggers: BTreeSet<String>,
}

/// sqlx's own bookkeeping, not ours.
const IGNORED_TABLE: &str = "_sqlx_migrations";

/// SQLite's catalogue, as rows with the columns `tbl`, `col`, `required`
/// and `tbl`, `idx`, `uniq`, `partial`, `cols`, `named`.
const SQLITE_COLUMNS: &str = "SELECT m.name AS tbl, p.name AS col, p.\"notnull\" OR p.pk > 0 AS required \
     FROM sqlite_master m JOIN pragma_table_info(m.name) p \
     WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite_%' AND m.name <> $1";
/// A trigger's table and event; SQLite keeps only the statement that made
/// it, so the event is read from its head (the part before BEGIN).
const SQLITE_TRIGGERS: &str = "SELECT DISTINCT tbl_name, \
        CASE WHEN head LIKE '% INSERT ON %' THEN 'INSERT' \
             WHEN head LIKE '% DELETE ON %' THEN 'DELETE' \
             WHEN head LIKE '% UPDATE %' THEN 'UPDATE' ELSE head END \
     FROM (SELECT tbl_name, substr(sql, 1, instr(upper(sql), 'BEGIN')) AS head \
           FROM sqlite_master WHERE type = 'trigger')";
const POSTGRES_TRIGGERS: &str = "SELECT DISTINCT event_object_table::text, event_manipulation::text \
     FROM information_schema.triggers WHERE trigger_schema = 'public'";
// Primary keys are left out: SQLite's INTEGER PRIMARY KEY is the rowid,
// with no index to list. UNIQUE in a table definition makes an index
// SQLite names itself.
const SQLITE_INDEXES: &str = "SELECT m.name AS tbl, il.name AS idx, il.\"unique\" AS uniq, \
        il.partial AS partial, group_concat(ii.name, ',') AS cols, \
        il.name NOT LIKE 'sqlite_autoindex_%' AS named \
     FROM sqlite_master m JOIN pragma_index_list(m.name) il JOIN pragma_index_info(il.name) ii \
     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> $1 AND il.origin <> 'pk' \
     GROUP BY m.name, il.name ORDER BY m.name, il.name";

/// The same from PostgreSQL's catalogue; a UNIQUE constraint's index is
/// named by PostgreSQL. An expression (`lower(email)`) has no column name
/// on either engine, so it is left out of `cols` on both.
const POSTGRES_COLUMNS: &str = "SELECT table_name::text AS tbl, column_name::text AS col, \
        is_nullable = 'NO' AS required \
     FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> $1";
const POSTGRES_INDEXES: &str = "SELECT t.relname::text AS tbl, i.relname::text AS idx, \
        ix.indisunique AS uniq, ix.indpred IS NOT NULL AS partial, \
        COALESCE(string_agg(a.attname::text, ',' ORDER BY k.ord), '') AS cols, \
        NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ix.indexrelid) AS named \
     FROM pg_index ix \
     JOIN pg_class i ON i.oid = ix.indexrelid \
     JOIN pg_class t ON t.oid = ix.indrelid \
     JOIN pg_namespace n ON n.oid = t.relnamespace \
     JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
     LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum \
     WHERE n.nspname = 'public' AND t.relname <> $1 AND NOT ix.indisprimary \
     GROUP BY t.relname, i.relname, ix.indisunique, ix.indpred, ix.indexrelid";

/// The schema from the rows of the two catalogue queries above.
fn schema_of<R: Row>(columns: Vec<R>, indexes: Vec<R>) -> Schema
where
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    let columns = columns.iter().map(|row| {
        let null = if row.get::<bool, _>("required") {
            "NOT NULL"
        } else {
            "NULL"
        };
        format!(
            "{}.{} {null}",
            row.get::<String, _>("tbl"),
            row.get::<String, _>("col")
        )
    });
    let indexes = indexes.iter().map(|row| {
        let name = if row.get::<bool, _>("named") {
            row.get("idx")
        } else {
            "<constraint>".to_string()
        };
        format!(
            "{} {name} ({}){}{}",
            row.get::<String, _>("tbl"),
            row.get::<String, _>("cols"),
            if row.get::<bool, _>("uniq") {
                " UNIQUE"
            } else {
                ""
            },
            if row.get::<bool, _>("partial") {
                " WHERE ..."
            } else {
                ""
            },
        )
    });
    Schema {
        columns: columns.collect(),
        indexes: indexes.collect(),
        triggers: BTreeSet::new(),
    }
}

/// Reads the three catalogue queries through a pool of either engine (a
/// macro: sqlx's pools of the two engines share no type to be generic over
/// without a page of trait bounds).
macro_rules! read_schema {
    ($pool:expr, $columns:expr, $indexes:expr, $triggers:expr) => {{
        let pool = $pool;
        let read = |sql| sqlx::query(sql).bind(IGNORED_TABLE).fetch_all(&pool);
        let mut schema = schema_of(read($columns).await.unwrap(), read($indexes).await.unwrap());
        let triggers: Vec<(String, String)> =
            sqlx::query_as($triggers).fetch_all(&pool).await.unwrap();
        schema.triggers = triggers
            .into_iter()
            .map(|(table, event)| format!("{table} {event}"))
            .collect();
        pool.close().await;
        schema
    }};
}

async fn sqlite_schema(url: &str) -> Schema {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    read_schema!(pool, SQLITE_COLUMNS, SQLITE_INDEXES, SQLITE_TRIGGERS)
}

async fn postgres_schema(url: &str) -> Schema {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    read_schema!(pool, POSTGRES_COLUMNS, POSTGRES_INDEXES, POSTGRES_TRIGGERS)
}

#[tokio::test]
async fn both_engines_migrate_to_the_same_tables_columns_and_indexes() {
    let sqlite = TestDb::new(Engine::Sqlite).await.unwrap();
    let Some(postgres) = TestDb::new(Engine::Postgres).await else {
        return;
    };
    let (lite, pg) = (
        sqlite_schema(&sqlite.url).await,
        postgres_schema(&postgres.url).await,
    );
    assert!(
        lite.columns.len() > 50 && lite.indexes.len() > 15,
        "the query read the schema: {lite:#?}"
    );
    let only = |a: &BTreeSet<String>, b: &BTreeSet<String>| -> Vec<String> {
        a.difference(b).cloned().collect()
    };
    assert_eq!(
        (
            only(&lite.columns, &pg.columns),
            only(&pg.columns, &lite.columns)
        ),
        (vec![], vec![]),
        "columns only on SQLite, only on PostgreSQL"
    );
    assert_eq!(
        (
            only(&lite.indexes, &pg.indexes),
            only(&pg.indexes, &lite.indexes)
        ),
        (vec![], vec![]),
        "indexes only on SQLite, only on PostgreSQL"
    );
    assert!(
        lite.triggers.len() >= 9
            && lite.triggers.iter().all(|t| t.ends_with(" INSERT")
                || t.ends_with(" UPDATE")
                || t.ends_with(" DELETE")),
        "the query read the triggers: {lite:#?}"
    );
    assert_eq!(
        (
            only(&lite.triggers, &pg.triggers),
            only(&pg.triggers, &lite.triggers)
        ),
        (vec![], vec![]),
        "triggers only on SQLite, only on PostgreSQL"
    );
}
