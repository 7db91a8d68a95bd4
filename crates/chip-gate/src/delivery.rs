//! Typed webhook deliveries, parsed only after the signature is verified.
//!
//! A CHIP Collect delivery is a flat JSON snapshot of an object (a Purchase, a Payment, a Payout or
//! a BillingTemplateClient) plus one extra top-level field, `event_type`. [`Delivery`] holds the
//! event, the typed object and the exact bytes received.
//!
//! The typed structs cover what CHIP documents. Every field is an `Option` because CHIP sends many
//! `null`s and adds or drops fields over time; fields the structs do not know, and known fields that
//! arrived as `null`, are kept in each struct's `extra` map, so re-serializing a delivery gives back
//! the same JSON (same fields, same values) that was received. Amounts are integers in minor units
//! (cents, sen); `quantity` and `tax_percent` are decimal strings such as `"1.0000"` and `"0.00"`.
//!
//! ```
//! use chip_gate::delivery::{Delivery, DeliveryObject};
//! use chip_gate::EventName;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let pem = include_str!("../tests/fixtures/chip-collect/signed-vector/public_key.pem");
//! # let body = include_bytes!("../tests/fixtures/chip-collect/signed-vector/body.json");
//! # let signature = include_str!("../tests/fixtures/chip-collect/signed-vector/x-signature.txt");
//! let verifier = chip_gate::Verifier::from_pem(pem)?;
//! let delivery: Delivery = verifier.verify_and_parse(body.as_slice(), signature)?;
//! assert_eq!(delivery.event(), &EventName::PurchaseCreated);
//! if let DeliveryObject::Purchase(purchase) = delivery.object() {
//!     let total = purchase.purchase.as_ref().and_then(|details| details.total);
//!     assert_eq!(total, Some(100)); // minor units
//! }
//! # Ok(())
//! # }
//! ```

use std::fmt;

use bytes::Bytes;
use serde::ser::Error as _;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::objects::typed;
pub use crate::objects::{
    BillingTemplateClient, ClientDetails, JsonMap, Payment, PaymentDetails, Payout, Product,
    Purchase, PurchaseDetails, RelatedObject, StatusChange, TransactionData,
};
use chip_gate_api::types::EventName;

/// Why a (verified) body could not be parsed as a delivery. Carries positions and field paths only,
/// never values from the body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The body is not valid JSON.
    #[error("the body is not valid JSON (line {line}, column {column})")]
    NotJson {
        /// 1-based line of the first error.
        line: usize,
        /// 1-based column of the first error.
        column: usize,
    },
    /// The body is JSON but not an object.
    #[error("the body is JSON but not an object")]
    NotAnObject,
    /// The object has no `event_type` field.
    #[error("the delivery has no `event_type` field")]
    MissingEventType,
    /// A field has a type that CHIP does not document for it.
    #[error("field `{path}` has an unexpected type")]
    InvalidField {
        /// Where the field is, e.g. `purchase.products.price`.
        path: String,
    },
}

/// Which kind of object a delivery carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A [`Purchase`].
    Purchase,
    /// A [`Payment`].
    Payment,
    /// A [`Payout`].
    Payout,
    /// A [`BillingTemplateClient`].
    BillingTemplateClient,
    /// An object type this version does not know.
    Unknown,
}

impl ObjectKind {
    /// The kind named by a `type` value, falling back to the event's prefix when there is none.
    fn detect(type_field: Option<&Value>, event: &EventName) -> Self {
        let name = match type_field {
            Some(Value::String(name)) => name.as_str(),
            Some(_) => return ObjectKind::Unknown,
            None => event.as_str().split('.').next().unwrap_or(""),
        };
        match name {
            "purchase" => ObjectKind::Purchase,
            "payment" => ObjectKind::Payment,
            "payout" => ObjectKind::Payout,
            "billing_template_client" => ObjectKind::BillingTemplateClient,
            _ => ObjectKind::Unknown,
        }
    }
}

/// The object a delivery carries, typed by kind.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum DeliveryObject {
    /// `purchase.*` events.
    Purchase(Box<Purchase>),
    /// `payment.*` events.
    Payment(Box<Payment>),
    /// `payout.*` events.
    Payout(Box<Payout>),
    /// `billing_template_client.*` events.
    BillingTemplateClient(Box<BillingTemplateClient>),
    /// An object type this version does not know, as received (without `event_type`).
    Unknown(JsonMap),
}

impl DeliveryObject {
    /// The kind of object.
    pub fn kind(&self) -> ObjectKind {
        match self {
            DeliveryObject::Purchase(_) => ObjectKind::Purchase,
            DeliveryObject::Payment(_) => ObjectKind::Payment,
            DeliveryObject::Payout(_) => ObjectKind::Payout,
            DeliveryObject::BillingTemplateClient(_) => ObjectKind::BillingTemplateClient,
            DeliveryObject::Unknown(_) => ObjectKind::Unknown,
        }
    }

    /// The object's id, when it has one.
    pub fn id(&self) -> Option<&str> {
        match self {
            DeliveryObject::Purchase(object) => object.id.as_deref(),
            DeliveryObject::Payment(object) => object.id.as_deref(),
            DeliveryObject::Payout(object) => object.id.as_deref(),
            DeliveryObject::BillingTemplateClient(object) => object.id.as_deref(),
            DeliveryObject::Unknown(map) => map.get("id").and_then(Value::as_str),
        }
    }

    /// The object's `updated_on` (Unix seconds), when it has one.
    pub fn updated_on(&self) -> Option<i64> {
        match self {
            DeliveryObject::Purchase(object) => object.updated_on,
            DeliveryObject::Payment(object) => object.updated_on,
            DeliveryObject::Payout(object) => object.updated_on,
            DeliveryObject::BillingTemplateClient(object) => object.updated_on,
            DeliveryObject::Unknown(map) => map.get("updated_on").and_then(Value::as_i64),
        }
    }
}

impl Serialize for DeliveryObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            DeliveryObject::Purchase(object) => object.serialize(serializer),
            DeliveryObject::Payment(object) => object.serialize(serializer),
            DeliveryObject::Payout(object) => object.serialize(serializer),
            DeliveryObject::BillingTemplateClient(object) => object.serialize(serializer),
            DeliveryObject::Unknown(map) => map.serialize(serializer),
        }
    }
}

/// The key to deduplicate deliveries on: CHIP delivers at least once, so the same
/// (object id, event, `updated_on`) can arrive more than once.
///
/// Its `Display` form, `<id>:<event>:<updated_on>` (`-` when `updated_on` is absent), is a handy
/// database key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DedupKey {
    /// The object's id.
    pub object_id: String,
    /// The event.
    pub event: EventName,
    /// The object's `updated_on`, when present.
    pub updated_on: Option<i64>,
}

impl fmt::Display for DedupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.updated_on {
            Some(updated_on) => write!(f, "{}:{}:{}", self.object_id, self.event, updated_on),
            None => write!(f, "{}:{}:-", self.object_id, self.event),
        }
    }
}

/// A webhook delivery: the event, the typed object, and the exact body received.
///
/// Build one with [`Verifier::verify_and_parse`](crate::Verifier::verify_and_parse) (or
/// [`Verifier::verify_headers_and_parse`](crate::Verifier::verify_headers_and_parse)), which
/// parses only after the signature verified; [`Delivery::parse_unverified`] exists for fixtures and
/// bodies already verified elsewhere. `Serialize` writes the object back with its `event_type`:
/// the same fields and values as the body received.
///
/// # A verified delivery is never refused
///
/// A body whose signature verified is CHIP's. If these types cannot read it (a field of a type CHIP
/// does not document, no `event_type`, not even JSON), refusing it would make CHIP retry for 36
/// hours and then drop it. So the verifying calls still return the delivery: its
/// [`object`](Self::object) is then [`DeliveryObject::Unknown`] with every field as received, its
/// [`raw_body`](Self::raw_body) holds the exact bytes, and [`typing_problem`](Self::typing_problem)
/// says what could not be read. Store it, acknowledge it, and look at it later.
///
/// Its `Debug` output shows the event, the object kind and id, the body length and any typing
/// problem, never the body: deliveries carry customers' names, emails and bank details.
#[derive(Clone, PartialEq)]
pub struct Delivery {
    event: EventName,
    object: DeliveryObject,
    raw: Bytes,
    problem: Option<DeliveryError>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("event", &self.event.as_str())
            .field("kind", &self.kind())
            .field("object_id", &self.object.id())
            .field("body_len", &self.raw.len())
            .field("typing_problem", &self.problem)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// Reads a body whose signature has been verified, never failing: what the types cannot read is
    /// kept as received and named by [`typing_problem`](Self::typing_problem). A body without a
    /// usable `event_type` gets [`EventName::Unknown`] with an empty name.
    pub fn from_verified(body: impl Into<Bytes>) -> Self {
        let raw: Bytes = body.into();
        let map = match serde_json::from_slice::<Value>(&raw) {
            Ok(Value::Object(map)) => map,
            Ok(_) => return Self::untyped(raw, JsonMap::new(), DeliveryError::NotAnObject),
            Err(error) => {
                let problem = DeliveryError::NotJson {
                    line: error.line(),
                    column: error.column(),
                };
                return Self::untyped(raw, JsonMap::new(), problem);
            }
        };
        let event = match map.get("event_type") {
            Some(Value::String(name)) => EventName::from(name.clone()),
            Some(_) => {
                let problem = DeliveryError::InvalidField {
                    path: "event_type".to_owned(),
                };
                return Self::untyped(raw, map, problem);
            }
            None => return Self::untyped(raw, map, DeliveryError::MissingEventType),
        };
        let mut fields = map;
        fields.remove("event_type");
        let kind = ObjectKind::detect(fields.get("type"), &event);
        let typed = match kind {
            ObjectKind::Purchase => typed(&fields).map(|o| DeliveryObject::Purchase(Box::new(o))),
            ObjectKind::Payment => typed(&fields).map(|o| DeliveryObject::Payment(Box::new(o))),
            ObjectKind::Payout => typed(&fields).map(|o| DeliveryObject::Payout(Box::new(o))),
            ObjectKind::BillingTemplateClient => {
                typed(&fields).map(|o| DeliveryObject::BillingTemplateClient(Box::new(o)))
            }
            ObjectKind::Unknown => Ok(DeliveryObject::Unknown(fields.clone())),
        };
        let (object, problem) = match typed {
            Ok(object) => (object, None),
            Err(path) => (
                DeliveryObject::Unknown(fields),
                Some(DeliveryError::InvalidField {
                    path: path.to_string(),
                }),
            ),
        };
        Self {
            event,
            object,
            raw,
            problem,
        }
    }

    /// A delivery the types could not read: kept raw, with the reason.
    fn untyped(raw: Bytes, mut fields: JsonMap, problem: DeliveryError) -> Self {
        let event = match fields.remove("event_type") {
            Some(Value::String(name)) => EventName::from(name),
            _ => EventName::Unknown(String::new()),
        };
        Self {
            event,
            object: DeliveryObject::Unknown(fields),
            raw,
            problem: Some(problem),
        }
    }

    /// What these types could not read in a verified body, if anything (then
    /// [`object`](Self::object) is [`DeliveryObject::Unknown`] with the fields as received).
    pub fn typing_problem(&self) -> Option<&DeliveryError> {
        self.problem.as_ref()
    }

    /// Parses a body WITHOUT verifying its signature. Only for bodies whose signature was verified
    /// elsewhere, or for tests and fixtures; a server should use
    /// [`Verifier::verify_and_parse`](crate::Verifier::verify_and_parse).
    ///
    /// # Errors
    /// A [`DeliveryError`] when the body is not a JSON object with a string `event_type`, or a typed
    /// field has a type CHIP does not document.
    pub fn parse_unverified(body: impl Into<Bytes>) -> Result<Self, DeliveryError> {
        let delivery = Self::from_verified(body);
        match delivery.problem {
            Some(problem) => Err(problem),
            None => Ok(delivery),
        }
    }

    /// The event (`event_type`); [`EventName::Unknown`] for a name this version does not list.
    pub fn event(&self) -> &EventName {
        &self.event
    }

    /// The typed object.
    pub fn object(&self) -> &DeliveryObject {
        &self.object
    }

    /// The typed object, by value.
    pub fn into_object(self) -> DeliveryObject {
        self.object
    }

    /// The kind of object.
    pub fn kind(&self) -> ObjectKind {
        self.object.kind()
    }

    /// The Purchase, when the delivery carries one.
    pub fn purchase(&self) -> Option<&Purchase> {
        match &self.object {
            DeliveryObject::Purchase(object) => Some(object),
            _ => None,
        }
    }

    /// The Payment, when the delivery carries one.
    pub fn payment(&self) -> Option<&Payment> {
        match &self.object {
            DeliveryObject::Payment(object) => Some(object),
            _ => None,
        }
    }

    /// The exact bytes received (the bytes the signature covers).
    pub fn raw_body(&self) -> &[u8] {
        &self.raw
    }

    /// The body as untyped JSON, parsed again from the raw bytes.
    ///
    /// # Errors
    /// Never in practice (the body parsed once already); kept fallible rather than panicking.
    pub fn raw_json(&self) -> Result<Value, DeliveryError> {
        serde_json::from_slice(&self.raw).map_err(|error| DeliveryError::NotJson {
            line: error.line(),
            column: error.column(),
        })
    }

    /// The deduplication key (object id, event, `updated_on`); `None` when the object has no id.
    pub fn dedup_key(&self) -> Option<DedupKey> {
        Some(DedupKey {
            object_id: self.object.id()?.to_owned(),
            event: self.event.clone(),
            updated_on: self.object.updated_on(),
        })
    }
}

impl Serialize for Delivery {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.problem.is_some() {
            // What the types could not read is written back as received.
            return match serde_json::from_slice::<Value>(&self.raw) {
                Ok(value) => value.serialize(serializer),
                Err(_) => String::from_utf8_lossy(&self.raw).serialize(serializer),
            };
        }
        let mut value = serde_json::to_value(&self.object).map_err(S::Error::custom)?;
        if let Value::Object(map) = &mut value {
            map.insert(
                "event_type".to_owned(),
                Value::String(self.event.as_str().to_owned()),
            );
        }
        value.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn null_and_unknown_fields_round_trip() {
        let body = br#"{"id":"p1","type":"purchase","event_type":"purchase.paid","viewed_on":null,"new_field":{"a":[1,2]},"purchase":{"total":100,"products":[{"price":5,"quantity":"1.0000","x":true}]}}"#;
        let delivery = Delivery::parse_unverified(body.as_slice()).unwrap();
        let purchase = delivery.purchase().unwrap();
        assert_eq!(purchase.viewed_on, None);
        assert_eq!(purchase.extra.get("viewed_on"), Some(&Value::Null));
        assert!(purchase.extra.contains_key("new_field"));
        let products = purchase
            .purchase
            .as_ref()
            .unwrap()
            .products
            .as_ref()
            .unwrap();
        assert_eq!(products[0].price, Some(5));
        assert_eq!(products[0].extra.get("x"), Some(&Value::Bool(true)));
        let again = serde_json::to_value(&delivery).unwrap();
        assert_eq!(again, serde_json::from_slice::<Value>(body).unwrap());
    }

    #[test]
    fn a_set_typed_field_wins_over_a_null_in_extra() {
        let mut purchase: Purchase =
            serde_json::from_value(serde_json::json!({"viewed_on": null})).unwrap();
        purchase.viewed_on = Some(7);
        assert_eq!(
            serde_json::to_value(&purchase).unwrap(),
            serde_json::json!({"viewed_on": 7})
        );
    }

    #[test]
    fn wrong_types_name_the_field_path_and_not_the_value() {
        let body = br#"{"type":"purchase","event_type":"purchase.paid","purchase":{"products":[{"price":"secret-value"}]}}"#;
        let error = Delivery::parse_unverified(body.as_slice()).unwrap_err();
        assert_eq!(
            error,
            DeliveryError::InvalidField {
                path: "purchase.products.price".to_owned()
            }
        );
        assert!(!error.to_string().contains("secret-value"));
    }
}
