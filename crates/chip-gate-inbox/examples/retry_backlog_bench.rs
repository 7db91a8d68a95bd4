//! What a backlog of deliveries waiting for a retry costs the rest of the inbox: the case of an
//! app whose handler fails for a while (a downstream service is down) while CHIP keeps sending.
//!
//! Inboxes in one run, each a fresh database holding `backlog` deliveries, one object each.
//! In the baseline they were all handled; in the other, each failed once and waits an hour for
//! its retry. (The tables are the same size, so what differs is the waiting, not the size.) In
//! each, one worker with default settings (a no-op handler) then runs while `fresh` new
//! deliveries of other objects arrive one at a time, 200 a second. The run prints, for both, how
//! long storing a delivery took (what CHIP waits for) and its pickup latency (stored to handler
//! start), p50/p99/max, and the ratios of the backlog's figures to the baseline's. A third
//! database holds the same deliveries handled eight days ago: the worker's first purge (default
//! retention, 7 days) removes them all while the fresh deliveries arrive.
//!
//! ```sh
//! cargo run --release -p chip-gate-inbox --example retry_backlog_bench -- 100000 3000
//! cargo run --release -p chip-gate-inbox --example retry_backlog_bench -- 100000 3000 postgres://user:pw@127.0.0.1/db
//! ```
//!
//! With PostgreSQL, both scenarios use the database given, one after the other: it should be
//! empty (a fresh database), and its deliveries are left there. After the backlog is made, the
//! table is vacuumed and analyzed, as autovacuum would have done while a real backlog built up
//! over an hour (made in a minute, autovacuum would be busy with it during the measurement).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chip_gate::testing::TestSigner;
use chip_gate::{Digest, Verifier};
use chip_gate_inbox::{Backoff, Inbox, Intake, StoredDelivery, WorkerOptions};

/// A signed delivery of `object`, state `updated_on`.
fn delivery(signer: &TestSigner, object: &str, updated_on: usize) -> (Bytes, String) {
    let body = Bytes::from(format!(
        r#"{{"id":"{object}","type":"purchase","event_type":"purchase.paid","updated_on":{updated_on}}}"#
    ));
    let signature = signer.sign(&body, Digest::Sha256).unwrap();
    (body, signature)
}

/// Milliseconds at the p-th percentile of sorted `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let rank = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[rank.min(values.len() - 1)]
}

struct Figures {
    store: Vec<f64>,
    pickup: Vec<f64>,
}

/// Fills `inbox` with `backlog` deliveries of `scenario`, one object each, handled (`fail`
/// false) or failed once and waiting an hour for their retry.
async fn make_backlog(
    inbox: &Inbox,
    intake: &Intake,
    signer: &TestSigner,
    scenario: &str,
    backlog: usize,
    fail: bool,
) {
    let started = Instant::now();
    let mut sends = Vec::new();
    for i in 0..backlog {
        let (body, signature) = delivery(signer, &format!("{scenario}-backlog-{i}"), 1);
        let intake = intake.clone();
        sends.push(tokio::spawn(async move {
            intake.receive_signed(body, &signature).await.unwrap()
        }));
        if sends.len() >= 256 {
            for send in sends.drain(..) {
                send.await.unwrap();
            }
        }
    }
    for send in sends {
        send.await.unwrap();
    }
    let stored = started.elapsed();
    let first = inbox.worker(WorkerOptions::default().backoff(Backoff {
        initial: Duration::from_secs(3600),
        max: Duration::from_secs(3600),
    }));
    let started = Instant::now();
    let mut handed_over = 0;
    loop {
        let report = first
            .process_batch(move |_d: StoredDelivery| async move {
                if fail {
                    Err("downstream is down")
                } else {
                    Ok(())
                }
            })
            .await
            .unwrap();
        handed_over += report.handed_over;
        if report.handed_over == 0 {
            break;
        }
    }
    assert_eq!(handed_over, backlog);
    println!(
        "  {backlog} stored in {:.1} s, {} in {:.1} s",
        stored.as_secs_f64(),
        if fail { "failed once" } else { "handled" },
        started.elapsed().as_secs_f64()
    );
    // A backlog that built up over an hour has been vacuumed along the way; this one was made
    // in a minute, and PostgreSQL's autovacuum would be busy with it during the measurement.
    if let Some(pool) = inbox.postgres_pool() {
        let started = Instant::now();
        sqlx::query("VACUUM ANALYZE chip_inbox_deliveries")
            .execute(pool)
            .await
            .unwrap();
        println!(
            "  vacuumed and analyzed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Sends `fresh` deliveries at 200 a second into `inbox` while a worker handles them.
async fn measure(
    inbox: &Inbox,
    intake: &Intake,
    signer: &TestSigner,
    scenario: &str,
    fresh: usize,
) -> Figures {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let pickup: Arc<Mutex<Vec<f64>>> = Arc::default();
    let worker = inbox.worker(WorkerOptions::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let (sent, pickup) = (Arc::clone(&sent), Arc::clone(&pickup));
        tokio::spawn(async move {
            worker
                .run_until(
                    move |d: StoredDelivery| {
                        let started = Instant::now();
                        let object = d.delivery().object().id().unwrap_or_default().to_owned();
                        if let Some(at) = sent.lock().unwrap().get(&object) {
                            let ms = started.duration_since(*at).as_secs_f64() * 1000.0;
                            pickup.lock().unwrap().push(ms);
                        }
                        async { Ok::<(), String>(()) }
                    },
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
        })
    };
    let mut store = Vec::with_capacity(fresh);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    for i in 0..fresh {
        tick.tick().await;
        let object = format!("{scenario}-fresh-{i}");
        // A state of now: above any horizon a purge of the old deliveries (state 1) raises.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let (body, signature) = delivery(signer, &object, now as usize);
        let at = Instant::now();
        sent.lock().unwrap().insert(object, at);
        intake.receive_signed(body, &signature).await.unwrap();
        store.push(at.elapsed().as_secs_f64() * 1000.0);
    }
    let waiting = Instant::now();
    while pickup.lock().unwrap().len() < fresh && waiting.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop.send(());
    running.await.unwrap();
    let mut pickup = pickup.lock().unwrap().clone();
    assert_eq!(pickup.len(), fresh, "every fresh delivery is handled");
    store.sort_by(f64::total_cmp);
    pickup.sort_by(f64::total_cmp);
    Figures { store, pickup }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let backlog: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let fresh: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3_000);
    let postgres = args.next();
    let dir = tempfile::tempdir().unwrap();
    let signer =
        TestSigner::from_pem(include_str!("../tests/fixtures/rsa2048-private-pkcs8.pem")).unwrap();
    let verifier =
        Verifier::from_pem(include_str!("../tests/fixtures/rsa2048-public-spki.pem")).unwrap();

    let mut results = Vec::new();
    for (name, fail) in [("baseline", false), ("backlog", true), ("purge", false)] {
        println!("{name}:");
        let url = postgres
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join(name).display()));
        let inbox = Inbox::connect(&url).await.unwrap();
        let intake = inbox.intake(verifier.clone()).unwrap();
        make_backlog(&inbox, &intake, &signer, name, backlog, fail).await;
        if name == "purge" {
            // Handled eight days ago: the worker's first purge (default retention, 7 days)
            // removes them all while the fresh deliveries arrive.
            let sql = "UPDATE chip_inbox_deliveries SET finished_at = finished_at - 691200000";
            match (inbox.sqlite_pool(), inbox.postgres_pool()) {
                (Some(pool), _) => sqlx::query(sql).execute(pool).await.map(|_| ()),
                (_, Some(pool)) => sqlx::query(sql).execute(pool).await.map(|_| ()),
                _ => unreachable!("an inbox is on SQLite or PostgreSQL"),
            }
            .unwrap();
        }
        let figures = measure(&inbox, &intake, &signer, name, fresh).await;
        let status = inbox.status().await.unwrap();
        println!(
            "  after the run: {} pending, {} finished kept",
            status.pending, status.finished
        );
        results.push((name, figures));
        inbox.close().await;
    }

    println!();
    println!(
        "| {fresh} fresh deliveries, 200/s | store p50 | p99 | max | pickup p50 | p99 | max |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, f) in &results {
        let label = match *name {
            "backlog" => format!("{backlog} waiting for a retry"),
            "purge" => format!("{backlog} handled 8 days ago, purged meanwhile"),
            _ => format!("{backlog} handled, nothing waiting"),
        };
        println!(
            "| {label} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms |",
            percentile(&f.store, 0.5),
            percentile(&f.store, 0.99),
            percentile(&f.store, 1.0),
            percentile(&f.pickup, 0.5),
            percentile(&f.pickup, 0.99),
            percentile(&f.pickup, 1.0),
        );
    }
    let base = &results[0].1;
    for (name, with) in &results[1..] {
        println!(
            "{name} vs baseline: store p99 {:.2}x, pickup p50 {:.2}x, pickup p99 {:.2}x",
            percentile(&with.store, 0.99) / percentile(&base.store, 0.99),
            percentile(&with.pickup, 0.5) / percentile(&base.pickup, 0.5),
            percentile(&with.pickup, 0.99) / percentile(&base.pickup, 0.99),
        );
    }
}
