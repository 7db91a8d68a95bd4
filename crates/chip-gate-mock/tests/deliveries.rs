//! Signed deliveries to a receiver on 127.0.0.1: signatures, retries, ordering, the log, triggers.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chip_gate_api::types::EventName;
use chip_gate_mock::{DeliveryConfig, MockConfig, MockServer};
use common::{
    Receiver, client, create_webhook, start, unix_now, verify, webhook_body, webhook_url,
};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_delivery_verifies_with_the_webhooks_public_key_from_the_api() {
    let mock = start().await;
    let mut receiver = Receiver::start(&[]).await;
    let created = create_webhook(&mock, webhook_body(&receiver.url(), &["purchase.paid"])).await;
    // Fetch the key through the API, as a user would.
    let fetched: Value = client(&mock)
        .get(webhook_url(&mock, &created))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let public_key = fetched["public_key"].as_str().unwrap();

    let object_id = uuid::Uuid::new_v4();
    let report = mock
        .trigger(EventName::PurchasePaid, Some(object_id))
        .await
        .unwrap();
    assert_eq!(report.deliveries.len(), 1);
    assert_eq!(report.deliveries[0].status, Some(200));
    assert!(report.deliveries[0].accepted);
    assert!(!report.deliveries[0].queued);

    let got = receiver.wait_for(1).await;
    let d = &got[0];
    let sig = d.signature.as_deref().unwrap();
    assert!(
        verify(public_key, &d.body, sig),
        "signature does not verify"
    );
    // Tampering breaks it; so does another webhook's key or the company key.
    let mut tampered = d.body.to_vec();
    let last = tampered.len() - 2;
    tampered[last] ^= 1;
    assert!(!verify(public_key, &tampered, sig));
    assert!(!verify(&mock.company_public_key(), &d.body, sig));
    assert_eq!(d.content_type.as_deref(), Some("application/json"));

    let body: Value = serde_json::from_slice(&d.body).unwrap();
    assert_eq!(body["event_type"], "purchase.paid");
    assert_eq!(body["type"], "purchase");
    assert_eq!(body["status"], "paid");
    assert_eq!(body["id"], json!(object_id));
    assert_eq!(body, report.object);
    let now = unix_now();
    assert!((body["updated_on"].as_i64().unwrap() - now).abs() < 60);
    assert!(body["purchase"]["total"].is_i64(), "a realistic purchase");

    let log = mock.deliveries();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].attempt, 1);
    assert!(log[0].accepted && log[0].last_attempt);
    assert_eq!(log[0].object_id, object_id);
    assert_eq!(log[0].signature, sig);
    assert_eq!(log[0].body.as_bytes(), &d.body[..]);
}

#[tokio::test]
async fn a_receiver_that_fails_twice_then_succeeds_gets_one_accepted_delivery() {
    let mock = MockServer::start(MockConfig {
        delivery: DeliveryConfig {
            max_attempts: 5,
            backoff_base: Duration::from_millis(20),
            backoff_cap: Duration::from_millis(100),
            request_timeout: Duration::from_secs(5),
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let mut receiver = Receiver::start(&[500, 503]).await;
    let w = create_webhook(&mock, webhook_body(&receiver.url(), &["purchase.paid"])).await;
    let report = mock.trigger(EventName::PurchasePaid, None).await.unwrap();
    assert_eq!(report.deliveries[0].status, Some(500));
    assert!(!report.deliveries[0].accepted);

    mock.wait_idle(WAIT).await.unwrap();
    let got = receiver.wait_for(3).await;
    assert_eq!(
        got.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 503, 200]
    );
    // Every attempt carries the same, valid, signature over the same bytes.
    for r in &got {
        assert_eq!(r.body, got[0].body);
        assert!(verify(
            w["public_key"].as_str().unwrap(),
            &r.body,
            r.signature.as_deref().unwrap()
        ));
    }
    let log = mock.deliveries();
    assert_eq!(log.len(), 3);
    assert_eq!(log.iter().filter(|r| r.accepted).count(), 1);
    assert_eq!(
        log.iter()
            .map(|r| (r.attempt, r.status))
            .collect::<Vec<_>>(),
        [(1, Some(500)), (2, Some(503)), (3, Some(200))]
    );
    assert!(log[2].last_attempt && !log[1].last_attempt);
    // The gaps grow: at least 20 ms, then at least 40 ms.
    assert!(log[1].started_at_ms >= log[0].finished_at_ms + 20);
    assert!(log[2].started_at_ms >= log[1].finished_at_ms + 40);
    // Nothing more arrives.
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn attempts_stop_at_max_attempts() {
    let mock = start().await; // 3 attempts
    let mut receiver = Receiver::start(&[500, 500, 500, 500, 500]).await;
    create_webhook(&mock, webhook_body(&receiver.url(), &["payout.failed"])).await;
    mock.trigger(EventName::PayoutFailed, None).await.unwrap();
    mock.wait_idle(WAIT).await.unwrap();
    assert_eq!(receiver.wait_for(3).await.len(), 3);
    let log = mock.deliveries();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|r| !r.accepted));
    assert!(log[2].last_attempt);
}

#[tokio::test]
async fn an_unreachable_callback_is_retried_and_logged_with_an_error() {
    let mock = start().await;
    // A port nobody listens on: bind, note the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    create_webhook(
        &mock,
        webhook_body(&format!("http://127.0.0.1:{port}/hook"), &["purchase.paid"]),
    )
    .await;
    let report = mock.trigger(EventName::PurchasePaid, None).await.unwrap();
    assert_eq!(report.deliveries[0].status, None);
    assert!(report.deliveries[0].error.is_some());
    let log = mock
        .wait_for_deliveries(WAIT, |log| log.iter().any(|r| r.last_attempt))
        .await
        .unwrap();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|r| r.status.is_none() && r.error.is_some()));
}

#[tokio::test]
async fn only_subscribed_webhooks_receive_and_each_signs_with_its_own_key() {
    let mock = start().await;
    let mut paid = Receiver::start(&[]).await;
    let mut all = Receiver::start(&[]).await;
    let other = Receiver::start(&[]).await;
    let w_paid = create_webhook(&mock, webhook_body(&paid.url(), &["purchase.paid"])).await;
    let w_all = create_webhook(
        &mock,
        json!({"title": "all", "callback": all.url(), "all_events": true, "events": ["payout.success"]}),
    )
    .await;
    create_webhook(&mock, webhook_body(&other.url(), &["payout.success"])).await;

    let report = mock.trigger(EventName::PurchasePaid, None).await.unwrap();
    assert_eq!(report.deliveries.len(), 2);
    assert_eq!(report.deliveries[0].webhook_id.to_string(), w_paid["id"]);
    assert_eq!(report.deliveries[1].webhook_id.to_string(), w_all["id"]);

    let a = paid.wait_for(1).await.remove(0);
    let b = all.wait_for(1).await.remove(0);
    assert_eq!(a.body, b.body);
    assert_ne!(a.signature, b.signature);
    let key_paid = w_paid["public_key"].as_str().unwrap();
    let key_all = w_all["public_key"].as_str().unwrap();
    assert!(verify(key_paid, &a.body, a.signature.as_deref().unwrap()));
    assert!(verify(key_all, &b.body, b.signature.as_deref().unwrap()));
    assert!(!verify(key_paid, &b.body, b.signature.as_deref().unwrap()));
    mock.wait_idle(WAIT).await.unwrap();
    assert!(other.received().is_empty());

    // No subscriber (the all_events webhook would take anything): an empty report.
    mock.reset();
    create_webhook(&mock, webhook_body(&other.url(), &["payout.success"])).await;
    let report = mock.trigger(EventName::PayoutPending, None).await.unwrap();
    assert!(report.deliveries.is_empty());
    assert!(other.received().is_empty());
}

#[tokio::test]
async fn every_event_family_delivers_its_object_type() {
    let mock = start().await;
    let mut receiver = Receiver::start(&[]).await;
    create_webhook(
        &mock,
        json!({"title": "all", "callback": receiver.url(), "all_events": true, "events": ["purchase.paid"]}),
    )
    .await;
    for event in EventName::ALL {
        mock.trigger(event, None).await.unwrap();
    }
    // A name this version does not know still reaches all_events webhooks.
    mock.trigger(EventName::from("purchase.teleported"), None)
        .await
        .unwrap();
    // Every name the spec lists (CHIP's 29, or more after a regeneration), then the unknown one.
    let known = EventName::ALL.len();
    let got = receiver.wait_for(known + 1).await;
    for (r, event) in got.iter().zip(EventName::ALL.iter()) {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["event_type"], event.as_str());
        let family = event.as_str().split('.').next().unwrap();
        assert_eq!(body["type"], family);
        if family == "payment" {
            assert_eq!(body["related_to"]["type"], "purchase");
            assert!(body["related_to"]["id"].is_string());
        }
    }
    let last: Value = serde_json::from_slice(&got[known].body).unwrap();
    assert_eq!(last["event_type"], "purchase.teleported");
}

#[tokio::test]
async fn deliveries_for_one_object_stay_in_order_through_retries() {
    // Gaps long enough that the second trigger surely comes while the first event is retrying.
    let mock = MockServer::start(MockConfig {
        delivery: DeliveryConfig {
            max_attempts: 3,
            backoff_base: Duration::from_millis(250),
            backoff_cap: Duration::from_millis(250),
            request_timeout: Duration::from_secs(5),
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    // The first delivery fails twice; the second event must wait for it.
    let mut receiver = Receiver::start(&[500, 500]).await;
    create_webhook(
        &mock,
        json!({"title": "all", "callback": receiver.url(), "all_events": true, "events": ["purchase.paid"]}),
    )
    .await;
    let id = uuid::Uuid::new_v4();
    let first = mock
        .trigger(EventName::PurchaseCreated, Some(id))
        .await
        .unwrap();
    assert_eq!(first.deliveries[0].status, Some(500));
    let second = mock
        .trigger(EventName::PurchasePaid, Some(id))
        .await
        .unwrap();
    assert!(second.deliveries[0].queued);
    mock.wait_idle(WAIT).await.unwrap();
    let got = receiver.wait_for(4).await;
    let events: Vec<String> = got
        .iter()
        .map(|r| {
            serde_json::from_slice::<Value>(&r.body).unwrap()["event_type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        events,
        [
            "purchase.created",
            "purchase.created",
            "purchase.created",
            "purchase.paid"
        ]
    );
}

#[tokio::test]
async fn deleting_a_webhook_stops_its_retries() {
    let mock = MockServer::start(MockConfig {
        delivery: DeliveryConfig {
            max_attempts: 5,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let receiver = Receiver::start(&[500, 500, 500, 500, 500]).await;
    let w = create_webhook(&mock, webhook_body(&receiver.url(), &["purchase.paid"])).await;
    mock.trigger(EventName::PurchasePaid, None).await.unwrap();
    let resp = client(&mock)
        .delete(webhook_url(&mock, &w))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    mock.wait_idle(WAIT).await.unwrap();
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn the_http_trigger_and_log_endpoints() {
    let mock = start().await;
    let mut receiver = Receiver::start(&[]).await;
    let w = create_webhook(&mock, webhook_body(&receiver.url(), &["payment.refunded"])).await;
    let http = client(&mock);
    let root = mock.root_url();
    let id = uuid::Uuid::new_v4();
    let resp = http
        .post(format!("{root}/__mock/trigger"))
        .json(&json!({"event": "payment.refunded", "object_id": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let report: chip_gate_mock::TriggerReport = resp.json().await.unwrap();
    assert_eq!(report.object_id, id);
    assert_eq!(report.event, EventName::PaymentRefunded);
    assert_eq!(report.deliveries[0].status, Some(200));
    assert_eq!(report.object["type"], "payment");

    let got = receiver.wait_for(1).await;
    assert!(verify(
        w["public_key"].as_str().unwrap(),
        &got[0].body,
        got[0].signature.as_deref().unwrap()
    ));

    let log: Vec<chip_gate_mock::DeliveryRecord> = http
        .get(format!("{root}/__mock/deliveries"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(log, mock.deliveries());
    assert_eq!(log.len(), 1);

    // Bad trigger bodies are 400s; control endpoints need the key.
    for body in [
        json!({}),
        json!({"event": ""}),
        json!({"event": "purchase.paid", "object_id": "x"}),
    ] {
        let resp = http
            .post(format!("{root}/__mock/trigger"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
    }
    let anon = reqwest::Client::new();
    let resp = anon
        .post(format!("{root}/__mock/trigger"))
        .json(&json!({"event": "purchase.paid"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = anon
        .get(format!("{root}/__mock/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // Reset clears webhooks and the log.
    let resp = http
        .post(format!("{root}/__mock/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(mock.webhook_count(), 0);
    assert!(mock.deliveries().is_empty());
}

#[tokio::test]
async fn wait_for_deliveries_times_out_when_nothing_happens() {
    let mock = start().await;
    let err = mock
        .wait_for_deliveries(Duration::from_millis(50), |log| !log.is_empty())
        .await
        .unwrap_err();
    assert!(matches!(err, chip_gate_mock::MockError::Timeout(_)));
    // Idle at once when nothing is pending.
    mock.wait_idle(Duration::from_millis(50)).await.unwrap();
}
