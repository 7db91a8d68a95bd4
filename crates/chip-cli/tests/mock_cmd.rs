//! `chip mock` in the foreground: it stops at once on Ctrl-C or SIGTERM, idle or not, and a closed
//! stdout ends it quietly.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn chip() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chip"));
    command
        .env_remove("CHIP_API_KEY")
        .env_remove("CHIP_BASE_URL");
    command
}

#[test]
fn the_mock_stops_at_once_on_a_signal() {
    for signal in ["-INT", "-TERM"] {
        let mut child = chip()
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
        // It used to linger for 2 s; a prompt exit is a few milliseconds.
        assert!(took < Duration::from_millis(900), "{signal}: {took:?}");
    }
}

#[test]
fn a_closed_stdout_ends_the_mock_quietly() {
    let mut child = chip()
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
