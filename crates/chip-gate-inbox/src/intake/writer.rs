//! Group commit: the writer tasks take what is queued, store it in one transaction (apart, when
//! the database refuses one record) and answer every caller.

use std::sync::Arc;
use std::time::Duration;

use futures::future::{Either, select};
use tokio::sync::{Mutex, mpsc, oneshot};

use super::batch::{RecordOutcome, WriterConnection};
use super::{NewRecord, store_batch};
#[cfg(doc)]
use crate::store::CHECK_AFTER_IDLE;
use crate::store::Inbox;

/// How long a writer keeps its connection with nothing to store before it gives it back to the
/// pool. Short against [`CHECK_AFTER_IDLE`]: the pool measures a connection's idle time from
/// when it came back, so one that waited here and then in the pool is checked once it has been
/// idle for this plus that, in all.
const KEEP_WHILE_IDLE: Duration = Duration::from_millis(100);

pub(super) type Reply = oneshot::Sender<RecordOutcome>;

pub(super) struct Queued {
    pub(super) record: NewRecord,
    pub(super) reply: Reply,
}

/// One writer: takes whatever is queued (up to `max_batch`), commits it in one transaction, then
/// answers every caller. When `keep`, it keeps its connection between batches (see
/// [`WriterConnection`]) and gives it back to the pool once nothing came for
/// [`KEEP_WHILE_IDLE`]; otherwise it gives it back after each batch.
pub(super) async fn writer(
    inbox: Inbox,
    receiver: Arc<Mutex<mpsc::Receiver<Queued>>>,
    max_batch: usize,
    max_age: Option<Duration>,
    keep: bool,
) {
    let mut connection = WriterConnection::default();
    loop {
        let mut batch = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            let first = if connection.is_kept() {
                // Waiting with a connection: it goes back to the pool after a quiet
                // `KEEP_WHILE_IDLE`, or at once when the inbox is closed (whose `close` waits
                // for every connection).
                let next = std::pin::pin!(receiver.recv());
                let idle = std::pin::pin!(tokio::time::sleep(KEEP_WHILE_IDLE));
                let closed = std::pin::pin!(inbox.shared.backend.close_event());
                match select(next, select(idle, closed)).await {
                    Either::Left((first, _)) => first,
                    Either::Right((_, next)) => {
                        connection.give_back();
                        next.await
                    }
                }
            } else {
                receiver.recv().await
            };
            match first {
                Some(first) => batch.push(first),
                None => return,
            }
            while batch.len() < max_batch {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        let records: Vec<&NewRecord> = batch.iter().map(|queued| &queued.record).collect();
        let started = std::time::Instant::now();
        connection.give_back_if_stale(&inbox.shared.backend, &inbox.shared.recycle);
        let outcomes = match inbox.ensure_schema().await {
            Ok(()) => store_isolating(&inbox, &mut connection, &records, max_age).await,
            Err(error) => {
                let text = crate::error::error_text(&error);
                inbox.write_failed(&text);
                vec![Err(text); records.len()]
            }
        };
        if !keep {
            connection.give_back();
        }
        ::metrics::histogram!(crate::metrics::COMMIT_SECONDS)
            .record(started.elapsed().as_secs_f64());
        ::metrics::histogram!(crate::metrics::COMMIT_BATCH_SIZE).record(records.len() as f64);
        let stored_new = outcomes.iter().any(|o| matches!(o, Ok((_, false))));
        for (queued, outcome) in batch.into_iter().zip(outcomes) {
            let _ = queued.reply.send(outcome);
        }
        if stored_new {
            inbox.shared.stored.notify_waiters();
        }
    }
}

/// Stores a batch so that one record the database refuses never fails the others: when a
/// batch's insert fails with an error about its data (not the connection, the disk or a lock),
/// it is split in halves and each half stored again, down to single records, so only the record
/// at fault is answered 503 (one bad record in a batch of `n` costs about 2 log2(n) more
/// transactions, paid only when it happens). Per record, as [`store_batch`].
async fn store_isolating(
    inbox: &Inbox,
    connection: &mut WriterConnection,
    records: &[&NewRecord],
    max_age: Option<Duration>,
) -> Vec<RecordOutcome> {
    let backend = &inbox.shared.backend;
    let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; records.len()];
    // (start, end) ranges of `records` still to store, last first.
    let mut ranges = vec![(0, records.len())];
    while let Some((start, end)) = ranges.pop() {
        let part = &records[start..end];
        let turn = inbox.shared.sqlite_turn().await;
        let result = store_batch(backend, connection, part, max_age).await;
        if result.is_err() {
            // Whatever failed, the next try takes a connection the pool has vetted.
            connection.give_back();
        }
        drop(turn);
        match result {
            Ok(stored) => {
                inbox.write_committed();
                for (slot, outcome) in outcomes[start..end].iter_mut().zip(stored) {
                    *slot = Some(outcome);
                }
            }
            Err(error) if part.len() > 1 && refuses_data(&error) => {
                tracing::warn!(%error, records = part.len(),
                    "a batch's insert was refused; storing its records apart");
                let middle = start + part.len() / 2;
                ranges.push((middle, end));
                ranges.push((start, middle));
            }
            Err(error) => {
                let text = crate::error::error_text(&error);
                if !refuses_data(&error) {
                    // The connection or what is under it: fresh connections for the next try.
                    inbox.write_failed(&text);
                }
                for slot in &mut outcomes[start..end] {
                    *slot = Some(Err(text.clone()));
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|| Err("not stored".to_owned())))
        .collect()
}

/// Whether `error` is the database refusing what a batch holds (a constraint, a value it cannot
/// store, a trigger), which storing the records apart can isolate; not a lost connection, a
/// full disk, a lock or a shutdown, which would fail each part the same way.
fn refuses_data(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    let code = db.code().unwrap_or_default();
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT,
        // SQLITE_FULL, SQLITE_CANTOPEN (primary codes, in the low byte of the extended ones).
        let primary = code.parse::<i64>().unwrap_or(0) & 0xff;
        return !matches!(primary, 5 | 6 | 7 | 8 | 10 | 11 | 13 | 14);
    }
    // PostgreSQL classes: 08 connection, 53 insufficient resources, 57 operator intervention,
    // 58 system error, XX internal error.
    !matches!(
        code.get(..2).unwrap_or_default(),
        "08" | "53" | "57" | "58" | "XX"
    )
}
