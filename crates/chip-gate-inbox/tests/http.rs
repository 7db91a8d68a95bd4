//! The axum router over real HTTP on loopback: refusals never stored, acknowledgements only
//! after the commit, the in-process worker woken by new deliveries.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chip_gate_inbox::{Inbox, ListFilter, StoredDelivery, WorkerOptions};
use common::*;

async fn serve(inbox: &Inbox, max_body: usize) -> String {
    let intake = inbox
        .intake(verifier().with_max_body_bytes(max_body))
        .unwrap();
    let app: axum::Router = intake.router("/chip/webhook");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(chip_gate::serve::serve(
        listener,
        app,
        chip_gate::serve::ServeOptions::default(),
    ));
    format!("http://127.0.0.1:{port}/chip/webhook")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn post(url: &str, signature: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let mut request = client().post(url).body(body);
    if let Some(signature) = signature {
        request = request.header("x-signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

async fn over_http(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let endpoint = serve(&inbox, 2048).await;
    let body = purchase_body("h-1", "purchase.paid", 7);
    let signature = signer().sign(&body, chip_gate::Digest::Sha256).unwrap();
    let wrong = other_signer()
        .sign(&body, chip_gate::Digest::Sha256)
        .unwrap();

    assert_eq!(
        post(&endpoint, None, body.to_vec()).await,
        (401, "invalid signature".into())
    );
    assert_eq!(post(&endpoint, Some(&wrong), body.to_vec()).await.0, 401);
    assert_eq!(
        post(&endpoint, Some("AAAA"), b"{not json".to_vec()).await.0,
        401
    );
    let big = vec![b'x'; 4096];
    let big_signature = signer().sign(&big, chip_gate::Digest::Sha256).unwrap();
    assert_eq!(
        post(&endpoint, Some(&big_signature), big).await,
        (413, "body too large".into())
    );
    assert!(
        inbox.list(&ListFilter::new()).await.unwrap().is_empty(),
        "refusals are never stored"
    );

    assert_eq!(
        post(&endpoint, Some(&signature), body.to_vec()).await,
        (200, "stored".into())
    );
    assert_eq!(
        post(&endpoint, Some(&signature), body.to_vec()).await,
        (200, "duplicate".into())
    );
    let counts = inbox.counts().await.unwrap();
    assert_eq!((counts.received, counts.duplicates), (1, 1));

    // The database goes away: 503, so that CHIP delivers again.
    inbox.close().await;
    let other = purchase_body("h-2", "purchase.paid", 7);
    let other_signature = signer().sign(&other, chip_gate::Digest::Sha256).unwrap();
    assert_eq!(
        post(&endpoint, Some(&other_signature), other.to_vec())
            .await
            .0,
        503
    );
}
on_both!(over_http);

async fn a_new_delivery_wakes_the_worker(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let endpoint = serve(&inbox, 1 << 20).await;
    let seen = Arc::new(Mutex::new(None));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = inbox.worker(WorkerOptions::default().poll_interval(Duration::from_secs(30)));
    let record = Arc::clone(&seen);
    let running = tokio::spawn(async move {
        worker
            .run_until(
                move |delivery: StoredDelivery| {
                    let record = Arc::clone(&record);
                    async move {
                        *record.lock().unwrap() = Some((Instant::now(), delivery.id()));
                        Ok::<(), String>(())
                    }
                },
                async move {
                    let _ = stopped.await;
                },
            )
            .await;
    });
    // Let the worker go idle (its next poll is 30 s away), then deliver.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = purchase_body("h-3", "purchase.paid", 1);
    let signature = signer().sign(&body, chip_gate::Digest::Sha256).unwrap();
    let sent = Instant::now();
    assert_eq!(
        post(&endpoint, Some(&signature), body.to_vec()).await.0,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let handled_at = loop {
        if let Some((at, _)) = *seen.lock().unwrap() {
            break at;
        }
        assert!(Instant::now() < deadline, "the worker was not woken");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(handled_at.duration_since(sent) < Duration::from_secs(2));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the worker stops on shutdown")
        .unwrap();
}
on_both!(a_new_delivery_wakes_the_worker);

/// A signature no configured key can produce (`AAAA`, or base64 of the wrong length) is refused
/// on its header: the 1 MiB body it declares is never awaited, never held, never stored.
async fn a_hopeless_signature_is_refused_before_its_body(url: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let inbox = Inbox::connect(&url).await.unwrap();
    let endpoint = serve(&inbox, 1024 * 1024).await;
    let addr = endpoint
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    for signature in ["AAAA", "QUJDRA==", "not base64!"] {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /chip/webhook HTTP/1.1\r\nhost: x\r\nx-signature: {signature}\r\n\
             content-length: 1048576\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
            .await
            .expect("the intake waited for the body of a request it could refuse at once")
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 401"), "{signature}: {answer}");
    }
    assert!(inbox.list(&ListFilter::new()).await.unwrap().is_empty());
}
on_both!(a_hopeless_signature_is_refused_before_its_body);

/// The intake as deployed (`chip_gate::serve` with a small connection cap, to stay far below
/// any descriptor limit), under callers without the key: 150 connections trickling a request
/// head and 20 holding half-sent bodies of 1 MiB with a signature of the right shape. Signed
/// deliveries sent meanwhile are stored and answered `200`.
async fn a_signed_delivery_is_stored_while_the_intake_is_attacked(url: String) {
    use tokio::io::AsyncWriteExt;

    let inbox = Inbox::connect(&url).await.unwrap();
    let app: axum::Router = inbox.intake(verifier()).unwrap().router("/chip/webhook");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(chip_gate::serve::serve(
        listener,
        app,
        chip_gate::serve::ServeOptions::default()
            .max_connections(100)
            .body_budget(4 * 1024 * 1024)
            .header_timeout(Duration::from_secs(60))
            .body_timeout(Duration::from_secs(60)),
    ));
    let mut attackers = Vec::new();
    for _ in 0..150 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"POST /chip/webhook HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        attackers.push(stream);
    }
    let shaped = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode([9u8; 256])
    };
    let half = vec![b' '; 1024 * 1024 - 64];
    for _ in 0..20 {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /chip/webhook HTTP/1.1\r\nhost: x\r\nx-signature: {shaped}\r\n\
             content-length: 1048576\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(100), stream.write_all(&half)).await;
        attackers.push(stream);
    }
    let endpoint = format!("http://{addr}/chip/webhook");
    for n in 0..5 {
        let body = purchase_body(&format!("under-attack-{n}"), "purchase.paid", 7);
        let signature = signer().sign(&body, chip_gate::Digest::Sha256).unwrap();
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            post(&endpoint, Some(&signature), body.to_vec()),
        )
        .await
        .expect("a signed delivery was starved by the attack");
        assert_eq!(answer, (200, "stored".into()));
    }
    assert_eq!(inbox.counts().await.unwrap().received, 5);
    drop(attackers);
}
on_both!(a_signed_delivery_is_stored_while_the_intake_is_attacked);
