//! The quickstart as a newcomer runs it: on the local CHIP Gate, whatever the environment holds.
//!
//! `cargo test` builds the examples beside the test binaries (`target/<profile>/examples/`), so the
//! test runs the real example binary with a `CHIP_API_KEY` and a `CHIP_BASE_URL` exported, as the
//! CLI walkthrough leaves them, and checks that nothing was sent there.
#![allow(clippy::unwrap_used)]

// The scripted server of chip-gate's client tests, shared rather than copied.
#[path = "../../chip-gate/tests/common/script.rs"]
#[allow(dead_code)] // this test uses a part of it
mod client_common;

use std::path::PathBuf;
use std::process::Command;

use client_common::{ScriptServer, json};

fn quickstart() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let name = format!("quickstart{}", std::env::consts::EXE_SUFFIX);
    let path = profile_dir.join("examples").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run this through `cargo test`, which builds the examples",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_key_never_switches_the_quickstart_to_an_account() {
    // A "CHIP" that records every request it gets.
    let account = ScriptServer::start(|_, _| json(200, serde_json::json!({"results": []}))).await;
    let mut cmd = Command::new(quickstart());
    cmd.env("CHIP_API_KEY", client_common::KEY)
        .env("CHIP_BASE_URL", &account.base_url)
        .env("CHIP_CALLBACK_URL", "https://shop.example.com/chip");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("Running on a local CHIP Gate"),
        "{stdout}"
    );
    assert!(
        stdout.contains("CHIP_API_KEY is set and not used"),
        "{stdout}"
    );
    assert!(stdout.contains("total:      RM 2.00"), "{stdout}");
    assert!(!stdout.contains("Some("), "raw Debug output: {stdout}");
    assert_eq!(account.count(), 0, "nothing may reach the account");
    assert!(!stdout.contains(client_common::KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_runs_say_what_they_will_do_and_fail_with_advice() {
    // --live without a callback URL: refused before any request.
    let account =
        ScriptServer::start(|_, _| json(401, serde_json::json!({"detail": "Invalid token."})))
            .await;
    let mut cmd = Command::new(quickstart());
    cmd.arg("--live")
        .env("CHIP_API_KEY", client_common::KEY)
        .env("CHIP_BASE_URL", &account.base_url)
        .env_remove("CHIP_CALLBACK_URL");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--live needs CHIP_CALLBACK_URL"),
        "{stderr}"
    );
    assert_eq!(account.count(), 0);

    // With one: the plan is printed first, then CHIP's 401 becomes advice, not a Debug dump.
    let mut cmd = Command::new(quickstart());
    cmd.arg("--live")
        .env("CHIP_API_KEY", client_common::KEY)
        .env("CHIP_BASE_URL", &account.base_url)
        .env("CHIP_CALLBACK_URL", "https://shop.example.com/chip");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("On that account this run will:"),
        "{stdout}"
    );
    assert!(stderr.contains("CHIP answered 401"), "{stderr}");
    assert!(stderr.contains("check CHIP_API_KEY"), "{stderr}");
    assert!(!stderr.contains("Api {"), "a Debug dump: {stderr}");
    assert!(!format!("{stdout}{stderr}").contains(client_common::KEY));
}

/// The packages `cargo tree` lists for the quickstart's package with these edge kinds.
fn tree(edges: &str) -> std::collections::BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "--prefix", "none", "-e", edges])
        .args(["-p", "chip-gate-quickstart"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.replace(" (*)", "").replace(" (proc-macro)", ""))
        .filter(|l| !l.trim().is_empty())
        .collect()
}

/// Cargo builds an example with its package's dev-dependencies: in chip-gate they brought
/// criterion, proptest and rsa (250 crates compiled before the quickstart's first line). Here the
/// dev-dependencies add no package the quickstart does not need anyway.
#[test]
fn the_first_run_compiles_only_what_the_quickstart_uses() {
    let with_dev = tree("normal,dev");
    let normal = tree("normal");
    let extra: Vec<&String> = with_dev.difference(&normal).collect();
    assert!(
        extra.is_empty(),
        "dev-dependencies that the first `cargo run --example quickstart` would compile for \
         nothing: {extra:?}"
    );
}

/// `cargo run --example quickstart` from the workspace resolves features for every default member
/// (with their dev-dependencies, as for any example): when the mock was one of them, or a member
/// took it with its default features, its `cli` feature brought clap and tracing-subscriber into
/// the quickstart's first run (172 crates compiled on a fresh clone; 147 without them).
#[test]
fn the_first_run_leaves_out_the_mock_binarys_command_line() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for binary_only in ["clap", "tracing-subscriber"] {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "tree",
                "--offline",
                "--prefix",
                "none",
                "-e",
                "normal,build,dev",
            ])
            .args(["-i", binary_only])
            .current_dir(&root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dependents = String::from_utf8_lossy(&out.stdout);
        assert!(
            !dependents.lines().any(|l| l.starts_with("chip-gate-mock ")),
            "the mock's `cli` feature is on for `cargo run --example quickstart`, which then \
             compiles {binary_only}:\n{dependents}"
        );
    }
}
