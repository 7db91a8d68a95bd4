//! `Client::from_env()` reads `CHIP_API_KEY` and `CHIP_BASE_URL`.
//!
//! The environment of a running test cannot be changed safely (and `unsafe` is forbidden here), so the
//! test runs this same test binary again as a child process with the variables set, and the child
//! reports through its exit status.
#![allow(clippy::unwrap_used)]

mod common;

use chip_gate::{Client, DEFAULT_BASE_URL, Error};
use common::script::{ScriptServer, json, webhook_json};
use common::{ID, KEY};

const MODE: &str = "CHIP_GATE_FROM_ENV_CHILD";
const NAME: &str = "from_env_reads_the_key_and_base_url";

/// Run this test again in a child process, in `mode`, with `vars` set and any inherited CHIP_*
/// variables removed; return whether it passed, with its output.
async fn child(mode: &str, vars: &[(&str, String)]) -> (bool, String) {
    let mut cmd = common::this_test(NAME);
    cmd.env(MODE, mode)
        .env_remove("CHIP_API_KEY")
        .env_remove("CHIP_BASE_URL");
    for (name, value) in vars {
        cmd.env(name, value);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What the child checks, by mode.
async fn in_child(mode: &str) {
    match mode {
        "call" => {
            let client = Client::from_env().unwrap();
            assert!(!format!("{client:?}").contains(KEY));
            assert!(!client.base_url().ends_with('/'));
            let webhook = client
                .webhooks()
                .retrieve(ID.parse().unwrap())
                .await
                .unwrap();
            assert_eq!(webhook.id.to_string(), ID);
        }
        "default_url" => {
            let client = Client::from_env().unwrap();
            assert_eq!(client.base_url(), DEFAULT_BASE_URL);
        }
        "missing_key" => {
            let err = Client::from_env().unwrap_err();
            assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");
            assert!(err.to_string().contains("CHIP_API_KEY"), "{err}");
        }
        "remote_http" => {
            let err = Client::from_env().unwrap_err();
            assert!(err.to_string().contains("plain http://"), "{err}");
            assert!(!format!("{err:?}").contains(KEY));
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_env_reads_the_key_and_base_url() {
    if let Ok(mode) = std::env::var(MODE) {
        in_child(&mode).await;
        return;
    }

    let server = ScriptServer::start(|_, _| json(200, webhook_json(ID, "t", &[]))).await;
    let key = ("CHIP_API_KEY", KEY.to_owned());
    let (ok, out) = child(
        "call",
        &[
            key.clone(),
            ("CHIP_BASE_URL", format!("{}/", server.base_url)),
        ],
    )
    .await;
    assert!(ok, "{out}");
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, format!("/api/v1/webhooks/{ID}/"));
    assert_eq!(
        seen[0].header("authorization"),
        Some(&*format!("Bearer {KEY}"))
    );

    let (ok, out) = child("default_url", std::slice::from_ref(&key)).await;
    assert!(ok, "{out}");
    let (ok, out) = child(
        "default_url",
        &[key.clone(), ("CHIP_BASE_URL", String::new())],
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = child("missing_key", &[]).await;
    assert!(ok, "{out}");
    let (ok, out) = child(
        "remote_http",
        &[
            key,
            ("CHIP_BASE_URL", "http://gate.chip-in.asia/api/v1".into()),
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert!(!out.contains(KEY), "{out}");
}
