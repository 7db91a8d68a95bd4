//! Open connections: what each is doing, and closing the oldest unanswered one to make room.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, Semaphore, watch};

use super::{CLOSED_FOR_ROOM, CONNECTIONS, ServeOptions, lock};

/// What a connection is doing, for choosing which one to close under pressure.
#[derive(Clone, Copy, Debug)]
pub(super) enum Phase {
    /// Waiting for a request's head (a new or keep-alive connection), since then.
    Waiting(Instant),
    /// A request is being read (head arrived, body not complete), since its head arrived.
    Reading(Instant),
    /// A request's body is complete and it is being answered: never closed under pressure.
    Answering,
}

/// One open connection.
pub(super) struct Conn {
    pub(super) id: u64,
    phase: Mutex<Phase>,
    /// Body bytes this connection holds in the budget.
    pub(super) reserved: AtomicU64,
    pub(super) close: Notify,
}

impl Conn {
    pub(super) fn set(&self, phase: Phase) {
        *lock(&self.phase) = phase;
    }

    fn phase(&self) -> Phase {
        *lock(&self.phase)
    }
}

pub(super) struct Shared {
    pub(super) connections: Mutex<HashMap<u64, Arc<Conn>>>,
    pub(super) next_id: AtomicU64,
    pub(super) slot_freed: Notify,
    pub(super) budget: Arc<Semaphore>,
    pub(super) per_request: usize,
    pub(super) options: ServeOptions,
}

impl Shared {
    pub(super) fn open(&self) -> usize {
        lock(&self.connections).len()
    }

    pub(super) fn register(&self) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            phase: Mutex::new(Phase::Waiting(Instant::now())),
            reserved: AtomicU64::new(0),
            close: Notify::new(),
        });
        lock(&self.connections).insert(id, Arc::clone(&conn));
        metrics::gauge!(CONNECTIONS).increment(1.0);
        conn
    }

    pub(super) fn unregister(&self, id: u64) {
        if lock(&self.connections).remove(&id).is_some() {
            metrics::gauge!(CONNECTIONS).decrement(1.0);
        }
        self.slot_freed.notify_one();
    }

    pub(super) fn has_evictable(&self) -> bool {
        lock(&self.connections)
            .values()
            .any(|conn| !matches!(conn.phase(), Phase::Answering))
    }

    /// Closes the connection that has waited longest without being answered (other than
    /// `except`); with `holding_body`, only one that holds room in the body budget. Returns
    /// whether one was found.
    pub(super) fn evict_oldest(&self, except: Option<u64>, holding_body: bool) -> bool {
        let victim = {
            let connections = lock(&self.connections);
            connections
                .values()
                .filter(|conn| Some(conn.id) != except)
                .filter(|conn| !holding_body || conn.reserved.load(Ordering::Relaxed) > 0)
                .filter_map(|conn| match conn.phase() {
                    Phase::Waiting(since) | Phase::Reading(since) => Some((since, conn)),
                    Phase::Answering => None,
                })
                .min_by_key(|(since, _)| *since)
                .map(|(_, conn)| Arc::clone(conn))
        };
        match victim {
            Some(conn) => {
                tracing::debug!(
                    holding_body,
                    "closing the oldest connection not being answered, to make room"
                );
                metrics::counter!(
                    CLOSED_FOR_ROOM,
                    "for" => if holding_body { "body_budget" } else { "connections" }
                )
                .increment(1);
                // Not answered any more: it is no candidate for the next eviction.
                conn.set(Phase::Answering);
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// Stops every connection (idle ones at once, the others after their response) and waits
    /// up to the drain time for them.
    pub(super) async fn drain(&self, stop: watch::Sender<bool>) -> std::io::Result<()> {
        let _ = stop.send(true);
        let deadline = tokio::time::Instant::now() + self.options.drain;
        while self.open() > 0 {
            if tokio::time::timeout_at(deadline, self.slot_freed.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        // Whatever is left is closed: the connections end when the runtime drops their tasks,
        // or at once when told.
        for conn in lock(&self.connections).values() {
            conn.close.notify_one();
        }
        Ok(())
    }
}
