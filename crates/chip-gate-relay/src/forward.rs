//! Forwarding one stored delivery to the app: the original body byte for byte, signed with the
//! Standard Webhooks scheme, CHIP's own `X-Signature` passed along.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chip_gate_inbox::StoredDelivery;

use crate::secret::Secret;

/// The header naming the message (stable across retries): `msg_chip_<delivery id>`.
pub const WEBHOOK_ID: &str = "webhook-id";
/// The header holding when the request was signed (Unix seconds).
pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
/// The header holding the signature (`v1,<base64>`).
pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
/// CHIP's event name, for routing without parsing the body.
pub const CHIP_EVENT: &str = "chip-event";
/// `true` when the delivery is older than a state already forwarded for its object (only sent
/// with [`StalePolicy::Deliver`](chip_gate_inbox::StalePolicy::Deliver)).
pub const CHIP_STALE: &str = "chip-stale";
/// How much of an app's refusal is kept for the inbox's `last_error`.
const REFUSAL_TEXT: usize = 200;

/// The Standard Webhooks `webhook-id` of a stored delivery: `msg_chip_<id>`, the same on every
/// attempt (and on several relay replicas sharing one database), so the app drops repeats by it.
pub fn webhook_id(delivery: &StoredDelivery) -> String {
    format!("msg_chip_{}", delivery.summary.id)
}

/// Why the app did not take a delivery. The inbox retries it with backoff, and marks it dead
/// after the last attempt (`chip inbox retry` sends it again).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The app answered, but not with a 2xx.
    #[error("the app answered {status}: {text}")]
    Refused {
        /// Its status.
        status: u16,
        /// The start of its answer (at most 200 characters, one line).
        text: String,
    },
    /// The app did not answer within the timeout.
    #[error("the app did not answer within {0:?}")]
    Timeout(Duration),
    /// No answer: connection refused or dropped.
    #[error("the app could not be reached: {0}")]
    Unreachable(String),
}

impl ForwardError {
    /// A short label for metrics and logs: `refused`, `timeout` or `unreachable`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Refused { .. } => "refused",
            Self::Timeout(_) => "timeout",
            Self::Unreachable(_) => "unreachable",
        }
    }
}

/// Why a [`Forwarder`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwarderError {
    /// The app's URL is not an `http://` or `https://` URL.
    #[error("--forward-to must be an http:// or https:// URL, not {0:?}")]
    Url(String),
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
}

/// Sends stored deliveries to the app.
#[derive(Clone, Debug)]
pub struct Forwarder {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Secret,
    timeout: Duration,
}

impl Forwarder {
    /// A forwarder to `url`, signing with `secret`, waiting at most `timeout` for each answer.
    /// Redirects are not followed (a `3xx` is a refusal: the app's address is configured, not
    /// discovered), and no proxy from the environment is used.
    ///
    /// # Errors
    /// [`ForwarderError`] for a URL that is not http(s), or a client that cannot be built.
    pub fn new(url: &str, secret: Secret, timeout: Duration) -> Result<Self, ForwarderError> {
        let parsed = reqwest::Url::parse(url).map_err(|_| ForwarderError::Url(url.to_owned()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(ForwarderError::Url(url.to_owned()));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .build()
            .map_err(|e| ForwarderError::Client(e.to_string()))?;
        Ok(Self {
            client,
            url: parsed,
            secret,
            timeout,
        })
    }

    /// The app's URL.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Sends one delivery: `POST` of the stored body, byte for byte, with `content-type:
    /// application/json`, the Standard Webhooks headers ([`WEBHOOK_ID`], [`WEBHOOK_TIMESTAMP`]
    /// now, [`WEBHOOK_SIGNATURE`]), CHIP's `X-Signature` as received, [`CHIP_EVENT`] and, for a
    /// stale delivery, [`CHIP_STALE`]. `Ok` on any 2xx.
    ///
    /// # Errors
    /// A [`ForwardError`]: the delivery is tried again later.
    pub async fn forward(&self, delivery: &StoredDelivery) -> Result<(), ForwardError> {
        let id = webhook_id(delivery);
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let signature = self.secret.sign(&id, timestamp, &delivery.body);
        let mut request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(WEBHOOK_ID, &id)
            .header(WEBHOOK_TIMESTAMP, timestamp.to_string())
            .header(WEBHOOK_SIGNATURE, signature)
            .header(chip_gate::verify::SIGNATURE_HEADER, &delivery.signature)
            .header(CHIP_EVENT, delivery.summary.event.as_str())
            .body(delivery.body.clone());
        if delivery.stale {
            request = request.header(CHIP_STALE, "true");
        }
        let started = Instant::now();
        let result = match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => {
                let status = response.status().as_u16();
                let text = match response.text().await {
                    Ok(text) => one_line(&text),
                    Err(_) => String::new(),
                };
                Err(ForwardError::Refused { status, text })
            }
            Err(error) if error.is_timeout() => Err(ForwardError::Timeout(self.timeout)),
            Err(error) => Err(ForwardError::Unreachable(root_cause(&error))),
        };
        let outcome = match &result {
            Ok(()) => "delivered",
            Err(error) => error.reason(),
        };
        metrics::counter!(crate::metrics::FORWARDED, "outcome" => outcome).increment(1);
        metrics::histogram!(crate::metrics::FORWARD_SECONDS)
            .record(started.elapsed().as_secs_f64());
        result
    }
}

/// The first [`REFUSAL_TEXT`] characters of `text` on one line, control characters dropped.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(REFUSAL_TEXT)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The innermost cause of a client error, the part that says what happened.
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
