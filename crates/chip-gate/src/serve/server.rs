//! The accept loop, and serving one connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};

use super::ServeOptions;
use super::budget::{GuardState, Guarded};
use super::connections::{Conn, Phase, Shared};
use super::options::MIN_HEADER_BYTES;

/// Serves `app` on `listener` with the bounds of `options`, until the listener fails for good.
///
/// # Errors
/// Never in practice: failed accepts (out of descriptors, a client that vanished) are logged,
/// make room and are retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
) -> std::io::Result<()> {
    serve_with_shutdown(listener, app, options, std::future::pending()).await
}

/// As [`serve`], until `shutdown` completes: then no new connection is accepted, idle ones are
/// closed, and requests being answered get [`ServeOptions::drain`] to finish (their
/// connections close after their response).
///
/// # Errors
/// As [`serve`].
pub async fn serve_with_shutdown(
    listener: TcpListener,
    app: Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let (per_request, budget) = options.budget_bytes();
    let shared = Arc::new(Shared {
        connections: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(0),
        slot_freed: Notify::new(),
        budget: Arc::new(Semaphore::new(budget as usize)),
        per_request,
        options,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // At the cap with nothing that may be closed: wait for a connection to end.
        while shared.open() >= shared.options.max_connections && !shared.has_evictable() {
            tokio::select! {
                () = shared.slot_freed.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
                () = &mut shutdown => return shared.drain(stop_tx).await,
            }
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return shared.drain(stop_tx).await,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors (or a client that left before being accepted): make room
                // and try again shortly, never a busy loop.
                tracing::warn!(%error, "accepting a connection failed");
                shared.evict_oldest(None, false);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.open() >= shared.options.max_connections {
            shared.evict_oldest(None, false);
        }
        let _ = stream.set_nodelay(true);
        let conn = shared.register();
        tokio::spawn(serve_connection(
            Arc::clone(&shared),
            conn,
            stream,
            peer,
            app.clone(),
            stop_rx.clone(),
        ));
    }
}

/// Serves one connection until it ends, is closed to make room, or the server stops.
async fn serve_connection(
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt as _;

    struct Unregister(Arc<Shared>, u64);
    impl Drop for Unregister {
        fn drop(&mut self) {
            self.0.unregister(self.1);
        }
    }
    let _unregister = Unregister(Arc::clone(&shared), conn.id);

    let service = {
        let shared = Arc::clone(&shared);
        let conn = Arc::clone(&conn);
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let shared = Arc::clone(&shared);
            let conn = Arc::clone(&conn);
            let app = app.clone();
            async move {
                let started = Instant::now();
                conn.set(Phase::Reading(started));
                let response = answer(&shared, &conn, peer, app, request, started).await;
                conn.reserved.store(0, Ordering::Relaxed);
                conn.set(Phase::Waiting(Instant::now()));
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.options.header_timeout)
        .max_buf_size(shared.options.max_header_bytes.max(MIN_HEADER_BYTES))
        .max_headers(64);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let mut stopping = *stop.borrow();
    if stopping {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
                return;
            }
            () = conn.close.notified() => return,
            changed = stop.changed(), if !stopping => {
                stopping = true;
                if changed.is_ok() {
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }

    /// One request: the app gets the body through the budget, the size cap and the deadline.
    async fn answer(
        shared: &Arc<Shared>,
        conn: &Arc<Conn>,
        peer: SocketAddr,
        app: Router,
        request: hyper::Request<hyper::body::Incoming>,
        started: Instant,
    ) -> Result<http::Response<Body>, std::convert::Infallible> {
        // hyper knows the declared length (`Content-Length`), and that a request without one
        // and without chunked encoding has no body.
        let declared = http_body::Body::size_hint(request.body()).exact();
        let max = shared.per_request;
        let (mut parts, incoming) = request.into_parts();
        parts.extensions.insert(ConnectInfo(peer));
        let body = if declared == Some(0) {
            // Nothing to read or to reserve.
            conn.set(Phase::Answering);
            Body::empty()
        } else {
            let deadline = tokio::time::Instant::from_std(started + shared.options.body_timeout);
            let need = declared.map_or(max, |n| usize::try_from(n).unwrap_or(usize::MAX));
            Body::new(Guarded {
                inner: incoming,
                state: GuardState::Start,
                shared: Arc::clone(shared),
                conn: Arc::clone(conn),
                need,
                read: 0,
                max,
                deadline,
                timer: None,
                permit: None,
            })
        };
        let request = http::Request::from_parts(parts, body);
        app.oneshot(request).await
    }
}
