//! axum integration (feature `axum`): a handler and a router that store a delivery before
//! acknowledging it.

use axum::Router;
use axum::body::Body;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chip_gate::serve::{BodyError, ReadBodyError, read_body};

use crate::error::IntakeError;
use crate::intake::Intake;

/// The axum handler: `post(handler)` with an [`Intake`] as the state (or use
/// [`Intake::router`]).
///
/// Checks the `X-Signature` header before reading the body (one header, base64, of a length a
/// configured key produces: `401` otherwise), reads at most the verifier's
/// [`max_body_bytes`](chip_gate::Verifier::max_body_bytes) (`413` past it), verifies, stores, and
/// answers `200` only once the delivery is committed (`503` when it could not be stored, so CHIP
/// delivers it again). Serve it with [`chip_gate::serve::serve`], which bounds the time, bytes and
/// connections an anonymous caller can take before the signature is checked.
///
/// Each refusal (other than a storage failure, logged at `error`) is logged at `warn` with its
/// reason and the caller's address, at most 10 lines per 5 s
/// ([`chip_gate::serve::log_refusal`]).
pub async fn handler(State(intake): State<Intake>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0);
    let result = receive(&intake, request).await;
    if let Err(error) = &result
        && !matches!(error, IntakeError::Storage(_))
    {
        chip_gate::serve::log_refusal(peer, error.reason(), error, error.status());
    }
    respond(result)
}

async fn receive(intake: &Intake, request: Request) -> Result<crate::intake::Receipt, IntakeError> {
    let (parts, body) = request.into_parts();
    // The header first: no body is read (or reserved, under `chip_gate::serve`) for a request
    // whose signature no configured key can have produced.
    intake.verifier().decode_signature_header(&parts.headers)?;
    let limit = intake.verifier().max_body_bytes();
    let body = match read_body(body, limit).await {
        Ok(body) => body,
        Err(error) => {
            let error = match error {
                ReadBodyError::Bounded(BodyError::TooLarge { .. }) => {
                    IntakeError::TooLarge { max: limit }
                }
                ReadBodyError::Bounded(bounded) => IntakeError::Bounded(bounded),
                _ => IntakeError::UnreadableBody,
            };
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

    /// A router answering the health checks of an orchestrator or load balancer:
    ///
    /// - `GET /livez`: `200 live` while the intake's writers run ([`Intake::is_live`]), else
    ///   `503`. It never looks at the database (restarting the process does not mend one).
    /// - `GET /readyz`: `200 ready` while deliveries are stored ([`Intake::readiness`]), else
    ///   `503` with the reason: the database cannot be written (and why), or the intake is
    ///   shutting down ([`Intake::drain`]).
    ///
    /// Merge it next to the webhook route: `app.merge(intake.health_router())`. Serve it on a
    /// private listener instead if the reasons (database errors) should not be public.
    pub fn health_router<S>(&self) -> Router<S> {
        Router::new()
            .route("/livez", get(live))
            .route("/readyz", get(ready))
            .with_state(self.clone())
    }
}

async fn live(State(intake): State<Intake>) -> Response {
    if intake.is_live() {
        (StatusCode::OK, "live").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not live: the intake's writers stopped",
        )
            .into_response()
    }
}

async fn ready(State(intake): State<Intake>) -> Response {
    let readiness = intake.readiness().await;
    (readiness.status(), readiness.to_string()).into_response()
}

impl IntoResponse for IntakeError {
    fn into_response(self) -> Response {
        let status: StatusCode = self.status();
        (status, Body::from(self.public_text())).into_response()
    }
}
