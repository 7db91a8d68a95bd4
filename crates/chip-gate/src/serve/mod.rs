//! Serving a webhook endpoint on the public internet (feature `axum`): [`serve`] runs an axum
//! [`Router`](axum::Router) with every read bounded before a signature can be checked.
//!
//! A webhook endpoint must be reachable by CHIP, so it is reachable by anyone. Until a delivery's
//! signature verifies, everything a caller sends is hostile: `axum::serve` alone reads headers and
//! bodies for as long as a client cares to trickle them, buffers whatever each handler asks for on
//! every connection at once, and keeps connections until the process runs out of descriptors.
//! [`serve`] keeps an anonymous caller from exhausting, stalling or crowding out the receiver:
//!
//! | bound | default | what happens past it |
//! |---|---|---|
//! | [`max_connections`](ServeOptions::max_connections) | 512 | the oldest connection that is not being answered (idle, or still sending its request) is closed to make room; when every connection is being answered, new ones wait in the OS's accept queue |
//! | [`header_timeout`](ServeOptions::header_timeout) | 5 s | a request whose head has not fully arrived is dropped with its connection (this also closes idle keep-alive connections) |
//! | [`body_timeout`](ServeOptions::body_timeout) | 10 s from the request's head | the body read fails: `408 Request Timeout` |
//! | [`max_body_bytes`](ServeOptions::max_body_bytes) | 1 MiB a request | a body declared larger fails at once, unread (`413`); a chunked one fails when it grows past it |
//! | [`body_budget`](ServeOptions::body_budget) | 32 MiB across all requests | a body is read only once its size (declared, or the per-request cap when not declared) is reserved in this budget; when it is short, the oldest request still sending its body is dropped to make room, and if that is not enough within [`budget_wait`](ServeOptions::budget_wait) (250 ms), the request is answered `503` (CHIP sends it again) |
//! | [`max_header_bytes`](ServeOptions::max_header_bytes) | 16 KiB | `431` and the connection closes |
//!
//! A request that is refused on its headers (no `X-Signature`, or one no configured key can
//! produce: see [`Verifier::decode_signature_header`](crate::Verifier::decode_signature_header))
//! never reserves or reads its body: the handlers of this crate and of `chip-gate-inbox` check the
//! header first.
//!
//! Memory: what the server holds for requests is at most
//! `body_budget + max_connections x (max_header_bytes + about 8 KiB)`, about 44 MiB with the
//! defaults, whatever callers do. A CHIP delivery (a few KiB, sent at once) is answered while
//! thousands of hostile connections come and go, because it is never the oldest.
//!
//! ```no_run
//! use axum::{Router, routing::post};
//! use chip_gate::serve::{ServeOptions, serve};
//! use chip_gate::{VerifiedDelivery, Verifier};
//!
//! async fn webhook(VerifiedDelivery(delivery): VerifiedDelivery) -> &'static str {
//!     println!("{}", delivery.event());
//!     "ok"
//! }
//!
//! # async fn run(public_key_pem: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::from_pem(public_key_pem)?;
//! let app: Router = Router::new().route("/chip/webhook", post(webhook)).with_state(verifier);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! serve(listener, app, ServeOptions::default()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade (install the exporter you use, e.g.
//! `metrics-exporter-prometheus`; without one they cost next to nothing):
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `chip_gate_connections` | gauge | | connections open |
//! | `chip_gate_connections_closed_for_room_total` | counter | `for`: `connections`, `body_budget` | connections closed to make room (a steady rise means someone holds connections open) |
//! | `chip_gate_body_budget_bytes` | gauge | | body bytes reserved in the budget |
//! | `chip_gate_requests_refused_total` | counter | `reason`: `missing_signature`, `several_signatures`, `signature_not_base64`, `signature_length`, `signature_mismatch`, `too_large`, `body_timeout`, `busy`, `unreadable_body` | requests refused by the extractor or the inbox's handler ([`log_refusal`]) |
//!
//! Handlers find the caller's address as `axum::extract::ConnectInfo<std::net::SocketAddr>`, and a
//! body that failed one of these bounds as a [`BodyError`] inside the body's error (the extractor of
//! this crate and the inbox's handler answer with [`BodyError::status`]).

// One job per file: `options` holds the bounds; `server` accepts connections and serves each one;
// `connections` tracks open connections and closes the oldest unanswered one to make room;
// `budget` reads a request's body through the shared body budget, the size cap and the deadline;
// `body` says why a body was stopped and reads a whole one; `refusal` logs refused deliveries.
mod body;
mod budget;
mod connections;
mod options;
mod refusal;
mod server;

use std::sync::{Mutex, MutexGuard};

pub use body::{BodyError, ReadBodyError, read_body};
pub use options::ServeOptions;
pub use refusal::log_refusal;
pub use server::{serve, serve_with_shutdown};

/// Metric: requests refused before or at the signature check, by `reason`.
pub const REFUSED: &str = "chip_gate_requests_refused_total";
/// Metric: connections open (gauge).
pub const CONNECTIONS: &str = "chip_gate_connections";
/// Metric: connections closed to make room, by `for` (`connections` or `body_budget`).
pub const CLOSED_FOR_ROOM: &str = "chip_gate_connections_closed_for_room_total";
/// Metric: body bytes reserved in the budget (gauge).
pub const BODY_BUDGET_BYTES: &str = "chip_gate_body_budget_bytes";

/// A poisoned lock only means a panic elsewhere; the data (phases, a map) stays usable.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
