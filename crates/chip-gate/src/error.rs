//! The one error type of the CHIP API client.
//!
//! Every fallible method of [`Client`](crate::Client) returns [`Error`]. It says which of five things
//! went wrong: CHIP answered with an error ([`Error::Api`]), the request never got an answer
//! ([`Error::Transport`], [`Error::Timeout`]), CHIP's answer could not be read ([`Error::Decode`]), the
//! request was refused before anything was sent ([`Error::InvalidRequest`]), or a list's pagination
//! links could not be followed ([`Error::Pagination`]).
//!
//! No variant ever holds the API key: error bodies are scrubbed of it before they are stored (in case a
//! server echoes request headers back), and transport errors only carry the URL, which never holds it.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

/// How many characters of an unreadable body [`Error::Decode`] keeps.
const EXCERPT_CHARS: usize = 200;

/// The longest error body [`Error::Api`] keeps, in bytes; longer bodies are cut (on a character
/// boundary) and end in `…`.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The longest `code` an [`Error::Api`] keeps, in bytes (a server's text goes into logs).
const MAX_CODE_BYTES: usize = 128;

/// The longest `message` an [`Error::Api`] keeps, in bytes.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Everything that can go wrong when calling CHIP.
///
/// Use [`Error::status`] for the HTTP status when there is one, and [`Error::is_retryable`] to learn
/// whether the failure is transient. [`Display`](std::fmt::Display) gives a one-line explanation;
/// neither it nor [`Debug`] ever shows the API key.
///
/// ```
/// use chip_gate::Error;
///
/// fn explain(err: &Error) -> String {
///     match err {
///         Error::Api { status, code, message, .. } => format!(
///             "CHIP said {status}: {} ({})",
///             message.as_deref().unwrap_or("no message"),
///             code.as_deref().unwrap_or("no code"),
///         ),
///         other => other.to_string(),
///     }
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// CHIP (or something in front of it) answered with a non-success status.
    ///
    /// `code` and `message` are read from whichever error shape the body used:
    /// `{"code", "message"}`, `{"__all__": {"message", "code"}}`,
    /// `{"<field>": [{"message", "code"}]}` (the message is then prefixed with the field name), a
    /// list of plain strings per field, or `{"detail": "..."}`.
    #[error(
        "CHIP answered {status}{}{}",
        describe(code.as_deref(), message.as_deref()),
        hint.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// CHIP's machine-readable error code, when the body had one.
        code: Option<String>,
        /// CHIP's human-readable message, when the body had one.
        message: Option<String>,
        /// The response body exactly as sent (decoded as UTF-8, lossily; at most 64 KiB), for
        /// anything the fields above do not cover. Empty when the answer had no body, as CHIP's
        /// 404 does.
        body: String,
        /// The delay the server asked for in `Retry-After` (whole seconds or an HTTP date).
        retry_after: Option<Duration>,
        /// What the client knows that the answer does not say: which webhook id was not found,
        /// or that a 404 on the list means the base URL is not CHIP's API.
        hint: Option<String>,
    },
    /// The request could not be sent, or the connection failed before a full answer arrived.
    ///
    /// The message names the root cause (`connection refused`, `connection closed before message
    /// completed`, `dns error: ...`), not only the URL.
    #[error("could not talk to CHIP: {}", causes(source))]
    Transport {
        /// The underlying HTTP client error (it names the URL, never a header).
        #[source]
        source: reqwest::Error,
    },
    /// The answer's body was larger than the client reads
    /// ([`ClientBuilder::max_response_bytes`](crate::ClientBuilder::max_response_bytes)).
    #[error(
        "CHIP's answer is larger than this client reads (ClientBuilder::max_response_bytes); nothing \
         past the cap was kept"
    )]
    ResponseTooLarge,
    /// CHIP did not answer within the client's connect or total timeout.
    #[error("CHIP did not answer in time: {}", causes(source))]
    Timeout {
        /// The underlying HTTP client error.
        #[source]
        source: reqwest::Error,
    },
    /// CHIP answered, but the body was not what the API describes.
    #[error(
        "could not decode CHIP's answer{}: {source} (body starts: {excerpt:?})",
        status.map(|s| format!(" ({s})")).unwrap_or_default()
    )]
    Decode {
        /// The HTTP status, when it is known.
        status: Option<StatusCode>,
        /// The first 200 characters of the body.
        excerpt: String,
        /// What the JSON decoder objected to.
        #[source]
        source: serde_json::Error,
    },
    /// The request was refused before anything was sent: a value broke one of CHIP's limits or the
    /// client's configuration was unusable. The reason says what to change.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What was wrong and how to fix it.
        reason: String,
    },
    /// A list's `next` link could not be followed safely (it pointed elsewhere, had no page number, or
    /// repeated a page already read), so listing stopped.
    #[error("cannot follow CHIP's pagination: {reason}")]
    Pagination {
        /// What was wrong with the link.
        reason: String,
    },
}

/// The `: message (code)` tail of an [`Error::Api`] message.
fn describe(code: Option<&str>, message: Option<&str>) -> String {
    match (message, code) {
        (Some(m), Some(c)) => format!(": {m} ({c})"),
        (Some(m), None) => format!(": {m}"),
        (None, Some(c)) => format!(": {c}"),
        (None, None) => String::new(),
    }
}

impl Error {
    /// The HTTP status of CHIP's answer, when there was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. } => Some(*status),
            Error::Decode { status, .. } => *status,
            Error::Transport { source } | Error::Timeout { source } => source.status(),
            Error::InvalidRequest { .. } | Error::Pagination { .. } | Error::ResponseTooLarge => {
                None
            }
        }
    }

    /// Whether the failure is transient, so that the same request may succeed later: connection
    /// failures, timeouts, and the statuses 408, 429, 502, 503 and 504.
    ///
    /// The client already retries reads, replaces and deletes on these (see
    /// [`RetryPolicy`](crate::RetryPolicy)); this tells a caller whether retrying a create or a partial
    /// update is worth considering. Retrying a create that failed this way can duplicate the webhook.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Api { status, .. } => is_retryable_status(*status),
            Error::Transport { source } => !source.is_builder(),
            Error::Timeout { .. } => true,
            Error::Decode { .. }
            | Error::InvalidRequest { .. }
            | Error::Pagination { .. }
            | Error::ResponseTooLarge => false,
        }
    }

    /// CHIP's error code, for [`Error::Api`].
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// CHIP's error message, for [`Error::Api`].
    pub fn message(&self) -> Option<&str> {
        match self {
            Error::Api { message, .. } => message.as_deref(),
            _ => None,
        }
    }

    /// The delay the server asked for in `Retry-After`, for [`Error::Api`].
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the request certainly never reached the server: the connection (or its TLS handshake)
    /// could not be set up. Only then is a create or a partial update retried.
    pub(crate) fn never_sent(&self) -> bool {
        match self {
            Error::Transport { source } | Error::Timeout { source } => source.is_connect(),
            _ => false,
        }
    }

    /// An [`Error::InvalidRequest`] with the given reason.
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidRequest {
            reason: reason.into(),
        }
    }

    /// An [`Error::Pagination`] with the given reason.
    pub(crate) fn pagination(reason: impl Into<String>) -> Self {
        Error::Pagination {
            reason: reason.into(),
        }
    }

    /// A transport, timeout or too-large error, whichever `source` is.
    pub(crate) fn from_reqwest(source: reqwest::Error) -> Self {
        if past_length_limit(&source) {
            return Error::ResponseTooLarge;
        }
        if source.is_timeout() {
            Error::Timeout { source }
        } else {
            Error::Transport { source }
        }
    }

    /// An [`Error::Api`] from a status, the headers and the raw body, with `secret` scrubbed out.
    pub(crate) fn api_from_bytes(
        status: StatusCode,
        headers: &reqwest::header::HeaderMap,
        bytes: &[u8],
        secret: &str,
    ) -> Self {
        let body = scrub(&String::from_utf8_lossy(bytes), secret);
        let parsed = serde_json::from_slice::<Value>(bytes)
            .ok()
            .map(|value| match value {
                // CHIP's published 400 example is a JSON string whose text is the JSON error object.
                Value::String(inner) => serde_json::from_str::<Value>(&inner)
                    .ok()
                    .filter(|v| v.is_object() || v.is_array())
                    .unwrap_or(Value::String(inner)),
                other => other,
            });
        let (code, message) = parsed.as_ref().map(extract).unwrap_or_default();
        Error::Api {
            status,
            code: code.map(|c| truncate(scrub(&c, secret), MAX_CODE_BYTES)),
            message: message.map(|m| truncate(scrub(&m, secret), MAX_MESSAGE_BYTES)),
            body: truncate(body, MAX_ERROR_BODY),
            retry_after: retry_after(headers),
            hint: None,
        }
    }

    /// The same error with `text` as its hint, when it is an [`Error::Api`] with `status`.
    pub(crate) fn with_hint_for(mut self, status: u16, text: impl FnOnce() -> String) -> Self {
        if let Error::Api {
            status: got, hint, ..
        } = &mut self
            && got.as_u16() == status
        {
            *hint = Some(text());
        }
        self
    }

    /// An [`Error::Decode`] for a body that did not decode.
    pub(crate) fn decode(
        status: Option<StatusCode>,
        bytes: &[u8],
        source: serde_json::Error,
        secret: &str,
    ) -> Self {
        let text = String::from_utf8_lossy(bytes);
        let excerpt: String = text.chars().take(EXCERPT_CHARS).collect();
        Error::Decode {
            status,
            excerpt: scrub(&excerpt, secret),
            source,
        }
    }
}

/// Convert the generated client's error into ours.
///
/// The generator is given no error responses (`cargo xtask generate` leaves them undeclared), so
/// every non-2xx answer arrives here as an unexpected response: its status, headers and raw body,
/// whatever the body is. (A 2xx status the spec does not declare is read by the retry loop.)
pub(crate) async fn from_generated(err: chip_gate_api::Error<()>, secret: &str) -> Error {
    use chip_gate_api::Error as G;
    match err {
        G::InvalidRequest(reason) => Error::invalid(reason),
        G::CommunicationError(e) | G::InvalidUpgrade(e) | G::ResponseBodyError(e) => {
            Error::from_reqwest(e)
        }
        G::ErrorResponse(rv) => Error::api_from_bytes(rv.status(), rv.headers(), b"", secret),
        G::InvalidResponsePayload(bytes, source) => Error::decode(None, &bytes, source, secret),
        G::UnexpectedResponse(mut response) => {
            let status = response.status();
            let headers = response.headers().clone();
            // At most MAX_ERROR_BODY bytes are read: the status is what matters, and an endless
            // error page must not fill memory. A body that breaks off keeps what arrived.
            let mut body = Vec::new();
            while body.len() <= MAX_ERROR_BODY {
                match response.chunk().await {
                    Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                    Ok(None) | Err(_) => break,
                }
            }
            Error::api_from_bytes(status, &headers, &body, secret)
        }
        G::Custom(reason) => Error::invalid(reason),
    }
}

/// Whether `error` comes from a response body longer than the client reads.
fn past_length_limit(error: &reqwest::Error) -> bool {
    let mut next = std::error::Error::source(error);
    while let Some(cause) = next {
        if cause.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        next = cause.source();
    }
    false
}

/// `error`'s message followed by each distinct message of its `source()` chain, so that the root
/// cause (`connection refused`, `dns error`, `connection closed before message completed`) shows.
fn causes(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut next = std::error::Error::source(error);
    while let Some(cause) = next {
        let message = cause.to_string();
        if !message.is_empty() && !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        next = cause.source();
    }
    text
}

/// The statuses worth retrying: 408, 429, 502, 503 and 504.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 502 | 503 | 504)
}

/// `Retry-After` as a delay: whole seconds, or an HTTP date (a date in the past is no delay).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Replace every occurrence of `secret` in `text` with `[redacted]`.
fn scrub(text: &str, secret: &str) -> String {
    if !secret.is_empty() && text.contains(secret) {
        text.replace(secret, "[redacted]")
    } else {
        text.to_owned()
    }
}

/// Cut `text` to at most `max` bytes, on a character boundary, marking the cut.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// CHIP's `(code, message)` from any of its error shapes.
///
/// In order of preference: a flat `{"code", "message"}`; `{"detail": ...}`; `{"__all__": ...}`; the
/// first field (in key order) holding an error, with its name prefixed to the message.
pub(crate) fn extract(value: &Value) -> (Option<String>, Option<String>) {
    let Value::Object(map) = value else {
        // A bare string or list of errors (seen from some frameworks).
        return one_error(value);
    };
    let code = map.get("code").and_then(text);
    let message = map.get("message").and_then(text);
    if code.is_some() || message.is_some() {
        return (code, message);
    }
    if let Some(detail) = map.get("detail") {
        let found = one_error(detail);
        if found != (None, None) {
            return found;
        }
    }
    if let Some(all) = map.get("__all__") {
        let found = one_error(all);
        if found != (None, None) {
            return found;
        }
    }
    for (field, errors) in map {
        let (code, message) = one_error(errors);
        if code.is_some() || message.is_some() {
            let message = Some(match message {
                Some(m) => format!("{field}: {m}"),
                None => format!("{field}: invalid"),
            });
            return (code, message);
        }
    }
    (None, None)
}

/// `(code, message)` from one error: a string, an object with `message`/`code`, or a list whose first
/// usable element is one of those.
fn one_error(value: &Value) -> (Option<String>, Option<String>) {
    match value {
        Value::String(s) => (None, Some(s.clone())),
        Value::Object(map) => {
            let code = map.get("code").and_then(text);
            let message = map
                .get("message")
                .or_else(|| map.get("detail"))
                .and_then(text);
            (code, message)
        }
        Value::Array(items) => items
            .iter()
            .map(one_error)
            .find(|found| *found != (None, None))
            .unwrap_or_default(),
        _ => (None, None),
    }
}

/// A scalar as text (strings as they are, numbers and booleans printed).
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pair(code: Option<&str>, message: Option<&str>) -> (Option<String>, Option<String>) {
        (code.map(str::to_owned), message.map(str::to_owned))
    }

    #[test]
    fn reads_every_chip_error_shape() {
        assert_eq!(
            extract(&json!({"code": "invalid_data", "message": "Bad data"})),
            pair(Some("invalid_data"), Some("Bad data"))
        );
        assert_eq!(
            extract(&json!({"__all__": {"message": "Nope", "code": "invalid"}})),
            pair(Some("invalid"), Some("Nope"))
        );
        assert_eq!(
            extract(&json!({"title": [{"message": "Too long", "code": "max_length"}]})),
            pair(Some("max_length"), Some("title: Too long"))
        );
        assert_eq!(
            extract(&json!({"title": ["This field is required."]})),
            pair(None, Some("title: This field is required."))
        );
        assert_eq!(
            extract(&json!({"detail": "Invalid token."})),
            pair(None, Some("Invalid token."))
        );
        assert_eq!(
            extract(&json!({"__all__": [{"message": "A", "code": "a"}, {"message": "B"}]})),
            pair(Some("a"), Some("A"))
        );
        assert_eq!(extract(&json!({"unrelated": 3})), pair(None, None));
        assert_eq!(extract(&json!(null)), pair(None, None));
    }

    #[test]
    fn scrubs_and_truncates() {
        assert_eq!(
            scrub("a SECRET b SECRET", "SECRET"),
            "a [redacted] b [redacted]"
        );
        assert_eq!(scrub("plain", ""), "plain");
        let long = "é".repeat(10);
        let cut = truncate(long, 5);
        assert_eq!(cut, "éé…");
    }
}
