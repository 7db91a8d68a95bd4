//! Serving: the router that puts the routes behind their guards, and the accept loop (HTTP/1.1,
//! a cap on open connections, and a way for a fault to drop a connection on purpose).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::middleware;
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};

use crate::api::{self, not_found};
use crate::guards::{self, ConnKill};
use crate::{Shared, control};

/// The whole application.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/webhooks/", get(api::list).post(api::create))
        .route(
            "/webhooks/{id}/",
            get(api::retrieve)
                .put(api::update)
                .patch(api::partial_update)
                .delete(api::delete),
        )
        .route("/public_key/", get(api::public_key))
        .fallback(|| async { not_found() })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            guards::require_key,
        ))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            guards::inject_faults,
        ));
    let control = Router::new()
        .route("/trigger", post(control::trigger))
        .route("/deliveries", get(control::deliveries))
        .route(
            "/faults",
            get(control::get_faults).post(control::set_faults),
        )
        .route(
            "/delivery_faults",
            get(control::get_delivery_faults).post(control::set_delivery_faults),
        )
        .route("/reset", post(control::reset))
        .fallback(|| async { not_found() })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            guards::require_key,
        ));
    Router::new()
        .nest("/api/v1", api)
        .nest("/__mock", control)
        .route(
            "/__mock/health",
            get(|| async { Json(json!({"ok": true})) }),
        )
        .fallback(|| async { not_found() })
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            guards::require_loopback_host,
        ))
        .with_state(shared)
}

/// Accepts connections until `shutdown` flips, serving each with HTTP/1.1; at most
/// `max_connections` are open at once (the rest wait in the operating system's accept queue).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    max_connections: usize,
    shutdown: watch::Receiver<bool>,
) {
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt as _;

    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut stop = shutdown.clone();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let accepted = tokio::select! {
            res = listener.accept() => res,
            _ = stop.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut conn_stop = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let notify = Arc::new(Notify::new());
            let kill = ConnKill(notify.clone());
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(kill.clone());
                    app.clone().oneshot(req.map(axum::body::Body::new))
                },
            );
            // The timer makes hyper's 30 s header-read timeout apply to idle, silent clients.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = notify.notified() => {}
                _ = conn_stop.changed() => {}
            }
        });
    }
}
