//! Operating the inbox: counts, status, list, show, retry, replay, retention. The library API
//! behind `chip inbox status | list | show | retry | replay`.

use std::time::Duration;

use crate::error::InboxError;
use crate::model::{
    Counts, DeliveryState, DeliverySummary, InboxStatus, ListFilter, StoredDelivery,
};
use crate::ops;
use crate::store::{
    Backend, DEAD, DONE, DUPLICATES, EXPIRED, Inbox, RECEIVED, RETRIED, STALE, ms, now_ms,
};

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Inbox {
    /// The counts since the inbox was created: received, duplicates, stale, done, retried, dead.
    ///
    /// # Errors
    /// [`InboxError::Database`].
    pub async fn counts(&self) -> Result<Counts, InboxError> {
        let rows = match &self.shared.backend {
            Backend::Sqlite(pool) => ops::sqlite::counts(pool).await?,
            Backend::Postgres(pool) => ops::postgres::counts(pool).await?,
        };
        let mut counts = Counts::default();
        for (name, value) in rows {
            let slot = match name.as_str() {
                RECEIVED => &mut counts.received,
                DUPLICATES => &mut counts.duplicates,
                STALE => &mut counts.stale,
                DONE => &mut counts.done,
                RETRIED => &mut counts.retried,
                DEAD => &mut counts.dead,
                EXPIRED => &mut counts.expired,
                _ => continue,
            };
            *slot = count(value);
        }
        Ok(counts)
    }

    /// The counts and what the store holds now.
    ///
    /// # Errors
    /// [`InboxError::Database`].
    pub async fn status(&self) -> Result<InboxStatus, InboxError> {
        let counts = self.counts().await?;
        let (pending, leased, dead, finished, oldest) = match &self.shared.backend {
            Backend::Sqlite(pool) => ops::sqlite::gauges(pool).await?,
            Backend::Postgres(pool) => ops::postgres::gauges(pool).await?,
        };
        Ok(InboxStatus {
            counts,
            pending: count(pending),
            leased: count(leased),
            dead: count(dead),
            finished: count(finished),
            oldest_pending_received_at_ms: oldest,
        })
    }

    /// Sets the [metrics](crate::metrics) that come from the database: the gauges
    /// `chip_inbox_deliveries{state}` (`pending`: not yet failed; `retrying`: pending again
    /// after a failed attempt, waiting for the next one or being handled; `dead`; `stale`;
    /// `done`) and `chip_inbox_oldest_pending_seconds` (0 when nothing is pending). One
    /// statement of indexed counts; they hold for every process sharing the database.
    ///
    /// A running [`Worker`](crate::Worker) calls it every
    /// [`WorkerOptions::gauges_interval`](crate::WorkerOptions::gauges_interval); call it yourself
    /// in an app that runs no worker, before a scrape for instance.
    ///
    /// # Errors
    /// [`InboxError::Database`] (the gauges keep their previous values).
    pub async fn record_gauges(&self) -> Result<(), InboxError> {
        self.ensure_schema().await?;
        let (states, oldest) = match &self.shared.backend {
            Backend::Sqlite(pool) => ops::sqlite::state_gauges(pool).await?,
            Backend::Postgres(pool) => ops::postgres::state_gauges(pool).await?,
        };
        for (state, value) in ["pending", "retrying", "dead", "stale", "done"]
            .into_iter()
            .zip(states)
        {
            ::metrics::gauge!(crate::metrics::DELIVERIES, "state" => state).set(value as f64);
        }
        let age_ms = oldest.map_or(0, |received| now_ms().saturating_sub(received).max(0));
        ::metrics::gauge!(crate::metrics::OLDEST_PENDING_SECONDS).set(age_ms as f64 / 1000.0);
        Ok(())
    }

    /// Stored deliveries, newest first, without their bodies.
    ///
    /// # Errors
    /// [`InboxError::Database`].
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<DeliverySummary>, InboxError> {
        let state = filter.state.map(DeliveryState::as_str);
        let object_id = filter.object_id.as_deref();
        let limit = i64::from(filter.limit.unwrap_or(50));
        Ok(match &self.shared.backend {
            Backend::Sqlite(pool) => {
                ops::sqlite::list(pool, state, object_id, filter.before_id, limit).await?
            }
            Backend::Postgres(pool) => {
                ops::postgres::list(pool, state, object_id, filter.before_id, limit).await?
            }
        })
    }

    /// One stored delivery with its body and signature.
    ///
    /// # Errors
    /// [`InboxError::NotFound`] or [`InboxError::Database`].
    pub async fn get(&self, id: i64) -> Result<StoredDelivery, InboxError> {
        let found = match &self.shared.backend {
            Backend::Sqlite(pool) => ops::sqlite::get(pool, id).await?,
            Backend::Postgres(pool) => ops::postgres::get(pool, id).await?,
        };
        found.ok_or(InboxError::NotFound(id))
    }

    /// Makes a dead delivery pending again, due now, with a fresh set of attempts (after you fixed
    /// what made the handler fail). The usual order and stale rules apply.
    ///
    /// # Errors
    /// [`InboxError::NotFound`], [`InboxError::InvalidState`] when it is not dead, or
    /// [`InboxError::Database`].
    pub async fn retry(&self, id: i64) -> Result<(), InboxError> {
        self.requeue(
            id,
            &[DeliveryState::Dead],
            false,
            "only a dead delivery can be retried",
        )
        .await
    }

    /// Hands a delivery over again, whatever its state but pending: done, stale or dead. It skips
    /// the stale check once, so the handler sees it even if newer ones were handled (your handler
    /// decides; with [`StoredDelivery::dedup_key`] it can tell it has seen it).
    ///
    /// # Errors
    /// [`InboxError::NotFound`], [`InboxError::InvalidState`] when it is pending, or
    /// [`InboxError::Database`].
    pub async fn replay(&self, id: i64) -> Result<(), InboxError> {
        self.requeue(
            id,
            &[
                DeliveryState::Done,
                DeliveryState::Stale,
                DeliveryState::Dead,
            ],
            true,
            "it is pending already",
        )
        .await
    }

    async fn requeue(
        &self,
        id: i64,
        from: &[DeliveryState],
        replay: bool,
        wanted: &'static str,
    ) -> Result<(), InboxError> {
        let result = match &self.shared.backend {
            Backend::Sqlite(pool) => ops::sqlite::requeue(pool, id, from, replay).await?,
            Backend::Postgres(pool) => ops::postgres::requeue(pool, id, from, replay).await?,
        };
        match result {
            None => Err(InboxError::NotFound(id)),
            Some((_, true)) => {
                self.shared.stored.notify_waiters();
                Ok(())
            }
            Some((state, false)) => Err(InboxError::InvalidState {
                id,
                state: state.to_string(),
                wanted,
            }),
        }
    }

    /// The retention horizon: the newest `updated_on` (Unix seconds) among the deliveries
    /// retention removed, `None` while it removed none. A delivery stored with an `updated_on`
    /// at or below it is recorded as stale ([`Counts::expired`]) and not handed over, since the
    /// inbox may no longer remember handling it.
    ///
    /// # Errors
    /// [`InboxError::Database`].
    pub async fn retention_horizon(&self) -> Result<Option<i64>, InboxError> {
        Ok(match &self.shared.backend {
            Backend::Sqlite(pool) => ops::sqlite::horizon(pool).await?,
            Backend::Postgres(pool) => ops::postgres::horizon(pool).await?,
        })
    }

    /// Removes done and stale deliveries that finished more than `age` ago (any age, unlike a
    /// worker's retention, which keeps at least [`MIN_RETENTION`](crate::MIN_RETENTION)). Dead and
    /// pending ones are never removed, nor ones without an `updated_on` (only their stored copy
    /// recognises a repeat; CHIP's objects all have one). Returns how many were removed.
    ///
    /// The inbox then no longer remembers them, so it first raises its
    /// [retention horizon](Self::retention_horizon) to the newest `updated_on` removed: any
    /// delivery stored afterwards at or below it (a copy of a removed one, or a state CHIP sends
    /// that late) is recorded as stale and expired, and not handed over. So a short `age`
    /// (below CHIP's 36 hours of retries) makes CHIP's own late retries expire too.
    ///
    /// # Errors
    /// [`InboxError::Database`].
    pub async fn purge_finished_before(&self, age: Duration) -> Result<u64, InboxError> {
        self.purge_finished_before_unless(age, &std::sync::atomic::AtomicBool::new(false))
            .await
    }

    /// [`purge_finished_before`](Self::purge_finished_before), ending after the chunk under way
    /// once `stop` is set (a worker's purge, when the worker stops).
    pub(crate) async fn purge_finished_before_unless(
        &self,
        age: Duration,
        stop: &std::sync::atomic::AtomicBool,
    ) -> Result<u64, InboxError> {
        self.ensure_schema().await?;
        let cutoff = now_ms().saturating_sub(ms(age));
        Ok(match &self.shared.backend {
            Backend::Sqlite(pool) => ops::sqlite::purge(pool, cutoff, stop).await?,
            Backend::Postgres(pool) => ops::postgres::purge(pool, cutoff, stop).await?,
        })
    }
}
