//! What the bounds of `chip_gate::serve` cost: the same receiver (the `VerifiedDelivery`
//! extractor, CHIP's real signed delivery) served by `axum::serve` (the baseline, unbounded) and
//! by `chip_gate::serve` with its defaults, over loopback HTTP/1.1 at 1, 8, 32 and 256 concurrent
//! senders (keep-alive connections), in one run, alternating rounds. Prints deliveries/s and the
//! ratio to the baseline.
//!
//! `cargo run --release -p chip-gate --features axum --example serve_bench [-- REQUESTS]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::post;
use chip_gate::serve::{ServeOptions, serve};
use chip_gate::{VerifiedDelivery, Verifier};

const PUBLIC_KEY: &str =
    include_str!("../tests/fixtures/chip-collect/signed-vector/public_key.pem");
const BODY: &[u8] = include_bytes!("../tests/fixtures/chip-collect/signed-vector/body.json");
const SIGNATURE: &str =
    include_str!("../tests/fixtures/chip-collect/signed-vector/x-signature.txt");

fn app() -> Router {
    let verifier = Verifier::from_pem(PUBLIC_KEY).expect("the fixture key parses");
    Router::new()
        .route(
            "/chip",
            post(|VerifiedDelivery(delivery): VerifiedDelivery| async move {
                std::hint::black_box(delivery.dedup_key());
                "ok"
            }),
        )
        .with_state(verifier)
}

/// Sends `total` deliveries from `senders` concurrent keep-alive clients; deliveries per second.
async fn load(url: &str, senders: usize, total: usize) -> f64 {
    let per_sender = total.div_ceil(senders);
    let url: Arc<str> = Arc::from(url);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let url = Arc::clone(&url);
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(1)
                .build()
                .expect("a client");
            for _ in 0..per_sender {
                let response = client
                    .post(&*url)
                    .header("x-signature", SIGNATURE.trim())
                    .body(BODY)
                    .send()
                    .await
                    .expect("an answer");
                assert_eq!(response.status(), 200);
                let _ = response.bytes().await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("a sender");
    }
    (per_sender * senders) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(4_000);
    let baseline = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let baseline_url = format!("http://{}/chip", baseline.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(baseline, app()).await });
    let bounded = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let bounded_url = format!("http://{}/chip", bounded.local_addr().expect("addr"));
    tokio::spawn(serve(bounded, app(), ServeOptions::default()));
    tokio::time::sleep(Duration::from_millis(50)).await;

    println!("{total} deliveries per round, 3 rounds alternating; median deliveries/s");
    println!(
        "{:>8} | {:>14} | {:>17} | {:>6}",
        "senders", "axum::serve", "chip_gate::serve", "ratio"
    );
    for senders in [1, 8, 32, 256] {
        let mut plain = Vec::new();
        let mut guarded = Vec::new();
        for _ in 0..3 {
            plain.push(load(&baseline_url, senders, total).await);
            guarded.push(load(&bounded_url, senders, total).await);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (plain, guarded) = (median(&mut plain), median(&mut guarded));
        println!(
            "{senders:>8} | {plain:>14.0} | {guarded:>17.0} | {:>5.2}x",
            guarded / plain
        );
    }
}
