//! The API key never shows: not in the Debug or Display of the client, its builder or any error (on
//! several kinds of failure, even when a server echoes it back), not in the tracing output. It is sent
//! only as `Authorization: Bearer`, and never in clear text to anything but a loopback address.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chip_gate::{ApiKey, Client, Error, EventName, NewWebhook, RetryPolicy};
use common::script::{ScriptServer, Step, client_with, json, raw, webhook_json};
use common::{ID, KEY, assert_no_key, id};
use serde_json::json;

/// Debug, alternate Debug, Display and the whole source chain of an error.
fn everything_about(err: &Error) -> String {
    let mut out = format!("{err:?}\n{err:#?}\n{err}\n");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        out.push_str(&format!("{s}\n{s:?}\n"));
        source = s.source();
    }
    out
}

#[test]
fn key_is_redacted_from_debug_and_display() {
    let key = ApiKey::new(KEY);
    assert_eq!(format!("{key:?}"), "[redacted]");
    assert_eq!(format!("{key}"), "[redacted]");
    let builder = Client::builder(KEY).base_url("http://127.0.0.1:1/api/v1");
    assert_no_key(&format!("{builder:?} {builder:#?}"));
    let client = builder.build().unwrap();
    let shown = format!("{client:?} {client:#?}");
    assert_no_key(&shown);
    assert!(shown.contains("[redacted]"), "{shown}");
}

#[test]
fn plain_http_to_a_remote_host_is_refused() {
    for url in [
        "http://gate.chip-in.asia/api/v1",
        "http://192.168.1.10:8080/api/v1",
        "http://[2001:db8::1]/api/v1",
        "http://localhost.attacker.example/api/v1",
    ] {
        let err = Client::builder(KEY).base_url(url).build().unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest { .. }),
            "{url}: {err:?}"
        );
        let text = everything_about(&err);
        assert!(
            text.contains("refusing to send the API key over plain http://"),
            "{text}"
        );
        assert!(text.contains("loopback"), "{text}");
        assert_no_key(&text);
    }
    for url in [
        "http://127.0.0.1:8080/api/v1",
        "http://127.1.2.3/api/v1/",
        "http://[::1]:9000/api/v1",
        "http://localhost:3000/api/v1",
        "https://gate.chip-in.asia/api/v1/",
    ] {
        assert!(Client::builder(KEY).base_url(url).build().is_ok(), "{url}");
    }
}

#[test]
fn bad_configuration_errors_do_not_show_the_key() {
    for err in [
        Client::builder(format!("{KEY}\u{0}")).build().unwrap_err(),
        Client::builder(KEY)
            .base_url("gate.chip-in.asia")
            .build()
            .unwrap_err(),
        Client::builder(KEY)
            .base_url(format!("https://user:{KEY}@gate.chip-in.asia/"))
            .build()
            .unwrap_err(),
        Client::builder("").build().unwrap_err(),
    ] {
        assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
        assert_no_key(&everything_about(&err));
    }
}

#[tokio::test]
async fn the_key_is_sent_as_a_bearer_header_with_the_user_agent() {
    let server = ScriptServer::start(|_, _| json(200, webhook_json(ID, "t", &[]))).await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    client.webhooks().retrieve(id()).await.unwrap();
    let seen = &server.seen()[0];
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, format!("/api/v1/webhooks/{ID}/"));
    assert_eq!(
        seen.header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
    assert_eq!(
        seen.header("user-agent"),
        Some(&*format!("chip-gate/{}", env!("CARGO_PKG_VERSION")))
    );
}

#[tokio::test]
async fn failures_of_every_kind_do_not_show_the_key() {
    // A server that echoes the Authorization header back in its error bodies.
    let echo = |seen: &common::script::Seen, status: u16| {
        let auth = seen.header("authorization").unwrap_or_default().to_owned();
        raw(
            status,
            "application/json",
            &json!({"__all__": {"message": format!("bad header {auth}"), "code": auth}})
                .to_string(),
        )
    };
    let server = ScriptServer::start(move |n, seen| match n {
        0 => echo(seen, 400), // declared status
        1 => echo(seen, 429), // undeclared status
        2 => raw(
            200,
            "application/json",
            &format!(
                "not json {}",
                seen.header("authorization").unwrap_or_default()
            ),
        ),
        3 => Step::Slow(Duration::from_secs(5), Box::new(json(200, json!({})))),
        _ => Step::Drop,
    })
    .await;
    let client = Client::builder(KEY)
        .base_url(&server.base_url)
        .timeout(Duration::from_millis(300))
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();
    let hook = NewWebhook::builder("t", "https://a.example/")
        .events([EventName::PurchasePaid])
        .unwrap();

    let mut errors = vec![client.webhooks().create(&hook).await.unwrap_err()];
    errors.push(client.webhooks().retrieve(id()).await.unwrap_err());
    errors.push(client.webhooks().retrieve(id()).await.unwrap_err());
    errors.push(client.webhooks().retrieve(id()).await.unwrap_err());
    errors.push(client.webhooks().retrieve(id()).await.unwrap_err());

    assert!(matches!(errors[0], Error::Api { .. }), "{:?}", errors[0]);
    assert!(matches!(errors[1], Error::Api { .. }), "{:?}", errors[1]);
    assert!(matches!(errors[2], Error::Decode { .. }), "{:?}", errors[2]);
    assert!(
        matches!(errors[3], Error::Timeout { .. }),
        "{:?}",
        errors[3]
    );
    assert!(
        matches!(errors[4], Error::Transport { .. }),
        "{:?}",
        errors[4]
    );
    // The echoed key really reached the client, and was scrubbed.
    let Error::Api {
        body,
        message,
        code,
        ..
    } = &errors[0]
    else {
        unreachable!()
    };
    assert!(body.contains("Bearer [redacted]"), "{body}");
    assert_eq!(message.as_deref(), Some("bad header Bearer [redacted]"));
    assert_eq!(code.as_deref(), Some("Bearer [redacted]"));
    for err in &errors {
        assert_no_key(&everything_about(err));
    }
}

#[tokio::test]
async fn a_caller_supplied_client_builder_keeps_its_settings_and_gets_the_key() {
    let server = ScriptServer::start(|_, _| json(200, webhook_json(ID, "t", &[]))).await;
    let mut extra = reqwest::header::HeaderMap::new();
    extra.insert("x-shop", reqwest::header::HeaderValue::from_static("main"));
    let client = Client::builder(KEY)
        .base_url(&server.base_url)
        .http_client_builder(reqwest::Client::builder().default_headers(extra))
        .build()
        .unwrap();
    client.webhooks().retrieve(id()).await.unwrap();
    let seen = &server.seen()[0];
    assert_eq!(seen.header("x-shop"), Some("main"));
    assert_eq!(
        seen.header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );
}

#[tokio::test]
async fn redirects_are_not_followed_so_the_key_stays_put() {
    let elsewhere = ScriptServer::start(|_, _| json(200, webhook_json(ID, "t", &[]))).await;
    let target = format!("{}/webhooks/{ID}/", elsewhere.base_url);
    let server = ScriptServer::start(move |_, _| {
        Step::Reply(
            302,
            vec![("location".into(), target.clone())],
            String::new(),
        )
    })
    .await;
    let client = client_with(&server.base_url, RetryPolicy::none());
    let err = client.webhooks().retrieve(id()).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(302), "{err:?}");
    assert_eq!(elsewhere.count(), 0);
}
