//! `chip webhooks plan` and `apply` in a CI pipeline (issue 22): a file with no webhook is refused
//! unless --allow-empty, `plan --detailed-exitcode`, `apply --json`, `-f -` from standard input,
//! and `chip verify --key BUNDLE` and `chip listen --key BUNDLE` using every key of a `--keys-out`
//! bundle.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::Stdio;

use chip_gate_mock::MockServer;
use common::{
    Run, apply_with_keys_out, command, listen, mock, one_delivery_to_each, run_hiding_key, write,
};

const FILE: &str = r#"[[webhook]]
title = "shop/staging/orders"
callback = "https://staging.shop.example.com/chip/orders"
events = ["purchase.paid", "payment.refunded"]
"#;

async fn chip(mock: &MockServer, args: &[&str]) -> Run {
    run_hiding_key(mock, command(mock, args)).await
}

/// `chip args...` with `input` on its standard input.
async fn chip_stdin(mock: &MockServer, args: &[&str], input: &str) -> Run {
    let mut command = command(mock, args);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let input = input.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // The command may stop reading early (a cap): a broken pipe is its answer, not ours.
        let _ = stdin.write_all(input.as_bytes());
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let out = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert!(!out.stdout.contains(mock.api_key()) && !out.stderr.contains(mock.api_key()));
    out
}

async fn make(mock: &MockServer, title: &str) {
    chip(
        mock,
        &[
            "webhooks",
            "create",
            "--title",
            title,
            "--callback",
            "https://x.example.com/chip",
            "--event",
            "purchase.paid",
        ],
    )
    .await
    .ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_with_no_webhook_is_refused_unless_allow_empty() {
    let mock = mock().await;
    make(&mock, "shop/staging/orders").await;
    make(&mock, "shop/staging/audit").await;
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("empty.toml", ""),
        ("comments.toml", "# nothing yet\n\n"),
        ("vars.toml", "vars = [\"SHOP_ENV\"]\n"),
    ] {
        let file = write(dir.path(), name, text);
        for verb in ["plan", "apply"] {
            let out = chip(
                &mock,
                &[
                    "webhooks",
                    verb,
                    "-f",
                    &file,
                    "--prune",
                    "--prune-prefix",
                    "shop/staging/",
                    "--yes",
                ][..if verb == "plan" { 7 } else { 8 }],
            )
            .await;
            assert_eq!(out.code, Some(2), "{verb} {name}: {}", out.stderr);
            assert!(out.stdout.is_empty(), "{}", out.stdout);
            assert!(
                out.stderr.contains("lists no webhook") && out.stderr.contains("--allow-empty"),
                "{}",
                out.stderr
            );
            assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        }
    }
    assert_eq!(mock.webhooks().len(), 2, "nothing was deleted");

    // Said explicitly, it is what the user asked for.
    let file = write(dir.path(), "none.toml", "# no webhooks on purpose\n");
    let out = chip(
        &mock,
        &[
            "webhooks",
            "apply",
            "-f",
            &file,
            "--prune",
            "--prune-prefix",
            "shop/staging/",
            "--yes",
            "--allow-empty",
        ],
    )
    .await;
    out.ok();
    assert!(mock.webhooks().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_detailed_exitcode_is_0_without_changes_2_with_and_1_on_error() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "f.toml", FILE);
    let plan = ["webhooks", "plan", "-f", &file, "--detailed-exitcode"];

    let out = chip(&mock, &plan).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stdout.contains("+ create \"shop/staging/orders\""));
    // Without the flag, a plan with changes still exits 0.
    chip(&mock, &plan[..4]).await.ok();

    chip(&mock, &["webhooks", "apply", "-f", &file, "--yes"])
        .await
        .ok();
    let out = chip(&mock, &plan).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.contains("No changes"));

    // Duplicates left without --prune: the account does not match.
    make(&mock, "shop/staging/orders").await;
    let out = chip(&mock, &plan).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);

    // Errors are 1, never 2 (which would read as "changes"): a bad file, a missing file.
    let bad = write(dir.path(), "bad.toml", "[[webhook]]\ntitle = \"x\"\n");
    for path in [bad.as_str(), "/nonexistent/chip-webhooks.toml"] {
        let out = chip(
            &mock,
            &["webhooks", "plan", "-f", path, "--detailed-exitcode"],
        )
        .await;
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    }
    // So is bad usage, which clap refuses before the command runs.
    for args in [
        &["--no-such-flag"][..],
        &["--prune-prefix", "shop/"][..], // requires --prune
    ] {
        let mut all = plan.to_vec();
        all.extend_from_slice(args);
        let out = chip(&mock, &all).await;
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    }
    // Without the flag, bad usage stays 2.
    let out = chip(&mock, &["webhooks", "plan", "-f", &file, "--no-such-flag"]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    let empty = write(dir.path(), "empty.toml", "");
    let out = chip(
        &mock,
        &["webhooks", "plan", "-f", &empty, "--detailed-exitcode"],
    )
    .await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_json_reports_what_was_created_updated_and_deleted() {
    let mock = mock().await;
    make(&mock, "shop/staging/orders").await; // old callback and events: updated
    make(&mock, "shop/staging/retired").await; // pruned
    let webhooks = mock.webhooks();
    let (orders, retired) = (webhooks[0].id, webhooks[1].id);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{FILE}\n[[webhook]]\ntitle = \"shop/staging/audit\"\ncallback = \"https://a.example.com/\"\nall_events = true\n"
    );
    let file = write(dir.path(), "f.toml", &text);
    let keys = dir.path().join("keys.pem");
    let out = chip(
        &mock,
        &[
            "webhooks",
            "apply",
            "-f",
            &file,
            "--yes",
            "--json",
            "--prune",
            "--prune-prefix",
            "shop/staging/",
            "--keys-out",
            keys.to_str().unwrap(),
        ],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    let audit = mock
        .webhooks()
        .iter()
        .find(|w| w.title == "shop/staging/audit")
        .unwrap()
        .id;
    assert_eq!(json["created"], serde_json::json!([audit.to_string()]));
    assert_eq!(json["updated"], serde_json::json!([orders.to_string()]));
    assert_eq!(json["deleted"], serde_json::json!([retired.to_string()]));
    assert_eq!(json["converged"], true);
    assert_eq!(json["keys_out"]["keys"], 2);
    assert_eq!(json["steps"][0]["action"], "create");
    assert_eq!(json["steps"][0]["outcome"], "done");
    assert_eq!(json["plan"]["changes"].as_array().unwrap().len(), 3);
    assert!(keys.exists());

    // Nothing to do: an empty result, still JSON.
    let out = chip(
        &mock,
        &["webhooks", "apply", "-f", &file, "--yes", "--json"],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(json["steps"], serde_json::json!([]));
    assert_eq!(json["created"], serde_json::json!([]));
    assert_eq!(json["converged"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn dash_f_dash_reads_the_file_from_standard_input_capped() {
    let mock = mock().await;
    let out = chip_stdin(&mock, &["webhooks", "plan", "-f", "-"], FILE).await;
    assert!(
        out.ok().contains("+ create \"shop/staging/orders\""),
        "{}",
        out.stdout
    );
    // Errors name standard input and the line.
    let out = chip_stdin(
        &mock,
        &["webhooks", "plan", "-f", "-"],
        "[[webhook]]\ntitle = \"x\"\ncallback = \"ftp://x\"\nall_events = true\n",
    )
    .await;
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.starts_with("error: standard input:3: "),
        "{}",
        out.stderr
    );
    // Apply from standard input cannot ask there: --yes is required.
    let out = chip_stdin(&mock, &["webhooks", "apply", "-f", "-"], FILE).await;
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert!(mock.webhooks().is_empty());
    let out = chip_stdin(&mock, &["webhooks", "apply", "-f", "-", "--yes"], FILE).await;
    out.ok();
    assert_eq!(mock.webhooks().len(), 1);
    // More than a file may hold is refused, as any other input.
    let huge = format!("# {}\n", "x".repeat(2 * 1024 * 1024));
    let out = chip_stdin(&mock, &["webhooks", "plan", "-f", "-"], &huge).await;
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("larger than 1 MiB"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_uses_every_key_of_a_keys_out_bundle() {
    let mock = mock().await;
    let bundle = apply_with_keys_out(&mock).await;
    bundle.applied.ok();
    let (dir, keys) = (&bundle.dir, bundle.keys.as_str());
    let (log, hooks) = one_delivery_to_each(&mock).await;
    for delivery in &log {
        let body = write(dir.path(), "body.json", &delivery.body);
        let out = chip(
            &mock,
            &[
                "verify",
                "--key",
                keys,
                "--signature",
                &delivery.signature,
                &body,
            ],
        )
        .await;
        assert_eq!(out.ok(), "valid\n");
    }
    // `chip listen --key BUNDLE` passes a delivery of each webhook, whichever key signed it.
    let mut listening = listen(&mock, &["--key", keys, "--max", "2"]).await;
    let http = common::http();
    for hook in &hooks {
        let delivery = log.iter().find(|d| d.webhook_id == *hook).unwrap();
        let answer = http
            .post(&listening.url)
            .header("X-Signature", &delivery.signature)
            .body(delivery.body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200);
        let line = listening.line().await;
        // The two deliveries carry one event: the second is "valid (duplicate)".
        assert!(
            line.contains("  valid") && !line.contains("invalid"),
            "{line}"
        );
    }
    let out = listening.finish().await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // A bundle with one unusable block is an error, not a bundle of the others.
    let bundle = std::fs::read_to_string(keys).unwrap();
    let broken = bundle.replacen("MII", "XII", 2);
    let broken = write(dir.path(), "broken.pem", &broken);
    let body = write(dir.path(), "body.json", &log[0].body);
    let out = chip(
        &mock,
        &[
            "verify",
            "--key",
            &broken,
            "--signature",
            &log[0].signature,
            &body,
        ],
    )
    .await;
    assert_eq!(out.code, Some(2), "{}", out.stdout);
}
