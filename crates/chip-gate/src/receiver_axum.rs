//! An axum extractor that verifies a delivery and hands the handler a typed [`Delivery`]
//! (feature `axum`).
//!
//! [`VerifiedDelivery`] takes the [`Verifier`] from the router state (the state itself, or a field
//! exposed with [`axum::extract::FromRef`]) and:
//!
//! 1. checks the `X-Signature` header before reading any of the body: a missing, repeated or
//!    non-base64 header, or one of a length no configured key produces, is answered
//!    `401 Unauthorized` at once;
//! 2. reads the body up to the verifier's own cap ([`Verifier::with_max_body_bytes`], 1 MiB by
//!    default), whatever the router's body limit is (an app that lifts it for uploads does not lift
//!    it for webhooks); a larger body is answered `413 Payload Too Large` (and, under
//!    [`serve`](crate::serve::serve), a body that is too slow `408`, one the server has no room
//!    for yet `503`);
//! 3. verifies the signature over the exact bytes (`401` when it does not match);
//! 4. hands the handler the delivery. A verified body is never refused: if these types cannot read
//!    it, the handler still gets it, raw, with [`Delivery::typing_problem`] saying why (refusing it
//!    would make CHIP retry for 36 hours and then drop it).
//!
//! The response to a refused request says no more than its status. The reason and the caller's
//! address (under [`serve`](crate::serve::serve)) are logged at `warn` level with `tracing`,
//! target `chip_gate::refused`, at most 10 lines per 5 s ([`log_refusal`](crate::serve::log_refusal));
//! never the body or a key.
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
//! // Not `axum::serve`: this one bounds what an anonymous caller can make the server read.
//! chip_gate::serve::serve(listener, app, chip_gate::serve::ServeOptions::default()).await?;
//! # Ok(())
//! # }
//! ```

use axum::body::Bytes;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRef, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::delivery::Delivery;
use crate::verify::{Verifier, VerifyError};

/// A delivery whose signature verified, parsed. Use it as a handler argument; the router state
/// must provide a [`Verifier`] (`Verifier: FromRef<S>`).
#[derive(Clone, Debug)]
pub struct VerifiedDelivery(pub Delivery);

/// Why [`VerifiedDelivery`] refused a request. The HTTP response carries only the status and a
/// one-line generic text; the variants are for logs and tests.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryRejection {
    /// The signature is missing, repeated or wrong: `401 Unauthorized`.
    #[error(transparent)]
    Signature(#[from] VerifyError),
    /// The body could not be read: that status (`413 Payload Too Large` past the verifier's cap,
    /// `408`/`503` when [`serve`](crate::serve::serve)'s bounds stopped it, `400 Bad Request` when
    /// the connection failed).
    #[error("the request body could not be read ({0})")]
    Body(StatusCode),
}

impl DeliveryRejection {
    /// A short, stable name for the reason (metrics labels, log fields): that of the
    /// [`VerifyError`], or `too_large`, `body_timeout`, `busy`, `unreadable_body`.
    pub fn reason(&self) -> &'static str {
        match self {
            DeliveryRejection::Signature(error) => error.reason(),
            DeliveryRejection::Body(StatusCode::PAYLOAD_TOO_LARGE) => "too_large",
            DeliveryRejection::Body(StatusCode::REQUEST_TIMEOUT) => "body_timeout",
            DeliveryRejection::Body(StatusCode::SERVICE_UNAVAILABLE) => "busy",
            DeliveryRejection::Body(_) => "unreadable_body",
        }
    }

    /// The status this rejection answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            DeliveryRejection::Signature(_) => StatusCode::UNAUTHORIZED,
            DeliveryRejection::Body(status) => *status,
        }
    }
}

impl IntoResponse for DeliveryRejection {
    fn into_response(self) -> Response {
        let text = match self {
            DeliveryRejection::Signature(_) => "invalid signature",
            DeliveryRejection::Body(StatusCode::PAYLOAD_TOO_LARGE) => "body too large",
            DeliveryRejection::Body(StatusCode::REQUEST_TIMEOUT) => "body too slow",
            DeliveryRejection::Body(StatusCode::SERVICE_UNAVAILABLE) => "busy, try again",
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
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
        let result = verified(request, state).await;
        if let Err(rejection) = &result {
            crate::serve::log_refusal(peer, rejection.reason(), rejection, rejection.status());
        }
        result
    }
}

/// The extractor's work: header, body, signature, parse.
async fn verified<S>(request: Request, state: &S) -> Result<VerifiedDelivery, DeliveryRejection>
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    let verifier = Verifier::from_ref(state);
    // The header first: no body is read (or reserved, under `serve`) for a request whose
    // signature no configured key can have produced.
    let signature = verifier.decode_signature_header(request.headers())?;
    let limit = verifier.max_body_bytes();
    let body: Bytes = crate::serve::read_body(request.into_body(), limit)
        .await
        .map_err(|error| DeliveryRejection::Body(error.status()))?;
    verifier.verify_decoded(&body, &signature)?;
    let delivery = Delivery::from_verified(body);
    if let Some(problem) = delivery.typing_problem() {
        tracing::warn!(
            event = delivery.event().as_str(),
            problem = %problem,
            "verified delivery accepted raw: its body does not fit the typed model"
        );
    }
    Ok(VerifiedDelivery(delivery))
}
