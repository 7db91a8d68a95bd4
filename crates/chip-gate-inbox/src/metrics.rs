//! The inbox's metrics, through the [`metrics`](https://docs.rs/metrics) facade: install the
//! exporter you use (e.g. `metrics-exporter-prometheus`); without one they cost next to nothing.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `chip_inbox_intake_total` | counter | `outcome`: `stored`, `duplicate`, `refused` (with `reason`, as [`IntakeError::reason`](crate::IntakeError::reason)), `unavailable` | deliveries [`Intake`](crate::Intake) received, by what it answered (`unavailable`: not stored, answered `503`) |
//! | `chip_inbox_commit_batch_size` | histogram | | deliveries per intake commit (group commit) |
//! | `chip_inbox_commit_seconds` | histogram | | time to store one intake batch, commit included |
//! | `chip_inbox_deliveries` | gauge | `state`: `pending`, `retrying`, `dead`, `stale`, `done` | deliveries the database holds, set by [`Inbox::record_gauges`](crate::Inbox::record_gauges) |
//! | `chip_inbox_oldest_pending_seconds` | gauge | | age of the oldest pending delivery (0 when none), set with the above |
//! | `chip_inbox_handled_total` | counter | `outcome`: `done`, `retry`, `dead`, `stale`, `unrecorded` | deliveries a worker finished, by outcome |
//! | `chip_inbox_handler_seconds` | histogram | | time a handler took for one delivery |
//! | `chip_inbox_claim_size` | histogram | | deliveries a worker's claim took (claims that found none are not recorded) |
//! | `chip_inbox_lease_expired_total` | counter | `found_by`: `claim`, `holder` | expired leases: taken over by a claim (`claim`), or found lost by the worker that held them (`holder`) |
//!
//! The gauges come from the database, so they hold for every process sharing it: a running
//! worker sets them at most every [`WorkerOptions::gauges_interval`](crate::WorkerOptions::gauges_interval)
//! (10 s by default); an app without a worker calls [`Inbox::record_gauges`](crate::Inbox::record_gauges)
//! itself (before a scrape, say).

/// Metric (counter): deliveries the intake received, by `outcome` (`stored`, `duplicate`,
/// `refused` with a `reason`, `unavailable`).
pub const INTAKE: &str = "chip_inbox_intake_total";
/// Metric (histogram): deliveries per intake commit.
pub const COMMIT_BATCH_SIZE: &str = "chip_inbox_commit_batch_size";
/// Metric (histogram): seconds to store one intake batch, commit included.
pub const COMMIT_SECONDS: &str = "chip_inbox_commit_seconds";
/// Metric (gauge): deliveries held, by `state` (`pending`, `retrying`, `dead`, `stale`, `done`).
pub const DELIVERIES: &str = "chip_inbox_deliveries";
/// Metric (gauge): seconds since the oldest pending delivery was received (0 when none).
pub const OLDEST_PENDING_SECONDS: &str = "chip_inbox_oldest_pending_seconds";
/// Metric (counter): deliveries finished by workers, by `outcome` (`done`, `retry`, `dead`,
/// `stale`, `unrecorded`).
pub const HANDLED: &str = "chip_inbox_handled_total";
/// Metric (histogram): seconds a handler took for one delivery.
pub const HANDLER_SECONDS: &str = "chip_inbox_handler_seconds";
/// Metric (histogram): deliveries one claim took, for the claims that took any.
pub const CLAIM_SIZE: &str = "chip_inbox_claim_size";
/// Metric (counter): expired leases, by `found_by` (`claim` or `holder`).
pub const LEASE_EXPIRED: &str = "chip_inbox_lease_expired_total";

/// Counts `n` deliveries a worker finished with `outcome`.
pub(crate) fn handled(outcome: &'static str, n: usize) {
    if n > 0 {
        ::metrics::counter!(HANDLED, "outcome" => outcome).increment(n as u64);
    }
}

/// Counts `n` expired leases found by `found_by`.
pub(crate) fn lease_expired(found_by: &'static str, n: u64) {
    if n > 0 {
        ::metrics::counter!(LEASE_EXPIRED, "found_by" => found_by).increment(n);
    }
}
