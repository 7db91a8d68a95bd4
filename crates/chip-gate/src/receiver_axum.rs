//! An axum extractor that verifies a delivery and hands the handler a typed [`Delivery`]
//! (feature `axum`).
//!
//! [`VerifiedDelivery`] reads the raw body, verifies its `X-Signature` with the [`Verifier`] taken
//! from the router state (the state itself, or a field exposed with [`axum::extract::FromRef`]),
//! and only then parses it. A missing or bad signature is answered `401 Unauthorized`, a verified
//! body that is not a delivery `400 Bad Request`; the response says no more than that. The reason
//! is logged at `debug` level with `tracing` (it never contains the body or a key).
//!
//! ```no_run
//! use axum::{Router, routing::post};
//! use chip_gate::{VerifiedDelivery, Verifier};
//!
//! async fn webhook(VerifiedDelivery(delivery): VerifiedDelivery) -> &'static str {
//!     println!("{} for {:?}", delivery.event(), delivery.dedup_key());
//!     "ok"
//! }
//!
//! # async fn run(public_key_pem: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::from_pem(public_key_pem)?; // parsed once, at start-up
//! let app: Router = Router::new()
//!     .route("/chip/webhook", post(webhook))
//!     .with_state(verifier);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(())
//! # }
//! ```

use axum::body::Bytes;
use axum::extract::{FromRef, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::delivery::{Delivery, DeliveryError};
use crate::verify::{SIGNATURE_HEADER, Verifier, VerifyError};

/// A delivery whose signature verified, parsed. Use it as a handler argument; the router state
/// must provide a [`Verifier`] (`Verifier: FromRef<S>`).
#[derive(Clone, Debug)]
pub struct VerifiedDelivery(pub Delivery);

/// Why [`VerifiedDelivery`] refused a request. The HTTP response carries only the status and a
/// one-line generic text; the variants are for logs and tests.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryRejection {
    /// The signature is missing or wrong: `401 Unauthorized`.
    #[error(transparent)]
    Signature(#[from] VerifyError),
    /// The signature verified but the body is not a delivery: `400 Bad Request`.
    #[error(transparent)]
    Malformed(#[from] DeliveryError),
    /// The body could not be read (too large, or the connection failed): that status, usually
    /// `413 Payload Too Large` or `400 Bad Request`.
    #[error("the request body could not be read ({0})")]
    Body(StatusCode),
}

impl DeliveryRejection {
    /// The status this rejection answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            DeliveryRejection::Signature(_) => StatusCode::UNAUTHORIZED,
            DeliveryRejection::Malformed(_) => StatusCode::BAD_REQUEST,
            DeliveryRejection::Body(status) => *status,
        }
    }
}

impl IntoResponse for DeliveryRejection {
    fn into_response(self) -> Response {
        tracing::debug!(reason = %self, "webhook delivery rejected");
        let text = match self {
            DeliveryRejection::Signature(_) => "invalid signature",
            DeliveryRejection::Malformed(_) => "malformed delivery",
            DeliveryRejection::Body(_) => "unreadable body",
        };
        (self.status(), text).into_response()
    }
}

impl<S> FromRequest<S> for VerifiedDelivery
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = DeliveryRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Verifier::from_ref(state);
        let signature = request.headers().get(SIGNATURE_HEADER).cloned();
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| DeliveryRejection::Body(rejection.status()))?;
        verifier.verify_header_value(&body, signature.as_ref())?;
        Ok(VerifiedDelivery(Delivery::parse_unverified(body)?))
    }
}
