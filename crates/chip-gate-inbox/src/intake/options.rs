//! An intake's settings ([`IntakeOptions`]).

use std::time::Duration;

#[cfg(doc)]
use super::Intake;
#[cfg(doc)]
use crate::store::Inbox;

/// The largest batch [`IntakeOptions::max_batch`] allows: 11 parameters a delivery stay within
/// SQLite's limit of 32,766 a statement.
const MAX_BATCH: usize = 2_000;

/// Settings for [`Intake`].
#[derive(Clone, Debug)]
pub struct IntakeOptions {
    pub(super) max_batch: usize,
    pub(super) writers: Option<usize>,
    pub(super) queue: usize,
    pub(super) max_age: Option<Duration>,
}

impl Default for IntakeOptions {
    fn default() -> Self {
        Self {
            max_batch: 256,
            writers: None,
            queue: 4096,
            max_age: None,
        }
    }
}

impl IntakeOptions {
    /// The most deliveries committed together (group commit; default 256, at most 2,000).
    /// Deliveries that arrive while a commit is under way wait for the next one, which takes all
    /// of them at once; a lone delivery is committed at once, never held back to fill a batch. `1`
    /// commits each delivery in its own transaction. (The cap keeps a SQLite batch's insert
    /// within SQLite's 32,766 parameters per statement.)
    #[must_use]
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.clamp(1, MAX_BATCH);
        self
    }

    /// How many transactions may be writing at once (default 1: one commit at a time takes
    /// everything that arrived meanwhile, the largest batches and the fewest flushes; SQLite has
    /// one writer anyway). On PostgreSQL more writers overlap their flushes, which can help on
    /// fast disks; each instance of your app has its own writers.
    #[must_use]
    pub fn writers(mut self, n: usize) -> Self {
        self.writers = Some(n.max(1));
        self
    }

    /// The oldest state a delivery may carry and still be handed over (default `None`: no limit
    /// but the [retention horizon](Inbox::retention_horizon)). A delivery whose `updated_on` is
    /// more than `max_age` before its arrival is stored, answered `200`, recorded as stale and
    /// [expired](crate::Counts::expired), and never handed over on its own (an operator's
    /// [`Inbox::replay`] hands it over).
    ///
    /// Set it (7 days, say: CHIP retries for 36 hours) when the inbox cannot remember everything
    /// handled before it: a new inbox on an account with a history (deliveries handled by a
    /// previous receiver), or a database restored or reset. There, a captured delivery older than
    /// the inbox itself would otherwise be new to it, and handed over.
    #[must_use]
    pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }

    /// How many verified deliveries may wait for a commit before new ones wait to be queued
    /// (default 4,096).
    #[must_use]
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n.max(1);
        self
    }
}
