//! The API key: from CHIP_API_KEY, a file, stdin or argv (with a warning), never printed, and
//! the same one-line error everywhere when it is missing.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{command, mock, run};

const WARNING: &str = "warning: a key given with --api-key is visible to other users in `ps`";

#[tokio::test(flavor = "multi_thread")]
async fn a_key_file_or_stdin_works_and_argv_gets_a_warning() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key");
    std::fs::write(&file, format!("  {}\n", mock.api_key())).unwrap();

    let mut from_file = command(
        &mock,
        &["--api-key-file", file.to_str().unwrap(), "webhooks", "list"],
    );
    from_file.env_remove("CHIP_API_KEY");
    let out = run(from_file).await;
    assert_eq!(out.ok(), "No webhooks.\n");
    assert_eq!(out.stderr, "");

    let mut from_stdin = command(&mock, &["public-key", "--api-key-file", "-"]);
    from_stdin
        .env_remove("CHIP_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let key = mock.api_key().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = from_stdin.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "{key}").unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.starts_with(b"-----BEGIN PUBLIC KEY-----"));
    assert!(out.stderr.is_empty());

    // From the environment: no warning.
    let out = common::chip(&mock, &["webhooks", "list"]).await;
    out.ok();
    assert_eq!(out.stderr, "");

    // From argv: it works, with one warning line that does not contain the key.
    let mut argv = command(&mock, &["--api-key", mock.api_key(), "webhooks", "list"]);
    argv.env_remove("CHIP_API_KEY");
    let out = run(argv).await;
    out.ok();
    assert!(out.stderr.starts_with(WARNING), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1);
    assert!(!out.stderr.contains(mock.api_key()));

    // Both a file and argv: bad usage.
    let out = common::chip(
        &mock,
        &[
            "--api-key",
            "k",
            "--api-key-file",
            file.to_str().unwrap(),
            "webhooks",
            "list",
        ],
    )
    .await;
    assert_eq!(out.code, Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_or_huge_key_files_are_refused_without_reading_them_whole() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, "k".repeat(4097)).unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n\n").unwrap();
    for (path, says) in [
        ("/dev/zero", "larger than 4 KiB"),
        (big.to_str().unwrap(), "larger than 4 KiB"),
        (empty.to_str().unwrap(), "is empty"),
        ("/nonexistent/key", "cannot read the API key file"),
    ] {
        let mut cmd = command(&mock, &["--api-key-file", path, "webhooks", "list"]);
        cmd.env_remove("CHIP_API_KEY");
        let out = tokio::time::timeout(std::time::Duration::from_secs(20), run(cmd))
            .await
            .expect("no endless read");
        assert_eq!(out.code, Some(2), "{path}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains(says), "{path}: {}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_says_the_same_thing_without_a_key() {
    let mock = mock().await;
    let id = uuid::Uuid::new_v4().to_string();
    for args in [
        &["webhooks", "list"][..],
        &["webhooks", "get", &id],
        &["public-key"],
        &["trigger", "purchase.paid"],
        &["listen", "--port", "0", "--webhook", &id],
    ] {
        for empty in [None, Some(""), Some("   ")] {
            let mut cmd = command(&mock, args);
            match empty {
                None => cmd.env_remove("CHIP_API_KEY"),
                Some(value) => cmd.env("CHIP_API_KEY", value),
            };
            let out = run(cmd).await;
            assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
            assert!(
                out.stderr
                    .starts_with("error: no API key: pass --api-key or set CHIP_API_KEY"),
                "{args:?}: {}",
                out.stderr
            );
            assert_eq!(out.stderr.lines().count(), 1);
            assert_eq!(out.stdout, "");
        }
    }
    assert!(mock.deliveries().is_empty(), "the trigger was never sent");
}
