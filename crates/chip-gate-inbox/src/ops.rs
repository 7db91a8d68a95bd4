//! The SQL of claiming, finishing and operating, written once and compiled for each backend.

use bytes::Bytes;

use crate::model::{DeliveryState, DeliverySummary, StoredDelivery};

/// A claim on one delivery: the lane lease that lets this worker, and no other, hand it over.
#[derive(Clone, Debug)]
pub(crate) struct Lease {
    pub(crate) delivery_id: i64,
    pub(crate) lane: String,
    pub(crate) token: String,
    pub(crate) updated_on: Option<i64>,
    pub(crate) attempts: i64,
}

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

/// A handler's outcome to record: `Ok`, or the error text with the attempt limit and the wait
/// before the next attempt (ms).
pub(crate) type Finish<'a> = (&'a Lease, Result<(), (&'a str, i64, i64)>);

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

const SUMMARY_COLUMNS: &str = "id, dedup_key, event, object_kind, object_id, updated_on, state, attempts, \
     duplicates, received_at, next_attempt_at, finished_at, last_error, typing_problem";

fn summary_columns() -> &'static str {
    SUMMARY_COLUMNS
}

fn random_token() -> String {
    format!("{:032x}", fastrand::u128(..))
}

fn state_from(name: &str) -> DeliveryState {
    // Unknown names come only from a newer schema; show them as pending rather than failing.
    DeliveryState::parse(name).unwrap_or(DeliveryState::Pending)
}

macro_rules! backend_ops {
    ($module:ident, $db:ty, $conn:ty, $row:ty) => {
        pub(crate) mod $module {
            use sqlx::{Pool, Row};

            use super::*;
            use crate::store::{
                DEAD, DONE, Dialect, EXPIRED, RETRIED, STALE, add_counts, now_ms,
            };

            type Db = $db;

            pub(crate) fn summary(row: &$row) -> Result<DeliverySummary, sqlx::Error> {
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

            fn stored(row: &$row, stale: bool) -> Result<StoredDelivery, sqlx::Error> {
                let body: Vec<u8> = row.try_get("body")?;
                Ok(StoredDelivery {
                    summary: summary(row)?,
                    signature: row.try_get("signature")?,
                    body: Bytes::from(body),
                    stale,
                })
            }

            /// Claims up to `rules.limit` deliveries, at most one per lane, each the oldest
            /// pending one of its lane (by `updated_on`, then arrival).
            pub(crate) async fn claim(
                pool: &Pool<Db>,
                worker: &str,
                rules: ClaimRules,
            ) -> Result<(Vec<Claimed>, ClaimTally), sqlx::Error> {
                let now = now_ms();
                let mut tally = ClaimTally::default();
                let mut claimed = Vec::new();
                let mut tx = pool.begin_with(<Db as Dialect>::BEGIN_WRITE).await?;
                // The oldest due deliveries that head their lane (no pending delivery of the same
                // object comes before them) in lanes nobody holds. Walks pending deliveries in id
                // order and stops after enough: cheap however long the backlog.
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
                // The objects' first claims make their lanes, all in one statement and in lane
                // order: concurrent claims making overlapping lanes wait for each other in one
                // order, never in a cycle (a deadlock on PostgreSQL).
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
                    "SELECT handled_updated_on, lease_token FROM chip_inbox_lanes WHERE lane = $1 \
                     AND (lease_until IS NULL OR lease_until <= $2){}",
                    <Db as Dialect>::SKIP_LOCKED
                );
                for candidate in candidates {
                    if claimed.len() >= usize::try_from(rules.limit).unwrap_or(usize::MAX) {
                        break;
                    }
                    let lane: String = candidate.try_get("lane")?;
                    let mut locked = sqlx::query(&lock_sql)
                        .bind(&lane)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if locked.is_none() {
                        // A lane removed by retention since the candidates were read: make it
                        // (a leased or locked lane stays as it is).
                        sqlx::query(
                            "INSERT INTO chip_inbox_lanes (lane) VALUES ($1) ON CONFLICT (lane) DO NOTHING",
                        )
                        .bind(&lane)
                        .execute(&mut *tx)
                        .await?;
                        locked = sqlx::query(&lock_sql)
                            .bind(&lane)
                            .bind(now)
                            .fetch_optional(&mut *tx)
                            .await?;
                    }
                    let Some(locked) = locked else { continue };
                    let handled: Option<i64> = locked.try_get("handled_updated_on")?;
                    // A token left on the lane is a lease that expired: finishing clears it.
                    let expired_lease = locked.try_get::<Option<String>, _>("lease_token")?.is_some();
                    // With the lane locked, read its deliveries afresh (on PostgreSQL a new
                    // statement sees every commit made by the lane's previous holders).
                    loop {
                        let head = sqlx::query(
                            "SELECT id, updated_on, attempts, next_attempt_at, replay, expired \
                             FROM chip_inbox_deliveries WHERE lane = $1 AND state = 'pending' \
                             ORDER BY COALESCE(updated_on, -1), id LIMIT 1",
                        )
                        .bind(&lane)
                        .fetch_optional(&mut *tx)
                        .await?;
                        let Some(head) = head else { break };
                        let id: i64 = head.try_get("id")?;
                        let updated_on: Option<i64> = head.try_get("updated_on")?;
                        let attempts: i64 = head.try_get("attempts")?;
                        let next_attempt_at: i64 = head.try_get("next_attempt_at")?;
                        let replay: i64 = head.try_get("replay")?;
                        let expired: i64 = head.try_get("expired")?;
                        if next_attempt_at > now {
                            // The oldest delivery of this object waits for its retry; the later
                            // ones wait behind it.
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
                            // Stored at or below the retention horizon: it may repeat a
                            // delivery handled and removed since. Never handed over on its own
                            // (whatever the stale policy); a replay hands it over.
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
                        let stale = replay == 0
                            && matches!((updated_on, handled), (Some(u), Some(h)) if u < h);
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
                             RETURNING {}, signature, body",
                            summary_columns()
                        ))
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?;
                        let delivery = stored(&row, stale)?;
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
                    [(STALE, tally.stale), (DEAD, tally.dead), (EXPIRED, tally.expired)]
                )?;
                tx.commit().await?;
                Ok((claimed, tally))
            }

            /// Locks the lease's lane (waiting for it) and says whether the lease is still this
            /// worker's.
            pub(crate) async fn hold_lease(
                conn: &mut $conn,
                lease: &Lease,
            ) -> Result<bool, sqlx::Error> {
                let row = sqlx::query(&format!(
                    "SELECT lease_token FROM chip_inbox_lanes WHERE lane = $1{}",
                    <Db as Dialect>::FOR_UPDATE
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
                conn: &mut $conn,
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
                conn: &mut $conn,
                lease: &Lease,
            ) -> Result<(), sqlx::Error> {
                mark_done(conn, lease).await?;
                add_counts!(conn, [(DONE, 1)])?;
                Ok(())
            }

            /// Records a failed attempt: a retry after `delay_ms`, or dead after the last
            /// attempt. Returns whether it is now dead.
            pub(crate) async fn mark_failed(
                conn: &mut $conn,
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

            /// Records handlers' outcomes in one transaction (one flush for the lot), each only
            /// if its lease is still held: per item `None` when the lease was lost, otherwise
            /// `Some(dead)`. Lanes are locked in lane order, the counts added once at the end.
            pub(crate) async fn finish_many(
                pool: &Pool<Db>,
                items: &[Finish<'_>],
            ) -> Result<Vec<Option<bool>>, sqlx::Error> {
                let mut order: Vec<usize> = (0..items.len()).collect();
                order.sort_by(|&a, &b| items[a].0.lane.cmp(&items[b].0.lane));
                let mut results = vec![None; items.len()];
                let (mut done, mut retried, mut dead) = (0_i64, 0_i64, 0_i64);
                let mut tx = pool.begin_with(<Db as Dialect>::BEGIN_WRITE).await?;
                for index in order {
                    let (lease, outcome) = &items[index];
                    if !hold_lease(&mut tx, lease).await? {
                        continue;
                    }
                    results[index] = Some(match outcome {
                        Ok(()) => {
                            mark_done(&mut tx, lease).await?;
                            done += 1;
                            false
                        }
                        Err((error, max_attempts, delay_ms)) => {
                            let is_dead =
                                mark_failed(&mut tx, lease, error, *max_attempts, *delay_ms).await?;
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

            /// Extends the leases of a batch, a hundred to a statement; returns how many are
            /// still this worker's (a lease another worker took after it expired is not).
            pub(crate) async fn extend(
                pool: &Pool<Db>,
                leases: &[Lease],
                lease_ms: i64,
            ) -> Result<u64, sqlx::Error> {
                let mut conn = pool.acquire().await?;
                extend_on(&mut conn, leases, lease_ms).await
            }

            /// As [`extend`], on a connection (inside the caller's transaction, if it has one).
            pub(crate) async fn extend_on(
                conn: &mut $conn,
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
                    kept += query.execute(&mut *conn).await?.rows_affected();
                }
                Ok(kept)
            }

            /// Hands leases back at once, in one transaction: each lane this worker still holds
            /// is freed and its delivery's attempt, which never started, is not counted. Lanes
            /// go in lane order (concurrent transactions lock them in one order); on PostgreSQL
            /// idle workers everywhere are told on commit. Returns how many were handed back.
            pub(crate) async fn hand_back(
                pool: &Pool<Db>,
                leases: &[Lease],
            ) -> Result<u64, sqlx::Error> {
                let mut sorted: Vec<&Lease> = leases.iter().collect();
                sorted.sort_by(|a, b| a.lane.cmp(&b.lane));
                let mut tx = pool.begin_with(<Db as Dialect>::BEGIN_WRITE).await?;
                let mut handed = 0;
                for lease in sorted {
                    let freed = sqlx::query(
                        "UPDATE chip_inbox_lanes SET lease_owner = NULL, lease_token = NULL, \
                         lease_delivery = NULL, lease_until = NULL \
                         WHERE lane = $1 AND lease_token = $2",
                    )
                    .bind(&lease.lane)
                    .bind(&lease.token)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
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
                let notify = <Db as Dialect>::NOTIFY_DUE;
                if handed > 0 && !notify.is_empty() {
                    sqlx::query(notify)
                        .bind(crate::store::DUE_CHANNEL)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(handed)
            }

            /// Removes done and stale deliveries finished before `cutoff` (Unix ms) whose
            /// `updated_on` is before it too, and the lanes whose newest handled state the
            /// horizon covers. Returns how many deliveries went.
            ///
            /// First, in a transaction of its own, the horizon (the newest `updated_on` removed)
            /// is raised to cover every delivery about to go; only then are they removed. Intake
            /// reads the horizon in the transaction that stores (on PostgreSQL `FOR SHARE`, which
            /// this waits for), so a copy of a removed delivery is always stored as expired, never
            /// handed over. Deliveries without `updated_on` are kept: only their stored copy
            /// recognises a repeat.
            pub(crate) async fn purge(pool: &Pool<Db>, cutoff: i64) -> Result<u64, sqlx::Error> {
                let cutoff_s = cutoff.div_euclid(1000);
                let mut tx = pool.begin_with(<Db as Dialect>::BEGIN_WRITE).await?;
                sqlx::query(&format!(
                    "SELECT updated_on FROM chip_inbox_horizon WHERE id = 1{}",
                    <Db as Dialect>::FOR_UPDATE
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

                let mut tx = pool.begin_with(<Db as Dialect>::BEGIN_WRITE).await?;
                let removed = sqlx::query(
                    "DELETE FROM chip_inbox_deliveries WHERE state IN ('done', 'stale') \
                     AND finished_at < $1 AND updated_on IS NOT NULL \
                     AND updated_on <= (SELECT updated_on FROM chip_inbox_horizon WHERE id = 1)",
                )
                .bind(cutoff)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                // A lane's mark is only needed while it is above the horizon: below it, every
                // older delivery is expired anyway.
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
            pub(crate) async fn horizon(pool: &Pool<Db>) -> Result<Option<i64>, sqlx::Error> {
                let row = sqlx::query("SELECT updated_on FROM chip_inbox_horizon WHERE id = 1")
                    .fetch_optional(pool)
                    .await?;
                match row {
                    Some(row) => row.try_get("updated_on"),
                    None => Ok(None),
                }
            }

            pub(crate) async fn counts(
                pool: &Pool<Db>,
            ) -> Result<Vec<(String, i64)>, sqlx::Error> {
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
                pool: &Pool<Db>,
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

            /// For the metrics, in one statement of indexed lookups: (pending never failed,
            /// pending that failed before, dead, stale, done, oldest pending received_at).
            pub(crate) async fn state_gauges(
                pool: &Pool<Db>,
            ) -> Result<([i64; 5], Option<i64>), sqlx::Error> {
                let row = sqlx::query(
                    "SELECT \
                     (SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'pending' \
                      AND (attempts = 0 OR last_error IS NULL)) AS pending, \
                     (SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'pending' \
                      AND attempts > 0 AND last_error IS NOT NULL) AS retrying, \
                     (SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'dead') AS dead, \
                     (SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'stale') AS stale, \
                     (SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'done') AS done, \
                     (SELECT received_at FROM chip_inbox_deliveries WHERE state = 'pending' \
                      ORDER BY id LIMIT 1) AS oldest",
                )
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

            pub(crate) async fn list(
                pool: &Pool<Db>,
                state: Option<&str>,
                object_id: Option<&str>,
                before_id: Option<i64>,
                limit: i64,
            ) -> Result<Vec<DeliverySummary>, sqlx::Error> {
                let rows = sqlx::query(&format!(
                    "SELECT {} FROM chip_inbox_deliveries \
                     WHERE ($1 IS NULL OR state = $1) AND ($2 IS NULL OR object_id = $2) \
                     AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
                    summary_columns()
                ))
                .bind(state)
                .bind(object_id)
                .bind(before_id)
                .bind(limit)
                .fetch_all(pool)
                .await?;
                rows.iter().map(summary).collect()
            }

            pub(crate) async fn get(
                pool: &Pool<Db>,
                id: i64,
            ) -> Result<Option<StoredDelivery>, sqlx::Error> {
                let row = sqlx::query(&format!(
                    "SELECT {}, signature, body FROM chip_inbox_deliveries WHERE id = $1",
                    summary_columns()
                ))
                .bind(id)
                .fetch_optional(pool)
                .await?;
                row.map(|row| stored(&row, false)).transpose()
            }

            /// Makes a delivery pending again, due now, with its attempts reset, if it is in
            /// one of `from`. `replay` lets it past the stale check once. Returns the state it
            /// was in (`None`: no such delivery).
            pub(crate) async fn requeue(
                pool: &Pool<Db>,
                id: i64,
                from: &[DeliveryState],
                replay: bool,
            ) -> Result<Option<(DeliveryState, bool)>, sqlx::Error> {
                let mut tx = pool.begin_with(<Db as Dialect>::BEGIN_WRITE).await?;
                let row = sqlx::query(&format!(
                    "SELECT state FROM chip_inbox_deliveries WHERE id = $1{}",
                    <Db as Dialect>::FOR_UPDATE
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
                if !<Db as Dialect>::NOTIFY_DUE.is_empty() {
                    sqlx::query(<Db as Dialect>::NOTIFY_DUE)
                        .bind(crate::store::DUE_CHANNEL)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(Some((state, true)))
            }
        }
    };
}

backend_ops!(
    sqlite,
    sqlx::Sqlite,
    sqlx::SqliteConnection,
    sqlx::sqlite::SqliteRow
);
backend_ops!(
    postgres,
    sqlx::Postgres,
    sqlx::PgConnection,
    sqlx::postgres::PgRow
);
