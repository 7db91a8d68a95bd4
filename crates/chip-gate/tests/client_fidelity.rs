//! The client against servers that answer the way CHIP publishes and documents its API, not only
//! the way our spec reads it: bodiless and non-JSON error answers, the all-events request, webhooks
//! without the fields CHIP does not require, `Retry-After` as a date, and transport failures that
//! name their cause. Each test runs against a scripted HTTP server on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime};

use chip_gate::{Error, EventName, NewWebhook, RetryPolicy, WebhookChanges};
use common::script::{ScriptServer, Step, client, client_with, json, raw};
use common::{ID, KEY, id};
use serde_json::json;

/// Every kind of error body a server (or a proxy in front of it) may send.
fn error_bodies() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("empty", "application/json", ""),
        ("empty, no type", "", ""),
        (
            "an HTML page",
            "text/html",
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
        ),
        ("plain text", "text/plain", "Not Found"),
        ("a JSON array", "application/json", r#"["Invalid page."]"#),
        ("a JSON string", "application/json", r#""No such object""#),
        ("JSON null", "application/json", "null"),
        (
            "a JSON object",
            "application/json",
            r#"{"detail": "Not found."}"#,
        ),
    ]
}

/// A reply with an optional content type.
fn reply(status: u16, content_type: &str, body: &str) -> Step {
    if content_type.is_empty() {
        Step::Reply(status, vec![], body.into())
    } else {
        raw(status, content_type, body)
    }
}

#[tokio::test]
async fn every_error_status_keeps_its_status_whatever_the_body() {
    for status in [400u16, 401, 403, 404, 500, 503] {
        for (what, content_type, body) in error_bodies() {
            let server = ScriptServer::start(move |_, _| reply(status, content_type, body)).await;
            let client = client_with(&server.base_url, RetryPolicy::none());
            let err = client.webhooks().retrieve(id()).await.unwrap_err();
            match &err {
                Error::Api {
                    status: got,
                    body: kept,
                    ..
                } => {
                    assert_eq!(got.as_u16(), status, "{status} with {what}");
                    assert_eq!(kept, body, "the body exactly as sent ({status}, {what})");
                }
                other => panic!("{status} with {what}: expected Error::Api, got {other:?}"),
            }
            assert_eq!(err.status().map(|s| s.as_u16()), Some(status));
            assert_eq!(
                err.is_retryable(),
                status == 503,
                "{status} with {what}: {err}"
            );
        }
    }
}

#[tokio::test]
async fn messages_are_read_where_the_body_has_them() {
    let cases = [
        (r#"{"detail": "Not found."}"#, None, Some("Not found.")),
        (r#""No such object""#, None, Some("No such object")),
        (r#"["Invalid page."]"#, None, Some("Invalid page.")),
        // CHIP's published 400 example: a JSON string whose text is the error object.
        (
            r#""{\"__all__\": {\"message\": \"Bad data\", \"code\": \"invalid\"}}""#,
            Some("invalid"),
            Some("Bad data"),
        ),
        ("<html>Bad Request</html>", None, None),
        ("", None, None),
    ];
    for (body, code, message) in cases {
        let server = ScriptServer::start(move |_, _| raw(400, "application/json", body)).await;
        let err = client(&server.base_url)
            .webhooks()
            .create(
                &NewWebhook::builder("t", "https://shop.example.com/")
                    .events([EventName::PurchasePaid])
                    .unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.status().map(|s| s.as_u16()), Some(400), "{body}");
        assert_eq!(err.code(), code, "{body}");
        assert_eq!(err.message(), message, "{body}");
    }
}

#[tokio::test]
async fn an_unknown_id_is_a_404_for_every_operation_as_chip_documents_it() {
    // CHIP documents its 404 with no content at all.
    let server = ScriptServer::start(|_, _| Step::Reply(404, vec![], String::new())).await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let webhooks = client.webhooks();
    let replacement = NewWebhook::builder("t", "https://shop.example.com/")
        .all_events()
        .unwrap();
    let results = [
        webhooks.retrieve(id()).await.map(|_| ()),
        webhooks.delete(id()).await,
        webhooks.update(id(), &replacement).await.map(|_| ()),
        webhooks
            .partial_update(id(), &WebhookChanges::new().title("x"))
            .await
            .map(|_| ()),
        webhooks.list().await.map(|_| ()),
    ];
    for result in results {
        let err = result.unwrap_err();
        assert!(
            matches!(&err, Error::Api { status, body, .. } if status.as_u16() == 404 && body.is_empty()),
            "{err:?}"
        );
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("404"), "{err}");
    }
}

#[tokio::test]
async fn a_retried_delete_whose_first_answer_was_lost_ends_in_a_bodiless_404() {
    // The first attempt's answer is a 503 from a proxy (the webhook may be gone already); the retry
    // gets CHIP's bodiless 404.
    let server = ScriptServer::start(|n, _| match n {
        0 => raw(503, "text/html", "<html>Service Unavailable</html>"),
        1 => Step::Reply(404, vec![], String::new()),
        // The one look at the list that tells a missing webhook from a wrong base URL.
        _ => json(200, serde_json::json!({"results": []})),
    })
    .await;
    let err = client(&server.base_url)
        .webhooks()
        .delete(id())
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404), "{err:?}");
    assert!(matches!(err, Error::Api { .. }));
    assert!(err.to_string().contains("no webhook"), "{err}");
    assert_eq!(server.count(), 3);
}

#[tokio::test]
async fn an_all_events_webhook_satisfies_chips_schema_and_its_prose() {
    let server = ScriptServer::start(|_, seen| {
        let mut webhook = common::script::webhook_json(ID, "Audit", &[]);
        webhook["all_events"] = json!(true);
        webhook["events"] =
            serde_json::from_str::<serde_json::Value>(&seen.body).unwrap()["events"].clone();
        json(if seen.method == "POST" { 201 } else { 200 }, webhook)
    })
    .await;
    let client = client(&server.base_url);
    let new = NewWebhook::builder("Audit", "https://audit.example.com/chip")
        .all_events()
        .unwrap();
    let created = client.webhooks().create(&new).await.unwrap();
    assert!(created.all_events);
    client.webhooks().update(id(), &new).await.unwrap();
    let every: Vec<&str> = EventName::ALL.iter().map(EventName::as_str).collect();
    for seen in server.seen() {
        let body: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
        assert_eq!(body["all_events"], json!(true), "{}", seen.method);
        // CHIP's schema: `events` required, at least one; its prose: all_events overrides it.
        assert_eq!(body["events"], json!(every), "{}", seen.method);
    }
}

#[tokio::test]
async fn webhooks_without_the_fields_chip_does_not_require_decode() {
    let minimal = json!({
        "id": ID,
        "title": "All of it",
        "callback": "https://shop.example.com/chip",
        "public_key": "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n",
    });
    let mut null_events = minimal.clone();
    null_events["events"] = json!(null);
    null_events["all_events"] = json!(true);
    null_events["surprise"] = json!({"new": "field"});
    let page = json!({"results": [minimal.clone(), null_events.clone()], "next": null});
    let server = ScriptServer::start(move |n, _| match n {
        0 => json(200, minimal.clone()),
        1 => json(200, null_events.clone()),
        _ => json(200, page.clone()),
    })
    .await;
    let client = client(&server.base_url);
    let first = client.webhooks().retrieve(id()).await.unwrap();
    assert!(first.event_names().is_empty());
    assert!(!first.all_events);
    assert_eq!(first.type_, None);
    assert_eq!(first.created_on, None);
    let second = client.webhooks().retrieve(id()).await.unwrap();
    assert!(second.all_events);
    assert!(second.event_names().is_empty());
    assert!(second.receives(&EventName::PayoutFailed));
    let list = client.webhooks().list().await.unwrap();
    assert_eq!(
        list.results.len(),
        2,
        "one lenient webhook no longer fails the page"
    );
}

#[tokio::test]
async fn the_fields_users_rely_on_stay_required() {
    for missing in ["id", "public_key", "callback", "title"] {
        let mut webhook = common::script::webhook_json(ID, "t", &["purchase.paid"]);
        webhook.as_object_mut().unwrap().remove(missing);
        let server = ScriptServer::start(move |_, _| json(200, webhook.clone())).await;
        let err = client(&server.base_url)
            .webhooks()
            .retrieve(id())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Decode { .. }), "{missing}: {err:?}");
        assert!(err.to_string().contains(missing), "{missing}: {err}");
    }
}

/// `Retry-After` as an HTTP date, `seconds` from now.
fn http_date_in(seconds: u64) -> String {
    httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(seconds))
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    // A date 3 s ahead: the error carries a delay of about that much.
    let server = ScriptServer::start(|_, _| {
        Step::Reply(
            503,
            vec![("retry-after".into(), http_date_in(3))],
            String::new(),
        )
    })
    .await;
    let err = client_with(&server.base_url, RetryPolicy::none())
        .webhooks()
        .retrieve(id())
        .await
        .unwrap_err();
    let delay = err.retry_after().expect("the date is read");
    assert!(
        delay > Duration::ZERO && delay <= Duration::from_secs(3),
        "{delay:?}"
    );

    // A date past the policy's cap ends the call after one attempt, as the seconds form does.
    let far = ScriptServer::start(|_, _| {
        Step::Reply(
            429,
            vec![("retry-after".into(), http_date_in(600))],
            String::new(),
        )
    })
    .await;
    let err = client_with(&far.base_url, RetryPolicy::default().max_attempts(3))
        .webhooks()
        .retrieve(id())
        .await
        .unwrap_err();
    assert!(err.retry_after().unwrap() > Duration::from_secs(500));
    assert_eq!(
        far.count(),
        1,
        "not retried: the date is beyond max_retry_after"
    );

    // A date in the past means "now": retried at once, then the answer.
    let past = ScriptServer::start(|n, _| match n {
        0 => Step::Reply(
            503,
            vec![("retry-after".into(), "Wed, 21 Oct 2015 07:28:00 GMT".into())],
            String::new(),
        ),
        _ => json(200, common::script::webhook_json(ID, "t", &[])),
    })
    .await;
    let policy = RetryPolicy::default()
        .max_attempts(2)
        // A backoff longer than max_elapsed: only an honoured Retry-After of zero lets it retry.
        .initial_backoff(Duration::from_secs(30))
        .max_elapsed(Duration::from_secs(5));
    let client = chip_gate::Client::builder(KEY)
        .base_url(&past.base_url)
        .retry_policy(policy)
        .build()
        .unwrap();
    client.webhooks().retrieve(id()).await.unwrap();
    assert_eq!(past.count(), 2);
}

#[tokio::test]
async fn a_refused_connection_names_its_cause() {
    // A port that was just free: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = client_with(
        &format!("http://127.0.0.1:{port}/api/v1"),
        RetryPolicy::none(),
    );
    let err = client.webhooks().retrieve(id()).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    let text = err.to_string().to_lowercase();
    assert!(text.contains("connection refused"), "{text}");
    assert!(!text.contains(KEY));
}

#[tokio::test]
async fn a_dropped_connection_names_its_cause() {
    let server = ScriptServer::start(|_, _| Step::Drop).await;
    let err = client_with(&server.base_url, RetryPolicy::none())
        .webhooks()
        .retrieve(id())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("connection closed before message completed"),
        "{text}"
    );
}

#[tokio::test]
async fn a_404_says_what_was_not_found() {
    // CHIP's API at /api/v1: the list answers, anything else is a bodiless 404.
    let server = ScriptServer::start(|_, seen| {
        if seen.method == "GET" && seen.target == "/api/v1/webhooks/" {
            json(200, serde_json::json!({"results": []}))
        } else {
            Step::Reply(404, vec![], String::new())
        }
    })
    .await;
    // A base URL without /api/v1: the list and the public key cannot be missing on CHIP.
    let root = server.base_url.trim_end_matches("/api/v1").to_owned();
    let client = client_with(&root, RetryPolicy::none());
    let err = client.webhooks().list().await.unwrap_err();
    assert!(err.to_string().contains("should end in /api/v1"), "{err}");
    let err = client.public_key().await.unwrap_err();
    assert!(err.to_string().contains("should end in /api/v1"), "{err}");
    // A webhook id that is not there is named.
    let client = client_with(&server.base_url, RetryPolicy::none());
    for err in [
        client.webhooks().retrieve(id()).await.unwrap_err(),
        client.webhooks().delete(id()).await.unwrap_err(),
    ] {
        assert!(
            err.to_string().contains(&format!("no webhook {ID}")),
            "{err}"
        );
        assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    }
    // A page past the end is named as such, not as a wrong base URL.
    let err = client
        .webhooks()
        .list_page(std::num::NonZeroU64::new(9).unwrap())
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("base URL"), "{err}");
    assert!(err.to_string().contains("no page 9"), "{err}");
}
