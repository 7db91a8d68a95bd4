//! The axum extractor over real HTTP on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{FromRef, State};
use axum::routing::post;
use chip_gate::serve::ServeOptions;
use chip_gate::{Digest, EventName, ObjectKind, VerifiedDelivery, Verifier};
use common::{CHIP_BODY, CHIP_PEM, CHIP_SIGNATURE, RSA2048_PUBLIC};

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
    let key = match delivery.typing_problem() {
        Some(problem) => format!("raw ({problem}), {} bytes", delivery.raw_body().len()),
        None => delivery
            .dedup_key()
            .map(|key| key.to_string())
            .unwrap_or_default(),
    };
    state
        .seen
        .lock()
        .unwrap()
        .push((delivery.event().clone(), delivery.kind(), key));
    "ok"
}

/// Serves the receiver on 127.0.0.1 (a free port) and returns its URL and the handler's log.
async fn serve() -> (String, Seen) {
    serve_with(|verifier| verifier, |router| router).await
}

/// As [`serve`], with the verifier and the router adjusted.
async fn serve_with(
    verifier: impl FnOnce(Verifier) -> Verifier,
    router: impl FnOnce(Router<AppState>) -> Router<AppState>,
) -> (String, Seen) {
    let verifier = verifier(
        Verifier::with_keys([
            chip_gate::VerificationKey::from_pem(CHIP_PEM).unwrap(),
            chip_gate::VerificationKey::from_pem(RSA2048_PUBLIC).unwrap(),
        ])
        .unwrap(),
    );
    let seen: Seen = Arc::default();
    let app = router(Router::new().route("/webhook", post(webhook))).with_state(AppState {
        verifier,
        seen: seen.clone(),
    });
    let address = common::receiver::serve(app, ServeOptions::default()).await;
    (format!("http://{address}/webhook"), seen)
}

async fn post_body(url: &str, body: Vec<u8>, signature: Option<&str>) -> (u16, String) {
    let client = common::receiver::http();
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
    let signer = common::signer();
    let body = common::sample("12-event-Purchase-refunded.json");
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

/// A verified body is CHIP's: refusing it because our types cannot read it would make CHIP retry
/// for 36 hours and then drop it. The handler gets it raw, with the typing problem named.
#[tokio::test]
async fn a_validly_signed_body_our_types_cannot_read_still_reaches_the_handler() {
    let (url, seen) = serve().await;
    let signer = common::signer();
    let bodies: [&[u8]; 4] = [
        b"not json",
        b"[1,2,3]",
        br#"{"id":"x"}"#,
        br#"{"event_type":"purchase.paid","type":"purchase","updated_on":"secret"}"#,
    ];
    for body in bodies {
        let signature = signer.sign(body, Digest::Sha256).unwrap();
        let (status, text) = post_body(&url, body.to_vec(), Some(&signature)).await;
        assert_eq!((status, text.as_str()), (200, "ok"));
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    assert!(
        seen[0].2.starts_with("raw (the body is not valid JSON"),
        "{seen:?}"
    );
    assert!(
        seen[1]
            .2
            .starts_with("raw (the body is JSON but not an object)")
    );
    assert!(
        seen[2]
            .2
            .starts_with("raw (the delivery has no `event_type` field)")
    );
    assert_eq!(seen[3].0, EventName::PurchasePaid);
    assert_eq!(seen[3].1, ObjectKind::Unknown, "kept untyped");
    assert!(seen[3].2.contains("updated_on"), "{}", seen[3].2);
    assert!(!seen[3].2.contains("secret"), "{}", seen[3].2);
}

#[tokio::test]
async fn several_signature_headers_are_refused() {
    let (url, seen) = serve().await;
    let response = common::receiver::http()
        .post(&url)
        .header("X-Signature", CHIP_SIGNATURE.trim())
        .header("X-Signature", "AAECAw==")
        .body(CHIP_BODY.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert!(seen.lock().unwrap().is_empty());
    // The framework-agnostic call refuses them too.
    let mut headers = http::HeaderMap::new();
    headers.append("x-signature", CHIP_SIGNATURE.trim().parse().unwrap());
    headers.append("x-signature", CHIP_SIGNATURE.trim().parse().unwrap());
    let verifier = Verifier::from_pem(CHIP_PEM).unwrap();
    assert_eq!(
        verifier.verify_headers(CHIP_BODY, &headers),
        Err(chip_gate::VerifyError::SeveralSignatures)
    );
}

#[tokio::test]
async fn the_body_cap_holds_even_when_the_router_lifts_its_limit() {
    // An app that disables axum's body limit (for uploads, say) keeps the webhook's own cap.
    let (url, seen) = serve_with(
        |verifier| verifier.with_max_body_bytes(64 * 1024),
        |router| router.layer(axum::extract::DefaultBodyLimit::disable()),
    )
    .await;
    let signer = common::signer();
    let mut big = br#"{"event_type":"purchase.paid","type":"purchase","pad":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 100 * 1024));
    big.extend_from_slice(br#""}"#);
    let signature = signer.sign(&big, Digest::Sha256).unwrap();
    let (status, text) = post_body(&url, big, Some(&signature)).await;
    assert_eq!((status, text.as_str()), (413, "body too large"));
    assert!(seen.lock().unwrap().is_empty());
    // The default cap is 1 MiB.
    assert_eq!(
        Verifier::from_pem(CHIP_PEM).unwrap().max_body_bytes(),
        chip_gate::DEFAULT_MAX_BODY_BYTES
    );
}

#[tokio::test]
async fn a_missing_signature_is_answered_before_the_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (url, seen) = serve().await;
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/webhook")
        .to_owned();
    // Headers announce a 100 MB body, of which only a few bytes are ever sent: a receiver that read
    // the body first would wait for the rest and never answer.
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /webhook HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
                 Content-Length: 100000000\r\n\r\n{{\"event_type\""
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered without waiting for the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..read]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(seen.lock().unwrap().is_empty());
}
