//! Serving a webhook endpoint on the public internet (feature `axum`): [`serve`] runs an axum
//! [`Router`] with every read bounded before a signature can be checked.
//!
//! A webhook endpoint must be reachable by CHIP, so it is reachable by anyone. Until a delivery's
//! signature verifies, everything a caller sends is hostile: `axum::serve` alone reads headers and
//! bodies for as long as a client cares to trickle them, buffers whatever each handler asks for on
//! every connection at once, and keeps connections until the process runs out of descriptors.
//! [`serve`] keeps an anonymous caller from exhausting, stalling or crowding out the receiver:
//!
//! | bound | default | what happens past it |
//! |---|---|---|
//! | [`max_connections`](ServeOptions::max_connections) | 512 | the oldest connection that is not being answered (idle, or still sending its request) is closed to make room; when every connection is being answered, new ones wait in the OS's accept queue |
//! | [`header_timeout`](ServeOptions::header_timeout) | 5 s | a request whose head has not fully arrived is dropped with its connection (this also closes idle keep-alive connections) |
//! | [`body_timeout`](ServeOptions::body_timeout) | 10 s from the request's head | the body read fails: `408 Request Timeout` |
//! | [`max_body_bytes`](ServeOptions::max_body_bytes) | 1 MiB a request | a body declared larger fails at once, unread (`413`); a chunked one fails when it grows past it |
//! | [`body_budget`](ServeOptions::body_budget) | 32 MiB across all requests | a body is read only once its size (declared, or the per-request cap when not declared) is reserved in this budget; when it is short, the oldest request still sending its body is dropped to make room, and if that is not enough within [`budget_wait`](ServeOptions::budget_wait) (250 ms), the request is answered `503` (CHIP sends it again) |
//! | [`max_header_bytes`](ServeOptions::max_header_bytes) | 16 KiB | `431` and the connection closes |
//!
//! A request that is refused on its headers (no `X-Signature`, or one no configured key can
//! produce: see [`Verifier::decode_signature_header`](crate::Verifier::decode_signature_header))
//! never reserves or reads its body: the handlers of this crate and of `chip-gate-inbox` check the
//! header first.
//!
//! Memory: what the server holds for requests is at most
//! `body_budget + max_connections x (max_header_bytes + about 8 KiB)`, about 44 MiB with the
//! defaults, whatever callers do. A CHIP delivery (a few KiB, sent at once) is answered while
//! thousands of hostile connections come and go, because it is never the oldest.
//!
//! ```no_run
//! use axum::{Router, routing::post};
//! use chip_gate::serve::{ServeOptions, serve};
//! use chip_gate::{VerifiedDelivery, Verifier};
//!
//! async fn webhook(VerifiedDelivery(delivery): VerifiedDelivery) -> &'static str {
//!     println!("{}", delivery.event());
//!     "ok"
//! }
//!
//! # async fn run(public_key_pem: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let verifier = Verifier::from_pem(public_key_pem)?;
//! let app: Router = Router::new().route("/chip/webhook", post(webhook)).with_state(verifier);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! serve(listener, app, ServeOptions::default()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade (install the exporter you use, e.g.
//! `metrics-exporter-prometheus`; without one they cost next to nothing):
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `chip_gate_connections` | gauge | | connections open |
//! | `chip_gate_connections_closed_for_room_total` | counter | `for`: `connections`, `body_budget` | connections closed to make room (a steady rise means someone holds connections open) |
//! | `chip_gate_body_budget_bytes` | gauge | | body bytes reserved in the budget |
//! | `chip_gate_requests_refused_total` | counter | `reason`: `missing_signature`, `several_signatures`, `signature_not_base64`, `signature_length`, `signature_mismatch`, `too_large`, `body_timeout`, `busy`, `unreadable_body` | requests refused by the extractor or the inbox's handler ([`log_refusal`]) |
//!
//! Handlers find the caller's address as `axum::extract::ConnectInfo<std::net::SocketAddr>`, and a
//! body that failed one of these bounds as a [`BodyError`] inside the body's error (the extractor of
//! this crate and the inbox's handler answer with [`BodyError::status`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

use crate::verify::DEFAULT_MAX_BODY_BYTES;

/// Metric: requests refused before or at the signature check, by `reason`.
pub const REFUSED: &str = "chip_gate_requests_refused_total";
/// Metric: connections open (gauge).
pub const CONNECTIONS: &str = "chip_gate_connections";
/// Metric: connections closed to make room, by `for` (`connections` or `body_budget`).
pub const CLOSED_FOR_ROOM: &str = "chip_gate_connections_closed_for_room_total";
/// Metric: body bytes reserved in the budget (gauge).
pub const BODY_BUDGET_BYTES: &str = "chip_gate_body_budget_bytes";

/// The bounds [`serve`] applies; see the [module documentation](self) for what each one does.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    max_connections: usize,
    header_timeout: Duration,
    body_timeout: Duration,
    max_body_bytes: usize,
    body_budget: usize,
    budget_wait: Duration,
    max_header_bytes: usize,
    drain: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_connections: 512,
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(10),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_budget: 32 * 1024 * 1024,
            budget_wait: Duration::from_millis(250),
            max_header_bytes: 16 * 1024,
            drain: Duration::from_secs(10),
        }
    }
}

/// The smallest request head hyper can be limited to.
const MIN_HEADER_BYTES: usize = 8 * 1024;

impl ServeOptions {
    /// Open connections at most (default 512; at least 1). Keep it under the process's
    /// descriptor limit (`ulimit -n`, often 1,024) minus what the app needs for its database and
    /// files. Past it, the oldest connection that is idle or still sending its request is closed.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How long a client may take to send a request's head, and how long an idle keep-alive
    /// connection stays open (default 5 s; at least 1 ms).
    #[must_use]
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How long a client may take to send a request's body, counted from the arrival of its head
    /// (default 10 s). CHIP sends a delivery of a few KiB at once.
    #[must_use]
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// The largest body of one request, in bytes (default 1 MiB, as
    /// [`Verifier::max_body_bytes`](crate::Verifier::max_body_bytes)).
    #[must_use]
    pub fn max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }

    /// Body bytes held at once across all requests (default 32 MiB; at least
    /// [`max_body_bytes`](Self::max_body_bytes), at most 4 GiB).
    #[must_use]
    pub fn body_budget(mut self, bytes: usize) -> Self {
        self.body_budget = bytes;
        self
    }

    /// How long a request waits for room in the body budget before it is answered `503`
    /// (default 250 ms).
    #[must_use]
    pub fn budget_wait(mut self, wait: Duration) -> Self {
        self.budget_wait = wait;
        self
    }

    /// The largest request head (request line and headers), in bytes (default 16 KiB; at least
    /// 8 KiB).
    #[must_use]
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        self.max_header_bytes = max.max(MIN_HEADER_BYTES);
        self
    }

    /// On shutdown, how long requests being answered may take to finish before their connections
    /// are closed (default 10 s).
    #[must_use]
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// The per-request cap, never above the budget, and the budget in the semaphore's units.
    fn budget_bytes(&self) -> (usize, u32) {
        let budget = self.body_budget.max(self.max_body_bytes).max(1);
        let budget = u32::try_from(budget).unwrap_or(u32::MAX);
        let per_request = self.max_body_bytes.min(budget as usize);
        (per_request, budget)
    }
}

/// Why [`serve`] stopped a request's body. Found as the source of the body's error
/// (`std::error::Error::source` chain, or `downcast_ref` on a boxed error).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body did not arrive within [`ServeOptions::body_timeout`].
    #[error("the request body did not arrive in time")]
    Timeout,
    /// The body is larger than [`ServeOptions::max_body_bytes`].
    #[error("the request body is larger than {max} bytes")]
    TooLarge {
        /// The cap, in bytes.
        max: usize,
    },
    /// The body budget had no room for this request within [`ServeOptions::budget_wait`].
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

/// What a connection is doing, for choosing which one to close under pressure.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// Waiting for a request's head (a new or keep-alive connection), since then.
    Waiting(Instant),
    /// A request is being read (head arrived, body not complete), since its head arrived.
    Reading(Instant),
    /// A request's body is complete and it is being answered: never closed under pressure.
    Answering,
}

/// One open connection.
struct Conn {
    id: u64,
    phase: Mutex<Phase>,
    /// Body bytes this connection holds in the budget.
    reserved: AtomicU64,
    close: Notify,
}

impl Conn {
    fn set(&self, phase: Phase) {
        *lock(&self.phase) = phase;
    }

    fn phase(&self) -> Phase {
        *lock(&self.phase)
    }
}

struct Shared {
    connections: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    slot_freed: Notify,
    budget: Arc<Semaphore>,
    per_request: usize,
    options: ServeOptions,
}

/// A poisoned lock only means a panic elsewhere; the data (phases, a map) stays usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn open(&self) -> usize {
        lock(&self.connections).len()
    }

    fn register(&self) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            phase: Mutex::new(Phase::Waiting(Instant::now())),
            reserved: AtomicU64::new(0),
            close: Notify::new(),
        });
        lock(&self.connections).insert(id, Arc::clone(&conn));
        metrics::gauge!(CONNECTIONS).increment(1.0);
        conn
    }

    fn unregister(&self, id: u64) {
        if lock(&self.connections).remove(&id).is_some() {
            metrics::gauge!(CONNECTIONS).decrement(1.0);
        }
        self.slot_freed.notify_one();
    }

    fn has_evictable(&self) -> bool {
        lock(&self.connections)
            .values()
            .any(|conn| !matches!(conn.phase(), Phase::Answering))
    }

    /// Closes the connection that has waited longest without being answered (other than
    /// `except`); with `holding_body`, only one that holds room in the body budget. Returns
    /// whether one was found.
    fn evict_oldest(&self, except: Option<u64>, holding_body: bool) -> bool {
        let victim = {
            let connections = lock(&self.connections);
            connections
                .values()
                .filter(|conn| Some(conn.id) != except)
                .filter(|conn| !holding_body || conn.reserved.load(Ordering::Relaxed) > 0)
                .filter_map(|conn| match conn.phase() {
                    Phase::Waiting(since) | Phase::Reading(since) => Some((since, conn)),
                    Phase::Answering => None,
                })
                .min_by_key(|(since, _)| *since)
                .map(|(_, conn)| Arc::clone(conn))
        };
        match victim {
            Some(conn) => {
                tracing::debug!(
                    holding_body,
                    "closing the oldest connection not being answered, to make room"
                );
                metrics::counter!(
                    CLOSED_FOR_ROOM,
                    "for" => if holding_body { "body_budget" } else { "connections" }
                )
                .increment(1);
                // Not answered any more: it is no candidate for the next eviction.
                conn.set(Phase::Answering);
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }

    /// Stops every connection (idle ones at once, the others after their response) and waits
    /// up to the drain time for them.
    async fn drain(&self, stop: watch::Sender<bool>) -> std::io::Result<()> {
        let _ = stop.send(true);
        let deadline = tokio::time::Instant::now() + self.options.drain;
        while self.open() > 0 {
            if tokio::time::timeout_at(deadline, self.slot_freed.notified())
                .await
                .is_err()
            {
                break;
            }
        }
        // Whatever is left is closed: the connections end when the runtime drops their tasks,
        // or at once when told.
        for conn in lock(&self.connections).values() {
            conn.close.notify_one();
        }
        Ok(())
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

/// A request body read through the budget, the size cap and the deadline.
struct Guarded {
    inner: hyper::body::Incoming,
    state: GuardState,
    shared: Arc<Shared>,
    conn: Arc<Conn>,
    need: usize,
    read: usize,
    max: usize,
    deadline: tokio::time::Instant,
    /// The deadline's timer, made only once the body has to be waited for (most bodies are
    /// already in hyper's buffer when the handler reads them).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The room this body holds in the budget. Kept while the body's bytes can be in memory:
    /// until the body (and with it the request) is dropped.
    permit: Option<OwnedSemaphorePermit>,
}

type Reserve = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, BodyError>> + Send>>;

enum GuardState {
    /// Nothing read or reserved yet.
    Start,
    /// Waiting for room in the budget.
    Reserving(Reserve),
    /// Room reserved: reading.
    Reading,
    /// The body is complete, or failed.
    Done,
}

/// Reserves `need` bytes of the budget, closing the oldest connections still sending a body to
/// make room, for at most the budget wait.
async fn reserve(
    shared: Arc<Shared>,
    me: u64,
    need: u32,
) -> Result<OwnedSemaphorePermit, BodyError> {
    let budget = Arc::clone(&shared.budget);
    if let Ok(permit) = Arc::clone(&budget).try_acquire_many_owned(need) {
        return Ok(permit);
    }
    let deadline = tokio::time::Instant::now() + shared.options.budget_wait;
    loop {
        let evicted = shared.evict_oldest(Some(me), true);
        let wait = if evicted {
            // An evicted connection frees its room once its task has dropped it.
            Duration::from_millis(5)
        } else {
            Duration::from_millis(25)
        };
        let until = (tokio::time::Instant::now() + wait).min(deadline);
        match tokio::time::timeout_at(until, Arc::clone(&budget).acquire_many_owned(need)).await {
            Ok(Ok(permit)) => return Ok(permit),
            Ok(Err(_closed)) => return Err(BodyError::Busy),
            Err(_) if tokio::time::Instant::now() >= deadline => return Err(BodyError::Busy),
            Err(_) => {}
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(permit) = &self.permit {
            metrics::gauge!(BODY_BUDGET_BYTES).decrement(permit.num_permits() as f64);
        }
    }
}

impl Guarded {
    /// Whether the deadline has passed; arms its timer so that `cx` is woken then.
    fn past_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// Room reserved: read.
    fn hold(&mut self, permit: OwnedSemaphorePermit) {
        let held = u64::try_from(permit.num_permits()).unwrap_or(u64::MAX);
        self.conn.reserved.store(held, Ordering::Relaxed);
        metrics::gauge!(BODY_BUDGET_BYTES).increment(held as f64);
        self.permit = Some(permit);
        self.state = GuardState::Reading;
    }

    fn fail(
        &mut self,
        error: BodyError,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.state = GuardState::Done;
        Poll::Ready(Some(Err(Box::new(error))))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                GuardState::Done => return Poll::Ready(None),
                GuardState::Start => {
                    if this.need > this.max {
                        // Declared larger than allowed: refused unread, nothing reserved.
                        return this.fail(BodyError::TooLarge { max: this.max });
                    }
                    let need = u32::try_from(this.need.max(1)).unwrap_or(u32::MAX);
                    // Room at once (the usual case), or wait for it.
                    match Arc::clone(&this.shared.budget).try_acquire_many_owned(need) {
                        Ok(permit) => this.hold(permit),
                        Err(_) => {
                            let reserve = reserve(Arc::clone(&this.shared), this.conn.id, need);
                            this.state = GuardState::Reserving(Box::pin(reserve));
                        }
                    }
                }
                GuardState::Reserving(reserving) => {
                    let reserved = reserving.as_mut().poll(cx);
                    match reserved {
                        Poll::Ready(Ok(permit)) => this.hold(permit),
                        Poll::Ready(Err(error)) => return this.fail(error),
                        Poll::Pending if this.past_deadline(cx) => {
                            return this.fail(BodyError::Timeout);
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
                GuardState::Reading => {
                    let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                        Poll::Ready(frame) => frame,
                        Poll::Pending if this.past_deadline(cx) => {
                            return this.fail(BodyError::Timeout);
                        }
                        Poll::Pending => return Poll::Pending,
                    };
                    match frame {
                        None => {
                            this.state = GuardState::Done;
                            this.conn.set(Phase::Answering);
                            return Poll::Ready(None);
                        }
                        Some(Err(error)) => {
                            this.state = GuardState::Done;
                            return Poll::Ready(Some(Err(Box::new(error))));
                        }
                        Some(Ok(frame)) => {
                            if let Some(data) = frame.data_ref() {
                                this.read = this.read.saturating_add(data.len());
                                if this.read > this.max || this.read > this.need {
                                    let max = this.max.min(this.need);
                                    return this.fail(BodyError::TooLarge { max });
                                }
                            }
                            if http_body::Body::is_end_stream(&this.inner) {
                                this.conn.set(Phase::Answering);
                            }
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, GuardState::Done)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.state {
            GuardState::Done => http_body::SizeHint::with_exact(0),
            _ => self.inner.size_hint(),
        }
    }
}

/// Reads a whole request body served by [`serve`] (or any body), at most `max` bytes: the
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
    /// A bound of [`serve`] or the size cap stopped it.
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

/// How many refusal lines [`log_refusal`] writes per [`REFUSAL_WINDOW`] at most.
const REFUSALS_PER_WINDOW: u32 = 10;
/// The window of [`log_refusal`]'s rate limit.
const REFUSAL_WINDOW: Duration = Duration::from_secs(5);

/// The rate limit's state: the current window's start, lines written and lines held back.
static REFUSALS: Mutex<Option<(Instant, u32, u64)>> = Mutex::new(None);

/// Logs one refused delivery at `warn` level (target `chip_gate::refused`): the reason and the
/// caller's address, never the body or a key; `reason` is a short stable name (such as
/// [`VerifyError::reason`](crate::VerifyError::reason)), counted in `chip_gate_requests_refused_total`. At most 10 lines per 5 s; past that, one line says
/// how many were not logged. When the signature is well formed but matches no configured key, the
/// line adds the most common cause: the receiver holds the company key (`GET /public_key/`)
/// instead of the webhook's own `public_key`.
///
/// The extractor and `chip-gate-inbox`'s handler call it for every request they refuse; call it
/// from your own handler if you verify by hand.
pub fn log_refusal(
    peer: Option<SocketAddr>,
    reason: &'static str,
    detail: &dyn std::fmt::Display,
    status: StatusCode,
) {
    metrics::counter!(REFUSED, "reason" => reason).increment(1);
    let now = Instant::now();
    let held_back = {
        let mut state = lock(&REFUSALS);
        let (start, written, held) = state.get_or_insert((now, 0, 0));
        let mut report = None;
        if now.duration_since(*start) >= REFUSAL_WINDOW {
            if *held > 0 {
                report = Some(*held);
            }
            *start = now;
            *written = 0;
            *held = 0;
        }
        if *written >= REFUSALS_PER_WINDOW {
            *held += 1;
            return;
        }
        *written += 1;
        report
    };
    if let Some(count) = held_back {
        tracing::warn!(
            target: "chip_gate::refused",
            count,
            "{count} more refused deliveries were not logged in the last {} s",
            REFUSAL_WINDOW.as_secs()
        );
    }
    let peer = peer.map_or_else(|| "unknown".to_owned(), |peer| peer.to_string());
    let text = detail.to_string();
    if reason == "signature_mismatch" {
        tracing::warn!(
            target: "chip_gate::refused",
            %peer,
            status = status.as_u16(),
            reason,
            detail = %text,
            "delivery refused. If every delivery is refused, check the key: a webhook's deliveries \
             verify with that webhook's public_key (returned when it was created, or by \
             GET /webhooks/{{id}}/), not the company key of GET /public_key/"
        );
    } else {
        tracing::warn!(
            target: "chip_gate::refused",
            %peer,
            status = status.as_u16(),
            reason,
            detail = %text,
            "delivery refused"
        );
    }
}
