//! Running one API operation: the table of operations, and the loop that sends an attempt, asks
//! the retry policy what to do after a failure, waits, and records it all in a `tracing` span.
//!
//! The generated client does the HTTP work (its request hook lives in `chip-gate-api`); this module
//! only decides how often to call it. Retries are not done in that hook because a retry re-sends a
//! whole request built by the generated builder, and the decision needs the typed error
//! ([`Error`]) and the operation's idempotency, which the hook does not see.

use std::future::Future;
use std::time::Instant;

use chip_gate_api::ResponseValue;
use tracing::Instrument;

use crate::error::{Error, from_generated};
use crate::retry::{Decision, RetryPolicy, decide};

/// One API operation, as the retry loop and the tracing span see it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operation {
    /// CHIP's operation id, e.g. `webhooks_retrieve` (the generated method's name).
    pub(crate) name: &'static str,
    /// The HTTP method.
    pub(crate) method: &'static str,
    /// Whether repeating the request is harmless (GET, PUT, DELETE).
    pub(crate) idempotent: bool,
}

impl Operation {
    const fn new(name: &'static str, method: &'static str) -> Self {
        let idempotent = matches!(method.as_bytes(), b"GET" | b"PUT" | b"DELETE");
        Operation {
            name,
            method,
            idempotent,
        }
    }
}

/// Every operation the wrapper calls, once each: its id and method as in the spec.
pub(crate) mod ops {
    use super::Operation;

    /// `POST /webhooks/`.
    pub(crate) const CREATE: Operation = Operation::new("webhooks_create", "POST");
    /// `GET /webhooks/` (every page).
    pub(crate) const LIST: Operation = Operation::new("webhooks_list", "GET");
    /// `GET /webhooks/{id}/`.
    pub(crate) const RETRIEVE: Operation = Operation::new("webhooks_retrieve", "GET");
    /// `PUT /webhooks/{id}/`.
    pub(crate) const UPDATE: Operation = Operation::new("webhooks_update", "PUT");
    /// `PATCH /webhooks/{id}/`.
    pub(crate) const PARTIAL_UPDATE: Operation = Operation::new("webhooks_partial_update", "PATCH");
    /// `DELETE /webhooks/{id}/`.
    pub(crate) const DELETE: Operation = Operation::new("webhooks_delete", "DELETE");
    /// `GET /public_key/`.
    pub(crate) const PUBLIC_KEY: Operation = Operation::new("public_key", "GET");
}

/// Run `send` (one call of the generated client) under `policy`, inside a tracing span that records
/// the operation, the method, the attempt count, the final status and the elapsed time.
pub(crate) async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    secret: &str,
    op: Operation,
    mut send: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<ResponseValue<T>, chip_gate_api::Error<()>>>,
{
    let span = tracing::info_span!(
        "chip_gate.call",
        operation = op.name,
        method = op.method,
        attempt = tracing::field::Empty,
        status = tracing::field::Empty,
        elapsed_ms = tracing::field::Empty,
    );
    let record = span.clone();
    async move {
        let start = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let outcome = match send().await {
                Ok(value) => Ok((value.status(), value.into_inner())),
                Err(err) => Err(from_generated(err, secret).await),
            };
            let status = match &outcome {
                Ok((status, _)) => Some(*status),
                Err(e) => e.status(),
            };
            let finish = |result: Result<T, Error>| {
                record.record("attempt", attempt);
                if let Some(status) = status {
                    record.record("status", status.as_u16());
                }
                record.record(
                    "elapsed_ms",
                    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
                );
                if let Err(e) = &result {
                    tracing::debug!(error = %e, "call failed");
                }
                result
            };
            let err = match outcome {
                Ok((_, value)) => return finish(Ok(value)),
                Err(err) => err,
            };
            let backoff = policy.backoff(attempt);
            let delay = match decide(
                policy,
                op.idempotent,
                attempt,
                start.elapsed(),
                &err,
                backoff,
            ) {
                Decision::Stop => return finish(Err(err)),
                Decision::RetryAfter(delay) => delay,
            };
            tracing::info!(
                attempt,
                status = status.map(|s| s.as_u16()),
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %err,
                "retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }
    .instrument(span)
    .await
}
