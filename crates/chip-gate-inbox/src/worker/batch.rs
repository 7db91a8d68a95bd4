//! One batch: claimed, run through its handlers up to `concurrency` at once while its leases are
//! extended, and what has not started handed back when the worker stops.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures::future::Either;
use futures::stream::{self, StreamExt};

use super::run::{Stop, Tail};
use super::{Completed, ProcessReport, TxJob, Worker};
use crate::error::InboxError;
use crate::model::StoredDelivery;
use crate::ops::{self, Claimed, Lease};
use crate::store::{Backend, ms};

impl Worker {
    /// Claims one batch of due deliveries and handles them with `handler` (as
    /// [`run_until`](Self::run_until) does), then returns.
    ///
    /// # Errors
    /// [`InboxError::Database`] when the claim fails.
    pub async fn process_batch<H, Fut, E>(&self, handler: H) -> Result<ProcessReport, InboxError>
    where
        H: Fn(StoredDelivery) -> Fut + Send + Sync,
        Fut: Future<Output = Result<(), E>> + Send,
        E: Display,
    {
        self.batch_plain(&handler, Stop::never(), Tail::none())
            .await
    }

    /// Claims one batch and handles each delivery inside the transaction that marks it done, as
    /// [`run_in_transaction_until`](Self::run_in_transaction_until) does.
    ///
    /// # Errors
    /// [`InboxError::Database`] when the claim fails.
    pub async fn process_batch_in_transaction<H, Fut, E>(
        &self,
        handler: H,
    ) -> Result<ProcessReport, InboxError>
    where
        H: Fn(TxJob) -> Fut + Send + Sync,
        Fut: Future<Output = Result<Completed, E>> + Send,
        E: Display,
    {
        self.batch_in_transaction(&handler, Stop::never(), Tail::none())
            .await
    }

    /// One batch inside the database: each delivery handled in the transaction that marks it
    /// done. Leases are extended meanwhile, so a handler longer than the lease never costs the
    /// rest of the batch an attempt: on PostgreSQL every lease until its outcome is in (a
    /// handler's transaction locks its lane only when it marks the delivery done), on SQLite
    /// those still waiting (a running handler's transaction holds the only write lock, and
    /// extends them itself when it commits).
    pub(super) async fn batch_in_transaction<H, Fut, E>(
        &self,
        handler: &H,
        stop: Stop,
        tail: Tail,
    ) -> Result<ProcessReport, InboxError>
    where
        H: Fn(TxJob) -> Fut + Send + Sync,
        Fut: Future<Output = Result<Completed, E>> + Send,
        E: Display,
    {
        let (claimed, mut report) = self.claim().await?;
        if claimed.is_empty() {
            return Ok(report);
        }
        let extend = match &self.inbox.shared.backend {
            Backend::Sqlite(_) => Extend::Waiting,
            Backend::Postgres(_) => Extend::Held,
        };
        let (outcomes, handed_back) = self
            .run_batch(
                claimed,
                &stop,
                &tail,
                extend,
                |claimed, batch| self.handle_in_transaction(claimed, handler, batch),
                // Each outcome was committed by its own transaction.
                |outcomes, _| std::future::ready(outcomes),
            )
            .await;
        report.handed_over -= handed_back;
        report.handed_back = handed_back;
        for outcome in outcomes {
            report.add(outcome);
        }
        Ok(report)
    }

    async fn claim(&self) -> Result<(Vec<Claimed>, ProcessReport), InboxError> {
        self.inbox.ensure_schema().await?;
        let rules = self.options.rules(self.claim_size.next());
        let (claimed, tally) = match &self.inbox.shared.backend {
            Backend::Sqlite(pool) => {
                let _turn = self.inbox.shared.sqlite_turn().await;
                ops::sqlite::claim(pool, &self.id, rules).await?
            }
            Backend::Postgres(pool) => ops::postgres::claim_set(pool, &self.id, rules).await?,
        };
        if !claimed.is_empty() {
            ::metrics::histogram!(crate::metrics::CLAIM_SIZE).record(claimed.len() as f64);
        }
        crate::metrics::handled("stale", usize::try_from(tally.stale).unwrap_or(0));
        crate::metrics::handled("dead", usize::try_from(tally.dead).unwrap_or(0));
        crate::metrics::lease_expired("claim", tally.lease_expired);
        let report = ProcessReport {
            handed_over: claimed.len(),
            stale: usize::try_from(tally.stale).unwrap_or(0),
            dead: usize::try_from(tally.dead).unwrap_or(0),
            ..ProcessReport::default()
        };
        Ok((claimed, report))
    }

    /// One batch outside the database: the handlers run (up to `concurrency` at once) while the
    /// batch's leases are extended, and their outcomes are recorded as they come, group-committed
    /// (what finished while a record was committing goes in the next one). A handler that
    /// succeeded is recorded within about one commit, not when the slowest of its batch ends: a
    /// crash in between hands it over again, so that window is kept short; a batch of fast
    /// handlers still costs one or two commits.
    pub(super) async fn batch_plain<H, Fut, E>(
        &self,
        handler: &H,
        stop: Stop,
        tail: Tail,
    ) -> Result<ProcessReport, InboxError>
    where
        H: Fn(StoredDelivery) -> Fut + Send + Sync,
        Fut: Future<Output = Result<(), E>> + Send,
        E: Display,
    {
        let (claimed, mut report) = self.claim().await?;
        if claimed.is_empty() {
            return Ok(report);
        }
        let (outcomes, handed_back) = self
            .run_batch(
                claimed,
                &stop,
                &tail,
                Extend::Held,
                |claimed, _| self.run_plain(claimed, handler),
                |finished, batch| async move {
                    let ids: Vec<i64> = finished.iter().map(|f| f.0.delivery_id).collect();
                    // Not while the batch's leases are being extended: the two transactions
                    // would lock the same lanes, perhaps in different orders.
                    let _writing = batch.writing.lock().await;
                    let outcomes = self.record_all(finished).await;
                    // Recorded (or lost): no more lease to extend for these.
                    batch.finished(&ids);
                    outcomes
                },
            )
            .await;
        report.handed_over -= handed_back;
        report.handed_back = handed_back;
        for outcome in outcomes {
            report.add(outcome);
        }
        Ok(report)
    }

    /// Runs a claimed batch through `handle`, up to `concurrency` at once, passing finished
    /// results to `finish` in groups (one group at a time; what finishes meanwhile waits for the
    /// next), and extending the leases `extend` names every third of the lease. Once `stop` is
    /// set no delivery starts any more: those not started are handed back at once, while the
    /// running ones finish. `tail` is told when every handler has finished (what is left is
    /// recording the last outcomes). Returns what `finish` returned and how many deliveries were
    /// handed back.
    async fn run_batch<F, Fut, T, R, RFut, U>(
        &self,
        claimed: Vec<Claimed>,
        stop: &Stop,
        tail: &Tail,
        extend: Extend,
        handle: F,
        finish: R,
    ) -> (Vec<U>, usize)
    where
        F: Fn(Claimed, Arc<InHand>) -> Fut,
        Fut: Future<Output = T>,
        R: Fn(Vec<T>, Arc<InHand>) -> RFut,
        RFut: Future<Output = Vec<U>>,
    {
        let in_hand = InHand::new(claimed);
        let began = std::time::Instant::now();
        let handled = std::sync::atomic::AtomicUsize::new(0);
        let next = stream::poll_fn(|_| Poll::Ready(in_hand.start_next(stop)));
        let finished: Mutex<Vec<T>> = Mutex::new(Vec::new());
        let more = tokio::sync::Notify::new();
        let all_finished = std::sync::atomic::AtomicBool::new(false);
        let producing = async {
            next.map(|claimed| handle(claimed, Arc::clone(&in_hand)))
                .buffer_unordered(self.options.concurrency)
                .for_each(|result| {
                    handled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    lock(&finished).push(result);
                    more.notify_one();
                    std::future::ready(())
                })
                .await;
            all_finished.store(true, std::sync::atomic::Ordering::SeqCst);
            more.notify_one();
            if !stop.is_set() {
                // The pace of this batch's handlers sizes the next claim (a stopped batch
                // handed some back, so its pace says nothing).
                self.claim_size.observe(
                    handled.load(std::sync::atomic::Ordering::Relaxed),
                    began.elapsed(),
                );
            }
            tail.reached();
        };
        let recording = async {
            let mut out = Vec::new();
            loop {
                // Read before taking: if it was set, everything is in the buffer already.
                let last = all_finished.load(std::sync::atomic::Ordering::SeqCst);
                let group: Vec<T> = std::mem::take(&mut *lock(&finished));
                if !group.is_empty() {
                    out.extend(finish(group, Arc::clone(&in_hand)).await);
                } else if last {
                    return out;
                } else {
                    more.notified().await;
                }
            }
        };
        let work = async { futures::future::join(producing, recording).await.1 };
        let leases = || match extend {
            Extend::Held => in_hand.held_leases(),
            Extend::Waiting => in_hand.waiting_leases(),
        };
        // Both in this task: the handlers keep running while the leases are extended.
        let working = async {
            tokio::select! {
                finished = work => finished,
                never = self.keep_leases(&leases, &in_hand.writing) => match never {},
            }
        };
        let handing_back = async {
            stop.wait().await;
            let _writing = in_hand.writing.lock().await;
            self.hand_back(in_hand.take_waiting()).await
        };
        futures::pin_mut!(working, handing_back);
        match futures::future::select(working, handing_back).await {
            Either::Left((finished, handing_back)) => {
                // Stopped: what never started is still waiting to be handed back.
                let handed_back = if stop.is_set() { handing_back.await } else { 0 };
                (finished, handed_back)
            }
            Either::Right((handed_back, working)) => (working.await, handed_back),
        }
    }

    /// Hands unstarted deliveries back (see [`ops`]'s `hand_back`) and wakes this process's idle
    /// workers; returns how many. When the database refuses, their leases expire instead.
    async fn hand_back(&self, unstarted: Vec<Claimed>) -> usize {
        if unstarted.is_empty() {
            return 0;
        }
        let leases: Vec<Lease> = unstarted.into_iter().map(|c| c.lease).collect();
        let handed = match &self.inbox.shared.backend {
            Backend::Sqlite(pool) => {
                let _turn = self.inbox.shared.sqlite_turn().await;
                ops::sqlite::hand_back(pool, &leases).await
            }
            Backend::Postgres(pool) => ops::postgres::hand_back(pool, &leases).await,
        };
        match handed {
            Ok(handed) => {
                self.inbox.shared.stored.notify_waiters();
                usize::try_from(handed).unwrap_or(0)
            }
            Err(error) => {
                tracing::warn!(%error, count = leases.len(),
                    "leases not handed back; other workers take the deliveries when they expire");
                0
            }
        }
    }

    /// Extends the leases `in_hand` names every third of the lease, for as long as it is
    /// polled (the batch's handlers run meanwhile; it is dropped when they are done).
    async fn keep_leases(
        &self,
        in_hand: &(dyn Fn() -> Vec<Lease> + Sync),
        writing: &tokio::sync::Mutex<()>,
    ) -> Infallible {
        let mut renew = tokio::time::interval(self.options.lease / 3);
        renew.tick().await;
        loop {
            renew.tick().await;
            let _writing = writing.lock().await;
            let leases = in_hand();
            if leases.is_empty() {
                continue;
            }
            let lease_ms = ms(self.options.lease);
            let kept = match &self.inbox.shared.backend {
                Backend::Sqlite(pool) => {
                    let _turn = self.inbox.shared.sqlite_turn().await;
                    ops::sqlite::extend(pool, &leases, lease_ms).await
                }
                Backend::Postgres(pool) => ops::postgres::extend(pool, &leases, lease_ms).await,
            };
            match kept {
                Ok(kept) if kept == leases.len() as u64 => {}
                Ok(kept) => {
                    // A transactional handler may have committed (and released its lane) since
                    // the leases were listed: only those still in hand count as lost.
                    let still: std::collections::HashSet<i64> =
                        in_hand().iter().map(|l| l.delivery_id).collect();
                    let expected = leases
                        .iter()
                        .filter(|l| still.contains(&l.delivery_id))
                        .count() as u64;
                    if kept < expected {
                        tracing::warn!(
                            lost = expected - kept,
                            "leases lost while their handlers run"
                        );
                    }
                }
                Err(error) => tracing::warn!(%error, "leases not extended"),
            }
        }
    }
}

/// Which leases of a batch a worker extends while the batch runs.
#[derive(Clone, Copy)]
enum Extend {
    /// Every lease not handed back, until its outcome is recorded or committed: plain handlers,
    /// and transactional ones on PostgreSQL.
    Held,
    /// Those of deliveries not started yet: on SQLite a started one's transaction holds the
    /// write lock until it commits.
    Waiting,
}

/// A batch in hand: the deliveries not started yet, and the leases of those started.
pub(crate) struct InHand {
    waiting: Mutex<VecDeque<Claimed>>,
    started: Mutex<Vec<Lease>>,
    /// PostgreSQL connections its transactional handlers committed on, idle until the next one
    /// begins; back to the pool when the batch ends.
    connections: Mutex<Vec<sqlx::pool::PoolConnection<sqlx::Postgres>>>,
    /// Held while the batch writes to its lanes (extending leases, recording outcomes), so that
    /// two of its transactions never wait for each other's lane locks.
    writing: tokio::sync::Mutex<()>,
}

/// Locks, whether or not a panic poisoned the lock (the data is a list that stays consistent).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl InHand {
    fn new(claimed: Vec<Claimed>) -> Arc<Self> {
        Arc::new(Self {
            waiting: Mutex::new(claimed.into()),
            started: Mutex::new(Vec::new()),
            connections: Mutex::new(Vec::new()),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// The next delivery to start, unless the worker is stopping.
    fn start_next(&self, stop: &Stop) -> Option<Claimed> {
        if stop.is_set() {
            return None;
        }
        let next = lock(&self.waiting).pop_front()?;
        lock(&self.started).push(next.lease.clone());
        Some(next)
    }

    /// The leases of the deliveries not started yet.
    pub(super) fn waiting_leases(&self) -> Vec<Lease> {
        lock(&self.waiting)
            .iter()
            .map(|c| c.lease.clone())
            .collect()
    }

    /// The leases of every delivery not handed back.
    fn held_leases(&self) -> Vec<Lease> {
        let mut leases = self.waiting_leases();
        leases.extend(lock(&self.started).iter().cloned());
        leases
    }

    /// Forgets the leases of these deliveries (their outcomes are recorded).
    pub(super) fn finished(&self, ids: &[i64]) {
        lock(&self.started).retain(|lease| !ids.contains(&lease.delivery_id));
    }

    /// An idle connection a handler of this batch committed on, if there is one.
    pub(super) fn take_connection(&self) -> Option<sqlx::pool::PoolConnection<sqlx::Postgres>> {
        lock(&self.connections).pop()
    }

    /// Keeps a connection whose transaction committed for the batch's next handler, or gives it
    /// back to the pool when no delivery of the batch is waiting for one (the pool is shared
    /// with intake and with the next batch).
    pub(super) fn give_back_connection(&self, conn: sqlx::pool::PoolConnection<sqlx::Postgres>) {
        if lock(&self.waiting).is_empty() {
            drop(conn);
        } else {
            lock(&self.connections).push(conn);
        }
    }

    /// Takes the deliveries not started yet (to hand them back).
    fn take_waiting(&self) -> Vec<Claimed> {
        lock(&self.waiting).drain(..).collect()
    }
}
