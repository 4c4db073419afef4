//! A write transaction on either engine, and the way a block of SQL runs
//! on it (`on_tx!`).

use sqlx::{Postgres, Sqlite, Transaction};

use crate::engine::{Engine, SQLITE_BEGIN_WRITE};
use crate::{Backend, Result, Store};

/// A transaction on either backend.
pub(crate) enum Tx {
    /// With this process's SQLite write turn (see `Store::sqlite_writer`).
    Sqlite(
        Transaction<'static, Sqlite>,
        tokio::sync::OwnedMutexGuard<()>,
    ),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$conn` bound to the transaction's connection; the
/// block is compiled once per backend, as with `on_pool!`.
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::tx::Tx::Sqlite(t, _) => {
                let $conn = &mut **t;
                $body
            }
            $crate::tx::Tx::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}
pub(crate) use on_tx;

impl Store {
    /// Starts a write transaction that other writers queue behind.
    pub(crate) async fn begin_write(&self) -> Result<Tx> {
        Ok(match &self.backend {
            Backend::Sqlite(pool) => {
                let turn = self.sqlite_writer.clone().lock_owned().await;
                Tx::Sqlite(pool.begin_with(SQLITE_BEGIN_WRITE).await?, turn)
            }
            Backend::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }
}

impl Tx {
    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            // The write turn passes on once the commit is done.
            Tx::Sqlite(t, _turn) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    pub(crate) fn engine(&self) -> Engine {
        match self {
            Tx::Sqlite(..) => Engine::Sqlite,
            Tx::Postgres(_) => Engine::Postgres,
        }
    }

    /// [`Engine::row_lock`] for this transaction's engine.
    pub(crate) fn row_lock(&self) -> &'static str {
        self.engine().row_lock()
    }

    /// [`Engine::keeps_batch_plans`] for this transaction's engine.
    pub(crate) fn keeps_batch_plans(&self) -> bool {
        self.engine().keeps_batch_plans()
    }

    /// [`Engine::id_list`] for this engine, bound at `$1`.
    pub(crate) fn id_list(
        &self,
        column: &str,
        ids: impl IntoIterator<Item = i64>,
    ) -> Result<(String, String)> {
        self.engine().id_list(1, column, ids)
    }
}
