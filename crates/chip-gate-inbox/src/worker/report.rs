//! What a worker did: [`ProcessReport`] per batch, and the outcome of each delivery handed over.

#[cfg(doc)]
use super::Worker;

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
    pub(super) fn add(&mut self, outcome: Outcome) {
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
pub(super) enum Outcome {
    Done,
    Retried,
    Dead,
    Unrecorded,
}

pub(super) fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Done => "done",
        Outcome::Retried => "retried",
        Outcome::Dead => "dead",
        Outcome::Unrecorded => "unrecorded",
    }
}
