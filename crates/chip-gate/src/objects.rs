//! CHIP's objects as they arrive in deliveries: Purchase, Payment, Payout, BillingTemplateClient
//! and the blocks inside them, each a struct of optional typed fields plus `extra` for the rest.
//!
//! Every field is an `Option` because CHIP sends many `null`s and adds or drops fields over time;
//! fields the structs do not know, and known fields that arrived as `null`, are kept in each
//! struct's `extra` map, so re-serializing gives back the same JSON that was received. A field of a
//! type CHIP does not document is reported with its path (`purchase.products.price`), never its
//! value.

use std::fmt;

use serde::de::Error as _;
use serde::ser::SerializeMap as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A JSON object: what each typed struct keeps in `extra`.
pub type JsonMap = Map<String, Value>;

/// Where a field of an unexpected type sits: its names from the object down.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<&'static str>);

impl FieldPath {
    /// The same path one level further out, inside the field `name`.
    fn under(mut self, name: &'static str) -> Self {
        self.0.push(name);
        self
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(object)");
        }
        for (i, name) in self.0.iter().rev().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

/// A type a CHIP object's field can have, read from JSON with the path of what did not fit.
pub(crate) trait ReadField: Sized {
    /// Reads `value`; on a type mismatch, the path below this field (empty for the field itself).
    fn read(value: Value) -> Result<Self, FieldPath>;
}

macro_rules! read_with_serde {
    ($($ty:ty),*) => {
        $(
            impl ReadField for $ty {
                fn read(value: Value) -> Result<Self, FieldPath> {
                    serde_json::from_value(value).map_err(|_| FieldPath::default())
                }
            }
        )*
    };
}

read_with_serde!(String, i64, bool, f64, Value, JsonMap);

impl<T: ReadField> ReadField for Vec<T> {
    fn read(value: Value) -> Result<Self, FieldPath> {
        match value {
            Value::Array(items) => items.into_iter().map(T::read).collect(),
            _ => Err(FieldPath::default()),
        }
    }
}

/// Removes `key` from `map` unless it is absent or `null` (a `null` stays in `extra`).
fn take_non_null(map: &mut JsonMap, key: &str) -> Option<Value> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(_) => map.remove(key),
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
///
/// Each object is read by [`ReadField`], which carries the path of a field of the wrong type up as
/// a [`FieldPath`]; serde's `Deserialize` is the same reader, for users who decode these types
/// themselves.
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

            /// Reads the typed fields out of `extra`; what remains stays there.
            fn from_map(mut extra: JsonMap) -> Result<Self, FieldPath> {
                let mut object = Self::default();
                $(
                    let name = json_name!($field $(, $json)?);
                    if let Some(value) = take_non_null(&mut extra, name) {
                        object.$field =
                            Some(<$ty as ReadField>::read(value).map_err(|path| path.under(name))?);
                    }
                )*
                object.extra = extra;
                Ok(object)
            }
        }

        impl ReadField for $name {
            fn read(value: Value) -> Result<Self, FieldPath> {
                match value {
                    Value::Object(map) => Self::from_map(map),
                    _ => Err(FieldPath::default()),
                }
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
                let map = JsonMap::deserialize(deserializer)?;
                Self::from_map(map).map_err(|path| {
                    D::Error::custom(format_args!("field `{path}` has an unexpected type"))
                })
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

/// Reads a typed object from the fields of a delivery, naming the path of a field that does not fit.
pub(crate) fn typed<T: ReadField>(fields: &JsonMap) -> Result<T, FieldPath> {
    T::read(Value::Object(fields.clone()))
}
