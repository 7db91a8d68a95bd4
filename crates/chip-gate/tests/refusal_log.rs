//! Refused deliveries are visible: one `warn` line each, with the reason and the caller's address,
//! a hint about the key when a signature matches no configured key, and a rate limit past which one
//! line counts what was not logged; every refusal is counted in the metrics. (One test in its own binary: the rate limit is per process.)
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use axum::Router;
use axum::routing::post;
use chip_gate::serve::ServeOptions;
use chip_gate::testing::TestSigner;
use chip_gate::{Digest, VerifiedDelivery, Verifier};
use common::{Capture, RSA3072_PRIVATE_PKCS8, RSA3072_PUBLIC};

/// POSTs `body` with `signature` and returns the status.
async fn send(
    http: &reqwest::Client,
    url: &str,
    signature: &str,
    body: &'static [u8],
) -> reqwest::StatusCode {
    http.post(url)
        .header("x-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_with_reason_peer_and_a_key_hint_within_a_rate_limit() {
    let captured = Capture::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();

    // The receiver holds a key that did not sign the deliveries (as a receiver given the
    // company key instead of the webhook's would).
    let verifier = Verifier::from_pem(RSA3072_PUBLIC).unwrap();
    let app = Router::new()
        .route(
            "/chip",
            post(|VerifiedDelivery(_d): VerifiedDelivery| async { "ok" }),
        )
        .with_state(verifier);
    let addr = common::receiver::serve(app, ServeOptions::default()).await;
    let url = format!("http://{addr}/chip");
    let http = common::receiver::http();

    // Signed with a 3072-bit key of the same size as the receiver's, but not its own: well
    // formed, matching no key.
    let body: &'static [u8] = br#"{"id":"1","type":"purchase","event_type":"purchase.paid"}"#;
    let wrong = TestSigner::from_pem(RSA3072_PRIVATE_PKCS8).unwrap();
    let mut forged = wrong.sign(body, Digest::Sha256).unwrap();
    // Flip one character so it no longer matches.
    let flipped = if forged.starts_with('A') { "B" } else { "A" };
    forged.replace_range(0..1, flipped);
    assert_eq!(send(&http, &url, &forged, body).await, 401);
    let first = captured.lines();
    assert_eq!(first.len(), 1, "{first:?}");
    let line = &first[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("delivery refused"), "{line}");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    assert!(line.contains("does not match"), "{line}");
    assert!(
        line.contains("GET /public_key/"),
        "the key hint is missing: {line}"
    );
    assert!(!line.contains(&forged), "the signature is logged: {line}");

    // 40 more: 9 more lines in this window, the rest held back.
    for _ in 0..40 {
        send(&http, &url, "AAAA", body).await;
    }
    let lines = captured.lines();
    assert_eq!(lines.len(), 10, "{lines:#?}");
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.contains("the signature is 3 bytes long"))
    );

    // The next window starts with a count of what was held back (the window is 5 s).
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    send(&http, &url, "AAAA", body).await;
    let lines = captured.lines();
    assert_eq!(lines.len(), 12, "{lines:#?}");
    assert!(
        lines[10].contains("31 more refused deliveries were not logged"),
        "{}",
        lines[10]
    );

    // Every refusal is counted, logged or not, by reason.
    let text = metrics.render();
    assert!(
        text.contains("chip_gate_requests_refused_total{reason=\"signature_mismatch\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("chip_gate_requests_refused_total{reason=\"signature_length\"} 41"),
        "{text}"
    );
    assert!(text.contains("chip_gate_connections "), "{text}");
}
