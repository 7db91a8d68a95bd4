//! The `chip-gate-mock` binary: its stdout lines (the key only when it chose one), its flags, and
//! a clean exit on SIGTERM.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_chip-gate-mock"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("CHIP_MOCK_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the child to exit, up to `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the mock did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn prints_its_url_and_key_serves_and_stops_on_sigterm() {
    let mut child = spawn(&[
        "--port",
        "0",
        "--api-key",
        "test_bin_key",
        "--page-size",
        "1",
    ]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let base = first.strip_prefix("CHIP_BASE_URL=").unwrap().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert!(base.ends_with("/api/v1"), "{base}");

    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for i in 0..2 {
        let resp = http
            .post(format!("{base}/webhooks/"))
            .bearer_auth("test_bin_key")
            .json(&serde_json::json!({"title": format!("h{i}"), "callback": "http://127.0.0.1:9/x", "all_events": true, "events": ["purchase.paid"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    // --page-size 1: two pages.
    let page: serde_json::Value = http
        .get(format!("{base}/webhooks/"))
        .bearer_auth("test_bin_key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["results"].as_array().unwrap().len(), 1);
    assert_eq!(page["next"], format!("{base}/webhooks/?page=2"));
    let resp = http
        .get(format!("{base}/webhooks/"))
        .bearer_auth(chip_gate_mock::DEFAULT_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    // A key the user gave is never printed: not on stdout, not in the logs.
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(rest.iter().all(|l| !l.contains("test_bin_key")), "{rest:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("test_bin_key"));
}

/// GETs `url` with the bearer `key` and reads the JSON answer.
async fn get_json(url: &str, key: &str) -> serde_json::Value {
    common::client_with_key(key)
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Reads the `CHIP_BASE_URL=` line and the `CHIP_API_KEY=` line a mock prints when it chose the
/// key itself.
fn base_and_key(child: &mut Child) -> (String, String) {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("CHIP_BASE_URL=")
        .unwrap()
        .to_owned();
    let key = lines
        .next()
        .unwrap()
        .unwrap()
        .strip_prefix("CHIP_API_KEY=")
        .unwrap()
        .to_owned();
    (base, key)
}

#[tokio::test]
async fn without_a_key_it_chooses_a_random_one_per_run_and_prints_it() {
    let mut a = spawn(&[]);
    let mut b = spawn(&[]);
    let (base, key) = base_and_key(&mut a);
    let (_, other) = base_and_key(&mut b);
    assert!(key.starts_with("test_mock_") && key.len() >= 40, "{key}");
    assert_ne!(key, other);
    assert_ne!(key, chip_gate_mock::DEFAULT_API_KEY);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let ok = http
        .get(format!("{base}/webhooks/"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // The well-known key opens nothing.
    let refused = http
        .get(format!("{base}/webhooks/"))
        .bearer_auth(chip_gate_mock::DEFAULT_API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    for child in [&mut a, &mut b] {
        child.kill().unwrap();
        let _ = child.wait();
    }
}

#[tokio::test]
async fn variations_flag_answers_with_chips_variations() {
    let mut child = spawn(&["--variations", "--page-size", "1", "--reuse-keys"]);
    let (base, key) = base_and_key(&mut child);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for i in 0..2 {
        let resp = http
            .post(format!("{base}/webhooks/"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"title": format!("h{i}"), "callback": "http://127.0.0.1:9/x", "events": ["purchase.paid"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let w: serde_json::Value = resp.json().await.unwrap();
        assert!(
            w.get("type").is_none() && w.get("created_on").is_none(),
            "{w}"
        );
    }
    let page = get_json(&format!("{base}/webhooks/"), &key).await;
    assert_eq!(page["next"], "/api/v1/webhooks/?page=2");
    assert!(page.get("previous").is_none());
    let resp = http.get(format!("{base}/webhooks/")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.bytes().await.unwrap().is_empty());
    child.kill().unwrap();
    let _ = child.wait();
}

#[tokio::test]
async fn fault_flags_apply_to_the_api() {
    let mut child = spawn(&["--error-rate", "1.0", "--error-status", "502"]);
    let (base, key) = base_and_key(&mut child);
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{base}/webhooks/"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    child.kill().unwrap();
    let _ = child.wait();
}

#[tokio::test]
async fn delivery_fault_flags_are_in_force() {
    let mut child = spawn(&[
        "--duplicate-rate",
        "0.5",
        "--reorder-rate",
        "0.25",
        "--hold-back-ms",
        "40",
        "--seed",
        "3",
    ]);
    let (base, key) = base_and_key(&mut child);
    let root = base.trim_end_matches("/api/v1");
    let faults = get_json(&format!("{root}/__mock/delivery_faults"), &key).await;
    assert_eq!(
        faults,
        serde_json::json!({"duplicate_rate": 0.5, "reorder_rate": 0.25, "hold_back_ms": 40, "seed": 3})
    );
    child.kill().unwrap();
    let _ = child.wait();
}

/// Starts the mock with `args`, which it must refuse; returns what it wrote to stderr.
fn refused(args: &[&str]) -> String {
    let mut child = spawn(args);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    stderr
}

#[test]
fn bad_flags_fail_with_a_message() {
    let stderr = refused(&["--duplicate-rate", "1.5"]);
    assert!(stderr.contains("duplicate_rate"), "{stderr}");
}

#[test]
fn bad_fault_flags_fail_with_a_message() {
    let stderr = refused(&["--error-rate", "2"]);
    assert!(stderr.contains("error_rate"), "{stderr}");
}

#[test]
fn delivery_bound_flags_reach_the_limits() {
    let stderr = refused(&["--max-outbound-requests", "0"]);
    assert!(stderr.contains("max_outbound_requests"), "{stderr}");
    let stderr = refused(&["--max-pending-per-webhook", "0"]);
    assert!(stderr.contains("max_pending_per_webhook"), "{stderr}");
}
