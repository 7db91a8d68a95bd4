//! Finishing: recording handlers' outcomes, each only while its lane lease is held.

use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::{Driver, Lease, Sql};
use crate::store::{DEAD, DONE, RETRIED, add_counts, now_ms};

/// A handler's outcome to record: `Ok`, or the error text with the attempt limit and the wait
/// before the next attempt (ms).
pub(crate) type Finish<'a> = (&'a Lease, Result<(), (&'a str, i64, i64)>);

/// The failures one transaction recorded, for its counters: retried, and dead after their last
/// attempt.
#[derive(Default)]
struct Failures {
    retried: i64,
    dead: i64,
}

impl Failures {
    /// Counts a failure [`mark_failed`](Sql::mark_failed) recorded; returns whether it is dead.
    fn count(&mut self, is_dead: bool) -> bool {
        if is_dead {
            self.dead += 1;
        } else {
            self.retried += 1;
        }
        is_dead
    }
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
        let (mut done, mut failures) = (0_i64, Failures::default());
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
                Err((error, max_attempts, delay_ms)) => failures.count(
                    Self::mark_failed(&mut tx, lease, error, *max_attempts, *delay_ms).await?,
                ),
            });
        }
        add_counts!(
            tx,
            [
                (DONE, done),
                (RETRIED, failures.retried),
                (DEAD, failures.dead)
            ]
        )?;
        tx.commit().await?;
        Ok(results)
    }
}

impl Sql<sqlx::Postgres> {
    /// [`finish_many`](Sql::finish_many) in a fixed number of statements, however many
    /// outcomes: when every handler succeeded, [`mark_done_set`](Self::mark_done_set)'s one
    /// statement in autocommit. Otherwise, in one transaction: one `SELECT ... FOR UPDATE` locks
    /// every lane of the lot in lane order (the order concurrent finishes and hand-backs lock
    /// in) and reads their tokens, the failures take [`mark_failed`](Sql::mark_failed)'s
    /// statements, and `mark_done_set` records the successes.
    pub(crate) async fn finish_set(
        pool: &sqlx::PgPool,
        items: &[Finish<'_>],
    ) -> Result<Vec<Option<bool>>, sqlx::Error> {
        let successes: Vec<&Lease> = items
            .iter()
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(lease, _)| *lease)
            .collect();
        let mut results = vec![None; items.len()];
        let recorded = if successes.len() == items.len() {
            let mut conn = pool.acquire().await?;
            Self::mark_done_set(&mut conn, &successes).await?
        } else {
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
                if let Some(token) = row.try_get::<Option<String>, _>("lease_token")? {
                    held.insert(lane, token);
                }
            }
            let mut failures = Failures::default();
            for (index, (lease, outcome)) in items.iter().enumerate() {
                let Err((error, max_attempts, delay_ms)) = outcome else {
                    continue;
                };
                // Once per lane: the lane's lease covers one delivery.
                if held.get(&lease.lane) != Some(&lease.token) {
                    continue;
                }
                held.remove(&lease.lane);
                results[index] = Some(failures.count(
                    Self::mark_failed(&mut tx, lease, error, *max_attempts, *delay_ms).await?,
                ));
            }
            // A lane whose failure was recorded above no longer holds the token: its successes
            // (none, with one lease per lane) are not recorded.
            let recorded = Self::mark_done_set(&mut tx, &successes).await?;
            add_counts!(tx, [(RETRIED, failures.retried), (DEAD, failures.dead)])?;
            tx.commit().await?;
            recorded
        };
        let mut counted = std::collections::HashSet::with_capacity(items.len());
        for (index, (lease, outcome)) in items.iter().enumerate() {
            if outcome.is_ok()
                && recorded.contains(&lease.lane)
                && counted.insert(lease.lane.as_str())
            {
                results[index] = Some(false);
            }
        }
        Ok(results)
    }

    /// Marks done the deliveries of the leases that still hold their lane, in one statement:
    /// each lane is locked if its token is still the lease's (in lane order, one primary-key
    /// lookup at a time: the `LIMIT 1` keeps the planner from making the lookups a join, see
    /// `claim_set`), its delivery marked done, the lane released, and the `done` counter added
    /// to. A lane that another transaction changed while this one waited for it is read again,
    /// and its token checked against what that transaction left. Returns the lanes recorded.
    pub(crate) async fn mark_done_set(
        conn: &mut sqlx::PgConnection,
        leases: &[&Lease],
    ) -> Result<std::collections::HashSet<String>, sqlx::Error> {
        if leases.is_empty() {
            return Ok(std::collections::HashSet::new());
        }
        if let [lease] = leases {
            return Ok(Self::mark_done_one(conn, lease)
                .await?
                .into_iter()
                .collect());
        }
        // In lane order, once per lane: a lane's lease covers one delivery.
        let mut sorted = leases.to_vec();
        sorted.sort_by(|a, b| a.lane.cmp(&b.lane));
        sorted.dedup_by(|a, b| a.lane == b.lane);
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
        .bind(sorted.iter().map(|l| l.lane.as_str()).collect::<Vec<_>>())
        .bind(sorted.iter().map(|l| l.token.as_str()).collect::<Vec<_>>())
        .bind(sorted.iter().map(|l| l.delivery_id).collect::<Vec<_>>())
        .bind(sorted.iter().map(|l| l.updated_on).collect::<Vec<_>>())
        .bind(now_ms())
        .bind(DONE)
        .bind(i64::from(fastrand::u32(0..crate::store::COUNTER_SHARDS)))
        .fetch_all(&mut *conn)
        .await?;
        rows.iter().map(|row| row.try_get("lane")).collect()
    }

    /// [`mark_done_set`](Self::mark_done_set) for one lease, with scalar parameters: the plan is
    /// prepared once per connection, where the arrays of the set-based statement make
    /// PostgreSQL plan it again on every call (about 0.2 ms, on every transactional handler's
    /// commit). The lane is released first, and only if it still holds the lease's token; the
    /// delivery is marked done and counted only then. Returns the lane when recorded.
    async fn mark_done_one(
        conn: &mut sqlx::PgConnection,
        lease: &Lease,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "WITH released AS ( \
               UPDATE chip_inbox_lanes SET handled_updated_on = CASE \
                 WHEN $4::bigint IS NULL THEN handled_updated_on \
                 WHEN handled_updated_on IS NULL OR handled_updated_on < $4 THEN $4 \
                 ELSE handled_updated_on END, \
                 handled_at = $5, lease_owner = NULL, lease_token = NULL, \
                 lease_delivery = NULL, lease_until = NULL \
               WHERE lane = $1 AND lease_token = $2 RETURNING lane), \
             done AS ( \
               UPDATE chip_inbox_deliveries SET state = 'done', finished_at = $5, \
                 last_error = NULL, replay = 0 \
               WHERE id = $3 AND EXISTS (SELECT 1 FROM released) RETURNING id), \
             counted AS ( \
               INSERT INTO chip_inbox_counters (name, shard, value) \
               SELECT $6, $7, 1 FROM done \
               ON CONFLICT (name, shard) DO UPDATE \
               SET value = chip_inbox_counters.value + excluded.value) \
             SELECT lane FROM released",
        )
        .bind(&lease.lane)
        .bind(&lease.token)
        .bind(lease.delivery_id)
        .bind(lease.updated_on)
        .bind(now_ms())
        .bind(DONE)
        .bind(i64::from(fastrand::u32(0..crate::store::COUNTER_SHARDS)))
        .fetch_optional(&mut *conn)
        .await
    }
}
