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
mod apply;
mod audit;
mod batch;
mod cap;
mod chart_actions;
mod dashboard;
mod engine;
mod enrollment;
mod go_live;
mod in_person;
mod intake;
mod measure;
mod model;
mod outbox;
mod patients;
mod portal;
mod practices;
mod roster;
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
pub use apply::{BatchOutcome, IntakeItem, IntakeOutcome};
pub use audit::{Audit, AuditTarget};
pub use dashboard::{CHART_DAYS, DashboardCounts, DayCount, MeasuredPatient};
pub use go_live::{GoLiveProgress, GoLiveRun};
pub use in_person::{InPersonInvite, InPersonOutcome};
pub use intake::{
    InboundMessage, IntakeActivity, IntakeProblem, MessageQuery, MessageStatus, ProblemKind,
    Received, StoredMessage, facility_setting_key,
};
pub use measure::MeasureCounts;
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
pub use practices::PracticeChange;
pub use roster::RosterCounts;
pub use settings::ActivationLink;
pub use staff::{
    Lockout, NewStaffUser, StaffAccount, StaffChange, StaffListing, StaffSession, hash_token,
};
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

/// How SQLite makes a commit durable (`PRAGMA synchronous`, WAL mode).
///
/// An HL7 ACK, an API 201 and a recorded send each promise "stored
/// safely", so the default is `full`: every commit is fsynced before it
/// returns, and neither a crash of Enroll nor a power loss can undo it.
/// `normal` (SQLite's recommendation for WAL, and what Rails and Litestream
/// ship) writes the commit to the WAL without an fsync: it survives a crash
/// of Enroll, the database is never corrupted, but an operating-system
/// crash or power loss can undo the commits since the last checkpoint,
/// which would turn ACKed messages and recorded sends into lost ones (and
/// a re-send). An explicit choice for a demo, a test, or a disk with a
/// battery-backed cache; PostgreSQL has its own `synchronous_commit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    #[default]
    Full,
    Normal,
}

impl Synchronous {
    fn pragma(self) -> SqliteSynchronous {
        match self {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
        }
    }

    /// "full" or "normal", as configured.
    pub fn name(self) -> &'static str {
        match self {
            Synchronous::Full => "full",
            Synchronous::Normal => "normal",
        }
    }

    /// What `PRAGMA synchronous` answers (0 off, 1 normal, 2 full, 3 extra).
    fn from_pragma(level: i64) -> Result<Synchronous> {
        match level {
            1 => Ok(Synchronous::Normal),
            2 => Ok(Synchronous::Full),
            other => Err(StoreError::Corrupt(format!(
                "PRAGMA synchronous is {other}, neither normal (1) nor full (2)"
            ))),
        }
    }
}

/// Refuses the `synchronous=` URL parameter that earlier versions read:
/// the choice is `[sqlite] synchronous` now, in one place, and a URL still
/// asking for it is told where the setting went.
fn refuse_synchronous_parameter(url: &str) -> Result<()> {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let asks = query
        .split('&')
        .any(|pair| pair.split('=').next() == Some("synchronous"));
    if asks {
        return Err(StoreError::Invalid(
            "the SQLite URL's synchronous parameter is no longer read: remove it and set \
             `[sqlite] synchronous = \"full\"` (the default) or `\"normal\"` in the configuration"
                .into(),
        ));
    }
    Ok(())
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
    /// Opens `sqlite://PATH` (creating the file, commits fsynced:
    /// [`Synchronous::Full`]) or `postgres://...`.
    pub async fn connect(url: &str) -> Result<Store> {
        Store::connect_with(url, Synchronous::Full).await
    }

    /// [`Store::connect`] with SQLite's durability chosen (PostgreSQL
    /// ignores it).
    pub async fn connect_with(url: &str, synchronous: Synchronous) -> Result<Store> {
        let sqlite_writer = Arc::new(tokio::sync::Mutex::new(()));
        let backend = if url.starts_with("sqlite:") {
            refuse_synchronous_parameter(url)?;
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|_| StoreError::BadUrl(url.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(synchronous.pragma())
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

    /// SQLite's `PRAGMA synchronous` as a connection of the pool has it
    /// (every connection is opened with the same options); `None` on
    /// PostgreSQL. For `enroll doctor` and the tests of the defaults.
    pub async fn synchronous(&self) -> Result<Option<Synchronous>> {
        match &self.backend {
            Backend::Sqlite(pool) => {
                let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(pool)
                    .await?;
                Synchronous::from_pragma(level).map(Some)
            }
            Backend::Postgres(_) => Ok(None),
        }
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
    fn the_old_synchronous_url_parameter_is_refused_naming_the_setting() {
        for url in [
            "sqlite://x.db?synchronous=normal",
            "sqlite://x.db?mode=rwc&synchronous=FULL",
            "sqlite://x.db?synchronous",
        ] {
            let err = refuse_synchronous_parameter(url).unwrap_err();
            assert!(err.to_string().contains("[sqlite] synchronous"), "{err}");
        }
        refuse_synchronous_parameter("sqlite://x.db?mode=rwc").unwrap();
        refuse_synchronous_parameter("sqlite://synchronous.db").unwrap();
    }

    #[test]
    fn synchronous_reads_as_configured_and_from_the_pragma() {
        let read: Synchronous = serde_json::from_str("\"normal\"").unwrap();
        assert_eq!(read, Synchronous::Normal);
        assert_eq!(Synchronous::default(), Synchronous::Full);
        assert_eq!(Synchronous::from_pragma(2).unwrap(), Synchronous::Full);
        assert!(Synchronous::from_pragma(0).is_err());
        assert!(serde_json::from_str::<Synchronous>("\"off\"").is_err());
    }
}
