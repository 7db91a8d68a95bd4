//! What the operator's commands run: listing and reading deliveries, and requeueing one (retry
//! and replay).

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::rows::{SUMMARY_COLUMNS, state_from};
use super::{Driver, Sql};
use crate::model::{DeliveryState, DeliverySummary, StoredDelivery};
use crate::store::{DUE_CHANNEL, now_ms};

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
    /// Up to `limit` deliveries, newest first, in `state` and about `object_id` when given, with
    /// ids below `before_id` when given (the next page).
    pub(crate) async fn list(
        pool: &Pool<DB>,
        state: Option<&str>,
        object_id: Option<&str>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<DeliverySummary>, sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {SUMMARY_COLUMNS} FROM chip_inbox_deliveries \
             WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR object_id = $2) \
             AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4"
        ))
        .bind(state)
        .bind(object_id)
        .bind(before_id)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        rows.iter().map(Self::summary).collect()
    }

    /// The delivery `id` with its signature and body, if there is one.
    pub(crate) async fn get(
        pool: &Pool<DB>,
        id: i64,
    ) -> Result<Option<StoredDelivery>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT {SUMMARY_COLUMNS}, signature, body FROM chip_inbox_deliveries WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(pool)
        .await?;
        row.map(|row| Self::stored(&row, false)).transpose()
    }

    /// Makes a delivery pending again, due now, with its attempts reset, if it is in one of
    /// `from`. `replay` lets it past the stale check once. Returns the state it was in (`None`:
    /// no such delivery).
    pub(crate) async fn requeue(
        pool: &Pool<DB>,
        id: i64,
        from: &[DeliveryState],
        replay: bool,
    ) -> Result<Option<(DeliveryState, bool)>, sqlx::Error> {
        let mut tx = pool.begin_with(DB::BEGIN_WRITE).await?;
        let row = sqlx::query(&format!(
            "SELECT state FROM chip_inbox_deliveries WHERE id = $1{}",
            DB::FOR_UPDATE
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let state: String = row.try_get("state")?;
        let state = state_from(&state);
        if !from.contains(&state) {
            return Ok(Some((state, false)));
        }
        sqlx::query(
            "UPDATE chip_inbox_deliveries SET state = 'pending', attempts = 0, \
             next_attempt_at = $2, finished_at = NULL, replay = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(now_ms())
        .bind(i64::from(replay))
        .execute(&mut *tx)
        .await?;
        // Its lane may be gone (retention): make sure it exists.
        sqlx::query(
            "INSERT INTO chip_inbox_lanes (lane) \
             SELECT lane FROM chip_inbox_deliveries WHERE id = $1 ON CONFLICT (lane) DO NOTHING",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if !DB::NOTIFY_DUE.is_empty() {
            sqlx::query(DB::NOTIFY_DUE)
                .bind(DUE_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Some((state, true)))
    }
}
