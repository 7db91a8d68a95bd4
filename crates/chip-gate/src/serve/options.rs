//! The bounds [`serve`](super::serve) applies.

use std::time::Duration;

use crate::verify::DEFAULT_MAX_BODY_BYTES;

/// The bounds [`serve`](super::serve) applies; see the [module documentation](super) for what each one does.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub(super) max_connections: usize,
    pub(super) header_timeout: Duration,
    pub(super) body_timeout: Duration,
    pub(super) max_body_bytes: usize,
    pub(super) body_budget: usize,
    pub(super) budget_wait: Duration,
    pub(super) max_header_bytes: usize,
    pub(super) drain: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_budget: 32 * 1024 * 1024,
            budget_wait: Duration::from_millis(250),
            max_header_bytes: 16 * 1024,
            drain: Duration::from_secs(10),
        }
    }
}

/// The smallest request head hyper can be limited to.
pub(super) const MIN_HEADER_BYTES: usize = 8 * 1024;

impl ServeOptions {
    /// Open connections at most (default 512; at least 1). Keep it under the process's
    /// descriptor limit (`ulimit -n`, often 1,024) minus what the app needs for its database and
    /// files. Past it, the oldest connection that is idle or still sending its request is closed.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a client may take to send a request's head, and how long an idle keep-alive
    /// connection stays open (default 5 s; at least 1 ms).
    #[must_use]
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a client may take to send a request's body, counted from the arrival of its head
    /// (default 10 s). CHIP sends a delivery of a few KiB at once.
    #[must_use]
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// The largest body of one request, in bytes (default 1 MiB, as
    /// [`Verifier::max_body_bytes`](crate::Verifier::max_body_bytes)).
    #[must_use]
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }

    /// Body bytes held at once across all requests (default 32 MiB; at least
    /// [`max_body_bytes`](Self::max_body_bytes), at most 4 GiB).
    #[must_use]
    pub fn body_budget(mut self, bytes: usize) -> Self {
        self.body_budget = bytes;
        self
    }

    /// How long a request waits for room in the body budget before it is answered `503`
    /// (default 250 ms).
    #[must_use]
    pub fn budget_wait(mut self, wait: Duration) -> Self {
        self.budget_wait = wait;
        self
    }

    /// The largest request head (request line and headers), in bytes (default 16 KiB; at least
    /// 8 KiB).
    #[must_use]
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        self.max_header_bytes = max.max(MIN_HEADER_BYTES);
        self
    }

    /// On shutdown, how long requests being answered may take to finish before their connections
    /// are closed (default 10 s).
    #[must_use]
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// The per-request cap, never above the budget, and the budget in the semaphore's units.
    pub(super) fn budget_bytes(&self) -> (usize, u32) {
        let budget = self.body_budget.max(self.max_body_bytes).max(1);
        let budget = u32::try_from(budget).unwrap_or(u32::MAX);
        let per_request = self.max_body_bytes.min(budget as usize);
        (per_request, budget)
    }
}
