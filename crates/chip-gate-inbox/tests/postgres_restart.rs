//! A PostgreSQL restart under a running receiver: while the server is down the receiver says it
//! is not ready and answers `503` (CHIP sends again), and it stores again within seconds of the
//! server coming back, without a restart of its own.
//!
//! It stops and starts the server, so it runs only when `CHIP_INBOX_TEST_POSTGRES_CTL` names the
//! command that does (`.ci/run` sets `pg_ctlcluster <version> main`; the test appends `stop` and
//! `start`), in a test binary of its own so that no other test sees the server go.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use chip_gate_inbox::{Inbox, InboxOptions};
use common::*;

const CTL_ENV: &str = "CHIP_INBOX_TEST_POSTGRES_CTL";

fn ctl(action: &str) {
    let command = std::env::var(CTL_ENV).unwrap();
    let mut words = command.split_whitespace();
    let status = Command::new(words.next().unwrap())
        .args(words)
        .arg(action)
        .status()
        .unwrap();
    assert!(status.success(), "{command} {action}");
}

/// Starts the server again if the test fails while it is stopped.
struct StartOnDrop;

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            ctl("start");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_postgres_is_written_again_within_seconds() {
    if std::env::var(CTL_ENV).is_err() {
        eprintln!(
            "SKIPPED a_restarted_postgres_is_written_again_within_seconds (counted as passed): \
             set {CTL_ENV} to the command that stops and starts the server, e.g. \
             {CTL_ENV}='pg_ctlcluster 15 main', and {POSTGRES_URL_ENV}"
        );
        return;
    }
    let Some(url) = postgres_url("a_restarted_postgres_is_written_again_within_seconds").await
    else {
        return;
    };
    // A receiver answers within a few seconds when the database is down.
    let options = InboxOptions::default().acquire_timeout(Duration::from_secs(3));
    let inbox = Inbox::connect_with(&url, options).await.unwrap();
    let intake = inbox.intake(verifier()).unwrap();
    let app: axum::Router = intake.router("/chip/webhook").merge(intake.health_router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(chip_gate::serve::serve(
        listener,
        app,
        chip_gate::serve::ServeOptions::default(),
    ));
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let post = |id: &'static str| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let body = purchase_body(id, "purchase.paid", 1);
            let signature = signer().sign(&body, chip_gate::Digest::Sha256).unwrap();
            client
                .post(format!("{base}/chip/webhook"))
                .header("x-signature", signature)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let ready = || {
        let client = client.clone();
        let base = base.clone();
        async move {
            let response = client.get(format!("{base}/readyz")).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(post("before").await, 200);
    assert_eq!(ready().await.0, 200);

    let guard = StartOnDrop;
    ctl("stop");
    assert_eq!(post("while-down").await, 503);
    // Past the two seconds a commit vouches for the database.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, text) = ready().await;
    assert_eq!(status, 503, "{text}");
    ctl("start");
    let started = Instant::now();
    loop {
        let (status, text) = ready().await;
        if status == 200 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "not ready 20 s after the server came back: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("ready {:?} after the server started", started.elapsed());
    drop(guard);
    assert_eq!(post("while-down").await, 200);
    assert_eq!(post("after").await, 200);
    assert_eq!(
        scalar(&inbox, "SELECT COUNT(*) FROM chip_inbox_deliveries").await,
        3
    );
    inbox.close().await;
    drop_postgres(&url).await;
}
