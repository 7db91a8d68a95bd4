//! The worker's run loop: batch after batch until shutdown, with retention and gauges on the
//! way, and the stop signal a shutdown gives the batch in hand.

use std::fmt::Display;
use std::future::Future;

use futures::{FutureExt, StreamExt};

use super::{Completed, ProcessReport, TxJob, Worker};
use crate::error::InboxError;
use crate::model::StoredDelivery;

impl Worker {
    /// Handles deliveries with `handler` until the process ends. See [`run_until`](Self::run_until).
    pub async fn run<H, Fut, E>(&self, handler: H)
    where
        H: Fn(StoredDelivery) -> Fut + Send + Sync,
        Fut: Future<Output = Result<(), E>> + Send,
        E: Display,
    {
        self.run_until(handler, std::future::pending::<()>()).await;
    }

    /// Handles deliveries with `handler` until `shutdown` completes. Then no handler starts
    /// any more: the deliveries of the batch in hand that have not started are handed back at
    /// once (their leases released, their attempt not counted), so another worker takes them
    /// without waiting for the lease to expire; the handlers running finish and their outcomes
    /// are recorded; then this returns. (Give running handlers a deadline of your own if they
    /// may hang: dropping this future mid-handler leaves their leases to expire.) `Ok(())` marks a delivery done; an error (or a panic) schedules another attempt with
    /// backoff, or marks it dead after the last one.
    ///
    /// **At least once:** the handler runs outside the inbox's database, so a crash after the
    /// handler's effect and before the "done" mark commits means the delivery is handed over
    /// again. Make your effect idempotent with [`StoredDelivery::dedup_key`] (for example as an
    /// idempotency key or a unique column), or use [`run_in_transaction`](Self::run_in_transaction)
    /// when your data lives in the same database.
    pub async fn run_until<H, Fut, E, S>(&self, handler: H, shutdown: S)
    where
        H: Fn(StoredDelivery) -> Fut + Send + Sync,
        Fut: Future<Output = Result<(), E>> + Send,
        E: Display,
        S: Future<Output = ()>,
    {
        self.run_loop(shutdown, |stop, tail| {
            self.batch_plain(&handler, stop, tail)
        })
        .await;
    }

    /// Handles deliveries until the process ends, each inside the transaction that marks it
    /// done. See [`run_in_transaction_until`](Self::run_in_transaction_until).
    pub async fn run_in_transaction<H, Fut, E>(&self, handler: H)
    where
        H: Fn(TxJob) -> Fut + Send + Sync,
        Fut: Future<Output = Result<Completed, E>> + Send,
        E: Display,
    {
        self.run_in_transaction_until(handler, std::future::pending::<()>())
            .await;
    }

    /// Handles deliveries until `shutdown` completes, each inside the transaction that marks it
    /// done: **exactly-once effects** for writes to the inbox's own database. The handler gets a
    /// [`TxJob`], writes through its connection and returns [`TxJob::complete`]'s proof.
    ///
    /// On SQLite the transaction holds the database's write lock while the handler runs (intake
    /// waits for it): keep such handlers short and do slow work elsewhere. The writers of one
    /// process (intake, workers, their lease extensions) take turns first come, first served,
    /// so none of them starves while others write again and again.
    pub async fn run_in_transaction_until<H, Fut, E, S>(&self, handler: H, shutdown: S)
    where
        H: Fn(TxJob) -> Fut + Send + Sync,
        Fut: Future<Output = Result<Completed, E>> + Send,
        E: Display,
        S: Future<Output = ()>,
    {
        self.run_loop(shutdown, |stop, tail| {
            self.batch_in_transaction(&handler, stop, tail)
        })
        .await;
    }

    /// Batch after batch until `shutdown`. The next batch is claimed as soon as every handler of
    /// the one in hand has finished, while that one records its last outcomes: the claim's
    /// round trips overlap the record's, and handlers of two batches never run at once (so
    /// `concurrency` still bounds them). At most two batches are in hand. The lanes of the
    /// batch still recording are leased, so the next claim skips them: per-object order holds.
    async fn run_loop<'w, B, BFut, S>(&'w self, shutdown: S, batch: B)
    where
        B: Fn(Stop, Tail) -> BFut,
        BFut: Future<Output = Result<ProcessReport, InboxError>> + 'w,
        S: Future<Output = ()>,
    {
        let shutdown = shutdown.fuse();
        futures::pin_mut!(shutdown);
        let (stop_sender, stop_receiver) = tokio::sync::watch::channel(false);
        let stop = Stop(Some(stop_receiver));
        // On PostgreSQL, deliveries stored or requeued by other processes wake this worker at
        // once (LISTEN/NOTIFY); polling remains for retries coming due and expired leases.
        let _listening = self.inbox.listen_for_due(self.options.poll_interval);
        let mut next_purge = tokio::time::Instant::now();
        let mut next_gauges = tokio::time::Instant::now();
        let mut gauges: Option<Beside> = None;
        let mut purging: Option<Beside> = None;
        let mut failures: u32 = 0;
        // The batches in hand, each with its sequence number.
        let mut in_hand = futures::stream::FuturesUnordered::new();
        let mut started: u64 = 0;
        loop {
            if futures::poll!(shutdown.as_mut()).is_ready() {
                break;
            }
            // Retention and the gauges can take a while (the gauges count every pending
            // delivery: a quarter of a second for 100,000 on SQLite; retention removes whatever
            // is old enough, a chunk at a time). They run beside the claims, on connections of
            // their own, never in their way; one of each at a time.
            if let Some(age) = self.options.retention
                && tokio::time::Instant::now() >= next_purge
                && purging.as_ref().is_none_or(Beside::is_finished)
            {
                next_purge = tokio::time::Instant::now() + self.options.purge_interval;
                let inbox = self.inbox.clone();
                purging = Some(Beside::spawn(move |stop| async move {
                    match inbox.purge_finished_before_unless(age, &stop).await {
                        Ok(0) => {}
                        Ok(removed) => tracing::info!(removed, "inbox retention applied"),
                        Err(error) => tracing::warn!(%error, "inbox retention failed"),
                    }
                }));
            }
            if let Some(interval) = self.options.gauges_interval
                && tokio::time::Instant::now() >= next_gauges
                && gauges.as_ref().is_none_or(Beside::is_finished)
            {
                next_gauges = tokio::time::Instant::now() + interval;
                let inbox = self.inbox.clone();
                gauges = Some(Beside::spawn(|_stop| async move {
                    if let Err(error) = inbox.record_gauges().await {
                        tracing::debug!(%error, "inbox gauges not recorded");
                    }
                }));
            }
            // Listen before claiming, so a delivery stored during the claim still wakes us.
            let stored = self.inbox.shared.stored.notified();
            futures::pin_mut!(stored);
            stored.as_mut().enable();
            // A claim made while another batch still held lanes may have found nothing only
            // because of them: not a reason to sleep.
            let overlapped = !in_hand.is_empty();
            let tail = Tail::new();
            let newest = started;
            started += 1;
            let run = batch(stop.clone(), tail.clone());
            in_hand.push(async move { (newest, run.await) });
            // Until the newest batch's handlers have all finished (and the older batch is
            // done), or the newest batch is done.
            let mut tail_reached = false;
            let mut newest_idle = None;
            let stopping = loop {
                if tail_reached && in_hand.len() < 2 {
                    break false;
                }
                tokio::select! {
                    Some((number, result)) = in_hand.next() => {
                        let idle = Self::log_batch(&result, &mut failures);
                        if number == newest {
                            newest_idle = Some(idle);
                            break false;
                        }
                    }
                    () = tail.wait(), if !tail_reached => tail_reached = true,
                    () = &mut shutdown => break true,
                }
            };
            if stopping {
                break;
            }
            if newest_idle == Some(true) && !overlapped {
                // Nothing was due, and no other batch was in hand (so none is now): wait for a
                // delivery, the poll interval (longer after failures), or the shutdown.
                let wait = self
                    .options
                    .poll_interval
                    .saturating_mul(failures.clamp(1, 20));
                tokio::select! {
                    () = &mut shutdown => break,
                    () = &mut stored => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
        // Stopping: the batches in hand start no more handlers (see `run_batch`); what runs
        // finishes and is recorded before this returns.
        let _ = stop_sender.send(true);
        while let Some((_, result)) = in_hand.next().await {
            Self::log_batch(&result, &mut failures);
        }
        // A purge or a reading of the gauges still under way ends before the worker does, so
        // that the inbox can be closed right after. (A purge stopped halfway would lose
        // nothing: each of its chunks commits on its own, and the next purge goes on.)
        for mut task in [purging, gauges].into_iter().flatten() {
            task.stop();
            let _ = (&mut task.task).await;
        }
    }

    /// Logs what a batch of the run loop did and counts failed claims in a row; returns whether
    /// it found nothing to do (or failed).
    fn log_batch(result: &Result<ProcessReport, InboxError>, failures: &mut u32) -> bool {
        match result {
            Ok(report) => {
                *failures = 0;
                if report.handed_back > 0 {
                    tracing::info!(
                        handed_back = report.handed_back,
                        "worker stopping: unstarted deliveries handed back"
                    );
                }
                report.handed_over == 0 && report.stale == 0
            }
            Err(error) => {
                *failures = failures.saturating_add(1);
                tracing::warn!(%error, failures = *failures, "inbox claim failed; trying again");
                true
            }
        }
    }
}

/// A task the run loop started beside its claims (retention, the gauges), in the worker's
/// tracing span, with a flag that asks it to stop. Set when the worker stops, and when the
/// worker's future is dropped before it ends: a purge then ends after the chunk under way, so
/// that nothing of a worker goes on for long after it. The task is never aborted: cut in the
/// middle of a transaction, a SQLite connection could go back to its pool with the write lock
/// still held.
struct Beside {
    task: tokio::task::JoinHandle<()>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Beside {
    fn spawn<F, Fut>(task: F) -> Self
    where
        F: FnOnce(std::sync::Arc<std::sync::atomic::AtomicBool>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = task(std::sync::Arc::clone(&stop));
        Self {
            task: tokio::spawn(tracing::Instrument::in_current_span(task)),
            stop,
        }
    }

    fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Beside {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Told by a batch when every one of its handlers has finished.
#[derive(Clone)]
pub(super) struct Tail(Option<std::sync::Arc<tokio::sync::Notify>>);

impl Tail {
    fn new() -> Self {
        Self(Some(std::sync::Arc::new(tokio::sync::Notify::new())))
    }

    /// No one listens ([`Worker::process_batch`]).
    pub(super) fn none() -> Self {
        Self(None)
    }

    /// Every handler of the batch has finished.
    pub(super) fn reached(&self) {
        if let Some(notify) = &self.0 {
            // Stored if nobody waits yet.
            notify.notify_one();
        }
    }

    /// Returns once the batch told; never for [`none`](Self::none).
    async fn wait(&self) {
        match &self.0 {
            Some(notify) => notify.notified().await,
            None => std::future::pending().await,
        }
    }
}

/// A worker's stop signal, seen by the batch in hand.
#[derive(Clone)]
pub(super) struct Stop(Option<tokio::sync::watch::Receiver<bool>>);

impl Stop {
    /// A signal that never comes ([`Worker::process_batch`]).
    pub(super) fn never() -> Self {
        Self(None)
    }

    pub(super) fn is_set(&self) -> bool {
        self.0.as_ref().is_some_and(|receiver| *receiver.borrow())
    }

    /// Returns once the signal has come; never, if it cannot come any more.
    pub(super) async fn wait(&self) {
        if let Some(receiver) = &self.0 {
            let mut receiver = receiver.clone();
            if receiver.wait_for(|stop| *stop).await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}
