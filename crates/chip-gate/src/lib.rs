//! chip-gate: CHIP (chip-in.asia) webhooks for Rust.
//!
//! (Crate documentation is written as the modules land.)

// Modules: each line is owned by the work that adds the module.

// Receiving deliveries: signature verification, typed deliveries, the axum extractor, test signer.
pub mod delivery;
#[cfg(feature = "axum")]
pub mod receiver_axum;
#[cfg(feature = "test-support")]
pub mod testing;
pub mod verify;
pub use chip_gate_api::types::EventName;
pub use delivery::{DedupKey, Delivery, DeliveryError, DeliveryObject, ObjectKind, ReceiveError};
#[cfg(feature = "axum")]
pub use receiver_axum::{DeliveryRejection, VerifiedDelivery};
pub use verify::{Digest, KeyError, VerificationKey, Verifier, VerifyError};
