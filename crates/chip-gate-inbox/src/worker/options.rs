//! A worker's settings ([`WorkerOptions`]) and the kinds they are made of.

use std::time::Duration;

#[cfg(doc)]
use super::Worker;
#[cfg(doc)]
use crate::model::StoredDelivery;
use crate::ops::ClaimRules;
#[cfg(doc)]
use crate::store::Inbox;
use crate::store::ms;

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
    /// `None`: sized to the handlers' pace ([`ClaimSize`]).
    pub(super) batch_size: Option<usize>,
    pub(super) concurrency: usize,
    pub(super) lease: Duration,
    pub(super) poll_interval: Duration,
    pub(super) max_attempts: u32,
    pub(super) backoff: Backoff,
    pub(super) stale: StalePolicy,
    pub(super) retention: Option<Duration>,
    pub(super) purge_interval: Duration,
    pub(super) gauges_interval: Option<Duration>,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            batch_size: None,
            concurrency: 8,
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
    /// How many deliveries one claim takes (at most one per object), from 1 to 1,000.
    ///
    /// By default the worker sizes each claim itself, to what its handlers got through in
    /// about a quarter of a second at the pace of its last batch: never fewer than
    /// `concurrency`, never more than 256, and 64 for its first claim. A claim costs about the
    /// same few statements whatever its size, so fast handlers drain a backlog in large claims
    /// (on PostgreSQL, with a no-op handler, claims of 256 did about 1.15 times what claims of
    /// 64 did); a worker holds its whole claim until its handlers get to it, so slow handlers
    /// take small claims and leave the rest of a backlog to other replicas.
    ///
    /// Set here, every claim takes up to `n`, whatever the handlers' pace.
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = Some(n.clamp(1, 1000));
        self
    }

    /// How many handlers run at once in this worker (default 8; always on different objects).
    /// A handler in [`Worker::run_in_transaction`] holds a pooled connection while it runs:
    /// keep this below the pool's size ([`InboxOptions::max_connections`](crate::InboxOptions::max_connections)).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long a claim lasts (default 60 s; from 100 ms to a day). A worker that dies mid-handler loses its claim after
    /// this long and another worker takes the delivery. The worker extends the lease while the
    /// handler runs (in [`Worker::run_in_transaction`] on SQLite, the handler's write lock holds
    /// it instead).
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

    /// The rules of a claim of up to `limit` deliveries.
    pub(super) fn rules(&self, limit: usize) -> ClaimRules {
        ClaimRules {
            limit: i64::try_from(limit).unwrap_or(16),
            lease_ms: ms(self.lease),
            max_attempts: i64::from(self.max_attempts),
            skip_stale: self.stale == StalePolicy::Skip,
        }
    }
}

/// The size of a worker's next claim: [`WorkerOptions::batch_size`] when set; otherwise what its
/// handlers got through in [`ClaimSize::HOLD`] at the pace of the last batch, between
/// `concurrency` and [`ClaimSize::MAX`] ([`ClaimSize::FIRST`] before any batch ran).
#[derive(Debug)]
pub(super) struct ClaimSize {
    fixed: Option<usize>,
    concurrency: usize,
    next: std::sync::atomic::AtomicUsize,
}

impl ClaimSize {
    /// The most one sized claim takes.
    pub(super) const MAX: usize = 256;
    /// A worker's first claim, before it has seen its handlers' pace.
    pub(super) const FIRST: usize = 64;
    /// How long the deliveries of a sized claim should keep the handlers busy.
    pub(super) const HOLD: Duration = Duration::from_millis(250);

    pub(super) fn new(options: &WorkerOptions) -> Self {
        let concurrency = options.concurrency.min(Self::MAX);
        Self {
            fixed: options.batch_size,
            concurrency,
            next: std::sync::atomic::AtomicUsize::new(Self::FIRST.max(concurrency)),
        }
    }

    /// How many deliveries the next claim takes.
    pub(super) fn next(&self) -> usize {
        self.fixed
            .unwrap_or_else(|| self.next.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Learns the handlers' pace from a batch whose `handled` deliveries took `elapsed`, from
    /// the first handler's start to the last one's end.
    pub(super) fn observe(&self, handled: usize, elapsed: Duration) {
        if self.fixed.is_some() || handled == 0 {
            return;
        }
        let per_hold = if elapsed.is_zero() {
            Self::MAX
        } else {
            let pace = handled as f64 / elapsed.as_secs_f64();
            // Saturating: a pace of millions a second is just "as many as allowed".
            (pace * Self::HOLD.as_secs_f64()).min(Self::MAX as f64) as usize
        };
        let size = per_hold.clamp(self.concurrency, Self::MAX);
        self.next.store(size, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_sized_to_the_handlers_pace() {
        let size = ClaimSize::new(&WorkerOptions::default());
        assert_eq!(size.next(), ClaimSize::FIRST);
        // 64 handled in 10 ms: 6,400 a second, 1,600 in a quarter second: the most.
        size.observe(64, Duration::from_millis(10));
        assert_eq!(size.next(), ClaimSize::MAX);
        // 64 in 1 s: 16 in a quarter second.
        size.observe(64, Duration::from_secs(1));
        assert_eq!(size.next(), 16);
        // Handlers of 10 s, 8 at once: never fewer than `concurrency`.
        size.observe(8, Duration::from_secs(10));
        assert_eq!(size.next(), 8);
        // Nothing handled says nothing of the pace.
        size.observe(0, Duration::from_secs(1));
        assert_eq!(size.next(), 8);
        size.observe(5, Duration::ZERO);
        assert_eq!(size.next(), ClaimSize::MAX);
    }

    #[test]
    fn a_set_batch_size_is_kept_whatever_the_pace() {
        let size = ClaimSize::new(&WorkerOptions::default().batch_size(5));
        assert_eq!(size.next(), 5);
        size.observe(1000, Duration::from_millis(1));
        assert_eq!(size.next(), 5);
        let wide = ClaimSize::new(&WorkerOptions::default().concurrency(500));
        assert_eq!(wide.next(), ClaimSize::MAX);
        wide.observe(1, Duration::from_secs(100));
        assert_eq!(wide.next(), ClaimSize::MAX);
    }
}
