//! Helpers shared by the mock's integration tests: a started mock, an authorised HTTP client, a
//! webhook receiver on 127.0.0.1 that records what it gets and answers from a script, any axum
//! app served on 127.0.0.1 (one that stalls deliveries among them), and the clock.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chip_gate_mock::{DeliveryConfig, MockConfig, MockServer};
use serde_json::{Value, json};

/// A config with fast retries (3 attempts, 10 ms then 20 ms) for tests.
pub fn fast_config() -> MockConfig {
    MockConfig {
        delivery: DeliveryConfig {
            max_attempts: 3,
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(50),
            request_timeout: Duration::from_secs(5),
        },
        ..MockConfig::default()
    }
}

pub async fn start() -> MockServer {
    MockServer::start(fast_config()).await.unwrap()
}

/// A reqwest client that sends the mock's key on every request.
pub fn client(mock: &MockServer) -> reqwest::Client {
    client_with_key(mock.api_key())
}

pub fn client_with_key(key: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .no_proxy()
        .build()
        .unwrap()
}

/// Creates a webhook through the API and returns its JSON.
pub async fn create_webhook(mock: &MockServer, body: Value) -> Value {
    let resp = client(mock)
        .post(format!("{}/webhooks/", mock.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "create failed");
    resp.json().await.unwrap()
}

/// The URL of one webhook (`{base}/webhooks/{id}/`), from the webhook JSON the API returned.
pub fn webhook_url(mock: &MockServer, webhook: &Value) -> String {
    format!(
        "{}/webhooks/{}/",
        mock.base_url(),
        webhook["id"].as_str().unwrap()
    )
}

pub fn webhook_body(callback: &str, events: &[&str]) -> Value {
    json!({ "title": "test hook", "callback": callback, "events": events })
}

/// One delivery as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Received {
    pub signature: Option<String>,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub answered: u16,
}

#[derive(Clone, Default)]
struct ReceiverState {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    tx: Option<tokio::sync::mpsc::UnboundedSender<()>>,
}

/// A webhook receiver on 127.0.0.1: answers the scripted statuses in order, then 200.
pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Received>>>,
    rx: tokio::sync::mpsc::UnboundedReceiver<()>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(script: &[u16]) -> Receiver {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let state = ReceiverState {
            got: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            tx: Some(tx),
        };
        let got = state.got.clone();
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state);
        let (addr, task) = serve(app).await;
        Receiver {
            addr,
            got,
            rx,
            _task: task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until at least `n` deliveries arrived (fails the test after 10 s).
    pub async fn wait_for(&mut self, n: usize) -> Vec<Received> {
        tokio::time::timeout(Duration::from_secs(10), async {
            while self.got.lock().unwrap().len() < n {
                self.rx.recv().await.unwrap();
            }
        })
        .await
        .expect("receiver timed out");
        self.received()
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let answer = state.script.lock().unwrap().pop_front().unwrap_or(200);
    state.got.lock().unwrap().push(Received {
        signature: headers
            .get("x-signature")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        content_type: headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
        answered: answer,
    });
    if let Some(tx) = &state.tx {
        let _ = tx.send(());
    }
    StatusCode::from_u16(answer).unwrap()
}

/// Serves `app` with `axum::serve` on 127.0.0.1 (a free port); returns its address and the
/// server's task.
pub async fn serve(app: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

/// Serves `app` on 127.0.0.1 and returns its `/hook` URL.
pub async fn receiver(app: Router) -> String {
    let (addr, _task) = serve(app).await;
    format!("http://{addr}/hook")
}

/// A receiver that holds every delivery until `release` turns true (then answers 200), and calls
/// `arrived` with the body of each one as it arrives; returns its `/hook` URL.
pub async fn stalling_receiver(
    release: tokio::sync::watch::Receiver<bool>,
    arrived: impl Fn(Bytes) + Clone + Send + Sync + 'static,
) -> String {
    receiver(Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let mut release = release.clone();
            let arrived = arrived.clone();
            async move {
                arrived(body);
                let _ = release.wait_for(|go| *go).await;
                "ok"
            }
        }),
    ))
    .await
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// Verifies a CHIP signature with aws-lc-rs directly: base64 RSA PKCS#1 v1.5 SHA-256 over `body`,
/// with the SPKI PEM `public_key`.
pub fn verify(public_key_pem: &str, body: &[u8], signature_b64: &str) -> bool {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let b64: String = public_key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD.decode(b64).unwrap();
    let Ok(sig) = STANDARD.decode(signature_b64) else {
        return false;
    };
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        der,
    )
    .verify(body, &sig)
    .is_ok()
}
