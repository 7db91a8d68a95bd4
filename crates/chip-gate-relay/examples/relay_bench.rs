//! Deliveries per second end to end (CHIP -> relay -> app) against the intake alone (CHIP ->
//! intake, stored and acknowledged, nothing forwarded), over loopback HTTP, in one run.
//!
//! ```sh
//! cargo run --release -p chip-gate-relay --example relay_bench
//! # on PostgreSQL too (a role that may create databases):
//! CHIP_INBOX_TEST_POSTGRES_URL=postgres://chip_inbox:chip_inbox@127.0.0.1/chip_inbox \
//!   cargo run --release -p chip-gate-relay --example relay_bench
//! ```
//!
//! Both scenarios get the same signed deliveries (one object each, signed before the clock
//! starts) from the same number of concurrent senders. "intake alone" is timed from the first
//! request to the last `200`. "relay" is timed from the first request to the app's last `2xx`:
//! every delivery verified, stored, acknowledged, claimed, signed with Standard Webhooks,
//! forwarded and recorded done. The app answers `204` at once. The scenarios take turns for a
//! few rounds; the medians and their ratio are printed. Arguments: `[deliveries] [senders]
//! [rounds]` (default 3000 32 3).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chip_gate::testing::TestSigner;
use chip_gate::{Digest, Verifier};
use chip_gate_inbox::{Inbox, WorkerOptions};
use chip_gate_relay::{Forwarder, RelayConfig, Secret};

const PRIVATE_KEY: &str =
    include_str!("../../chip-gate-inbox/tests/fixtures/rsa2048-private-pkcs8.pem");
const PUBLIC_KEY: &str =
    include_str!("../../chip-gate-inbox/tests/fixtures/rsa2048-public-spki.pem");

/// Signed deliveries, one object each, about 2.3 KB like CHIP's purchases.
fn deliveries(n: usize, round: usize) -> Vec<(Bytes, String)> {
    let signer = TestSigner::from_pem(PRIVATE_KEY).unwrap();
    let padding = "x".repeat(2200);
    (0..n)
        .map(|i| {
            let body = format!(
                r#"{{"id":"bench-{round}-{i}","type":"purchase","event_type":"purchase.paid","updated_on":{i},"client":{{"full_name":"{padding}"}}}}"#
            );
            let signature = signer.sign(body.as_bytes(), Digest::Sha256).unwrap();
            (Bytes::from(body), signature)
        })
        .collect()
}

/// Sends every delivery from `senders` concurrent keep-alive clients; returns when all were
/// answered 200.
async fn send(url: &str, deliveries: Arc<Vec<(Bytes, String)>>, senders: usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (url, deliveries, next) = (url.to_owned(), deliveries.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, signature)) = deliveries.get(i) else {
                    return;
                };
                loop {
                    let sent = client
                        .post(&url)
                        .header("x-signature", signature)
                        .body(body.clone())
                        .send()
                        .await;
                    if matches!(sent, Ok(ref r) if r.status() == 200) {
                        break;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// The app: counts what it is sent and answers 204 at once.
async fn app() -> (SocketAddr, Arc<AtomicUsize>) {
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let router = axum::Router::new().route(
        "/hooks/chip",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (address, received)
}

async fn intake_alone(url: &str, deliveries: Arc<Vec<(Bytes, String)>>, senders: usize) -> f64 {
    let inbox = Inbox::connect(url).await.unwrap();
    let intake = inbox
        .intake(Verifier::from_pem(PUBLIC_KEY).unwrap())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app: axum::Router = intake.router("/chip/webhook");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(chip_gate::serve::serve_with_shutdown(
        listener,
        app,
        chip_gate::serve::ServeOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let n = deliveries.len();
    let started = Instant::now();
    send(
        &format!("http://{address}/chip/webhook"),
        deliveries,
        senders,
    )
    .await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    inbox.close().await;
    rate
}

async fn relay(url: &str, deliveries: Arc<Vec<(Bytes, String)>>, senders: usize) -> f64 {
    let (app_address, received) = app().await;
    let (secret, _) = Secret::generate().unwrap();
    let forwarder = Forwarder::new(
        &format!("http://{app_address}/hooks/chip"),
        secret,
        Duration::from_secs(30),
    )
    .unwrap();
    let mut config = RelayConfig::new(
        url,
        Verifier::from_pem(PUBLIC_KEY).unwrap(),
        forwarder,
        "127.0.0.1:0".parse().unwrap(),
    );
    config.worker = WorkerOptions::default()
        .concurrency(16)
        .batch_size(64)
        .poll_interval(Duration::from_millis(50));
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(chip_gate_relay::run(
        config,
        move |bound| {
            let _ = bound_tx.send(bound.public);
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let public = bound_rx.await.unwrap();
    let n = deliveries.len();
    let started = Instant::now();
    send(
        &format!("http://{public}/chip/webhook"),
        deliveries,
        senders,
    )
    .await;
    while received.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let _ = stop.send(());
    running.await.unwrap().unwrap();
    rate
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A fresh database for one scenario of one round.
async fn database(postgres: Option<&str>, dir: &std::path::Path, name: &str) -> String {
    match postgres {
        None => format!("sqlite://{}", dir.join(format!("{name}.db")).display()),
        Some(base) => {
            use sqlx::Connection;
            let db = format!("chip_relay_bench_{name}_{:08x}", fastrand::u32(..));
            let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&mut conn)
                .await
                .unwrap();
            let (prefix, _) = base.rsplit_once('/').unwrap();
            format!("{prefix}/{db}")
        }
    }
}

// The inbox's tests' helper, shared by path (this example uses only the patient drop).
#[allow(dead_code)]
#[path = "../../chip-gate-inbox/tests/common/drop_database.rs"]
mod drop_database;

/// Drops a scenario's PostgreSQL database once it is measured (a SQLite file goes with the
/// temporary directory), waiting out an autovacuum worker on it; one that cannot be dropped is
/// named, not fatal.
async fn drop_database(postgres: Option<&str>, url: &str) {
    let Some(base) = postgres else { return };
    use sqlx::Connection;
    let (_, db) = url.rsplit_once('/').unwrap();
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
    match drop_database::drop_database_patiently(&mut conn, db).await {
        Ok(true) => {}
        Ok(false) => eprintln!("database {db} left in place: still in use"),
        Err(error) => eprintln!("database {db} left in place: {error}"),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: [deliveries] [senders] [rounds]"))
        .collect();
    let n = args.first().copied().unwrap_or(3000);
    let senders = args.get(1).copied().unwrap_or(32);
    let rounds = args.get(2).copied().unwrap_or(3);
    let postgres = std::env::var("CHIP_INBOX_TEST_POSTGRES_URL").ok();
    let mut backends: Vec<(&str, Option<&str>)> = vec![("SQLite", None)];
    if let Some(url) = postgres.as_deref() {
        backends.push(("PostgreSQL", Some(url)));
    }
    println!("{n} deliveries, {senders} senders, {rounds} rounds, alternating; deliveries/s");
    println!(
        "{:<11} {:>14} {:>14} {:>8}",
        "database", "intake alone", "relay e2e", "ratio"
    );
    for (name, url) in backends {
        let dir = tempfile::tempdir().unwrap();
        let (mut alone, mut relayed) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let signed = Arc::new(deliveries(n, round * 2));
            let db = database(url, dir.path(), &format!("intake{round}")).await;
            alone.push(intake_alone(&db, signed, senders).await);
            drop_database(url, &db).await;
            let signed = Arc::new(deliveries(n, round * 2 + 1));
            let db = database(url, dir.path(), &format!("relay{round}")).await;
            relayed.push(relay(&db, signed, senders).await);
            drop_database(url, &db).await;
        }
        let (a, r) = (median(&mut alone), median(&mut relayed));
        println!("{name:<11} {a:>14.0} {r:>14.0} {:>7.2}x", r / a);
    }
}
