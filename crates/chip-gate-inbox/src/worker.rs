//! Processing: workers claim due deliveries under a lease, hand them to your handler, and record
//! the outcome.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt;
use futures::future::Either;
use futures::stream::{self, StreamExt};
use sqlx::{PgConnection, SqliteConnection, Transaction};
use tracing::Instrument;

use crate::error::{InboxError, error_text};
use crate::model::StoredDelivery;
use crate::ops::{self, ClaimRules, Claimed, Lease};
use crate::store::{Backend, Dialect, Inbox, ms};

/// What a worker does with a delivery older than one already handled for the same object (CHIP
/// sent the newer state first, or the older one was retried after the newer one was handled).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StalePolicy {
    /// Mark it stale and do not hand it over (default): an older state of an object never
    /// overwrites a newer one (a late `purchase.paid` after the purchase's `purchase.cancelled`).
    #[default]
    Skip,
    /// Hand it over anyway with [`StoredDelivery::stale`] set, and let the handler decide.
    Deliver,
}

/// How long a failed delivery waits before its next attempt: `initial`, doubling each attempt, at
/// most `max`, each wait shortened by up to a quarter at random so that retries spread out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The wait after the first failure.
    pub initial: Duration,
    /// The longest wait.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(5),
            max: Duration::from_secs(30 * 60),
        }
    }
}

impl Backoff {
    /// The wait after `attempt` failed attempts (1 for the first failure).
    pub fn delay(&self, attempt: i64) -> Duration {
        let exponent = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let full = self
            .initial
            .saturating_mul(2_u32.saturating_pow(exponent))
            .min(self.max);
        let cut = full.mul_f64(fastrand::f64() * 0.25);
        full.saturating_sub(cut)
    }
}

/// The shortest retention the worker applies on its own. A delivery stored with an `updated_on`
/// at or below the newest one retention removed is recorded as expired and not handed over (see
/// [`Inbox::retention_horizon`]); CHIP retries a delivery for up to 36 hours, so keeping at least
/// 48 hours keeps every state CHIP first gets through late above that horizon, and handled.
pub const MIN_RETENTION: Duration = Duration::from_secs(48 * 3600);

/// The longest lease, poll interval or purge interval a worker accepts.
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Settings for a [`Worker`].
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    batch_size: usize,
    concurrency: usize,
    lease: Duration,
    poll_interval: Duration,
    max_attempts: u32,
    backoff: Backoff,
    stale: StalePolicy,
    retention: Option<Duration>,
    purge_interval: Duration,
    gauges_interval: Option<Duration>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            batch_size: 16,
            concurrency: 4,
            lease: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            max_attempts: 10,
            backoff: Backoff::default(),
            stale: StalePolicy::Skip,
            retention: Some(Duration::from_secs(7 * 24 * 3600)),
            purge_interval: Duration::from_secs(600),
            gauges_interval: Some(Duration::from_secs(10)),
        }
    }
}

impl WorkerOptions {
    /// How many deliveries one claim takes (default 16; at most one per object).
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.clamp(1, 1000);
        self
    }

    /// How many handlers run at once in this worker (default 4; always on different objects).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long a claim lasts (default 60 s; from 100 ms to a day). A worker that dies mid-handler loses its claim after
    /// this long and another worker takes the delivery. [`Worker::run`] extends the lease while
    /// the handler runs; in [`Worker::run_in_transaction`] the database's locks hold it.
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.clamp(Duration::from_millis(100), DAY);
        self
    }

    /// How often an idle worker looks for due deliveries (default 500 ms, at most a day). A
    /// worker starts at once on new deliveries stored through the same [`Inbox`] (an
    /// [`Intake`](crate::Intake) in the same process) and, on PostgreSQL, on those stored or
    /// requeued by any process (`LISTEN`/`NOTIFY`); polling finds retries coming due and expired
    /// leases, and on SQLite what other processes stored.
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.clamp(Duration::from_millis(1), DAY);
        self
    }

    /// How many attempts before a delivery is marked dead (default 10).
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// The wait between attempts (default 5 s doubling up to 30 min).
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// What to do with stale deliveries (default [`StalePolicy::Skip`]).
    #[must_use]
    pub fn stale(mut self, policy: StalePolicy) -> Self {
        self.stale = policy;
        self
    }

    /// Remove done and stale deliveries this long after they finished (default 7 days; at least
    /// [`MIN_RETENTION`]; `None` keeps them). Dead deliveries are never removed, nor ones without
    /// an `updated_on`. What is removed can no longer recognise its copies, so a delivery stored
    /// later with an `updated_on` at or below the newest one removed is recorded as stale and
    /// never handed over (see [`Inbox::retention_horizon`]): retention bounds how late a state may
    /// first arrive and still be handled.
    #[must_use]
    pub fn retention(mut self, retention: Option<Duration>) -> Self {
        self.retention = retention.map(|r| r.max(MIN_RETENTION));
        self
    }

    /// How often a running worker applies retention (default 10 min, at most a day).
    #[must_use]
    pub fn purge_interval(mut self, interval: Duration) -> Self {
        self.purge_interval = interval.clamp(Duration::from_secs(1), DAY);
        self
    }

    /// How often a running worker sets the gauges that come from the database
    /// ([`Inbox::record_gauges`]: deliveries by state, age of the oldest pending one); default
    /// 10 s, at least 1 s; `None` never (record them yourself).
    #[must_use]
    pub fn gauges_interval(mut self, interval: Option<Duration>) -> Self {
        self.gauges_interval = interval.map(|i| i.clamp(Duration::from_secs(1), DAY));
        self
    }

    fn rules(&self) -> ClaimRules {
        ClaimRules {
            limit: i64::try_from(self.batch_size).unwrap_or(16),
            lease_ms: ms(self.lease),
            max_attempts: i64::from(self.max_attempts),
            skip_stale: self.stale == StalePolicy::Skip,
        }
    }
}

/// What one [`Worker::process_batch`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessReport {
    /// Deliveries handed to the handler.
    pub handed_over: usize,
    /// Of those, marked done.
    pub done: usize,
    /// Of those, failed and scheduled for another attempt.
    pub retried: usize,
    /// Of those, failed for the last time and marked dead (plus those whose workers kept dying).
    pub dead: usize,
    /// Of those, whose outcome was not recorded because the lease was lost or the database
    /// failed: they will be handed over again.
    pub unrecorded: usize,
    /// Deliveries marked stale instead of being handed over.
    pub stale: usize,
    /// Deliveries claimed but handed back unstarted because the worker was stopping: their
    /// leases were released at once (the next worker takes them without waiting for the lease
    /// to expire) and the attempt was not counted.
    pub handed_back: usize,
}

impl ProcessReport {
    fn add(&mut self, outcome: Outcome) {
        crate::metrics::handled(
            match outcome {
                Outcome::Done => "done",
                Outcome::Retried => "retry",
                Outcome::Dead => "dead",
                Outcome::Unrecorded => "unrecorded",
            },
            1,
        );
        match outcome {
            Outcome::Done => self.done += 1,
            Outcome::Retried => self.retried += 1,
            Outcome::Dead => self.dead += 1,
            Outcome::Unrecorded => self.unrecorded += 1,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Done,
    Retried,
    Dead,
    Unrecorded,
}

/// Proof that a [`TxJob`] committed: only [`TxJob::complete`] makes one.
#[derive(Debug)]
#[must_use = "return it from the handler"]
pub struct Completed {
    _private: (),
}

enum JobTx {
    Sqlite(Transaction<'static, sqlx::Sqlite>),
    Postgres(Transaction<'static, sqlx::Postgres>),
}

/// A delivery handed over inside the database transaction that will mark it done.
///
/// Write your effects through [`sqlite`](Self::sqlite) or [`postgres`](Self::postgres) (tables
/// of your own in the inbox's database), then call [`complete`](Self::complete): your writes and
/// the "done" mark commit together, or not at all. Returning an error (or dropping the job)
/// rolls everything back and the delivery is retried.
pub struct TxJob {
    delivery: StoredDelivery,
    lease: Lease,
    tx: JobTx,
    /// The rest of the batch, whose leases the commit extends on SQLite, and the lease's length.
    batch: Arc<InHand>,
    lease_ms: i64,
}

impl std::fmt::Debug for TxJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxJob")
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

impl TxJob {
    /// The delivery.
    pub fn delivery(&self) -> &StoredDelivery {
        &self.delivery
    }

    /// The transaction's connection on SQLite.
    ///
    /// # Errors
    /// [`InboxError::WrongBackend`] when the inbox runs on PostgreSQL.
    pub fn sqlite(&mut self) -> Result<&mut SqliteConnection, InboxError> {
        match &mut self.tx {
            JobTx::Sqlite(tx) => Ok(&mut **tx),
            JobTx::Postgres(_) => Err(InboxError::WrongBackend {
                requested: "SQLite",
                actual: "PostgreSQL",
            }),
        }
    }

    /// The transaction's connection on PostgreSQL.
    ///
    /// # Errors
    /// [`InboxError::WrongBackend`] when the inbox runs on SQLite.
    pub fn postgres(&mut self) -> Result<&mut PgConnection, InboxError> {
        match &mut self.tx {
            JobTx::Postgres(tx) => Ok(&mut **tx),
            JobTx::Sqlite(_) => Err(InboxError::WrongBackend {
                requested: "PostgreSQL",
                actual: "SQLite",
            }),
        }
    }

    /// Marks the delivery done in this transaction and commits: your writes and the mark land
    /// together.
    ///
    /// # Errors
    /// [`InboxError::Database`] when the commit fails: nothing was recorded and the delivery will
    /// be handed over again.
    pub async fn complete(self) -> Result<Completed, InboxError> {
        match self.tx {
            JobTx::Sqlite(mut tx) => {
                // This transaction held SQLite's only write lock while the handler ran, so no
                // lease of the batch could be extended meanwhile: extend those still waiting
                // here, before the lock is released and another worker could take them.
                let waiting = self.batch.waiting_leases();
                if !waiting.is_empty() {
                    ops::sqlite::extend_on(&mut tx, &waiting, self.lease_ms).await?;
                }
                ops::sqlite::mark_done_counted(&mut tx, &self.lease).await?;
                tx.commit().await?;
            }
            JobTx::Postgres(mut tx) => {
                ops::postgres::mark_done_counted(&mut tx, &self.lease).await?;
                tx.commit().await?;
            }
        }
        Ok(Completed { _private: () })
    }
}

/// Claims due deliveries and hands them to a handler. Run as many as you like, in one process or
/// many, on one database: each delivery is handed to one worker at a time, and the deliveries of
/// one object one at a time, in `updated_on` order.
#[derive(Clone, Debug)]
pub struct Worker {
    inbox: Inbox,
    options: WorkerOptions,
    id: String,
}

impl Inbox {
    /// A worker on this inbox.
    pub fn worker(&self, options: WorkerOptions) -> Worker {
        Worker {
            inbox: self.clone(),
            options,
            id: format!("{}-{:08x}", std::process::id(), fastrand::u32(..)),
        }
    }

    /// Handles deliveries with `handler` until the process ends, with default
    /// [`WorkerOptions`]: see [`Worker::run`].
    pub async fn process<H, Fut, E>(&self, handler: H)
    where
        H: Fn(StoredDelivery) -> Fut + Send + Sync,
        Fut: Future<Output = Result<(), E>> + Send,
        E: Display,
    {
        self.worker(WorkerOptions::default())
            .run_until(handler, std::future::pending::<()>())
            .await;
    }
}

impl Worker {
    /// This worker's id, as recorded on its leases.
    pub fn id(&self) -> &str {
        &self.id
    }

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
        self.batch_plain(&handler, Stop::never()).await
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
        self.batch_in_transaction(&handler, Stop::never()).await
    }

    /// Applies retention now: removes done and stale deliveries finished more than the
    /// configured retention ago (see [`Inbox::purge_finished_before`]). Returns how many were
    /// removed (0 when retention is off).
    ///
    /// # Errors
    /// [`InboxError::Database`].
    pub async fn purge(&self) -> Result<u64, InboxError> {
        match self.options.retention {
            Some(age) => self.inbox.purge_finished_before(age).await,
            None => Ok(0),
        }
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

    /// One batch inside the database: each delivery handled in the transaction that marks it
    /// done. Leases of the deliveries still waiting for a handler are extended meanwhile (a
    /// running handler's transaction holds its own lane locked), so a handler longer than the
    /// lease never costs the rest of the batch an attempt.
    async fn batch_in_transaction<H, Fut, E>(
        &self,
        handler: &H,
        stop: Stop,
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
        let (outcomes, handed_back) = self
            .run_batch(claimed, &stop, Extend::Waiting, |claimed, batch| {
                self.handle_in_transaction(claimed, handler, batch)
            })
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
        let rules = self.options.rules();
        let (claimed, tally) = match &self.inbox.shared.backend {
            Backend::Sqlite(pool) => ops::sqlite::claim(pool, &self.id, rules).await?,
            Backend::Postgres(pool) => ops::postgres::claim(pool, &self.id, rules).await?,
        };
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
    /// batch's leases are extended, then every outcome is recorded in one transaction, so a
    /// batch costs one flush rather than one per delivery.
    async fn batch_plain<H, Fut, E>(
        &self,
        handler: &H,
        stop: Stop,
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
        let (finished, handed_back) = self
            .run_batch(claimed, &stop, Extend::Held, |claimed, _| {
                self.run_plain(claimed, handler)
            })
            .await;
        report.handed_over -= handed_back;
        report.handed_back = handed_back;
        for outcome in self.record_all(finished).await {
            report.add(outcome);
        }
        Ok(report)
    }

    /// Runs a claimed batch through `handle`, up to `concurrency` at once, extending the leases
    /// `extend` names every third of the lease. Once `stop` is set no delivery starts any more:
    /// those not started are handed back at once, while the running ones finish. Returns the
    /// handlers' results and how many deliveries were handed back.
    async fn run_batch<F, Fut, T>(
        &self,
        claimed: Vec<Claimed>,
        stop: &Stop,
        extend: Extend,
        handle: F,
    ) -> (Vec<T>, usize)
    where
        F: Fn(Claimed, Arc<InHand>) -> Fut,
        Fut: Future<Output = T>,
    {
        let in_hand = InHand::new(claimed);
        let next = stream::poll_fn(|_| Poll::Ready(in_hand.start_next(stop)));
        let work = next
            .map(|claimed| handle(claimed, Arc::clone(&in_hand)))
            .buffer_unordered(self.options.concurrency)
            .collect::<Vec<T>>();
        let leases = || match extend {
            Extend::Held => in_hand.held_leases(),
            Extend::Waiting => in_hand.waiting_leases(),
        };
        // Both in this task: the handlers keep running while the leases are extended.
        let working = async {
            tokio::select! {
                finished = work => finished,
                never = self.keep_leases(&leases) => match never {},
            }
        };
        let handing_back = async {
            stop.wait().await;
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
            Backend::Sqlite(pool) => ops::sqlite::hand_back(pool, &leases).await,
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

    async fn run_plain<H, Fut, E>(
        &self,
        claimed: Claimed,
        handler: &H,
    ) -> (Lease, Result<(), String>, tracing::Span)
    where
        H: Fn(StoredDelivery) -> Fut + Send + Sync,
        Fut: Future<Output = Result<(), E>> + Send,
        E: Display,
    {
        let span = self.span(&claimed);
        let Claimed { delivery, lease } = claimed;
        let started = std::time::Instant::now();
        let result = AssertUnwindSafe(handler(delivery))
            .catch_unwind()
            .instrument(span.clone())
            .await;
        ::metrics::histogram!(crate::metrics::HANDLER_SECONDS)
            .record(started.elapsed().as_secs_f64());
        let result = match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error_text(&error)),
            Err(_) => Err("the handler panicked".to_owned()),
        };
        if let Err(error) = &result {
            span.in_scope(|| tracing::warn!(error = error.as_str(), "handler failed"));
        }
        (lease, result, span)
    }

    /// Records outcomes in one transaction.
    async fn record_all(
        &self,
        finished: Vec<(Lease, Result<(), String>, tracing::Span)>,
    ) -> Vec<Outcome> {
        let max = i64::from(self.options.max_attempts);
        let items: Vec<ops::Finish<'_>> = finished
            .iter()
            .map(|(lease, result, _)| {
                let delay = ms(self.options.backoff.delay(lease.attempts));
                let outcome = match result {
                    Ok(()) => Ok(()),
                    Err(error) => Err((error.as_str(), max, delay)),
                };
                (lease, outcome)
            })
            .collect();
        let recorded = match &self.inbox.shared.backend {
            Backend::Sqlite(pool) => ops::sqlite::finish_many(pool, &items).await,
            Backend::Postgres(pool) => ops::postgres::finish_many(pool, &items).await,
        };
        let recorded = match recorded {
            Ok(recorded) => {
                let lost = recorded.iter().filter(|r| r.is_none()).count();
                crate::metrics::lease_expired("holder", lost as u64);
                recorded
            }
            Err(error) => {
                tracing::error!(%error, count = finished.len(),
                    "outcomes not recorded; the deliveries will be handed over again");
                vec![None; finished.len()]
            }
        };
        finished
            .iter()
            .zip(recorded)
            .map(|((_, result, span), recorded)| {
                let outcome = match (recorded, result.is_ok()) {
                    (Some(_), true) => Outcome::Done,
                    (Some(false), false) => Outcome::Retried,
                    (Some(true), false) => Outcome::Dead,
                    (None, _) => {
                        span.in_scope(|| {
                            tracing::warn!(
                                "outcome not recorded; the delivery will be handed over again"
                            )
                        });
                        Outcome::Unrecorded
                    }
                };
                span.record("outcome", outcome_name(outcome));
                outcome
            })
            .collect()
    }

    fn span(&self, claimed: &Claimed) -> tracing::Span {
        let summary = &claimed.delivery.summary;
        tracing::info_span!(
            "chip_inbox.handle",
            delivery_id = summary.id,
            event = summary.event.as_str(),
            object_id = summary.object_id.as_deref().unwrap_or(""),
            attempt = summary.attempts,
            worker = self.id.as_str(),
            outcome = tracing::field::Empty,
        )
    }

    /// Extends the leases `leases` names every third of the lease, for as long as it is
    /// polled (the batch's handlers run meanwhile; it is dropped when they are done).
    async fn keep_leases(&self, leases: &(dyn Fn() -> Vec<Lease> + Sync)) -> Infallible {
        let mut renew = tokio::time::interval(self.options.lease / 3);
        renew.tick().await;
        loop {
            renew.tick().await;
            let leases = leases();
            if leases.is_empty() {
                continue;
            }
            let lease_ms = ms(self.options.lease);
            let kept = match &self.inbox.shared.backend {
                Backend::Sqlite(pool) => ops::sqlite::extend(pool, &leases, lease_ms).await,
                Backend::Postgres(pool) => ops::postgres::extend(pool, &leases, lease_ms).await,
            };
            match kept {
                Ok(kept) if kept == leases.len() as u64 => {}
                Ok(kept) => tracing::warn!(
                    lost = leases.len() as u64 - kept,
                    "leases lost while their handlers run"
                ),
                Err(error) => tracing::warn!(%error, "leases not extended"),
            }
        }
    }

    /// Records a failed transactional handler's outcome (in its own transaction).
    async fn record(&self, lease: &Lease, result: Result<(), String>) -> Outcome {
        if let Err(error) = &result {
            tracing::warn!(error = error.as_str(), "handler failed");
        }
        let span = tracing::Span::current();
        let finished = vec![(lease.clone(), result, span)];
        self.record_all(finished)
            .await
            .pop()
            .unwrap_or(Outcome::Unrecorded)
    }

    async fn handle_in_transaction<H, Fut, E>(
        &self,
        claimed: Claimed,
        handler: &H,
        batch: Arc<InHand>,
    ) -> Outcome
    where
        H: Fn(TxJob) -> Fut + Send + Sync,
        Fut: Future<Output = Result<Completed, E>> + Send,
        E: Display,
    {
        let span = self.span(&claimed);
        async move {
            let Claimed { delivery, lease } = claimed;
            let tx = match self.begin_holding(&lease).await {
                Ok(Some(tx)) => tx,
                Ok(None) => {
                    crate::metrics::lease_expired("holder", 1);
                    tracing::warn!("lease lost before the handler started");
                    return Outcome::Unrecorded;
                }
                Err(error) => {
                    tracing::error!(%error, "could not start the handler's transaction");
                    return Outcome::Unrecorded;
                }
            };
            let job = TxJob {
                delivery,
                lease: lease.clone(),
                tx,
                batch,
                lease_ms: ms(self.options.lease),
            };
            let started = std::time::Instant::now();
            let result = AssertUnwindSafe(handler(job)).catch_unwind().await;
            ::metrics::histogram!(crate::metrics::HANDLER_SECONDS)
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(Ok(Completed { .. })) => {
                    tracing::Span::current().record("outcome", outcome_name(Outcome::Done));
                    Outcome::Done
                }
                Ok(Err(error)) => self.record(&lease, Err(error_text(&error))).await,
                Err(_) => {
                    self.record(&lease, Err("the handler panicked".to_owned()))
                        .await
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Begins the handler's transaction holding the lease's lane; `None` if the lease was lost.
    async fn begin_holding(&self, lease: &Lease) -> Result<Option<JobTx>, sqlx::Error> {
        match &self.inbox.shared.backend {
            Backend::Sqlite(pool) => {
                let mut tx = pool
                    .begin_with(<sqlx::Sqlite as Dialect>::BEGIN_WRITE)
                    .await?;
                if ops::sqlite::hold_lease(&mut tx, lease).await? {
                    Ok(Some(JobTx::Sqlite(tx)))
                } else {
                    Ok(None)
                }
            }
            Backend::Postgres(pool) => {
                let mut tx = pool
                    .begin_with(<sqlx::Postgres as Dialect>::BEGIN_WRITE)
                    .await?;
                if ops::postgres::hold_lease(&mut tx, lease).await? {
                    Ok(Some(JobTx::Postgres(tx)))
                } else {
                    Ok(None)
                }
            }
        }
    }
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Done => "done",
        Outcome::Retried => "retried",
        Outcome::Dead => "dead",
        Outcome::Unrecorded => "unrecorded",
    }
}

/// A worker's stop signal, seen by the batch in hand.
#[derive(Clone)]
struct Stop(Option<tokio::sync::watch::Receiver<bool>>);

impl Stop {
    /// A signal that never comes ([`Worker::process_batch`]).
    fn never() -> Self {
        Self(None)
    }

    fn is_set(&self) -> bool {
        self.0.as_ref().is_some_and(|receiver| *receiver.borrow())
    }

    /// Returns once the signal has come; never, if it cannot come any more.
    async fn wait(&self) {
        if let Some(receiver) = &self.0 {
            let mut receiver = receiver.clone();
            if receiver.wait_for(|stop| *stop).await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}

/// Which leases of a batch a worker extends while the batch runs.
#[derive(Clone, Copy)]
enum Extend {
    /// Every lease not handed back: handlers run outside the database and need their leases
    /// until their outcomes are recorded.
    Held,
    /// Those of deliveries not started yet: a started one's transaction holds its lane locked.
    Waiting,
}

/// A batch in hand: the deliveries not started yet, and the leases of those started.
pub(crate) struct InHand {
    waiting: Mutex<VecDeque<Claimed>>,
    started: Mutex<Vec<Lease>>,
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
    fn waiting_leases(&self) -> Vec<Lease> {
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

    /// Takes the deliveries not started yet (to hand them back).
    fn take_waiting(&self) -> Vec<Claimed> {
        lock(&self.waiting).drain(..).collect()
    }
}
