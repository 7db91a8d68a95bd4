//! The generated client against a recording HTTP server on 127.0.0.1: for each of the 7
//! operations, the method, the path (with its trailing slash), the bearer header and the JSON
//! body it sends, and the success it decodes.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chip_gate_api::Client;
use chip_gate_api::types::{EventName, WebhookCreate, WebhookPatch};
use serde_json::{Value, json};

const KEY: &str = "test_secret_key_for_recording";
const ID: &str = "9a0a5e5c-6f4c-4d3e-9f59-2a3c6c0f1b11";

#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Option<Value>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn webhook() -> Value {
    json!({
        "type": "webhook",
        "id": ID,
        "created_on": 1_700_000_000,
        "updated_on": 1_700_000_100,
        "title": "Orders",
        "all_events": false,
        "events": ["purchase.paid", "payment.refunded"],
        "callback": "https://example.com/hooks/chip",
        "public_key": "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"
    })
}

async fn record(
    State(log): State<Log>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let text = |name| {
        headers
            .get(name)
            .map(|v: &header::HeaderValue| v.to_str().unwrap().to_owned())
    };
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        uri: uri.to_string(),
        authorization: text(header::AUTHORIZATION),
        content_type: text(header::CONTENT_TYPE),
        body: (!body.is_empty()).then(|| serde_json::from_slice(&body).unwrap()),
    });
    let path = uri.path();
    let item = format!("/api/v1/webhooks/{ID}/");
    match (method.as_str(), path) {
        ("POST", "/api/v1/webhooks/") => {
            (StatusCode::CREATED, axum::Json(webhook())).into_response()
        }
        ("GET", "/api/v1/webhooks/") => axum::Json(json!({
            "results": [webhook()],
            "next": "http://127.0.0.1/api/v1/webhooks/?page=3",
            "previous": null
        }))
        .into_response(),
        ("GET" | "PUT" | "PATCH", p) if p == item => axum::Json(webhook()).into_response(),
        ("DELETE", p) if p == item => StatusCode::NO_CONTENT.into_response(),
        ("GET", "/api/v1/public_key/") => axum::Json(json!(
            "-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n-----END PUBLIC KEY-----\n"
        ))
        .into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"detail": "Not found."})),
        )
            .into_response(),
    }
}

async fn start() -> (Client, Log) {
    let log: Log = Arc::default();
    let app = axum::Router::new().fallback(record).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {KEY}").parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    (
        Client::from_http(&format!("http://{addr}/api/v1"), http),
        log,
    )
}

fn only(log: &Log) -> Seen {
    let seen = log.lock().unwrap();
    assert_eq!(seen.len(), 1, "exactly one request: {seen:?}");
    seen[0].clone()
}

fn assert_request(seen: &Seen, method: Method, uri: &str, body: Option<Value>) {
    assert_eq!(seen.method, method);
    assert_eq!(seen.uri, uri);
    assert_eq!(
        seen.authorization.as_deref(),
        Some(&*format!("Bearer {KEY}"))
    );
    assert_eq!(seen.body, body);
    if seen.body.is_some() {
        assert_eq!(seen.content_type.as_deref(), Some("application/json"));
    }
}

fn create_body() -> WebhookCreate {
    WebhookCreate::builder()
        .title("Orders")
        .callback("https://example.com/hooks/chip")
        .events(vec![EventName::PurchasePaid, EventName::PaymentRefunded])
        .try_into()
        .unwrap()
}

fn id() -> uuid::Uuid {
    ID.parse().unwrap()
}

#[tokio::test]
async fn create_posts_the_body_and_decodes_201() {
    let (client, log) = start().await;
    let created = client
        .webhooks_create()
        .body(create_body())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.id, id());
    assert_eq!(
        created.event_names(),
        [EventName::PurchasePaid, EventName::PaymentRefunded]
    );
    assert_request(
        &only(&log),
        Method::POST,
        "/api/v1/webhooks/",
        Some(json!({
            "title": "Orders",
            "all_events": false,
            "events": ["purchase.paid", "payment.refunded"],
            "callback": "https://example.com/hooks/chip"
        })),
    );
}

#[tokio::test]
async fn list_gets_a_page_and_decodes_the_links() {
    let (client, log) = start().await;
    let page = client.webhooks_list().page(2).send().await.unwrap();
    assert_eq!(page.results.len(), 1);
    assert_eq!(
        page.next.as_deref(),
        Some("http://127.0.0.1/api/v1/webhooks/?page=3")
    );
    assert_eq!(page.previous, None);
    assert_request(&only(&log), Method::GET, "/api/v1/webhooks/?page=2", None);
}

#[tokio::test]
async fn retrieve_gets_one_webhook() {
    let (client, log) = start().await;
    let hook = client.webhooks_retrieve().id(id()).send().await.unwrap();
    assert_eq!(hook.title, "Orders");
    assert_eq!(hook.updated_on, Some(1_700_000_100));
    assert_request(
        &only(&log),
        Method::GET,
        &format!("/api/v1/webhooks/{ID}/"),
        None,
    );
}

#[tokio::test]
async fn update_puts_the_whole_body() {
    let (client, log) = start().await;
    let hook = client
        .webhooks_update()
        .id(id())
        .body(create_body())
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), 200);
    let seen = only(&log);
    assert_request(
        &seen,
        Method::PUT,
        &format!("/api/v1/webhooks/{ID}/"),
        Some(json!({
            "title": "Orders",
            "all_events": false,
            "events": ["purchase.paid", "payment.refunded"],
            "callback": "https://example.com/hooks/chip"
        })),
    );
}

#[tokio::test]
async fn partial_update_patches_only_the_fields_set() {
    let (client, log) = start().await;
    let patch: WebhookPatch = WebhookPatch::builder()
        .title(Some("Renamed".try_into().unwrap()))
        .try_into()
        .unwrap();
    client
        .webhooks_partial_update()
        .id(id())
        .body(patch)
        .send()
        .await
        .unwrap();
    assert_request(
        &only(&log),
        Method::PATCH,
        &format!("/api/v1/webhooks/{ID}/"),
        Some(json!({"title": "Renamed"})),
    );
}

#[tokio::test]
async fn delete_sends_no_body_and_accepts_204() {
    let (client, log) = start().await;
    let done = client.webhooks_delete().id(id()).send().await.unwrap();
    assert_eq!(done.status(), 204);
    assert_request(
        &only(&log),
        Method::DELETE,
        &format!("/api/v1/webhooks/{ID}/"),
        None,
    );
}

#[tokio::test]
async fn public_key_decodes_the_json_string() {
    let (client, log) = start().await;
    let pem = client.public_key().send().await.unwrap().into_inner();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\nMIIB"));
    assert!(pem.ends_with("-----END PUBLIC KEY-----\n"));
    assert_request(&only(&log), Method::GET, "/api/v1/public_key/", None);
}

#[tokio::test]
async fn an_error_status_comes_back_as_an_error_with_its_body() {
    let (client, _log) = start().await;
    let err = client
        .webhooks_retrieve()
        .id(uuid::Uuid::nil())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(reqwest::StatusCode::NOT_FOUND));
    match err {
        chip_gate_api::Error::UnexpectedResponse(response) => {
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body.get("detail"), Some(&json!("Not found.")));
        }
        other => panic!("expected an error response, got {other:?}"),
    }
}
