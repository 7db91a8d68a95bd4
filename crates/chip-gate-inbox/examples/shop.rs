//! The README's shop, runnable on its own: an axum app that receives CHIP deliveries, stores
//! them, and ships each paid order exactly once. It sends itself signed deliveries (a test key
//! stands in for CHIP's), including a duplicate and an out-of-order one, then prints what it
//! shipped and the inbox's counts, and its metrics as served at `/metrics` (Prometheus text).
//!
//! ```sh
//! cargo run -p chip-gate-inbox --example shop            # SQLite in a temporary directory
//! cargo run -p chip-gate-inbox --example shop -- postgres://user:pw@127.0.0.1/shop
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use chip_gate::serve::ServeOptions;
use chip_gate::testing::TestSigner;
use chip_gate::{Digest, Verifier};
use chip_gate_inbox::{Completed, Inbox, TxJob, WorkerOptions};
use metrics_exporter_prometheus::PrometheusBuilder;

type Error = Box<dyn std::error::Error + Send + Sync>;

const TEST_PRIVATE_KEY: &str = include_str!("../tests/fixtures/rsa2048-private-pkcs8.pem");
const TEST_PUBLIC_KEY: &str = include_str!("../tests/fixtures/rsa2048-public-spki.pem");

const SHIPMENTS: &str = "CREATE TABLE IF NOT EXISTS shipments (
    purchase_id TEXT PRIMARY KEY,
    dedup_key TEXT NOT NULL,
    amount BIGINT NOT NULL
)";
const SHIP: &str = "INSERT INTO shipments (purchase_id, dedup_key, amount) VALUES ($1, $2, $3)
    ON CONFLICT (purchase_id) DO NOTHING";

async fn fulfil(mut job: TxJob) -> Result<Completed, Error> {
    let delivery = job.delivery().delivery();
    if delivery.event().as_str() == "purchase.paid" {
        let purchase_id = delivery.object().id().unwrap_or_default().to_owned();
        let amount = delivery
            .purchase()
            .and_then(|p| p.purchase.as_ref())
            .and_then(|details| details.total)
            .unwrap_or(0);
        let key = job.delivery().dedup_key().to_owned();
        match job.sqlite() {
            Ok(conn) => {
                let query = sqlx::query(SHIP).bind(&purchase_id).bind(&key).bind(amount);
                query.execute(conn).await?;
            }
            Err(_) => {
                let query = sqlx::query(SHIP).bind(&purchase_id).bind(&key).bind(amount);
                query.execute(job.postgres()?).await?;
            }
        }
        println!("shipped {purchase_id} ({amount} sen)");
    } else {
        println!(
            "{} for {}: nothing to do",
            delivery.event(),
            delivery.object().id().unwrap_or("?")
        );
    }
    Ok(job.complete().await?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let dir = tempfile::tempdir()?;
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("chip-inbox.db").display()));
    let inbox = Inbox::connect(&url).await?;
    match (inbox.sqlite_pool(), inbox.postgres_pool()) {
        (Some(pool), _) => sqlx::query(SHIPMENTS).execute(pool).await.map(|_| ())?,
        (_, Some(pool)) => sqlx::query(SHIPMENTS).execute(pool).await.map(|_| ())?,
        _ => return Err("no pool".into()),
    }

    // The metrics (chip-gate's and the inbox's) go to a Prometheus recorder, served at /metrics.
    // The inbox's gauges come from the database: the worker sets them every 10 s, and the
    // route sets them afresh before each scrape.
    let prometheus = PrometheusBuilder::new().install_recorder()?;
    let metrics = {
        let inbox = inbox.clone();
        get(move || async move {
            if let Err(error) = inbox.record_gauges().await {
                eprintln!("inbox gauges not recorded: {error}");
            }
            prometheus.render()
        })
    };

    // The app: intake on /chip/webhook, metrics on /metrics, one worker in the same process.
    let verifier = Verifier::from_pem(TEST_PUBLIC_KEY)?;
    let app: Router = inbox
        .intake(verifier)?
        .router("/chip/webhook")
        .route("/metrics", metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let endpoint = format!("http://{address}/chip/webhook");
    tokio::spawn(chip_gate::serve::serve(
        listener,
        app,
        ServeOptions::default(),
    ));
    let worker = inbox.worker(WorkerOptions::default().poll_interval(Duration::from_millis(50)));
    tokio::spawn(async move { worker.run_in_transaction(fulfil).await });

    // CHIP's side: a paid order delivered twice, and a purchase's states out of order.
    let signer = TestSigner::from_pem(TEST_PRIVATE_KEY)?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let body = |id: &str, event: &str, updated_on: i64, total: i64| {
        format!(
            r#"{{"id":"{id}","type":"purchase","event_type":"{event}","updated_on":{updated_on},"purchase":{{"total":{total},"currency":"MYR"}}}}"#
        )
    };
    let sends = [
        body("order-1", "purchase.paid", 100, 12900),
        body("order-1", "purchase.paid", 100, 12900), // CHIP retried: a duplicate
        body("order-2", "purchase.cancelled", 210, 5000),
        body("order-2", "purchase.paid", 200, 5000), // older than the cancellation: stale
        body("order-3", "purchase.created", 300, 700),
        body("order-3", "purchase.paid", 310, 700),
    ];
    for (n, body) in sends.iter().enumerate() {
        if n == 3 {
            // Let the cancellation be handled before its older paid state arrives.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let response = client
            .post(&endpoint)
            .header("x-signature", signer.sign(body.as_bytes(), Digest::Sha256)?)
            .body(body.clone())
            .send()
            .await?;
        println!(
            "CHIP -> app: {} {}",
            response.status(),
            response.text().await?
        );
    }

    // Wait for the workers to finish.
    for _ in 0..100 {
        if inbox.status().await?.pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = inbox.counts().await?;
    println!(
        "received {}, duplicates {}, done {}, stale {}, retried {}, dead {}",
        counts.received, counts.duplicates, counts.done, counts.stale, counts.retried, counts.dead
    );
    let scrape = client
        .get(format!("http://{address}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    println!("GET /metrics (the inbox's series):");
    for line in scrape.lines().filter(|l| l.starts_with("chip_inbox_")) {
        println!("  {line}");
    }
    Ok(())
}
