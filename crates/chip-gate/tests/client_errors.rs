//! Every CHIP error shape becomes one typed `Error::Api` with CHIP's code, message and the raw body;
//! undecodable answers become `Error::Decode`; an unknown event name in an answer is kept.
#![allow(clippy::unwrap_used)]

mod common;

use chip_gate::{Error, EventName, NewWebhook, RetryPolicy};
use common::script::{ScriptServer, Step, client, client_with, json, raw, webhook_json};
use common::{ID, id};
use serde_json::json;

/// Create a webhook against a server that always answers `step`, and return the error.
async fn create_error(step: Step) -> (Error, usize) {
    let server = ScriptServer::start(move |_, _| step.clone()).await;
    let hook = NewWebhook::builder("Orders", "https://shop.example.com/chip")
        .events([EventName::PurchasePaid])
        .unwrap();
    let err = client(&server.base_url)
        .webhooks()
        .create(&hook)
        .await
        .unwrap_err();
    (err, server.count())
}

#[tokio::test]
async fn field_list_shape() {
    let body = json!({"title": [{"message": "Ensure this field has no more than 100 characters.", "code": "max_length"}]});
    let (err, _) = create_error(json(400, body)).await;
    let Error::Api {
        status,
        code,
        message,
        body,
        ..
    } = &err
    else {
        panic!("expected Api, got {err:?}");
    };
    assert_eq!(status.as_u16(), 400);
    assert_eq!(code.as_deref(), Some("max_length"));
    assert_eq!(
        message.as_deref(),
        Some("title: Ensure this field has no more than 100 characters.")
    );
    assert!(body.contains("max_length"), "{body}");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(400));
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("max_length"), "{err}");
}

#[tokio::test]
async fn all_shape() {
    let body = json!({"__all__": {"message": "Either events or all_events is required.", "code": "invalid"}});
    let (err, _) = create_error(json(400, body)).await;
    assert_eq!(err.code(), Some("invalid"));
    assert_eq!(
        err.message(),
        Some("Either events or all_events is required.")
    );
}

#[tokio::test]
async fn flat_code_message_shape() {
    let body = json!({"code": "invalid_callback", "message": "Callback must be reachable."});
    let (err, _) = create_error(json(400, body)).await;
    assert_eq!(err.code(), Some("invalid_callback"));
    assert_eq!(err.message(), Some("Callback must be reachable."));
    assert_eq!(
        err.to_string(),
        "CHIP answered 400 Bad Request: Callback must be reachable. (invalid_callback)"
    );
}

#[tokio::test]
async fn detail_shape_on_an_undeclared_status() {
    // 403 is not declared for create: the body is read by the wrapper, exactly as sent.
    let sent = r#"{"detail": "You do not have permission to perform this action."}"#;
    let (err, count) = create_error(raw(403, "application/json", sent)).await;
    let Error::Api {
        status,
        code,
        message,
        body,
        ..
    } = &err
    else {
        panic!("expected Api, got {err:?}");
    };
    assert_eq!(status.as_u16(), 403);
    assert_eq!(code, &None);
    assert_eq!(
        message.as_deref(),
        Some("You do not have permission to perform this action.")
    );
    assert_eq!(body, sent);
    assert_eq!(count, 1);
}

#[tokio::test]
async fn plain_string_list_shape() {
    let (err, _) = create_error(json(
        400,
        json!({"events": ["This list may not be empty."]}),
    ))
    .await;
    assert_eq!(err.code(), None);
    assert_eq!(err.message(), Some("events: This list may not be empty."));
}

#[tokio::test]
async fn html_error_page_keeps_the_raw_body() {
    let page = "<html><body>Bad gateway</body></html>";
    let server = ScriptServer::start(move |_, _| raw(502, "text/html", page)).await;
    let err = client_with(&server.base_url, RetryPolicy::none())
        .webhooks()
        .retrieve(id())
        .await
        .unwrap_err();
    let Error::Api {
        status,
        code,
        message,
        body,
        ..
    } = &err
    else {
        panic!("expected Api, got {err:?}");
    };
    assert_eq!(status.as_u16(), 502);
    assert_eq!((code, message), (&None, &None));
    assert_eq!(body, page);
    assert!(err.is_retryable());
}

#[tokio::test]
async fn bad_key_gives_401() {
    let server = ScriptServer::start(|_, seen| {
        if seen.header("authorization") == Some("Bearer the-right-key") {
            json(200, webhook_json(ID, "t", &[]))
        } else {
            json(401, json!({"detail": "Invalid token."}))
        }
    })
    .await;
    let bad = chip_gate::Client::builder("a-wrong-key")
        .base_url(&server.base_url)
        .build()
        .unwrap();
    let err = bad.webhooks().retrieve(id()).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
    assert_eq!(err.message(), Some("Invalid token."));
    assert!(!err.is_retryable());
    assert_eq!(server.count(), 1, "a 401 is not retried");

    let good = chip_gate::Client::builder("the-right-key")
        .base_url(&server.base_url)
        .build()
        .unwrap();
    assert_eq!(good.webhooks().retrieve(id()).await.unwrap().id, id());
}

#[tokio::test]
async fn not_found_is_a_404_api_error() {
    let server = ScriptServer::start(|_, _| json(404, json!({"detail": "Not found."}))).await;
    let err = client(&server.base_url)
        .webhooks()
        .delete(id())
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    assert_eq!(err.message(), Some("Not found."));
    let seen = server.seen();
    let deletes = seen.iter().filter(|s| s.method == "DELETE").count();
    assert_eq!(deletes, 1, "a 404 is not retried");
    // One look at the list (not retried either) tells a missing webhook from a wrong base URL:
    // this server answers 404 to everything, so the base URL is named.
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].method, "GET");
    assert!(seen[1].target.ends_with("/webhooks/"), "{seen:?}");
    assert!(err.to_string().contains("nothing answers at"), "{err}");
}

#[tokio::test]
async fn garbage_success_body_is_a_decode_error() {
    let server =
        ScriptServer::start(|_, _| raw(200, "application/json", "{\"id\": 42, oops")).await;
    let err = client(&server.base_url)
        .webhooks()
        .retrieve(id())
        .await
        .unwrap_err();
    let Error::Decode { excerpt, .. } = &err else {
        panic!("expected Decode, got {err:?}");
    };
    assert_eq!(excerpt, "{\"id\": 42, oops");
    assert!(!err.is_retryable());
    assert_eq!(server.count(), 1);
}

#[tokio::test]
async fn long_garbage_is_cut_to_an_excerpt() {
    let long = "x".repeat(10_000);
    let server = ScriptServer::start(move |_, _| raw(200, "application/json", &long)).await;
    let err = client(&server.base_url).public_key().await.unwrap_err();
    let Error::Decode { excerpt, .. } = &err else {
        panic!("expected Decode, got {err:?}");
    };
    assert_eq!(excerpt.chars().count(), 200);
}

#[tokio::test]
async fn an_undeclared_success_status_is_still_read() {
    // CHIP documents 201 for create; a 200 carrying the webhook is accepted too.
    let server =
        ScriptServer::start(|_, _| json(200, webhook_json(ID, "Orders", &["purchase.paid"]))).await;
    let hook = NewWebhook::builder("Orders", "https://shop.example.com/chip")
        .events([EventName::PurchasePaid])
        .unwrap();
    let created = client(&server.base_url)
        .webhooks()
        .create(&hook)
        .await
        .unwrap();
    assert_eq!(created.title, "Orders");
}

#[tokio::test]
async fn unknown_event_names_are_kept() {
    let server = ScriptServer::start(|_, _| {
        json(
            200,
            webhook_json(ID, "Future", &["purchase.paid", "purchase.teleported"]),
        )
    })
    .await;
    let webhook = client(&server.base_url)
        .webhooks()
        .retrieve(id())
        .await
        .unwrap();
    assert_eq!(
        webhook.event_names(),
        [
            EventName::PurchasePaid,
            EventName::Unknown("purchase.teleported".into())
        ]
    );
    assert_eq!(webhook.event_names()[1].as_str(), "purchase.teleported");
    assert!(!webhook.event_names()[1].is_known());
    assert!(EventName::ALL.len() >= 29);
}

#[tokio::test]
async fn invalid_webhooks_are_refused_before_sending() {
    let server = ScriptServer::start(|_, _| json(500, json!({}))).await;
    let client = client(&server.base_url);
    let err = NewWebhook::builder("x".repeat(101), "https://a.example/")
        .all_events()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
    let changes = chip_gate::WebhookChanges::new().callback("mailto:ops@example.com");
    let err = client
        .webhooks()
        .partial_update(id(), &changes)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("callback"), "{err}");
    assert_eq!(server.count(), 0);
}
