//! The mock's state: the stored webhooks in its own model (never the generated types, so a new
//! field in the spec cannot break the mock), and how one reads as JSON in each [`Variant`].

use std::collections::{BTreeMap, HashMap};

use chip_gate_api::types::EventName;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::Variant;
use crate::keys::SigningKey;

/// A stored webhook and its private key.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pub(crate) id: Uuid,
    pub(crate) title: String,
    pub(crate) all_events: bool,
    /// Never empty: create and PUT require at least one event, PATCH cannot empty it.
    pub(crate) events: Vec<EventName>,
    pub(crate) callback: String,
    pub(crate) created_on: i64,
    pub(crate) updated_on: i64,
    pub(crate) key: SigningKey,
}

impl Webhook {
    /// Whether a delivery of `event` goes to this webhook.
    pub(crate) fn receives(&self, event: &EventName) -> bool {
        self.all_events || self.events.iter().any(|e| e == event)
    }

    /// The webhook as the API answers it.
    ///
    /// Documented: every field CHIP's examples show. Variations: only what CHIP's schema requires
    /// plus `id` and `public_key`; `all_events` only when true; `events` null when it is true.
    pub(crate) fn to_json(&self, variant: Variant) -> Value {
        let events: Vec<&str> = self.events.iter().map(EventName::as_str).collect();
        let mut out = Map::new();
        if variant == Variant::Documented {
            out.insert("type".into(), json!("webhook"));
        }
        out.insert("id".into(), json!(self.id));
        if variant == Variant::Documented {
            out.insert("created_on".into(), json!(self.created_on));
            out.insert("updated_on".into(), json!(self.updated_on));
        }
        out.insert("title".into(), json!(self.title));
        if variant == Variant::Documented || self.all_events {
            out.insert("all_events".into(), json!(self.all_events));
        }
        if variant == Variant::Documented || !self.all_events {
            out.insert("events".into(), json!(events));
        } else {
            out.insert("events".into(), Value::Null);
        }
        out.insert("callback".into(), json!(self.callback));
        out.insert("public_key".into(), json!(self.key.public_pem()));
        Value::Object(out)
    }
}

/// The webhooks of one mock, in creation order.
#[derive(Debug, Default)]
pub(crate) struct Store {
    by_id: HashMap<Uuid, (u64, Webhook)>,
    order: BTreeMap<u64, Uuid>,
    seq: u64,
}

impl Store {
    pub(crate) fn insert(&mut self, webhook: Webhook) {
        self.seq += 1;
        let id = webhook.id;
        self.order.insert(self.seq, id);
        self.by_id.insert(id, (self.seq, webhook));
    }

    pub(crate) fn get(&self, id: &Uuid) -> Option<&Webhook> {
        self.by_id.get(id).map(|(_, s)| s)
    }

    pub(crate) fn get_mut(&mut self, id: &Uuid) -> Option<&mut Webhook> {
        self.by_id.get_mut(id).map(|(_, s)| s)
    }

    pub(crate) fn remove(&mut self, id: &Uuid) -> Option<Webhook> {
        let (seq, stored) = self.by_id.remove(id)?;
        self.order.remove(&seq);
        Some(stored)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn clear(&mut self) {
        self.by_id.clear();
        self.order.clear();
    }

    /// All webhooks in creation order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Webhook> {
        self.order
            .values()
            .filter_map(|id| self.by_id.get(id).map(|(_, s)| s))
    }
}
