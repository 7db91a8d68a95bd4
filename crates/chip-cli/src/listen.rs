//! `chip listen`: a local receiver that verifies each delivery and prints one line for it.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chip_gate::{DedupKey, Delivery, ReceiveError, Verifier};
use clap::Args;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::{ApiArgs, Failure, Outcome, client};

/// Arguments of `chip listen`.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["key", "webhook"]))]
pub struct ListenArgs {
    /// The port to listen on, on 127.0.0.1 (0 picks a free one).
    #[arg(long)]
    port: u16,
    /// Verify with the public key in this file (any form `chip verify` takes).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Verify with this webhook's public key, fetched from the API.
    #[arg(long, value_name = "ID")]
    webhook: Option<Uuid>,
    /// Exit after this many deliveries.
    #[arg(long, value_name = "N")]
    max: Option<usize>,
}

struct Listener {
    verifier: Verifier,
    seen: Mutex<(usize, HashSet<DedupKey>)>,
    max: Option<usize>,
    done: Notify,
}

fn describe(delivery: &Delivery) -> (String, String) {
    let id = delivery.object().id().unwrap_or("-").to_owned();
    let status = delivery
        .raw_json()
        .ok()
        .and_then(|v| v.get("status").and_then(|s| s.as_str().map(str::to_owned)))
        .unwrap_or_else(|| "-".to_owned());
    (id, status)
}

async fn receive(
    State(listener): State<Arc<Listener>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let (line, status) = match listener.verifier.verify_headers_and_parse(body, &headers) {
        Ok(delivery) => {
            let (id, object_status) = describe(&delivery);
            let fresh = match delivery.dedup_key() {
                Some(key) => listener
                    .seen
                    .lock()
                    .map(|mut seen| seen.1.insert(key))
                    .unwrap_or(true),
                None => true,
            };
            let verdict = if fresh { "valid" } else { "valid (duplicate)" };
            (
                format!("{}  {id}  {object_status}  {verdict}", delivery.event()),
                StatusCode::OK,
            )
        }
        Err(ReceiveError::Signature(reason)) => (
            format!("-  -  -  invalid: {reason}"),
            StatusCode::UNAUTHORIZED,
        ),
        Err(ReceiveError::Delivery(reason)) => (
            format!("-  -  -  malformed: {reason}"),
            StatusCode::BAD_REQUEST,
        ),
        Err(other) => (
            format!("-  -  -  rejected: {other}"),
            StatusCode::BAD_REQUEST,
        ),
    };
    println!("{line}");
    let count = listener
        .seen
        .lock()
        .map(|mut seen| {
            seen.0 += 1;
            seen.0
        })
        .unwrap_or(0);
    if listener.max.is_some_and(|max| count >= max) {
        listener.done.notify_one();
    }
    status
}

async fn load_verifier(api: &ApiArgs, args: &ListenArgs) -> Result<Verifier, Failure> {
    let pem = match (&args.key, args.webhook) {
        (Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
            Failure::usage(format!("cannot read the key file {}: {e}", path.display()))
        })?,
        (None, Some(id)) => client(api)?.webhooks().retrieve(id).await?.public_key,
        (None, None) => return Err(Failure::usage("give --key FILE or --webhook ID")),
    };
    Verifier::from_pem(&pem).map_err(|e| Failure::usage(format!("unusable key: {e}")))
}

/// Runs the receiver until Ctrl-C, or until `--max` deliveries arrived.
pub async fn run(api: &ApiArgs, args: ListenArgs) -> Outcome {
    let verifier = load_verifier(api, &args).await?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let socket = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::op(format!("cannot listen on {addr}: {e}")))?;
    let local = socket
        .local_addr()
        .map_err(|e| Failure::op(format!("cannot read the listening address: {e}")))?;
    let state = Arc::new(Listener {
        verifier,
        seen: Mutex::new((0, HashSet::new())),
        max: args.max,
        done: Notify::new(),
    });
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(state.clone());
    println!(
        "Listening on http://{local}/ (any path); one line per delivery: event, object id, status, verdict"
    );
    let stop = async move {
        tokio::select! {
            _ = state.done.notified() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    axum::serve(socket, app)
        .with_graceful_shutdown(stop)
        .await
        .map_err(|e| Failure::op(format!("the receiver stopped: {e}")))?;
    Ok(0)
}
