//! End to end over loopback: the mock CHIP Gate delivers (with duplicates and reordering) to
//! the relay, the relay forwards to a test app, and the app verifies every request with an
//! independent Standard Webhooks implementation (the `standardwebhooks` crate), failing or
//! timing out some on purpose. Also: bad input at the relay never reaches the app.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chip_gate::{EventName, Verifier};
use chip_gate_inbox::{Backoff, Inbox, WorkerOptions};
use chip_gate_mock::{DeliveryConfig, DeliveryFaults, MockConfig, MockServer};
use chip_gate_relay::{Forwarder, RelayConfig, Secret};

const EVENTS: [&str; 3] = [
    "purchase.created",
    "purchase.paid",
    "purchase.pending_refund",
];
const OBJECTS: usize = 40;

/// What the app saw.
#[derive(Default)]
struct Seen {
    /// Every request that verified: (webhook-id, object id, updated_on, answered 2xx).
    requests: Vec<(String, String, i64, bool)>,
    /// Requests whose Standard Webhooks signature did not verify.
    unverified: usize,
    /// How many times each webhook-id was seen.
    attempts: HashMap<String, usize>,
}

struct App {
    webhook: standardwebhooks::Webhook,
    seen: Mutex<Seen>,
}

/// The app: verifies with the independent library, then fails the first attempt of every
/// fifth message (500), makes the first attempt of every seventh wait past the relay's timeout
/// (then 503), and accepts the rest.
async fn app(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if app.webhook.verify(&body, &headers).is_err() {
        app.seen.lock().unwrap().unverified += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let id = headers["webhook-id"].to_str().unwrap().to_owned();
    // The body is CHIP's, byte for byte: its own X-Signature came along too.
    assert!(headers.contains_key("x-signature"));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let object = json["id"].as_str().unwrap().to_owned();
    let updated_on = json["updated_on"].as_i64().unwrap();
    let number: u64 = id.trim_start_matches("msg_chip_").parse().unwrap();
    let attempt = {
        let mut seen = app.seen.lock().unwrap();
        let attempt = seen.attempts.entry(id.clone()).or_default();
        *attempt += 1;
        *attempt
    };
    let status = if attempt == 1 && number.is_multiple_of(7) {
        tokio::time::sleep(Duration::from_millis(700)).await;
        StatusCode::SERVICE_UNAVAILABLE
    } else if attempt == 1 && number.is_multiple_of(5) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    };
    app.seen
        .lock()
        .unwrap()
        .requests
        .push((id, object, updated_on, status.is_success()));
    status
}

async fn serve_app(secret: &str) -> (SocketAddr, Arc<App>) {
    let state = Arc::new(App {
        webhook: standardwebhooks::Webhook::new(secret).unwrap(),
        seen: Mutex::default(),
    });
    let router = axum::Router::new()
        .route("/hooks/chip", axum::routing::post(app))
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    (address, state)
}

async fn start_mock() -> MockServer {
    MockServer::start(MockConfig {
        delivery: DeliveryConfig {
            max_attempts: 10_000,
            backoff_base: Duration::from_millis(20),
            backoff_cap: Duration::from_millis(200),
            request_timeout: Duration::from_secs(5),
        },
        delivery_faults: DeliveryFaults {
            duplicate_rate: 0.2,
            reorder_rate: 0.1,
            hold_back: Duration::from_millis(300),
            seed: Some(7),
        },
        generate_keys: false,
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Creates the webhook through the mock's API; returns its public key.
async fn subscribe(mock: &MockServer, callback: &str) -> String {
    let created: serde_json::Value = client()
        .post(format!("{}/webhooks/", mock.base_url()))
        .bearer_auth(mock.api_key())
        .json(&serde_json::json!({
            "title": "relay test",
            "callback": callback,
            "events": EVENTS,
        }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    created["public_key"].as_str().unwrap().to_owned()
}

/// A free loopback port, for a relay whose address must be known before it starts (the
/// webhook is created with it, and the relay verifies with that webhook's key).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A relay on SQLite in `dir`, on `port`, forwarding to `app`; returns a stop and its database.
async fn start_relay(
    dir: &std::path::Path,
    port: u16,
    public_key: &str,
    secret: &str,
    app: SocketAddr,
) -> (tokio::sync::oneshot::Sender<()>, String) {
    let url = format!("sqlite://{}", dir.join("relay.db").display());
    let forwarder = Forwarder::new(
        &format!("http://{app}/hooks/chip"),
        Secret::parse(secret).unwrap(),
        Duration::from_millis(300),
    )
    .unwrap();
    let mut config = RelayConfig::new(
        url.clone(),
        Verifier::from_pem_bundle(public_key).unwrap(),
        forwarder,
        SocketAddr::from(([127, 0, 0, 1], port)),
    );
    // A short body deadline, for the slow sender below.
    config.serve =
        chip_gate::serve::ServeOptions::default().body_timeout(Duration::from_millis(500));
    config.worker = WorkerOptions::default()
        .poll_interval(Duration::from_millis(20))
        .backoff(Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(50),
        })
        .concurrency(8);
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(chip_gate_relay::run(
        config,
        move |bound| {
            let _ = bound_tx.send(bound.public);
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    bound_rx.await.unwrap();
    (stop_tx, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chip_to_relay_to_app_verified_in_order_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_, secret) = Secret::generate().unwrap();
    let (app_address, app) = serve_app(&secret).await;
    let mock = start_mock().await;
    let port = free_port();
    let callback = format!("http://127.0.0.1:{port}/chip/webhook");
    let public_key = subscribe(&mock, &callback).await;
    let (stop, url) = start_relay(dir.path(), port, &public_key, &secret, app_address).await;

    // Bad input at the relay never reaches the app.
    let body = br#"{"id":"x","type":"purchase","event_type":"purchase.paid","updated_on":1}"#;
    let refused = [
        client()
            .post(&callback)
            .body(&body[..])
            .send()
            .await
            .unwrap(),
        client()
            .post(&callback)
            .header("x-signature", "AAAA")
            .body(&body[..])
            .send()
            .await
            .unwrap(),
        client()
            .post(&callback)
            .header("x-signature", format!("{}==", "A".repeat(342)))
            .body(&body[..])
            .send()
            .await
            .unwrap(),
    ];
    let statuses: Vec<u16> = refused.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses, [401, 401, 401]);
    // Oversized: refused from its declared length with 413 and the connection closed, which the
    // client may see as the answer or, still writing, as a broken pipe.
    let oversized = client()
        .post(&callback)
        .header("x-signature", format!("{}==", "A".repeat(342)))
        .body(vec![b'{'; 2 << 20])
        .send()
        .await;
    match oversized {
        Ok(response) => assert_eq!(response.status().as_u16(), 413),
        Err(error) => assert!(error.is_request(), "{error}"),
    }
    // A slow sender: a plausible signature, then a body that trickles past the deadline.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let head = format!(
            "POST /chip/webhook HTTP/1.1\r\nhost: relay\r\nx-signature: {}==\r\n\
             content-length: 1000\r\n\r\n{{",
            "A".repeat(342)
        );
        slow.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer));
        read.await.expect("the relay cuts a slow body").unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }

    let objects: Vec<uuid::Uuid> = (0..OBJECTS).map(|_| uuid::Uuid::new_v4()).collect();
    for object in &objects {
        for event in EVENTS {
            mock.trigger(EventName::from(event), Some(*object))
                .await
                .unwrap();
        }
    }

    // Everything stored ends done or stale (an older state that arrived after a newer one).
    let inbox = Inbox::connect(&url).await.unwrap();
    let started = Instant::now();
    mock.wait_idle(Duration::from_secs(60)).await.unwrap();
    loop {
        let status = inbox.status().await.unwrap();
        if status.pending == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not drained: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(()).unwrap();

    let counts = inbox.counts().await.unwrap();
    let seen = app.seen.lock().unwrap();
    assert_eq!(seen.unverified, 0, "every request verified");
    let accepted: Vec<&(String, String, i64, bool)> =
        seen.requests.iter().filter(|r| r.3).collect();
    let distinct: HashSet<&str> = accepted.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        distinct.len(),
        accepted.len(),
        "no webhook-id accepted twice"
    );
    // Per object, accepted in updated_on order.
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (_, object, updated_on, _) in &accepted {
        if let Some(previous) = last.insert(object.as_str(), *updated_on) {
            assert!(
                previous < *updated_on,
                "{object}: {previous} then {updated_on}"
            );
        }
    }
    assert_eq!(counts.received, (OBJECTS * EVENTS.len()) as u64);
    assert_eq!(counts.done + counts.stale, counts.received);
    assert_eq!(
        accepted.len() as u64,
        counts.done,
        "every handled delivery reached the app"
    );
    assert_eq!(counts.dead, 0);
    assert!(counts.duplicates > 0, "the mock sent duplicates");
    assert!(counts.retried > 0, "the app's failures were retried");
}
