//! chip-gate: CHIP (chip-in.asia) webhooks for Rust.
//!
//! # Managing webhooks
//!
//! [`Client`] talks to CHIP Collect's webhook API: create, list (one page or every page as a
//! stream), retrieve, replace, change and delete webhooks, and fetch the company public key. It
//! authenticates with your secret key, retries what is safe to retry, and turns every failure into
//! one [`Error`].
//!
//! ```no_run
//! use chip_gate::{Client, EventName, NewWebhook, WebhookChanges};
//! use futures::TryStreamExt;
//!
//! # async fn run() -> Result<(), chip_gate::Error> {
//! // CHIP_API_KEY holds the secret key; CHIP_BASE_URL may point at a local mock.
//! let client = Client::from_env()?;
//!
//! // Invalid settings (a 101-character title, a callback that is not a URL, no events, the same
//! // event twice) are refused here, before anything is sent.
//! let new = NewWebhook::builder("Paid orders", "https://shop.example.com/chip/webhook")
//!     .events([EventName::PurchasePaid, EventName::PaymentRefunded])?;
//! let webhook = client.webhooks().create(&new).await?;
//! // Deliveries to this callback are signed; `webhook.public_key` verifies them.
//!
//! let renamed = client
//!     .webhooks()
//!     .partial_update(webhook.id, &WebhookChanges::new().title("Paid orders (shop)"))
//!     .await?;
//! assert_eq!(renamed.title, "Paid orders (shop)");
//!
//! // Every page, one at a time.
//! let mut all = client.webhooks().list_all();
//! while let Some(webhook) = all.try_next().await? {
//!     println!("{} {} -> {}", webhook.id, webhook.title, webhook.callback);
//! }
//!
//! client.webhooks().delete(webhook.id).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Configure timeouts, retries, the base URL or your own `reqwest::ClientBuilder` with
//! [`Client::builder`]:
//!
//! ```
//! use std::time::Duration;
//! use chip_gate::{Client, RetryPolicy};
//!
//! let client = Client::builder("sk_test_...")
//!     .timeout(Duration::from_secs(10))
//!     .retry_policy(RetryPolicy::default().max_attempts(5))
//!     .build()?;
//! // The key never shows up in logs:
//! assert!(!format!("{client:?}").contains("sk_test_"));
//!
//! // Plain http:// is only allowed to a loopback address (a local mock):
//! assert!(Client::builder("sk_test_...").base_url("http://gate.example.com/api/v1").build().is_err());
//! # Ok::<(), chip_gate::Error>(())
//! ```
//!
//! ## Safety choices
//!
//! - The key is sent as a sensitive `Authorization: Bearer` header, is printed as `[redacted]`, and
//!   is scrubbed from error bodies; redirects are not followed.
//! - `GET`, `PUT` and `DELETE` are retried on connection failures, timeouts, 408, 429, 502, 503 and
//!   504, honouring `Retry-After`. A create (`POST`) or partial update (`PATCH`) is retried only when
//!   the connection could not be opened, because a repeated create would make a second webhook; see
//!   [`RetryPolicy`].
//! - Each call runs in a `tracing` span named `chip_gate.call` with the fields `operation`,
//!   `method`, `attempt`, `status` and `elapsed_ms`.
//! - Event names are an open enum: [`EventName`] lists CHIP's 29 names, and a name added later
//!   arrives as [`EventName::Unknown`] with the raw string instead of failing the response.
//!
//! # Receiving deliveries
//!
//! The other half of the crate runs in your webhook endpoint: [`verify`] checks the `X-Signature`
//! of a delivery's raw body with the webhook's [`public_key`](Webhook::public_key) (parse it once
//! into a [`Verifier`]), and [`delivery`] turns a verified body into a typed [`Delivery`]. With the
//! `axum` feature, an extractor (`VerifiedDelivery`) does both.
//!
//! ```
//! use chip_gate::{EventName, ReceiveError, Verifier};
//!
//! /// Call from any HTTP handler with the exact bytes received and the `X-Signature` header.
//! fn receive(verifier: &Verifier, body: &[u8], x_signature: &str) -> Result<(), ReceiveError> {
//!     let delivery = verifier.verify_and_parse(body.to_vec(), x_signature)?; // 401 on error
//!     if let Some(problem) = delivery.typing_problem() {
//!         // CHIP's, but our types cannot read it: keep `delivery.raw_body()`, look at it later.
//!         eprintln!("stored raw: {problem}");
//!     } else if delivery.event() == &EventName::PurchasePaid {
//!         let purchase = delivery.purchase();
//!         println!("paid: {:?}", purchase.and_then(|p| p.id.as_deref()));
//!     }
//!     // CHIP delivers at least once: deduplicate on this before acting.
//!     println!("dedup key: {:?}", delivery.dedup_key());
//!     Ok(())
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let pem = include_str!("../tests/fixtures/chip-collect/signed-vector/public_key.pem");
//! # let body = include_bytes!("../tests/fixtures/chip-collect/signed-vector/body.json");
//! # let signature = include_str!("../tests/fixtures/chip-collect/signed-vector/x-signature.txt");
//! let verifier = Verifier::from_pem(pem)?; // the webhook's public_key, parsed once at start-up
//! receive(&verifier, body, signature)?;
//! assert!(receive(&verifier, b"{}", signature).is_err()); // a forged body is refused
//! # Ok(())
//! # }
//! ```
//!
//! # Features
//!
//! - `axum`: the [`receiver_axum::VerifiedDelivery`] extractor, and [`serve::serve`], which runs a
//!   public webhook endpoint with every read bounded before a signature can be checked.
//! - `test-support`: [`testing::TestSigner`], to sign your own test deliveries with a test key.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod call;
mod client;
pub mod error;
mod pagination;
pub mod plan;
pub mod retry;
mod webhooks;
pub use chip_gate_api::types::{EventName, Webhook, WebhookList};
pub use client::{
    API_KEY_ENV, ApiKey, BASE_URL_ENV, Client, ClientBuilder, DEFAULT_BASE_URL,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_TIMEOUT, LOCAL_MOCK_KEY_HINT,
    USER_AGENT,
};
pub use error::Error;
pub use pagination::{DEFAULT_MAX_PAGES, PageLink};
pub use plan::{Plan, PlanOptions, WebhookFile};
pub use retry::RetryPolicy;
pub use webhooks::{
    MAX_CALLBACK_CHARS, MAX_TITLE_CHARS, NewWebhook, NewWebhookBuilder, WebhookChanges, Webhooks,
};

// Receiving deliveries: signature verification, typed deliveries, the axum extractor, test signer.
pub mod delivery;
mod money;
mod objects;
pub use money::Amount;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod receiver_axum;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod serve;
#[cfg(feature = "test-support")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-support")))]
pub mod testing;
pub mod verify;
pub use delivery::{DedupKey, Delivery, DeliveryError, DeliveryObject, ObjectKind};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use receiver_axum::{DeliveryRejection, VerifiedDelivery};
pub use verify::{
    DEFAULT_MAX_BODY_BYTES, Digest, KeyError, ReceiveError, VerificationKey, Verifier, VerifyError,
};

// The workspace README's examples compile as doctests of this crate.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
