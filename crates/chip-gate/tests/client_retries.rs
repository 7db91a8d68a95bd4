//! Retries against a scripted server on 127.0.0.1: reads, replaces and deletes ride out 503, 429 with
//! `Retry-After`, dropped connections and timeouts within the retry bound; creates and partial updates
//! are never repeated once sent; a slow server hits the configured timeout.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chip_gate::{Client, Error, EventName, NewWebhook, RetryPolicy, WebhookChanges};
use common::script::{ScriptServer, Step, client_with, json, webhook_json};
use common::{ID, KEY, id};
use serde_json::json;

fn hook() -> NewWebhook {
    NewWebhook::builder("Orders", "https://shop.example.com/chip")
        .events([EventName::PurchasePaid])
        .unwrap()
}

/// Fail the first `failures` requests with `fail`, then answer `ok`.
async fn flaky(failures: usize, fail: Step, ok: Step) -> ScriptServer {
    ScriptServer::start(move |n, _| {
        if n < failures {
            fail.clone()
        } else {
            ok.clone()
        }
    })
    .await
}

fn unavailable() -> Step {
    json(503, json!({"detail": "Service temporarily unavailable."}))
}

fn too_many(seconds: u64) -> Step {
    Step::Reply(
        429,
        vec![
            ("retry-after".into(), seconds.to_string()),
            ("content-type".into(), "application/json".into()),
        ],
        json!({"detail": "Request was throttled."}).to_string(),
    )
}

fn ok_webhook() -> Step {
    json(200, webhook_json(ID, "Orders", &["purchase.paid"]))
}

#[tokio::test]
async fn reads_survive_503s_within_the_bound() {
    let server = flaky(2, unavailable(), ok_webhook()).await;
    let client = client_with(&server.base_url, RetryPolicy::default().max_attempts(3));
    let webhook = client.webhooks().retrieve(id()).await.unwrap();
    assert_eq!(webhook.id, id());
    assert_eq!(server.count(), 3);
    assert!(server.seen().iter().all(|s| s.method == "GET"));
}

#[tokio::test]
async fn the_bound_is_respected() {
    let server = flaky(usize::MAX, unavailable(), ok_webhook()).await;
    let client = client_with(&server.base_url, RetryPolicy::default().max_attempts(4));
    let err = client.webhooks().retrieve(id()).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert!(err.is_retryable());
    assert_eq!(server.count(), 4);
}

#[tokio::test]
async fn the_time_budget_is_respected() {
    // Retry-After: 1 on every answer, but only 500 ms of budget: one attempt, no wait.
    let server = flaky(usize::MAX, too_many(1), ok_webhook()).await;
    let client = client_with(
        &server.base_url,
        RetryPolicy::default()
            .max_attempts(10)
            .max_elapsed(Duration::from_millis(500)),
    );
    let err = client.webhooks().list().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)));
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let list = json(200, json!({"results": [], "next": null, "previous": null}));
    let server = flaky(1, too_many(1), list).await;
    let client = client_with(&server.base_url, RetryPolicy::default());
    let page = client.webhooks().list().await.unwrap();
    assert!(page.results.is_empty());
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn a_retry_after_beyond_the_cap_is_not_waited_for() {
    let server = flaky(usize::MAX, too_many(3600), ok_webhook()).await;
    let client = client_with(
        &server.base_url,
        RetryPolicy::default().max_retry_after(Duration::from_secs(5)),
    );
    let err = client.webhooks().retrieve(id()).await.unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn reads_survive_dropped_connections() {
    let server = flaky(2, Step::Drop, ok_webhook()).await;
    let client = client_with(&server.base_url, RetryPolicy::default());
    assert_eq!(client.webhooks().retrieve(id()).await.unwrap().id, id());
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn deletes_survive_503_and_dropped_connections() {
    let server = ScriptServer::start(|n, _| match n {
        0 => unavailable(),
        1 => Step::Drop,
        _ => Step::Reply(204, vec![], String::new()),
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::default());
    client.webhooks().delete(id()).await.unwrap();
    assert_eq!(server.count(), 3);
    assert!(server.seen().iter().all(|s| s.method == "DELETE"));
}

#[tokio::test]
async fn replaces_are_retried() {
    let server = flaky(1, json(504, json!({})), ok_webhook()).await;
    let client = client_with(&server.base_url, RetryPolicy::default());
    let webhook = client.webhooks().update(id(), &hook()).await.unwrap();
    assert_eq!(webhook.title, "Orders");
    assert_eq!(server.count(), 2);
    assert!(server.seen().iter().all(|s| s.method == "PUT"));
}

#[tokio::test]
async fn a_create_that_meets_a_dropped_connection_is_not_repeated() {
    let server = flaky(1, Step::Drop, json(201, webhook_json(ID, "Orders", &[]))).await;
    let client = client_with(&server.base_url, RetryPolicy::default().max_attempts(5));
    let err = client.webhooks().create(&hook()).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(
        err.is_retryable(),
        "the caller may decide to check and retry"
    );
    assert_eq!(server.count(), 1, "the create must be sent exactly once");
}

#[tokio::test]
async fn a_create_that_meets_a_503_or_429_is_not_repeated() {
    for fail in [unavailable(), too_many(0)] {
        let server = flaky(1, fail, json(201, webhook_json(ID, "Orders", &[]))).await;
        let client = client_with(&server.base_url, RetryPolicy::default().max_attempts(5));
        let err = client.webhooks().create(&hook()).await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(server.count(), 1);
    }
}

#[tokio::test]
async fn a_partial_update_that_meets_a_dropped_connection_is_not_repeated() {
    let server = flaky(1, Step::Drop, ok_webhook()).await;
    let client = client_with(&server.base_url, RetryPolicy::default().max_attempts(5));
    let changes = WebhookChanges::new().title("Renamed");
    client
        .webhooks()
        .partial_update(id(), &changes)
        .await
        .unwrap_err();
    assert_eq!(server.count(), 1);
    assert_eq!(server.seen()[0].method, "PATCH");
    assert_eq!(server.seen()[0].body, r#"{"title":"Renamed"}"#);
}

#[tokio::test]
async fn a_slow_server_hits_the_timeout() {
    let server =
        ScriptServer::start(|_, _| Step::Slow(Duration::from_secs(10), Box::new(ok_webhook())))
            .await;
    let client = Client::builder(KEY)
        .base_url(&server.base_url)
        .timeout(Duration::from_millis(200))
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    let err = client.webhooks().retrieve(id()).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn a_slow_first_answer_is_retried_for_reads() {
    let server = ScriptServer::start(|n, _| {
        if n == 0 {
            Step::Slow(Duration::from_secs(10), Box::new(ok_webhook()))
        } else {
            ok_webhook()
        }
    })
    .await;
    let client = Client::builder(KEY)
        .base_url(&server.base_url)
        .timeout(Duration::from_millis(300))
        .retry_policy(RetryPolicy::default().initial_backoff(Duration::from_millis(10)))
        .build()
        .unwrap();
    assert_eq!(client.webhooks().retrieve(id()).await.unwrap().id, id());
    assert_eq!(server.count(), 2);
}
