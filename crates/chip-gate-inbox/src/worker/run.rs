//! The worker's run loop: batch after batch until shutdown, with retention and gauges on the
//! way, and the stop signal a shutdown gives the batch in hand.

use std::fmt::Display;
use std::future::Future;

use futures::FutureExt;

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
        self.run_loop(shutdown, |stop| self.batch_plain(&handler, stop))
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
    /// waits for it): keep such handlers short and do slow work elsewhere.
    pub async fn run_in_transaction_until<H, Fut, E, S>(&self, handler: H, shutdown: S)
    where
        H: Fn(TxJob) -> Fut + Send + Sync,
        Fut: Future<Output = Result<Completed, E>> + Send,
        E: Display,
        S: Future<Output = ()>,
    {
        self.run_loop(shutdown, |stop| self.batch_in_transaction(&handler, stop))
            .await;
    }

    async fn run_loop<B, BFut, S>(&self, shutdown: S, batch: B)
    where
        B: Fn(Stop) -> BFut,
        BFut: Future<Output = Result<ProcessReport, InboxError>>,
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
        let mut failures: u32 = 0;
        loop {
            if futures::poll!(shutdown.as_mut()).is_ready() {
                return;
            }
            if self.options.retention.is_some() && tokio::time::Instant::now() >= next_purge {
                next_purge = tokio::time::Instant::now() + self.options.purge_interval;
                match self.purge().await {
                    Ok(0) => {}
                    Ok(removed) => tracing::info!(removed, "inbox retention applied"),
                    Err(error) => tracing::warn!(%error, "inbox retention failed"),
                }
            }
            if let Some(interval) = self.options.gauges_interval
                && tokio::time::Instant::now() >= next_gauges
            {
                next_gauges = tokio::time::Instant::now() + interval;
                if let Err(error) = self.inbox.record_gauges().await {
                    tracing::debug!(%error, "inbox gauges not recorded");
                }
            }
            // Listen before claiming, so a delivery stored during the claim still wakes us.
            let stored = self.inbox.shared.stored.notified();
            futures::pin_mut!(stored);
            stored.as_mut().enable();
            let run = batch(stop.clone());
            futures::pin_mut!(run);
            // A shutdown during the batch stops it from starting handlers (see `run_batch`);
            // what runs finishes and is recorded before this returns.
            let (result, stopping) = tokio::select! {
                result = &mut run => (result, false),
                () = &mut shutdown => {
                    let _ = stop_sender.send(true);
                    (run.await, true)
                }
            };
            let idle = match result {
                Ok(report) => {
                    failures = 0;
                    if report.handed_back > 0 {
                        tracing::info!(
                            handed_back = report.handed_back,
                            "worker stopping: unstarted deliveries handed back"
                        );
                    }
                    report.handed_over == 0 && report.stale == 0
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, failures, "inbox claim failed; trying again");
                    true
                }
            };
            if stopping {
                return;
            }
            if idle {
                let wait = self
                    .options
                    .poll_interval
                    .saturating_mul(failures.clamp(1, 20));
                tokio::select! {
                    () = &mut shutdown => return,
                    () = stored => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
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
