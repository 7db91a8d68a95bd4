//! `chip webhooks plan` and `apply` read only the variables a file declares (`vars = [...]`) or
//! that `--var` names: a secret exported in CI cannot reach a webhook, the plan output or the key
//! bundle; the API key in use is refused wherever it would go (and never printed); a control
//! character cannot forge lines of the plan. Every refusal is exit 2 before any request.
#![allow(clippy::unwrap_used)]

mod common;

use chip_gate_mock::{Fault, Faults, MockServer};
use common::{Run, command, mock, run, write};

/// `chip args...` with `env` set, and how many API requests it made. Asserts that neither the
/// API key nor any `secrets` value is printed.
async fn chip(
    mock: &MockServer,
    args: &[&str],
    env: &[(&str, &str)],
    secrets: &[&str],
) -> (usize, Run) {
    const N: usize = 1000;
    mock.set_faults(Faults::script(vec![Fault::DelayMs(0); N]));
    let mut command = command(mock, args);
    for (name, value) in env {
        command.env(name, value);
    }
    let out = run(command).await;
    let count = N - mock.faults().script.len();
    mock.set_faults(Faults::none());
    for secret in secrets.iter().chain([&mock.api_key()]) {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "a secret was printed: {}{}",
            out.stdout,
            out.stderr
        );
    }
    (count, out)
}

/// Asserts a refusal: exit 2, one line on stderr starting with `prefix`, no request, no output.
fn refused(count: usize, out: &Run, prefix: &str) {
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(count, 0, "a request was made");
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(out.stderr.starts_with(prefix), "{:?}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{:?}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn undeclared_variables_are_never_read_and_var_lets_them_in() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = "AKIA-very-secret-value";
    let env = [
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("SHOP_HOST", "shop.example.com"),
    ];
    let file = write(
        dir.path(),
        "f.toml",
        "vars = [\"SHOP_HOST\"]\n\n[[webhook]]\ntitle = \"t\"\ncallback = \
         \"https://${SHOP_HOST}/chip?s=${AWS_SECRET_ACCESS_KEY}\"\nall_events = true\n",
    );
    for verb in ["plan", "apply"] {
        let (count, out) = chip(
            &mock,
            &["webhooks", verb, "-f", &file, "--yes"][..if verb == "plan" { 4 } else { 5 }],
            &env,
            &[secret],
        )
        .await;
        refused(
            count,
            &out,
            &format!(
                "error: {file}:5: ${{AWS_SECRET_ACCESS_KEY}} is not declared: a webhook file \
                 reads only the variables it declares; add vars = [\"AWS_SECRET_ACCESS_KEY\"] at \
                 the top of the file (with chip, or pass --var AWS_SECRET_ACCESS_KEY)"
            ),
        );
    }
    assert_eq!(mock.webhook_count(), 0);

    // --var NAME=VALUE sets a value (it wins over the environment); --var NAME reads it.
    let (_, out) = chip(
        &mock,
        &[
            "webhooks",
            "plan",
            "-f",
            &file,
            "--var",
            "AWS_SECRET_ACCESS_KEY=public",
            "--var",
            "SHOP_HOST=other.example",
        ],
        &env,
        &[secret],
    )
    .await;
    assert!(
        out.ok()
            .contains("callback:   https://other.example/chip?s=public\n"),
        "{}",
        out.stdout
    );
    let undeclared = write(
        dir.path(),
        "g.toml",
        "[[webhook]]\ntitle = \"t\"\ncallback = \"https://${SHOP_HOST}/chip\"\nall_events = true\n",
    );
    let (_, out) = chip(
        &mock,
        &["webhooks", "plan", "-f", &undeclared, "--var", "SHOP_HOST"],
        &env,
        &[secret],
    )
    .await;
    assert!(
        out.ok()
            .contains("callback:   https://shop.example.com/chip\n"),
        "{}",
        out.stdout
    );

    // --var cannot name the key's variable, or something that is not a name.
    for bad in ["CHIP_API_KEY", "CHIP_API_KEY=x", "A-B", "=x"] {
        let (count, out) = chip(
            &mock,
            &["webhooks", "plan", "-f", &undeclared, "--var", bad],
            &env,
            &[],
        )
        .await;
        refused(count, &out, "error: --var: ");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_key_in_use_is_refused_wherever_it_would_go() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let key = mock.api_key().to_owned();
    // The live key exported under another name, declared by the file.
    let file = write(
        dir.path(),
        "f.toml",
        "vars = [\"TOKEN\"]\n[[webhook]]\ntitle = \"t\"\ncallback = \
         \"https://shop.example.com/chip?t=${TOKEN}\"\nall_events = true\n",
    );
    let keys = dir.path().join("keys.pem");
    for verb in ["plan", "apply"] {
        let args = [
            "webhooks",
            verb,
            "-f",
            &file,
            "--yes",
            "--keys-out",
            keys.to_str().unwrap(),
        ];
        let (count, out) = chip(
            &mock,
            if verb == "plan" {
                &args[..4]
            } else {
                &args[..]
            },
            &[("TOKEN", &key)],
            &[],
        )
        .await;
        refused(
            count,
            &out,
            &format!("error: {file}:4: the value of TOKEN contains the API key in use"),
        );
    }
    // Given with --var, or written in the file's title: refused the same way.
    let (count, out) = chip(
        &mock,
        &[
            "webhooks",
            "plan",
            "-f",
            &file,
            "--var",
            &format!("TOKEN=x{key}x"),
        ],
        &[],
        &[],
    )
    .await;
    refused(
        count,
        &out,
        &format!("error: {file}:4: the value of TOKEN contains the API key in use"),
    );
    let titled = write(
        dir.path(),
        "g.toml",
        &format!(
            "[[webhook]]\ntitle = \"key {key}\"\ncallback = \"https://a.example\"\nall_events = \
             true\n"
        ),
    );
    let (count, out) = chip(&mock, &["webhooks", "plan", "-f", &titled], &[], &[]).await;
    refused(
        count,
        &out,
        &format!("error: {titled}:2: the title contains the API key in use"),
    );
    assert_eq!(mock.webhook_count(), 0);
    assert!(!keys.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_control_character_cannot_forge_lines_of_the_plan() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let forged = write(
        dir.path(),
        "f.toml",
        "[[webhook]]\ntitle = \"t\"\ncallback = \"https://a.example/x\\n= unchanged \
         \\\"billing\\\"\\nNo changes: the account matches the file.\"\nall_events = true\n",
    );
    let (count, out) = chip(&mock, &["webhooks", "plan", "-f", &forged], &[], &[]).await;
    refused(
        count,
        &out,
        &format!("error: {forged}:3: the callback contains the control character U+000A"),
    );
    let from_env = write(
        dir.path(),
        "g.toml",
        "vars = [\"TITLE\"]\n[[webhook]]\ntitle = \"${TITLE}\"\ncallback = \
         \"https://a.example\"\nall_events = true\n",
    );
    for value in ["a\rb", "a\u{1b}[2Jb", "a\u{7f}b", "a\u{202e}b"] {
        let (count, out) = chip(
            &mock,
            &["webhooks", "plan", "-f", &from_env],
            &[("TITLE", value)],
            &[],
        )
        .await;
        refused(
            count,
            &out,
            &format!("error: {from_env}:3: the value of TITLE contains the control character U+"),
        );
    }
}
