//! A receiver shaped for production, configured from the environment: the intake on a public
//! listener, health and metrics on a private one, a worker in the same process, logs through
//! `RUST_LOG`, and a clean stop on SIGTERM or Ctrl-C. The inbox README's "Deployment" section
//! walks through it; put your own handling in `handle`.
//!
//! ```sh
//! CHIP_WEBHOOK_KEYS_FILE=keys.pem cargo run -p chip-gate-inbox --example receiver
//! ```
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `CHIP_WEBHOOK_KEYS_FILE` | (required) | PEM file: one webhook's `public_key`, or a bundle of several (`chip webhooks apply --keys-out`) |
//! | `CHIP_INBOX_DATABASE_URL` | `sqlite://chip-inbox.db` | `sqlite://PATH` or `postgres://...` (with `?sslmode=verify-full&sslrootcert=PATH` for TLS) |
//! | `CHIP_INBOX_DATABASE_PASSWORD_FILE` | | a file holding the PostgreSQL password, kept out of the URL and the environment |
//! | `LISTEN` | `0.0.0.0:8080` | public: `POST /chip/webhook` |
//! | `ADMIN_LISTEN` | `127.0.0.1:9090` | private: `GET /livez`, `GET /readyz`, `GET /metrics` |
//! | `RUST_LOG` | `info` | log filter (`tracing-subscriber`'s syntax) |

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use chip_gate::Verifier;
use chip_gate::serve::ServeOptions;
use chip_gate_inbox::{Inbox, InboxOptions, StoredDelivery, WorkerOptions};
use metrics_exporter_prometheus::PrometheusBuilder;
use tracing_subscriber::EnvFilter;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    if let Err(e) = run().await {
        tracing::error!("{e}");
        std::process::exit(1);
    }
}

/// Your business: what to do with one delivery (at least once: make it idempotent with
/// `delivery.dedup_key()`, or use `Worker::run_in_transaction` for effects in the same database).
async fn handle(delivery: StoredDelivery) -> Result<(), Error> {
    tracing::info!(
        event = delivery.summary.event.as_str(),
        object = delivery.summary.object_id.as_deref().unwrap_or("-"),
        "delivery handled"
    );
    Ok(())
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

async fn run() -> Result<(), Error> {
    // Configuration. Secrets come from files, never from the command line.
    let keys_file = std::env::var("CHIP_WEBHOOK_KEYS_FILE")
        .map_err(|_| "set CHIP_WEBHOOK_KEYS_FILE to the webhook's public key file")?;
    let keys =
        std::fs::read_to_string(&keys_file).map_err(|e| format!("cannot read {keys_file}: {e}"))?;
    let verifier = Verifier::from_pem_bundle(&keys)?;
    let mut url = env_or(
        "CHIP_INBOX_DATABASE_URL",
        chip_gate_inbox::DEFAULT_DATABASE_URL,
    );
    if let Ok(file) = std::env::var("CHIP_INBOX_DATABASE_PASSWORD_FILE") {
        let password =
            std::fs::read_to_string(&file).map_err(|e| format!("cannot read {file}: {e}"))?;
        let mut parsed = url::Url::parse(&url)?;
        parsed
            .set_password(Some(password.trim_end()))
            .map_err(|()| "the database URL cannot hold a password")?;
        url = parsed.to_string();
    }

    // Starts even while the database is unreachable or read-only: /readyz says so, and it
    // stores as soon as the database takes writes. Answer CHIP within a few seconds either way.
    let options = InboxOptions::default().acquire_timeout(Duration::from_secs(5));
    let inbox = Inbox::connect_lazy(&url, options)?;
    let intake = inbox.intake(verifier)?;

    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let metrics = {
        let inbox = inbox.clone();
        get(move || async move {
            if let Err(error) = inbox.record_gauges().await {
                tracing::warn!(%error, "inbox gauges not recorded");
            }
            prometheus.render()
        })
    };
    let public: Router = intake.router("/chip/webhook");
    let admin: Router = intake.health_router().route("/metrics", metrics);

    let listener = tokio::net::TcpListener::bind(env_or("LISTEN", "0.0.0.0:8080")).await?;
    let admin_listener =
        tokio::net::TcpListener::bind(env_or("ADMIN_LISTEN", "127.0.0.1:9090")).await?;
    tracing::info!(
        public = %listener.local_addr()?,
        admin = %admin_listener.local_addr()?,
        "receiving CHIP deliveries"
    );

    // One stop signal for everything: SIGTERM (what an orchestrator sends) or Ctrl-C.
    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |stop: &tokio::sync::broadcast::Sender<()>| {
        let mut receiver = stop.subscribe();
        async move {
            let _ = receiver.recv().await;
        }
    };
    let server = tokio::spawn(chip_gate::serve::serve_with_shutdown(
        listener,
        public,
        ServeOptions::default(),
        stopped(&stop),
    ));
    let admin_server = tokio::spawn(chip_gate::serve::serve_with_shutdown(
        admin_listener,
        admin,
        ServeOptions::default(),
        stopped(&stop),
    ));
    let worker = inbox.worker(WorkerOptions::default());
    let working = tokio::spawn({
        let stopped = stopped(&stop);
        async move { worker.run_until(handle, stopped).await }
    });

    terminated().await;
    tracing::info!("stopping: not ready any more, finishing what is under way");
    // Readiness turns false at once so that load balancers send new requests elsewhere; what
    // still arrives is stored and answered. Then the servers stop accepting, answer what is
    // under way (each after its commit), and the worker hands back what it has not started.
    intake.drain();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop.send(());
    server.await??;
    admin_server.await??;
    working.await?;
    inbox.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Returns on SIGTERM or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut terminate) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
