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

/// The claim's candidates (`$1` now, `$2` how many at most), as one join: due pending
/// deliveries in the order they came due (`next_attempt_at`, then `id`), on a lane nobody holds,
/// with no pending delivery of the same lane before them. SQLite walks the range of
/// `chip_inbox_deliveries_state_due` (schema version 4) that is pending and due, in that order,
/// and stops after enough: deliveries waiting for a retry are never read (in id order on
/// `(state, id)`, every claim stepped over all of them while holding the write lock). `INDEXED
/// BY` holds the plan whatever statistics an `ANALYZE` leaves: were the index unusable, the
/// statement would fail to prepare instead of scanning.
pub(super) const CANDIDATES_JOINED: &str = "SELECT d.lane AS lane, \
     CAST(CASE WHEN l.lane IS NULL THEN 1 ELSE 0 END AS BIGINT) AS missing \
     FROM chip_inbox_deliveries d INDEXED BY chip_inbox_deliveries_state_due \
     LEFT JOIN chip_inbox_lanes l ON l.lane = d.lane \
     WHERE d.state = 'pending' AND d.next_attempt_at <= $1 \
     AND (l.lease_until IS NULL OR l.lease_until <= $1) \
     AND NOT EXISTS (SELECT 1 FROM chip_inbox_deliveries e \
         WHERE e.lane = d.lane AND e.state = 'pending' \
         AND (COALESCE(e.updated_on, -1) < COALESCE(d.updated_on, -1) \
              OR (COALESCE(e.updated_on, -1) = COALESCE(d.updated_on, -1) AND e.id < d.id))) \
     ORDER BY d.next_attempt_at, d.id LIMIT $2";

/// The same candidates on PostgreSQL, in a shape whose plan does not depend on statistics. As a
/// join, PostgreSQL walks the pending deliveries in order only when it knows the backlog is
/// large: just after a backlog was stored, before autovacuum analyzed the table, it estimated a
/// few dozen rows, read every pending delivery, checked each for an older one and sorted them
/// (19 to 35 ms per claim for 10,000 to 20,000 pending, against 1.3 ms). Here a recursive walk
/// steps through the due deliveries one at a time, in the order they came due
/// (`next_attempt_at`, then `id`: the `chip_inbox_deliveries_due` index of schema version 4),
/// each step an index lookup with `LIMIT 1`, which every estimate favours; each row's lane and
/// older deliveries are `LATERAL` lookups with `LIMIT 1`, which the planner cannot turn into a
/// hash of everything; the outer `LIMIT` stops the walk once enough candidates are found. Only
/// due deliveries are walked: 100,000 waiting for a retry cost a claim nothing (walked in id
/// order, they cost 330 ms when nothing was due). The rows come in the walk's order; an
/// `ORDER BY` would make PostgreSQL finish the walk to sort it.
pub(super) const CANDIDATES_WALKED: &str = "WITH RECURSIVE walk (id, lane, updated_on, next_attempt_at) AS ( \
       (SELECT id, lane, updated_on, next_attempt_at FROM chip_inbox_deliveries \
        WHERE state = 'pending' AND next_attempt_at <= $1 \
        ORDER BY next_attempt_at, id LIMIT 1) \
       UNION ALL \
       SELECT n.id, n.lane, n.updated_on, n.next_attempt_at FROM walk w CROSS JOIN LATERAL ( \
         SELECT id, lane, updated_on, next_attempt_at FROM chip_inbox_deliveries \
         WHERE state = 'pending' AND next_attempt_at <= $1 \
         AND (next_attempt_at, id) > (w.next_attempt_at, w.id) \
         ORDER BY next_attempt_at, id LIMIT 1) n) \
     SELECT d.lane AS lane, CAST(CASE WHEN l.lane IS NULL THEN 1 ELSE 0 END AS BIGINT) AS missing \
     FROM walk d \
     LEFT JOIN LATERAL (SELECT lane, lease_until FROM chip_inbox_lanes \
         WHERE lane = d.lane LIMIT 1) l ON TRUE \
     LEFT JOIN LATERAL (SELECT 1 AS older FROM chip_inbox_deliveries e \
         WHERE e.lane = d.lane AND e.state = 'pending' \
         AND (COALESCE(e.updated_on, -1) < COALESCE(d.updated_on, -1) \
              OR (COALESCE(e.updated_on, -1) = COALESCE(d.updated_on, -1) AND e.id < d.id)) \
         LIMIT 1) o ON TRUE \
     WHERE (l.lease_until IS NULL OR l.lease_until <= $1) AND o.older IS NULL \
     LIMIT $2";

/// A lane this claim has locked, as it read it.
#[derive(Debug)]
pub(super) struct LockedLane {
    pub(super) lane: String,
    /// The newest `updated_on` handled on the lane.
    pub(super) handled: Option<i64>,
    /// Set when an earlier lease expired on the lane without being finished.
    pub(super) lease_token: Option<String>,
    /// The delivery that expired lease was for.
    pub(super) lease_delivery: Option<i64>,
}

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
        let candidates = Self::candidates(&mut tx, now, rules.limit).await?;
        let lock_sql = format!(
            "SELECT handled_updated_on, lease_token, lease_delivery FROM chip_inbox_lanes WHERE lane = $1 \
             AND (lease_until IS NULL OR lease_until <= $2){}",
            DB::SKIP_LOCKED
        );
        for lane in candidates {
            if claimed.len() >= usize::try_from(rules.limit).unwrap_or(usize::MAX) {
                break;
            }
            // None: the lane is leased, locked by another claim, or not there (another claim's
            // insert of it is not committed yet, or retention removed it since the candidates
            // were read). Skipped this time: a later claim makes a missing lane in its sorted
            // insert. Inserting it here, in candidate order, could wait for another claim's
            // uncommitted insert while that claim waits for one of ours: a deadlock.
            let locked = sqlx::query(&lock_sql)
                .bind(&lane)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(locked) = locked else { continue };
            let lane = LockedLane {
                lane,
                handled: locked.try_get("handled_updated_on")?,
                lease_token: locked.try_get("lease_token")?,
                lease_delivery: locked.try_get("lease_delivery")?,
            };
            let Some(one) =
                Self::claim_lane(&mut tx, worker, rules, now, &lane, &mut tally).await?
            else {
                continue;
            };
            claimed.push(one);
        }
        Self::count_claim(&mut tx, &tally).await?;
        tx.commit().await?;
        Ok((claimed, tally))
    }

    /// The lanes whose oldest due delivery heads them (no pending delivery of the same object
    /// comes before it) and that nobody holds, in the order they came due (then by arrival):
    /// `2 × limit` at most, for some may
    /// be taken by a concurrent claim by the time they are locked (the second of two claims
    /// at once still fills its batch). Each candidate costs the walk two index lookups: with
    /// `4 × limit`, a no-op drain was about 15 % slower. Makes the lanes that do not exist yet.
    pub(super) async fn candidates(
        conn: &mut DB::Connection,
        now: i64,
        limit: i64,
    ) -> Result<Vec<String>, sqlx::Error> {
        // Walks due deliveries in order and stops after enough: cheap however long the backlog.
        let rows = sqlx::query(DB::CANDIDATES)
            .bind(now)
            .bind(limit.saturating_mul(2))
            .fetch_all(&mut *conn)
            .await?;
        let mut lanes = Vec::with_capacity(rows.len());
        let mut missing = Vec::new();
        for row in &rows {
            let lane: String = row.try_get("lane")?;
            if row.try_get::<i64, _>("missing")? != 0 {
                missing.push(lane.clone());
            }
            if !lanes.contains(&lane) {
                lanes.push(lane);
            }
        }
        // The objects' first claims make their lanes, all in one statement and in lane order:
        // concurrent claims making overlapping lanes wait for each other in one order, never in
        // a cycle (a deadlock on PostgreSQL).
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
            insert.execute(&mut *conn).await?;
        }
        Ok(lanes)
    }

    /// With `lane` locked by this transaction, hands over its oldest pending delivery, after
    /// settling the ones before it that must not be handed over (dead after too many attempts,
    /// stored at or below the retention horizon, stale when stale ones are skipped). `None` when
    /// the lane has nothing due.
    pub(super) async fn claim_lane(
        conn: &mut DB::Connection,
        worker: &str,
        rules: ClaimRules,
        now: i64,
        lane: &LockedLane,
        tally: &mut ClaimTally,
    ) -> Result<Option<Claimed>, sqlx::Error> {
        // A token left on the lane is a lease that expired: finishing clears it.
        let expired_lease = lane.lease_token.is_some();
        // The delivery whose worker died holding the lease: it may have had its effect (a
        // handler outside the database may have run to its end), so it goes first, before any
        // older state that arrived meanwhile (which then counts as stale, as an older state
        // arriving after a newer one was handled does). Handing over the older one first would
        // let the object's effects go back in time.
        let mut in_doubt = if expired_lease {
            lane.lease_delivery
        } else {
            None
        };
        // With the lane locked, read its deliveries afresh (on PostgreSQL a new statement sees
        // every commit made by the lane's previous holders).
        loop {
            let head = match in_doubt.take() {
                Some(doubt) => {
                    sqlx::query(
                        "SELECT id, updated_on, attempts, next_attempt_at, replay, expired \
                         FROM chip_inbox_deliveries WHERE id = $1 AND lane = $2 \
                         AND state = 'pending'",
                    )
                    .bind(doubt)
                    .bind(&lane.lane)
                    .fetch_optional(&mut *conn)
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
                    .bind(&lane.lane)
                    .fetch_optional(&mut *conn)
                    .await?
                }
            };
            let Some(head) = head else {
                return Ok(None);
            };
            let id: i64 = head.try_get("id")?;
            let updated_on: Option<i64> = head.try_get("updated_on")?;
            let attempts: i64 = head.try_get("attempts")?;
            let next_attempt_at: i64 = head.try_get("next_attempt_at")?;
            let replay: i64 = head.try_get("replay")?;
            let expired: i64 = head.try_get("expired")?;
            if next_attempt_at > now {
                // The oldest delivery of this object waits for its retry; the later ones wait
                // behind it.
                return Ok(None);
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
                .execute(&mut *conn)
                .await?;
                tally.dead += 1;
                continue;
            }
            if expired != 0 && replay == 0 {
                // Stored at or below the retention horizon: it may repeat a delivery handled
                // and removed since. Never handed over on its own (whatever the stale policy); a
                // replay hands it over.
                sqlx::query(
                    "UPDATE chip_inbox_deliveries SET state = 'stale', finished_at = $2, \
                     last_error = $3 WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .bind(EXPIRED_REASON)
                .execute(&mut *conn)
                .await?;
                tally.stale += 1;
                tally.expired += 1;
                continue;
            }
            let stale =
                replay == 0 && matches!((updated_on, lane.handled), (Some(u), Some(h)) if u < h);
            if stale && rules.skip_stale {
                sqlx::query(
                    "UPDATE chip_inbox_deliveries SET state = 'stale', finished_at = $2 WHERE id = $1",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *conn)
                .await?;
                tally.stale += 1;
                continue;
            }
            let token = random_token();
            sqlx::query(
                "UPDATE chip_inbox_lanes SET lease_owner = $2, lease_token = $3, \
                 lease_delivery = $4, lease_until = $5 WHERE lane = $1",
            )
            .bind(&lane.lane)
            .bind(worker)
            .bind(&token)
            .bind(id)
            .bind(now.saturating_add(rules.lease_ms))
            .execute(&mut *conn)
            .await?;
            let row = sqlx::query(&format!(
                "UPDATE chip_inbox_deliveries SET attempts = attempts + 1 WHERE id = $1 \
                 RETURNING {SUMMARY_COLUMNS}, signature, body"
            ))
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
            let delivery = Self::stored(&row, stale)?;
            if expired_lease {
                tally.lease_expired += 1;
            }
            return Ok(Some(Claimed {
                lease: Lease {
                    delivery_id: id,
                    lane: lane.lane.clone(),
                    token,
                    updated_on,
                    attempts: attempts + 1,
                },
                delivery,
            }));
        }
    }

    /// Counts what a claim settled without handing it over.
    pub(super) async fn count_claim(
        conn: &mut DB::Connection,
        tally: &ClaimTally,
    ) -> Result<(), sqlx::Error> {
        add_counts!(
            conn,
            [
                (STALE, tally.stale),
                (DEAD, tally.dead),
                (EXPIRED, tally.expired)
            ]
        )
    }
}

impl Sql<sqlx::Postgres> {
    /// [`claim`](Sql::claim) in a fixed number of statements, however many deliveries it takes:
    /// the candidates, one `SELECT ... FOR UPDATE SKIP LOCKED` for their lanes, and one statement
    /// that leases every locked lane whose head can simply be handed over (due, attempts left,
    /// not expired, not a skipped stale state) and returns those deliveries. Lanes that need
    /// more (a lease that expired on them, deliveries to settle first) then take
    /// [`claim_lane`](Sql::claim_lane)'s statements, as in `claim`.
    ///
    /// The heads are read in a statement after the lanes are locked, so that its snapshot
    /// includes every commit of the lanes' previous holders.
    pub(crate) async fn claim_set(
        pool: &sqlx::PgPool,
        worker: &str,
        rules: ClaimRules,
    ) -> Result<(Vec<Claimed>, ClaimTally), sqlx::Error> {
        let now = now_ms();
        let mut tally = ClaimTally::default();
        let mut tx = pool.begin().await?;
        let candidates = Self::candidates(&mut tx, now, rules.limit).await?;
        if candidates.is_empty() {
            tx.commit().await?;
            return Ok((Vec::new(), tally));
        }
        // Candidate order (oldest first); locks held by other claims are skipped, never waited
        // for, so the order of locking cannot deadlock. One primary-key lookup per candidate, in
        // the array's order, until enough are locked: the `LIMIT 1` keeps the planner from
        // turning the lookups into a join, whose plan (a scan of every lane per candidate when
        // the table's statistics lag behind a burst) cost milliseconds.
        let locked = sqlx::query(
            "SELECT l.lane, l.handled_updated_on, l.lease_token, l.lease_delivery \
             FROM unnest($1::text[]) AS c(lane) \
             CROSS JOIN LATERAL ( \
               SELECT lane, handled_updated_on, lease_token, lease_delivery \
               FROM chip_inbox_lanes WHERE lane = c.lane \
               AND (lease_until IS NULL OR lease_until <= $2) \
               LIMIT 1 FOR UPDATE SKIP LOCKED) l \
             LIMIT $3",
        )
        .bind(&candidates)
        .bind(now)
        .bind(rules.limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut lanes = Vec::with_capacity(locked.len());
        for row in &locked {
            lanes.push(LockedLane {
                lane: row.try_get("lane")?,
                handled: row.try_get("handled_updated_on")?,
                lease_token: row.try_get("lease_token")?,
                lease_delivery: row.try_get("lease_delivery")?,
            });
        }
        let clean: Vec<&str> = lanes
            .iter()
            .filter(|lane| lane.lease_token.is_none())
            .map(|lane| lane.lane.as_str())
            .collect();
        let mut claimed = Vec::with_capacity(lanes.len());
        if !clean.is_empty() {
            // One token per claim, made unique per lease by the delivery's id.
            let token = random_token();
            let rows = sqlx::query(&format!(
                "WITH heads AS ( \
                   SELECT DISTINCT ON (d.lane) d.id AS h_id, d.lane AS h_lane, \
                     d.updated_on AS h_updated_on, d.attempts AS h_attempts, \
                     d.next_attempt_at AS h_next, d.replay AS h_replay, d.expired AS h_expired \
                   FROM chip_inbox_deliveries d \
                   WHERE d.lane = ANY($1) AND d.state = 'pending' \
                   ORDER BY d.lane, COALESCE(d.updated_on, -1), d.id), \
                 chosen AS ( \
                   SELECT h.h_id AS c_id, h.h_lane AS c_lane, \
                     COALESCE(h.h_replay = 0 AND h.h_updated_on < l.handled_updated_on, FALSE) AS c_stale \
                   FROM heads h JOIN chip_inbox_lanes l ON l.lane = h.h_lane \
                   WHERE h.h_next <= $2 AND h.h_attempts < $3 \
                   AND NOT (h.h_expired <> 0 AND h.h_replay = 0)), \
                 taken AS ( \
                   UPDATE chip_inbox_lanes l SET lease_owner = $4, \
                     lease_token = $5 || to_hex(c.c_id), lease_delivery = c.c_id, lease_until = $6 \
                   FROM chosen c WHERE l.lane = c.c_lane AND NOT ($7 AND c.c_stale) \
                   RETURNING c.c_id AS t_id, c.c_lane AS t_lane, c.c_stale AS t_stale, \
                     l.lease_token AS t_token) \
                 UPDATE chip_inbox_deliveries d SET attempts = d.attempts + 1 \
                 FROM taken t WHERE d.id = t.t_id \
                 RETURNING {SUMMARY_COLUMNS}, signature, body, \
                   t_lane, t_stale, t_token"
            ))
            .bind(&clean)
            .bind(now)
            .bind(rules.max_attempts)
            .bind(worker)
            .bind(format!("{token}-"))
            .bind(now.saturating_add(rules.lease_ms))
            .bind(rules.skip_stale)
            .fetch_all(&mut *tx)
            .await?;
            for row in &rows {
                let delivery = Self::stored(row, row.try_get("t_stale")?)?;
                claimed.push(Claimed {
                    lease: Lease {
                        delivery_id: delivery.summary.id,
                        lane: row.try_get("t_lane")?,
                        token: row.try_get("t_token")?,
                        updated_on: delivery.summary.updated_on,
                        attempts: delivery.summary.attempts,
                    },
                    delivery,
                });
            }
        }
        // The lanes left: an expired lease on them, or a head to settle first (or nothing due
        // any more: its delivery was finished or retried since the candidates were read).
        for lane in &lanes {
            if claimed.iter().any(|c| c.lease.lane == lane.lane) {
                continue;
            }
            if let Some(one) =
                Self::claim_lane(&mut tx, worker, rules, now, lane, &mut tally).await?
            {
                claimed.push(one);
            }
        }
        Self::count_claim(&mut tx, &tally).await?;
        tx.commit().await?;
        claimed.sort_by_key(|c| c.lease.delivery_id);
        Ok((claimed, tally))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a test: a failed step should stop it with the error
mod tests {
    use sqlx::Row;

    use crate::store::{Backend, Inbox};

    /// The plan SQLite makes for `sql` (with `$1` and `$2`, if it has them, bound to now and
    /// 10), one line per step.
    async fn sqlite_plan(pool: &sqlx::SqlitePool, sql: &str) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(&explain);
        if sql.contains("$1") {
            query = query.bind(super::now_ms()).bind(10_i64);
        }
        let rows = query.fetch_all(pool).await.unwrap();
        rows.iter()
            .map(|row| row.get::<String, _>("detail"))
            .collect()
    }

    /// SQLite's claims read only pending deliveries that are due, in the order they came due,
    /// from the range of `(state, next_attempt_at, id)` (schema version 4), with no sort and no
    /// scan, and look for older ones of a lane on `(lane, state)`; the oldest-pending gauge reads
    /// the state index alone. Planned twice: on the fresh schema and after an `ANALYZE` of a
    /// table where most deliveries are finished and most pending ones wait for a retry (the
    /// statistics that could tempt the planner into a walk of the table). This is the bundled
    /// SQLite's own planner, so a new SQLite that planned otherwise would show here.
    #[tokio::test]
    async fn sqlite_claims_walk_only_due_deliveries() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("inbox.db").display());
        let inbox = Inbox::connect(&url).await.unwrap();
        let Backend::Sqlite(pool) = &inbox.shared.backend else {
            unreachable!("a sqlite:// URL opens SQLite")
        };
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL \
             AND tbl_name = 'chip_inbox_deliveries' ORDER BY name",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert_eq!(
            indexes,
            [
                "chip_inbox_deliveries_finished",
                "chip_inbox_deliveries_lane",
                "chip_inbox_deliveries_state_due"
            ],
            "one index for each of claims, lanes and retention; none written for nothing"
        );

        for analyzed in [false, true] {
            if analyzed {
                // As after a day of traffic and an hour of failures: 20,000 finished (kept for
                // retention, all older than any pending one), 2,000 waiting an hour for a
                // retry, 20 due.
                for (state, count, due_in) in [
                    ("done", 20_000, 0),
                    ("pending", 2_000, 3_600_000),
                    ("pending", 20, -1),
                ] {
                    sqlx::query(
                        "INSERT INTO chip_inbox_deliveries (dedup_key, lane, event, object_kind, \
                         body, signature, received_at, next_attempt_at, state) \
                         WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
                         WHERE i < ?1) \
                         SELECT ?2 || '-' || i, ?2 || '-' || i, 'purchase.paid', 'purchase', \
                         x'7b7d', 's', 1, ?2, ?3 FROM n",
                    )
                    .bind(count)
                    .bind(super::now_ms() + due_in)
                    .bind(state)
                    .execute(pool)
                    .await
                    .unwrap();
                }
                sqlx::query("ANALYZE").execute(pool).await.unwrap();
            }
            let plan = sqlite_plan(pool, super::CANDIDATES_JOINED).await;
            for wanted in [
                "SEARCH d USING INDEX chip_inbox_deliveries_state_due (state=? AND next_attempt_at<?)",
                "USING INDEX chip_inbox_deliveries_lane (lane=? AND state=?)",
            ] {
                assert!(
                    plan.iter().any(|step| step.contains(wanted)),
                    "analyzed: {analyzed}, {wanted}: {plan:#?}"
                );
            }
            assert!(
                !plan
                    .iter()
                    .any(|step| step.starts_with("SCAN") || step.contains("TEMP B-TREE")),
                "analyzed: {analyzed}: {plan:#?}"
            );

            let plan = sqlite_plan(
                pool,
                &format!("SELECT {}", super::super::stats::OLDEST_PENDING_SQLITE),
            )
            .await;
            assert!(
                plan.iter().any(|step| step
                    .contains("USING COVERING INDEX chip_inbox_deliveries_state_due (state=?)")),
                "analyzed: {analyzed}: {plan:#?}"
            );
            assert!(
                !plan
                    .iter()
                    .any(|step| step.starts_with("SCAN chip_inbox_deliveries")),
                "analyzed: {analyzed}: {plan:#?}"
            );
        }
        inbox.close().await;
    }
}
