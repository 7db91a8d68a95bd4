//! `list_all` follows `next` page by page, and stops with an error instead of looping or following a
//! link somewhere else.
#![allow(clippy::unwrap_used)]

mod common;

use chip_gate::{Error, RetryPolicy};
use common::script::{ScriptServer, Seen, Step, client_with, json, webhook_json};
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
        .map(|(_, p)| p.split('&').next().unwrap().parse().unwrap())
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

/// The targets the server saw, in order.
fn targets(server: &ScriptServer) -> Vec<String> {
    server.seen().into_iter().map(|s| s.target).collect()
}

#[tokio::test]
async fn a_cursor_link_is_followed_with_all_its_parameters() {
    // Not page-numbered at all: the link is followed as it is.
    let server = ScriptServer::start(|_, seen| {
        let base = format!("http://{}", seen.header("host").unwrap());
        match seen.target.as_str() {
            "/api/v1/webhooks/" => page(
                1,
                2,
                Some(format!("{base}/api/v1/webhooks/?cursor=abc%3D&limit=2")),
            ),
            _ => page(2, 2, None),
        }
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let all: Vec<_> = client.webhooks().list_all().try_collect().await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(
        targets(&server),
        [
            "/api/v1/webhooks/",
            "/api/v1/webhooks/?cursor=abc%3D&limit=2"
        ]
    );
}

#[tokio::test]
async fn relative_links_are_resolved_against_the_list_url() {
    // Page 1 links with an absolute path, page 2 with a bare query, page 3 ends.
    let server = ScriptServer::start(|_, seen| match page_of(seen) {
        1 => page(1, 2, Some("/api/v1/webhooks/?page=2".into())),
        2 => page(2, 2, Some("?page=3".into())),
        n => page(n, 2, None),
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let all: Vec<_> = client.webhooks().list_all().try_collect().await.unwrap();
    let ids: Vec<String> = all.iter().map(|w| w.id.to_string()).collect();
    assert_eq!(ids, (0..6).map(nth_id).collect::<Vec<_>>());
    assert_eq!(
        targets(&server),
        [
            "/api/v1/webhooks/",
            "/api/v1/webhooks/?page=2",
            "/api/v1/webhooks/?page=3"
        ]
    );
}

#[tokio::test]
async fn every_query_parameter_of_next_is_kept() {
    let server = ScriptServer::start(|_, seen| {
        let base = format!("http://{}", seen.header("host").unwrap());
        let n = page_of(seen);
        page(
            n,
            1,
            (n < 3).then(|| format!("{base}/api/v1/webhooks/?page={}&page_size=50", n + 1)),
        )
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let all: Vec<_> = client.webhooks().list_all().try_collect().await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(
        targets(&server),
        [
            "/api/v1/webhooks/",
            "/api/v1/webhooks/?page=2&page_size=50",
            "/api/v1/webhooks/?page=3&page_size=50"
        ]
    );
}

#[tokio::test]
async fn a_page_without_next_or_previous_keys_is_the_last() {
    // CHIP's schema requires none of the envelope's fields.
    let server = ScriptServer::start(|_, _| {
        json(
            200,
            json!({"results": [webhook_json(&nth_id(0), "only", &["purchase.paid"])]}),
        )
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let first = client.webhooks().list().await.unwrap();
    assert_eq!(first.next, None);
    assert_eq!(client.webhooks().next_page(&first).unwrap(), None);
    let all: Vec<_> = client.webhooks().list_all().try_collect().await.unwrap();
    assert_eq!(all.len(), 1);
    // Even an envelope with no `results` reads as an empty page.
    let empty = ScriptServer::start(|_, _| json(200, json!({}))).await;
    let client = client_with(&empty.base_url, RetryPolicy::none());
    let all: Vec<_> = client.webhooks().list_all().try_collect().await.unwrap();
    assert!(all.is_empty());
}

#[tokio::test]
async fn empty_pages_that_keep_linking_onwards_stop_the_walk() {
    // Page 1 has webhooks; from page 2 on every page is empty yet links to the next one. Before,
    // such a server was followed forever.
    let server = ScriptServer::start(|_, seen| {
        let base = format!("http://{}", seen.header("host").unwrap());
        let n = page_of(seen);
        let size = if n == 1 { 2 } else { 0 };
        page(
            n,
            size,
            Some(format!("{base}/api/v1/webhooks/?page={}", n + 1)),
        )
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let items: Vec<Result<_, Error>> = client.webhooks().list_all().collect().await;
    assert_eq!(items.len(), 3, "two webhooks, then the error: {items:?}");
    let err = items[2].as_ref().unwrap_err();
    assert!(matches!(err, Error::Pagination { .. }), "{err:?}");
    assert!(err.to_string().contains("empty"), "{err}");
    assert_eq!(server.count(), 2);
}

#[tokio::test]
async fn the_page_limit_stops_an_endless_list() {
    let server = ScriptServer::start(|_, seen| {
        let base = format!("http://{}", seen.header("host").unwrap());
        let n = page_of(seen);
        page(
            n,
            1,
            Some(format!("{base}/api/v1/webhooks/?page={}", n + 1)),
        )
    })
    .await;
    let client = chip_gate::Client::builder("test_key")
        .base_url(&server.base_url)
        .retry_policy(RetryPolicy::none())
        .max_pages(5)
        .build()
        .unwrap();
    assert_eq!(client.max_pages(), 5);
    let items: Vec<Result<_, Error>> = client.webhooks().list_all().collect().await;
    assert_eq!(items.len(), 6, "five webhooks, then the error: {items:?}");
    let err = items[5].as_ref().unwrap_err();
    assert!(err.to_string().contains("page limit"), "{err}");
    assert_eq!(server.count(), 5);
}

#[tokio::test]
async fn a_next_to_another_port_or_path_is_never_followed() {
    for next in [
        "http://127.0.0.1:1/api/v1/webhooks/?page=2",
        "/api/v2/webhooks/?page=2",
        "//attacker.example/api/v1/webhooks/?page=2",
    ] {
        let next = next.to_owned();
        let server =
            ScriptServer::start(move |_, seen| page(page_of(seen), 1, Some(next.clone()))).await;
        let client = client_with(&server.base_url, RetryPolicy::none());
        let items: Vec<Result<_, Error>> = client.webhooks().list_all().collect().await;
        assert_eq!(items.len(), 2);
        assert!(
            matches!(items[1], Err(Error::Pagination { .. })),
            "{:?}",
            items[1]
        );
        assert_eq!(server.count(), 1);
    }
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
    assert_eq!(next.page().map(|p| p.get()), Some(2));
    let second = webhooks.list_next(&next).await.unwrap();
    assert_eq!(second.results[0].id.to_string(), nth_id(2));
    assert_eq!(webhooks.next_page(&second).unwrap(), None);
}
