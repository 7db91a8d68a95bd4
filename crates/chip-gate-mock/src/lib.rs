#![doc = include_str!("../README.md")]

mod delivery;
mod events;
mod faults;
mod http;
mod keys;
mod store;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use chip_gate_api::types::EventName;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use chip_gate_api;
pub use delivery::{DeliveryRecord, LOG_CAP, TriggerDelivery, TriggerReport};
pub use faults::{Fault, Faults};

/// The API key a mock uses unless told otherwise. It only ever opens a local mock.
pub const DEFAULT_API_KEY: &str = "test_mock_key_chip_gate_0000000000000000";

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
    /// The only API key accepted (as `Authorization: Bearer <key>`). Never logged.
    pub api_key: String,
    /// The port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Webhooks per page of `GET /webhooks/` (default 20; at least 1).
    pub page_size: usize,
    /// Delivery retries.
    pub delivery: DeliveryConfig,
    /// Faults injected into API requests from the start (change them later with
    /// [`MockServer::set_faults`] or `POST /__mock/faults`).
    pub faults: Faults,
    /// What happens after the 16 pre-made keys are handed out: `true` (default) generates a fresh
    /// RSA-2048 key per webhook on a blocking thread, like CHIP (tens to hundreds of ms each);
    /// `false` reuses the pre-made keys round-robin (instant, but webhooks 1 and 17 share a key).
    pub generate_keys: bool,
}

impl std::fmt::Debug for MockConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockConfig")
            .field("api_key", &"<redacted>")
            .field("port", &self.port)
            .field("page_size", &self.page_size)
            .field("delivery", &self.delivery)
            .field("faults", &self.faults)
            .field("generate_keys", &self.generate_keys)
            .finish()
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            api_key: DEFAULT_API_KEY.to_owned(),
            port: 0,
            page_size: 20,
            delivery: DeliveryConfig::default(),
            faults: Faults::default(),
            generate_keys: true,
        }
    }
}

/// What can go wrong when running a mock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    /// The port could not be bound (in use, or not allowed).
    #[error("could not listen on 127.0.0.1:{port}: {source}")]
    Bind {
        /// The port asked for.
        port: u16,
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
    /// The mock is shutting down.
    #[error("the mock is shutting down")]
    ShutDown,
}

/// State shared by the server, the handlers and the delivery engine.
pub(crate) struct Shared {
    api_key: String,
    page_size: usize,
    base_url: String,
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
    /// Binds 127.0.0.1 on `config.port` (0 = a free port) and starts serving.
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
        let keys = keys::KeyPool::new(config.generate_keys)?;

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, config.port))
            .await
            .map_err(|source| MockError::Bind {
                port: config.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| MockError::Bind {
            port: config.port,
            source,
        })?;
        let base_url = format!("http://{addr}/api/v1");
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            api_key: config.api_key,
            page_size: config.page_size,
            base_url: base_url.clone(),
            store: RwLock::new(store::Store::default()),
            faults: Mutex::new(faults::FaultState::new(config.faults)),
            keys,
            engine: delivery::Engine::new(config.delivery, stop_rx.clone())?,
        });
        let app = http::router(shared.clone());
        let task = tokio::spawn(http::serve(listener, app, stop_rx));
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
        format!("http://{}", self.addr)
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
    /// Returns once each delivery's first attempt has finished (or, if an earlier event for the
    /// same object is still being delivered, at once, with `queued: true`). Failed deliveries are
    /// retried in the background; watch [`MockServer::deliveries`] or use
    /// [`MockServer::wait_idle`] / [`MockServer::wait_for_deliveries`].
    pub async fn trigger(
        &self,
        event: EventName,
        object_id: Option<Uuid>,
    ) -> Result<TriggerReport, MockError> {
        delivery::trigger(&self.shared, event, object_id).await
    }

    /// The delivery log: every attempt so far (the latest [`LOG_CAP`]), in the order they finished.
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

    /// How many webhooks are stored.
    pub fn webhook_count(&self) -> usize {
        read(&self.shared.store).len()
    }

    /// The stored webhooks, in creation order.
    pub fn webhooks(&self) -> Vec<chip_gate_api::types::Webhook> {
        read(&self.shared.store)
            .iter()
            .map(|s| s.webhook.clone())
            .collect()
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
