//! The transactional job API: [`TxJob`], a delivery handed over inside the transaction that
//! marks it done, and [`Completed`], the proof that it committed.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgTransactionManager;
use sqlx::{PgConnection, SqliteConnection, Transaction, TransactionManager as _};

use super::InHand;
use crate::error::InboxError;
use crate::model::StoredDelivery;
use crate::ops::{self, Lease};

/// Proof that a [`TxJob`] committed: only [`TxJob::complete`] makes one.
#[derive(Debug)]
#[must_use = "return it from the handler"]
pub struct Completed {
    _private: (),
}

pub(super) enum JobTx {
    /// The transaction, and this process's writer turn at SQLite, held as long as it.
    Sqlite(Transaction<'static, sqlx::Sqlite>, crate::store::WriterTurn),
    Postgres(PgJobTx),
}

/// A transactional handler's PostgreSQL transaction, on a connection its batch lends it.
///
/// Once committed, the connection goes back to the batch for its next handler, not to the pool:
/// the pool checks every connection given back to it with a round trip, which cost each job
/// one more. The batch gives its connections back to the pool when it ends. A transaction that
/// ends any other way (an error, the job dropped) is rolled back as sqlx's own `Transaction`
/// does it (queued, sent before anything else on the connection) and its connection goes to
/// the pool.
pub(super) struct PgJobTx {
    /// Present until the transaction ends.
    conn: Option<PoolConnection<sqlx::Postgres>>,
    batch: Arc<InHand>,
}

impl PgJobTx {
    /// Begins a transaction on one of the batch's idle connections, or on a new one.
    pub(super) async fn begin(
        pool: &sqlx::PgPool,
        batch: Arc<InHand>,
    ) -> Result<Self, sqlx::Error> {
        let mut conn = match batch.take_connection() {
            Some(conn) => conn,
            None => pool.acquire().await?,
        };
        // On failure the connection is dropped: `begin` queued its own rollback if needed.
        PgTransactionManager::begin(&mut conn, None).await?;
        Ok(Self {
            conn: Some(conn),
            batch,
        })
    }

    /// The transaction's connection. It leaves the transaction only when `commit` or `drop`
    /// consumes it, so the error is never seen; it saves a panic in a library.
    fn connection(&mut self) -> Result<&mut PgConnection, InboxError> {
        self.conn
            .as_deref_mut()
            .ok_or(InboxError::Database(sqlx::Error::PoolClosed))
    }

    /// Commits; the connection goes back to the batch. It stays in `self` until the commit
    /// succeeded, so that a failed or cancelled commit is rolled back by `drop`.
    async fn commit(mut self) -> Result<(), sqlx::Error> {
        if let Some(conn) = self.conn.as_mut() {
            PgTransactionManager::commit(conn).await?;
        }
        if let Some(conn) = self.conn.take() {
            self.batch.give_back_connection(conn);
        }
        Ok(())
    }
}

impl Drop for PgJobTx {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            if PgTransactionManager::get_transaction_depth(&conn) > 0 {
                PgTransactionManager::start_rollback(&mut conn);
            }
            // Back to the pool, which sends the queued rollback with its check.
            drop(conn);
        }
    }
}

/// A delivery handed over inside the database transaction that will mark it done.
///
/// Write your effects through [`sqlite`](Self::sqlite) or [`postgres`](Self::postgres) (tables
/// of your own in the inbox's database), then call [`complete`](Self::complete): your writes and
/// the "done" mark commit together, or not at all. Returning an error (or dropping the job)
/// rolls everything back and the delivery is retried.
pub struct TxJob {
    pub(super) delivery: StoredDelivery,
    pub(super) lease: Lease,
    pub(super) tx: JobTx,
    /// The rest of the batch, whose leases the commit extends on SQLite, and the lease's length.
    pub(super) batch: Arc<InHand>,
    pub(super) lease_ms: i64,
}

impl std::fmt::Debug for TxJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxJob")
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

impl TxJob {
    /// The delivery.
    pub fn delivery(&self) -> &StoredDelivery {
        &self.delivery
    }

    /// The transaction's connection on SQLite.
    ///
    /// # Errors
    /// [`InboxError::WrongBackend`] when the inbox runs on PostgreSQL.
    pub fn sqlite(&mut self) -> Result<&mut SqliteConnection, InboxError> {
        match &mut self.tx {
            JobTx::Sqlite(tx, _) => Ok(&mut **tx),
            JobTx::Postgres(_) => Err(InboxError::WrongBackend {
                requested: "SQLite",
                actual: "PostgreSQL",
            }),
        }
    }

    /// The transaction's connection on PostgreSQL.
    ///
    /// # Errors
    /// [`InboxError::WrongBackend`] when the inbox runs on SQLite.
    pub fn postgres(&mut self) -> Result<&mut PgConnection, InboxError> {
        match &mut self.tx {
            JobTx::Postgres(tx) => tx.connection(),
            JobTx::Sqlite(..) => Err(InboxError::WrongBackend {
                requested: "PostgreSQL",
                actual: "SQLite",
            }),
        }
    }

    /// Marks the delivery done in this transaction and commits: your writes and the mark land
    /// together.
    ///
    /// # Errors
    /// [`InboxError::Database`] when the commit fails: nothing was recorded and the delivery will
    /// be handed over again. [`InboxError::LeaseLost`] if the lease was no longer this worker's
    /// (your writes are rolled back).
    pub async fn complete(self) -> Result<Completed, InboxError> {
        match self.tx {
            JobTx::Sqlite(mut tx, _turn) => {
                // This transaction held SQLite's only write lock while the handler ran, so no
                // lease of the batch could be extended meanwhile: extend those still waiting
                // here, before the lock is released and another worker could take them.
                let waiting = self.batch.waiting_leases();
                if !waiting.is_empty() {
                    ops::sqlite::extend_on(&mut tx, &waiting, self.lease_ms).await?;
                }
                ops::sqlite::mark_done_counted(&mut tx, &self.lease).await?;
                tx.commit().await?;
            }
            JobTx::Postgres(mut tx) => {
                // The done mark locks the lane and records only if it still holds this lease's
                // token. The batch extended the lease while the handler ran, so it does unless
                // this process stalled past the lease and another worker took the delivery:
                // then the handler's writes must not commit without the done mark (dropping
                // `tx` rolls them back) and the other worker's attempt is the one that counts.
                let recorded =
                    ops::postgres::mark_done_set(tx.connection()?, &[&self.lease]).await?;
                if !recorded.contains(&self.lease.lane) {
                    return Err(InboxError::LeaseLost {
                        delivery_id: self.lease.delivery_id,
                    });
                }
                tx.commit().await?;
            }
        }
        Ok(Completed { _private: () })
    }
}
