//! `list_all` follows `next` page by page, and stops with an error instead of looping or following a
//! link somewhere else.
#![allow(clippy::unwrap_used)]

mod client_common;

use chip_gate::{Error, RetryPolicy};
use client_common::{ScriptServer, Seen, Step, client_with, json, webhook_json};
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

/// The id of webhook number `n`.
fn nth_id(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// The page number a request asked for (1 when it named none).
fn page_of(seen: &Seen) -> usize {
    seen.target
        .split_once("page=")
        .map(|(_, p)| p.parse().unwrap())
        .unwrap_or(1)
}

/// A page of `size` webhooks numbered from `(page - 1) * size`, with the given `next`.
fn page(page: usize, size: usize, next: Option<String>) -> Step {
    let results: Vec<_> = (0..size)
        .map(|i| {
            webhook_json(
                &nth_id((page - 1) * size + i),
                &format!("hook {i}"),
                &["purchase.paid"],
            )
        })
        .collect();
    json(
        200,
        json!({"results": results, "next": next, "previous": null}),
    )
}

#[tokio::test]
async fn list_all_follows_next_across_pages() {
    let server = ScriptServer::start(|_, seen| {
        let base = format!("http://{}", seen.header("host").unwrap());
        let n = page_of(seen);
        let next = (n < 4).then(|| format!("{base}/api/v1/webhooks/?page={}", n + 1));
        page(n, 3, next)
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let all: Vec<_> = client.webhooks().list_all().try_collect().await.unwrap();
    let ids: Vec<String> = all.iter().map(|w| w.id.to_string()).collect();
    let expected: Vec<String> = (0..12).map(nth_id).collect();
    assert_eq!(ids, expected);
    let targets: Vec<String> = server.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        [
            "/api/v1/webhooks/",
            "/api/v1/webhooks/?page=2",
            "/api/v1/webhooks/?page=3",
            "/api/v1/webhooks/?page=4"
        ]
    );
}

#[tokio::test]
async fn pages_are_fetched_only_as_they_are_consumed() {
    let server = ScriptServer::start(|_, seen| {
        let base = format!("http://{}", seen.header("host").unwrap());
        let n = page_of(seen);
        page(
            n,
            2,
            Some(format!("{base}/api/v1/webhooks/?page={}", n + 1)),
        )
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let first_three: Vec<_> = client
        .webhooks()
        .list_all()
        .take(3)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(first_three.len(), 3);
    assert_eq!(
        server.count(),
        2,
        "only the two pages holding the first three webhooks"
    );
}

#[tokio::test]
async fn a_repeated_next_stops_with_an_error() {
    // Page 2 says its next page is page 2 again.
    let server = ScriptServer::start(|_, seen| {
        let base = format!("http://{}", seen.header("host").unwrap());
        page(
            page_of(seen),
            2,
            Some(format!("{base}/api/v1/webhooks/?page=2")),
        )
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let items: Vec<Result<_, Error>> = client.webhooks().list_all().collect().await;
    assert_eq!(
        items.len(),
        5,
        "two pages of two webhooks, then the error: {items:?}"
    );
    assert!(items[..4].iter().all(Result::is_ok));
    let err = items[4].as_ref().unwrap_err();
    assert!(matches!(err, Error::Pagination { .. }), "{err:?}");
    assert!(err.to_string().contains("page 2 again"), "{err}");
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn a_next_pointing_back_to_the_first_page_stops() {
    let server = ScriptServer::start(|_, seen| {
        let base = format!("http://{}", seen.header("host").unwrap());
        page(
            page_of(seen),
            1,
            Some(format!("{base}/api/v1/webhooks/?page=1")),
        )
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let items: Vec<Result<_, Error>> = client.webhooks().list_all().collect().await;
    assert_eq!(items.len(), 2);
    assert!(matches!(items[1], Err(Error::Pagination { .. })));
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn a_next_to_another_host_is_never_followed() {
    let server = ScriptServer::start(|_, seen| {
        page(
            page_of(seen),
            1,
            Some("https://collector.attacker.example/api/v1/webhooks/?page=2".into()),
        )
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let items: Vec<Result<_, Error>> = client.webhooks().list_all().collect().await;
    assert_eq!(items.len(), 2);
    let err = items[1].as_ref().unwrap_err();
    assert!(err.to_string().contains("another server"), "{err}");
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn a_next_without_a_page_number_is_an_error() {
    let server = ScriptServer::start(|_, seen| {
        let base = format!("http://{}", seen.header("host").unwrap());
        page(
            page_of(seen),
            1,
            Some(format!("{base}/api/v1/webhooks/?cursor=abc")),
        )
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let webhooks = client.webhooks();
    let first = webhooks.list().await.unwrap();
    let err = webhooks.next_page(&first).unwrap_err();
    assert!(err.to_string().contains("no `page`"), "{err}");
}

#[tokio::test]
async fn a_failed_page_ends_the_stream_with_the_error() {
    let server = ScriptServer::start(|_, seen| {
        let base = format!("http://{}", seen.header("host").unwrap());
        match page_of(seen) {
            1 => page(1, 2, Some(format!("{base}/api/v1/webhooks/?page=2"))),
            _ => json(404, json!({"detail": "Invalid page."})),
        }
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let items: Vec<Result<_, Error>> = client.webhooks().list_all().collect().await;
    assert_eq!(items.len(), 3);
    assert_eq!(
        items[2].as_ref().unwrap_err().status().map(|s| s.as_u16()),
        Some(404)
    );
}

#[tokio::test]
async fn one_page_and_its_next_page_number() {
    let server = ScriptServer::start(|_, seen| {
        let base = format!("http://{}", seen.header("host").unwrap());
        let n = page_of(seen);
        page(
            n,
            2,
            (n < 2).then(|| format!("{base}/api/v1/webhooks/?page={}", n + 1)),
        )
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let webhooks = client.webhooks();
    let first = webhooks.list().await.unwrap();
    let next = webhooks.next_page(&first).unwrap().unwrap();
    assert_eq!(next.get(), 2);
    let second = webhooks.list_page(next).await.unwrap();
    assert_eq!(second.results[0].id.to_string(), nth_id(2));
    assert_eq!(webhooks.next_page(&second).unwrap(), None);
}
