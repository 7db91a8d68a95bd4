//! What a hostile page, a hostile peer or a runaway test can do to a mock on a developer's machine
//! (issue 10): a rebound `Host`, a guessable key, unbounded webhooks, queues, connections and
//! callback answers, and concurrent PATCHes that undo each other. Real HTTP on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::post;
use chip_gate_api::types::EventName;
use chip_gate_mock::{DeliveryConfig, Limits, MockConfig, MockServer};
use common::{
    client, create_webhook, fast_config, receiver, stalling_receiver, webhook_body, webhook_url,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

async fn start_with(limits: Limits) -> MockServer {
    MockServer::start(MockConfig {
        limits,
        generate_keys: false,
        ..fast_config()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_request_for_another_host_is_refused() {
    let mock = MockServer::start(fast_config()).await.unwrap();
    let http = client(&mock);
    let port = mock.addr().port();
    let base = mock.base_url();
    let root = mock.root_url();
    // What a page on evil.example sees after rebinding its name to 127.0.0.1.
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_owned(),
        format!("127.0.0.1.nip.io:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("10.0.0.1:{port}"),
    ] {
        for req in [
            http.get(format!("{base}/webhooks/")),
            http.post(format!("{base}/webhooks/"))
                .json(&webhook_body("http://127.0.0.1:9/x", &["purchase.paid"])),
            http.post(format!("{root}/__mock/trigger"))
                .json(&json!({"event": "purchase.paid"})),
            http.get(format!("{root}/__mock/health")),
        ] {
            let resp = req.header("host", &host).send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "Host: {host}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["__all__"][0]["code"], "invalid_host");
        }
    }
    assert_eq!(mock.webhook_count(), 0);
    // Loopback names and addresses, with any port, are served.
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_owned(),
        format!("127.9.9.9:{port}"),
        format!("[::1]:{port}"),
    ] {
        let resp = http
            .get(format!("{base}/webhooks/"))
            .header("host", &host)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "Host: {host}");
    }
    // By name, as a browser on this machine would.
    let resp = http
        .get(format!("http://localhost:{port}/api/v1/webhooks/"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn each_mock_gets_its_own_random_key_by_default() {
    let a = MockConfig::default().api_key;
    let b = MockConfig::default().api_key;
    assert_ne!(a, b);
    assert_ne!(a, chip_gate_mock::DEFAULT_API_KEY);
    assert!(a.starts_with("test_mock_") && a.len() == 42, "{a}");
    let mock = MockServer::start(MockConfig::default()).await.unwrap();
    let resp = common::client_with_key(chip_gate_mock::DEFAULT_API_KEY)
        .get(format!("{}/webhooks/", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn creates_past_the_webhook_cap_are_refused() {
    let mock = start_with(Limits {
        max_webhooks: 2,
        ..Limits::default()
    })
    .await;
    let http = client(&mock);
    let first = create_webhook(
        &mock,
        webhook_body("http://127.0.0.1:9/a", &["purchase.paid"]),
    )
    .await;
    create_webhook(
        &mock,
        webhook_body("http://127.0.0.1:9/b", &["purchase.paid"]),
    )
    .await;
    let resp = http
        .post(format!("{}/webhooks/", mock.base_url()))
        .json(&webhook_body("http://127.0.0.1:9/c", &["purchase.paid"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["__all__"][0]["code"], "limit");
    assert_eq!(mock.webhook_count(), 2);
    // Room again after a delete.
    let resp = http
        .delete(webhook_url(&mock, &first))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    create_webhook(
        &mock,
        webhook_body("http://127.0.0.1:9/c", &["purchase.paid"]),
    )
    .await;
}

#[tokio::test]
async fn limits_of_zero_are_refused() {
    for limits in [
        Limits {
            max_webhooks: 0,
            ..Limits::default()
        },
        Limits {
            max_connections: 0,
            ..Limits::default()
        },
        Limits {
            max_queued_per_object: 0,
            ..Limits::default()
        },
        Limits {
            max_pending_deliveries: 0,
            ..Limits::default()
        },
    ] {
        let started = MockServer::start(MockConfig {
            limits,
            ..MockConfig::default()
        })
        .await;
        assert!(matches!(
            started,
            Err(chip_gate_mock::MockError::InvalidConfig(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_delivery_queue_answers_429() {
    let mock = start_with(Limits {
        max_queued_per_object: 2,
        max_pending_deliveries: 3,
        ..Limits::default()
    })
    .await;
    let (release, held) = tokio::sync::watch::channel(false);
    let got = Arc::new(tokio::sync::Notify::new());
    let url = {
        let got = got.clone();
        stalling_receiver(held, move |_| got.notify_one()).await
    };
    create_webhook(&mock, webhook_body(&url, &["purchase.paid"])).await;
    let http = client(&mock);
    let trigger = |object: uuid::Uuid| {
        http.post(format!("{}/__mock/trigger", mock.root_url()))
            .json(&json!({"event": "purchase.paid", "object_id": object}))
            .send()
    };
    let object = uuid::Uuid::new_v4();
    // The first event for the object is being delivered (the receiver holds it).
    let first = tokio::spawn(trigger(object));
    tokio::time::timeout(Duration::from_secs(10), got.notified())
        .await
        .unwrap();
    // The second waits behind it: the object's queue is now full.
    let second = trigger(object).await.unwrap();
    assert_eq!(second.status(), StatusCode::OK);
    let report: Value = second.json().await.unwrap();
    assert_eq!(report["deliveries"][0]["queued"], true);
    let third = trigger(object).await.unwrap();
    assert_eq!(third.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(third.headers()["retry-after"], "1");
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["__all__"][0]["code"], "throttled");
    // The library call says the same.
    assert!(matches!(
        mock.trigger(EventName::PurchasePaid, Some(object)).await,
        Err(chip_gate_mock::MockError::Busy(_))
    ));
    // Another object still has room, until the mock-wide cap (3 waiting or in flight).
    let other = tokio::spawn(trigger(uuid::Uuid::new_v4()));
    tokio::time::timeout(Duration::from_secs(10), got.notified())
        .await
        .unwrap();
    let fourth = trigger(uuid::Uuid::new_v4()).await.unwrap();
    assert_eq!(fourth.status(), StatusCode::TOO_MANY_REQUESTS);
    // Released, everything drains and the queue takes events again.
    release.send(true).unwrap();
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    assert_eq!(other.await.unwrap().unwrap().status(), StatusCode::OK);
    mock.wait_idle(Duration::from_secs(10)).await.unwrap();
    assert_eq!(trigger(object).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn only_a_few_kib_are_read_from_a_callbacks_answer() {
    let mock = MockServer::start(MockConfig {
        delivery: DeliveryConfig {
            max_attempts: 1,
            request_timeout: Duration::from_secs(8),
            ..DeliveryConfig::default()
        },
        generate_keys: false,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    // A receiver that acknowledges, then streams an endless body.
    let url = receiver(Router::new().route(
        "/hook",
        post(|| async {
            let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
            let endless =
                futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            Body::from_stream(endless)
        }),
    ))
    .await;
    create_webhook(&mock, webhook_body(&url, &["purchase.paid"])).await;
    let started = Instant::now();
    let report = mock.trigger(EventName::PurchasePaid, None).await.unwrap();
    let took = started.elapsed();
    assert_eq!(report.deliveries[0].status, Some(200));
    assert!(report.deliveries[0].accepted);
    // Reading the whole answer would have run into the 8 s attempt timeout.
    assert!(took < Duration::from_secs(4), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_wait_until_one_closes() {
    let mock = start_with(Limits {
        max_connections: 1,
        ..Limits::default()
    })
    .await;
    // One silent client holds the only connection slot.
    let mut hog = tokio::net::TcpStream::connect(mock.addr()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("{}/__mock/health", mock.root_url());
    let waiting = tokio::time::timeout(Duration::from_millis(700), http.get(&url).send()).await;
    assert!(waiting.is_err(), "served past the cap: {waiting:?}");
    // Once it goes away, the next one is served.
    hog.shutdown().await.unwrap();
    drop(hog);
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_patches_of_different_fields_both_survive() {
    let mock = start_with(Limits::default()).await;
    let w = create_webhook(
        &mock,
        webhook_body("http://127.0.0.1:9/start", &["purchase.paid"]),
    )
    .await;
    let url = webhook_url(&mock, &w);
    let http = client(&mock);
    // Each body carries a large unknown field (ignored, as the spec allows), so that reading and
    // validating a body takes long enough for two PATCHes to overlap.
    let padding = "x".repeat(512 * 1024);
    for round in 0..100 {
        let title = format!("title {round}");
        let callback = format!("http://127.0.0.1:9/cb/{round}");
        let a = {
            let (http, url, title, padding) =
                (http.clone(), url.clone(), title.clone(), padding.clone());
            tokio::spawn(async move {
                http.patch(&url)
                    .json(&json!({"title": title, "padding": padding}))
                    .send()
                    .await
            })
        };
        let b = {
            let (http, url, callback, padding) =
                (http.clone(), url.clone(), callback.clone(), padding.clone());
            tokio::spawn(async move {
                http.patch(&url)
                    .json(&json!({"callback": callback, "padding": padding}))
                    .send()
                    .await
            })
        };
        assert_eq!(a.await.unwrap().unwrap().status(), StatusCode::OK);
        assert_eq!(b.await.unwrap().unwrap().status(), StatusCode::OK);
        let now: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(now["title"], title, "round {round}: {now}");
        assert_eq!(now["callback"], callback, "round {round}: {now}");
    }
}
