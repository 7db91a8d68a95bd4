//! `Variant::Variations`: the answers CHIP's document allows beyond its tidy reading, over real
//! HTTP on 127.0.0.1, next to the documented answers they replace.
#![allow(clippy::unwrap_used)]

mod common;

use chip_gate_mock::{MockConfig, MockServer, Variant};
use common::{client, client_with_key, create_webhook, fast_config, webhook_body, webhook_url};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CALLBACK: &str = "https://example.test/chip/hook";

async fn start(variant: Variant, page_size: usize) -> MockServer {
    MockServer::start(MockConfig {
        variant,
        page_size,
        generate_keys: false,
        ..fast_config()
    })
    .await
    .unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

#[tokio::test]
async fn webhooks_leave_out_what_chip_does_not_require() {
    let mock = start(Variant::Variations, 20).await;
    assert_eq!(mock.variant(), Variant::Variations);
    let some = create_webhook(&mock, webhook_body(CALLBACK, &["purchase.paid"])).await;
    assert_eq!(
        keys(&some),
        ["callback", "events", "id", "public_key", "title"]
    );
    assert_eq!(some["events"], json!(["purchase.paid"]));
    let all = create_webhook(
        &mock,
        json!({"title": "all", "callback": CALLBACK, "all_events": true, "events": ["purchase.paid"]}),
    )
    .await;
    assert_eq!(
        keys(&all),
        [
            "all_events",
            "callback",
            "events",
            "id",
            "public_key",
            "title"
        ]
    );
    assert_eq!(all["all_events"], true);
    assert_eq!(all["events"], Value::Null);
    // Retrieve, PUT and PATCH answer the same way.
    let http = client(&mock);
    let got: Value = http
        .get(webhook_url(&mock, &all))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, all);
    let patched: Value = http
        .patch(webhook_url(&mock, &all))
        .json(&json!({"all_events": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(patched.get("all_events").is_none(), "{patched}");
    assert_eq!(patched["events"], json!(["purchase.paid"]));
    // The library's own view is still the documented one.
    assert_eq!(mock.webhooks().len(), 2);
    assert_eq!(mock.webhooks()[1].type_.as_deref(), Some("webhook"));
}

#[tokio::test]
async fn the_documented_webhook_has_every_field() {
    let mock = start(Variant::Documented, 20).await;
    let all = create_webhook(
        &mock,
        json!({"title": "all", "callback": CALLBACK, "all_events": true, "events": ["purchase.paid"]}),
    )
    .await;
    assert_eq!(
        keys(&all),
        [
            "all_events",
            "callback",
            "created_on",
            "events",
            "id",
            "public_key",
            "title",
            "type",
            "updated_on"
        ]
    );
    assert_eq!(all["events"], json!(["purchase.paid"]));
}

/// Walks every page from the first, following `next` as a link, and returns the pages.
async fn walk(mock: &MockServer) -> Vec<Value> {
    let http = client(mock);
    let root = mock.root_url();
    let mut pages = Vec::new();
    let mut url = Some(format!("{}/webhooks/", mock.base_url()));
    while let Some(u) = url {
        let page: Value = http.get(&u).send().await.unwrap().json().await.unwrap();
        url = page.get("next").and_then(Value::as_str).map(|n| {
            if n.starts_with('/') {
                format!("{root}{n}")
            } else {
                n.to_owned()
            }
        });
        pages.push(page);
        assert!(pages.len() < 10, "the walk does not end");
    }
    pages
}

#[tokio::test]
async fn pages_link_relatively_and_leave_out_previous_and_the_last_next() {
    let mock = start(Variant::Variations, 2).await;
    for i in 0..5 {
        create_webhook(
            &mock,
            json!({"title": format!("h{i}"), "callback": CALLBACK, "events": ["purchase.paid"]}),
        )
        .await;
    }
    let pages = walk(&mock).await;
    assert_eq!(pages.len(), 3);
    assert_eq!(keys(&pages[0]), ["next", "results"]);
    assert_eq!(pages[0]["next"], "/api/v1/webhooks/?page=2");
    assert_eq!(pages[1]["next"], "/api/v1/webhooks/?page=3");
    assert_eq!(keys(&pages[2]), ["results"]);
    let titles: Vec<&str> = pages
        .iter()
        .flat_map(|p| p["results"].as_array().unwrap())
        .map(|w| w["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["h0", "h1", "h2", "h3", "h4"]);
    // An empty store is one page with only `results`.
    mock.reset();
    assert_eq!(walk(&mock).await, [json!({"results": []})]);
}

#[tokio::test]
async fn documented_pages_link_absolutely_with_the_host_the_client_used() {
    let mock = start(Variant::Documented, 1).await;
    for i in 0..2 {
        create_webhook(
            &mock,
            json!({"title": format!("h{i}"), "callback": CALLBACK, "events": ["purchase.paid"]}),
        )
        .await;
    }
    let pages = walk(&mock).await;
    assert_eq!(pages.len(), 2);
    let port = mock.addr().port();
    assert_eq!(
        pages[0]["next"],
        format!("http://127.0.0.1:{port}/api/v1/webhooks/?page=2")
    );
    assert_eq!(pages[0]["previous"], Value::Null);
    assert_eq!(
        pages[1]["previous"],
        format!("http://127.0.0.1:{port}/api/v1/webhooks/?page=1")
    );
    assert_eq!(pages[1]["next"], Value::Null);
    // Reached as localhost, the links say localhost (as DRF builds them from the request).
    let page: Value = client(&mock)
        .get(format!("http://localhost:{port}/api/v1/webhooks/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        page["next"],
        format!("http://localhost:{port}/api/v1/webhooks/?page=2")
    );
}

#[tokio::test]
async fn a_401_has_no_body_and_a_404_has_none_in_either_variant() {
    for variant in [Variant::Documented, Variant::Variations] {
        let mock = start(variant, 20).await;
        let resp = client_with_key("test_wrong")
            .get(format!("{}/webhooks/", mock.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let has_type = resp.headers().get("content-type").is_some();
        let body = resp.bytes().await.unwrap();
        match variant {
            Variant::Variations => {
                assert!(body.is_empty() && !has_type, "{variant:?}");
            }
            _ => {
                let v: Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["__all__"][0]["code"], "authentication_failed");
            }
        }
        let resp = client(&mock)
            .get(format!(
                "{}/webhooks/{}/",
                mock.base_url(),
                uuid::Uuid::new_v4()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        assert!(resp.headers().get("content-type").is_none());
        assert!(resp.bytes().await.unwrap().is_empty(), "{variant:?}");
    }
}
