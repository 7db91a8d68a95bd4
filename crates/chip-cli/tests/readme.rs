//! The README's CLI walkthrough, run as written: the `sh` block under "## The `chip` command"
//! goes to bash line by line, against a mock on 127.0.0.1.
//!
//! Only the setup lines (`cargo install`, `chip mock`, the `export` line with its placeholder key)
//! are replaced: the test starts the mock itself on a free port and exports its URL and key.
//! Everything after the `export` line runs verbatim, with `set -euo pipefail`, so a command that
//! stops working, a flag that changes, or a file name `chip listen --save` no longer writes fails
//! this test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The lines of the first `sh` block after the `## The `chip` command` heading.
fn cli_block() -> Vec<String> {
    let readme = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(readme).unwrap();
    let section = text
        .split("\n## The `chip` command\n")
        .nth(1)
        .expect("the README has a `## The `chip` command` section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .expect("the section has an sh block")
        .split("\n```")
        .next()
        .unwrap();
    block.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_cli_walkthrough_works_as_written() {
    let lines = cli_block();
    let export = lines
        .iter()
        .position(|l| l.starts_with("export CHIP_BASE_URL="))
        .expect("the block exports CHIP_BASE_URL");
    assert!(
        lines[..export].iter().any(|l| l.starts_with("chip mock ")),
        "the block starts a mock before the export line"
    );
    let script = lines[export + 1..].join("\n");
    for needed in [
        "--id-only",
        "chip listen ",
        "--save ",
        "chip trigger ",
        "chip verify ",
    ] {
        assert!(
            script.contains(needed),
            "the walkthrough uses {needed}:\n{script}"
        );
    }

    let mock = common::mock().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(common::CHIP).parent().unwrap();
    let path = std::env::join_paths(std::iter::once(bin.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut bash = Command::new("bash");
    bash.arg("-c")
        .arg(format!("set -euo pipefail\n{script}\n"))
        .current_dir(dir.path())
        .env("PATH", path);
    common::connect(&mut bash, &mock);
    let out = tokio::time::timeout(Duration::from_secs(120), common::run(bash))
        .await
        .expect("the walkthrough finishes within 2 minutes");
    let stdout = out.ok();
    assert_eq!(out.stderr, "", "{stdout}");

    let listen_line = stdout
        .lines()
        .find(|l| l.starts_with("purchase.paid  "))
        .unwrap_or_else(|| panic!("listen printed the delivery:\n{stdout}"));
    assert!(
        listen_line.contains("  paid  valid  saved deliveries/0001-purchase.paid.*"),
        "{listen_line}"
    );
    assert_eq!(
        stdout.lines().filter(|l| *l == "valid").count(),
        2,
        "both verify lines say valid:\n{stdout}"
    );
    assert!(stdout.contains("Deleted webhook "), "{stdout}");
    assert!(
        stdout.trim_end().ends_with("-----END PUBLIC KEY-----"),
        "{stdout}"
    );
    assert!(dir.path().join("key.pem").is_file());
    assert_eq!(mock.webhook_count(), 0);
}
