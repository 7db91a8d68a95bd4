//! The inbox's metrics, scraped over real HTTP from an app serving the intake and `/metrics`
//! (metrics-exporter-prometheus): intake outcomes, commit batches, handler outcomes and times,
//! and the gauges read from the database. One test in this binary: the recorder is global. It
//! runs on SQLite, then on PostgreSQL when configured, and checks how the numbers moved.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::routing::get;
use chip_gate::Digest;
use chip_gate_inbox::{Backoff, Inbox, WorkerOptions};
use common::*;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The value of the series `name` whose labels include `labels` in a Prometheus text scrape
/// (0 when it is not there yet).
fn value(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(series, _)| {
            let (series_name, series_labels) = series.split_once('{').unwrap_or((series, ""));
            series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")))
        })
        .map_or(0.0, |(_, value)| value.parse().unwrap())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn scrape(base: &str) -> String {
    let response = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.unwrap()
}

async fn post(base: &str, signature: &str, body: &[u8]) -> (u16, String) {
    let response = client()
        .post(format!("{base}/chip/webhook"))
        .header("x-signature", signature)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !done().await {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn scenario(url: &str, handle: PrometheusHandle, tag: &str) {
    let inbox = Inbox::connect(url).await.unwrap();
    let intake = inbox.intake(verifier()).unwrap();
    let app: axum::Router = intake
        .router("/chip/webhook")
        .merge(axum::Router::new().route("/metrics", get(move || async move { handle.render() })));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(chip_gate::serve::serve(
        listener,
        app,
        chip_gate::serve::ServeOptions::default(),
    ));
    let before = scrape(&base).await;
    let delta = |after: &str, name: &str, labels: &[(&str, &str)]| {
        value(after, name, labels) - value(&before, name, labels)
    };

    // Three new deliveries, a repeat, one wrongly signed (refused by the intake's own check) and
    // one without a signature given to `Intake::receive` directly.
    let signer = signer();
    let bodies: Vec<_> = (1..=3)
        .map(|n| purchase_body(&format!("{tag}-{n}"), "purchase.paid", 100 + n))
        .collect();
    for body in &bodies {
        let signature = signer.sign(body, Digest::Sha256).unwrap();
        assert_eq!(post(&base, &signature, body).await, (200, "stored".into()));
    }
    let signature = signer.sign(&bodies[0], Digest::Sha256).unwrap();
    assert_eq!(
        post(&base, &signature, &bodies[0]).await,
        (200, "duplicate".into())
    );
    let other_body = purchase_body(&format!("{tag}-x"), "purchase.paid", 1);
    let wrong = signer.sign(&other_body, Digest::Sha256).unwrap();
    assert_eq!(post(&base, &wrong, &bodies[1]).await.0, 401);
    assert!(
        intake
            .receive(&http::HeaderMap::new(), bodies[2].clone())
            .await
            .is_err()
    );

    // Before any worker: three pending.
    inbox.record_gauges().await.unwrap();
    let stored = scrape(&base).await;
    let intake_total = "chip_inbox_intake_total";
    assert_eq!(delta(&stored, intake_total, &[("outcome", "stored")]), 3.0);
    assert_eq!(
        delta(&stored, intake_total, &[("outcome", "duplicate")]),
        1.0
    );
    assert_eq!(
        delta(
            &stored,
            intake_total,
            &[("outcome", "refused"), ("reason", "signature_mismatch")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            &stored,
            intake_total,
            &[("outcome", "refused"), ("reason", "missing_signature")]
        ),
        1.0
    );
    assert_eq!(
        delta(&stored, intake_total, &[("outcome", "unavailable")]),
        0.0
    );
    assert_eq!(
        delta(
            &stored,
            "chip_gate_requests_refused_total",
            &[("reason", "signature_mismatch")]
        ),
        1.0,
        "the axum handler's refusal is counted by chip-gate too"
    );
    // Sent one after another: four commits of one verified delivery each.
    assert_eq!(
        delta(&stored, "chip_inbox_commit_batch_size_count", &[]),
        4.0
    );
    assert_eq!(delta(&stored, "chip_inbox_commit_batch_size_sum", &[]), 4.0);
    assert_eq!(delta(&stored, "chip_inbox_commit_seconds_count", &[]), 4.0);
    assert!(delta(&stored, "chip_inbox_commit_seconds_sum", &[]) > 0.0);
    let gauge =
        |scrape: &str, state: &str| value(scrape, "chip_inbox_deliveries", &[("state", state)]);
    assert_eq!(gauge(&stored, "pending"), 3.0);
    for state in ["retrying", "dead", "stale", "done"] {
        assert_eq!(gauge(&stored, state), 0.0, "{state}");
    }
    assert!(value(&stored, "chip_inbox_oldest_pending_seconds", &[]) >= 0.0);
    assert!(stored.contains("chip_inbox_oldest_pending_seconds"));

    // A worker whose handler fails the first delivery once, then succeeds.
    let first = format!("{tag}-1");
    let failures = Arc::new(AtomicUsize::new(0));
    let worker = inbox.worker(
        WorkerOptions::default()
            .poll_interval(Duration::from_millis(20))
            .gauges_interval(Some(Duration::from_secs(1)))
            .backoff(Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(1),
            }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let failures = Arc::clone(&failures);
        tokio::spawn(async move {
            worker
                .run_until(
                    move |delivery| {
                        let failures = Arc::clone(&failures);
                        let first = first.clone();
                        async move {
                            let parsed = delivery.delivery();
                            let id = parsed.object().id().unwrap_or_default();
                            if id == first && failures.fetch_add(1, Ordering::SeqCst) == 0 {
                                return Err("the warehouse is down");
                            }
                            Ok(())
                        }
                    },
                    async move {
                        let _ = stopped.await;
                    },
                )
                .await;
        })
    };
    // After the failure, while its retry waits (at least 750 ms): one retrying.
    wait_for("the first failure", async || {
        inbox.counts().await.unwrap().retried == 1
    })
    .await;
    inbox.record_gauges().await.unwrap();
    let waiting = scrape(&base).await;
    assert_eq!(gauge(&waiting, "retrying"), 1.0);
    assert_eq!(gauge(&waiting, "done"), 2.0);
    assert_eq!(gauge(&waiting, "pending"), 0.0);
    assert!(value(&waiting, "chip_inbox_oldest_pending_seconds", &[]) > 0.0);

    wait_for("all three done", async || {
        inbox.counts().await.unwrap().done == 3
    })
    .await;
    // The running worker sets the gauges on its own (every second here).
    wait_for("the worker's gauges", async || {
        let now = scrape(&base).await;
        gauge(&now, "done") == 3.0 && gauge(&now, "retrying") == 0.0
    })
    .await;
    stop.send(()).unwrap();
    running.await.unwrap();

    let handled = scrape(&base).await;
    let handled_total = "chip_inbox_handled_total";
    assert_eq!(delta(&handled, handled_total, &[("outcome", "done")]), 3.0);
    assert_eq!(delta(&handled, handled_total, &[("outcome", "retry")]), 1.0);
    for outcome in ["dead", "stale", "unrecorded"] {
        assert_eq!(
            delta(&handled, handled_total, &[("outcome", outcome)]),
            0.0,
            "{outcome}"
        );
    }
    assert_eq!(
        delta(&handled, "chip_inbox_handler_seconds_count", &[]),
        4.0
    );
    // Three deliveries and one retry handed over, in however many claims.
    assert_eq!(delta(&handled, "chip_inbox_claim_size_sum", &[]), 4.0);
    assert_eq!(gauge(&handled, "done"), 3.0);
    for state in ["pending", "retrying", "dead", "stale"] {
        assert_eq!(gauge(&handled, state), 0.0, "{state}");
    }
    assert_eq!(
        value(&handled, "chip_inbox_oldest_pending_seconds", &[]),
        0.0
    );
    assert_eq!(
        delta(
            &handled,
            "chip_inbox_lease_expired_total",
            &[("found_by", "claim")]
        ),
        0.0
    );
    assert_eq!(failures.load(Ordering::SeqCst), 2);

    // A worker whose lease expires while its handler runs (made to expire in the database):
    // another claims the delivery, and the first finds its lease lost when it finishes.
    let body = purchase_body(&format!("{tag}-4"), "purchase.paid", 104);
    let signature = signer.sign(&body, Digest::Sha256).unwrap();
    assert_eq!(post(&base, &signature, &body).await, (200, "stored".into()));
    let stalled = inbox.worker(WorkerOptions::default());
    let started = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(tokio::sync::Notify::new());
    let stalling = {
        let (started, release) = (Arc::clone(&started), Arc::clone(&release));
        tokio::spawn(async move {
            stalled
                .process_batch(move |_| {
                    let (started, release) = (Arc::clone(&started), Arc::clone(&release));
                    async move {
                        started.fetch_add(1, Ordering::SeqCst);
                        release.notified().await;
                        Ok::<(), String>(())
                    }
                })
                .await
                .unwrap()
        })
    };
    wait_for("the stalled handler", async || {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    exec(
        &inbox,
        "UPDATE chip_inbox_lanes SET lease_until = 0 WHERE lease_token IS NOT NULL",
    )
    .await;
    let report = inbox
        .worker(WorkerOptions::default())
        .process_batch(|_| async { Ok::<(), String>(()) })
        .await
        .unwrap();
    assert_eq!((report.handed_over, report.done), (1, 1));
    release.notify_one();
    let report = stalling.await.unwrap();
    assert_eq!((report.handed_over, report.unrecorded), (1, 1));
    let expired = scrape(&base).await;
    let lease_expired = "chip_inbox_lease_expired_total";
    assert_eq!(
        delta(&expired, lease_expired, &[("found_by", "claim")]),
        1.0
    );
    assert_eq!(
        delta(&expired, lease_expired, &[("found_by", "holder")]),
        1.0
    );
    assert_eq!(delta(&expired, handled_total, &[("outcome", "done")]), 4.0);
    assert_eq!(
        delta(&expired, handled_total, &[("outcome", "unrecorded")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_deliveries_and_handlers() {
    let handle = PrometheusBuilder::new().install_recorder().unwrap();
    let (url, _dir) = sqlite_url();
    scenario(&url, handle.clone(), "m-sqlite").await;
    if let Some(url) = postgres_url("metrics_move_with_deliveries_and_handlers (postgres)").await {
        scenario(&url, handle, "m-postgres").await;
        drop_postgres(&url).await;
    }
}
