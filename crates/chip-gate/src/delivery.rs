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
use serde::ser::{Error as _, SerializeMap as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::verify::{Verifier, VerifyError};
use chip_gate_api::types::EventName;

/// A JSON object: what each typed struct keeps in `extra`.
pub type JsonMap = Map<String, Value>;

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

/// Either step of receiving a delivery failed: the signature, or (after it verified) the body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The signature was rejected: answer 401 and do not look at the body.
    #[error(transparent)]
    Signature(#[from] VerifyError),
    /// The body is not a delivery. Only strict parsing of an unverified body gives this: the
    /// verifying calls return a verified body whatever it holds (see [`Delivery::typing_problem`]).
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

/// Error message prefix used to pass field paths up through nested deserializers.
const PATH_MARK: &str = "chip-gate field path: ";

/// Maps a nested deserialization error to a path-only message (drops any value serde quoted).
fn field_error<E: serde::de::Error>(name: &str, inner: &serde_json::Error) -> E {
    let message = inner.to_string();
    match message.strip_prefix(PATH_MARK) {
        Some(rest) => {
            let rest = rest.split(" at line ").next().unwrap_or(rest);
            E::custom(format_args!("{PATH_MARK}{name}.{rest}"))
        }
        None => E::custom(format_args!("{PATH_MARK}{name}")),
    }
}

/// Removes `key` from `map` unless it is absent or `null` (a `null` stays in `extra`).
fn take_non_null(map: &mut JsonMap, key: &str) -> Option<Value> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(_) => map.remove(key),
    }
}

fn json_error_to_delivery(error: &serde_json::Error) -> DeliveryError {
    let message = error.to_string();
    match message.strip_prefix(PATH_MARK) {
        Some(rest) => DeliveryError::InvalidField {
            path: rest.split(" at line ").next().unwrap_or(rest).to_owned(),
        },
        None => DeliveryError::InvalidField {
            path: "(object)".to_owned(),
        },
    }
}

macro_rules! json_name {
    ($field:ident) => {
        stringify!($field)
    };
    ($field:ident, $json:literal) => {
        $json
    };
}

/// Defines a CHIP object: every field optional, `null`s and unknown fields kept in `extra`.
macro_rules! chip_object {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $field:ident $(= $json:literal)? : $ty:ty,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq)]
        #[non_exhaustive]
        pub struct $name {
            $(
                $(#[doc = $doc])+
                pub $field: Option<$ty>,
            )*
            /// Every field this version does not type, and typed fields that arrived as `null`,
            /// exactly as received.
            pub extra: JsonMap,
        }

        impl $name {
            /// The JSON names of the typed fields.
            pub const FIELDS: &'static [&'static str] = &[$(json_name!($field $(, $json)?)),*];

            fn typed_field_is_set(&self, key: &str) -> bool {
                $(
                    if key == json_name!($field $(, $json)?) {
                        return self.$field.is_some();
                    }
                )*
                false
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(None)?;
                $(
                    if let Some(value) = &self.$field {
                        map.serialize_entry(json_name!($field $(, $json)?), value)?;
                    }
                )*
                for (key, value) in &self.extra {
                    if !self.typed_field_is_set(key) {
                        map.serialize_entry(key, value)?;
                    }
                }
                map.end()
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let mut extra = JsonMap::deserialize(deserializer)?;
                let mut object = Self::default();
                $(
                    let name = json_name!($field $(, $json)?);
                    if let Some(value) = take_non_null(&mut extra, name) {
                        object.$field = Some(
                            <$ty as Deserialize>::deserialize(value)
                                .map_err(|error| field_error::<D::Error>(name, &error))?,
                        );
                    }
                )*
                object.extra = extra;
                Ok(object)
            }
        }
    };
}

chip_object! {
    /// A line of a purchase.
    pub struct Product {
        /// Product name.
        name: String,
        /// Unit price in minor units.
        price: i64,
        /// Quantity as a decimal string, e.g. `"1.0000"`.
        quantity: String,
        /// Discount in minor units.
        discount: i64,
        /// Tax percentage as a decimal string, e.g. `"0.00"`.
        tax_percent: String,
        /// Free-form category.
        category: String,
    }
}

chip_object! {
    /// The `purchase` block of a Purchase: what is being paid for.
    pub struct PurchaseDetails {
        /// ISO 4217 currency code, e.g. `"MYR"`.
        currency: String,
        /// The lines of the purchase.
        products: Vec<Product>,
        /// Total in minor units.
        total: i64,
        /// Language of the payment page, e.g. `"en"`.
        language: String,
        /// Notes for the client.
        notes: String,
        /// Debt in minor units.
        debt: i64,
        /// Overrides the computed subtotal (minor units).
        subtotal_override: i64,
        /// Overrides the computed total tax (minor units).
        total_tax_override: i64,
        /// Overrides the computed total discount (minor units).
        total_discount_override: i64,
        /// Overrides the computed total (minor units).
        total_override: i64,
        /// Whether the due date is enforced.
        due_strict: bool,
        /// IANA time zone, e.g. `"Asia/Kuala_Lumpur"`.
        timezone: String,
        /// Message added to the e-mail sent to the client.
        email_message: String,
        /// Shipping options offered.
        shipping_options: Vec<Value>,
        /// Client details requested on the payment page.
        request_client_details: Vec<Value>,
        /// Payment-method specific details.
        payment_method_details: JsonMap,
    }
}

chip_object! {
    /// The client (payer) of a purchase or payment.
    pub struct ClientDetails {
        /// E-mail address.
        email: String,
        /// Phone number.
        phone: String,
        /// Full name.
        full_name: String,
        /// Personal or company type.
        client_type: String,
        /// Street address.
        street_address: String,
        /// Country code.
        country: String,
        /// City.
        city: String,
        /// Postal code.
        zip_code: String,
        /// State.
        state: String,
        /// Shipping street address.
        shipping_street_address: String,
        /// Shipping country code.
        shipping_country: String,
        /// Shipping city.
        shipping_city: String,
        /// Shipping postal code.
        shipping_zip_code: String,
        /// Shipping state.
        shipping_state: String,
        /// Carbon-copy e-mail addresses.
        cc: Vec<String>,
        /// Blind carbon-copy e-mail addresses.
        bcc: Vec<String>,
        /// Legal (company) name.
        legal_name: String,
        /// Brand name.
        brand_name: String,
        /// Company registration number.
        registration_number: String,
        /// Tax number.
        tax_number: String,
        /// Bank account number.
        bank_account: String,
        /// Bank code.
        bank_code: String,
        /// Personal identification code.
        personal_code: String,
    }
}

chip_object! {
    /// The `payment` block: how much was paid, when, and the fees.
    pub struct PaymentDetails {
        /// Whether money goes out (a refund or payout) rather than in.
        is_outgoing: bool,
        /// `purchase`, `refund`, `custom` and so on.
        payment_type: String,
        /// Amount in minor units.
        amount: i64,
        /// ISO 4217 currency code.
        currency: String,
        /// Amount after fees, in minor units.
        net_amount: i64,
        /// Fee in minor units.
        fee_amount: i64,
        /// Amount held back, in minor units.
        pending_amount: i64,
        /// When the held amount is released (Unix seconds).
        pending_unfreeze_on: i64,
        /// Description.
        description: String,
        /// When it was paid (Unix seconds).
        paid_on: i64,
        /// When the payment provider recorded it (Unix seconds).
        remote_paid_on: i64,
        /// Id of the bank account money went to or came from.
        owned_bank_account_id: String,
        /// That bank account's number.
        owned_bank_account: String,
        /// That bank account's bank code.
        owned_bank_code: String,
    }
}

chip_object! {
    /// One status change in `status_history`.
    pub struct StatusChange {
        /// The status entered.
        status: String,
        /// When (Unix seconds).
        timestamp: i64,
        /// The object that caused the change, if any.
        related_object: Value,
    }
}

chip_object! {
    /// Payment-method data of a purchase or payment.
    pub struct TransactionData {
        /// Checkout flow, e.g. `"payform"`.
        flow: String,
        /// Payment method used, e.g. `"fpx"`.
        payment_method: String,
        /// Country of the payment method.
        country: String,
        /// Payment attempts, newest last.
        attempts: Vec<Value>,
        /// Method-specific details (the JSON field `extra`).
        method_extra = "extra": JsonMap,
    }
}

chip_object! {
    /// The object a Payment belongs to (`related_to`).
    pub struct RelatedObject {
        /// Its id.
        id: String,
        /// Its type, e.g. `"purchase"`.
        object_type = "type": String,
        /// Its reference.
        reference: String,
    }
}

chip_object! {
    /// A Purchase (`"type": "purchase"`), sent with the `purchase.*` events.
    pub struct Purchase {
        /// The purchase id (UUID).
        id: String,
        /// Always `"purchase"`.
        object_type = "type": String,
        /// Created (Unix seconds).
        created_on: i64,
        /// Last updated (Unix seconds); part of the deduplication key.
        updated_on: i64,
        /// The payer.
        client: ClientDetails,
        /// What is being paid for.
        purchase: PurchaseDetails,
        /// Payment details, once paid.
        payment: PaymentDetails,
        /// Payment-method data.
        transaction_data: TransactionData,
        /// Status, e.g. `"paid"`.
        status: String,
        /// Every status change so far.
        status_history: Vec<StatusChange>,
        /// When the payer first opened the payment page (Unix seconds).
        viewed_on: i64,
        /// Your company id.
        company_id: String,
        /// Whether this is a test-mode purchase.
        is_test: bool,
        /// The user who created it.
        user_id: String,
        /// The brand id.
        brand_id: String,
        /// The billing template it came from.
        billing_template_id: String,
        /// The client id.
        client_id: String,
        /// Your order id.
        order_id: String,
        /// Whether it was sent to the client by e-mail.
        send_receipt: bool,
        /// Whether this purchase created a recurring token.
        is_recurring_token: bool,
        /// The recurring token.
        recurring_token: String,
        /// Whether a recurring token is forced.
        force_recurring: bool,
        /// Whether capture is skipped (pre-authorization).
        skip_capture: bool,
        /// Your reference.
        reference: String,
        /// CHIP's generated reference, e.g. `"CH8502"`.
        reference_generated: String,
        /// Amount still refundable, in minor units.
        refundable_amount: i64,
        /// `none`, `all`, `partial_only`, ...
        refund_availability: String,
        /// Whether it was marked as paid by hand.
        marked_as_paid: bool,
        /// Due date (Unix seconds).
        due: i64,
        /// Issue date, e.g. `"2024-02-19"`.
        issued: String,
        /// The payment page.
        checkout_url: String,
        /// The invoice page.
        invoice_url: String,
        /// Direct post URL.
        direct_post_url: String,
        /// Redirect after success.
        success_redirect: String,
        /// Redirect after failure.
        failure_redirect: String,
        /// Redirect after cancellation.
        cancel_redirect: String,
        /// Callback after success.
        success_callback: String,
        /// Where it was created, e.g. `"api"`.
        platform: String,
        /// Product, e.g. `"purchases"`.
        product: String,
        /// IP address it was created from.
        created_from_ip: String,
        /// Agent that created it.
        creator_agent: String,
        /// Allowed payment methods.
        payment_method_whitelist: Vec<String>,
        /// Currency conversion applied, if any.
        currency_conversion: Value,
        /// The seller's details.
        issuer_details: JsonMap,
    }
}

chip_object! {
    /// A Payment (`"type": "payment"`), sent with the `payment.*` events (refunds, chargebacks).
    pub struct Payment {
        /// The payment id (UUID).
        id: String,
        /// Always `"payment"`.
        object_type = "type": String,
        /// Created (Unix seconds).
        created_on: i64,
        /// Last updated (Unix seconds); part of the deduplication key.
        updated_on: i64,
        /// Status, e.g. `"success"`.
        status: String,
        /// The purchase it belongs to.
        related_to: RelatedObject,
        /// The client.
        client: ClientDetails,
        /// Amounts and dates.
        payment: PaymentDetails,
        /// Payment-method data.
        transaction_data: TransactionData,
        /// Fee in minor units.
        fee_amount: i64,
        /// Your company id.
        company_id: String,
        /// Whether this is a test-mode payment.
        is_test: bool,
        /// The user who created it.
        user_id: String,
        /// Your reference.
        reference: String,
        /// CHIP's generated reference.
        reference_generated: String,
        /// `none`, `all`, ...
        refund_availability: String,
        /// Currency conversion applied, if any.
        currency_conversion: Value,
    }
}

chip_object! {
    /// A Payout (`"type": "payout"`), sent with the `payout.*` events.
    pub struct Payout {
        /// The payout id (UUID).
        id: String,
        /// Always `"payout"`.
        object_type = "type": String,
        /// Created (Unix seconds).
        created_on: i64,
        /// Last updated (Unix seconds); part of the deduplication key.
        updated_on: i64,
        /// Status, e.g. `"success"`.
        status: String,
        /// Amounts and dates.
        payment: PaymentDetails,
        /// The recipient.
        client: ClientDetails,
        /// Every status change so far.
        status_history: Vec<StatusChange>,
        /// Your company id.
        company_id: String,
        /// The brand id.
        brand_id: String,
        /// Whether this is a test-mode payout.
        is_test: bool,
        /// Your reference.
        reference: String,
        /// CHIP's generated reference.
        reference_generated: String,
    }
}

chip_object! {
    /// A BillingTemplateClient (`"type": "billing_template_client"`): a client subscribed to a
    /// billing template, sent with the `billing_template_client.*` events.
    pub struct BillingTemplateClient {
        /// Its id (UUID).
        id: String,
        /// Always `"billing_template_client"`.
        object_type = "type": String,
        /// Created (Unix seconds).
        created_on: i64,
        /// Last updated (Unix seconds); part of the deduplication key.
        updated_on: i64,
        /// Status, e.g. `"active"`.
        status: String,
        /// The client id.
        client_id: String,
        /// The billing template id.
        billing_template_id: String,
        /// The recurring token used to charge.
        recurring_token: String,
        /// Your company id.
        company_id: String,
        /// Whether this is test mode.
        is_test: bool,
    }
}

impl PurchaseDetails {
    /// The total with its currency, for display (`RM 2.00`), when both are present.
    pub fn total_amount(&self) -> Option<crate::Amount> {
        Some(crate::Amount::new(self.total?, self.currency.clone()?))
    }
}

impl PaymentDetails {
    /// The amount with its currency, for display, when both are present.
    pub fn amount_with_currency(&self) -> Option<crate::Amount> {
        Some(crate::Amount::new(self.amount?, self.currency.clone()?))
    }
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
/// Build one with [`Verifier::verify_and_parse`] (or [`Verifier::verify_headers_and_parse`]), which
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
            Err(problem) => (DeliveryObject::Unknown(fields), Some(problem)),
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
    /// elsewhere, or for tests and fixtures; a server should use [`Verifier::verify_and_parse`].
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

fn typed<T: for<'de> Deserialize<'de>>(map: &JsonMap) -> Result<T, DeliveryError> {
    T::deserialize(map).map_err(|error| json_error_to_delivery(&error))
}

impl Verifier {
    /// Verifies the body against an `X-Signature` value, then reads it.
    ///
    /// A verified body is always returned, even one these types cannot read: see
    /// [`Delivery::typing_problem`].
    ///
    /// # Errors
    /// [`ReceiveError::Signature`] (answer 401) when the signature is missing or wrong; never
    /// [`ReceiveError::Delivery`].
    pub fn verify_and_parse(
        &self,
        body: impl Into<Bytes>,
        x_signature: &str,
    ) -> Result<Delivery, ReceiveError> {
        let body: Bytes = body.into();
        self.verify(&body, x_signature)?;
        Ok(Delivery::from_verified(body))
    }

    /// Verifies the body against the `X-Signature` header in `headers`, then reads it, as
    /// [`verify_and_parse`](Self::verify_and_parse) does.
    ///
    /// # Errors
    /// [`ReceiveError::Signature`] (answer 401) when the header is missing, repeated or wrong.
    pub fn verify_headers_and_parse(
        &self,
        body: impl Into<Bytes>,
        headers: &http::HeaderMap,
    ) -> Result<Delivery, ReceiveError> {
        let body: Bytes = body.into();
        self.verify_headers(&body, headers)?;
        Ok(Delivery::from_verified(body))
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
