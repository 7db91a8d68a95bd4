//! What a bad network or a hostile peer can do to a client user, and that it fails: an environment
//! proxy never sees a plain-http request (nor the key), an endless answer does not fill memory, and
//! a delivery's `Debug` shows no personal data.
//!
//! The proxy test needs environment variables, which cannot be changed safely in a running test (and
//! `unsafe` is forbidden here), so it runs this test binary again as a child process with them set.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chip_gate::{Error, RetryPolicy};
use common::script::{ScriptServer, Step, json, webhook_json};
use common::{ID, KEY};

const MODE: &str = "CHIP_GATE_PROXY_CHILD";
const NAME: &str = "an_environment_proxy_never_sees_a_plain_http_request";

/// A TCP listener on 127.0.0.1 that counts connections and reads what they send.
async fn fake_proxy() -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (c, s) = (count.clone(), seen.clone());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 4096];
            let n = stream.read(&mut buf).await.unwrap_or(0);
            s.lock().unwrap().extend_from_slice(&buf[..n]);
            // Answer for "CHIP", as a hostile proxy would.
            let body = r#"{"id":"00000000-0000-4000-8000-000000000000","title":"proxied","callback":"https://evil.example/","public_key":"x"}"#;
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    });
    (format!("http://{address}"), count, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_proxy_never_sees_a_plain_http_request() {
    if let Ok(base_url) = std::env::var(MODE) {
        // The child: every proxy variable points at the fake proxy.
        let client = common::script::client_with(&base_url, RetryPolicy::none());
        let webhook = client
            .webhooks()
            .retrieve(ID.parse().unwrap())
            .await
            .unwrap();
        assert_eq!(webhook.id.to_string(), ID, "the answer is the server's");
        return;
    }
    let server =
        ScriptServer::start(|_, _| json(200, webhook_json(ID, "real", &["purchase.paid"]))).await;
    let (proxy, count, seen) = fake_proxy().await;
    let mut cmd = common::this_test(NAME);
    cmd.env(MODE, &server.base_url)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env(name, &proxy);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.count(), 1, "the request went straight to the server");
    assert_eq!(count.load(Ordering::SeqCst), 0, "the proxy saw nothing");
    assert!(!String::from_utf8_lossy(&seen.lock().unwrap()).contains(KEY));
}

#[tokio::test]
async fn an_answer_past_the_size_cap_is_a_clear_error() {
    let big = "x".repeat(200 * 1024);
    let server = ScriptServer::start(move |_, _| {
        let mut webhook = webhook_json(ID, "t", &["purchase.paid"]);
        webhook["padding"] = serde_json::Value::String(big.clone());
        json(200, webhook)
    })
    .await;
    let small = chip_gate::Client::builder(KEY)
        .base_url(&server.base_url)
        .retry_policy(RetryPolicy::none())
        .max_response_bytes(64 * 1024)
        .build()
        .unwrap();
    let err = small
        .webhooks()
        .retrieve(ID.parse().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ResponseTooLarge), "{err:?}");
    assert!(err.to_string().contains("max_response_bytes"), "{err}");
    // The default cap reads it.
    let default = common::script::client(&server.base_url);
    default
        .webhooks()
        .retrieve(ID.parse().unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_endless_error_page_is_cut_not_buffered() {
    // A 502 page of 5 MiB: the error keeps its status and at most 64 KiB of the body.
    let page = format!("<html>{}</html>", "a".repeat(5 * 1024 * 1024));
    let server = ScriptServer::start(move |_, _| Step::Reply(502, vec![], page.clone())).await;
    let err = common::script::client_with(&server.base_url, RetryPolicy::none())
        .webhooks()
        .retrieve(ID.parse().unwrap())
        .await
        .unwrap_err();
    match err {
        Error::Api { status, body, .. } => {
            assert_eq!(status.as_u16(), 502);
            assert!(body.len() <= 64 * 1024 + 4, "{}", body.len());
            assert!(body.starts_with("<html>aaa"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn long_codes_and_messages_are_cut() {
    let long = "m".repeat(20_000);
    let server = ScriptServer::start(move |_, _| {
        json(
            400,
            serde_json::json!({"code": long.clone(), "message": long.clone()}),
        )
    })
    .await;
    let err = common::script::client(&server.base_url)
        .webhooks()
        .retrieve(ID.parse().unwrap())
        .await
        .unwrap_err();
    assert!(err.code().unwrap().len() <= 128 + 3);
    assert!(err.message().unwrap().len() <= 1024 + 3);
    assert!(err.to_string().len() < 2_000);
}

#[test]
fn a_deliverys_debug_shows_no_personal_data() {
    let body = common::CHIP_BODY.to_vec();
    let delivery = chip_gate::Delivery::parse_unverified(body.clone()).unwrap();
    let debug = format!("{delivery:?}");
    assert!(debug.contains("purchase.created"), "{debug}");
    assert!(
        debug.contains(&format!("body_len: {}", body.len())),
        "{debug}"
    );
    let raw: serde_json::Value = serde_json::from_slice(&body).unwrap();
    // No value from the client block (names, emails, phone numbers) shows.
    for (field, value) in raw["client"].as_object().unwrap() {
        if let Some(text) = value.as_str().filter(|t| t.len() > 3) {
            assert!(!debug.contains(text), "{field} leaked: {debug}");
        }
    }
    assert!(debug.len() < 400, "{debug}");
}
