//! `chip listen`: only verified deliveries count, junk makes it exit 1, bodies and headers are
//! checked before they are trusted, deliveries can be saved and verified again with `chip verify`,
//! and Ctrl-C or SIGTERM stops it at once.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{chip, fixture, http, listen, mock, vector_body, vector_signature};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends a raw HTTP/1.1 request and returns the status code of the answer.
async fn raw_post(url: &str, head: &str, body: &[u8]) -> u16 {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("POST / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{head}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    // The listener may answer and close before reading everything: that is the point.
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn only_verified_deliveries_count_and_junk_makes_the_exit_code_1() {
    let mock = mock().await;
    let key = fixture("public_key.pem");
    let mut listening = listen(&mock, &["--key", key.to_str().unwrap(), "--max", "1"]).await;
    let body = vector_body();
    let signature = vector_signature();
    let signature = signature.as_str();
    let http = http();

    // No signature: refused before the body is read.
    let answer = http
        .post(&listening.url)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(
        listening.line().await,
        "-  -  -  invalid: no X-Signature header"
    );

    // Two X-Signature headers, both the valid one: refused, never "take the first".
    let answer = http
        .post(&listening.url)
        .header("X-Signature", signature)
        .header("X-Signature", signature)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert_eq!(
        listening.line().await,
        "-  -  -  invalid: several X-Signature headers"
    );

    // Over 1 MiB, declared up front or sent chunked: 413.
    let huge = vec![b' '; 1024 * 1024 + 1];
    let status = raw_post(
        &listening.url,
        &format!(
            "X-Signature: {signature}\r\nContent-Length: {}\r\n",
            huge.len()
        ),
        &huge,
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(
        listening.line().await,
        "-  -  -  rejected: body larger than 1 MiB"
    );
    let mut chunked = Vec::new();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("{:x}\r\n", 512 * 1024).as_bytes());
        chunked.extend_from_slice(&vec![b' '; 512 * 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let status = raw_post(
        &listening.url,
        &format!("X-Signature: {signature}\r\nTransfer-Encoding: chunked\r\n"),
        &chunked,
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(
        listening.line().await,
        "-  -  -  rejected: body larger than 1 MiB"
    );

    // A wrong signature.
    let answer = http
        .post(&listening.url)
        .header("X-Signature", "AAAA")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert!(listening.line().await.starts_with("-  -  -  invalid: "));

    // Five pieces of junk and the listener is still there; one verified delivery ends it (--max 1).
    let answer = http
        .post(&listening.url)
        .header("X-Signature", signature)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let line = listening.line().await;
    assert!(line.ends_with("  valid"), "{line}");
    let out = listening.finish().await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert_eq!(out.stderr, "error: 5 of 6 deliveries failed verification\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_run_exits_0() {
    let mock = mock().await;
    let id = common::create(&mock, "http://127.0.0.1:9/").await;
    let mut listening = listen(&mock, &["--webhook", &id, "--max", "1"]).await;
    chip(
        &mock,
        &["webhooks", "patch", &id, "--callback", &listening.url],
    )
    .await
    .ok();
    chip(&mock, &["trigger", "purchase.paid"]).await.ok();
    assert!(listening.line().await.ends_with("paid  valid"));
    let out = listening.finish().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stderr, "");
}

#[tokio::test(flavor = "multi_thread")]
async fn saved_deliveries_verify_again_with_chip_verify() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let save = dir.path().join("deliveries");
    let id = common::create(&mock, "http://127.0.0.1:9/").await;
    let mut listening = listen(
        &mock,
        &[
            "--webhook",
            &id,
            "--max",
            "2",
            "--save",
            save.to_str().unwrap(),
        ],
    )
    .await;
    chip(
        &mock,
        &["webhooks", "patch", &id, "--callback", &listening.url],
    )
    .await
    .ok();
    chip(&mock, &["trigger", "purchase.paid"]).await.ok();
    let line = listening.line().await;
    let stem = save.join("0001-purchase.paid");
    assert!(
        line.ends_with(&format!("valid  saved {}.*", stem.display())),
        "{line}"
    );
    // A signature no key can produce is refused before its body is read: nothing to save.
    let http = http();
    let refused = http
        .post(&listening.url)
        .header("X-Signature", "AAAA")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let line = listening.line().await;
    assert!(
        line.contains("invalid: the signature is 3 bytes long"),
        "{line}"
    );
    assert!(!line.contains("saved"), "{line}");
    // A forged delivery of the right shape is read, and saved as invalid; a second trigger ends
    // the listener.
    let forged = base64::engine::general_purpose::STANDARD.encode([7u8; 256]);
    http.post(&listening.url)
        .header("X-Signature", forged)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert!(listening.line().await.contains("saved"));
    chip(&mock, &["trigger", "purchase.paid"]).await.ok();
    listening.line().await;
    assert_eq!(listening.finish().await.code, Some(1));

    let mut names: Vec<String> = std::fs::read_dir(&save)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "0001-purchase.paid.body.json",
            "0001-purchase.paid.headers",
            "0001-purchase.paid.sig",
            "0002-invalid.body.json",
            "0002-invalid.headers",
            "0002-invalid.sig",
            "0003-purchase.paid.body.json",
            "0003-purchase.paid.headers",
            "0003-purchase.paid.sig",
        ]
    );
    let headers = std::fs::read_to_string(save.join("0001-purchase.paid.headers")).unwrap();
    let sig = std::fs::read_to_string(save.join("0001-purchase.paid.sig")).unwrap();
    assert!(
        headers.contains(&format!("x-signature: {sig}\n")),
        "{headers}"
    );

    // The saved files are what `chip verify` needs, with the webhook's key.
    let key = dir.path().join("key.pem");
    let pem = chip(&mock, &["webhooks", "get", &id, "--public-key"]).await;
    std::fs::write(&key, pem.ok()).unwrap();
    let body = save.join("0001-purchase.paid.body.json");
    let sig_file = save.join("0001-purchase.paid.sig");
    let (key, body, sig_file) = (
        key.to_str().unwrap(),
        body.to_str().unwrap(),
        sig_file.to_str().unwrap(),
    );
    let out = chip(
        &mock,
        &["verify", "--key", key, "--signature", sig.trim(), body],
    )
    .await;
    assert_eq!(out.ok(), "valid\n");
    let out = chip(
        &mock,
        &["verify", "--key", key, "--signature-file", sig_file, body],
    )
    .await;
    assert_eq!(out.ok(), "valid\n");
    let invalid = save.join("0002-invalid.body.json");
    let out = chip(
        &mock,
        &[
            "verify",
            "--key",
            key,
            "--signature-file",
            save.join("0002-invalid.sig").to_str().unwrap(),
            invalid.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.code, Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn chip_verify_caps_what_it_reads() {
    let mock = mock().await;
    let key = fixture("public_key.pem");
    let body = fixture("body.json");
    let key = key.to_str().unwrap();
    for (args, says) in [
        (
            vec![
                "verify",
                "--key",
                "/dev/zero",
                "--signature",
                "AAAA",
                body.to_str().unwrap(),
            ],
            "the key file /dev/zero is larger than 64 KiB",
        ),
        (
            vec!["verify", "--key", key, "--signature", "AAAA", "/dev/zero"],
            "the body file /dev/zero is larger than 1 MiB",
        ),
        (
            vec![
                "verify",
                "--key",
                key,
                "--signature-file",
                "/dev/zero",
                "/dev/null",
            ],
            "the signature file /dev/zero is larger than 16 KiB",
        ),
        (
            vec![
                "verify",
                "--key",
                key,
                "--signature",
                "AAAA",
                "--max-body-bytes",
                "10",
                body.to_str().unwrap(),
            ],
            "larger than 10 bytes",
        ),
    ] {
        let out = tokio::time::timeout(Duration::from_secs(20), chip(&mock, &args))
            .await
            .unwrap();
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1);
    }
    // An endless standard input as the body.
    let mut cmd = common::command(&mock, &["verify", "--key", key, "--signature", "AAAA"]);
    cmd.stdin(std::fs::File::open("/dev/zero").unwrap());
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::task::spawn_blocking(move || cmd.output().unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than 1 MiB"));
    // chip listen's key file too.
    let out = chip(&mock, &["listen", "--port", "0", "--key", "/dev/zero"]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("larger than 64 KiB"), "{}", out.stderr);
}

/// Sends `signal` to the listener and returns how long it took to exit, and its exit code.
async fn stop_with(listening: common::Listening, signal: &str) -> (Duration, Option<i32>) {
    let pid = listening.child.id().to_string();
    let started = Instant::now();
    let status = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let out = listening.finish().await;
    (started.elapsed(), out.code)
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_and_sigterm_stop_the_listener_at_once() {
    let mock = mock().await;
    let key = fixture("public_key.pem");
    let key = key.to_str().unwrap();
    for signal in ["-INT", "-TERM"] {
        // Idle.
        let listening = listen(&mock, &["--key", key]).await;
        let (took, code) = stop_with(listening, signal).await;
        assert_eq!(code, Some(0), "{signal}");
        assert!(took < Duration::from_millis(1_500), "{signal}: {took:?}");

        // With a kept-alive connection from a delivery.
        let id = common::create(&mock, "http://127.0.0.1:9/").await;
        let mut listening = listen(&mock, &["--webhook", &id]).await;
        chip(
            &mock,
            &["webhooks", "patch", &id, "--callback", &listening.url],
        )
        .await
        .ok();
        chip(&mock, &["trigger", "purchase.paid"]).await.ok();
        listening.line().await;
        let (took, code) = stop_with(listening, signal).await;
        assert_eq!(code, Some(0), "{signal}");
        assert!(took < Duration::from_millis(1_500), "{signal}: {took:?}");
        chip(&mock, &["webhooks", "delete", &id]).await.ok();
    }
}
