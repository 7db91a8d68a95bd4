//! `chip listen` (served like a production receiver, with `chip_gate::serve`) under attack by
//! callers without the key: its resident memory stays bounded and a signed delivery is still
//! answered. The receiver runs as its own process, so its memory is its own.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{fixture, listen, mock, vector_body, vector_signature};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resident memory of a process, in bytes (Linux `/proc`).
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Reads a response's status code from a raw HTTP/1.1 connection.
async fn status(stream: &mut TcpStream) -> Option<u16> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 512];
    while !buffer.windows(2).any(|w| w == b"\r\n") {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buffer)
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_bodies_cannot_grow_the_receiver_or_starve_a_delivery() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("SKIPPED: no /proc to read resident memory from");
        return;
    }
    let mock = mock().await;
    let key = fixture("public_key.pem");
    let mut listening = listen(&mock, &["--key", key.to_str().unwrap()]).await;
    let pid = listening.child.id();
    let addr = listening
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let before = resident_bytes(pid).unwrap();

    // 300 callers, each with a signature of the right shape (so its body is read), declaring
    // 1 MiB and sending all of it but the last bytes, then holding the connection open.
    let forged = base64::engine::general_purpose::STANDARD.encode([7u8; 256]);
    let body = vec![b' '; 1024 * 1024 - 8];
    let mut attackers = Vec::new();
    let mut peak = before;
    for n in 0..300 {
        let Ok(mut stream) = TcpStream::connect(&addr).await else {
            continue;
        };
        let head = format!(
            "POST /chip HTTP/1.1\r\nhost: x\r\nx-signature: {forged}\r\n\
             content-length: 1048576\r\n\r\n"
        );
        if stream.write_all(head.as_bytes()).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_millis(50), stream.write_all(&body)).await;
        }
        attackers.push(stream);
        if n % 25 == 0 {
            peak = peak.max(resident_bytes(pid).unwrap_or(0));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    peak = peak.max(resident_bytes(pid).unwrap_or(0));

    // A real delivery (CHIP's signed vector) is still answered, and at once.
    let signature = vector_signature();
    let delivery = vector_body();
    let started = Instant::now();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /chip HTTP/1.1\r\nhost: x\r\nx-signature: {}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        signature,
        delivery.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&delivery).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), status(&mut stream))
        .await
        .expect("the signed delivery was starved");
    assert_eq!(answer, Some(200));
    let took = started.elapsed();
    peak = peak.max(resident_bytes(pid).unwrap_or(0));

    let grown = peak.saturating_sub(before);
    eprintln!(
        "chip listen: {} MiB resident before, {} MiB at the peak with 300 half-sent 1 MiB bodies \
         (+{} MiB); the signed delivery was answered in {took:?}",
        before >> 20,
        peak >> 20,
        grown >> 20
    );
    // Documented bound: the body budget (32 MiB) plus 512 connections' buffers (about 12 MiB);
    // unbounded, 300 bodies of 1 MiB would be about 300 MiB.
    assert!(
        grown < 64 * 1024 * 1024,
        "chip listen grew by {} MiB under the attack",
        grown >> 20
    );
    drop(attackers);
    let _ = listening.child.kill();
    let _ = listening.child.wait();
}
