//! Leases outside claiming and finishing: extending them while handlers run, handing them back
//! unstarted.

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Type};

use super::{Driver, Lease, Sql};
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
    /// Extends the leases of a batch, a hundred to a statement; returns how many are still this
    /// worker's (a lease another worker took after it expired is not).
    pub(crate) async fn extend(
        pool: &Pool<DB>,
        leases: &[Lease],
        lease_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        let mut conn = pool.acquire().await?;
        Self::extend_on(&mut conn, leases, lease_ms).await
    }

    /// As [`extend`](Self::extend), on a connection (inside the caller's transaction, if it has
    /// one).
    pub(crate) async fn extend_on(
        conn: &mut DB::Connection,
        leases: &[Lease],
        lease_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        let until = now_ms().saturating_add(lease_ms);
        let mut kept = 0;
        for chunk in leases.chunks(100) {
            let mut sql = String::from(
                "UPDATE chip_inbox_lanes SET lease_until = $1 \
                 WHERE (lane, lease_token) IN (VALUES ",
            );
            for n in 0..chunk.len() {
                let sep = if n == 0 { "" } else { ", " };
                sql.push_str(&format!("{sep}(${}, ${})", 2 + 2 * n, 3 + 2 * n));
            }
            sql.push(')');
            let mut query = sqlx::query(&sql).bind(until);
            for lease in chunk {
                query = query.bind(&lease.lane).bind(&lease.token);
            }
            kept += DB::rows_affected(&query.execute(&mut *conn).await?);
        }
        Ok(kept)
    }

    /// Hands leases back at once, in one transaction: each lane this worker still holds is freed
    /// and its delivery's attempt, which never started, is not counted. Lanes go in lane order
    /// (concurrent transactions lock them in one order); on PostgreSQL idle workers everywhere
    /// are told on commit. Returns how many were handed back.
    pub(crate) async fn hand_back(pool: &Pool<DB>, leases: &[Lease]) -> Result<u64, sqlx::Error> {
        let mut sorted: Vec<&Lease> = leases.iter().collect();
        sorted.sort_by(|a, b| a.lane.cmp(&b.lane));
        let mut tx = pool.begin_with(DB::BEGIN_WRITE).await?;
        let mut handed = 0;
        for lease in sorted {
            let freed = DB::rows_affected(
                &sqlx::query(
                    "UPDATE chip_inbox_lanes SET lease_owner = NULL, lease_token = NULL, \
                     lease_delivery = NULL, lease_until = NULL \
                     WHERE lane = $1 AND lease_token = $2",
                )
                .bind(&lease.lane)
                .bind(&lease.token)
                .execute(&mut *tx)
                .await?,
            );
            if freed == 0 {
                continue;
            }
            sqlx::query(
                "UPDATE chip_inbox_deliveries SET attempts = attempts - 1 \
                 WHERE id = $1 AND attempts > 0",
            )
            .bind(lease.delivery_id)
            .execute(&mut *tx)
            .await?;
            handed += 1;
        }
        let notify = DB::NOTIFY_DUE;
        if handed > 0 && !notify.is_empty() {
            sqlx::query(notify)
                .bind(DUE_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(handed)
    }
}
