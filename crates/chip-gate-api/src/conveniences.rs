//! Hand-written reading helpers on generated types, for fields CHIP may leave out.

use crate::types::{EventName, Webhook};

impl Webhook {
    /// The events this webhook lists: empty when CHIP sent `events` as null or left it out (as it
    /// may for an all-events webhook; check [`all_events`](Webhook::all_events) for that).
    pub fn event_names(&self) -> &[EventName] {
        self.events.as_deref().unwrap_or_default()
    }

    /// Whether a delivery of `event` goes to this webhook: it receives every event, or lists this one.
    pub fn receives(&self, event: &EventName) -> bool {
        self.all_events || self.event_names().contains(event)
    }
}
