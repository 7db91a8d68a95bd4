//! Without `CHIP_INBOX_TEST_POSTGRES_URL`, the PostgreSQL tests cannot run, and libtest (which
//! decides `#[ignore]` at build time) counts them as passed: one line per test binary says so,
//! and how to run them, rather than one per test or none.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

/// Set in the child run, so the probes below do something only there.
const PROBE_ENV: &str = "CHIP_INBOX_SKIP_PROBE";

#[tokio::test]
async fn skip_probe_a() {
    if std::env::var_os(PROBE_ENV).is_some() {
        assert!(common::postgres_url("skip_probe_a").await.is_none());
    }
}

#[tokio::test]
async fn skip_probe_b() {
    if std::env::var_os(PROBE_ENV).is_some() {
        assert!(common::postgres_url("skip_probe_b").await.is_none());
    }
}

#[test]
fn skipped_postgres_tests_are_said_once_per_binary() {
    // This very binary, running only the two probes, with no PostgreSQL configured.
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["skip_probe_", "--test-threads=2"])
        .env(PROBE_ENV, "1")
        .env_remove(common::POSTGRES_URL_ENV)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("2 passed"), "{stdout}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("SKIPPED"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("postgres_skip"),
        "names the binary: {stderr}"
    );
    assert!(
        lines[0].contains("CHIP_INBOX_TEST_POSTGRES_URL=postgres://"),
        "says how to run them: {stderr}"
    );
}
