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

impl Sql<sqlx::Postgres> {
    /// [`finish_many`](Sql::finish_many) in a fixed number of statements, however many
    /// outcomes: when every handler succeeded, [`finish_all_done`](Self::finish_all_done)'s one
    /// statement; otherwise one `SELECT ... FOR UPDATE` locks every lane of the lot in lane
    /// order (the order concurrent finishes and hand-backs lock in) and reads their tokens, the
    /// failures take [`mark_failed`](Sql::mark_failed)'s statements, and one statement marks the
    /// held successes done and releases their lanes, all in one transaction.
    pub(crate) async fn finish_set(
        pool: &sqlx::PgPool,
        items: &[Finish<'_>],
    ) -> Result<Vec<Option<bool>>, sqlx::Error> {
        if items.iter().all(|(_, outcome)| outcome.is_ok()) {
            return Self::finish_all_done(pool, items).await;
        }
        let mut results = vec![None; items.len()];
        let mut lanes: Vec<&str> = items.iter().map(|(lease, _)| lease.lane.as_str()).collect();
        lanes.sort_unstable();
        lanes.dedup();
        let mut tx = pool.begin().await?;
        let locked = sqlx::query(
            "SELECT lane, lease_token FROM chip_inbox_lanes WHERE lane = ANY($1) \
             ORDER BY lane FOR UPDATE",
        )
        .bind(&lanes)
        .fetch_all(&mut *tx)
        .await?;
        let mut held = std::collections::HashMap::with_capacity(locked.len());
        for row in &locked {
            let lane: String = row.try_get("lane")?;
            let token: Option<String> = row.try_get("lease_token")?;
            if let Some(token) = token {
                held.insert(lane, token);
            }
        }
        let holds = |lease: &Lease| held.get(&lease.lane) == Some(&lease.token);
        let (mut done_lanes, mut done_ids, mut done_updated_on) =
            (Vec::new(), Vec::new(), Vec::new());
        let (mut retried, mut dead) = (0_i64, 0_i64);
        let mut recorded = std::collections::HashSet::with_capacity(items.len());
        for (index, (lease, outcome)) in items.iter().enumerate() {
            // Once per lane: the lane's lease covers one delivery.
            if !holds(lease) || !recorded.insert(lease.lane.as_str()) {
                continue;
            }
            match outcome {
                Ok(()) => {
                    done_lanes.push(lease.lane.as_str());
                    done_ids.push(lease.delivery_id);
                    done_updated_on.push(lease.updated_on);
                    results[index] = Some(false);
                }
                Err((error, max_attempts, delay_ms)) => {
                    let is_dead =
                        Self::mark_failed(&mut tx, lease, error, *max_attempts, *delay_ms).await?;
                    if is_dead {
                        dead += 1;
                    } else {
                        retried += 1;
                    }
                    results[index] = Some(is_dead);
                }
            }
        }
        if !done_ids.is_empty() {
            sqlx::query(
                "WITH f AS ( \
                   SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[]) \
                     AS f(f_lane, f_id, f_updated_on)), \
                 done AS ( \
                   UPDATE chip_inbox_deliveries d SET state = 'done', finished_at = $4, \
                     last_error = NULL, replay = 0 \
                   FROM f WHERE d.id = f.f_id) \
                 UPDATE chip_inbox_lanes l SET handled_updated_on = CASE \
                   WHEN f.f_updated_on IS NULL THEN l.handled_updated_on \
                   WHEN l.handled_updated_on IS NULL OR l.handled_updated_on < f.f_updated_on \
                     THEN f.f_updated_on \
                   ELSE l.handled_updated_on END, \
                   handled_at = $4, lease_owner = NULL, lease_token = NULL, \
                   lease_delivery = NULL, lease_until = NULL \
                 FROM f WHERE l.lane = f.f_lane",
            )
            .bind(&done_lanes)
            .bind(&done_ids)
            .bind(&done_updated_on)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        }
        let done = i64::try_from(done_ids.len()).unwrap_or(i64::MAX);
        add_counts!(tx, [(DONE, done), (RETRIED, retried), (DEAD, dead)])?;
        tx.commit().await?;
        Ok(results)
    }

    /// Records successes only, in one statement (its own transaction): lanes whose lease is
    /// still this worker's are locked in lane order, their deliveries marked done, the lanes
    /// released, and the `done` counter added to. Per item `Some(false)` when recorded, `None`
    /// when the lease was lost.
    async fn finish_all_done(
        pool: &sqlx::PgPool,
        items: &[Finish<'_>],
    ) -> Result<Vec<Option<bool>>, sqlx::Error> {
        // In lane order (the order the statement locks them in), once per lane: a lane's lease
        // covers one delivery.
        let mut sorted: Vec<&Lease> = items.iter().map(|(lease, _)| *lease).collect();
        sorted.sort_by(|a, b| a.lane.cmp(&b.lane));
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        let (mut lanes, mut tokens, mut ids, mut updated_on) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for lease in sorted {
            if seen.insert(lease.lane.as_str()) {
                lanes.push(lease.lane.as_str());
                tokens.push(lease.token.as_str());
                ids.push(lease.delivery_id);
                updated_on.push(lease.updated_on);
            }
        }
        // The lanes are locked one primary-key lookup at a time, in the arrays' (lane) order;
        // the `LIMIT 1` keeps the planner from making the lookups a join (see `claim_set`). A
        // lane that another transaction changed while this one waited is read again, and its
        // token checked against what that transaction left.
        let rows = sqlx::query(
            "WITH f AS ( \
               SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) \
                 AS f(f_lane, f_token, f_id, f_updated_on)), \
             held AS ( \
               SELECT f.* FROM f CROSS JOIN LATERAL ( \
                 SELECT lane FROM chip_inbox_lanes \
                 WHERE lane = f.f_lane AND lease_token = f.f_token \
                 LIMIT 1 FOR UPDATE) l), \
             done AS ( \
               UPDATE chip_inbox_deliveries d SET state = 'done', finished_at = $5, \
                 last_error = NULL, replay = 0 \
               FROM held WHERE d.id = held.f_id RETURNING d.id), \
             counted AS ( \
               INSERT INTO chip_inbox_counters (name, shard, value) \
               SELECT $6, $7, COUNT(*) FROM done HAVING COUNT(*) > 0 \
               ON CONFLICT (name, shard) DO UPDATE \
               SET value = chip_inbox_counters.value + excluded.value) \
             UPDATE chip_inbox_lanes l SET handled_updated_on = CASE \
               WHEN held.f_updated_on IS NULL THEN l.handled_updated_on \
               WHEN l.handled_updated_on IS NULL OR l.handled_updated_on < held.f_updated_on \
                 THEN held.f_updated_on \
               ELSE l.handled_updated_on END, \
               handled_at = $5, lease_owner = NULL, lease_token = NULL, \
               lease_delivery = NULL, lease_until = NULL \
             FROM held WHERE l.lane = held.f_lane RETURNING l.lane",
        )
        .bind(&lanes)
        .bind(&tokens)
        .bind(&ids)
        .bind(&updated_on)
        .bind(now_ms())
        .bind(DONE)
        .bind(i64::from(fastrand::u32(0..crate::store::COUNTER_SHARDS)))
        .fetch_all(pool)
        .await?;
        let mut recorded = std::collections::HashSet::with_capacity(rows.len());
        for row in &rows {
            recorded.insert(row.try_get::<String, _>("lane")?);
        }
        let mut results = vec![None; items.len()];
        let mut counted = std::collections::HashSet::with_capacity(items.len());
        for (index, (lease, _)) in items.iter().enumerate() {
            if recorded.contains(&lease.lane) && counted.insert(lease.lane.as_str()) {
                results[index] = Some(false);
            }
        }
        Ok(results)
    }

    /// [`mark_done_counted`](Sql::mark_done_counted) in one statement (the caller holds the
    /// lease, inside its transaction): the delivery marked done, its lane released, the `done`
    /// counter added to.
    pub(crate) async fn mark_done_counted_at_once(
        conn: &mut sqlx::PgConnection,
        lease: &Lease,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "WITH done AS ( \
               UPDATE chip_inbox_deliveries SET state = 'done', finished_at = $3, \
                 last_error = NULL, replay = 0 WHERE id = $1 RETURNING id), \
             counted AS ( \
               INSERT INTO chip_inbox_counters (name, shard, value) \
               SELECT $5, $6, COUNT(*) FROM done HAVING COUNT(*) > 0 \
               ON CONFLICT (name, shard) DO UPDATE \
               SET value = chip_inbox_counters.value + excluded.value) \
             UPDATE chip_inbox_lanes SET handled_updated_on = CASE \
               WHEN $4::bigint IS NULL THEN handled_updated_on \
               WHEN handled_updated_on IS NULL OR handled_updated_on < $4 THEN $4 \
               ELSE handled_updated_on END, \
               handled_at = $3, lease_owner = NULL, lease_token = NULL, \
               lease_delivery = NULL, lease_until = NULL WHERE lane = $2",
        )
        .bind(lease.delivery_id)
        .bind(&lease.lane)
        .bind(now_ms())
        .bind(lease.updated_on)
        .bind(DONE)
        .bind(i64::from(fastrand::u32(0..crate::store::COUNTER_SHARDS)))
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
