//! End to end against the local CHIP Gate mock (`chip-gate-mock`): every operation through the
//! wrapper, `list_all` across several pages, a wrong key.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::num::NonZeroU64;

use chip_gate::{Client, Error, EventName, NewWebhook, WebhookChanges};
use common::mock::{client, mock};
use futures::TryStreamExt;

#[tokio::test]
async fn every_operation() {
    let mock = mock(20).await;
    let client = client(&mock);
    let webhooks = client.webhooks();

    // Create, with events.
    let new = NewWebhook::builder("Orders", "https://shop.example.com/chip")
        .events([EventName::PurchasePaid, EventName::PaymentRefunded])
        .unwrap();
    let created = webhooks.create(&new).await.unwrap();
    assert_eq!(created.title, "Orders");
    assert_eq!(created.callback, "https://shop.example.com/chip");
    assert_eq!(
        created.event_names(),
        [EventName::PurchasePaid, EventName::PaymentRefunded]
    );
    assert!(!created.all_events);
    assert!(created.public_key.starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_eq!(mock.webhook_count(), 1);

    // Create, all events.
    let audit = webhooks
        .create(
            &NewWebhook::builder("Audit", "https://audit.example.com/chip")
                .all_events()
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(audit.all_events);

    // Retrieve.
    let fetched = webhooks.retrieve(created.id).await.unwrap();
    assert_eq!(fetched.id, created.id);
    assert_eq!(fetched.title, "Orders");

    // List one page.
    let page = webhooks.list().await.unwrap();
    let ids: HashSet<_> = page.results.iter().map(|w| w.id).collect();
    assert_eq!(ids, HashSet::from([created.id, audit.id]));
    assert_eq!(page.next, None);
    assert_eq!(webhooks.next_page(&page).unwrap(), None);

    // Replace (PUT).
    let replacement = NewWebhook::builder("Orders v2", "https://shop.example.com/chip/v2")
        .events([EventName::PurchaseCancelled])
        .unwrap();
    let replaced = webhooks.update(created.id, &replacement).await.unwrap();
    assert_eq!(replaced.title, "Orders v2");
    assert_eq!(replaced.callback, "https://shop.example.com/chip/v2");
    assert_eq!(replaced.event_names(), [EventName::PurchaseCancelled]);

    // Partial update (PATCH): only the title changes.
    let patched = webhooks
        .partial_update(created.id, &WebhookChanges::new().title("Orders v3"))
        .await
        .unwrap();
    assert_eq!(patched.title, "Orders v3");
    assert_eq!(patched.callback, "https://shop.example.com/chip/v2");
    assert_eq!(patched.event_names(), [EventName::PurchaseCancelled]);

    // Company public key, JSON-decoded to PEM with real newlines.
    let pem = client.public_key().await.unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    assert!(pem.trim_end().ends_with("-----END PUBLIC KEY-----"));
    assert!(!pem.contains("\\n"));
    assert_eq!(pem, mock.company_public_key());

    // Delete; then it is gone.
    webhooks.delete(created.id).await.unwrap();
    assert_eq!(mock.webhook_count(), 1);
    let err = webhooks.retrieve(created.id).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
    let err = webhooks.delete(created.id).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404));
}

#[tokio::test]
async fn list_all_walks_several_pages() {
    let mock = mock(3).await;
    let client = client(&mock);
    let mut made = HashSet::new();
    for i in 0..10 {
        let new = NewWebhook::builder(format!("hook {i}"), format!("https://h{i}.example.com/"))
            .events([EventName::PurchasePaid])
            .unwrap();
        made.insert(client.webhooks().create(&new).await.unwrap().id);
    }
    let all: Vec<_> = client.webhooks().list_all().try_collect().await.unwrap();
    assert_eq!(all.len(), 10);
    let listed: HashSet<_> = all.iter().map(|w| w.id).collect();
    assert_eq!(listed, made);

    // The same pages by hand.
    let webhooks = client.webhooks();
    let first = webhooks.list().await.unwrap();
    assert_eq!(first.results.len(), 3);
    let next = webhooks.next_page(&first).unwrap();
    assert_eq!(next.as_ref().and_then(|l| l.page()), NonZeroU64::new(2));
    let second = webhooks.list_next(&next.unwrap()).await.unwrap();
    assert_eq!(second.results.len(), 3);
    let last = webhooks
        .list_page(NonZeroU64::new(4).unwrap())
        .await
        .unwrap();
    assert_eq!(last.results.len(), 1);
    assert_eq!(webhooks.next_page(&last).unwrap(), None);
}

#[tokio::test]
async fn the_mock_rejects_a_wrong_key_with_401() {
    let mock = mock(20).await;
    let client = Client::builder("sk_test_not_the_mock_key")
        .base_url(mock.base_url())
        .build()
        .unwrap();
    let err = client.webhooks().list().await.unwrap_err();
    assert!(matches!(err, Error::Api { .. }), "{err:?}");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
    assert!(!err.is_retryable());
    let err = client.public_key().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401));
}

#[tokio::test]
async fn the_mock_validation_errors_arrive_typed() {
    let mock = mock(20).await;
    let client = client(&mock);
    // The wrapper lets an event name it does not know through (CHIP may know it); the mock, like
    // CHIP, refuses it with a field error.
    let new = NewWebhook::builder("Future", "https://shop.example.com/chip")
        .events([EventName::from("purchase.teleported")])
        .unwrap();
    let err = client.webhooks().create(&new).await.unwrap_err();
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
    assert!(code.is_some(), "{err:?}");
    assert!(
        message.as_deref().unwrap().starts_with("events: "),
        "{err:?}"
    );
    assert!(body.contains("purchase.teleported"), "{body}");
    assert_eq!(mock.webhook_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_streams_run_on_spawned_tasks() {
    let mock = mock(2).await;
    let client = client(&mock);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let new = NewWebhook::builder(format!("task {i}"), "https://tasks.example.com/")
                .all_events()
                .unwrap();
            let made = client.webhooks().create(&new).await?;
            client.webhooks().retrieve(made.id).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stream = client.webhooks().list_all();
    let all: Vec<_> = tokio::spawn(stream.try_collect::<Vec<_>>())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all.len(), 6);
    assert_eq!(mock.webhook_count(), 6);
}
