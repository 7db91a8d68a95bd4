#![doc = include_str!("../README.md")]

mod api;
mod control;
mod delivery;
mod events;
mod faults;
mod guards;
mod keys;
mod serve;
mod store;
mod validate;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use chip_gate_api::types::EventName;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use chip_gate_api;
pub use delivery::{DeliveryRecord, LOG_CAP, TriggerDelivery, TriggerReport};
pub use events::{SAMPLES, Sample};
pub use faults::{DeliveryFaults, Fault, Faults};

/// A fixed, well-known API key, for tests that want a stable one. [`MockConfig::default`] does
/// not use it: by default each mock gets a fresh random key (see [`random_api_key`]), so a web
/// page cannot guess the key of a developer's mock.
pub const DEFAULT_API_KEY: &str = "test_mock_key_chip_gate_0000000000000000";

/// A fresh random API key, `test_mock_` followed by 32 hex digits (128 bits from the system's
/// secure random source).
pub fn random_api_key() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // The system source failed (never seen in practice): fall back to a seeded generator.
        let n = fastrand::u128(..);
        bytes = n.to_le_bytes();
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("test_mock_{hex}")
}

/// How the mock words its answers.
///
/// [`Variant::Documented`] answers exactly as CHIP's published document describes;
/// [`Variant::Variations`] answers with the variations CHIP's document allows and a real CHIP (or a
/// proxy in front of it) may send, so that a client can be tested against both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Variant {
    /// As CHIP documents: every webhook field present (`type`, `created_on`, `updated_on`,
    /// `all_events`, `events` as a list), list envelopes with `results`, `next` and `previous`
    /// (null at the ends), absolute page links (`http://127.0.0.1:PORT/api/v1/webhooks/?page=2`),
    /// and a 401 with a JSON error body.
    #[default]
    Documented,
    /// What CHIP's document allows beyond the tidy reading: relative page links
    /// (`/api/v1/webhooks/?page=2`), no `previous` key at all and no `next` key on the last page,
    /// webhooks without the fields CHIP does not require (`type`, `created_on`, `updated_on`;
    /// `all_events` only when true; `events` null for an all-events webhook), and a 401 with no
    /// body.
    Variations,
}

/// Caps on what one mock will hold or do, so that a runaway test or a hostile client cannot make
/// it grow without bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most webhooks stored at once (default 1,000); a create past it is refused with 400
    /// (`{"__all__": [{"code": "limit", ...}]}`). At least 1.
    pub max_webhooks: usize,
    /// The most connections served at once (default 256); further connections wait in the
    /// operating system's accept queue until one closes. At least 1.
    pub max_connections: usize,
    /// The most deliveries (events) waiting or in progress for one object (default 64); a trigger
    /// past it is refused with 429 ([`MockError::Busy`] from [`MockServer::trigger`]). At least 1.
    pub max_queued_per_object: usize,
    /// The most deliveries waiting or in progress over all objects (default 4,096); a trigger
    /// past it is refused like a full object queue. At least 1.
    pub max_pending_deliveries: usize,
    /// The most deliveries waiting, in progress or between retries for one webhook (default 64).
    /// Each event a webhook is sent holds one place until the webhook acknowledges it, its
    /// attempts run out or the webhook is deleted. A trigger that would put any subscribed
    /// webhook past it is refused whole with 429 ([`MockError::Busy`] from
    /// [`MockServer::trigger`], naming the webhook), so no webhook receives that event. At
    /// least 1.
    pub max_pending_per_webhook: usize,
    /// The most delivery attempts (outbound HTTP requests) in progress at once, over all webhooks
    /// (default 64). Further attempts wait for a slot, first come first served; none is dropped,
    /// and the wait is not counted in [`DeliveryConfig::request_timeout`]. Each attempt has a
    /// connection of its own, closed once its answer is read, so this also bounds the mock's
    /// outbound sockets. At least 1.
    pub max_outbound_requests: usize,
    /// The most bytes read from each callback's answer (default 4,096); the rest is never read
    /// and the connection is closed.
    pub callback_read_bytes: usize,
    /// The most attempts kept in the delivery log (default [`LOG_CAP`], 10,000); older ones are
    /// dropped first. At least 1.
    pub delivery_log: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_webhooks: 1_000,
            max_connections: 256,
            max_queued_per_object: 64,
            max_pending_deliveries: 4_096,
            max_pending_per_webhook: 64,
            max_outbound_requests: 64,
            callback_read_bytes: 4_096,
            delivery_log: LOG_CAP,
        }
    }
}

impl Limits {
    fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("max_webhooks", self.max_webhooks),
            ("max_connections", self.max_connections),
            ("max_queued_per_object", self.max_queued_per_object),
            ("max_pending_deliveries", self.max_pending_deliveries),
            ("max_pending_per_webhook", self.max_pending_per_webhook),
            ("max_outbound_requests", self.max_outbound_requests),
            ("delivery_log", self.delivery_log),
        ] {
            if value == 0 {
                return Err(format!("limits.{name} must be at least 1"));
            }
        }
        Ok(())
    }
}

/// How deliveries are retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Attempts per delivery, the first included (CHIP makes 1 + 8). At least 1.
    pub max_attempts: u32,
    /// The gap after the first failed attempt; each later gap doubles, up to `backoff_cap`.
    pub backoff_base: Duration,
    /// The longest gap between two attempts.
    pub backoff_cap: Duration,
    /// How long one attempt may take (connect, send, and read the answer).
    pub request_timeout: Duration,
}

impl Default for DeliveryConfig {
    /// Fast retries for local work: 5 attempts, gaps 100 ms, 200 ms, 400 ms, 800 ms (cap 2 s),
    /// 5 s per attempt.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// How to start a mock.
#[derive(Clone, PartialEq)]
pub struct MockConfig {
    /// The only API key accepted (as `Authorization: Bearer <key>`). Never logged. The default is
    /// a fresh [`random_api_key`] per `MockConfig::default()` call.
    pub api_key: String,
    /// The address to listen on (default 127.0.0.1). While it is a loopback address the mock
    /// refuses (403) every request whose `Host` is not a loopback name or address (`localhost`,
    /// `127.0.0.0/8`, `[::1]`, any port), so a web page that rebinds its own domain to 127.0.0.1
    /// cannot drive it. Binding anything else (for example `0.0.0.0`, on purpose, to reach the
    /// mock from a container) turns that check off.
    pub bind: IpAddr,
    /// The port; 0 picks a free one.
    pub port: u16,
    /// Webhooks per page of `GET /webhooks/` (default 20; at least 1).
    pub page_size: usize,
    /// How answers are worded: as CHIP documents (default) or with the variations CHIP may send.
    pub variant: Variant,
    /// Caps on stored webhooks, connections, delivery queues, outbound requests and callback
    /// answers.
    pub limits: Limits,
    /// Delivery retries.
    pub delivery: DeliveryConfig,
    /// Faults injected into API requests from the start (change them later with
    /// [`MockServer::set_faults`] or `POST /__mock/faults`).
    pub faults: Faults,
    /// Duplicated and reordered deliveries from the start (change them later with
    /// [`MockServer::set_delivery_faults`] or `POST /__mock/delivery_faults`).
    pub delivery_faults: DeliveryFaults,
    /// What happens after the 16 pre-made keys are handed out: `true` (default) generates a fresh
    /// RSA-2048 key per webhook on a blocking thread, like CHIP (tens to hundreds of ms each);
    /// `false` reuses the pre-made keys round-robin (instant, but webhooks 1 and 17 share a key).
    pub generate_keys: bool,
}

impl std::fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockConfig")
            .field("api_key", &"<redacted>")
            .field("bind", &self.bind)
            .field("port", &self.port)
            .field("page_size", &self.page_size)
            .field("variant", &self.variant)
            .field("limits", &self.limits)
            .field("delivery", &self.delivery)
            .field("faults", &self.faults)
            .field("delivery_faults", &self.delivery_faults)
            .field("generate_keys", &self.generate_keys)
            .finish()
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            api_key: random_api_key(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            page_size: 20,
            variant: Variant::Documented,
            limits: Limits::default(),
            delivery: DeliveryConfig::default(),
            faults: Faults::default(),
            delivery_faults: DeliveryFaults::default(),
            generate_keys: true,
        }
    }
}

/// What can go wrong when running a mock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    /// The address could not be bound (in use, or not allowed).
    #[error("could not listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The configuration cannot work; the message says which setting.
    #[error("invalid mock configuration: {0}")]
    InvalidConfig(String),
    /// A key could not be loaded, generated or used.
    #[error("key error: {0}")]
    Key(String),
    /// The delivery HTTP client failed to build or a body failed to encode.
    #[error("delivery client error: {0}")]
    Http(String),
    /// A wait gave up before its condition held.
    #[error("timed out after {0:?} waiting for deliveries")]
    Timeout(Duration),
    /// A delivery queue is full (see [`Limits`]); try again once earlier deliveries finish.
    #[error("too many deliveries waiting: {0}")]
    Busy(String),
    /// The mock is shutting down.
    #[error("the mock is shutting down")]
    ShutDown,
}

/// State shared by the server, the handlers and the delivery engine.
pub(crate) struct Shared {
    api_key: String,
    page_size: usize,
    /// `http://ADDR` with no trailing slash (a loopback address when bound to all interfaces).
    root_url: String,
    variant: Variant,
    limits: Limits,
    /// Whether the `Host` of every request must name a loopback host.
    check_host: bool,
    store: RwLock<store::Store>,
    faults: Mutex<faults::FaultState>,
    keys: keys::KeyPool,
    engine: delivery::Engine,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read<T>(m: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write<T>(m: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(PoisonError::into_inner)
}

/// A running mock. Dropping it stops the server and any pending retries; [`MockServer::shutdown`]
/// does the same and waits for the listener to close.
pub struct MockServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    base_url: String,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// Binds `config.bind` (127.0.0.1 by default) on `config.port` (0 = a free port) and starts
    /// serving.
    pub async fn start(config: MockConfig) -> Result<MockServer, MockError> {
        if config.api_key.trim().is_empty() || config.api_key.chars().any(char::is_whitespace) {
            return Err(MockError::InvalidConfig(
                "api_key must be non-empty and contain no whitespace".into(),
            ));
        }
        if config.page_size == 0 {
            return Err(MockError::InvalidConfig(
                "page_size must be at least 1".into(),
            ));
        }
        config.faults.validate().map_err(MockError::InvalidConfig)?;
        config
            .delivery_faults
            .validate()
            .map_err(MockError::InvalidConfig)?;
        config.limits.validate().map_err(MockError::InvalidConfig)?;
        let keys = keys::KeyPool::new(config.generate_keys)?;

        let wanted = SocketAddr::new(config.bind, config.port);
        let listener = TcpListener::bind(wanted)
            .await
            .map_err(|source| MockError::Bind {
                addr: wanted,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| MockError::Bind {
            addr: wanted,
            source,
        })?;
        // Bound to every interface: reach it through loopback.
        let reach = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), addr.port())
            }
            _ => addr,
        };
        let root_url = format!("http://{reach}");
        let base_url = format!("{root_url}/api/v1");
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            api_key: config.api_key,
            page_size: config.page_size,
            root_url,
            variant: config.variant,
            check_host: guards::host_check_applies(config.bind),
            store: RwLock::new(store::Store::default()),
            faults: Mutex::new(faults::FaultState::new(config.faults)),
            keys,
            engine: delivery::Engine::new(
                config.delivery,
                config.limits.clone(),
                config.delivery_faults,
                stop_rx.clone(),
            )?,
            limits: config.limits,
        });
        let app = serve::router(shared.clone());
        let connections = shared.limits.max_connections;
        let task = tokio::spawn(serve::serve(listener, app, connections, stop_rx));
        tracing::info!(%base_url, "chip-gate-mock listening");
        Ok(MockServer {
            shared,
            addr,
            base_url,
            stop,
            task: Some(task),
        })
    }

    /// The API's base URL, e.g. `http://127.0.0.1:41234/api/v1` (no trailing slash).
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The URL of the mock's root, e.g. `http://127.0.0.1:41234` (where `/__mock/*` lives).
    pub fn root_url(&self) -> String {
        self.shared.root_url.clone()
    }

    /// The API key the mock accepts.
    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    /// The address the mock listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Fires `event` about the object `object_id` (a fresh id when `None`) to every webhook
    /// subscribed to it or to all events.
    ///
    /// Fails with [`MockError::Busy`] when the object's queue, a subscribed webhook's queue or the
    /// mock's delivery queue is full (see [`Limits`]); then no webhook receives the event.
    ///
    /// Returns once each delivery's first attempt has finished (or, if an earlier event for the
    /// same object is still being delivered, at once, with `queued: true`). First attempts wait
    /// for an outbound slot ([`Limits::max_outbound_requests`]) like any other. Failed deliveries are
    /// retried in the background; watch [`MockServer::deliveries`] or use
    /// [`MockServer::wait_idle`] / [`MockServer::wait_for_deliveries`].
    pub async fn trigger(
        &self,
        event: EventName,
        object_id: Option<Uuid>,
    ) -> Result<TriggerReport, MockError> {
        delivery::trigger(&self.shared, event, object_id).await
    }

    /// The delivery log: every attempt so far (the latest [`Limits::delivery_log`]), in the order
    /// they finished.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.shared.engine.records()
    }

    /// Waits until `done` returns true for the delivery log, or fails after `timeout`. Returns the
    /// log that satisfied it.
    pub async fn wait_for_deliveries<F>(
        &self,
        timeout: Duration,
        mut done: F,
    ) -> Result<Vec<DeliveryRecord>, MockError>
    where
        F: FnMut(&[DeliveryRecord]) -> bool,
    {
        let mut changes = self.shared.engine.subscribe();
        let wait = async {
            loop {
                changes.borrow_and_update();
                let log = self.deliveries();
                if done(&log) {
                    return Ok(log);
                }
                if changes.changed().await.is_err() {
                    return Err(MockError::ShutDown);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| MockError::Timeout(timeout))?
    }

    /// Waits until no delivery is in progress or waiting for a retry, or fails after `timeout`.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<(), MockError> {
        let mut changes = self.shared.engine.subscribe();
        let wait = async {
            loop {
                changes.borrow_and_update();
                if self.shared.engine.pending() == 0 {
                    return Ok(());
                }
                if changes.changed().await.is_err() {
                    return Err(MockError::ShutDown);
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| MockError::Timeout(timeout))?
    }

    /// Replaces the fault settings (and restarts the script and the random sequence).
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults::FaultState::new(faults);
    }

    /// The fault settings in force, with what is left of the script.
    pub fn faults(&self) -> Faults {
        lock(&self.shared.faults).faults()
    }

    /// Replaces the delivery fault settings (and restarts their random sequence). They apply to
    /// events triggered and attempts made from now on. Fails with [`MockError::InvalidConfig`]
    /// when a rate is out of range.
    pub fn set_delivery_faults(&self, faults: DeliveryFaults) -> Result<(), MockError> {
        faults.validate().map_err(MockError::InvalidConfig)?;
        self.shared.engine.set_delivery_faults(faults);
        Ok(())
    }

    /// The delivery fault settings in force.
    pub fn delivery_faults(&self) -> DeliveryFaults {
        self.shared.engine.delivery_faults()
    }

    /// How many webhooks are stored.
    pub fn webhook_count(&self) -> usize {
        read(&self.shared.store).len()
    }

    /// The stored webhooks, in creation order, as the API documents them (read through the
    /// generated client's type).
    pub fn webhooks(&self) -> Vec<chip_gate_api::types::Webhook> {
        read(&self.shared.store)
            .iter()
            .filter_map(|w| serde_json::from_value(w.to_json(Variant::Documented)).ok())
            .collect()
    }

    /// How answers are worded (see [`Variant`]).
    pub fn variant(&self) -> Variant {
        self.shared.variant
    }

    /// The company public key served at `GET /public_key/` (SPKI PEM).
    pub fn company_public_key(&self) -> String {
        self.shared.keys.company().public_pem().to_owned()
    }

    /// Deletes every webhook and clears the delivery log.
    pub fn reset(&self) {
        write(&self.shared.store).clear();
        self.shared.engine.clear();
    }

    /// Stops accepting connections, closes open ones, stops retries, and waits for the listener
    /// to be released.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}
