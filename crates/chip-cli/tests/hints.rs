//! The errors of a first hour say what to do: a base URL without `/api/v1` is named by every
//! command (not blamed on the webhook), a 401 from a local mock is worded the same by `webhooks
//! list` and `trigger` (the mock's key changes at every start; how to pin one), and `verify` with
//! the wrong key says which key verifies a webhook's deliveries.
#![allow(clippy::unwrap_used)]

mod common;

use chip_gate::Digest;
use chip_gate::testing::TestSigner;
use common::{chip, command, mock, run};

const ID: &str = "6f1a4e2c-3b5d-4c7e-9a8f-0b1c2d3e4f50";

#[tokio::test(flavor = "multi_thread")]
async fn a_base_url_without_api_v1_is_named_by_every_command() {
    let mock = mock().await;
    let root = mock.root_url();
    let commands: [&[&str]; 6] = [
        &["webhooks", "list"],
        &["webhooks", "get", ID],
        &["webhooks", "delete", ID],
        &["webhooks", "patch", ID, "--title", "x"],
        &[
            "webhooks",
            "create",
            "--title",
            "t",
            "--callback",
            "https://shop.example.com/chip",
            "--event",
            "purchase.paid",
        ],
        &["listen", "--port", "0", "--webhook", ID],
    ];
    for args in commands {
        let mut cmd = command(&mock, args);
        cmd.env("CHIP_BASE_URL", &root);
        let out = run(cmd).await;
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("should end in /api/v1"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("deleted"), "{args:?}: {}", out.stderr);
    }
    // On the right base URL, an unknown webhook is the webhook's fault.
    let out = chip(&mock, &["webhooks", "get", ID]).await;
    assert!(out.stderr.contains("no webhook"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_from_the_mock_is_worded_the_same_by_list_and_trigger() {
    let mock = mock().await;
    let mut hints = Vec::new();
    for args in [&["webhooks", "list"][..], &["trigger", "purchase.paid"]] {
        let mut cmd = command(&mock, args);
        cmd.env("CHIP_API_KEY", "test_mock_the_key_of_an_earlier_run");
        let out = run(cmd).await;
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(chip_gate::LOCAL_MOCK_KEY_HINT),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stderr.contains("chip mock --api-key"), "{}", out.stderr);
        hints.push(out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_with_another_key_says_which_key_verifies_deliveries() {
    let mock = mock().await;
    let dir = tempfile::tempdir().unwrap();
    let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../chip-gate-inbox/tests/fixtures");
    let signer = TestSigner::from_pem(
        &std::fs::read_to_string(fixtures.join("rsa2048-private-pkcs8.pem")).unwrap(),
    )
    .unwrap();
    let body = br#"{"id":"p1","type":"purchase","event_type":"purchase.paid"}"#;
    let signature = signer.sign(body, Digest::Sha256).unwrap();
    std::fs::write(dir.path().join("body.json"), body).unwrap();
    // The company key (`chip public-key`), not the webhook's.
    std::fs::write(dir.path().join("company.pem"), mock.company_public_key()).unwrap();
    let body_path = dir.path().join("body.json");
    let key_path = dir.path().join("company.pem");
    let out = chip(
        &mock,
        &[
            "verify",
            "--key",
            key_path.to_str().unwrap(),
            "--signature",
            &signature,
            body_path.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.starts_with("invalid: "), "{}", out.stdout);
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
    assert!(
        out.stderr.contains("webhook's own public_key"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("chip webhooks get ID --public-key"),
        "{}",
        out.stderr
    );
    // The right key: valid, and no hint.
    std::fs::write(
        dir.path().join("right.pem"),
        std::fs::read_to_string(fixtures.join("rsa2048-public-spki.pem")).unwrap(),
    )
    .unwrap();
    let right = dir.path().join("right.pem");
    let out = chip(
        &mock,
        &[
            "verify",
            "--key",
            right.to_str().unwrap(),
            "--signature",
            &signature,
            body_path.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(!out.stderr.contains("hint"), "{}", out.stderr);
}
