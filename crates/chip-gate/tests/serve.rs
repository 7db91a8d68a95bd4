//! `chip_gate::serve` under attack, over real TCP on 127.0.0.1: callers without the signing key
//! trickle headers and bodies, hold bodies half-sent, send bodies with signatures no key can
//! produce; a correctly signed delivery sent meanwhile is still answered.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::post;
use chip_gate::serve::{ServeOptions, serve_with_shutdown};
use chip_gate::testing::TestSigner;
use chip_gate::{Digest, VerifiedDelivery, Verifier};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BODY: &[u8] = br#"{"id":"4f1c2a80-2b1e-4d3a-9a55-0c1f6b2e7d10","type":"purchase","event_type":"purchase.paid","status":"paid","updated_on":1700000000}"#;

/// How long any one answer may take before the test calls it starved (generous for a busy
/// 2-core machine; a starved request would wait for the attack to end, far longer).
const PATIENCE: Duration = Duration::from_secs(5);

struct Server {
    addr: SocketAddr,
    handled: Arc<AtomicUsize>,
    signer: TestSigner,
}

/// Serves a receiver with the `VerifiedDelivery` extractor through `serve`.
async fn start(options: ServeOptions) -> Server {
    let signer = common::signer();
    let verifier = Verifier::new(signer.verification_key().unwrap());
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&handled);
    let app = Router::new()
        .route(
            "/chip",
            post(
                move |ConnectInfo(peer): ConnectInfo<SocketAddr>,
                      VerifiedDelivery(_delivery): VerifiedDelivery| {
                    let counter = Arc::clone(&counter);
                    async move {
                        assert!(peer.ip().is_loopback());
                        counter.fetch_add(1, Ordering::SeqCst);
                        "ok"
                    }
                },
            ),
        )
        .with_state(verifier);
    let addr = common::receiver::serve(app, options).await;
    Server {
        addr,
        handled,
        signer,
    }
}

impl Server {
    /// A correctly signed delivery; its status and how long the answer took.
    async fn deliver(&self) -> (u16, Duration) {
        let signature = self.signer.sign(BODY, Digest::Sha256).unwrap();
        let started = Instant::now();
        let status = tokio::time::timeout(PATIENCE, send(self.addr, &signature, BODY))
            .await
            .expect("a signed delivery was starved by the attack");
        (status, started.elapsed())
    }
}

/// Sends one request on a fresh connection and returns the response's status.
async fn send(addr: SocketAddr, signature: &str, body: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /chip HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         x-signature: {signature}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    read_status(&mut stream).await.unwrap()
}

/// Reads a response's status line; `None` when the server closed the connection first.
async fn read_status(stream: &mut TcpStream) -> Option<u16> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(line_end) = buffer.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buffer[..line_end]).into_owned();
            return line.split(' ').nth(1).and_then(|code| code.parse().ok());
        }
    }
}

/// A signature of the right shape (base64 of 256 bytes, as an RSA-2048 key produces) that no
/// key made: it passes the header check, so its body is read before it fails.
fn plausible_signature() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode([0x5a_u8; 256])
}

/// Whether the server has closed `stream` (reads EOF or an error within `wait`).
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 512];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut byte)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue, // a response (e.g. 408) before the close
        }
    }
}

#[tokio::test]
async fn a_signature_no_key_can_produce_is_refused_before_the_body_is_sent() {
    let server = start(ServeOptions::default()).await;
    // 1 MiB declared, nothing sent: the answer comes anyway, so the body was never awaited.
    for signature in ["AAAA", "not base64 at all!", &"QUJD".repeat(100)] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "POST /chip HTTP/1.1\r\nhost: x\r\nx-signature: {signature}\r\n\
             content-length: 1048576\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let status = tokio::time::timeout(PATIENCE, read_status(&mut stream))
            .await
            .expect("the server waited for the body of a request it could refuse at once");
        assert_eq!(status, Some(401), "signature {signature:?}");
    }
    assert_eq!(server.handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn slow_headers_cannot_crowd_out_a_delivery() {
    // Few connections allowed and a long header timeout: only closing the oldest idle
    // connections makes room.
    let server = start(
        ServeOptions::default()
            .max_connections(40)
            .header_timeout(Duration::from_secs(60)),
    )
    .await;
    let mut attackers = Vec::new();
    for _ in 0..120 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"POST /chip HTTP/1.1\r\nhost: x\r\nx-sig")
            .await
            .unwrap();
        attackers.push(stream);
    }
    for _ in 0..5 {
        let (status, took) = server.deliver().await;
        assert_eq!(status, 200);
        eprintln!("signed delivery answered in {took:?} with 120 slow connections open");
    }
    // The oldest attackers were closed to make room.
    let mut closed = 0;
    for stream in attackers.iter_mut().take(40) {
        if closed_within(stream, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert!(
        closed >= 30,
        "only {closed} of the 40 oldest slow connections were closed"
    );
    assert_eq!(server.handled.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_header_timeout() {
    let server = start(ServeOptions::default().header_timeout(Duration::from_millis(300))).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(b"POST /chip HTTP/1.1\r\n").await.unwrap();
    assert!(closed_within(&mut silent, PATIENCE).await);
    assert!(closed_within(&mut partial, PATIENCE).await);
}

#[tokio::test]
async fn a_body_trickled_past_the_deadline_is_cut() {
    let server = start(ServeOptions::default().body_timeout(Duration::from_millis(500))).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /chip HTTP/1.1\r\nhost: x\r\nx-signature: {}\r\ncontent-length: 1000\r\n\r\n",
        plausible_signature()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // One byte every 100 ms, each well within any idle timeout, until the server answers.
    let status = tokio::time::timeout(PATIENCE, async {
        loop {
            let _ = stream.write_all(b"x").await;
            let mut answer = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut answer)).await {
                Ok(Ok(n)) if n > 0 => return String::from_utf8_lossy(&answer[..n]).into_owned(),
                Ok(_) => return String::new(),
                Err(_) => {}
            }
        }
    })
    .await
    .expect("the trickled body was read past its deadline");
    assert!(status.starts_with("HTTP/1.1 408"), "answer: {status:?}");
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn half_sent_bodies_cannot_exhaust_the_body_budget() {
    // Room for four 1 MiB bodies at once; twenty callers each declare 1 MiB, send all but the
    // last bytes and stall.
    let server = start(
        ServeOptions::default()
            .body_budget(4 * 1024 * 1024)
            .body_timeout(Duration::from_secs(60)),
    )
    .await;
    let signature = plausible_signature();
    let chunk = vec![b' '; 1024 * 1024 - 16];
    let mut attackers = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "POST /chip HTTP/1.1\r\nhost: x\r\nx-signature: {signature}\r\n\
             content-length: 1048576\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        // The server may stop reading (or close) a connection it has no room for.
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.write_all(&chunk)).await;
        attackers.push(stream);
    }
    for _ in 0..5 {
        let (status, took) = server.deliver().await;
        assert_eq!(status, 200);
        eprintln!("signed delivery answered in {took:?} with 20 half-sent 1 MiB bodies");
    }
    assert_eq!(server.handled.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_declared_or_chunked_body_past_the_cap_is_refused() {
    let server = start(ServeOptions::default().max_body_bytes(4096)).await;
    let signature = server.signer.sign(BODY, Digest::Sha256).unwrap();
    // Declared too large: answered without sending it.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /chip HTTP/1.1\r\nhost: x\r\nx-signature: {signature}\r\ncontent-length: 5000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let status = tokio::time::timeout(PATIENCE, read_status(&mut stream))
        .await
        .unwrap();
    assert_eq!(status, Some(413));
    // Chunked, growing past the cap.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /chip HTTP/1.1\r\nhost: x\r\nx-signature: {signature}\r\n\
         transfer-encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let status = tokio::time::timeout(PATIENCE, async {
        for _ in 0..10 {
            let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
            if stream.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        read_status(&mut stream).await
    })
    .await
    .unwrap();
    assert_eq!(status, Some(413));
    // A delivery within the cap still goes through.
    assert_eq!(server.deliver().await.0, 200);
}

#[tokio::test]
async fn shutdown_lets_a_request_being_answered_finish() {
    let signer = common::signer();
    let verifier = Verifier::new(signer.verification_key().unwrap());
    let app = Router::new()
        .route(
            "/chip",
            post(|VerifiedDelivery(_d): VerifiedDelivery| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "ok"
            }),
        )
        .with_state(verifier);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_with_shutdown(
        listener,
        app,
        ServeOptions::default(),
        async move {
            let _ = stopped.await;
        },
    ));
    let signature = signer.sign(BODY, Digest::Sha256).unwrap();
    let in_flight = tokio::spawn(async move { send(addr, &signature, BODY).await });
    let mut idle = TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    stop.send(()).unwrap();
    assert_eq!(
        in_flight.await.unwrap(),
        200,
        "the request in flight was cut"
    );
    assert!(closed_within(&mut idle, PATIENCE).await);
    tokio::time::timeout(PATIENCE, server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting after shutdown"
    );
}
