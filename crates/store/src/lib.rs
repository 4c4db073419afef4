//! Database access for Enroll.
//!
//! One `Store` over SQLite (the embedded default) or PostgreSQL (several
//! instances behind a load balancer). The SQL text is shared: sqlx's SQLite
//! driver accepts `$1` placeholders, and every column type used (BIGINT,
//! TEXT, BOOLEAN) decodes the same on both. Each method dispatches to the
//! backend's pool with `on_pool!`/`on_tx!`, which expand the same block once
//! per backend. We chose this over sqlx's `Any` driver, which lacks
//! compile-time types and transaction control such as `BEGIN IMMEDIATE`.
//! The few clauses that do differ between the engines are decided in
//! `engine`; a write transaction is a `tx::Tx`.
//!
//! Rules that must hold under concurrency (R6 coalescing, R7 cap, idempotent
//! Enroll Now) are enforced in `enrollment`, inside the transaction that
//! records the send: SQLite takes the write lock up front (`BEGIN IMMEDIATE`),
//! PostgreSQL locks the patient row (`SELECT ... FOR UPDATE`).

mod activation;
mod batch;
mod cap;
mod chart_actions;
mod dashboard;
mod engine;
mod enrollment;
mod in_person;
mod intake;
mod model;
mod outbox;
mod patients;
mod portal;
mod practices;
mod settings;
mod staff;
#[cfg(feature = "testing")]
pub mod testing;
mod timeline;
mod tx;
mod webhooks;
mod worklists;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use engine::Engine;
use jiff::Timestamp;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use activation::{ActivationDone, ActivationFlow, ActivationToken, FlowStep};
pub use dashboard::{CHART_DAYS, DashboardCounts, DayCount, MeasuredPatient};
pub use in_person::{InPersonInvite, InPersonOutcome};
pub use intake::{
    AppointmentStatus, InboundMessage, IntakeEvent, IntakeProblem, MessageQuery, MessageStatus,
    PatientChange, ProblemKind, Received, StoredMessage, facility_setting_key,
};
pub use model::{
    AuditEntry, Channels, EnrollOutcome, Invite, InviteKind, InviteState, NewPractice, Patient,
    PatientSearch, Practice, Readiness, SaveOutcome, Source, StaffUser, TimelineEntry,
    TriggerOutcome,
};
pub use outbox::{
    Channel, ChannelResult, DeliveryJob, DeliveryOutcome, DeliveryPolicy, DeliveryReport,
    FailedDelivery, Finished, Prepared,
};
pub use patients::Chart;
pub use portal::{PatientAccount, PortalSession};
pub use settings::ActivationLink;
pub use staff::{Lockout, NewStaffUser, StaffAccount, StaffListing, StaffSession, hash_token};
pub use webhooks::{
    NewWebhookEndpoint, WebhookDelivery, WebhookEndpoint, WebhookFinished, WebhookJob,
};
pub use worklists::{WorkList, WorkListEntry, WorkListPage, WorkListQuery};

/// Errors of the storage layer. Messages never contain patient data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL {0:?} is not understood: use sqlite://PATH or postgres://USER@HOST/DB")]
    BadUrl(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("a patient with this MRN already exists in the practice")]
    DuplicateMrn,
    #[error("a practice with this code already exists")]
    DuplicatePracticeCode,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// Input the store refuses to write (the sentence says what to fix);
    /// the API checks the same before it calls the store.
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone, Debug)]
enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Backend {
    fn engine(&self) -> Engine {
        match self {
            Backend::Sqlite(_) => Engine::Sqlite,
            Backend::Postgres(_) => Engine::Postgres,
        }
    }
}

/// The database, cheap to clone (it holds a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    backend: Backend,
    /// SQLite has one writer at a time. Writers of this process queue here
    /// (FIFO, no sleeping) instead of in SQLite's busy handler, which polls
    /// with sleeps of up to 100 ms and made tail latencies of tens of ms
    /// when the dispatcher and the MLLP listener wrote at once. Other
    /// processes on the same file still meet the busy timeout.
    sqlite_writer: Arc<tokio::sync::Mutex<()>>,
    /// Tests' faults at the HL7 intake's commit; only with `testing`.
    #[cfg(feature = "testing")]
    intake_faults: Option<Arc<testing::IntakeFaults>>,
}

/// Runs `$body` with `$pool` bound to the backend's pool; the block is
/// compiled once per backend, so it must only use SQL and types both accept.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::Backend::Sqlite($pool) => $body,
            $crate::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// How long SQLite waits for another writer before giving up. Enroll Now and
/// triggers hold the write lock for a few milliseconds, so this is generous.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Splits our own `synchronous=normal|full` parameter off a SQLite URL
/// (sqlx does not read it).
///
/// The default is `normal`, SQLite's recommendation for WAL mode and what
/// Rails and Litestream ship: a commit is written to the WAL before we answer
/// (an ACK, a 200), so it survives a crash of Enroll, and the database is
/// never corrupted; only an operating-system crash or power loss can undo the
/// last commits before the next checkpoint. `full` also fsyncs every commit,
/// which survives power loss too and caps a single writer at the disk's
/// fsync rate (about 3,600 commits/s on our 2-core test machine against
/// 24,000 with `normal`). Deployments that need both use PostgreSQL.
fn sqlite_synchronous(url: &str) -> Result<(String, SqliteSynchronous)> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => return Ok((url.to_string(), SqliteSynchronous::Normal)),
    };
    let mut synchronous = SqliteSynchronous::Normal;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("synchronous", value)) => {
                synchronous = match value.to_ascii_lowercase().as_str() {
                    "normal" => SqliteSynchronous::Normal,
                    "full" => SqliteSynchronous::Full,
                    "extra" => SqliteSynchronous::Extra,
                    _ => {
                        return Err(StoreError::BadUrl(format!(
                            "{url} (synchronous must be normal, full or extra)"
                        )));
                    }
                }
            }
            _ => rest.push(pair),
        }
    }
    let sqlx_url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((sqlx_url, synchronous))
}

/// Copies the WAL back into the database file every half second, with a
/// PASSIVE checkpoint, which never blocks writers or readers; when the WAL
/// has grown past [`WAL_TRUNCATE_PAGES`] anyway (under steady writing a
/// passive checkpoint never finds the moment to rewind it), a TRUNCATE
/// checkpoint during this process's write turn empties it.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses 1,000
/// WAL pages and fsyncs the database file there: one HL7 message in about a
/// hundred waited 10-20 ms for it (the ACK's p99). Here the commit path only
/// appends to the WAL, and a rare truncation is the only wait. Ends when the
/// pool is closed.
async fn checkpoint_wal(pool: SqlitePool, writer: Arc<tokio::sync::Mutex<()>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            break;
        }
        let passive: std::result::Result<(i64, i64, i64), _> =
            sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&pool)
                .await;
        let result = match passive {
            Ok((_, wal_pages, _)) if wal_pages > WAL_TRUNCATE_PAGES => {
                let _turn = writer.lock().await;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&pool)
                    .await
                    .map(|_| ())
            }
            other => other.map(|_| ()),
        };
        if let Err(e) = result {
            if pool.is_closed() {
                break;
            }
            tracing::warn!(error = %e, "SQLite WAL checkpoint failed; trying again");
        }
    }
}

/// Creates a missing SQLite file readable and writable by its owner only
/// (0600): it holds PHI. SQLite gives its `-wal` and `-shm` files the
/// database file's permissions. An existing file keeps its own.
fn create_owner_only(path: &std::path::Path) -> Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Database(sqlx::Error::Io(e))),
    }
}

/// About 40 MB of WAL (4 KiB pages).
const WAL_TRUNCATE_PAGES: i64 = 10_000;

impl Store {
    /// Opens `sqlite://PATH` (creating the file) or `postgres://...`.
    pub async fn connect(url: &str) -> Result<Store> {
        let sqlite_writer = Arc::new(tokio::sync::Mutex::new(()));
        let backend = if url.starts_with("sqlite:") {
            let (sqlx_url, synchronous) = sqlite_synchronous(url)?;
            let options = SqliteConnectOptions::from_str(&sqlx_url)
                .map_err(|_| StoreError::BadUrl(url.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(synchronous)
                // Checkpoints run in the background (see `checkpoint_wal`), not
                // in whichever commit happens to fill the WAL past 1,000 pages.
                .pragma("wal_autocheckpoint", "0")
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true);
            if !(url.contains(":memory:") || url.contains("mode=memory")) {
                create_owner_only(options.get_filename())?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(options)
                .await?;
            tokio::spawn(checkpoint_wal(pool.clone(), sqlite_writer.clone()));
            Backend::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            Backend::Postgres(pool)
        } else {
            return Err(StoreError::BadUrl(url.to_string()));
        };
        Ok(Store {
            backend,
            sqlite_writer,
            #[cfg(feature = "testing")]
            intake_faults: None,
        })
    }

    /// Applies the embedded migrations of the backend.
    pub async fn migrate(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
            Backend::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
        }
        Ok(())
    }

    /// "sqlite" or "postgres".
    pub fn engine(&self) -> &'static str {
        self.backend.engine().name()
    }

    /// How many write transactions are worth running at once: SQLite has
    /// one writer; PostgreSQL overlaps the round trips of a few.
    pub fn concurrent_writers(&self) -> usize {
        self.backend.engine().concurrent_writers()
    }

    /// A round trip to the database, for `/readyz` and `enroll doctor`.
    pub async fn ping(&self) -> Result<()> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(())
    }

    /// Number of applied migrations, for `enroll doctor`.
    pub async fn applied_migrations(&self) -> Result<i64> {
        let n: i64 = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(pool)
                .await
        })?;
        Ok(n)
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// Milliseconds since the epoch: how every `*_at` column stores an instant.
pub(crate) fn to_ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

pub(crate) fn from_ms(ms: i64) -> Result<Timestamp> {
    Timestamp::from_millisecond(ms).map_err(|e| StoreError::Corrupt(format!("timestamp {ms}: {e}")))
}

pub(crate) fn opt_from_ms(ms: Option<i64>) -> Result<Option<Timestamp>> {
    ms.map(from_ms).transpose()
}

/// Maps a unique-constraint violation to a domain error.
pub(crate) fn unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl StoreError {
    /// True when the same work may succeed if tried again later: the
    /// database could not be reached, was busy, out of space or memory,
    /// shutting down or read-only (a failover), or the transaction lost a
    /// deadlock or serialization race. Everything else (a value or a
    /// constraint the database refuses, a bug of ours) fails the same way
    /// every time, so trying again only stalls whoever is waiting.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => transient_sqlx(e),
            _ => false,
        }
    }
}

fn transient_sqlx(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or_default();
            if db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                transient_sqlstate(code)
            } else {
                transient_sqlite_code(code)
            }
        }
        _ => false,
    }
}

/// PostgreSQL: connection exceptions (08), transaction rollbacks such as
/// serialization failures and deadlocks (40), insufficient resources like
/// a full disk (53), operator intervention such as a shutdown (57), system
/// errors like an I/O error (58), a lock not available (55P03) and a
/// read-only transaction (25006, a standby after a failover).
fn transient_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58"))
        || matches!(code, "55P03" | "25006")
}

/// SQLite (the extended code's low byte is the primary code): BUSY,
/// LOCKED, NOMEM, READONLY, IOERR, FULL, CANTOPEN, PROTOCOL.
fn transient_sqlite_code(code: &str) -> bool {
    code.parse::<i64>()
        .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 7 | 8 | 10 | 13 | 14 | 15))
}

/// A deadlock or a serialization failure (PostgreSQL): the transaction
/// itself may be run again at once.
pub(crate) fn lost_lock_race(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some()
            && matches!(db.code().as_deref(), Some("40001" | "40P01")))
}

/// What a storage error was, in words that never carry a value: the
/// database's own messages can quote the data they refused (`invalid input
/// syntax for type bigint: "..."`), so only the SQLSTATE or SQLite code,
/// the constraint and the table are named.
pub(crate) fn describe_storage_error(err: &StoreError) -> String {
    match err {
        StoreError::Database(sqlx::Error::Database(db)) => {
            let mut text = format!(
                "the database refused it (code {}",
                db.code().as_deref().unwrap_or("unknown")
            );
            if let Some(constraint) = db.constraint() {
                text.push_str(&format!(", constraint {constraint}"));
            }
            if let Some(table) = db.table() {
                text.push_str(&format!(", table {table}"));
            }
            text.push(')');
            text
        }
        StoreError::Database(_) => "the database failed".to_string(),
        StoreError::Migrate(_) => "the database schema is not migrated".to_string(),
        StoreError::Corrupt(_) => "stored data is corrupt".to_string(),
        StoreError::DuplicateMrn => {
            "a patient with this MRN already exists in the practice".to_string()
        }
        StoreError::NotFound(what) => format!("{what} not found"),
        StoreError::Conflict(why) => (*why).to_string(),
        StoreError::BadUrl(_) | StoreError::DuplicatePracticeCode | StoreError::Invalid(_) => {
            "the store refused it".to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_are_transient_only_when_trying_again_can_help() {
        // PostgreSQL: lost connection, deadlock, serialization, disk full,
        // shutdown, I/O, lock timeout, read-only standby.
        for code in [
            "08006", "40P01", "40001", "53100", "57P01", "58030", "55P03", "25006",
        ] {
            assert!(transient_sqlstate(code), "{code}");
        }
        // A NUL in text, a unique or check violation, a trigger's RAISE, a
        // syntax error: the same every time.
        for code in ["22021", "22P05", "23505", "23514", "P0001", "42601", ""] {
            assert!(!transient_sqlstate(code), "{code}");
        }
        // SQLite: BUSY, BUSY_SNAPSHOT (517), LOCKED, IOERR_WRITE (778),
        // FULL, READONLY; not CONSTRAINT_TRIGGER (1811), CONSTRAINT_UNIQUE
        // (2067), MISMATCH, TOOBIG.
        for code in ["5", "517", "6", "778", "13", "8"] {
            assert!(transient_sqlite_code(code), "{code}");
        }
        for code in ["1811", "2067", "20", "18", "1", "x"] {
            assert!(!transient_sqlite_code(code), "{code}");
        }
        assert!(StoreError::Database(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!StoreError::Corrupt("x".into()).is_transient());
        assert!(!StoreError::Database(sqlx::Error::RowNotFound).is_transient());
    }

    #[test]
    fn a_storage_error_is_described_without_its_message() {
        let described = describe_storage_error(&StoreError::Invalid("Lopez".into()));
        assert!(!described.contains("Lopez"), "{described}");
        let described = describe_storage_error(&StoreError::Corrupt("Lopez".into()));
        assert!(!described.contains("Lopez"), "{described}");
    }

    #[test]
    fn sqlite_synchronous_defaults_to_normal_and_is_taken_off_the_url() {
        let (url, sync) = sqlite_synchronous("sqlite://x.db").unwrap();
        assert_eq!(
            (url.as_str(), sync),
            ("sqlite://x.db", SqliteSynchronous::Normal)
        );
        let (url, sync) = sqlite_synchronous("sqlite://x.db?synchronous=FULL").unwrap();
        assert_eq!(
            (url.as_str(), sync),
            ("sqlite://x.db", SqliteSynchronous::Full)
        );
        let (url, sync) = sqlite_synchronous("sqlite://x.db?mode=rwc&synchronous=normal").unwrap();
        assert_eq!(
            (url.as_str(), sync),
            ("sqlite://x.db?mode=rwc", SqliteSynchronous::Normal)
        );
    }

    #[test]
    fn an_unknown_synchronous_value_is_a_bad_url_naming_the_choices() {
        let err = sqlite_synchronous("sqlite://x.db?synchronous=off").unwrap_err();
        assert!(err.to_string().contains("normal, full or extra"), "{err}");
    }
}
