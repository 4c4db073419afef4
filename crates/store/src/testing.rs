//! Throwaway databases for tests (feature `testing`), on both engines.
//!
//! SQLite: a fresh file in a temporary folder, removed when the `TestDb` is
//! dropped. PostgreSQL: a fresh database on the server named by
//! `ENROLL_TEST_POSTGRES_URL` (an admin URL such as
//! `postgres://enroll@127.0.0.1:54329/postgres`, which `scripts/test`
//! provides from a throwaway cluster). Without that variable the PostgreSQL
//! half of a test is skipped with a message, unless
//! `ENROLL_REQUIRE_POSTGRES=1` (set by `scripts/test` and CI), in which case
//! it fails: CI must never pass by silently skipping an engine.

// Test support: a setup step that fails fails the test, loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use jiff::Timestamp;
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::{NewPractice, Practice, Store};
use enroll_core::{Demographics, Schedule};

/// The engines a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

pub const ENGINES: [Engine; 2] = [Engine::Sqlite, Engine::Postgres];

/// Runs `test` on each engine this machine has: SQLite always, PostgreSQL
/// when `ENROLL_TEST_POSTGRES_URL` is set (see [`TestDb::new`]), each with
/// a fresh database.
pub async fn on_each_engine(test: impl AsyncFn(Engine, &TestDb)) {
    for engine in ENGINES {
        if let Some(db) = TestDb::new(engine).await {
            test(engine, &db).await;
        }
    }
}

/// A migrated, empty database that lives as long as this value.
pub struct TestDb {
    pub store: Store,
    pub url: String,
    // Keeps the SQLite folder alive; deleted on drop.
    _dir: Option<tempfile::TempDir>,
    // The PostgreSQL server's admin URL, to drop this database on drop.
    postgres_admin_url: Option<String>,
}

/// With `ENROLL_TEST_LOG_DIR` set, every log line this test process
/// writes (every crate, at `ENROLL_TEST_LOG_LEVEL`, default `debug`: what
/// `ENROLL_LOG=debug` writes in production) also goes to a file in that
/// folder, named after the test binary and the process, for
/// `scripts/phi-grep` to search for patients' data. Called by every
/// [`TestDb`], so every test with a database is covered; a test that sets
/// its own subscriber for a while keeps its lines to itself.
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Some(dir) = std::env::var_os("ENROLL_TEST_LOG_DIR") else {
            return;
        };
        let binary = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "test".into());
        let path = std::path::Path::new(&dir).join(format!("{binary}-{}.log", std::process::id()));
        let file = std::fs::File::create(&path)
            .unwrap_or_else(|e| panic!("cannot create the test log {}: {e}", path.display()));
        let level = std::env::var("ENROLL_TEST_LOG_LEVEL").unwrap_or_else(|_| "debug".into());
        // Another subscriber set first (a test's own) wins: nothing to do.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(level))
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .try_init();
    });
}

impl TestDb {
    /// A fresh database, or `None` when PostgreSQL is not configured and not
    /// required (the caller then skips that engine).
    pub async fn new(engine: Engine) -> Option<TestDb> {
        let admin_url = match engine {
            Engine::Sqlite => None,
            Engine::Postgres => Some(postgres_admin_url()?),
        };
        Some(TestDb::create(engine, admin_url.as_deref()).await)
    }

    /// A fresh database on `engine`; for PostgreSQL, a new database on the
    /// server of `postgres_admin_url` (required for that engine).
    pub async fn create(engine: Engine, postgres_admin_url: Option<&str>) -> TestDb {
        capture_logs();
        let (url, dir) = match engine {
            Engine::Sqlite => {
                let dir = tempfile::tempdir().expect("create a temporary folder");
                let url = format!("sqlite://{}", dir.path().join("enroll.db").display());
                (url, Some(dir))
            }
            Engine::Postgres => {
                let admin_url = postgres_admin_url.expect("PostgreSQL needs an admin URL");
                (fresh_postgres_database(admin_url).await, None)
            }
        };
        // A test's database need not survive a power loss; an fsync per
        // commit would only slow the suite (the default is tested on its own).
        let store = Store::connect_with(&url, crate::Synchronous::Normal)
            .await
            .expect("connect to the test database");
        store.migrate().await.expect("migrate the test database");
        TestDb {
            store,
            url,
            _dir: dir,
            postgres_admin_url: postgres_admin_url.map(str::to_string),
        }
    }

    /// Runs raw SQL, for a state the API refuses to make (corrupt rows).
    pub async fn execute(&self, sql: &str) -> crate::Result<u64> {
        let sql = sqlx::AssertSqlSafe(sql.to_string());
        Ok(crate::on_pool!(self.store, pool => {
            sqlx::query(sql).execute(pool).await.map(|r| r.rows_affected())
        })?)
    }

    /// A practice open all day every day in New York (a window closing at 00:00 runs to midnight), auto invites on,
    /// so a trigger sends at once unless a test sets another schedule.
    pub async fn always_open_practice(&self, code: &str, now: Timestamp) -> Practice {
        let mut schedule = Schedule::office_hours("America/New_York");
        schedule.windows = jiff::civil::Weekday::Monday
            .cycle_forward()
            .take(7)
            .map(|weekday| enroll_core::Window {
                weekday,
                opens: jiff::civil::time(0, 0, 0, 0),
                closes: jiff::civil::time(0, 0, 0, 0),
            })
            .collect();
        let practice = self
            .store
            .create_practice(
                &NewPractice {
                    code: code.to_string(),
                    name: format!("Practice {code}"),
                    schedule,
                },
                "test",
                now,
            )
            .await
            .expect("create the test practice");
        self.store
            .set_auto_invites(
                practice.id,
                true,
                Some(jiff::tz::TimeZone::UTC.to_datetime(now).date()),
            )
            .await
            .expect("turn auto invites on")
    }
}

/// Faults a test injects into the HL7 intake's transaction, right before
/// its COMMIT: hold commits open until released, or make the next ones fail
/// (rolled back, as when the database connection drops at commit). Installed
/// with [`Store::with_intake_faults`], which only the `testing` feature has,
/// so a production build cannot carry one.
#[derive(Debug)]
pub struct IntakeFaults {
    state: tokio::sync::watch::Sender<FaultState>,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Commits wait while this is set.
    held: bool,
    /// How many of the next commits fail.
    fail_next: usize,
    /// Commits waiting at the hold now.
    waiting: usize,
}

impl IntakeFaults {
    pub fn new() -> Arc<IntakeFaults> {
        Arc::new(IntakeFaults {
            state: tokio::sync::watch::Sender::new(FaultState::default()),
        })
    }

    /// From now on every intake commit waits until [`Self::release`].
    pub fn hold(&self) {
        self.state.send_modify(|s| s.held = true);
    }

    /// Lets the held commits (and later ones) go on.
    pub fn release(&self) {
        self.state.send_modify(|s| s.held = false);
    }

    /// The next `n` intake commits fail and roll back.
    pub fn fail_next(&self, n: usize) {
        self.state.send_modify(|s| s.fail_next = n);
    }

    /// Waits until `n` commits are waiting at the hold (their transactions
    /// open, everything written but not committed).
    pub async fn held(&self, n: usize) {
        let mut changes = self.state.subscribe();
        // The sender lives in `self`, so the wait cannot see it dropped.
        let _ = changes.wait_for(|s| s.waiting >= n).await;
    }

    /// Called by the store right before an intake COMMIT; an error rolls
    /// the transaction back.
    pub(crate) async fn before_commit(&self) -> crate::Result<()> {
        self.state.send_modify(|s| s.waiting += 1);
        let mut changes = self.state.subscribe();
        let _ = changes.wait_for(|s| !s.held).await;
        let mut fail = false;
        self.state.send_modify(|s| {
            s.waiting -= 1;
            fail = s.fail_next > 0;
            s.fail_next = s.fail_next.saturating_sub(1);
        });
        if fail {
            return Err(crate::StoreError::Database(sqlx::Error::Io(
                std::io::Error::other("commit failed (injected by IntakeFaults)"),
            )));
        }
        Ok(())
    }
}

impl Store {
    /// This store with `faults` acting on every HL7 intake commit
    /// ([`Store::receive_hl7`]); clones of the returned store share them.
    pub fn with_intake_faults(mut self, faults: Arc<IntakeFaults>) -> Store {
        self.intake_faults = Some(faults);
        self
    }
}

/// `ENROLL_TEST_POSTGRES_URL`, or `None` (with a message) when it is not set
/// and PostgreSQL is not required.
fn postgres_admin_url() -> Option<String> {
    let Ok(admin_url) = std::env::var("ENROLL_TEST_POSTGRES_URL") else {
        if std::env::var("ENROLL_REQUIRE_POSTGRES").as_deref() == Ok("1") {
            panic!(
                "ENROLL_REQUIRE_POSTGRES=1 but ENROLL_TEST_POSTGRES_URL is not set: \
                 run the tests with scripts/test, which starts a throwaway PostgreSQL"
            );
        }
        eprintln!("skipping PostgreSQL: set ENROLL_TEST_POSTGRES_URL or run scripts/test");
        return None;
    };
    Some(admin_url)
}

async fn fresh_postgres_database(admin_url: &str) -> String {
    let name = format!("enroll_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("connect to the PostgreSQL admin URL: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .expect("create the test database");
    let _ = admin.close().await;
    replace_database(admin_url, &name)
}

impl Drop for TestDb {
    /// Drops a PostgreSQL test database when its test is done, as the
    /// SQLite folder is removed: a suite run makes hundreds of them, and
    /// left behind they fill a CI machine's disk. Best effort (a test that
    /// panicked still drops it); `WITH (FORCE)` ends the connections a
    /// server under test may still hold. On a thread of its own, with its
    /// own runtime, since `Drop` cannot await.
    fn drop(&mut self) {
        let (Some(admin_url), Some(name)) =
            (self.postgres_admin_url.take(), database_name(&self.url))
        else {
            return;
        };
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(drop_database_now(&admin_url, &name)).ok()
        });
        let _ = dropper.join();
    }
}

async fn drop_database_now(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut admin = PgConnection::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await
}

/// `postgres://u@h:p/postgres?x=y` with the database `name` instead.
pub fn replace_database(url: &str, name: &str) -> String {
    let mut url = url::Url::parse(url)
        .unwrap_or_else(|e| panic!("the PostgreSQL admin URL cannot be read: {e}"));
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Runs one statement with text parameters ($1, $2, ...) on either
/// engine: the benchmarks' bulk loads.
pub async fn execute_with(
    store: &crate::Store,
    sql: &str,
    values: &[String],
) -> crate::Result<u64> {
    Ok(crate::on_pool!(store, pool => {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in values {
            query = query.bind(value);
        }
        query.execute(pool).await.map(|r| r.rows_affected())
    })?)
}

/// Drops the database `name` on the server of `admin_url` (benchmarks
/// clean up after themselves). `name` must be a plain identifier.
pub async fn drop_database(admin_url: &str, name: &str) -> crate::Result<()> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(crate::StoreError::Invalid(format!(
            "{name:?} is not a database name this helper drops"
        )));
    }
    let mut admin = PgConnection::connect(admin_url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name}"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await?;
    Ok(())
}

/// The database a URL names (its path without the `/`).
pub fn database_name(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let name = url.path().trim_start_matches('/');
    (!name.is_empty()).then(|| name.to_string())
}

/// The one integer `sql` answers in `store`, e.g. a `COUNT(*)`.
pub async fn scalar(store: &crate::Store, sql: &str) -> crate::Result<i64> {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    Ok(crate::on_pool!(store, pool => {
        sqlx::query_scalar(sql).fetch_one(pool).await
    })?)
}

/// [`scalar`] with `$1`, `$2`, ... bound to `params`: a patient's values
/// in a test's query stay out of the statement text, which the debug log
/// writes (and scripts/phi-grep searches).
pub async fn scalar_bound(store: &crate::Store, sql: &str, params: &[&str]) -> crate::Result<i64> {
    let sql = sqlx::AssertSqlSafe(sql.to_string());
    Ok(crate::on_pool!(store, pool => {
        let mut query = sqlx::query_scalar(sql);
        for param in params {
            query = query.bind(*param);
        }
        query.fetch_one(pool).await
    })?)
}

/// Wednesday 2026-11-25 15:00 in New York: inside office hours.
pub fn wednesday_afternoon() -> Timestamp {
    "2026-11-25T20:00:00Z".parse().unwrap()
}

/// A chart with every field an invite needs (R1), and a cell phone; the
/// email is the first name's, at example.org.
pub fn complete(first: &str, last: &str) -> Demographics {
    Demographics {
        first_name: Some(first.to_string()),
        last_name: Some(last.to_string()),
        date_of_birth: Some("1980-02-29".to_string()),
        birth_sex: Some("F".to_string()),
        zip: Some("02134".to_string()),
        email: Some(format!("{}@example.org", first.to_lowercase())),
        cell_phone: Some("+1 617 555 0100".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::replace_database;

    #[test]
    fn replaces_the_database_of_a_url() {
        let cases = [
            ("postgres://u@h:5/postgres", "postgres://u@h:5/t1"),
            ("postgres://u@h:5", "postgres://u@h:5/t1"),
            (
                "postgres://u:p@h/db?sslmode=disable",
                "postgres://u:p@h/t1?sslmode=disable",
            ),
        ];
        for (given, expected) in cases {
            assert_eq!(replace_database(given, "t1"), expected, "{given}");
        }
    }
}
