//! Retention: removing finished deliveries, and the horizon that keeps their copies from being
//! handed over again.

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::{Driver, Sql};

/// How many deliveries a purge removes in one transaction (with the lanes they emptied).
const PURGE_CHUNK: i64 = 1_000;

/// Between two chunks of a purge. A SQLite writer that found the write lock taken sleeps in
/// growing steps (SQLite's busy handler: 1, 2, 5, 10 ms and on, up to 100) before it tries again;
/// chunks that followed each other at once kept the lock taken at nearly every try, and the
/// intake waited for the whole purge (435 ms in one run of a version that checked 100,000 lanes
/// in chunks). The pause lets it in; a purge runs beside the claims, so taking a little longer
/// costs nobody.
async fn pause() {
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
}

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
    /// is before it too, and the lanes they leave empty whose newest handled state the horizon
    /// covers. Returns how many deliveries went.
    ///
    /// First the horizon (the newest `updated_on` removed) is raised to cover every delivery
    /// about to go, in a transaction of its own (the newest state is read before it, outside
    /// any lock); only then are they removed. Intake reads the
    /// horizon in the transaction that stores (on PostgreSQL `FOR SHARE`, which this waits for),
    /// so a copy of a removed delivery is always stored as expired, never handed over.
    /// Deliveries without `updated_on` are kept: only their stored copy recognises a repeat.
    ///
    /// `stop`, once set, ends the purge after the chunk under way (none is ever left half
    /// done: a purge stopped loses nothing, and the next one goes on).
    pub(crate) async fn purge(
        pool: &Pool<DB>,
        cutoff: i64,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<u64, sqlx::Error> {
        let cutoff_s = cutoff.div_euclid(1000);
        // The newest `updated_on` about to go, read before any lock is taken. It reads every
        // delivery to be removed, and read under the horizon's lock (as it was) it held back
        // every intake meanwhile, since intake reads the horizon in the transaction that stores
        // (`FOR SHARE` on PostgreSQL; on SQLite under the write lock): one delivery waited
        // 345 ms during a purge of 100,000 on PostgreSQL (`retry_backlog_bench`). Deliveries
        // that finish after this read with a newer state are not covered by the horizon, so the
        // chunks below leave them for the next purge.
        let newest: Option<i64> = sqlx::query(
            "SELECT MAX(updated_on) AS newest FROM chip_inbox_deliveries \
             WHERE state IN ('done', 'stale') AND finished_at < $1 \
             AND updated_on IS NOT NULL AND updated_on < $2",
        )
        .bind(cutoff)
        .bind(cutoff_s)
        .fetch_one(pool)
        .await?
        .try_get("newest")?;
        // Then the horizon is raised, in a transaction of its own that holds its lock for one
        // short statement. It waits for the intakes that read the old horizon to commit, so
        // none of them is still storing when the first chunk goes.
        if let Some(newest) = newest {
            let mut tx = pool.begin_with(DB::BEGIN_WRITE).await?;
            sqlx::query(
                "UPDATE chip_inbox_horizon SET updated_on = $1 \
                 WHERE id = 1 AND (updated_on IS NULL OR updated_on < $1)",
            )
            .bind(newest)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }

        // Then the deliveries, a chunk at a time, each chunk in a transaction of its own: a
        // purge never holds a write lock for long, however much it removes (the first purge of
        // a long history). On SQLite, whose one write lock the intake needs for every delivery
        // it stores, one statement over everything made the intake wait for all of it.
        //
        // With each chunk go the lanes it emptied. A lane's mark is only needed while it is
        // above the horizon (below it, every older delivery is expired anyway), and only a
        // purge removes deliveries: so the lanes of the deliveries removed are the only ones
        // that can have become removable. (This looked at every lane, every purge: 117 ms
        // with 100,000 lanes on PostgreSQL, on SQLite under the write lock.)
        let mut removed = 0;
        loop {
            let mut tx = pool.begin_with(DB::BEGIN_WRITE).await?;
            let rows = sqlx::query(
                "DELETE FROM chip_inbox_deliveries WHERE id IN ( \
                 SELECT id FROM chip_inbox_deliveries WHERE state IN ('done', 'stale') \
                 AND finished_at < $1 AND updated_on IS NOT NULL \
                 AND updated_on <= (SELECT updated_on FROM chip_inbox_horizon WHERE id = 1) \
                 LIMIT $2) RETURNING lane",
            )
            .bind(cutoff)
            .bind(PURGE_CHUNK)
            .fetch_all(&mut *tx)
            .await?;
            let mut lanes = rows
                .iter()
                .map(|row| row.try_get::<String, _>("lane"))
                .collect::<Result<Vec<_>, _>>()?;
            lanes.sort_unstable();
            lanes.dedup();
            if !lanes.is_empty() {
                let lanes =
                    serde_json::to_string(&lanes).map_err(|e| sqlx::Error::Encode(e.into()))?;
                sqlx::query(&format!(
                    "DELETE FROM chip_inbox_lanes WHERE lane IN ({}) AND lease_token IS NULL \
                     AND (handled_updated_on IS NULL OR handled_updated_on <= \
                          (SELECT updated_on FROM chip_inbox_horizon WHERE id = 1)) \
                     AND NOT EXISTS (SELECT 1 FROM chip_inbox_deliveries d \
                                     WHERE d.lane = chip_inbox_lanes.lane)",
                    DB::JSON_STRINGS
                ))
                .bind(lanes)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            removed += rows.len() as u64;
            if rows.len() < PURGE_CHUNK as usize || stop.load(std::sync::atomic::Ordering::Relaxed)
            {
                break;
            }
            pause().await;
        }
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
