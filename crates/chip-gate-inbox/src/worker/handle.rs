//! Handling one delivery, plainly or inside the transaction that marks it done, and recording
//! the outcomes.

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use tracing::Instrument;

use super::report::{Outcome, outcome_name};
use super::tx_job::{JobTx, PgJobTx};
use super::{Completed, InHand, TxJob, Worker};
use crate::error::error_text;
use crate::model::StoredDelivery;
use crate::ops::{self, Claimed, Lease};
use crate::store::{Backend, Dialect, ms};

impl Worker {
    pub(super) async fn run_plain<H, Fut, E>(
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
    pub(super) async fn record_all(
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
            Backend::Sqlite(pool) => {
                let _turn = self.inbox.shared.sqlite_turn().await;
                ops::sqlite::finish_many(pool, &items).await
            }
            Backend::Postgres(pool) => ops::postgres::finish_set(pool, &items).await,
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

    pub(super) async fn handle_in_transaction<H, Fut, E>(
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
            let tx = match self.begin_holding(&lease, &batch).await {
                Ok(Some(tx)) => tx,
                Ok(None) => {
                    crate::metrics::lease_expired("holder", 1);
                    tracing::warn!("lease lost before the handler started");
                    return Outcome::Unrecorded;
                }
                Err(error) => {
                    tracing::error!(%error, "could not start the handler's transaction");
                    // Its lease is no longer extended: it expires, and the delivery is retried.
                    batch.finished(&[lease.delivery_id]);
                    return Outcome::Unrecorded;
                }
            };
            let in_hand = Arc::clone(&batch);
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
            let outcome = match result {
                Ok(Ok(Completed { .. })) => {
                    tracing::Span::current().record("outcome", outcome_name(Outcome::Done));
                    Outcome::Done
                }
                Ok(Err(error)) => self.record(&lease, Err(error_text(&error))).await,
                Err(_) => {
                    self.record(&lease, Err("the handler panicked".to_owned()))
                        .await
                }
            };
            // Committed or recorded (or lost): no more lease to extend for this one.
            in_hand.finished(&[lease.delivery_id]);
            outcome
        }
        .instrument(span)
        .await
    }

    /// Begins the handler's transaction; `None` if the lease was lost.
    ///
    /// On SQLite the transaction holds the only write lock from its start, and checks the lease
    /// first. On PostgreSQL it takes no lock before the handler's own statements: the done mark
    /// locks the lane and checks the lease's token at the end (see [`TxJob::complete`]), and the
    /// batch extends the lease meanwhile, as it does for plain handlers. Locking the lane at the
    /// start too cost a statement and a round trip on every job.
    async fn begin_holding(
        &self,
        lease: &Lease,
        batch: &Arc<InHand>,
    ) -> Result<Option<JobTx>, sqlx::Error> {
        match &self.inbox.shared.backend {
            Backend::Sqlite(pool) => {
                // Held until the handler's transaction ends (see `JobTx::Sqlite`).
                let turn = self.inbox.shared.sqlite_turn().await;
                let mut tx = pool
                    .begin_with(<sqlx::Sqlite as Dialect>::BEGIN_WRITE)
                    .await?;
                if ops::sqlite::hold_lease(&mut tx, lease).await? {
                    Ok(Some(JobTx::Sqlite(tx, turn)))
                } else {
                    Ok(None)
                }
            }
            Backend::Postgres(pool) => Ok(Some(JobTx::Postgres(
                PgJobTx::begin(pool, Arc::clone(batch)).await?,
            ))),
        }
    }
}
