//! When the client retries a failed call: the policy, and the pure decision it makes after each
//! failed attempt (the loop that acts on it is in `call.rs`).
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

use std::time::Duration;

use crate::error::Error;

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
/// assert_eq!(patient.max_attempts, 5);
///
/// let never = RetryPolicy::none();
/// assert_eq!(never.max_attempts, 1);
/// ```
///
/// The settings are plain public fields for reading; set them with the builder methods of the
/// same names.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// The most attempts one call makes, the first included (0 acts as 1).
    pub max_attempts: u32,
    /// The wait before the first retry; each later wait doubles it, up to `max_backoff`.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts when the server gave no `Retry-After`.
    pub max_backoff: Duration,
    /// No retry starts once this much time has passed since the call began (waits included).
    pub max_elapsed: Duration,
    /// The longest `Retry-After` the client waits for.
    pub max_retry_after: Duration,
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

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// Give up and return the error.
    Stop,
}

/// The retry decision after attempt number `attempt` (1-based) failed with `error`, `elapsed` after
/// the call began. Pure: `backoff` is the jittered wait [`RetryPolicy::backoff`] chose for this
/// attempt, used when the server gave no `Retry-After`.
///
/// An idempotent operation (GET, PUT, DELETE) is retried on what [`Error::is_retryable`] calls
/// transient; any other only when the request provably never left ([`Error::never_sent`]). Never
/// past `max_attempts`, never beyond `max_elapsed`, and never for a `Retry-After` longer than
/// `max_retry_after`.
pub(crate) fn decide(
    policy: &RetryPolicy,
    idempotent: bool,
    attempt: u32,
    elapsed: Duration,
    error: &Error,
    backoff: Duration,
) -> Decision {
    let may_retry = if idempotent {
        error.is_retryable()
    } else {
        error.never_sent()
    };
    if !may_retry || attempt >= policy.max_attempts {
        return Decision::Stop;
    }
    let delay = match error.retry_after() {
        Some(asked) if asked > policy.max_retry_after => return Decision::Stop,
        Some(asked) => asked,
        None => backoff,
    };
    if elapsed.saturating_add(delay) > policy.max_elapsed {
        return Decision::Stop;
    }
    Decision::RetryAfter(delay)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
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

    fn api(status: u16, retry_after: Option<u64>) -> Error {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(seconds) = retry_after {
            headers.insert(reqwest::header::RETRY_AFTER, seconds.into());
        }
        Error::api_from_bytes(
            reqwest::StatusCode::from_u16(status).unwrap_or(reqwest::StatusCode::IM_A_TEAPOT),
            &headers,
            b"",
            "",
        )
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn transient_statuses_are_retried_for_idempotent_operations_only() {
        let policy = RetryPolicy::default();
        for status in [408, 429, 502, 503, 504] {
            assert_eq!(
                decide(&policy, true, 1, Duration::ZERO, &api(status, None), 7 * MS),
                Decision::RetryAfter(7 * MS),
                "{status}"
            );
            // A create or a PATCH may have been applied: never retried on a status.
            assert_eq!(
                decide(
                    &policy,
                    false,
                    1,
                    Duration::ZERO,
                    &api(status, None),
                    7 * MS
                ),
                Decision::Stop,
                "{status}"
            );
        }
        for status in [400, 401, 403, 404, 409, 500, 501] {
            assert_eq!(
                decide(&policy, true, 1, Duration::ZERO, &api(status, None), 7 * MS),
                Decision::Stop,
                "{status}"
            );
        }
        let invalid = Error::InvalidRequest { reason: "x".into() };
        assert_eq!(
            decide(&policy, true, 1, Duration::ZERO, &invalid, MS),
            Decision::Stop
        );
    }

    #[test]
    fn retry_after_wins_over_backoff_within_its_cap() {
        let policy = RetryPolicy::default().max_retry_after(Duration::from_secs(10));
        assert_eq!(
            decide(&policy, true, 1, Duration::ZERO, &api(429, Some(3)), 7 * MS),
            Decision::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            decide(
                &policy,
                true,
                1,
                Duration::ZERO,
                &api(429, Some(11)),
                7 * MS
            ),
            Decision::Stop
        );
    }

    #[test]
    fn attempts_and_elapsed_time_are_bounded() {
        let policy = RetryPolicy::default()
            .max_attempts(3)
            .max_elapsed(Duration::from_secs(5));
        let busy = api(503, None);
        assert!(matches!(
            decide(&policy, true, 2, Duration::ZERO, &busy, MS),
            Decision::RetryAfter(_)
        ));
        assert_eq!(
            decide(&policy, true, 3, Duration::ZERO, &busy, MS),
            Decision::Stop
        );
        assert_eq!(
            decide(
                &policy,
                true,
                1,
                Duration::from_millis(4_990),
                &busy,
                20 * MS
            ),
            Decision::Stop
        );
        assert_eq!(
            decide(&RetryPolicy::none(), true, 1, Duration::ZERO, &busy, MS),
            Decision::Stop
        );
    }

    #[test]
    fn zero_attempts_means_one() {
        assert_eq!(RetryPolicy::new().max_attempts(0).max_attempts, 1);
    }
}
