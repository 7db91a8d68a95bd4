//! The `chip` command against a local CHIP Gate on 127.0.0.1, as a user runs it.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use chip_gate_mock::MockServer;
use common::{CHIP, Run, chip_mock, command, fixture, listen, mock, run};

/// Runs `chip` with the mock's URL and key in the environment (unless `env` overrides them).
async fn chip(mock: &MockServer, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = command(mock, args);
    command.envs(env.iter().copied());
    run(command).await
}

fn created_id(stdout: &str) -> String {
    let line = stdout.lines().next().unwrap();
    line.trim_start_matches("Created webhook ")
        .trim_end_matches('.')
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn manage_a_webhook_from_create_to_delete() {
    let mock = mock().await;
    let created = chip(
        &mock,
        &[
            "webhooks",
            "create",
            "--title",
            "Shop",
            "--callback",
            "https://shop.example.com/chip",
            "--event",
            "purchase.paid",
            "--event",
            "payment.refunded",
        ],
        &[],
    )
    .await;
    let out = created.ok();
    assert!(out.starts_with("Created webhook "), "{out}");
    assert!(
        out.contains("events:     purchase.paid,payment.refunded"),
        "{out}"
    );
    assert!(out.contains("-----BEGIN PUBLIC KEY-----"), "{out}");
    let id = created_id(out);

    let got = chip(&mock, &["webhooks", "get", &id, "--json"], &[]).await;
    let json: serde_json::Value = serde_json::from_str(got.ok()).unwrap();
    assert_eq!(json["title"], "Shop");
    assert_eq!(
        json["events"],
        serde_json::json!(["purchase.paid", "payment.refunded"])
    );

    let listed = chip(&mock, &["webhooks", "list"], &[]).await;
    let table = listed.ok();
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&id) && table.contains("Shop"), "{table}");

    let patched = chip(
        &mock,
        &["webhooks", "patch", &id, "--title", "Shop 2", "--json"],
        &[],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(patched.ok()).unwrap();
    assert_eq!(json["title"], "Shop 2");
    assert_eq!(json["callback"], "https://shop.example.com/chip");

    let updated = chip(
        &mock,
        &[
            "webhooks",
            "update",
            &id,
            "--title",
            "All",
            "--callback",
            "https://a.example.com/",
            "--all-events",
            "--json",
        ],
        &[],
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(updated.ok()).unwrap();
    assert_eq!(json["all_events"], true);
    assert_eq!(json["callback"], "https://a.example.com/");

    let deleted = chip(&mock, &["webhooks", "delete", &id], &[]).await;
    assert!(deleted.ok().contains(&format!("Deleted webhook {id}")));
    assert_eq!(mock.webhook_count(), 0);

    let gone = chip(&mock, &["webhooks", "get", &id], &[]).await;
    assert_eq!(gone.code, Some(1));
    assert_eq!(gone.stderr.lines().count(), 1, "{}", gone.stderr);
    assert!(gone.stderr.contains("404"), "{}", gone.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_all_follows_every_page() {
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
            &[],
        )
        .await
        .ok();
    }
    let first = chip(&mock, &["webhooks", "list", "--json"], &[]).await;
    let page: Vec<serde_json::Value> = serde_json::from_str(first.ok()).unwrap();
    assert_eq!(page.len(), 2);
    let table = chip(&mock, &["webhooks", "list"], &[]).await;
    assert!(table.ok().contains("add --all"));
    let all = chip(&mock, &["webhooks", "list", "--all", "--json"], &[]).await;
    let all: Vec<serde_json::Value> = serde_json::from_str(all.ok()).unwrap();
    let titles: Vec<&str> = all.iter().map(|w| w["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["hook 0", "hook 1", "hook 2", "hook 3", "hook 4"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn public_key_prints_pem() {
    let mock = mock().await;
    let out = chip(&mock, &["public-key"], &[]).await;
    let pem = out.ok();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    assert!(pem.trim_end().ends_with("-----END PUBLIC KEY-----"));
    assert_eq!(pem.trim_end(), mock.company_public_key().trim_end());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_api_key_is_one_clear_line_and_is_never_printed() {
    let mock = mock().await;
    let key = "sk_live_this_key_is_wrong_123456";
    let out = chip(&mock, &["webhooks", "list"], &[("CHIP_API_KEY", key)]).await;
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.starts_with("error: "), "{}", out.stderr);
    assert!(out.stderr.contains("401"), "{}", out.stderr);
    assert!(!out.stderr.contains(key) && !out.stderr.contains("panicked"));

    let out = chip(&mock, &["--api-key", key, "public-key"], &[]).await;
    assert_eq!(out.code, Some(1));
    assert!(!out.stderr.contains(key));
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_errors_exit_2() {
    let mock = mock().await;
    let out = chip(&mock, &["webhooks", "list"], &[("CHIP_API_KEY", "")]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("no API key"), "{}", out.stderr);

    let out = chip(
        &mock,
        &[
            "webhooks",
            "create",
            "--title",
            "x",
            "--callback",
            "https://x.example.com/",
            "--event",
            "purchase.nope",
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("unknown event name"), "{}", out.stderr);

    let long = "t".repeat(101);
    let out = chip(
        &mock,
        &[
            "webhooks",
            "create",
            "--title",
            &long,
            "--callback",
            "https://x.example.com/",
            "--all-events",
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(mock.webhook_count(), 0, "nothing was sent");

    let out = chip(&mock, &["webhooks", "get", "not-a-uuid"], &[]).await;
    assert_eq!(out.code, Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_command_has_help() {
    let mock = mock().await;
    for args in [
        &["--help"][..],
        &["webhooks", "--help"],
        &["webhooks", "list", "--help"],
        &["webhooks", "get", "--help"],
        &["webhooks", "create", "--help"],
        &["webhooks", "update", "--help"],
        &["webhooks", "patch", "--help"],
        &["webhooks", "delete", "--help"],
        &["public-key", "--help"],
        &["verify", "--help"],
        &["mock", "--help"],
        &["trigger", "--help"],
        &["listen", "--help"],
    ] {
        let out = chip(&mock, args, &[]).await;
        assert!(out.ok().contains("Usage: chip"), "{args:?}: {}", out.stdout);
        assert!(
            !out.stdout.contains(mock.api_key()),
            "help never shows the key"
        );
    }
}

fn verify(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut child = Command::new(CHIP)
        .arg("verify")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn verify_exit_codes() {
    let key = fixture("public_key.pem");
    let body = fixture("body.json");
    let signature = common::vector_signature();
    let (key, body) = (key.to_str().unwrap(), body.to_str().unwrap());

    let valid = verify(&["--key", key, "--signature", &signature, body], None);
    assert_eq!((valid.code, valid.stdout.as_str()), (Some(0), "valid\n"));

    let bytes = std::fs::read(body).unwrap();
    let from_stdin = verify(&["--key", key, "--signature", &signature], Some(&bytes));
    assert_eq!(
        (from_stdin.code, from_stdin.stdout.as_str()),
        (Some(0), "valid\n")
    );

    let sha512 = verify(
        &[
            "--key",
            key,
            "--signature",
            &signature,
            "--digest",
            "sha512",
            body,
        ],
        None,
    );
    assert_eq!(sha512.code, Some(1));
    assert!(sha512.stdout.starts_with("invalid: "), "{}", sha512.stdout);

    let mut tampered = bytes.clone();
    tampered[10] ^= 1;
    let out = verify(&["--key", key, "--signature", &signature], Some(&tampered));
    assert_eq!(out.code, Some(1));
    assert!(out.stdout.contains("does not match"), "{}", out.stdout);

    let out = verify(
        &["--key", key, "--signature", "%%%not base64%%%", body],
        None,
    );
    assert_eq!(out.code, Some(1));
    assert!(out.stdout.contains("base64"), "{}", out.stdout);

    let dir = tempfile::tempdir().unwrap();
    let bad_key = dir.path().join("bad.pem");
    std::fs::write(&bad_key, "this is not a key").unwrap();
    let out = verify(
        &[
            "--key",
            bad_key.to_str().unwrap(),
            "--signature",
            &signature,
            body,
        ],
        None,
    );
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.starts_with("error: unusable key"),
        "{}",
        out.stderr
    );

    let out = verify(
        &["--key", "/nonexistent/key.pem", "--signature", "x", body],
        None,
    );
    assert_eq!(out.code, Some(2));
    let out = verify(&["--signature", "x", body], None);
    assert_eq!(out.code, Some(2), "missing --key is bad usage");

    // The key as the JSON string GET /public_key/ returns.
    let pem = std::fs::read_to_string(key).unwrap();
    let json_key = dir.path().join("key.json");
    std::fs::write(&json_key, serde_json::to_string(&pem).unwrap()).unwrap();
    let out = verify(
        &[
            "--key",
            json_key.to_str().unwrap(),
            "--signature",
            &signature,
            body,
        ],
        None,
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

/// `chip listen` receives what `chip trigger` makes the mock send, verifies it, and prints it.
#[tokio::test(flavor = "multi_thread")]
async fn trigger_and_listen_end_to_end() {
    let mock = mock().await;
    let created = chip(
        &mock,
        &[
            "webhooks",
            "create",
            "--title",
            "Local",
            "--callback",
            "http://127.0.0.1:9/",
            "--event",
            "purchase.paid",
        ],
        &[],
    )
    .await;
    let id = created_id(created.ok());

    // Start the listener with the webhook's key fetched from the API, on a free port.
    let mut listening = listen(&mock, &["--webhook", &id, "--max", "2"]).await;
    let url = listening.url.clone();

    chip(&mock, &["webhooks", "patch", &id, "--callback", &url], &[])
        .await
        .ok();

    let fired = chip(&mock, &["trigger", "purchase.paid"], &[]).await;
    let report = fired.ok();
    assert!(
        report.starts_with("Fired purchase.paid for object "),
        "{report}"
    );
    assert!(
        report.contains(&format!("webhook {id} -> {url}: answered 200, accepted")),
        "{report}"
    );
    let object_id = report
        .lines()
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned();

    let line = listening.line().await;
    assert_eq!(line, format!("purchase.paid  {object_id}  paid  valid"));

    // A forged delivery to the same listener: printed as invalid and answered 401.
    let forged = reqwest::Client::new()
        .post(&url)
        .header("X-Signature", "AAAA")
        .body(r#"{"event_type":"purchase.paid"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let line = listening.line().await;
    assert!(line.starts_with("-  -  -  invalid: "), "{line}");

    // Junk does not count towards --max 2: a second verified delivery ends the listener, and
    // the forged one makes it exit 1 with a one-line summary.
    chip(&mock, &["trigger", "purchase.paid"], &[]).await.ok();
    let line = listening.line().await;
    assert!(line.starts_with("purchase.paid  "), "{line}");
    let out = listening.finish().await;
    assert_eq!(out.code, Some(1));
    let stderr = out.stderr;
    assert_eq!(
        stderr.trim(),
        "error: 1 of 3 deliveries failed verification",
        "{stderr}"
    );

    // A trigger with no subscriber says so.
    let none = chip(&mock, &["trigger", "payout.failed"], &[]).await;
    assert!(none.ok().contains("No webhook is subscribed"));
}

/// `chip mock` runs a CHIP Gate in the foreground and prints how to reach it; the other commands
/// work against it with the printed lines.
#[tokio::test(flavor = "multi_thread")]
async fn chip_mock_serves_in_the_foreground_and_prints_its_env_lines() {
    let key = "test_key_for_chip_mock_command";
    let running = chip_mock(&["--api-key", key]).await;
    let printed = &running.printed;
    let base_url = running.export("CHIP_BASE_URL");
    assert!(base_url.starts_with("http://127.0.0.1:") && base_url.ends_with("/api/v1"));
    // A key the user gave is never printed back.
    assert!(printed.iter().all(|l| !l.contains(key)), "{printed:?}");

    let run = tokio::task::spawn_blocking(move || {
        Command::new(CHIP)
            .args([
                "--base-url",
                &base_url,
                "--api-key",
                key,
                "webhooks",
                "create",
            ])
            .args([
                "--title",
                "t",
                "--callback",
                "https://x.example.com/",
                "--all-events",
            ])
            .env_remove("CHIP_BASE_URL")
            .env_remove("CHIP_API_KEY")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stdout).starts_with("Created webhook "));
    running.stop();
}

/// Without `--api-key`, `chip mock` picks a random key per run and prints it once; with
/// `--variations` it answers with CHIP's variations (here: relative page links, a bodiless 401).
#[tokio::test(flavor = "multi_thread")]
async fn chip_mock_chooses_and_prints_a_random_key_and_has_a_variations_switch() {
    let running = chip_mock(&["--variations"]).await;
    let printed = &running.printed;
    let base_url = running.export("CHIP_BASE_URL");
    let key = running.export("CHIP_API_KEY");
    assert!(key.starts_with("test_mock_") && key.len() >= 40, "{key}");
    assert_ne!(key, chip_gate_mock::DEFAULT_API_KEY);
    assert_eq!(
        printed.iter().filter(|l| l.contains(&key)).count(),
        1,
        "printed once: {printed:?}"
    );
    let http = common::http();
    for i in 0..21 {
        let resp = http
            .post(format!("{base_url}/webhooks/"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"title": format!("h{i}"), "callback": "https://x.example.com/", "events": ["purchase.paid"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    let page: serde_json::Value = http
        .get(format!("{base_url}/webhooks/"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["next"], "/api/v1/webhooks/?page=2");
    let resp = http
        .get(format!("{base_url}/webhooks/"))
        .bearer_auth("test_wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.bytes().await.unwrap().is_empty());
    running.stop();
}
