//! A small load loop: GET /webhooks/{id}/ as fast as possible, then print requests per second.
//!
//! ```text
//! cargo run --release -p chip-gate-mock --example load -- [SECONDS] [CONNECTIONS]
//! ```
//!
//! Starts a mock in-process (on 127.0.0.1, a free port), creates one webhook, and runs
//! CONNECTIONS (default 32) keep-alive clients for SECONDS (default 10). The load generator and the
//! server share the machine, as with `wrk` on the same host. Every answer must be a 200.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chip_gate_mock::{MockConfig, MockServer};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let connections: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(32);

    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let auth = format!("Bearer {}", mock.api_key());
    let setup = reqwest::Client::new();
    let created: serde_json::Value = setup
        .post(format!("{}/webhooks/", mock.base_url()))
        .header("authorization", &auth)
        .json(&serde_json::json!({
            "title": "load", "callback": "https://example.test/hook", "all_events": true,
            "events": ["purchase.paid"]
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = format!(
        "{}/webhooks/{}/",
        mock.base_url(),
        created["id"].as_str().unwrap()
    );

    let done = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        // One client (so one keep-alive connection) per task, like wrk's connections.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()
            .unwrap();
        let (url, auth, done, ok, bad) = (
            url.clone(),
            auth.clone(),
            done.clone(),
            ok.clone(),
            bad.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                match http.get(&url).header("authorization", &auth).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    done.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in tasks {
        let _ = t.await;
    }
    let ok = ok.load(Ordering::Relaxed);
    let bad = bad.load(Ordering::Relaxed);
    println!(
        "GET retrieve: {ok} ok, {bad} failed in {elapsed:.1} s with {connections} connections: {:.0} requests/s",
        ok as f64 / elapsed
    );
    mock.shutdown().await;
}
