//! What the inbox stores and reports.

use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;
use chip_gate::{Delivery, EventName};
use serde::Serialize;

use crate::store::system_time;

/// Where a stored delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeliveryState {
    /// Waiting to be handled (or being handled under a lease, or waiting for a retry).
    Pending,
    /// Handled: the handler succeeded and the mark committed.
    Done,
    /// Not handed over: a delivery of the same object with a later `updated_on` was handled
    /// first (see [`StalePolicy`](crate::StalePolicy)).
    Stale,
    /// The handler failed on every allowed attempt. Kept until you retry it
    /// ([`Inbox::retry`](crate::Inbox::retry)); retention never removes it.
    Dead,
}

impl DeliveryState {
    /// The stored name: `pending`, `done`, `stale` or `dead`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Done => "done",
            DeliveryState::Stale => "stale",
            DeliveryState::Dead => "dead",
        }
    }

    /// The state named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(DeliveryState::Pending),
            "done" => Some(DeliveryState::Done),
            "stale" => Some(DeliveryState::Stale),
            "dead" => Some(DeliveryState::Dead),
            _ => None,
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One stored delivery without its body: what `list` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeliverySummary {
    /// The delivery's id in the inbox.
    pub id: i64,
    /// The key it is deduplicated on (see [`dedup_key`](crate::dedup_key)).
    pub dedup_key: String,
    /// The event name as received (`event_type`).
    pub event: String,
    /// The object kind: `purchase`, `payment`, `payout`, `billing_template_client` or `unknown`.
    pub object_kind: String,
    /// The object's id, when it has one.
    pub object_id: Option<String>,
    /// The object's `updated_on` (Unix seconds), when it has one.
    pub updated_on: Option<i64>,
    /// Where it stands.
    pub state: DeliveryState,
    /// How many times it was handed to a handler.
    pub attempts: i64,
    /// How many more times CHIP delivered it (each recorded, none stored again).
    pub duplicates: i64,
    /// When it was stored (Unix milliseconds).
    pub received_at_ms: i64,
    /// When it is next due (Unix milliseconds), while pending.
    pub next_attempt_at_ms: i64,
    /// When it became done, stale or dead (Unix milliseconds).
    pub finished_at_ms: Option<i64>,
    /// The handler's last error, or why the delivery was not handed over, if any (one line, at
    /// most 1,000 characters).
    pub last_error: Option<String>,
    /// What the typed model could not read in the body, if anything (the body is stored as
    /// received either way).
    pub typing_problem: Option<String>,
}

impl DeliverySummary {
    /// When it was stored.
    pub fn received_at(&self) -> SystemTime {
        system_time(self.received_at_ms)
    }
}

/// A stored delivery with its exact body and signature, as a handler receives it.
///
/// Its `Debug` output never shows the body (deliveries carry customers' names, emails and bank
/// details).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StoredDelivery {
    /// Everything but the body.
    #[serde(flatten)]
    pub summary: DeliverySummary,
    /// The `X-Signature` value it arrived with (it verified then; it verifies the body forever).
    pub signature: String,
    /// The exact bytes received.
    #[serde(skip)]
    pub body: Bytes,
    /// Whether this delivery is older than one already handled for the same object: only ever
    /// `true` with [`StalePolicy::Deliver`](crate::StalePolicy::Deliver).
    pub stale: bool,
}

impl fmt::Debug for StoredDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredDelivery")
            .field("id", &self.summary.id)
            .field("dedup_key", &self.summary.dedup_key)
            .field("event", &self.summary.event)
            .field("state", &self.summary.state)
            .field("attempts", &self.summary.attempts)
            .field("body_len", &self.body.len())
            .field("stale", &self.stale)
            .finish_non_exhaustive()
    }
}

impl StoredDelivery {
    /// The delivery's id in the inbox.
    pub fn id(&self) -> i64 {
        self.summary.id
    }

    /// The dedup key: hand it to your own systems as an idempotency key when your effects live
    /// outside the inbox's database.
    pub fn dedup_key(&self) -> &str {
        &self.summary.dedup_key
    }

    /// The event.
    pub fn event(&self) -> EventName {
        EventName::from(self.summary.event.clone())
    }

    /// Which attempt this is (1 for the first).
    pub fn attempt(&self) -> i64 {
        self.summary.attempts
    }

    /// The typed delivery, read again from the stored bytes (they verified when received). Never
    /// fails: what the typed model cannot read is kept raw, see
    /// [`Delivery::typing_problem`].
    pub fn delivery(&self) -> Delivery {
        Delivery::from_verified(self.body.clone())
    }
}

/// The inbox's counts since it was created. They are kept in the database, committed with the
/// changes they count, so they are exact across restarts and processes: export them as counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Counts {
    /// Deliveries stored (each distinct dedup key once).
    pub received: u64,
    /// Deliveries answered 2xx and recorded as repeats of one already stored.
    pub duplicates: u64,
    /// Deliveries marked stale: older than one already handled for the same object, or stored
    /// at or below the retention horizon (those are also in [`expired`](Self::expired)).
    pub stale: u64,
    /// Of the stale, deliveries stored with an `updated_on` at or below the retention horizon
    /// (see [`Inbox::retention_horizon`](crate::Inbox::retention_horizon)): possibly copies of
    /// deliveries handled and removed since, so never handed over on their own. A few mean CHIP
    /// sent a very old state; many mean someone is replaying captured deliveries.
    pub expired: u64,
    /// Deliveries handled.
    pub done: u64,
    /// Failed attempts scheduled for another try.
    pub retried: u64,
    /// Deliveries that failed every allowed attempt.
    pub dead: u64,
}

/// [`Counts`] and what is in the store now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct InboxStatus {
    /// Counts since the inbox was created.
    pub counts: Counts,
    /// Deliveries pending now (including those under a lease or waiting for a retry).
    pub pending: u64,
    /// Deliveries being handled now (under a live lease).
    pub leased: u64,
    /// Dead deliveries kept now.
    pub dead: u64,
    /// Done and stale deliveries kept now (until retention removes them).
    pub finished: u64,
    /// When the oldest pending delivery was stored (Unix milliseconds), if any: a growing age
    /// means the workers are not keeping up.
    pub oldest_pending_received_at_ms: Option<i64>,
}

/// Which deliveries [`Inbox::list`](crate::Inbox::list) returns, newest first.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub(crate) state: Option<DeliveryState>,
    pub(crate) object_id: Option<String>,
    pub(crate) before_id: Option<i64>,
    pub(crate) limit: Option<u32>,
}

impl ListFilter {
    /// Every delivery (the latest 50 unless [`limit`](Self::limit) says otherwise).
    pub fn new() -> Self {
        Self::default()
    }

    /// Only deliveries in this state.
    #[must_use]
    pub fn state(mut self, state: DeliveryState) -> Self {
        self.state = Some(state);
        self
    }

    /// Only deliveries of this object.
    #[must_use]
    pub fn object_id(mut self, id: impl Into<String>) -> Self {
        // As stored: a NUL shows as U+FFFD.
        self.object_id = Some(crate::intake::storable_text(&id.into()));
        self
    }

    /// Only deliveries with an id below this one (the next page after the last id shown).
    #[must_use]
    pub fn before_id(mut self, id: i64) -> Self {
        self.before_id = Some(id);
        self
    }

    /// At most this many (default 50, at most 1,000).
    #[must_use]
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit.clamp(1, 1000));
        self
    }
}
