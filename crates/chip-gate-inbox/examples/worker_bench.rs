//! How fast workers drain a backlog: stores N signed deliveries (a quarter as many objects, so
//! each object has several states in order), then one worker with default settings hands them to
//! a handler that does nothing, and the run prints deliveries per second.
//!
//! ```sh
//! cargo run --release -p chip-gate-inbox --example worker_bench -- 20000
//! cargo run --release -p chip-gate-inbox --example worker_bench -- 20000 postgres://user:pw@127.0.0.1/db
//! ```
//!
//! [`Worker::run`](chip_gate_inbox::Worker::run) records a batch's outcomes in one transaction
//! (one flush per batch); [`Worker::run_in_transaction`](chip_gate_inbox::Worker::run_in_transaction)
//! commits each delivery with its handler's writes (one flush per delivery).
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use bytes::Bytes;
use chip_gate::testing::TestSigner;
use chip_gate::{Digest, Verifier};
use chip_gate_inbox::{Inbox, StoredDelivery, WorkerOptions};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let url = args
        .next()
        .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("bench.db").display()));
    let inbox = Inbox::connect(&url).await.unwrap();
    let signer =
        TestSigner::from_pem(include_str!("../tests/fixtures/rsa2048-private-pkcs8.pem")).unwrap();
    let verifier =
        Verifier::from_pem(include_str!("../tests/fixtures/rsa2048-public-spki.pem")).unwrap();
    let intake = inbox.intake(verifier).unwrap();

    let started = Instant::now();
    let objects = (n / 4).max(1);
    let mut sends = Vec::new();
    for i in 0..n {
        let body = Bytes::from(format!(
            r#"{{"id":"o{}","type":"purchase","event_type":"purchase.paid","updated_on":{i}}}"#,
            i % objects
        ));
        let signature = signer.sign(&body, Digest::Sha256).unwrap();
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
    println!(
        "stored {n} deliveries in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let worker = inbox.worker(WorkerOptions::default());
    let started = Instant::now();
    let mut handled = 0;
    loop {
        let report = worker
            .process_batch(|_d: StoredDelivery| async { Ok::<(), String>(()) })
            .await
            .unwrap();
        handled += report.handed_over;
        if report.handed_over == 0 {
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "one worker handled {handled} in {elapsed:.1} s: {:.0} deliveries/s",
        handled as f64 / elapsed
    );
}
