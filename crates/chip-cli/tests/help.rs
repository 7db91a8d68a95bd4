//! `--help` shows the connection options (API key, base URL) only on the commands that talk to
//! CHIP, under a heading of their own after the command's own options; `chip mock --help` lists
//! the faults it can inject, and they take effect.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};

use common::{CHIP, bare, chip_mock};

const HEADING: &str = "Connection (CHIP, or a local mock):";

fn help(args: &[&str]) -> String {
    let out = bare(args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{args:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn connection_options_only_where_they_apply_under_their_own_heading() {
    for command in [
        &["webhooks", "list"][..],
        &["webhooks", "create"],
        &["webhooks", "delete"],
        &["public-key"],
        &["trigger"],
        &["listen"],
    ] {
        let text = help(command);
        let heading = text
            .find(HEADING)
            .unwrap_or_else(|| panic!("{command:?}: no connection heading:\n{text}"));
        let options = text.find("Options:").unwrap();
        assert!(
            options < heading,
            "{command:?}: its own options first:\n{text}"
        );
        for flag in ["--api-key <KEY>", "--api-key-file", "--base-url"] {
            let at = text
                .find(flag)
                .unwrap_or_else(|| panic!("{command:?}: no {flag}:\n{text}"));
            assert!(
                at > heading,
                "{command:?}: {flag} under the heading:\n{text}"
            );
        }
    }
    for command in [
        &["verify"][..],
        &["mock"],
        &["inbox"],
        &["inbox", "status"],
        &["inbox", "init"],
    ] {
        let text = help(command);
        for absent in [HEADING, "--api-key-file", "--base-url", "$CHIP_API_KEY"] {
            assert!(
                !text.contains(absent),
                "{command:?} shows {absent}:\n{text}"
            );
        }
    }
    // The top level names them without listing them.
    let top = help(&[]);
    assert!(!top.contains("--base-url <URL>"), "{top}");
}

#[test]
fn connection_options_before_a_command_that_does_not_use_them_are_refused() {
    let out = Command::new(CHIP)
        .args([
            "--base-url",
            "http://127.0.0.1:1/api/v1",
            "verify",
            "--key",
            "k.pem",
        ])
        .args(["--signature", "x", "body.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("do not apply to `chip verify`"), "{stderr}");
}

#[test]
fn chip_mock_help_lists_the_faults() {
    let text = help(&["mock"]);
    for flag in [
        "Delivery faults",
        "--duplicate-rate",
        "--reorder-rate",
        "--hold-back-ms",
        "API faults",
        "--error-rate",
        "--error-status",
        "--too-many-rate",
        "--retry-after-secs",
        "--drop-rate",
        "--latency-ms",
        "--seed",
    ] {
        assert!(text.contains(flag), "no {flag}:\n{text}");
    }
}

/// The API faults of `chip mock` reach the client: every request answered 418.
#[tokio::test(flavor = "multi_thread")]
async fn chip_mock_api_faults_take_effect() {
    let key = "test_key_for_chip_mock_faults";
    let running = chip_mock(&[
        "--api-key",
        key,
        "--error-rate",
        "1",
        "--error-status",
        "418",
    ])
    .await;
    let printed = &running.printed;
    assert!(
        printed
            .iter()
            .any(|l| l.contains("API faults: 100% of API requests are answered 418")),
        "{printed:?}"
    );
    let base_url = running.export("CHIP_BASE_URL");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(CHIP)
            .args(["public-key", "--base-url", &base_url, "--api-key-file", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(key.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap()
    })
    .await
    .unwrap();
    running.stop();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("418"), "{stderr}");
}
