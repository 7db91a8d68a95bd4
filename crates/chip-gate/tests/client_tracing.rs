//! Each call runs in a `chip_gate.call` span recording the operation, method, attempt count, status
//! and elapsed time, and nothing traced (by chip-gate or the HTTP stack below it) shows the API key.
//!
//! One test in this file on purpose: a thread-local subscriber is only reliable when no other test
//! thread registers the same callsites at the same time.
#![allow(clippy::unwrap_used)]

mod common;

use chip_gate::{Error, NewWebhook, RetryPolicy};
use common::script::{ScriptServer, Step, client_with, json, webhook_json};
use common::{Capture, ID, assert_no_key, id};
use serde_json::json;

fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(capture.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (capture, guard)
}

#[tokio::test]
async fn spans_record_each_call_and_never_the_key() {
    let (capture, _guard) = capture();
    spans_record_each_call(&capture).await;
    capture.clear();
    a_create_is_retried_only_when_the_connection_could_not_be_opened(&capture).await;
}

async fn spans_record_each_call(capture: &Capture) {
    let server = ScriptServer::start(|n, seen| match n {
        0 => json(
            503,
            json!({"detail": format!("echo {}", seen.header("authorization").unwrap_or_default())}),
        ),
        1 => Step::Drop,
        2 => json(200, webhook_json(ID, "t", &[])),
        _ => json(401, json!({"detail": "Invalid token."})),
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::default().max_attempts(3));
    client.webhooks().retrieve(id()).await.unwrap();
    client.webhooks().delete(id()).await.unwrap_err();

    let text = capture.text();
    assert_no_key(&text);
    assert!(text.contains("chip_gate.call"), "{text}");
    assert!(text.contains("operation=\"webhooks_retrieve\""), "{text}");
    assert!(text.contains("method=\"GET\""), "{text}");
    assert!(text.contains("attempt=3"), "{text}");
    assert!(text.contains("status=200"), "{text}");
    assert!(text.contains("elapsed_ms="), "{text}");
    assert!(text.contains("operation=\"webhooks_delete\""), "{text}");
    assert!(text.contains("status=401"), "{text}");
    assert_eq!(text.matches("retrying").count(), 2, "{text}");
}

async fn a_create_is_retried_only_when_the_connection_could_not_be_opened(capture: &Capture) {
    // Nothing listens on this port: the request provably never left, so retrying is safe.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = client_with(
        &format!("http://127.0.0.1:{port}/api/v1"),
        RetryPolicy::default().max_attempts(3),
    );
    let hook = NewWebhook::builder("t", "https://a.example/")
        .all_events()
        .unwrap();
    let err = client.webhooks().create(&hook).await.unwrap_err();
    assert!(
        matches!(&err, Error::Transport { source } if source.is_connect()),
        "{err:?}"
    );
    let text = capture.text();
    assert_eq!(text.matches("retrying").count(), 2, "{text}");
    assert!(text.contains("attempt=3"), "{text}");
    assert_no_key(&text);
}
