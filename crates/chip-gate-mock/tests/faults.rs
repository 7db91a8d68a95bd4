//! Fault injection over real HTTP: scripts, rates with a seed, latency, and the control endpoint.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use chip_gate_mock::{Fault, Faults, MockConfig, MockServer};
use common::{client, start, webhook_body};
use serde_json::{Value, json};

const CALLBACK: &str = "https://example.test/hook";

#[tokio::test]
async fn a_scripted_503_then_normal_service() {
    let mock = start().await;
    mock.set_faults(Faults::script(vec![Fault::Status(503)]));
    let http = client(&mock);
    let url = format!("{}/webhooks/", mock.base_url());
    let first = http.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 503);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["__all__"][0]["code"], "injected_fault");
    let second = http.get(&url).send().await.unwrap();
    assert_eq!(second.status(), 200);
    assert!(mock.faults().script.is_empty());
}

#[tokio::test]
async fn a_scripted_fault_is_applied_before_auth_and_the_operation() {
    let mock = start().await;
    mock.set_faults(Faults::script(vec![Fault::Status(500)]));
    let resp = client(&mock)
        .post(format!("{}/webhooks/", mock.base_url()))
        .json(&webhook_body(CALLBACK, &["purchase.paid"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(mock.webhook_count(), 0, "a faulted create stores nothing");
}

#[tokio::test]
async fn a_scripted_429_carries_retry_after() {
    let mock = start().await;
    mock.set_faults(Faults::script(vec![Fault::TooMany { retry_after: 7 }]));
    let resp = client(&mock)
        .get(format!("{}/public_key/", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["__all__"][0]["code"], "throttled");
}

#[tokio::test]
async fn a_dropped_connection_gets_no_response_and_stores_nothing() {
    let mock = start().await;
    mock.set_faults(Faults::script(vec![Fault::Drop]));
    let http = client(&mock);
    let err = http
        .post(format!("{}/webhooks/", mock.base_url()))
        .json(&webhook_body(CALLBACK, &["purchase.paid"]))
        .send()
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "{err}");
    assert_eq!(mock.webhook_count(), 0);
    // The next request is served.
    let resp = http
        .get(format!("{}/webhooks/", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn drop_after_handling_stores_the_webhook_but_answers_nothing() {
    let mock = start().await;
    mock.set_faults(Faults::script(vec![Fault::DropAfterHandling]));
    let http = client(&mock);
    let err = http
        .post(format!("{}/webhooks/", mock.base_url()))
        .json(&webhook_body(CALLBACK, &["purchase.paid"]))
        .send()
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "{err}");
    assert_eq!(mock.webhook_count(), 1, "the create happened");
    let page: Value = http
        .get(format!("{}/webhooks/", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["results"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_scripted_delay_slows_one_request() {
    let mock = start().await;
    // A delay long enough that a busy machine's slowest plain request stays well under it.
    mock.set_faults(Faults::script(vec![Fault::Delay(Duration::from_millis(
        1_000,
    ))]));
    let http = client(&mock);
    let url = format!("{}/webhooks/", mock.base_url());
    let t = Instant::now();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(1_000));
    let t = Instant::now();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    assert!(t.elapsed() < Duration::from_millis(1_000));
    // A client timeout shorter than the delay sees a timeout.
    mock.set_faults(Faults::script(vec![Fault::DelayMs(2_000)]));
    let err = http
        .get(&url)
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
}

#[tokio::test]
async fn scripts_run_in_order_and_skip_control_paths() {
    let mock = start().await;
    mock.set_faults(Faults::script(vec![
        Fault::Status(502),
        Fault::TooMany { retry_after: 1 },
        Fault::Status(504),
    ]));
    let http = client(&mock);
    // Control endpoints are never faulted and do not use up the script.
    let resp = http
        .get(format!("{}/__mock/deliveries", mock.root_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let url = format!("{}/webhooks/", mock.base_url());
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(http.get(&url).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [502, 429, 504, 200]);
}

#[tokio::test]
async fn an_error_rate_of_one_fails_everything_and_zero_nothing() {
    let mock = MockServer::start(MockConfig {
        faults: Faults {
            error_rate: 1.0,
            error_status: 500,
            ..Faults::default()
        },
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let http = client(&mock);
    let url = format!("{}/webhooks/", mock.base_url());
    for _ in 0..5 {
        assert_eq!(http.get(&url).send().await.unwrap().status(), 500);
    }
    mock.set_faults(Faults::none());
    for _ in 0..5 {
        assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    }
}

/// The statuses of `n` GETs (0 for a dropped connection).
async fn statuses(mock: &MockServer, n: usize) -> Vec<u16> {
    let http = client(mock);
    let url = format!("{}/webhooks/", mock.base_url());
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(match http.get(&url).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        });
    }
    out
}

#[tokio::test]
async fn seeded_rates_mix_faults_reproducibly() {
    let mock = start().await;
    let faults = Faults {
        error_rate: 0.2,
        too_many_rate: 0.2,
        drop_rate: 0.2,
        seed: Some(42),
        ..Faults::default()
    };
    mock.set_faults(faults.clone());
    let a = statuses(&mock, 100).await;
    mock.set_faults(faults);
    let b = statuses(&mock, 100).await;
    assert_eq!(a, b, "the same seed gives the same faults");
    for (status, lo, hi) in [(503, 8, 35), (429, 8, 35), (0, 8, 35), (200, 25, 60)] {
        let n = a.iter().filter(|s| **s == status).count();
        assert!((lo..=hi).contains(&n), "{status}: {n} of 100");
    }
}

#[tokio::test]
async fn latency_is_added_to_every_api_request() {
    let mock = start().await;
    mock.set_faults(Faults {
        latency: Duration::from_millis(150),
        ..Faults::default()
    });
    let http = client(&mock);
    let t = Instant::now();
    for _ in 0..2 {
        let resp = http
            .get(format!("{}/public_key/", mock.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert!(t.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn faults_can_be_set_over_http() {
    let mock = start().await;
    let http = client(&mock);
    let resp = http
        .post(format!("{}/__mock/faults", mock.root_url()))
        .json(&json!({"script": [{"status": 503}, "drop_after_handling", {"too_many": {"retry_after": 3}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let now: Value = resp.json().await.unwrap();
    assert_eq!(now["script"].as_array().unwrap().len(), 3);
    assert_eq!(
        mock.faults().script,
        vec![
            Fault::Status(503),
            Fault::DropAfterHandling,
            Fault::TooMany { retry_after: 3 }
        ]
    );
    let got: Value = http
        .get(format!("{}/__mock/faults", mock.root_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, now);

    for bad in [
        json!({"error_rate": 2.0}),
        json!({"error_rate": 0.6, "drop_rate": 0.6}),
        json!({"script": ["explode"]}),
        json!({"error_status": 42}),
    ] {
        let resp = http
            .post(format!("{}/__mock/faults", mock.root_url()))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    // The valid script is still in force.
    assert_eq!(mock.faults().script.len(), 3);
}
