//! `chip mock` in the foreground: it stops at once on Ctrl-C or SIGTERM, idle or not, and a closed
//! stdout ends it quietly.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::bare;

#[test]
fn the_mock_stops_at_once_on_a_signal() {
    for signal in ["-INT", "-TERM"] {
        let mut child = bare(&[])
            .args(["mock", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        assert!(first.starts_with("Local CHIP Gate running at"), "{first}");
        let started = Instant::now();
        let killed = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = child.wait().unwrap();
        let took = started.elapsed();
        assert_eq!(status.code(), Some(0), "{signal}");
        // It used to linger for 2 s; a prompt exit is a few milliseconds (the bound leaves room
        // for a busy machine).
        assert!(took < Duration::from_millis(1_500), "{signal}: {took:?}");
    }
}

#[test]
fn a_closed_stdout_ends_the_mock_quietly() {
    let mut child = bare(&[])
        .args(["mock", "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn delivery_fault_flags_are_said_and_in_force() {
    let mut child = bare(&[])
        .args([
            "mock",
            "--port",
            "0",
            "--duplicate-rate",
            "0.2",
            "--reorder-rate",
            "0.125",
            "--hold-back-ms",
            "250",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader stays open until the mock is killed: a closed stdout ends the mock (see above),
    // and it still has a line to print after the fifth.
    let mut reader = BufReader::new(child.stdout.take().unwrap()).lines();
    let lines: Vec<String> = reader.by_ref().take(6).map(Result::unwrap).collect();
    assert_eq!(lines[5], "Press Ctrl-C to stop.");
    assert_eq!(
        lines[1],
        "Delivery faults: 20% of acknowledged deliveries are sent again; 12.5% of events are held \
         back 250 ms."
    );
    let base = lines[3].strip_prefix("  export CHIP_BASE_URL=").unwrap();
    let key = lines[4].strip_prefix("  export CHIP_API_KEY=").unwrap();
    let root = base.strip_suffix("/api/v1").unwrap();
    // The mock's own control route reports the same settings.
    let faults: serde_json::Value = tokio::runtime::Runtime::new().unwrap().block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("{root}/__mock/delivery_faults"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(
        faults,
        serde_json::json!({"duplicate_rate": 0.2, "reorder_rate": 0.125, "hold_back_ms": 250, "seed": null})
    );
    child.kill().unwrap();
    let _ = child.wait();
    drop(reader);

    let refused = bare(&[])
        .args(["mock", "--port", "0", "--reorder-rate", "1.5"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr).trim(),
        "error: --reorder-rate must be between 0.0 and 1.0, got 1.5"
    );
}
