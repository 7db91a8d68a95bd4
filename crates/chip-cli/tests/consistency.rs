//! CLI consistency: `create --id-only`, bare `--all-events` flags, an empty CHIP_BASE_URL means
//! unset, `--help` shows no environment values, readable timestamps, and nothing a server sends
//! can drive the terminal.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use axum::routing::get;
use common::{chip, command, mock, run};

#[tokio::test(flavor = "multi_thread")]
async fn create_id_only_and_bare_all_events_flags() {
    let mock = mock().await;
    let id = common::create(&mock, "https://x.example.com/").await;
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    let out = chip(&mock, &["webhooks", "patch", &id, "--all-events", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(json["all_events"], true);
    let out = chip(
        &mock,
        &[
            "webhooks",
            "patch",
            &id,
            "--no-all-events",
            "--event",
            "payment.refunded",
            "--json",
        ],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(json["all_events"], false);
    assert_eq!(json["events"], serde_json::json!(["payment.refunded"]));
    let out = chip(
        &mock,
        &["webhooks", "patch", &id, "--all-events", "--no-all-events"],
    )
    .await;
    assert_eq!(out.code, Some(2));

    // Readable times in the details, raw seconds in JSON.
    let out = chip(&mock, &["webhooks", "get", &id]).await;
    let created = out
        .ok()
        .lines()
        .find_map(|l| l.strip_prefix("created_on: "))
        .unwrap()
        .trim();
    assert_eq!(created.len(), 20, "{created}");
    assert!(
        created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "{created}"
    );
    let out = chip(&mock, &["webhooks", "get", &id, "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert!(json["created_on"].is_i64());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_base_url_means_unset_and_help_shows_no_values() {
    let mock = mock().await;
    // `chip trigger` needs a base URL: empty is "none given", not "not a URL".
    let mut cmd = command(&mock, &["trigger", "purchase.paid"]);
    cmd.env("CHIP_BASE_URL", "");
    let out = run(cmd).await;
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.starts_with("error: no mock to trigger"),
        "{}",
        out.stderr
    );

    // The other commands go to CHIP's own URL: seen here as a CONNECT to a local proxy that
    // answers nothing (no request leaves the machine).
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let mut cmd = command(&mock, &["public-key"]);
    cmd.env("CHIP_BASE_URL", "  ")
        .env("HTTPS_PROXY", &proxy_url);
    let child = tokio::task::spawn_blocking(move || cmd.output().unwrap());
    let (mut conn, _) = tokio::task::spawn_blocking(move || proxy.accept().unwrap())
        .await
        .unwrap();
    let mut first = [0u8; 64];
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = std::io::Read::read(&mut conn, &mut first).unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("CONNECT gate.chip-in.asia:443"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );
    drop(conn);
    let out = child.await.unwrap();
    assert_eq!(out.status.code(), Some(1));

    for set in [None, Some(mock.base_url())] {
        let mut cmd = command(&mock, &["--help"]);
        match &set {
            None => cmd.env_remove("CHIP_BASE_URL"),
            Some(url) => cmd.env("CHIP_BASE_URL", url),
        };
        let out = run(cmd).await;
        let help = out.ok();
        assert!(!help.contains("CHIP_BASE_URL="), "{help}");
        assert!(!help.contains(mock.api_key()));
        if let Some(url) = &set {
            assert!(!help.contains(url.as_str()), "{help}");
        }
    }
}

/// A server that puts terminal escape sequences in every text field.
async fn hostile_server() -> String {
    const ESC: &str = "\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}31m\u{202e}";
    let webhook = serde_json::json!({
        "type": "webhook",
        "id": "0b4a1b0e-7c1d-4a5e-9f3e-2d6c8f1a9b7c",
        "created_on": 0,
        "updated_on": 1_795_784_638,
        "title": format!("Shop{ESC}"),
        "all_events": false,
        "events": ["purchase.paid"],
        "callback": format!("https://x.example.com/{ESC}"),
        "public_key": format!("-----BEGIN PUBLIC KEY-----{ESC}\nAAAA\n-----END PUBLIC KEY-----\n"),
    });
    let one = webhook.clone();
    let app = axum::Router::new()
        .route(
            "/api/v1/webhooks/",
            get(move || {
                let w = webhook.clone();
                async move { Json(serde_json::json!({"results": [w], "next": null, "previous": null})) }
            }),
        )
        .route(
            "/api/v1/webhooks/{id}/",
            get(move || {
                let w = one.clone();
                async move { Json(w) }
            })
            .delete(|| async {
                (
                    StatusCode::BAD_REQUEST,
                    Json(serde_json::json!({"__all__": {"message": format!("no{ESC}"), "code": format!("c{ESC}")}})),
                )
            }),
        )
        .route(
            "/api/v1/public_key/",
            get(|| async { Json(format!("-----BEGIN PUBLIC KEY-----{ESC}\nAAAA\n-----END PUBLIC KEY-----\n")) }),
        );
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(socket, app).await });
    format!("http://{addr}/api/v1")
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_a_server_sends_reaches_the_terminal_as_control_characters() {
    let mock = mock().await;
    let base = hostile_server().await;
    let id = "0b4a1b0e-7c1d-4a5e-9f3e-2d6c8f1a9b7c";
    for args in [
        &["webhooks", "list"][..],
        &["webhooks", "get", id],
        &["webhooks", "get", id, "--public-key"],
        &["webhooks", "delete", id],
        &["public-key"],
    ] {
        let mut cmd = command(&mock, args);
        cmd.env("CHIP_BASE_URL", &base)
            .env("CHIP_API_KEY", "k")
            .env("NO_COLOR", "1");
        let out = run(cmd).await;
        for text in [&out.stdout, &out.stderr] {
            assert!(
                !text
                    .chars()
                    .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}'),
                "{args:?}: {text:?}"
            );
        }
        assert!(!out.stdout.is_empty() || !out.stderr.is_empty(), "{args:?}");
    }
    let out = run({
        let mut cmd = command(&mock, &["webhooks", "get", id]);
        cmd.env("CHIP_BASE_URL", &base).env("CHIP_API_KEY", "k");
        cmd
    })
    .await;
    assert!(
        out.ok().contains("updated_on: 2026-11-27T13:03:58Z"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("created_on: 1970-01-01T00:00:00Z"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_webhook_is_named_in_the_error() {
    let mock = mock().await;
    let id = uuid::Uuid::new_v4().to_string();
    for args in [
        &["webhooks", "get", &id][..],
        &["webhooks", "delete", &id],
        &["webhooks", "patch", &id, "--title", "x"],
    ] {
        let out = chip(&mock, args).await;
        assert_eq!(out.code, Some(1), "{args:?}");
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        // The library's 404 names the id (once).
        assert!(
            out.stderr
                .contains(&format!("no webhook {id} on this account")),
            "{}",
            out.stderr
        );
        assert_eq!(out.stderr.matches(&id).count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains("404"), "{}", out.stderr);
    }
}
