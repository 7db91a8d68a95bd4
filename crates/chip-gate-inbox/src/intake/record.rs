//! What a delivery is stored under: its columns ([`NewRecord`]), its dedup key and its lane,
//! with their parts escaped.

use aws_lc_rs::digest;
use bytes::Bytes;
use chip_gate::{Delivery, DeliveryObject, ObjectKind};

/// The columns of one delivery to store.
#[derive(Debug)]
pub(crate) struct NewRecord {
    pub(crate) dedup_key: String,
    pub(crate) lane: String,
    pub(crate) event: String,
    pub(crate) object_kind: &'static str,
    pub(crate) object_id: Option<String>,
    pub(crate) updated_on: Option<i64>,
    pub(crate) signature: String,
    pub(crate) body: Bytes,
    pub(crate) typing_problem: Option<String>,
}

impl NewRecord {
    /// The record for a delivery whose signature verified; `body` is its exact body (the bytes
    /// `delivery` was read from, shared rather than copied).
    ///
    /// The text columns are made storable as text on both databases (PostgreSQL's `text` cannot
    /// hold NUL): the key and the lane escape their parts (injective), the event, object id and
    /// typing problem show a NUL as U+FFFD. The body is kept exact either way.
    pub(crate) fn new(delivery: &Delivery, body: Bytes, signature: String) -> Self {
        let dedup_key = dedup_key(delivery);
        let object_kind = kind_name(delivery.kind());
        let object_id = delivery.object().id();
        let lane = match object_id {
            Some(id) => {
                let mut lane = String::new();
                push_key_part(&mut lane, &identity_kind(delivery));
                lane.push(':');
                push_key_part(&mut lane, id);
                lane
            }
            None => format!("delivery:{dedup_key}"),
        };
        Self {
            lane,
            event: storable_text(delivery.event().as_str()),
            object_kind,
            object_id: object_id.map(storable_text),
            updated_on: delivery.object().updated_on(),
            signature,
            body,
            typing_problem: delivery
                .typing_problem()
                .map(|problem| storable_text(&problem.to_string())),
            dedup_key,
        }
    }
}

/// The kind of object a delivery carries, for its lane: the typed kind, or, when the typed
/// model could not read the body or does not know the kind, what the raw JSON says (its `type`
/// when that is a string, `unknown` for another value, else the event's prefix), so that the
/// states of one object share a lane whether or not each fits the typed model.
fn identity_kind(delivery: &Delivery) -> String {
    match delivery.object() {
        DeliveryObject::Unknown(fields) => match fields.get("type") {
            Some(serde_json::Value::String(name)) => name.clone(),
            Some(_) => "unknown".to_owned(),
            None => match delivery.event().as_str().split('.').next() {
                Some(prefix) if !prefix.is_empty() => prefix.to_owned(),
                _ => "unknown".to_owned(),
            },
        },
        _ => kind_name(delivery.kind()).to_owned(),
    }
}

/// Text as a database text column can hold it: a NUL (which PostgreSQL's `text` cannot hold)
/// becomes U+FFFD. For columns that only show or filter; keys escape losslessly instead.
pub(crate) fn storable_text(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// Appends one part of a key, escaped so that parts never run into one another: `%` as `%25`,
/// `:` as `%3A` and NUL as `%00` (every other character as is).
fn push_key_part(key: &mut String, part: &str) {
    for c in part.chars() {
        match c {
            '%' => key.push_str("%25"),
            ':' => key.push_str("%3A"),
            '\0' => key.push_str("%00"),
            c => key.push(c),
        }
    }
}

/// The key a delivery is deduplicated on: two deliveries share it exactly when they carry the
/// same object id, event and `updated_on` (or the same body, see below).
///
/// `<object id>:<event>:<updated_on>` when the object has an id and an `updated_on`, each part
/// escaped so that the key is injective: `%` is written `%25`, `:` `%3A` and NUL `%00` (so an id
/// `a:b` with event `c` gives `a%3Ab:c:1`, apart from id `a` with event `b:c`, `a:b%3Ac:1`). CHIP's
/// ids and event names hold none of these, so their keys read as before, e.g.
/// `7a1b...:purchase.paid:1700000100`. Without `updated_on`, `<object id>:<event>:-:sha256:<hex>`;
/// without an object id, `sha256:<hex>`: the SHA-256 of the exact body, so a repeated delivery
/// (CHIP resends the same bytes) still meets its first copy, and two different bodies never
/// collapse into one. The forms have different numbers of `:`-separated parts, so they never
/// meet either.
pub fn dedup_key(delivery: &Delivery) -> String {
    let body_hash = || {
        let hash = digest::digest(&digest::SHA256, delivery.raw_body());
        let mut hex = String::with_capacity(64);
        for byte in hash.as_ref() {
            hex.push_str(&format!("{byte:02x}"));
        }
        hex
    };
    let Some(id) = delivery.object().id() else {
        return format!("sha256:{}", body_hash());
    };
    let mut key = String::with_capacity(id.len() + 40);
    push_key_part(&mut key, id);
    key.push(':');
    push_key_part(&mut key, delivery.event().as_str());
    match delivery.object().updated_on() {
        Some(updated_on) => key.push_str(&format!(":{updated_on}")),
        None => key.push_str(&format!(":-:sha256:{}", body_hash())),
    }
    key
}

/// The stored name of an object kind.
pub(crate) fn kind_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Purchase => "purchase",
        ObjectKind::Payment => "payment",
        ObjectKind::Payout => "payout",
        ObjectKind::BillingTemplateClient => "billing_template_client",
        _ => "unknown",
    }
}
