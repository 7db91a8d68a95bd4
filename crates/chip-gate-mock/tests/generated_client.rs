//! The generated `chip-gate-api` client drives every operation against the mock.
#![allow(clippy::unwrap_used)]

mod common;

use chip_gate_api::types::{self, EventName};
use chip_gate_api::{Client, Error};
use chip_gate_mock::{MockConfig, MockServer};

fn api(mock: &MockServer) -> Client {
    Client::from_http(&mock.base_url(), common::client(mock))
}

#[tokio::test]
async fn the_generated_client_drives_every_operation() {
    let mock = MockServer::start(MockConfig {
        page_size: 2,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let api = api(&mock);

    let created = api
        .webhooks_create()
        .body(
            types::WebhookCreate::builder()
                .title("orders")
                .callback("https://example.test/hook")
                .events(vec![EventName::PurchasePaid, EventName::PaymentRefunded]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created = created.into_inner();
    assert_eq!(created.type_.as_deref(), Some("webhook"));
    assert_eq!(
        created.event_names(),
        [EventName::PurchasePaid, EventName::PaymentRefunded]
    );

    let got = api
        .webhooks_retrieve()
        .id(created.id)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.public_key, created.public_key);

    let replaced = api
        .webhooks_update()
        .id(created.id)
        .body(
            types::WebhookCreate::builder()
                .title("everything")
                .callback("https://example.test/all")
                .events(vec![EventName::PurchasePaid])
                .all_events(true),
        )
        .send()
        .await
        .unwrap()
        .into_inner();
    assert!(replaced.all_events);
    assert!(replaced.receives(&EventName::PayoutFailed));
    assert!(replaced.updated_on > created.updated_on);

    let patched = api
        .webhooks_partial_update()
        .id(created.id)
        .body(types::WebhookPatch::builder().title(Some("renamed".try_into().unwrap())))
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(patched.title, "renamed");
    assert_eq!(patched.callback, "https://example.test/all");

    for i in 0..3 {
        api.webhooks_create()
            .body(
                types::WebhookCreate::builder()
                    .title(format!("extra {i}").as_str())
                    .callback("https://example.test/x")
                    .events(vec![EventName::PayoutSuccess])
                    .all_events(true),
            )
            .send()
            .await
            .unwrap();
    }
    let first = api.webhooks_list().send().await.unwrap().into_inner();
    assert_eq!(first.results.len(), 2);
    assert!(first.previous.is_none());
    // CHIP's absolute link form.
    assert_eq!(
        first.next.as_deref(),
        Some(format!("{}/webhooks/?page=2", mock.base_url()).as_str())
    );
    let last = api
        .webhooks_list()
        .page(2u64)
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(last.results.len(), 2);
    assert!(last.next.is_none());
    assert!(last.previous.is_some());

    let pem = api.public_key().send().await.unwrap().into_inner();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));

    let deleted = api.webhooks_delete().id(created.id).send().await.unwrap();
    assert_eq!(deleted.status(), 204);

    // Errors arrive as unexpected responses with the raw answer: the generator is given no error
    // bodies, so the status survives whatever the body is.
    // CHIP's 404 has no content: the raw answer is a 404 with an empty body.
    match api.webhooks_retrieve().id(created.id).send().await {
        Err(Error::UnexpectedResponse(resp)) => {
            assert_eq!(resp.status(), 404);
            assert!(resp.bytes().await.unwrap().is_empty());
        }
        other => panic!("expected a 404 error response, got {other:?}"),
    }
    match api.webhooks_list().page(99u64).send().await {
        Err(Error::UnexpectedResponse(resp)) => {
            assert_eq!(resp.status(), 404);
            assert!(resp.bytes().await.unwrap().is_empty());
        }
        other => panic!("expected a 404 error response, got {other:?}"),
    }
    // A body the client's own types allow but CHIP refuses: 400 keyed by field.
    match api
        .webhooks_create()
        .body(
            types::WebhookCreate::builder()
                .title("no events")
                .callback("https://example.test/x")
                .events(vec![]),
        )
        .send()
        .await
    {
        Err(Error::UnexpectedResponse(resp)) => {
            assert_eq!(resp.status(), 400);
            let body: serde_json::Value = resp.json().await.unwrap();
            assert!(body.get("events").is_some(), "{body}");
        }
        other => panic!("expected a 400 error response, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_key_is_a_typed_401() {
    let mock = common::start().await;
    let api = Client::from_http(&mock.base_url(), common::client_with_key("test_wrong"));
    match api.webhooks_list().send().await {
        Err(Error::UnexpectedResponse(resp)) => {
            assert_eq!(resp.status(), 401);
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["__all__"][0]["code"], "authentication_failed");
        }
        other => panic!("expected a 401 error response, got {other:?}"),
    }
    match api.public_key().send().await {
        Err(Error::UnexpectedResponse(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("expected a 401 error response, got {other:?}"),
    }
}
