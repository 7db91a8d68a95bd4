//! Storing one batch: the SQL per backend (SQLite, PostgreSQL), the repeats it records on their
//! originals, and each record's outcome.

use std::time::Duration;

use sqlx::Row;
use sqlx::pool::PoolConnection;

use super::NewRecord;
#[cfg(doc)]
use crate::store::CHECK_AFTER_IDLE;
use crate::store::{Backend, DUPLICATES, Dialect, RECEIVED, now_ms};

/// Per record of a batch: the id it is stored under and whether it repeats a delivery stored
/// before, or why it was not recorded (answered 503, so that CHIP sends it again).
pub(super) type RecordOutcome = Result<(Option<i64>, bool), String>;

/// Stores a batch; per record, its id and whether it was a duplicate, or why it was not recorded.
///
/// A few statements per batch whatever its size: the deliveries in one
/// `INSERT ... ON CONFLICT (dedup_key) DO NOTHING RETURNING` with the count, committed, then,
/// only when the batch repeats deliveries, a second transaction recording the repeats on their
/// originals and in the count of duplicates. When only that second one fails, the new
/// deliveries stay stored and are answered as such; only the repeats are answered 503 (CHIP
/// sends them again, and they are counted then), so no count is off and nothing stored is
/// refused. Rows go in key order so that concurrent writers on PostgreSQL take their locks in one
/// order and never deadlock. The lane of each object (its order and lease) is made by the first worker that
/// claims one of its deliveries, not here: intake writes as little as it can before it answers.
pub(crate) async fn store_batch(
    backend: &Backend,
    connection: &mut WriterConnection,
    records: &[&NewRecord],
    max_age: Option<Duration>,
) -> Result<Vec<RecordOutcome>, sqlx::Error> {
    use std::collections::BTreeMap;

    let now = now_ms();
    // The oldest `updated_on` (Unix seconds) handed over when it arrives now.
    let oldest = match max_age {
        Some(age) => now
            .div_euclid(1000)
            .saturating_sub(i64::try_from(age.as_secs()).unwrap_or(i64::MAX)),
        None => i64::MIN,
    };
    // Each distinct key once (its first record), in key order; how many records carry it.
    let mut keys: BTreeMap<&str, (usize, i64)> = BTreeMap::new();
    for (index, record) in records.iter().enumerate() {
        keys.entry(record.dedup_key.as_str())
            .and_modify(|(_, n)| *n += 1)
            .or_insert((index, 1));
    }
    let stored = match backend {
        Backend::Postgres(pool) => {
            let conn = connection.postgres(pool).await?;
            store_batch_postgres(conn, records, &keys, now, oldest).await?
        }
        Backend::Sqlite(pool) => {
            let conn = connection.sqlite(pool).await?;
            store_batch_sqlite(conn, records, &keys, now, oldest).await?
        }
    };
    Ok(outcomes(records, &keys, &stored))
}

/// The connection a writer stores its batches on, kept from one batch to the next rather than
/// given back to the pool after each. Given back, a connection costs a round trip (sqlx checks
/// every connection returned to its pool: a `Sync` to PostgreSQL, a message to SQLite's
/// connection thread), and the next batch gets the pool's oldest idle connection. On SQLite that
/// is the costly part: a connection that sees the file changed by another since its last
/// transaction drops its whole page cache and reads again every page it touches, so batches
/// taking turns over the pool's connections each read the indexes' pages anew.
///
/// The writer gives it back when it has had nothing to store for a moment (well under
/// [`CHECK_AFTER_IDLE`]: a connection kept longer would skip the check the pool gives to
/// connections that sat idle), after a batch that failed, when a failed write elsewhere marked
/// the pool's connections for replacement ([`Recycle`](crate::store::Recycle)) and when the
/// inbox was closed.
#[derive(Default)]
pub(crate) struct WriterConnection {
    sqlite: Option<PoolConnection<sqlx::Sqlite>>,
    postgres: Option<PoolConnection<sqlx::Postgres>>,
    /// When the kept connection was taken from the pool.
    taken: Option<std::time::Instant>,
}

impl WriterConnection {
    /// Whether a connection is kept.
    pub(crate) fn is_kept(&self) -> bool {
        self.taken.is_some()
    }

    /// Gives the kept connection back to the pool (which closes it instead if a transaction
    /// was left open on it, see [`OpenSqliteTx`]).
    pub(crate) fn give_back(&mut self) {
        self.sqlite = None;
        self.postgres = None;
        self.taken = None;
    }

    /// Gives the kept connection back if the pool was closed or its connections were marked
    /// for replacement since it was taken: the batch then meets the pool as it is.
    pub(crate) fn give_back_if_stale(
        &mut self,
        backend: &Backend,
        recycle: &crate::store::Recycle,
    ) {
        if self
            .taken
            .is_some_and(|taken| backend.is_closed() || recycle.marked_since(taken))
        {
            self.give_back();
        }
    }

    async fn sqlite(
        &mut self,
        pool: &sqlx::SqlitePool,
    ) -> Result<&mut PoolConnection<sqlx::Sqlite>, sqlx::Error> {
        kept_or_taken(&mut self.sqlite, &mut self.taken, pool).await
    }

    async fn postgres(
        &mut self,
        pool: &sqlx::PgPool,
    ) -> Result<&mut PoolConnection<sqlx::Postgres>, sqlx::Error> {
        kept_or_taken(&mut self.postgres, &mut self.taken, pool).await
    }
}

/// The connection in `slot`, or one taken from `pool` now (noting when in `taken`) and kept there.
async fn kept_or_taken<'s, Db: sqlx::Database>(
    slot: &'s mut Option<PoolConnection<Db>>,
    taken: &mut Option<std::time::Instant>,
    pool: &sqlx::Pool<Db>,
) -> Result<&'s mut PoolConnection<Db>, sqlx::Error> {
    let conn = match slot.take() {
        Some(conn) => conn,
        None => {
            let conn = pool.acquire().await?;
            *taken = Some(std::time::Instant::now());
            conn
        }
    };
    Ok(slot.insert(conn))
}

/// What a batch's two transactions did: the ids of its keys (stored now, or found as the
/// originals of repeats), and why recording the repeats failed, if it did (the new deliveries
/// were committed before).
struct StoredBatch {
    ids: std::collections::BTreeMap<String, (i64, bool)>,
    repeats_failed: Option<sqlx::Error>,
}

/// A pooled SQLite connection inside a transaction this module opened with SQL of its own
/// (`BEGIN IMMEDIATE` sent together with the first statements, to save a round trip to the
/// connection's thread). Until [`finish`](Self::finish), dropping it marks the connection to be
/// closed instead of returned to the pool (or used for the next batch) with the transaction
/// still open.
struct OpenSqliteTx<'c> {
    conn: &'c mut PoolConnection<sqlx::Sqlite>,
    finished: bool,
}

impl OpenSqliteTx<'_> {
    fn conn(&mut self) -> &mut sqlx::SqliteConnection {
        self.conn
    }

    /// The transaction is over (committed, or rolled back by [`abort`](Self::abort)): the
    /// connection may go back to the pool.
    fn finish(mut self) {
        self.finished = true;
    }

    /// Rolls back after an error; if even that fails, the connection is closed.
    async fn abort(mut self) {
        if sqlx::query("ROLLBACK").execute(self.conn()).await.is_ok() {
            self.finish();
        }
    }
}

impl Drop for OpenSqliteTx<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

/// The SQLite batch. New deliveries take one round trip to the connection's thread: one string
/// of statements with anonymous parameters (`?`, bound in order across the statements: for each
/// of a statement's parameters sqlx asks SQLite its name, and SQLite finds a name by walking the
/// whole list, which makes thousands of named parameters quadratic): `BEGIN IMMEDIATE`, the
/// deliveries (`ON CONFLICT (dedup_key) DO NOTHING RETURNING`), the `received` count (SQLite's
/// `changes()`: the rows that insert stored), `COMMIT`. Repeats (of deliveries stored before, or
/// second copies within the batch) then take a transaction of their own, which records them on
/// the original row and in the `duplicates` count; each transaction's counts commit with what
/// they count.
async fn store_batch_sqlite(
    conn: &mut PoolConnection<sqlx::Sqlite>,
    records: &[&NewRecord],
    keys: &std::collections::BTreeMap<&str, (usize, i64)>,
    now: i64,
    oldest: i64,
) -> Result<StoredBatch, sqlx::Error> {
    let mut sql = format!(
        "{}; INSERT INTO chip_inbox_deliveries (dedup_key, lane, event, object_kind, object_id, \
         updated_on, signature, body, typing_problem, received_at, next_attempt_at, expired) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, \
         v.column8, v.column9, v.column10, v.column11, \
         CASE WHEN v.column6 <= (SELECT updated_on FROM chip_inbox_horizon WHERE id = 1) \
         OR v.column6 < ? THEN 1 ELSE 0 END FROM (VALUES ",
        <sqlx::Sqlite as Dialect>::BEGIN_WRITE
    );
    for n in 0..keys.len() {
        sql.push_str(if n == 0 { "" } else { ", " });
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    }
    sql.push_str(
        ") AS v WHERE true ON CONFLICT (dedup_key) DO NOTHING RETURNING id, dedup_key; \
         INSERT INTO chip_inbox_counters (name, shard, value) \
         SELECT ?, ?, changes() WHERE changes() > 0 \
         ON CONFLICT (name, shard) DO UPDATE SET value = chip_inbox_counters.value + excluded.value; \
         COMMIT",
    );
    // Anonymous parameters bind in the order they appear: the oldest accepted first.
    let mut query = sqlx::query(&sql).bind(oldest);
    for &(index, _) in keys.values() {
        let record = records[index];
        query = query
            .bind(&record.dedup_key)
            .bind(&record.lane)
            .bind(&record.event)
            .bind(record.object_kind)
            .bind(&record.object_id)
            .bind(record.updated_on)
            .bind(&record.signature)
            .bind(record.body.as_ref())
            .bind(&record.typing_problem)
            .bind(now)
            .bind(now);
    }
    let shard = i64::from(fastrand::u32(0..crate::store::COUNTER_SHARDS));
    query = query.bind(RECEIVED).bind(shard);

    let mut tx = OpenSqliteTx {
        conn: &mut *conn,
        finished: false,
    };
    let inserted = match query.fetch_all(tx.conn()).await {
        Ok(rows) => rows,
        Err(error) => {
            tx.abort().await;
            return Err(error);
        }
    };
    tx.finish();
    let mut ids: std::collections::BTreeMap<String, (i64, bool)> =
        std::collections::BTreeMap::new();
    for row in inserted {
        ids.insert(row.try_get("dedup_key")?, (row.try_get("id")?, true));
    }

    let repeats = repeats(keys, &ids);
    let repeats_failed = if repeats.is_empty() {
        None
    } else {
        record_repeats_sqlite(conn, &repeats, &mut ids, now)
            .await
            .err()
    };
    Ok(StoredBatch {
        ids,
        repeats_failed,
    })
}

/// The SQLite batch's second transaction: each repeated key's count on its original (whose id
/// goes into `ids` when the batch did not store it), and the `duplicates` count.
async fn record_repeats_sqlite(
    conn: &mut sqlx::SqliteConnection,
    repeats: &[(&str, i64)],
    ids: &mut std::collections::BTreeMap<String, (i64, bool)>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = sqlx::Connection::begin_with(conn, <sqlx::Sqlite as Dialect>::BEGIN_WRITE).await?;
    for &(key, n) in repeats {
        let original = sqlx::query(
            "UPDATE chip_inbox_deliveries SET duplicates = duplicates + $2, \
             last_duplicate_at = $3 WHERE dedup_key = $1 RETURNING id",
        )
        .bind(key)
        .bind(n)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let (Some(row), false) = (original, ids.contains_key(key)) {
            ids.insert(key.to_owned(), (row.try_get("id")?, false));
        }
    }
    let duplicates: i64 = repeats.iter().map(|r| r.1).sum();
    crate::store::add_counts!(tx, [(DUPLICATES, duplicates)])?;
    tx.commit().await
}

/// Per record: the id it is stored under and whether it repeats a delivery stored before (or
/// earlier in the same batch); when recording the repeats failed, every repeat gets the error.
fn outcomes(
    records: &[&NewRecord],
    keys: &std::collections::BTreeMap<&str, (usize, i64)>,
    stored: &StoredBatch,
) -> Vec<RecordOutcome> {
    let repeats_failed = stored.repeats_failed.as_ref().map(|error| {
        format!(
            "the delivery is stored, but this repeat of it was not recorded: {}",
            crate::error::error_text(error)
        )
    });
    records
        .iter()
        .enumerate()
        .map(|(index, record)| {
            let first = keys.get(record.dedup_key.as_str()).map(|k| k.0);
            match (stored.ids.get(&record.dedup_key), &repeats_failed) {
                (Some(&(id, true)), _) if first == Some(index) => Ok((Some(id), false)),
                (_, Some(error)) => Err(error.clone()),
                (Some(&(id, _)), None) => Ok((Some(id), true)),
                (None, None) => Ok((None, true)),
            }
        })
        .collect()
}

/// The repeats of a batch, per key with how many: all the copies of a key stored before, and
/// the second and later copies within the batch of a key stored now.
fn repeats<'k>(
    keys: &std::collections::BTreeMap<&'k str, (usize, i64)>,
    stored_now: &std::collections::BTreeMap<String, (i64, bool)>,
) -> Vec<(&'k str, i64)> {
    keys.iter()
        .map(|(key, &(_, copies))| {
            let n = if stored_now.contains_key(*key) {
                copies - 1
            } else {
                copies
            };
            (*key, n)
        })
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// The PostgreSQL batch: one statement (arrays unnested: the same prepared statement for every
/// batch size) stores the deliveries and the count, and announces them to idle workers in other
/// processes (`pg_notify`, sent on commit) in one round trip and one commit;
/// a second one records repeats, when there are any. Keys go in sorted order, so concurrent
/// writers lock in one order.
async fn store_batch_postgres(
    conn: &mut sqlx::PgConnection,
    records: &[&NewRecord],
    keys: &std::collections::BTreeMap<&str, (usize, i64)>,
    now: i64,
    oldest: i64,
) -> Result<StoredBatch, sqlx::Error> {
    let rows: Vec<&NewRecord> = keys.values().map(|&(index, _)| records[index]).collect();
    let shard = i64::from(fastrand::u32(0..crate::store::COUNTER_SHARDS));
    // What follows the insert: the count, the announcement, and the stored rows as the result.
    const TAIL: &str = "), counted AS ( \
             INSERT INTO chip_inbox_counters (name, shard, value) \
             SELECT 'received', $11, COUNT(*) FROM stored HAVING COUNT(*) > 0 \
             ON CONFLICT (name, shard) DO UPDATE SET value = chip_inbox_counters.value + excluded.value \
         ), announced AS ( \
             SELECT pg_notify($12, '') FROM (SELECT 1 FROM stored LIMIT 1) AS any_stored \
         ) SELECT s.id, s.dedup_key FROM stored s CROSS JOIN (SELECT COUNT(*) FROM announced) AS a";
    const HEAD: &str = "WITH horizon AS ( \
             SELECT updated_on FROM chip_inbox_horizon WHERE id = 1 FOR SHARE \
         ), stored AS ( \
             INSERT INTO chip_inbox_deliveries (dedup_key, lane, event, object_kind, object_id, \
                 updated_on, signature, body, typing_problem, received_at, next_attempt_at, expired) ";
    // One delivery (a quiet receiver, one sender at a time): scalar parameters, so the
    // statement is planned once per connection. The arrays of the batch statement make
    // PostgreSQL plan it again on every call, which one delivery alone pays in full.
    let sql = if rows.len() == 1 {
        format!(
            "{HEAD}SELECT $1, $2, $3, $4, $5, $6::int8, $7, $8, $9, $10, $10, \
                 CASE WHEN $6::int8 <= (SELECT updated_on FROM horizon) OR $6::int8 < $13 \
                 THEN 1 ELSE 0 END \
             ON CONFLICT (dedup_key) DO NOTHING RETURNING id, dedup_key {TAIL}"
        )
    } else {
        format!(
            "{HEAD}SELECT dedup_key, lane, event, object_kind, object_id, updated_on, signature, \
                 body, typing_problem, $10, $10, \
                 CASE WHEN updated_on <= (SELECT updated_on FROM horizon) OR updated_on < $13 \
                 THEN 1 ELSE 0 END \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                         $6::int8[], $7::text[], $8::bytea[], $9::text[]) \
             AS t(dedup_key, lane, event, object_kind, object_id, updated_on, signature, body, typing_problem) \
             ORDER BY dedup_key \
             ON CONFLICT (dedup_key) DO NOTHING RETURNING id, dedup_key {TAIL}"
        )
    };
    let query = sqlx::query(&sql);
    let stored = if let [row] = rows.as_slice() {
        query
            .bind(row.dedup_key.as_str())
            .bind(row.lane.as_str())
            .bind(row.event.as_str())
            .bind(row.object_kind)
            .bind(row.object_id.as_deref())
            .bind(row.updated_on)
            .bind(row.signature.as_str())
            .bind(row.body.as_ref())
            .bind(row.typing_problem.as_deref())
    } else {
        query
            .bind(
                rows.iter()
                    .map(|r| r.dedup_key.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.lane.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.event.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.object_kind).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.object_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.updated_on).collect::<Vec<_>>())
            .bind(
                rows.iter()
                    .map(|r| r.signature.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(rows.iter().map(|r| r.body.as_ref()).collect::<Vec<&[u8]>>())
            .bind(
                rows.iter()
                    .map(|r| r.typing_problem.as_deref())
                    .collect::<Vec<_>>(),
            )
    }
    .bind(now)
    .bind(shard)
    .bind(crate::store::DUE_CHANNEL)
    .bind(oldest)
    .fetch_all(&mut *conn)
    .await?;
    let mut ids = std::collections::BTreeMap::new();
    for row in stored {
        ids.insert(
            row.try_get::<String, _>("dedup_key")?,
            (row.try_get::<i64, _>("id")?, true),
        );
    }
    let (repeated, counts): (Vec<&str>, Vec<i64>) = repeats(keys, &ids).into_iter().unzip();
    let mut repeats_failed = None;
    if !repeated.is_empty() {
        let originals = sqlx::query(
            "WITH repeats AS ( \
                 SELECT * FROM UNNEST($1::text[], $2::int8[]) AS u(dedup_key, n) \
             ), updated AS ( \
                 UPDATE chip_inbox_deliveries d SET duplicates = d.duplicates + r.n, last_duplicate_at = $3 \
                 FROM repeats r WHERE d.dedup_key = r.dedup_key RETURNING d.id, d.dedup_key \
             ), counted AS ( \
                 INSERT INTO chip_inbox_counters (name, shard, value) \
                 SELECT 'duplicates', $4, CAST(SUM(n) AS BIGINT) FROM repeats HAVING SUM(n) > 0 \
                 ON CONFLICT (name, shard) DO UPDATE SET value = chip_inbox_counters.value + excluded.value \
             ) SELECT id, dedup_key FROM updated",
        )
        .bind(&repeated)
        .bind(&counts)
        .bind(now)
        .bind(shard)
        .fetch_all(&mut *conn)
        .await;
        match originals {
            Ok(originals) => {
                for row in originals {
                    let key: String = row.try_get("dedup_key")?;
                    let id: i64 = row.try_get("id")?;
                    ids.entry(key).or_insert((id, false));
                }
            }
            Err(error) => repeats_failed = Some(error),
        }
    }
    Ok(StoredBatch {
        ids,
        repeats_failed,
    })
}
