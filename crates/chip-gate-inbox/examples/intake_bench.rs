//! Durable intake against verification only, over HTTP on loopback, in one run.
//!
//! ```sh
//! cargo run --release -p chip-gate-inbox --example intake_bench
//! # with PostgreSQL too (a role that may create databases):
//! CHIP_INBOX_TEST_POSTGRES_URL=postgres://chip_inbox:chip_inbox@127.0.0.1/chip_inbox \
//!   cargo run --release -p chip-gate-inbox --example intake_bench
//! ```
//!
//! Each scenario serves one axum app on 127.0.0.1 and sends it the same signed deliveries from
//! concurrent senders (keep-alive HTTP/1.1). "verify only" checks the signature and reads the
//! delivery, then answers. "durable" does that and stores the delivery, answering only after the
//! commit (SQLite: WAL with `synchronous=FULL`, an fsync per commit; PostgreSQL: its defaults,
//! `fsync=on`, `synchronous_commit=on`). The scenarios take turns for a few rounds, and the
//! medians are printed with the ratio to verification only, overall and in each round, and the
//! process's CPU time per delivery (senders included; Linux only).
//! Arguments: `[deliveries] [senders] [postgres writers] [rounds]` (default 4000 32 1 3).
//! `CHIP_INBOX_BENCH_SQLITE_URL` replaces the SQLite scenario's database (a fresh temporary file by
//! default), for example with `sqlite::memory:` to see what the disk costs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use chip_gate::testing::TestSigner;
use chip_gate::{Delivery, Digest, Verifier};
use chip_gate_inbox::{Inbox, Intake, IntakeOptions};
use sqlx::Connection;

const PRIVATE_KEY: &str = include_str!("../tests/fixtures/rsa2048-private-pkcs8.pem");
const PUBLIC_KEY: &str = include_str!("../tests/fixtures/rsa2048-public-spki.pem");

struct Figures {
    name: String,
    rate: f64,
    p50: Duration,
    p99: Duration,
    /// The process's CPU time per delivery (senders included), where the system tells it.
    cpu_per_delivery: Option<Duration>,
}

/// The CPU time this process has used so far (user and system), from `/proc/self/stat` on
/// Linux; `None` elsewhere.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // Linux reports these in clock ticks of 1/100 s (USER_HZ).
    Some(Duration::from_millis(ticks * 10))
}

async fn verify_only(
    State(verifier): State<Verifier>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    match verifier.verify_headers_and_parse(body, &headers) {
        Ok(delivery) => {
            std::hint::black_box(delivery.dedup_key());
            (StatusCode::OK, "ok")
        }
        Err(_) => (StatusCode::UNAUTHORIZED, "invalid signature"),
    }
}

async fn serve(app: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(chip_gate::serve::serve(
        listener,
        app,
        chip_gate::serve::ServeOptions::default(),
    ));
    port
}

async fn load(
    name: &str,
    port: u16,
    deliveries: &Arc<Vec<(Bytes, String)>>,
    senders: usize,
) -> Figures {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(senders)
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/chip/webhook");
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = cpu_time();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (client, url, next, deliveries) = (
            client.clone(),
            url.clone(),
            Arc::clone(&next),
            Arc::clone(deliveries),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, signature)) = deliveries.get(i) else {
                    return latencies;
                };
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("x-signature", signature)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                let _ = response.bytes().await.unwrap();
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let cpu_per_delivery = match (cpu_before, cpu_time()) {
        (Some(before), Some(after)) => {
            Some((after.saturating_sub(before)) / u32::try_from(latencies.len()).unwrap())
        }
        _ => None,
    };
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Figures {
        name: name.to_owned(),
        rate: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        cpu_per_delivery,
    }
}

/// One durable scenario on a fresh database: serves an intake, loads it, checks every
/// acknowledged delivery was counted as stored.
async fn durable(
    name: &str,
    url: &str,
    deliveries: &Arc<Vec<(Bytes, String)>>,
    senders: usize,
    writers: usize,
) -> Figures {
    let inbox = Inbox::connect(url).await.unwrap();
    let verifier = Verifier::from_pem(PUBLIC_KEY).unwrap();
    let options = IntakeOptions::default().writers(writers);
    let intake = Intake::new(&inbox, verifier, options).unwrap();
    let app: Router = intake.router("/chip/webhook");
    let port = serve(app).await;
    let figures = load(name, port, deliveries, senders).await;
    // Every acknowledged delivery is in the store.
    let counts = inbox.counts().await.unwrap();
    assert_eq!(counts.received as usize, deliveries.len());
    inbox.close().await;
    figures
}

/// A fresh PostgreSQL database on the server of `base`; its URL.
async fn postgres_database(base: &str) -> String {
    let name = format!("chip_inbox_bench_{:08x}", fastrand::u32(..));
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

async fn drop_postgres_database(base: &str, url: &str) {
    let (_, name) = url.rsplit_once('/').unwrap();
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .ok();
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4000);
    let senders: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    let writers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3).max(1);

    let signer = TestSigner::from_pem(PRIVATE_KEY).unwrap();
    eprintln!("signing {count} deliveries...");
    let deliveries: Vec<(Bytes, String)> = (0..count)
        .map(|n| {
            let body = Bytes::from(format!(
                r#"{{"id":"bench-{n:06}","type":"purchase","event_type":"purchase.paid","created_on":1700000000,"updated_on":1700000100,"status":"paid","client":{{"email":"buyer@example.com","full_name":"Siti"}},"purchase":{{"currency":"MYR","total":12900,"products":[{{"name":"Kopi","price":12900,"quantity":"1.0000"}}]}},"brand_id":"b1","is_test":true}}"#
            ));
            let signature = signer.sign(&body, Digest::Sha256).unwrap();
            let _ = Delivery::parse_unverified(body.clone()).unwrap();
            (body, signature)
        })
        .collect();
    let deliveries = Arc::new(deliveries);

    let verifier = Verifier::from_pem(PUBLIC_KEY).unwrap();
    let verify_app = Router::new()
        .route("/chip/webhook", post(verify_only))
        .with_state(verifier);
    let verify_port = serve(verify_app).await;
    // Warm up connections and caches.
    let warm = Arc::new(deliveries.iter().take(500).cloned().collect::<Vec<_>>());
    load("warm-up", verify_port, &warm, senders).await;

    let postgres = std::env::var("CHIP_INBOX_TEST_POSTGRES_URL").ok();
    if postgres.is_none() {
        eprintln!("PostgreSQL skipped: set CHIP_INBOX_TEST_POSTGRES_URL to include it");
    }
    // The scenarios take turns, round after round, so that a change in the machine's load
    // during the run weighs on all of them alike; each durable round has a fresh database.
    let mut runs: Vec<Vec<Figures>> = Vec::new();
    for round in 0..rounds {
        eprintln!("round {} of {rounds}...", round + 1);
        let mut figures = vec![load("verify only", verify_port, &deliveries, senders).await];
        let dir = tempfile::tempdir().unwrap();
        // `CHIP_INBOX_BENCH_SQLITE_URL` runs the SQLite scenario elsewhere: a file on another
        // disk, or `sqlite::memory:` to see what the disk costs (not durable, for comparison).
        let sqlite = std::env::var("CHIP_INBOX_BENCH_SQLITE_URL")
            .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("bench.db").display()));
        figures.push(durable("durable, SQLite", &sqlite, &deliveries, senders, 1).await);
        if let Some(base) = &postgres {
            let url = postgres_database(base).await;
            figures.push(durable("durable, PostgreSQL", &url, &deliveries, senders, writers).await);
            drop_postgres_database(base, &url).await;
        }
        runs.push(figures);
    }

    println!(
        "{count} deliveries per round, {rounds} rounds, {senders} concurrent senders, HTTP/1.1 \
         keep-alive on loopback, {writers} PostgreSQL writer(s); medians of the rounds"
    );
    println!(
        "| {:<20} | {:>13} | {:>8} | {:>8} | {:>10} | {:>14} | {:<22} |",
        "receiver",
        "deliveries/s",
        "p50 ms",
        "p99 ms",
        "CPU us/del",
        "vs verify only",
        "ratio in each round"
    );
    println!(
        "|{:-<22}|{:->15}|{:->10}|{:->10}|{:->12}|{:->16}|{:-<24}|",
        "", "", "", "", "", "", ""
    );
    let base = median(runs.iter().map(|r| r[0].rate).collect());
    for (i, name) in runs[0].iter().map(|f| f.name.clone()).enumerate() {
        let rate = median(runs.iter().map(|r| r[i].rate).collect());
        let p50 = median(runs.iter().map(|r| r[i].p50.as_secs_f64()).collect());
        let p99 = median(runs.iter().map(|r| r[i].p99.as_secs_f64()).collect());
        let cpu: Option<Vec<f64>> = runs
            .iter()
            .map(|r| r[i].cpu_per_delivery.map(|d| d.as_secs_f64() * 1e6))
            .collect();
        let cpu = cpu.map_or_else(|| "-".to_owned(), |us| format!("{:.0}", median(us)));
        let each: Vec<String> = runs
            .iter()
            .map(|r| format!("{:.2}", r[i].rate / r[0].rate))
            .collect();
        println!(
            "| {:<20} | {:>13.0} | {:>8.2} | {:>8.2} | {:>10} | {:>14.2} | {:<22} |",
            name,
            rate,
            p50 * 1000.0,
            p99 * 1000.0,
            cpu,
            rate / base,
            each.join(", ")
        );
    }
}
