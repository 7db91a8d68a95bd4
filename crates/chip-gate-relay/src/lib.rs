//! A durable CHIP receiver in front of any app, in any language.
//!
//! The relay receives CHIP's deliveries with [`chip_gate_inbox`]'s intake (verified with the
//! webhooks' keys, stored before the `200`, deduplicated, bounded as a public endpoint must be),
//! then forwards each to the app's URL: one at a time per object, in `updated_on` order, retried
//! with backoff until the app answers 2xx, dead after the last attempt (`chip inbox retry`
//! sends it again). What it forwards is the original body, byte for byte, signed with the
//! [Standard Webhooks](https://www.standardwebhooks.com) scheme ([`Secret`]), so the app
//! verifies it with its language's Standard Webhooks library and gets a stable `webhook-id` to
//! drop repeats by and a timestamp to refuse replays with. CHIP's own `X-Signature` is passed
//! along for apps that also check it.
//!
//! `chip relay` runs it from the command line; [`run`] runs it from Rust.
//!
//! **At least once.** An app's `2xx` is recorded after it arrives: a relay killed between the
//! two sends that delivery again, with the same `webhook-id`. Apps drop it by that id.

mod forward;
pub mod metrics;
mod relay;
mod secret;

pub use forward::{
    CHIP_EVENT, CHIP_STALE, ForwardError, Forwarder, ForwarderError, WEBHOOK_ID, WEBHOOK_SIGNATURE,
    WEBHOOK_TIMESTAMP, webhook_id,
};
pub use relay::{Bound, RelayConfig, RelayError, run};
pub use secret::{MAX_SECRET_BYTES, MIN_SECRET_BYTES, SECRET_PREFIX, Secret, SecretError};
