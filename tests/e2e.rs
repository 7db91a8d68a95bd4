//! End to end: the chip-gate client manages webhooks on the local CHIP Gate, the mock signs and
//! delivers events, and a receiver built with chip-gate verifies and types them.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chip_gate::{Client, EventName, NewWebhook, ObjectKind, RetryPolicy, Verifier};
use chip_gate_e2e::Receiver;
use chip_gate_mock::{DeliveryConfig, Faults, MockConfig, MockServer};
use futures::TryStreamExt;

const WAIT: Duration = Duration::from_secs(20);

async fn start(config: MockConfig) -> (MockServer, Client) {
    let mock = MockServer::start(config).await.unwrap();
    let client = Client::builder(mock.api_key())
        .base_url(mock.base_url())
        .retry_policy(
            RetryPolicy::default()
                .max_attempts(8)
                .initial_backoff(Duration::from_millis(5))
                .max_backoff(Duration::from_millis(50)),
        )
        .build()
        .unwrap();
    (mock, client)
}

#[tokio::test]
async fn a_signed_delivery_reaches_the_receiver_verified_and_typed() {
    let (mock, client) = start(MockConfig::default()).await;
    let receiver = Receiver::bind().await.unwrap();
    let new = NewWebhook::builder("orders", receiver.url())
        .events([EventName::PurchasePaid])
        .unwrap();
    let webhook = client.webhooks().create(&new).await.unwrap();
    let mut serving = receiver.serve(Verifier::from_pem(&webhook.public_key).unwrap());

    let report = mock.trigger(EventName::PurchasePaid, None).await.unwrap();
    assert_eq!(report.deliveries.len(), 1);
    assert!(report.deliveries[0].accepted);

    let delivery = serving.next(WAIT).await.expect("a verified delivery");
    assert_eq!(delivery.event(), &EventName::PurchasePaid);
    assert_eq!(delivery.kind(), ObjectKind::Purchase);
    let purchase = delivery.purchase().unwrap();
    let object_id = report.object_id.to_string();
    assert_eq!(purchase.id.as_deref(), Some(object_id.as_str()));
    assert_eq!(purchase.status.as_deref(), Some("paid"));
    let key = delivery.dedup_key().unwrap();
    assert_eq!(key.object_id, object_id);
    assert_eq!(key.event, EventName::PurchasePaid);
    // The bytes the receiver verified are exactly the ones the mock signed and sent.
    let log = mock.deliveries();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].body.as_bytes(), delivery.raw_body());

    // Events it did not subscribe to never arrive.
    let other = mock.trigger(EventName::PayoutFailed, None).await.unwrap();
    assert!(other.deliveries.is_empty());
    assert!(serving.next(Duration::from_millis(300)).await.is_none());

    client.webhooks().delete(webhook.id).await.unwrap();
    let after = mock.trigger(EventName::PurchasePaid, None).await.unwrap();
    assert!(
        after.deliveries.is_empty(),
        "a deleted webhook gets nothing"
    );
}

/// Two webhooks post to one endpoint: a verifier holding both keys accepts what either signed.
#[tokio::test]
async fn one_endpoint_verifies_deliveries_of_two_webhooks() {
    let (mock, client) = start(MockConfig::default()).await;
    let receiver = Receiver::bind().await.unwrap();
    let paid = NewWebhook::builder("paid", receiver.url())
        .events([EventName::PurchasePaid])
        .unwrap();
    let everything = NewWebhook::builder("everything", receiver.url())
        .all_events()
        .unwrap();
    let a = client.webhooks().create(&paid).await.unwrap();
    let b = client.webhooks().create(&everything).await.unwrap();
    assert_ne!(a.public_key, b.public_key, "each webhook has its own key");
    let verifier = Verifier::with_keys([
        chip_gate::VerificationKey::from_pem(&a.public_key).unwrap(),
        chip_gate::VerificationKey::from_pem(&b.public_key).unwrap(),
    ])
    .unwrap();
    let mut serving = receiver.serve(verifier);

    let report = mock.trigger(EventName::PurchasePaid, None).await.unwrap();
    assert_eq!(report.deliveries.len(), 2);
    for _ in 0..2 {
        let delivery = serving.next(WAIT).await.expect("both deliveries verify");
        assert_eq!(delivery.event(), &EventName::PurchasePaid);
    }

    mock.trigger(EventName::PaymentRefunded, None)
        .await
        .unwrap();
    let refund = serving
        .next(WAIT)
        .await
        .expect("the all-events webhook's delivery");
    assert_eq!(refund.event(), &EventName::PaymentRefunded);
    assert_eq!(refund.kind(), ObjectKind::Payment);
    assert!(serving.next(Duration::from_millis(300)).await.is_none());
}

/// A receiver holding the wrong key refuses every attempt (401); the mock retries, then gives up,
/// and nothing unverified ever reaches the handler.
#[tokio::test]
async fn a_receiver_with_the_wrong_key_rejects_every_attempt() {
    let config = MockConfig {
        delivery: DeliveryConfig {
            max_attempts: 3,
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(20),
            ..DeliveryConfig::default()
        },
        ..MockConfig::default()
    };
    let (mock, client) = start(config).await;
    let receiver = Receiver::bind().await.unwrap();
    let target = NewWebhook::builder("target", receiver.url())
        .events([EventName::PurchasePaid])
        .unwrap();
    let decoy = NewWebhook::builder("decoy", "https://decoy.example.com/")
        .events([EventName::PurchaseCreated])
        .unwrap();
    client.webhooks().create(&target).await.unwrap();
    let decoy = client.webhooks().create(&decoy).await.unwrap();
    let mut serving = receiver.serve(Verifier::from_pem(&decoy.public_key).unwrap());

    mock.trigger(EventName::PurchasePaid, None).await.unwrap();
    let log = mock
        .wait_for_deliveries(WAIT, |log| log.iter().any(|r| r.last_attempt))
        .await
        .unwrap();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log.iter().all(|r| r.status == Some(401) && !r.accepted));
    assert!(serving.next(Duration::from_millis(100)).await.is_none());
}

/// Events about one object arrive in the order they happened.
#[tokio::test]
async fn events_for_one_object_arrive_in_order() {
    let (mock, client) = start(MockConfig::default()).await;
    let receiver = Receiver::bind().await.unwrap();
    let hook = client
        .webhooks()
        .create(
            &NewWebhook::builder("all", receiver.url())
                .all_events()
                .unwrap(),
        )
        .await
        .unwrap();
    let mut serving = receiver.serve(Verifier::from_pem(&hook.public_key).unwrap());
    let object = uuid::Uuid::new_v4();
    let sequence = [
        EventName::PurchaseCreated,
        EventName::PurchaseViewed,
        EventName::PurchasePaid,
    ];
    for event in &sequence {
        mock.trigger(event.clone(), Some(object)).await.unwrap();
    }
    for expected in &sequence {
        let delivery = serving.next(WAIT).await.unwrap();
        assert_eq!(delivery.event(), expected);
        assert_eq!(delivery.dedup_key().unwrap().object_id, object.to_string());
    }
}

/// The client keeps working against a server that fails a third of its requests at random.
#[tokio::test]
async fn the_client_rides_out_a_misbehaving_server() {
    let (mock, client) = start(MockConfig {
        page_size: 3,
        ..MockConfig::default()
    })
    .await;
    for i in 0..7 {
        let new = NewWebhook::builder(format!("hook {i}"), "https://shop.example.com/chip")
            .all_events()
            .unwrap();
        client.webhooks().create(&new).await.unwrap();
    }
    mock.set_faults(Faults {
        error_rate: 0.15,
        too_many_rate: 0.1,
        retry_after_secs: 0,
        drop_rate: 0.1,
        seed: Some(7),
        ..Faults::default()
    });
    for _ in 0..5 {
        let all: Vec<_> = client.webhooks().list_all().try_collect().await.unwrap();
        assert_eq!(all.len(), 7);
        for webhook in all.iter().take(3) {
            let again = client.webhooks().retrieve(webhook.id).await.unwrap();
            assert_eq!(again.title, webhook.title);
        }
    }
    mock.set_faults(Faults::none());
    assert_eq!(mock.webhook_count(), 7);
}
