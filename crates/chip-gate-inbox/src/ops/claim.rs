//! Claiming: handing the oldest due delivery of each free lane to a worker, under a lane lease.

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::{Driver, Lease, Sql, rows::SUMMARY_COLUMNS};
use crate::model::StoredDelivery;
use crate::store::{DEAD, EXPIRED, STALE, add_counts, now_ms};

/// A delivery handed to this worker.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub(crate) delivery: StoredDelivery,
    pub(crate) lease: Lease,
}

/// Settings a claim needs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClaimRules {
    pub(crate) limit: i64,
    pub(crate) lease_ms: i64,
    pub(crate) max_attempts: i64,
    pub(crate) skip_stale: bool,
}

/// What a claim did besides handing deliveries over.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClaimTally {
    pub(crate) stale: i64,
    pub(crate) dead: i64,
    /// Of the stale, those stored at or below the retention horizon.
    pub(crate) expired: i64,
    /// Deliveries claimed from a lane whose previous lease had expired (its worker died or
    /// stalled).
    pub(crate) lease_expired: u64,
}

/// Why a delivery stored at or below the retention horizon (or older than the intake's
/// `max_age`) was not handed over.
const EXPIRED_REASON: &str = "not handed over: its updated_on is at or before the retention \
     horizon, or older than the intake's max_age when it arrived (deliveries that old may have \
     been handled before, so this may be a replayed copy); replay it to hand it over";

/// A new lease token: 128 random bits in hex.
fn random_token() -> String {
    format!("{:032x}", fastrand::u128(..))
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
    /// Claims up to `rules.limit` deliveries, at most one per lane, each the oldest pending one
    /// of its lane (by `updated_on`, then arrival).
    pub(crate) async fn claim(
        pool: &Pool<DB>,
        worker: &str,
        rules: ClaimRules,
    ) -> Result<(Vec<Claimed>, ClaimTally), sqlx::Error> {
        let now = now_ms();
        let mut tally = ClaimTally::default();
        let mut claimed = Vec::new();
        let mut tx = pool.begin_with(DB::BEGIN_WRITE).await?;
        // The oldest due deliveries that head their lane (no pending delivery of the same object
        // comes before them) in lanes nobody holds. Walks pending deliveries in id order and
        // stops after enough: cheap however long the backlog.
        let candidates = sqlx::query(
            "SELECT d.lane AS lane, CAST(CASE WHEN l.lane IS NULL THEN 1 ELSE 0 END AS BIGINT) AS missing \
             FROM chip_inbox_deliveries d \
             LEFT JOIN chip_inbox_lanes l ON l.lane = d.lane \
             WHERE d.state = 'pending' AND d.next_attempt_at <= $1 \
             AND (l.lease_until IS NULL OR l.lease_until <= $1) \
             AND NOT EXISTS (SELECT 1 FROM chip_inbox_deliveries e \
                 WHERE e.lane = d.lane AND e.state = 'pending' \
                 AND (COALESCE(e.updated_on, -1) < COALESCE(d.updated_on, -1) \
                      OR (COALESCE(e.updated_on, -1) = COALESCE(d.updated_on, -1) AND e.id < d.id))) \
             ORDER BY d.id LIMIT $2",
        )
        .bind(now)
        .bind(rules.limit.saturating_mul(4))
        .fetch_all(&mut *tx)
        .await?;
        // The objects' first claims make their lanes, all in one statement and in lane order:
        // concurrent claims making overlapping lanes wait for each other in one order, never in
        // a cycle (a deadlock on PostgreSQL).
        let mut missing = Vec::new();
        for candidate in &candidates {
            if candidate.try_get::<i64, _>("missing")? != 0 {
                missing.push(candidate.try_get::<String, _>("lane")?);
            }
        }
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            let mut sql = String::from("INSERT INTO chip_inbox_lanes (lane) VALUES ");
            for n in 1..=missing.len() {
                sql.push_str(&format!("{}(${n})", if n == 1 { "" } else { ", " }));
            }
            sql.push_str(" ON CONFLICT (lane) DO NOTHING");
            let mut insert = sqlx::query(&sql);
            for lane in &missing {
                insert = insert.bind(lane);
            }
            insert.execute(&mut *tx).await?;
        }
        let lock_sql = format!(
            "SELECT handled_updated_on, lease_token, lease_delivery FROM chip_inbox_lanes WHERE lane = $1 \
             AND (lease_until IS NULL OR lease_until <= $2){}",
            DB::SKIP_LOCKED
        );
        for candidate in candidates {
            if claimed.len() >= usize::try_from(rules.limit).unwrap_or(usize::MAX) {
                break;
            }
            let lane: String = candidate.try_get("lane")?;
            // None: the lane is leased, locked by another claim, or not there (another claim's
            // insert of it is not committed yet, or retention removed it since the candidates
            // were read). Skipped this time: a later claim makes a missing lane in its sorted
            // insert above. Inserting it here, in candidate order, could wait for another
            // claim's uncommitted insert while that claim waits for one of ours: a deadlock.
            let locked = sqlx::query(&lock_sql)
                .bind(&lane)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(locked) = locked else { continue };
            let handled: Option<i64> = locked.try_get("handled_updated_on")?;
            // A token left on the lane is a lease that expired: finishing clears it.
            let expired_lease = locked
                .try_get::<Option<String>, _>("lease_token")?
                .is_some();
            // The delivery whose worker died holding the lease: it may have had its effect (a
            // handler outside the database may have run to its end), so it goes first, before
            // any older state that arrived meanwhile (which then counts as stale, as an older
            // state arriving after a newer one was handled does). Handing over the older one
            // first would let the object's effects go back in time.
            let mut in_doubt: Option<i64> = if expired_lease {
                locked.try_get("lease_delivery")?
            } else {
                None
            };
            // With the lane locked, read its deliveries afresh (on PostgreSQL a new statement
            // sees every commit made by the lane's previous holders).
            loop {
                let head = match in_doubt.take() {
                    Some(doubt) => {
                        sqlx::query(
                            "SELECT id, updated_on, attempts, next_attempt_at, replay, expired \
                             FROM chip_inbox_deliveries WHERE id = $1 AND lane = $2 \
                             AND state = 'pending'",
                        )
                        .bind(doubt)
                        .bind(&lane)
                        .fetch_optional(&mut *tx)
                        .await?
                    }
                    None => None,
                };
                let head = match head {
                    Some(head) => Some(head),
                    None => {
                        sqlx::query(
                            "SELECT id, updated_on, attempts, next_attempt_at, replay, expired \
                             FROM chip_inbox_deliveries WHERE lane = $1 AND state = 'pending' \
                             ORDER BY COALESCE(updated_on, -1), id LIMIT 1",
                        )
                        .bind(&lane)
                        .fetch_optional(&mut *tx)
                        .await?
                    }
                };
                let Some(head) = head else { break };
                let id: i64 = head.try_get("id")?;
                let updated_on: Option<i64> = head.try_get("updated_on")?;
                let attempts: i64 = head.try_get("attempts")?;
                let next_attempt_at: i64 = head.try_get("next_attempt_at")?;
                let replay: i64 = head.try_get("replay")?;
                let expired: i64 = head.try_get("expired")?;
                if next_attempt_at > now {
                    // The oldest delivery of this object waits for its retry; the later ones
                    // wait behind it.
                    break;
                }
                if attempts >= rules.max_attempts {
                    // Its workers kept dying (or losing their lease) while handling it.
                    sqlx::query(
                        "UPDATE chip_inbox_deliveries SET state = 'dead', finished_at = $2, \
                         last_error = COALESCE(last_error, 'the worker handling it stopped before finishing, on every attempt') \
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    tally.dead += 1;
                    continue;
                }
                if expired != 0 && replay == 0 {
                    // Stored at or below the retention horizon: it may repeat a delivery handled
                    // and removed since. Never handed over on its own (whatever the stale
                    // policy); a replay hands it over.
                    sqlx::query(
                        "UPDATE chip_inbox_deliveries SET state = 'stale', finished_at = $2, \
                         last_error = $3 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(now)
                    .bind(EXPIRED_REASON)
                    .execute(&mut *tx)
                    .await?;
                    tally.stale += 1;
                    tally.expired += 1;
                    continue;
                }
                let stale =
                    replay == 0 && matches!((updated_on, handled), (Some(u), Some(h)) if u < h);
                if stale && rules.skip_stale {
                    sqlx::query(
                        "UPDATE chip_inbox_deliveries SET state = 'stale', finished_at = $2 WHERE id = $1",
                    )
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    tally.stale += 1;
                    continue;
                }
                let token = random_token();
                sqlx::query(
                    "UPDATE chip_inbox_lanes SET lease_owner = $2, lease_token = $3, \
                     lease_delivery = $4, lease_until = $5 WHERE lane = $1",
                )
                .bind(&lane)
                .bind(worker)
                .bind(&token)
                .bind(id)
                .bind(now.saturating_add(rules.lease_ms))
                .execute(&mut *tx)
                .await?;
                let row = sqlx::query(&format!(
                    "UPDATE chip_inbox_deliveries SET attempts = attempts + 1 WHERE id = $1 \
                     RETURNING {SUMMARY_COLUMNS}, signature, body"
                ))
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                let delivery = Self::stored(&row, stale)?;
                if expired_lease {
                    tally.lease_expired += 1;
                }
                claimed.push(Claimed {
                    lease: Lease {
                        delivery_id: id,
                        lane: lane.clone(),
                        token,
                        updated_on,
                        attempts: attempts + 1,
                    },
                    delivery,
                });
                break;
            }
        }
        add_counts!(
            tx,
            [
                (STALE, tally.stale),
                (DEAD, tally.dead),
                (EXPIRED, tally.expired)
            ]
        )?;
        tx.commit().await?;
        Ok((claimed, tally))
    }
}
