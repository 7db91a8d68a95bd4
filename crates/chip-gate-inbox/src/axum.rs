//! axum integration (feature `axum`): a handler and a router that store a delivery before
//! acknowledging it.

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chip_gate::VerifyError;
use chip_gate::verify::SIGNATURE_HEADER;
use http_body_util::{BodyExt, Limited};

use crate::error::IntakeError;
use crate::intake::Intake;

/// The axum handler: `post(handler)` with an [`Intake`] as the state (or use
/// [`Intake::router`]).
///
/// Checks the `X-Signature` header before reading the body, reads at most the verifier's
/// [`max_body_bytes`](chip_gate::Verifier::max_body_bytes) (`413` past it), verifies, stores, and
/// answers `200` only once the delivery is committed (`503` when it could not be stored, so CHIP
/// delivers it again).
pub async fn handler(State(intake): State<Intake>, request: Request) -> Response {
    respond(receive(&intake, request).await)
}

async fn receive(intake: &Intake, request: Request) -> Result<crate::intake::Receipt, IntakeError> {
    let (parts, body) = request.into_parts();
    // The header first: no body is read for a request that cannot verify.
    if parts.headers.get(SIGNATURE_HEADER).is_none() {
        tracing::debug!("delivery refused: no X-Signature header");
        return Err(VerifyError::MissingSignature.into());
    }
    let limit = intake.verifier().max_body_bytes();
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let error = if error.is::<http_body_util::LengthLimitError>() {
                IntakeError::TooLarge { max: limit }
            } else {
                IntakeError::UnreadableBody
            };
            tracing::debug!(%error, "delivery refused");
            return Err(error);
        }
    };
    intake.receive(&parts.headers, body).await
}

fn respond(result: Result<crate::intake::Receipt, IntakeError>) -> Response {
    match result {
        Ok(receipt) => (receipt.status(), receipt.public_text()).into_response(),
        Err(error) => (error.status(), error.public_text()).into_response(),
    }
}

impl Intake {
    /// A router answering `POST path` with [`handler`]. Merge it into your app:
    /// `app.merge(intake.router("/chip/webhook"))`.
    ///
    /// # Panics
    /// As [`Router::route`] does, when `path` is not a valid route (it must start with `/`):
    /// a fixed string in your code, never request input.
    pub fn router<S>(&self, path: &str) -> Router<S> {
        Router::new()
            .route(path, post(handler))
            .with_state(self.clone())
    }
}

impl IntoResponse for IntakeError {
    fn into_response(self) -> Response {
        let status: StatusCode = self.status();
        (status, Body::from(self.public_text())).into_response()
    }
}
