//! End to end against the mock in its variations mode (`chip_gate_mock::Variant::Variations`):
//! the answers CHIP's document allows beyond its tidy reading (relative page links, no
//! `previous`, no `next` on the last page, webhooks without `type`/`created_on`/`updated_on`,
//! `events` null for an all-events webhook, a bodiless 401, a bodiless 404), through the wrapper.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use chip_gate::{Error, EventName, NewWebhook, RetryPolicy};
use common::mock::{client, client_with, variations};
use futures::TryStreamExt;

#[tokio::test]
async fn every_operation_against_chips_variations() {
    let mock = variations(3).await;
    let client = client(&mock);
    let webhooks = client.webhooks();

    // Create with events: the answer has no type, created_on, updated_on or all_events.
    let orders = webhooks
        .create(
            &NewWebhook::builder("Orders", "https://shop.example.com/chip")
                .events([EventName::PurchasePaid, EventName::PaymentRefunded])
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        orders.event_names(),
        [EventName::PurchasePaid, EventName::PaymentRefunded]
    );
    assert!(!orders.all_events);
    assert_eq!(orders.type_, None);
    assert_eq!(orders.created_on, None);
    assert!(orders.public_key.starts_with("-----BEGIN PUBLIC KEY-----"));

    // Create for all events: the answer's `events` is null.
    let audit = webhooks
        .create(
            &NewWebhook::builder("Audit", "https://audit.example.com/chip")
                .all_events()
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(audit.all_events);
    assert!(audit.event_names().is_empty());
    assert!(audit.receives(&EventName::PayoutFailed));

    // Retrieve.
    let fetched = webhooks.retrieve(audit.id).await.unwrap();
    assert_eq!(fetched.id, audit.id);
    assert!(fetched.all_events);
    assert_eq!(fetched.public_key, audit.public_key);

    // list_all across several pages linked relatively, the last page without `next`.
    let mut made = HashSet::from([orders.id, audit.id]);
    for i in 0..6 {
        let new = NewWebhook::builder(format!("hook {i}"), format!("https://h{i}.example.com/"))
            .events([EventName::PurchasePaid])
            .unwrap();
        made.insert(webhooks.create(&new).await.unwrap().id);
    }
    let first = webhooks.list().await.unwrap();
    assert_eq!(first.next.as_deref(), Some("/api/v1/webhooks/?page=2"));
    assert_eq!(first.previous, None);
    let all: Vec<_> = webhooks.list_all().try_collect().await.unwrap();
    assert_eq!(all.len(), 8);
    assert_eq!(all.iter().map(|w| w.id).collect::<HashSet<_>>(), made);

    // An unknown id: a 404 with no body is Error::Api with its status and an empty body.
    let unknown = uuid::Uuid::new_v4();
    let err = webhooks.retrieve(unknown).await.unwrap_err();
    let Error::Api { status, body, .. } = &err else {
        panic!("expected Error::Api, got {err:?}");
    };
    assert_eq!(status.as_u16(), 404);
    assert!(body.is_empty(), "{body:?}");

    // Delete; then it is gone, and deleting again is the same bodiless 404.
    webhooks.delete(orders.id).await.unwrap();
    assert_eq!(mock.webhook_count(), 7);
    let err = webhooks.delete(orders.id).await.unwrap_err();
    assert!(
        matches!(&err, Error::Api { status, body, .. } if status.as_u16() == 404 && body.is_empty()),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_bodiless_401_is_an_api_error_with_its_status() {
    let mock = variations(20).await;
    let client = client_with(
        &mock,
        "sk_test_not_the_mock_key",
        Duration::from_secs(10),
        RetryPolicy::default().initial_backoff(Duration::from_millis(10)),
    );
    let err = client.webhooks().list().await.unwrap_err();
    let Error::Api { status, body, .. } = &err else {
        panic!("expected Error::Api, got {err:?}");
    };
    assert_eq!(status.as_u16(), 401);
    assert!(body.is_empty(), "{body:?}");
    assert!(!err.is_retryable());
    let err = client.public_key().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
}
