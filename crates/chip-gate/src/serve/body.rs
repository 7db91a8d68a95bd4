//! Why a body was stopped ([`BodyError`]), and reading a whole body ([`read_body`]).

use axum::body::Body;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;

/// Why [`serve`](super::serve) stopped a request's body. Found as the source of the body's error
/// (`std::error::Error::source` chain, or `downcast_ref` on a boxed error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body did not arrive within [`ServeOptions::body_timeout`](super::ServeOptions::body_timeout).
    #[error("the request body did not arrive in time")]
    Timeout,
    /// The body is larger than [`ServeOptions::max_body_bytes`](super::ServeOptions::max_body_bytes).
    #[error("the request body is larger than {max} bytes")]
    TooLarge {
        /// The cap, in bytes.
        max: usize,
    },
    /// The body budget had no room for this request within [`ServeOptions::budget_wait`](super::ServeOptions::budget_wait).
    #[error("the server is busy reading other requests")]
    Busy,
}

impl BodyError {
    /// The status to answer with: `408`, `413` or `503`.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short, stable name for the reason (metrics labels, log fields): `body_timeout`,
    /// `too_large` or `busy`.
    pub fn reason(&self) -> &'static str {
        match self {
            BodyError::Timeout => "body_timeout",
            BodyError::TooLarge { .. } => "too_large",
            BodyError::Busy => "busy",
        }
    }

    /// Finds a [`BodyError`] in an error's source chain (as axum and `http-body-util` wrap it).
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<BodyError> {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(error) = current {
            if let Some(found) = error.downcast_ref::<BodyError>() {
                return Some(*found);
            }
            current = error.source();
        }
        None
    }
}

/// Reads a whole request body served by [`serve`](super::serve) (or any body), at most `max` bytes: the
/// helper the handlers of this crate and of `chip-gate-inbox` share. Its error says which
/// status to answer with.
///
/// # Errors
/// [`BodyError::TooLarge`] past `max`, or the [`BodyError`] the server stopped the body with;
/// `None` inside [`ReadBodyError::Unreadable`] when the connection failed.
pub async fn read_body(body: Body, max: usize) -> Result<Bytes, ReadBodyError> {
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => {
            if error.is::<http_body_util::LengthLimitError>() {
                return Err(ReadBodyError::Bounded(BodyError::TooLarge { max }));
            }
            match BodyError::find(error.as_ref()) {
                Some(bounded) => Err(ReadBodyError::Bounded(bounded)),
                None => Err(ReadBodyError::Unreadable),
            }
        }
    }
}

/// Why [`read_body`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadBodyError {
    /// A bound of [`serve`](super::serve) or the size cap stopped it.
    #[error(transparent)]
    Bounded(#[from] BodyError),
    /// The connection failed while the body was read: `400 Bad Request`.
    #[error("the request body could not be read")]
    Unreadable,
}

impl ReadBodyError {
    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            ReadBodyError::Bounded(error) => error.status(),
            ReadBodyError::Unreadable => StatusCode::BAD_REQUEST,
        }
    }
}
