//! The axum extractor over real HTTP on 127.0.0.1.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{FromRef, State};
use axum::routing::post;
use chip_gate::testing::TestSigner;
use chip_gate::{Digest, EventName, ObjectKind, VerifiedDelivery, Verifier};

const CHIP_PEM: &str = include_str!("fixtures/chip-collect/signed-vector/public_key.pem");
const CHIP_BODY: &[u8] = include_bytes!("fixtures/chip-collect/signed-vector/body.json");
const CHIP_SIGNATURE: &str = include_str!("fixtures/chip-collect/signed-vector/x-signature.txt");
const PRIVATE_KEY: &str = include_str!("fixtures/kat/rsa2048-private-pkcs8.pem");
const PUBLIC_KEY: &str = include_str!("fixtures/kat/rsa2048-public-spki.pem");

type Seen = Arc<Mutex<Vec<(EventName, ObjectKind, String)>>>;

#[derive(Clone)]
struct AppState {
    verifier: Verifier,
    seen: Seen,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Verifier {
        state.verifier.clone()
    }
}

async fn webhook(
    State(state): State<AppState>,
    VerifiedDelivery(delivery): VerifiedDelivery,
) -> &'static str {
    let key = delivery
        .dedup_key()
        .map(|key| key.to_string())
        .unwrap_or_default();
    state
        .seen
        .lock()
        .unwrap()
        .push((delivery.event().clone(), delivery.kind(), key));
    "ok"
}

/// Serves the receiver on 127.0.0.1 (a free port) and returns its URL and the handler's log.
async fn serve() -> (String, Seen) {
    let verifier = Verifier::with_keys([
        chip_gate::VerificationKey::from_pem(CHIP_PEM).unwrap(),
        chip_gate::VerificationKey::from_pem(PUBLIC_KEY).unwrap(),
    ])
    .unwrap();
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/webhook", post(webhook))
        .with_state(AppState {
            verifier,
            seen: seen.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}/webhook"), seen)
}

async fn post_body(url: &str, body: Vec<u8>, signature: Option<&str>) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("X-Signature", signature.trim());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn a_genuine_chip_delivery_reaches_the_handler_typed() {
    let (url, seen) = serve().await;
    let (status, text) = post_body(&url, CHIP_BODY.to_vec(), Some(CHIP_SIGNATURE)).await;
    assert_eq!((status, text.as_str()), (200, "ok"));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [(
            EventName::PurchaseCreated,
            ObjectKind::Purchase,
            ":purchase.created:1642056635".to_owned()
        )]
    );
}

#[tokio::test]
async fn a_delivery_signed_by_the_second_key_is_accepted() {
    let (url, seen) = serve().await;
    let signer = TestSigner::from_pem(PRIVATE_KEY).unwrap();
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/chip-collect/deliveries/12-event-Purchase-refunded.json"
    ))
    .unwrap();
    let signature = signer.sign(&body, Digest::Sha256).unwrap();
    let (status, _) = post_body(&url, body, Some(&signature)).await;
    assert_eq!(status, 200);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (&seen[0].0, seen[0].1),
        (&EventName::PaymentRefunded, ObjectKind::Payment)
    );
}

#[tokio::test]
async fn tampered_unsigned_and_garbled_signatures_get_401_without_detail() {
    let (url, seen) = serve().await;
    let mut tampered = CHIP_BODY.to_vec();
    let position = tampered
        .windows(4)
        .position(|window| window == b"\"EUR")
        .unwrap();
    tampered[position + 1..position + 4].copy_from_slice(b"MYR");
    let cases = [
        (tampered, Some(CHIP_SIGNATURE)),
        (CHIP_BODY.to_vec(), None),
        (CHIP_BODY.to_vec(), Some("%%%not-base64%%%")),
        (CHIP_BODY.to_vec(), Some("AAECAw==")),
    ];
    for (body, signature) in cases {
        let (status, text) = post_body(&url, body, signature).await;
        assert_eq!((status, text.as_str()), (401, "invalid signature"));
    }
    assert!(seen.lock().unwrap().is_empty(), "the handler must not run");
}

#[tokio::test]
async fn a_validly_signed_malformed_body_gets_400_without_detail() {
    let (url, seen) = serve().await;
    let signer = TestSigner::from_pem(PRIVATE_KEY).unwrap();
    for body in [
        &b"not json"[..],
        b"[1,2,3]",
        br#"{"id":"x"}"#,
        br#"{"event_type":"purchase.paid","type":"purchase","updated_on":"secret"}"#,
    ] {
        let signature = signer.sign(body, Digest::Sha256).unwrap();
        let (status, text) = post_body(&url, body.to_vec(), Some(&signature)).await;
        assert_eq!((status, text.as_str()), (400, "malformed delivery"));
    }
    assert!(seen.lock().unwrap().is_empty(), "the handler must not run");
}
