//! Processing: workers claim due deliveries under a lease, hand them to your handler, and record
//! the outcome.

mod batch;
mod handle;
mod options;
mod report;
mod run;
mod tx_job;

use std::fmt::Display;
use std::future::Future;

use crate::error::InboxError;
use crate::model::StoredDelivery;
use crate::store::Inbox;

pub(crate) use batch::InHand;
pub use options::{Backoff, MIN_RETENTION, StalePolicy, WorkerOptions};
pub use report::ProcessReport;
pub use tx_job::{Completed, TxJob};

/// Claims due deliveries and hands them to a handler. Run as many as you like, in one process or
/// many, on one database: each delivery is handed to one worker at a time, and the deliveries of
/// one object one at a time, in `updated_on` order.
#[derive(Clone, Debug)]
pub struct Worker {
    inbox: Inbox,
    options: WorkerOptions,
    id: String,
    /// The size of the next claim (shared by the clones of this worker).
    claim_size: std::sync::Arc<options::ClaimSize>,
}

impl Inbox {
    /// A worker on this inbox.
    pub fn worker(&self, options: WorkerOptions) -> Worker {
        Worker {
            inbox: self.clone(),
            claim_size: std::sync::Arc::new(options::ClaimSize::new(&options)),
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
}
