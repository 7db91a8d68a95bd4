//! The seven operations over real HTTP on 127.0.0.1: statuses, bodies, validation, auth, pages.
#![allow(clippy::unwrap_used)]

mod common;

use chip_gate_mock::{MockConfig, MockServer};
use common::{client, client_with_key, create_webhook, start, webhook_body, webhook_url};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CALLBACK: &str = "https://example.test/chip/hook";

#[tokio::test]
async fn create_returns_201_with_a_stored_webhook() {
    let mock = start().await;
    let resp = client(&mock)
        .post(format!("{}/webhooks/", mock.base_url()))
        .json(&json!({"title": "Orders", "callback": CALLBACK, "events": ["purchase.paid", "purchase.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let w: Value = resp.json().await.unwrap();
    assert_eq!(w["type"], "webhook");
    assert_eq!(w["title"], "Orders");
    assert_eq!(w["callback"], CALLBACK);
    assert_eq!(w["all_events"], false);
    assert_eq!(w["events"], json!(["purchase.paid", "purchase.created"]));
    assert!(uuid::Uuid::parse_str(w["id"].as_str().unwrap()).is_ok());
    assert!(
        w["public_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----\n")
    );
    assert_eq!(w["created_on"], w["updated_on"]);
    assert!(w["created_on"].as_i64().unwrap() > 1_700_000_000);
    // The body also parses as the generated client's Webhook.
    let typed: chip_gate_api::types::Webhook = serde_json::from_value(w).unwrap();
    assert_eq!(mock.webhook_count(), 1);
    assert_eq!(mock.webhooks()[0].id, typed.id);
}

#[tokio::test]
async fn each_webhook_gets_its_own_key() {
    let mock = start().await;
    let a = create_webhook(&mock, webhook_body(CALLBACK, &["purchase.paid"])).await;
    let b = create_webhook(&mock, webhook_body(CALLBACK, &["purchase.paid"])).await;
    assert_ne!(a["public_key"], b["public_key"]);
    assert_ne!(a["id"], b["id"]);
}

#[tokio::test]
async fn all_events_still_needs_events_as_chips_schema_says() {
    let mock = start().await;
    let http = client(&mock);
    // CHIP's published schema requires a non-empty `events` on create and update, whatever
    // `all_events` says.
    for body in [
        json!({"title": "all", "callback": CALLBACK, "all_events": true}),
        json!({"title": "all", "callback": CALLBACK, "all_events": true, "events": []}),
    ] {
        let resp = http
            .post(format!("{}/webhooks/", mock.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(err["events"][0]["message"].is_string(), "{err}");
    }
    assert_eq!(mock.webhook_count(), 0);
    // Both at once satisfy the schema and the prose.
    let w = create_webhook(
        &mock,
        json!({"title": "all", "callback": CALLBACK, "all_events": true, "events": ["purchase.paid"]}),
    )
    .await;
    assert_eq!(w["all_events"], true);
    assert_eq!(w["events"], json!(["purchase.paid"]));
    // PUT refuses a missing `events` too; PATCH does not need it.
    let url = webhook_url(&mock, &w);
    let resp = http
        .put(&url)
        .json(&json!({"title": "all", "callback": CALLBACK, "all_events": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["events"][0]["message"], "This field is required.");
    let resp = http
        .patch(&url)
        .json(&json!({"all_events": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn retrieve_returns_the_webhook_and_404s_otherwise() {
    let mock = start().await;
    let http = client(&mock);
    let w = create_webhook(&mock, webhook_body(CALLBACK, &["payout.success"])).await;
    let resp = http.get(webhook_url(&mock, &w)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), w);

    for id in [
        uuid::Uuid::new_v4().to_string(),
        "not-a-uuid".to_owned(),
        "123".to_owned(),
    ] {
        let resp = http
            .get(format!("{}/webhooks/{id}/", mock.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{id}");
        assert_bodiless_404(resp).await;
    }
}

#[tokio::test]
async fn put_replaces_and_bumps_updated_on() {
    let mock = start().await;
    let http = client(&mock);
    let w = create_webhook(&mock, webhook_body(CALLBACK, &["purchase.paid"])).await;
    let url = webhook_url(&mock, &w);
    let resp = http
        .put(&url)
        .json(
            &json!({"title": "renamed", "callback": "http://127.0.0.1:9/new", "all_events": true, "events": ["payout.success"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let u: Value = resp.json().await.unwrap();
    assert_eq!(u["id"], w["id"]);
    assert_eq!(u["title"], "renamed");
    assert_eq!(u["callback"], "http://127.0.0.1:9/new");
    assert_eq!(u["all_events"], true);
    assert_eq!(u["events"], json!(["payout.success"]));
    assert_eq!(u["public_key"], w["public_key"]);
    assert_eq!(u["created_on"], w["created_on"]);
    assert!(u["updated_on"].as_i64().unwrap() > w["updated_on"].as_i64().unwrap());
    // The change is stored.
    let again: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(again, u);
}

#[tokio::test]
async fn put_with_missing_fields_is_400_and_changes_nothing() {
    let mock = start().await;
    let http = client(&mock);
    let w = create_webhook(&mock, webhook_body(CALLBACK, &["purchase.paid"])).await;
    let url = webhook_url(&mock, &w);
    let resp = http
        .put(&url)
        .json(&json!({"title": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["callback"][0]["code"], "required");
    assert_eq!(body["events"][0]["code"], "required");
    let again: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(again, w);
}

#[tokio::test]
async fn patch_changes_only_the_fields_sent() {
    let mock = start().await;
    let http = client(&mock);
    let w = create_webhook(&mock, webhook_body(CALLBACK, &["purchase.paid"])).await;
    let url = webhook_url(&mock, &w);
    let resp = http
        .patch(&url)
        .json(&json!({"events": ["payment.refunded", "purchase.paid"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let p: Value = resp.json().await.unwrap();
    assert_eq!(p["events"], json!(["payment.refunded", "purchase.paid"]));
    assert_eq!(p["title"], w["title"]);
    assert_eq!(p["callback"], w["callback"]);
    assert!(p["updated_on"].as_i64().unwrap() > w["updated_on"].as_i64().unwrap());

    // An empty PATCH changes nothing but is still a save.
    let resp = http.patch(&url).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let q: Value = resp.json().await.unwrap();
    assert_eq!(q["events"], p["events"]);

    // PATCH to 404 for an unknown id, before validation.
    let resp = http
        .patch(format!(
            "{}/webhooks/{}/",
            mock.base_url(),
            uuid::Uuid::new_v4()
        ))
        .json(&json!({"title": "x".repeat(101)}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn patch_may_turn_all_events_off_and_keeps_the_listed_events() {
    let mock = start().await;
    let http = client(&mock);
    let w = create_webhook(
        &mock,
        json!({"title": "all", "callback": CALLBACK, "all_events": true, "events": ["payout.failed"]}),
    )
    .await;
    let url = webhook_url(&mock, &w);
    let resp = http
        .patch(&url)
        .json(&json!({"all_events": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["all_events"], false);
    assert_eq!(body["events"], json!(["payout.failed"]));
    // A PATCH cannot empty the list.
    let resp = http
        .patch(&url)
        .json(&json!({"events": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn delete_is_204_then_404() {
    let mock = start().await;
    let http = client(&mock);
    let w = create_webhook(&mock, webhook_body(CALLBACK, &["purchase.paid"])).await;
    let url = webhook_url(&mock, &w);
    let resp = http.delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(resp.bytes().await.unwrap().is_empty());
    assert_eq!(mock.webhook_count(), 0);
    assert_eq!(
        http.delete(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        http.get(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        http.put(&url)
            .json(&webhook_body(CALLBACK, &["purchase.paid"]))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn public_key_is_a_json_string_holding_a_pem() {
    let mock = start().await;
    let resp = client(&mock)
        .get(format!("{}/public_key/", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(
        text.starts_with("\"-----BEGIN PUBLIC KEY-----\\n"),
        "{text}"
    );
    let pem: String = serde_json::from_str(&text).unwrap();
    assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
    assert_eq!(pem, mock.company_public_key());
    // Not one of the webhook keys.
    let w = create_webhook(&mock, webhook_body(CALLBACK, &["purchase.paid"])).await;
    assert_ne!(w["public_key"], pem);
}

#[tokio::test]
async fn every_path_needs_the_key() {
    let mock = start().await;
    let base = mock.base_url();
    let id = uuid::Uuid::new_v4();
    let anon = reqwest::Client::builder().no_proxy().build().unwrap();
    let wrong = client_with_key("test_wrong_key");
    for http in [anon, wrong] {
        let requests = [
            http.get(format!("{base}/webhooks/")),
            http.post(format!("{base}/webhooks/"))
                .json(&webhook_body(CALLBACK, &["purchase.paid"])),
            http.get(format!("{base}/webhooks/{id}/")),
            http.put(format!("{base}/webhooks/{id}/"))
                .json(&webhook_body(CALLBACK, &["purchase.paid"])),
            http.patch(format!("{base}/webhooks/{id}/"))
                .json(&json!({})),
            http.delete(format!("{base}/webhooks/{id}/")),
            http.get(format!("{base}/public_key/")),
        ];
        for req in requests {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            let body: Value = resp.json().await.unwrap();
            let code = body["__all__"][0]["code"].as_str().unwrap().to_owned();
            assert!(
                code == "not_authenticated" || code == "authentication_failed",
                "{code}"
            );
        }
    }
    assert_eq!(mock.webhook_count(), 0);
    // A key given as another scheme is refused too.
    let resp = reqwest::Client::new()
        .get(format!("{base}/webhooks/"))
        .header("authorization", format!("Token {}", mock.api_key()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_custom_key_is_the_only_one_accepted() {
    let mock = MockServer::start(MockConfig {
        api_key: "test_custom_key_123".into(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(mock.api_key(), "test_custom_key_123");
    let ok = client(&mock)
        .get(format!("{}/webhooks/", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let default_key = client_with_key(chip_gate_mock::DEFAULT_API_KEY)
        .get(format!("{}/webhooks/", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(default_key.status(), StatusCode::UNAUTHORIZED);
}

/// POSTs `body` (raw bytes) and returns the 400 body.
async fn create_400(
    http: &reqwest::Client,
    mock: &MockServer,
    body: impl Into<reqwest::Body>,
) -> Value {
    let resp = http
        .post(format!("{}/webhooks/", mock.base_url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    resp.json().await.unwrap()
}

fn codes(body: &Value, field: &str) -> Vec<String> {
    body[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {body}"))
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
            e["code"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test]
async fn validation_errors_are_keyed_by_field() {
    let mock = start().await;
    let http = client(&mock);
    let long_title = "t".repeat(101);
    let long_callback = format!("https://example.test/{}", "a".repeat(480));
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"title": long_title, "callback": CALLBACK, "events": EV}),
            "title",
            "max_length",
        ),
        (
            json!({"title": "", "callback": CALLBACK, "events": EV}),
            "title",
            "blank",
        ),
        (
            json!({"title": " \t\n\u{3000}", "callback": CALLBACK, "events": EV}),
            "title",
            "blank",
        ),
        (
            json!({"title": "t", "callback": long_callback, "events": EV}),
            "callback",
            "max_length",
        ),
        (
            json!({"title": "t", "callback": "not a url", "events": EV}),
            "callback",
            "invalid",
        ),
        (
            json!({"title": "t", "callback": "ftp://example.test/x", "events": EV}),
            "callback",
            "invalid",
        ),
        (
            json!({"title": "t", "callback": "https://", "events": EV}),
            "callback",
            "invalid",
        ),
        (
            json!({"title": "t", "callback": "https://@example.test/", "events": EV}),
            "callback",
            "invalid",
        ),
        (
            json!({"title": "t", "callback": "", "events": EV}),
            "callback",
            "blank",
        ),
        (
            json!({"title": "t", "callback": CALLBACK}),
            "events",
            "required",
        ),
        (
            json!({"title": "t", "callback": CALLBACK, "all_events": true}),
            "events",
            "required",
        ),
        (
            json!({"title": "t", "callback": CALLBACK, "events": []}),
            "events",
            "empty",
        ),
        (
            json!({"title": "t", "callback": CALLBACK, "all_events": true, "events": []}),
            "events",
            "empty",
        ),
        (
            json!({"title": "t", "callback": CALLBACK, "events": ["purchase.teleported"]}),
            "events",
            "invalid_choice",
        ),
        (
            json!({"title": "t", "callback": CALLBACK, "events": ["purchase.paid", "purchase.paid"]}),
            "events",
            "unique",
        ),
        (
            json!({"title": "t", "callback": CALLBACK, "events": "purchase.paid"}),
            "events",
            "not_a_list",
        ),
        (
            json!({"title": "t", "callback": CALLBACK, "events": [1]}),
            "events",
            "invalid_choice",
        ),
        (
            json!({"callback": CALLBACK, "events": EV}),
            "title",
            "required",
        ),
        (json!({"title": "t", "events": EV}), "callback", "required"),
        (
            json!({"title": 5, "callback": CALLBACK, "events": EV}),
            "title",
            "invalid",
        ),
        (
            json!({"title": null, "callback": CALLBACK, "events": EV}),
            "title",
            "null",
        ),
        (
            json!({"title": "t", "callback": 5, "events": EV}),
            "callback",
            "invalid",
        ),
        (
            json!({"title": "t", "callback": CALLBACK, "all_events": "yes", "events": EV}),
            "all_events",
            "invalid",
        ),
        (
            json!({"title": "t", "callback": CALLBACK, "events": null, "all_events": true}),
            "events",
            "null",
        ),
    ];
    for (body, field, code) in cases {
        let err = create_400(&http, &mock, body.to_string()).await;
        assert_eq!(codes(&err, field), vec![code.to_owned()], "{body} -> {err}");
    }
    // Several fields at once: every one is reported.
    let err = create_400(&http, &mock, json!({"events": ["nope"]}).to_string()).await;
    assert_eq!(codes(&err, "title"), ["required"]);
    assert_eq!(codes(&err, "callback"), ["required"]);
    assert_eq!(codes(&err, "events"), ["invalid_choice"]);
    assert_eq!(mock.webhook_count(), 0);
}

/// One event list that satisfies the schema.
const EV: [&str; 1] = ["purchase.paid"];

#[tokio::test]
async fn limits_are_inclusive_and_count_characters() {
    let mock = start().await;
    let title = "é".repeat(100);
    let callback = format!("https://example.test/{}", "a".repeat(500 - 21));
    assert_eq!(callback.chars().count(), 500);
    let w = create_webhook(
        &mock,
        json!({"title": title, "callback": callback, "all_events": true, "events": EV}),
    )
    .await;
    assert_eq!(w["title"].as_str().unwrap().chars().count(), 100);
}

#[tokio::test]
async fn bodies_that_are_not_json_objects_are_400() {
    let mock = start().await;
    let http = client(&mock);
    let err = create_400(&http, &mock, "{not json").await;
    assert_eq!(codes(&err, "__all__"), ["parse_error"]);
    let err = create_400(&http, &mock, "[1, 2]").await;
    assert_eq!(codes(&err, "__all__"), ["invalid"]);
    let err = create_400(&http, &mock, "\"title\"").await;
    assert_eq!(codes(&err, "__all__"), ["invalid"]);
    // The body is required (the spec says so), even for PATCH.
    let err = create_400(&http, &mock, "").await;
    assert_eq!(codes(&err, "__all__"), ["required"]);
    let w = create_webhook(&mock, webhook_body(CALLBACK, &["purchase.paid"])).await;
    let resp = client(&mock)
        .patch(webhook_url(&mock, &w))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn put_and_patch_validate_like_create() {
    let mock = start().await;
    let http = client(&mock);
    let w = create_webhook(&mock, webhook_body(CALLBACK, &["purchase.paid"])).await;
    let url = webhook_url(&mock, &w);
    let resp = http
        .patch(&url)
        .json(&json!({"title": "x".repeat(101), "events": ["nope"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(codes(&err, "title"), ["max_length"]);
    assert_eq!(codes(&err, "events"), ["invalid_choice"]);
    let resp = http
        .put(&url)
        .json(&json!({"title": "t", "callback": "mailto:a@b.c", "events": EV}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = http.patch(&url).body("nope").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let again: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(again, w);
}

#[tokio::test]
async fn pagination_walks_every_page_in_creation_order() {
    let mock = MockServer::start(MockConfig {
        page_size: 3,
        generate_keys: false,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let http = client(&mock);
    let mut created = Vec::new();
    for i in 0..8 {
        let w = create_webhook(
            &mock,
            json!({"title": format!("hook {i}"), "callback": CALLBACK, "events": EV}),
        )
        .await;
        created.push(w["id"].clone());
    }
    let mut seen = Vec::new();
    let mut url = Some(format!("{}/webhooks/", mock.base_url()));
    let mut pages = Vec::new();
    while let Some(u) = url {
        let resp = http.get(&u).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{u}");
        let page: Value = resp.json().await.unwrap();
        seen.extend(
            page["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["id"].clone()),
        );
        url = page["next"].as_str().map(str::to_owned);
        pages.push(page);
    }
    assert_eq!(seen, created);
    assert_eq!(pages.len(), 3);
    assert_eq!(pages[0]["previous"], Value::Null);
    assert_eq!(
        pages[0]["next"],
        json!(format!("{}/webhooks/?page=2", mock.base_url()))
    );
    assert_eq!(
        pages[1]["previous"],
        json!(format!("{}/webhooks/?page=1", mock.base_url()))
    );
    assert_eq!(
        pages[2]["previous"],
        json!(format!("{}/webhooks/?page=2", mock.base_url()))
    );
    assert_eq!(pages[2]["next"], Value::Null);
    assert_eq!(pages[2]["results"].as_array().unwrap().len(), 2);

    // Past the end, zero, and garbage are 404 (DRF's "Invalid page.").
    for q in ["4", "0", "-1", "abc", "99999999999999999999999"] {
        let resp = http
            .get(format!("{}/webhooks/?page={q}", mock.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "page={q}");
        assert_bodiless_404(resp).await;
    }
}

#[tokio::test]
async fn an_empty_list_is_one_empty_page() {
    let mock = start().await;
    let http = client(&mock);
    let page: Value = http
        .get(format!("{}/webhooks/", mock.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page, json!({"results": [], "next": null, "previous": null}));
    let resp = http
        .get(format!("{}/webhooks/?page=2", mock.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_bodiless_404(resp).await;
}

/// CHIP declares its 404 with no content: no body, no JSON content type.
async fn assert_bodiless_404(resp: reqwest::Response) {
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.headers().get("content-type").is_none());
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn unknown_paths_are_bodiless_404s() {
    let mock = start().await;
    let http = client(&mock);
    for path in ["/webhooks", "/nope/", "/webhooks/x/y/"] {
        let resp = http
            .get(format!("{}{path}", mock.base_url()))
            .send()
            .await
            .unwrap();
        assert_bodiless_404(resp).await;
    }
}

#[tokio::test]
async fn config_is_checked_and_key_never_shown_in_debug() {
    let bad = MockServer::start(MockConfig {
        page_size: 0,
        ..MockConfig::default()
    })
    .await;
    assert!(matches!(
        bad,
        Err(chip_gate_mock::MockError::InvalidConfig(_))
    ));
    let config = MockConfig {
        api_key: "test_secret_do_not_print".into(),
        ..MockConfig::default()
    };
    assert!(!format!("{config:?}").contains("test_secret_do_not_print"));
    let mock = MockServer::start(config).await.unwrap();
    assert!(!format!("{mock:?}").contains("test_secret_do_not_print"));
    assert!(mock.base_url().starts_with("http://127.0.0.1:"));
    assert!(mock.base_url().ends_with("/api/v1"));
    assert_eq!(mock.addr().ip().to_string(), "127.0.0.1");
    // A second mock on the same port fails to bind.
    let taken = MockServer::start(MockConfig {
        port: mock.addr().port(),
        ..MockConfig::default()
    })
    .await;
    assert!(matches!(taken, Err(chip_gate_mock::MockError::Bind { .. })));
}

#[tokio::test]
async fn shutdown_releases_the_port() {
    let mock = start().await;
    let addr = mock.addr();
    mock.shutdown().await;
    let again = MockServer::start(MockConfig {
        port: addr.port(),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    assert_eq!(again.addr(), addr);
}
