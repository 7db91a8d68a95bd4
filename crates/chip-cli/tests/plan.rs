//! `chip webhooks plan` and `chip webhooks apply` against an in-process mock: the readable and
//! JSON plans, apply with --yes to exit 0 only when the account matches, no write on a second run,
//! the confirmation rules, bad files reported with their line before any request, a failed step
//! and the rerun that converges, and the --keys-out bundle verifying real deliveries.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use chip_gate::Verifier;
use chip_gate_mock::{Fault, Faults, MockServer};
use common::{
    Run, apply_with_keys_out, command, mock, one_delivery_to_each, run_hiding_key, write,
};

const FILE: &str = r#"# The shop's webhooks.
vars = ["SHOP_ENV", "SHOP_HOST"]
[[webhook]]
title = "shop/${SHOP_ENV}/orders"
callback = "https://${SHOP_HOST}/chip/orders"
events = ["purchase.paid", "payment.refunded"]

[[webhook]]
title = "shop/${SHOP_ENV}/audit"
callback = "https://${SHOP_HOST}/chip/audit"
all_events = true
"#;

/// `chip args...` with the shop's variables set.
async fn chip(mock: &MockServer, args: &[&str]) -> Run {
    let mut command = command(mock, args);
    command
        .env("SHOP_ENV", "staging")
        .env("SHOP_HOST", "staging.shop.example.com");
    run_hiding_key(mock, command).await
}

/// How many API requests `f` makes, read from what is left of a script of no-op faults.
async fn requests<F: std::future::Future>(mock: &MockServer, f: F) -> (usize, F::Output) {
    const N: usize = 1000;
    mock.set_faults(Faults::script(vec![Fault::DelayMs(0); N]));
    let out = f.await;
    let left = mock.faults().script.len();
    mock.set_faults(Faults::none());
    (N - left, out)
}

fn ids(mock: &MockServer) -> Vec<(uuid::Uuid, Option<i64>)> {
    mock.webhooks()
        .iter()
        .map(|w| (w.id, w.updated_on))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_then_apply_then_nothing_to_do() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "chip-webhooks.toml", FILE);
    // An existing orders webhook with an old callback, and someone else's.
    chip(
        &mock,
        &[
            "webhooks",
            "create",
            "--title",
            "shop/staging/orders",
            "--callback",
            "https://old.example.com/chip",
            "--event",
            "purchase.paid",
        ],
    )
    .await
    .ok();
    chip(
        &mock,
        &[
            "webhooks",
            "create",
            "--title",
            "billing",
            "--callback",
            "https://billing.example.com/chip",
            "--all-events",
        ],
    )
    .await
    .ok();
    let orders = mock.webhooks()[0].id;

    let out = chip(&mock, &["webhooks", "plan", "-f", &file]).await;
    assert_eq!(
        out.ok(),
        format!(
            r#"+ create "shop/staging/audit"
      callback:   https://staging.shop.example.com/chip/audit
      all_events: true
~ update "shop/staging/orders" ({orders})
      callback:   https://old.example.com/chip -> https://staging.shop.example.com/chip/orders
      events:     + payment.refunded
  (1 other webhook(s) on the account are not in the file and are left alone)
Plan: 1 to create, 1 to update, 0 to delete, 0 unchanged.
"#
        )
    );

    let out = chip(&mock, &["webhooks", "plan", "-f", &file, "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(json["changes"][0]["action"], "create");
    assert_eq!(json["changes"][1]["action"], "update");
    assert_eq!(json["changes"][1]["id"], orders.to_string());
    assert_eq!(
        json["changes"][1]["fields"][1],
        serde_json::json!({"field": "events", "added": ["payment.refunded"], "removed": []})
    );
    assert_eq!(json["unmanaged"][0]["title"], "billing");

    let (count, out) = requests(
        &mock,
        chip(&mock, &["webhooks", "apply", "-f", &file, "--yes"]),
    )
    .await;
    let stdout = out.ok();
    assert!(stdout.contains("Plan: 1 to create, 1 to update, 0 to delete, 0 unchanged.\n"));
    assert!(
        stdout.contains("ok: created \"shop/staging/audit\" ("),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("ok: updated \"shop/staging/orders\" ({orders})\n")),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("The account matches the file.\n"),
        "{stdout}"
    );
    // One list page (two webhooks, two a page), two writes, two pages to check (three webhooks).
    assert_eq!(count, 5);

    // Nothing changed: apply lists (two pages) and writes nothing.
    let before = ids(&mock);
    let (count, out) = requests(
        &mock,
        chip(&mock, &["webhooks", "apply", "-f", &file, "--yes"]),
    )
    .await;
    let audit = mock
        .webhooks()
        .iter()
        .find(|w| w.title == "shop/staging/audit")
        .unwrap()
        .id;
    assert_eq!(
        out.ok(),
        format!(
            "= unchanged \"shop/staging/orders\" ({orders})\n= unchanged \"shop/staging/audit\" \
             ({audit})\n  (1 other webhook(s) on the account are not in the file and are left \
             alone)\nNo changes: the account matches the file.\n"
        )
    );
    assert_eq!(count, 2);
    assert_eq!(ids(&mock), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_refuses_to_run_unconfirmed_without_a_terminal() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "f.toml", FILE);
    let (count, out) = requests(&mock, chip(&mock, &["webhooks", "apply", "-f", &file])).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(
        out.stderr,
        "error: standard input is not a terminal, so apply cannot ask for confirmation: review \
         `chip webhooks plan` and pass --yes\n"
    );
    assert_eq!(count, 0);
    assert_eq!(mock.webhook_count(), 0);

    // --prune-prefix without --prune is a usage error; a blank prefix too.
    let out = chip(
        &mock,
        &["webhooks", "plan", "-f", &file, "--prune-prefix", "shop/"],
    )
    .await;
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("--prune"), "{}", out.stderr);
    let out = chip(
        &mock,
        &[
            "webhooks",
            "plan",
            "-f",
            &file,
            "--prune",
            "--prune-prefix",
            " ",
        ],
    )
    .await;
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("would match every webhook"),
        "{}",
        out.stderr
    );
}

/// Runs `chip` under a pseudo-terminal (util-linux `script`), typing `answer`.
fn on_a_terminal(mock: &MockServer, args: &str, answer: &str) -> Option<(i32, String)> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: no `script` to make a terminal");
        return None;
    }
    let chip = common::CHIP;
    let mut script = Command::new("script");
    script.args(["-qec", &format!("{chip} {args}"), "/dev/null"]);
    let mut child = common::connect(&mut script, mock)
        .env("SHOP_ENV", "staging")
        .env("SHOP_HOST", "staging.shop.example.com")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let answer = answer.to_owned();
    std::thread::spawn(move || {
        use std::io::Write;
        std::thread::sleep(Duration::from_millis(1500));
        let _ = stdin.write_all(answer.as_bytes());
        std::thread::sleep(Duration::from_millis(3000));
    });
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_terminal_apply_asks_and_only_yes_goes_on() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "f.toml", FILE);
    let args = format!("webhooks apply -f {file}");
    let mock_ref = &mock;
    let result = tokio::task::block_in_place(|| on_a_terminal(mock_ref, &args, "y\n"));
    let Some((code, out)) = result else { return };
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Make these 2 change(s) to the account? Only 'yes' is accepted:"),
        "{out}"
    );
    assert!(
        out.contains("apply cancelled: nothing was changed"),
        "{out}"
    );
    assert_eq!(mock.webhook_count(), 0);

    let (code, out) =
        tokio::task::block_in_place(|| on_a_terminal(mock_ref, &args, "yes\n")).unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("The account matches the file."), "{out}");
    assert_eq!(mock.webhook_count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_files_get_one_line_naming_the_line_and_no_request_is_made() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let long = format!("https://a.example/{}", "x".repeat(483));
    let cases: Vec<(&str, String, usize, &str)> = vec![
        (
            "unknown-event.toml",
            "[[webhook]]\ntitle = \"a\"\ncallback = \"https://a.example\"\nevents = [\"purchase.payed\"]\n".into(),
            4,
            "unknown event name \"purchase.payed\" (did you mean \"purchase.paid\"?)",
        ),
        (
            "duplicate.toml",
            "[[webhook]]\ntitle = \"a\"\ncallback = \"https://a.example\"\nall_events = true\n\n[[webhook]]\ntitle = \"a\"\ncallback = \"https://b.example\"\nall_events = true\n".into(),
            6,
            "title \"a\" is already used at line 1",
        ),
        (
            "unset.toml",
            "vars = [\"NOT_SET_ANYWHERE\"]\n[[webhook]]\ntitle = \"a\"\ncallback = \"https://${NOT_SET_ANYWHERE}/chip\"\nall_events = true\n".into(),
            4,
            "environment variable NOT_SET_ANYWHERE is not set",
        ),
        (
            "undeclared.toml",
            "[[webhook]]\ntitle = \"a\"\ncallback = \"https://${SHOP_HOST}/chip\"\nall_events = true\n".into(),
            3,
            "${SHOP_HOST} is not declared",
        ),
        (
            "long.toml",
            format!("[[webhook]]\ntitle = \"a\"\ncallback = \"{long}\"\nall_events = true\n"),
            3,
            "the callback is 501 characters long; CHIP allows at most 500",
        ),
        (
            "blank.toml",
            "[[webhook]]\ntitle = \" \"\ncallback = \"https://a.example\"\nall_events = true\n".into(),
            2,
            "the title is blank",
        ),
        (
            "syntax.toml",
            "[[webhook]]\ntitle = \"a\ncallback = \"https://a.example\"\n".into(),
            2,
            "",
        ),
    ];
    for (name, text, line, message) in cases {
        let path = write(dir.path(), name, &text);
        for verb in ["plan", "apply"] {
            let (count, out) = requests(
                &mock,
                chip(
                    &mock,
                    &["webhooks", verb, "-f", &path, "--yes"][..if verb == "plan" { 4 } else { 5 }],
                ),
            )
            .await;
            assert_eq!(out.code, Some(2), "{name}: {}", out.stderr);
            assert_eq!(count, 0, "{name}: a request was made");
            assert!(out.stdout.is_empty(), "{name}: {}", out.stdout);
            let prefix = format!("error: {path}:{line}: {message}");
            assert!(out.stderr.starts_with(&prefix), "{name}: {:?}", out.stderr);
            assert_eq!(out.stderr.lines().count(), 1, "{name}: {:?}", out.stderr);
        }
    }
    let out = chip(&mock, &["webhooks", "plan", "-f", "/nonexistent/chip.toml"]).await;
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr
            .starts_with("error: /nonexistent/chip.toml: cannot read it"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_step_exits_1_and_the_rerun_converges() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "f.toml", FILE);
    // The first create is stored, but its answer is lost.
    mock.set_faults(Faults::script(vec![
        Fault::DelayMs(0),
        Fault::DropAfterHandling,
    ]));
    let out = chip(&mock, &["webhooks", "apply", "-f", &file, "--yes"]).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("FAILED: failed to create \"shop/staging/orders\""),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr
            .starts_with("error: apply stopped after 0 of 2 change(s): "),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("run apply again"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1);
    assert_eq!(mock.webhook_count(), 1);

    let out = chip(&mock, &["webhooks", "apply", "-f", &file, "--yes"]).await;
    assert!(
        out.ok().contains("= unchanged \"shop/staging/orders\""),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("Plan: 1 to create, 0 to update, 0 to delete, 1 unchanged.")
    );
    assert_eq!(mock.webhook_count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicates_fail_apply_until_pruned() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "f.toml", FILE);
    for _ in 0..2 {
        chip(
            &mock,
            &[
                "webhooks",
                "create",
                "--title",
                "shop/staging/audit",
                "--callback",
                "https://staging.shop.example.com/chip/audit",
                "--all-events",
            ],
        )
        .await
        .ok();
    }
    chip(
        &mock,
        &[
            "webhooks",
            "create",
            "--title",
            "shop/staging/gone",
            "--callback",
            "https://staging.shop.example.com/chip/gone",
            "--all-events",
        ],
    )
    .await
    .ok();
    let out = chip(&mock, &["webhooks", "apply", "-f", &file, "--yes"]).await;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stdout
            .contains("! 2 webhooks are titled \"shop/staging/audit\""),
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stderr,
        "error: the account does not match the file: several webhooks share the title(s) \
         \"shop/staging/audit\"; run with --prune to keep one of each\n"
    );
    assert_eq!(mock.webhook_count(), 4);

    let out = chip(
        &mock,
        &["webhooks", "apply", "-f", &file, "--yes", "--prune"],
    )
    .await;
    assert!(out.ok().ends_with("The account matches the file.\n"));
    assert_eq!(
        mock.webhook_count(),
        3,
        "the unlisted webhook stays without a prefix"
    );

    let out = chip(
        &mock,
        &[
            "webhooks",
            "apply",
            "-f",
            &file,
            "--yes",
            "--prune",
            "--prune-prefix",
            "shop/staging/",
        ],
    )
    .await;
    assert!(
        out.ok().contains("ok: deleted \"shop/staging/gone\""),
        "{}",
        out.stdout
    );
    assert_eq!(mock.webhook_count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_out_writes_a_bundle_that_verifies_every_managed_webhook() {
    let mock = mock().await;
    let applied = apply_with_keys_out(&mock).await;
    let (file, keys_arg, out) = (&applied.file, applied.keys.as_str(), &applied.applied);
    let keys = std::path::Path::new(keys_arg);
    assert!(
        out.ok()
            .ends_with(&format!("Wrote 2 public key(s) to {keys_arg}.\n")),
        "{}",
        out.stdout
    );
    let bundle = std::fs::read_to_string(keys).unwrap();
    let verifier = Verifier::from_pem_bundle(&bundle).unwrap();
    assert_eq!(verifier.keys().len(), 2);

    let (log, _) = one_delivery_to_each(&mock).await;
    for delivery in &log {
        verifier
            .verify(delivery.body.as_bytes(), &delivery.signature)
            .unwrap();
    }

    // Running it again rewrites the same bundle, with no write call to CHIP.
    let before = ids(&mock);
    let out = chip(
        &mock,
        &[
            "webhooks",
            "apply",
            "-f",
            file,
            "--yes",
            "--keys-out",
            keys_arg,
        ],
    )
    .await;
    out.ok();
    assert_eq!(std::fs::read_to_string(keys).unwrap(), bundle);
    assert_eq!(ids(&mock), before);
}
