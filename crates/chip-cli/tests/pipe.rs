//! A reader that closes the pipe early (`chip ... | head -1`, `chip ... | true`) ends `chip`
//! quietly: exit 0, nothing on stderr, no panic.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Stdio;

use common::{chip, command, mock, with_closed_stdout};

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_ends_every_printing_command_quietly() {
    let mock = mock().await;
    for i in 0..5 {
        let title = format!("hook {i}");
        chip(
            &mock,
            &[
                "webhooks",
                "create",
                "--title",
                &title,
                "--callback",
                "https://x.example.com/",
                "--all-events",
            ],
        )
        .await
        .ok();
    }
    let id = common::create(&mock, "https://y.example.com/").await;
    let key = common::fixture("public_key.pem");
    let body = common::fixture("body.json");
    let signature = common::vector_signature();
    let cases: Vec<Vec<&str>> = vec![
        vec!["webhooks", "list", "--json", "--all"],
        vec!["webhooks", "list", "--all"],
        vec!["webhooks", "list"],
        vec!["webhooks", "get", &id],
        vec!["webhooks", "get", &id, "--json"],
        vec!["webhooks", "get", &id, "--public-key"],
        vec![
            "webhooks",
            "create",
            "--title",
            "t",
            "--callback",
            "https://z.example.com/",
            "--all-events",
        ],
        vec!["public-key"],
        vec!["trigger", "purchase.paid"],
        vec![
            "verify",
            "--key",
            key.to_str().unwrap(),
            "--signature",
            &signature,
            body.to_str().unwrap(),
        ],
        vec!["--help"],
    ];
    for args in cases {
        let (code, stderr) = with_closed_stdout(command(&mock, &args)).await;
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn chip_listen_stops_quietly_when_its_reader_goes_away() {
    let mock = mock().await;
    let mut command = command(
        &mock,
        &[
            "listen",
            "--port",
            "0",
            "--key",
            common::fixture("public_key.pem").to_str().unwrap(),
        ],
    );
    // The first line cannot be written: the listener stops at once instead of serving blind.
    command.stderr(Stdio::piped());
    let (code, stderr) = with_closed_stdout(command).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr, "");
}
