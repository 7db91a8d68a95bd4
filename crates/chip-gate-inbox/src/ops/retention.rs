//! Retention: removing finished deliveries, and the horizon that keeps their copies from being
//! handed over again.

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::{Driver, Sql};

impl<DB: Driver> Sql<DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Type<DB> + Encode<'q, DB> + Decode<'q, DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> String: Type<DB> + Encode<'q, DB> + Decode<'q, DB>,
    for<'q> &'q str: Type<DB> + Encode<'q, DB> + ColumnIndex<DB::Row>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
    for<'q> Vec<u8>: Type<DB> + Decode<'q, DB>,
{
    /// Removes done and stale deliveries finished before `cutoff` (Unix ms) whose `updated_on`
    /// is before it too, and the lanes whose newest handled state the horizon covers. Returns
    /// how many deliveries went.
    ///
    /// First, in a transaction of its own, the horizon (the newest `updated_on` removed) is
    /// raised to cover every delivery about to go; only then are they removed. Intake reads the
    /// horizon in the transaction that stores (on PostgreSQL `FOR SHARE`, which this waits for),
    /// so a copy of a removed delivery is always stored as expired, never handed over.
    /// Deliveries without `updated_on` are kept: only their stored copy recognises a repeat.
    pub(crate) async fn purge(pool: &Pool<DB>, cutoff: i64) -> Result<u64, sqlx::Error> {
        let cutoff_s = cutoff.div_euclid(1000);
        let mut tx = pool.begin_with(DB::BEGIN_WRITE).await?;
        sqlx::query(&format!(
            "SELECT updated_on FROM chip_inbox_horizon WHERE id = 1{}",
            DB::FOR_UPDATE
        ))
        .fetch_optional(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE chip_inbox_horizon SET updated_on = m.newest \
             FROM (SELECT MAX(updated_on) AS newest FROM chip_inbox_deliveries \
                   WHERE state IN ('done', 'stale') AND finished_at < $1 \
                   AND updated_on IS NOT NULL AND updated_on < $2) AS m \
             WHERE chip_inbox_horizon.id = 1 AND m.newest IS NOT NULL \
             AND (chip_inbox_horizon.updated_on IS NULL OR chip_inbox_horizon.updated_on < m.newest)",
        )
        .bind(cutoff)
        .bind(cutoff_s)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;

        let mut tx = pool.begin_with(DB::BEGIN_WRITE).await?;
        let removed = DB::rows_affected(
            &sqlx::query(
                "DELETE FROM chip_inbox_deliveries WHERE state IN ('done', 'stale') \
                 AND finished_at < $1 AND updated_on IS NOT NULL \
                 AND updated_on <= (SELECT updated_on FROM chip_inbox_horizon WHERE id = 1)",
            )
            .bind(cutoff)
            .execute(&mut *tx)
            .await?,
        );
        // A lane's mark is only needed while it is above the horizon: below it, every older
        // delivery is expired anyway.
        sqlx::query(
            "DELETE FROM chip_inbox_lanes WHERE lease_token IS NULL \
             AND (handled_updated_on IS NULL OR handled_updated_on <= \
                  (SELECT updated_on FROM chip_inbox_horizon WHERE id = 1)) \
             AND NOT EXISTS (SELECT 1 FROM chip_inbox_deliveries d WHERE d.lane = chip_inbox_lanes.lane)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// The retention horizon: the newest `updated_on` retention removed, if any.
    pub(crate) async fn horizon(pool: &Pool<DB>) -> Result<Option<i64>, sqlx::Error> {
        let row = sqlx::query("SELECT updated_on FROM chip_inbox_horizon WHERE id = 1")
            .fetch_optional(pool)
            .await?;
        match row {
            Some(row) => row.try_get("updated_on"),
            None => Ok(None),
        }
    }
}
