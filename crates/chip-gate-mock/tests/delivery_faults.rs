//! Delivery faults: duplicated and reordered deliveries, as an at-least-once sender makes them,
//! seen by a real receiver on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chip_gate_api::types::EventName;
use chip_gate_mock::{DeliveryFaults, Limits, MockConfig, MockServer};
use common::{Receiver, client, create_webhook, fast_config, unix_now, verify, webhook_body};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn config(faults: DeliveryFaults) -> MockConfig {
    MockConfig {
        delivery_faults: faults,
        ..fast_config()
    }
}

fn updated_on(body: &[u8]) -> i64 {
    serde_json::from_slice::<Value>(body).unwrap()["updated_on"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn a_lost_acknowledgement_makes_the_receiver_see_the_same_delivery_again() {
    let mock = MockServer::start(config(DeliveryFaults {
        duplicate_rate: 1.0,
        ..DeliveryFaults::none()
    }))
    .await
    .unwrap();
    let mut receiver = Receiver::start(&[]).await;
    let hook = create_webhook(&mock, webhook_body(&receiver.url(), &["purchase.paid"])).await;
    mock.trigger(EventName::PurchasePaid, None).await.unwrap();
    mock.wait_idle(WAIT).await.unwrap();

    // Every 2xx but the last attempt's is treated as lost: three identical, signed copies.
    let got = receiver.wait_for(3).await;
    assert_eq!(got.len(), 3);
    for copy in &got {
        assert_eq!(copy.answered, 200);
        assert_eq!(copy.body, got[0].body);
        assert_eq!(copy.signature, got[0].signature);
        assert!(verify(
            hook["public_key"].as_str().unwrap(),
            &copy.body,
            copy.signature.as_deref().unwrap()
        ));
    }
    let log = mock.deliveries();
    assert_eq!(
        log.iter()
            .map(|r| (r.attempt, r.status, r.accepted, r.last_attempt))
            .collect::<Vec<_>>(),
        [
            (1, Some(200), false, false),
            (2, Some(200), false, false),
            (3, Some(200), true, true)
        ]
    );
    assert!(
        log[0]
            .error
            .as_deref()
            .unwrap()
            .contains("injected duplicate")
    );
    assert_eq!(log[2].error, None);
}

#[tokio::test]
async fn a_held_back_event_arrives_after_the_objects_later_state() {
    let mock = MockServer::start(config(DeliveryFaults {
        reorder_rate: 1.0,
        hold_back: Duration::from_millis(1000),
        ..DeliveryFaults::none()
    }))
    .await
    .unwrap();
    let mut receiver = Receiver::start(&[]).await;
    create_webhook(
        &mock,
        webhook_body(&receiver.url(), &["purchase.created", "purchase.paid"]),
    )
    .await;
    let object = uuid::Uuid::new_v4();
    let created = mock
        .trigger(EventName::PurchaseCreated, Some(object))
        .await
        .unwrap();
    // Held back: nothing is known of its first attempt yet.
    assert!(created.deliveries[0].queued);
    assert_eq!(created.deliveries[0].status, None);
    mock.set_delivery_faults(DeliveryFaults::none()).unwrap();
    let paid = mock
        .trigger(EventName::PurchasePaid, Some(object))
        .await
        .unwrap();
    assert!(paid.deliveries[0].accepted);
    // The held-back event is still pending: waiting for idle waits for it.
    mock.wait_idle(WAIT).await.unwrap();

    let got = receiver.wait_for(2).await;
    let events: Vec<Value> = got
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["event_type"].clone())
        .collect();
    assert_eq!(events, [json!("purchase.paid"), json!("purchase.created")]);
    // The object's states keep their order in `updated_on`, whatever the arrival order.
    assert!(updated_on(&got[1].body) < updated_on(&got[0].body));
}

#[tokio::test]
async fn an_objects_states_get_rising_updated_on_even_within_one_second() {
    let mock = MockServer::start(config(DeliveryFaults::none()))
        .await
        .unwrap();
    let object = uuid::Uuid::new_v4();
    let mut stamps = Vec::new();
    for event in [
        EventName::PurchaseCreated,
        EventName::PurchasePendingExecute,
        EventName::PurchasePaid,
        EventName::PurchaseSettled,
    ] {
        let report = mock.trigger(event, Some(object)).await.unwrap();
        stamps.push(report.object["updated_on"].as_i64().unwrap());
    }
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    // Another object's state is stamped with the clock again.
    let before = unix_now();
    let other = mock
        .trigger(EventName::PurchaseCreated, None)
        .await
        .unwrap();
    let stamped = other.object["updated_on"].as_i64().unwrap();
    assert!((before..=unix_now()).contains(&stamped), "{stamped}");
}

#[tokio::test]
async fn delivery_faults_over_http_and_their_validation() {
    let mock = MockServer::start(config(DeliveryFaults::none()))
        .await
        .unwrap();
    let http = client(&mock);
    let url = format!("{}/__mock/delivery_faults", mock.root_url());
    let set = http
        .post(&url)
        .json(&json!({"duplicate_rate": 0.5, "reorder_rate": 0.25, "hold_back_ms": 40, "seed": 9}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let now: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        now,
        json!({"duplicate_rate": 0.5, "reorder_rate": 0.25, "hold_back_ms": 40, "seed": 9})
    );
    assert_eq!(mock.delivery_faults().hold_back, Duration::from_millis(40));

    for bad in [
        json!({"duplicate_rate": 2.0}),
        json!({"reorder_rate": -1.0}),
        json!({"hold_back_ms": "soon"}),
    ] {
        let resp = http.post(&url).json(&bad).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["__all__"][0]["code"], "invalid");
    }
    // Refused settings change nothing; without the key the route is closed.
    assert_eq!(mock.delivery_faults().duplicate_rate, 0.5);
    let anonymous = reqwest::Client::builder().no_proxy().build().unwrap();
    assert_eq!(
        anonymous.get(&url).send().await.unwrap().status(),
        reqwest::StatusCode::UNAUTHORIZED
    );
    assert!(
        mock.set_delivery_faults(DeliveryFaults {
            duplicate_rate: 1.1,
            ..DeliveryFaults::none()
        })
        .is_err()
    );
    let refused = MockServer::start(config(DeliveryFaults {
        reorder_rate: 3.0,
        ..DeliveryFaults::none()
    }))
    .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn the_delivery_log_keeps_the_configured_number_of_attempts() {
    let mock = MockServer::start(MockConfig {
        limits: Limits {
            delivery_log: 2,
            ..Limits::default()
        },
        ..config(DeliveryFaults::none())
    })
    .await
    .unwrap();
    let mut receiver = Receiver::start(&[]).await;
    create_webhook(&mock, webhook_body(&receiver.url(), &["purchase.paid"])).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            mock.trigger(EventName::PurchasePaid, None)
                .await
                .unwrap()
                .object_id,
        );
    }
    receiver.wait_for(3).await;
    let log = mock.deliveries();
    assert_eq!(
        log.iter().map(|r| r.object_id).collect::<Vec<_>>(),
        ids[1..]
    );
}
