//! Reading deliveries out of result rows.

use bytes::Bytes;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

use super::{Driver, Sql};
use crate::model::{DeliveryState, DeliverySummary, StoredDelivery};

/// The columns [`Sql::summary`] reads, for a `SELECT` or `RETURNING` list.
pub(super) const SUMMARY_COLUMNS: &str = "id, dedup_key, event, object_kind, object_id, updated_on, state, attempts, \
     duplicates, received_at, next_attempt_at, finished_at, last_error, typing_problem";

/// The state stored under `name`.
pub(super) fn state_from(name: &str) -> DeliveryState {
    // Unknown names come only from a newer schema; show them as pending rather than failing.
    DeliveryState::parse(name).unwrap_or(DeliveryState::Pending)
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
    /// A delivery's summary, from a row holding [`SUMMARY_COLUMNS`].
    pub(super) fn summary(row: &DB::Row) -> Result<DeliverySummary, sqlx::Error> {
        let state: String = row.try_get("state")?;
        Ok(DeliverySummary {
            id: row.try_get("id")?,
            dedup_key: row.try_get("dedup_key")?,
            event: row.try_get("event")?,
            object_kind: row.try_get("object_kind")?,
            object_id: row.try_get("object_id")?,
            updated_on: row.try_get("updated_on")?,
            state: state_from(&state),
            attempts: row.try_get("attempts")?,
            duplicates: row.try_get("duplicates")?,
            received_at_ms: row.try_get("received_at")?,
            next_attempt_at_ms: row.try_get("next_attempt_at")?,
            finished_at_ms: row.try_get("finished_at")?,
            last_error: row.try_get("last_error")?,
            typing_problem: row.try_get("typing_problem")?,
        })
    }

    /// A whole delivery, from a row holding [`SUMMARY_COLUMNS`], `signature` and `body`.
    pub(super) fn stored(row: &DB::Row, stale: bool) -> Result<StoredDelivery, sqlx::Error> {
        let body: Vec<u8> = row.try_get("body")?;
        Ok(StoredDelivery {
            summary: Self::summary(row)?,
            signature: row.try_get("signature")?,
            body: Bytes::from(body),
            stale,
        })
    }
}
