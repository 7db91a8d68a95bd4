//! Finishing: recording handlers' outcomes, each only while its lane lease is held.

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::{Driver, Lease, Sql};
use crate::store::{DEAD, DONE, RETRIED, add_counts, now_ms};

/// A handler's outcome to record: `Ok`, or the error text with the attempt limit and the wait
/// before the next attempt (ms).
pub(crate) type Finish<'a> = (&'a Lease, Result<(), (&'a str, i64, i64)>);

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
    /// Locks the lease's lane (waiting for it) and says whether the lease is still this
    /// worker's.
    pub(crate) async fn hold_lease(
        conn: &mut DB::Connection,
        lease: &Lease,
    ) -> Result<bool, sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT lease_token FROM chip_inbox_lanes WHERE lane = $1{}",
            DB::FOR_UPDATE
        ))
        .bind(&lease.lane)
        .fetch_optional(&mut *conn)
        .await?;
        let token: Option<String> = match row {
            Some(row) => row.try_get("lease_token")?,
            None => None,
        };
        Ok(token.as_deref() == Some(lease.token.as_str()))
    }

    /// Marks the delivery done and releases its lane (the caller holds the lease).
    pub(crate) async fn mark_done(
        conn: &mut DB::Connection,
        lease: &Lease,
    ) -> Result<(), sqlx::Error> {
        let now = now_ms();
        sqlx::query(
            "UPDATE chip_inbox_deliveries SET state = 'done', finished_at = $2, \
             last_error = NULL, replay = 0 WHERE id = $1",
        )
        .bind(lease.delivery_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "UPDATE chip_inbox_lanes SET handled_updated_on = CASE \
             WHEN $2 IS NULL THEN handled_updated_on \
             WHEN handled_updated_on IS NULL OR handled_updated_on < $2 THEN $2 \
             ELSE handled_updated_on END, \
             handled_at = $3, lease_owner = NULL, lease_token = NULL, \
             lease_delivery = NULL, lease_until = NULL WHERE lane = $1",
        )
        .bind(&lease.lane)
        .bind(lease.updated_on)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// Marks the delivery done and counts it (the caller holds the lease).
    pub(crate) async fn mark_done_counted(
        conn: &mut DB::Connection,
        lease: &Lease,
    ) -> Result<(), sqlx::Error> {
        Self::mark_done(conn, lease).await?;
        add_counts!(conn, [(DONE, 1)])?;
        Ok(())
    }

    /// Records a failed attempt: a retry after `delay_ms`, or dead after the last attempt.
    /// Returns whether it is now dead.
    pub(crate) async fn mark_failed(
        conn: &mut DB::Connection,
        lease: &Lease,
        error: &str,
        max_attempts: i64,
        delay_ms: i64,
    ) -> Result<bool, sqlx::Error> {
        let now = now_ms();
        let dead = lease.attempts >= max_attempts;
        if dead {
            sqlx::query(
                "UPDATE chip_inbox_deliveries SET state = 'dead', finished_at = $2, \
                 last_error = $3 WHERE id = $1",
            )
            .bind(lease.delivery_id)
            .bind(now)
            .bind(error)
            .execute(&mut *conn)
            .await?;
        } else {
            sqlx::query(
                "UPDATE chip_inbox_deliveries SET next_attempt_at = $2, last_error = $3 WHERE id = $1",
            )
            .bind(lease.delivery_id)
            .bind(now.saturating_add(delay_ms))
            .bind(error)
            .execute(&mut *conn)
            .await?;
        }
        sqlx::query(
            "UPDATE chip_inbox_lanes SET lease_owner = NULL, lease_token = NULL, \
             lease_delivery = NULL, lease_until = NULL WHERE lane = $1",
        )
        .bind(&lease.lane)
        .execute(&mut *conn)
        .await?;
        Ok(dead)
    }

    /// Records handlers' outcomes in one transaction (one flush for the lot), each only if its
    /// lease is still held: per item `None` when the lease was lost, otherwise `Some(dead)`.
    /// Lanes are locked in lane order, the counts added once at the end.
    pub(crate) async fn finish_many(
        pool: &Pool<DB>,
        items: &[Finish<'_>],
    ) -> Result<Vec<Option<bool>>, sqlx::Error> {
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by(|&a, &b| items[a].0.lane.cmp(&items[b].0.lane));
        let mut results = vec![None; items.len()];
        let (mut done, mut retried, mut dead) = (0_i64, 0_i64, 0_i64);
        let mut tx = pool.begin_with(DB::BEGIN_WRITE).await?;
        for index in order {
            let (lease, outcome) = &items[index];
            if !Self::hold_lease(&mut tx, lease).await? {
                continue;
            }
            results[index] = Some(match outcome {
                Ok(()) => {
                    Self::mark_done(&mut tx, lease).await?;
                    done += 1;
                    false
                }
                Err((error, max_attempts, delay_ms)) => {
                    let is_dead =
                        Self::mark_failed(&mut tx, lease, error, *max_attempts, *delay_ms).await?;
                    if is_dead {
                        dead += 1;
                    } else {
                        retried += 1;
                    }
                    is_dead
                }
            });
        }
        add_counts!(tx, [(DONE, done), (RETRIED, retried), (DEAD, dead)])?;
        tx.commit().await?;
        Ok(results)
    }
}
