//! Counters and gauges, for the status and the metrics.

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::{Driver, Sql};
use crate::store::now_ms;

/// The oldest pending delivery's `received_at` on SQLite: the lowest pending id, read from the
/// state index alone (`INDEXED BY`: with statistics from an `ANALYZE`, SQLite would otherwise
/// walk the table from its first row, past every finished delivery kept before the oldest
/// pending one), then that row.
pub(super) const OLDEST_PENDING_SQLITE: &str = "(SELECT received_at FROM chip_inbox_deliveries \
     WHERE id = (SELECT MIN(id) FROM chip_inbox_deliveries \
     INDEXED BY chip_inbox_deliveries_state_due WHERE state = 'pending'))";

/// The same on PostgreSQL, whose partial index of pending deliveries by id (schema version 3)
/// gives the first one.
pub(super) const OLDEST_PENDING_POSTGRES: &str = "(SELECT received_at FROM chip_inbox_deliveries \
     WHERE state = 'pending' ORDER BY id LIMIT 1)";

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
    /// The counters' totals, by name (their shards added up).
    pub(crate) async fn counts(pool: &Pool<DB>) -> Result<Vec<(String, i64)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT name, CAST(SUM(value) AS BIGINT) AS total FROM chip_inbox_counters GROUP BY name",
        )
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("name")?, row.try_get("total")?)))
            .collect()
    }

    /// (pending, leased, dead, finished, oldest pending received_at).
    pub(crate) async fn gauges(
        pool: &Pool<DB>,
    ) -> Result<(i64, i64, i64, i64, Option<i64>), sqlx::Error> {
        let now = now_ms();
        let row = sqlx::query(
            "SELECT \
             CAST(COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0) AS BIGINT) AS pending, \
             CAST(COALESCE(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0) AS BIGINT) AS dead, \
             CAST(COALESCE(SUM(CASE WHEN state IN ('done', 'stale') THEN 1 ELSE 0 END), 0) AS BIGINT) AS finished, \
             MIN(CASE WHEN state = 'pending' THEN received_at END) AS oldest \
             FROM chip_inbox_deliveries",
        )
        .fetch_one(pool)
        .await?;
        let leased: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM chip_inbox_lanes WHERE lease_token IS NOT NULL AND lease_until > $1",
        )
        .bind(now)
        .fetch_one(pool)
        .await?
        .try_get("n")?;
        Ok((
            row.try_get("pending")?,
            leased,
            row.try_get("dead")?,
            row.try_get("finished")?,
            row.try_get("oldest")?,
        ))
    }

    /// For the metrics, in one statement of indexed lookups: (pending never failed, pending that
    /// failed before, dead, stale, done, oldest pending received_at).
    pub(crate) async fn state_gauges(
        pool: &Pool<DB>,
    ) -> Result<([i64; 5], Option<i64>), sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT \
             (SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'pending' \
              AND (attempts = 0 OR last_error IS NULL)) AS pending, \
             (SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'pending' \
              AND attempts > 0 AND last_error IS NOT NULL) AS retrying, \
             (SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'dead') AS dead, \
             (SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'stale') AS stale, \
             (SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'done') AS done, \
             {} AS oldest",
            DB::OLDEST_PENDING
        ))
        .fetch_one(pool)
        .await?;
        Ok((
            [
                row.try_get("pending")?,
                row.try_get("retrying")?,
                row.try_get("dead")?,
                row.try_get("stale")?,
                row.try_get("done")?,
            ],
            row.try_get("oldest")?,
        ))
    }
}
