//! The relay: an intake on a public listener, health and metrics on a private one, and workers
//! forwarding what was stored, until a shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use chip_gate::Verifier;
use chip_gate::serve::ServeOptions;
use chip_gate_inbox::{Inbox, InboxOptions, StoredDelivery, WorkerOptions};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::forward::Forwarder;

/// Why the relay could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The database URL is not usable (the inbox's error).
    #[error(transparent)]
    Inbox(#[from] chip_gate_inbox::InboxError),
    /// A listener could not be bound, or a server failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// Everything the relay needs.
#[derive(Debug)]
pub struct RelayConfig {
    /// The inbox's database: `sqlite://PATH` (one relay) or `postgres://...` (replicas).
    pub database_url: String,
    /// The keys CHIP's deliveries verify with: the webhooks' `public_key`s (a bundle), and the
    /// company key for purchases' `success_callback`s.
    pub verifier: Verifier,
    /// Where and how deliveries are sent on.
    pub forwarder: Forwarder,
    /// The public listener (CHIP posts to [`path`](Self::path) there).
    pub listen: SocketAddr,
    /// The private listener for `/livez`, `/readyz` and `/metrics`; `None` serves them nowhere.
    pub admin_listen: Option<SocketAddr>,
    /// The path CHIP posts to (default `/chip/webhook`).
    pub path: String,
    /// The workers' settings: attempts, backoff, stale policy, concurrency, lease.
    pub worker: WorkerOptions,
    /// How many workers this relay runs (each claims its own batches; default 1).
    pub workers: usize,
    /// The inbox's settings (pool size, acquire timeout: keep it a few seconds).
    pub inbox: InboxOptions,
    /// The Prometheus recorder's handle, for `/metrics` (install the recorder once per process).
    pub metrics: Option<PrometheusHandle>,
    /// The bounds of the public listener (connections, header and body deadlines, body bytes):
    /// see [`ServeOptions`].
    pub serve: ServeOptions,
}

impl RelayConfig {
    /// A relay with the defaults: `/chip/webhook`, no admin listener, one worker with default
    /// settings, a 5 s acquire timeout.
    pub fn new(
        database_url: impl Into<String>,
        verifier: Verifier,
        forwarder: Forwarder,
        listen: SocketAddr,
    ) -> Self {
        Self {
            database_url: database_url.into(),
            verifier,
            forwarder,
            listen,
            admin_listen: None,
            path: "/chip/webhook".to_owned(),
            worker: WorkerOptions::default(),
            workers: 1,
            inbox: InboxOptions::default().acquire_timeout(Duration::from_secs(5)),
            metrics: None,
            serve: ServeOptions::default(),
        }
    }
}

/// The addresses a started relay listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// The public listener.
    pub public: SocketAddr,
    /// The private one, if any.
    pub admin: Option<SocketAddr>,
}

/// Runs a relay until `shutdown` completes, calling `started` once its listeners are bound.
///
/// It starts even while the database is unreachable (readiness says so, and it stores as soon
/// as it can). On shutdown: readiness turns to draining, the servers stop accepting and answer
/// what is under way after its commit, the workers hand back what they had not started and
/// finish what they had; then this returns.
///
/// # Errors
/// [`RelayError`] when the URL is unusable or a listener cannot be bound.
pub async fn run<S, F>(config: RelayConfig, started: F, shutdown: S) -> Result<(), RelayError>
where
    S: Future<Output = ()> + Send + 'static,
    F: FnOnce(Bound),
{
    let inbox = Inbox::connect_lazy(&config.database_url, config.inbox.clone())?;
    let intake = inbox.intake(config.verifier)?;
    let bind = |address: SocketAddr| async move {
        tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| RelayError::Io {
                what: format!("cannot listen on {address}"),
                source,
            })
    };
    let listener = bind(config.listen).await?;
    let admin_listener = match config.admin_listen {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    let local = |l: &tokio::net::TcpListener| {
        l.local_addr().map_err(|source| RelayError::Io {
            what: "no local address".to_owned(),
            source,
        })
    };
    let bound = Bound {
        public: local(&listener)?,
        admin: admin_listener.as_ref().map(local).transpose()?,
    };
    tracing::info!(
        public = %bound.public,
        admin = ?bound.admin,
        forward_to = config.forwarder.url(),
        "chip relay: receiving CHIP deliveries"
    );

    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |stop: &tokio::sync::broadcast::Sender<()>| {
        let mut receiver = stop.subscribe();
        async move {
            let _ = receiver.recv().await;
        }
    };
    let public: Router = intake.router(&config.path);
    let server = tokio::spawn(chip_gate::serve::serve_with_shutdown(
        listener,
        public,
        config.serve.clone(),
        stopped(&stop),
    ));
    let admin_server = admin_listener.map(|listener| {
        let mut admin: Router = intake.health_router();
        if let Some(handle) = config.metrics {
            let inbox = inbox.clone();
            admin = admin.route(
                "/metrics",
                get(move || async move {
                    if let Err(error) = inbox.record_gauges().await {
                        tracing::debug!(%error, "inbox gauges not recorded");
                    }
                    handle.render()
                }),
            );
        }
        tokio::spawn(chip_gate::serve::serve_with_shutdown(
            listener,
            admin,
            ServeOptions::default(),
            stopped(&stop),
        ))
    });
    let mut workers = Vec::new();
    for _ in 0..config.workers.max(1) {
        let worker = inbox.worker(config.worker.clone());
        let forwarder = config.forwarder.clone();
        let stopped = stopped(&stop);
        workers.push(tokio::spawn(async move {
            worker
                .run_until(
                    move |delivery: StoredDelivery| {
                        let forwarder = forwarder.clone();
                        async move { forwarder.forward(&delivery).await }
                    },
                    stopped,
                )
                .await;
        }));
    }
    started(bound);

    shutdown.await;
    tracing::info!("chip relay: stopping; finishing what is under way");
    intake.drain();
    let _ = stop.send(());
    let io = |what: &str, error: tokio::task::JoinError| RelayError::Io {
        what: what.to_owned(),
        source: std::io::Error::other(error.to_string()),
    };
    server
        .await
        .map_err(|e| io("the server stopped", e))?
        .map_err(|source| RelayError::Io {
            what: "the server failed".to_owned(),
            source,
        })?;
    if let Some(admin) = admin_server {
        admin
            .await
            .map_err(|e| io("the admin server stopped", e))?
            .map_err(|source| RelayError::Io {
                what: "the admin server failed".to_owned(),
                source,
            })?;
    }
    for worker in workers {
        worker.await.map_err(|e| io("a worker stopped", e))?;
    }
    inbox.close().await;
    tracing::info!("chip relay: stopped");
    Ok(())
}
