//! When and how the client retries a failed call.
//!
//! # What is retried
//!
//! | Operation | Retried on |
//! |---|---|
//! | list, retrieve, public key (`GET`), replace (`PUT`), delete (`DELETE`) | connection failures, timeouts, 408, 429, 502, 503, 504 |
//! | create (`POST`), partial update (`PATCH`) | only failures to *connect*, which prove the request was never sent |
//!
//! `GET`, `PUT` and `DELETE` are idempotent: sending them twice leaves CHIP as sending them once. A
//! `POST` that creates a webhook is not: if the connection breaks after CHIP stored the webhook but
//! before its answer arrived, a retry would store a second webhook with the same callback, and every
//! event would then be delivered twice. CHIP offers no idempotency key to make this safe, so the client
//! only retries a create when the TCP or TLS connection could not even be set up. A `PATCH` is treated
//! the same way (it is not idempotent in general). When a create fails with a transport error or a
//! timeout, list the webhooks to learn whether it was stored before trying again.
//!
//! # How long it waits
//!
//! Between attempts the client waits an exponentially growing delay (`initial_backoff`, doubled each
//! time, at most `max_backoff`) with jitter (a random point in the upper half of the delay), or exactly
//! the `Retry-After` seconds the server asked for. It stops when `max_attempts` attempts were made, when
//! the next wait would pass `max_elapsed` since the call began, or when `Retry-After` asks for more than
//! `max_retry_after`; the last error is returned. One attempt can still run for the client's whole
//! [`timeout`](crate::ClientBuilder::timeout), so a call lasts at most about `max_elapsed` plus one
//! timeout.

use std::future::Future;
use std::time::{Duration, Instant};

use chip_gate_api::ResponseValue;
use chip_gate_api::types;
use tracing::Instrument;

use crate::error::{Error, from_generated};

/// How the client retries failed calls; see the [module documentation](self) for what is retried.
///
/// ```
/// use std::time::Duration;
/// use chip_gate::RetryPolicy;
///
/// let patient = RetryPolicy::default()
///     .max_attempts(5)
///     .initial_backoff(Duration::from_millis(500))
///     .max_elapsed(Duration::from_secs(120));
/// assert_eq!(patient.get_max_attempts(), 5);
///
/// let never = RetryPolicy::none();
/// assert_eq!(never.get_max_attempts(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    max_elapsed: Duration,
    max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// 3 attempts, backoff from 250 ms up to 8 s, at most 60 s in all, `Retry-After` honoured up to
    /// 60 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            max_elapsed: Duration::from_secs(60),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The default policy (see [`RetryPolicy::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A policy that never retries: every call makes exactly one attempt.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The most attempts one call makes, the first included (0 counts as 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The wait before the first retry; each later wait doubles it, up to
    /// [`max_backoff`](Self::max_backoff).
    pub fn initial_backoff(mut self, delay: Duration) -> Self {
        self.initial_backoff = delay;
        self
    }

    /// The longest wait between two attempts when the server gave no `Retry-After`.
    pub fn max_backoff(mut self, delay: Duration) -> Self {
        self.max_backoff = delay;
        self
    }

    /// No retry starts once this much time has passed since the call began (waits included).
    pub fn max_elapsed(mut self, total: Duration) -> Self {
        self.max_elapsed = total;
        self
    }

    /// The longest `Retry-After` the client will wait for; a longer one ends the call with the error
    /// (whose [`retry_after`](Error::retry_after) tells the caller how long CHIP asked for).
    pub fn max_retry_after(mut self, delay: Duration) -> Self {
        self.max_retry_after = delay;
        self
    }

    /// See [`max_attempts`](Self::max_attempts).
    pub fn get_max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// See [`initial_backoff`](Self::initial_backoff).
    pub fn get_initial_backoff(&self) -> Duration {
        self.initial_backoff
    }

    /// See [`max_backoff`](Self::max_backoff).
    pub fn get_max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// See [`max_elapsed`](Self::max_elapsed).
    pub fn get_max_elapsed(&self) -> Duration {
        self.max_elapsed
    }

    /// See [`max_retry_after`](Self::max_retry_after).
    pub fn get_max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// The jittered wait after the `retry`-th failed attempt (1-based): the exponential delay `d`,
    /// capped, then a random point in `[d/2, d]`.
    pub(crate) fn backoff(&self, retry: u32) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff);
        let half = base / 2;
        let spread = u64::try_from((base - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(0..=spread))
    }
}

/// One API operation, as the retry loop and the tracing span see it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Operation {
    /// CHIP's operation id, e.g. `webhooks_retrieve`.
    pub(crate) name: &'static str,
    /// The HTTP method.
    pub(crate) method: &'static str,
    /// Whether repeating the request is harmless (GET, PUT, DELETE).
    pub(crate) idempotent: bool,
}

/// A success value the generated client returns, which can also be read from the body of a 2xx status
/// the spec does not declare (for example a `200` where CHIP documents `201`).
pub(crate) trait Success: Sized {
    /// Decode the value from a success body.
    fn from_body(bytes: &[u8]) -> Result<Self, serde_json::Error>;
}

impl Success for types::Webhook {
    fn from_body(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl Success for types::WebhookList {
    fn from_body(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl Success for String {
    fn from_body(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

impl Success for () {
    fn from_body(_: &[u8]) -> Result<Self, serde_json::Error> {
        Ok(())
    }
}

/// The outcome of one attempt: the value, or the error and the status it came with.
async fn attempt_outcome<T: Success>(
    result: Result<ResponseValue<T>, chip_gate_api::Error<()>>,
    secret: &str,
) -> Result<(reqwest::StatusCode, T), Error> {
    match result {
        Ok(value) => Ok((value.status(), value.into_inner())),
        Err(chip_gate_api::Error::UnexpectedResponse(response))
            if response.status().is_success() =>
        {
            let status = response.status();
            let bytes = response.bytes().await.map_err(Error::from_reqwest)?;
            T::from_body(&bytes)
                .map(|value| (status, value))
                .map_err(|e| Error::decode(Some(status), &bytes, e, secret))
        }
        Err(err) => Err(from_generated(err, secret).await),
    }
}

/// Run `send` (one call of the generated client) under `policy`, inside a tracing span that records the
/// operation, the method, the attempt count, the final status and the elapsed time.
pub(crate) async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    secret: &str,
    op: Operation,
    mut send: F,
) -> Result<T, Error>
where
    T: Success,
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
            let outcome = attempt_outcome(send().await, secret).await;
            let status = match &outcome {
                Ok((status, _)) => Some(*status),
                Err(e) => e.status(),
            };
            let result = outcome.map(|(_, value)| value);
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
            let err = match &result {
                Ok(_) => return finish(result),
                Err(err) => err,
            };
            let may_retry = if op.idempotent {
                err.is_retryable()
            } else {
                err.never_sent()
            };
            if !may_retry || attempt >= policy.max_attempts {
                return finish(result);
            }
            let delay = match err.retry_after() {
                Some(asked) if asked > policy.max_retry_after => return finish(result),
                Some(asked) => asked,
                None => policy.backoff(attempt),
            };
            if start.elapsed().saturating_add(delay) > policy.max_elapsed {
                return finish(result);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let policy = RetryPolicy::default()
            .initial_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(1000));
        for _ in 0..100 {
            let first = policy.backoff(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = policy.backoff(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            let late = policy.backoff(40);
            assert!(late >= Duration::from_millis(500) && late <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn zero_attempts_means_one() {
        assert_eq!(RetryPolicy::new().max_attempts(0).get_max_attempts(), 1);
    }
}
