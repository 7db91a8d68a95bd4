//! The inbox on PostgreSQL over TLS, as on a managed service: `sslmode=verify-full` with the
//! server's root certificate connects (and the session is encrypted); a root that did not sign
//! the server's certificate is refused. Runs when `CHIP_INBOX_TEST_POSTGRES_URL` and
//! `CHIP_INBOX_TEST_POSTGRES_TLS_ROOT` (the server's root certificate, PEM) are set, as `.ci/run`
//! sets them.
#![allow(clippy::unwrap_used)]

mod common;

use chip_gate_inbox::Inbox;
use common::*;

const TLS_ROOT_ENV: &str = "CHIP_INBOX_TEST_POSTGRES_TLS_ROOT";

/// A fresh database's URL, and the server's root certificate, or `None` (said on stderr).
async fn tls_setup(test: &str) -> Option<(String, String)> {
    let Ok(root) = std::env::var(TLS_ROOT_ENV) else {
        skipped(&format!(
            "set {POSTGRES_URL_ENV}, and {TLS_ROOT_ENV} to the server's root certificate, to run \
             the TLS ones (first skipped: {test})"
        ));
        return None;
    };
    let url = postgres_url(test).await?;
    Some((url, root))
}

/// The URL with `localhost` for the host (the name the server's certificate carries) and TLS
/// parameters.
fn with_tls(url: &str, root: &str) -> String {
    let url = url.replace("@127.0.0.1:", "@localhost:");
    format!("{url}?sslmode=verify-full&sslrootcert={root}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_verify_full_connects_encrypted() {
    let Some((url, root)) = tls_setup("postgres_tls_verify_full_connects_encrypted").await else {
        return;
    };
    for tls_url in [
        with_tls(&url, &root),
        format!("{url}?sslmode=verify-full&sslrootcert={root}"),
    ] {
        let inbox = Inbox::connect(&tls_url).await.unwrap();
        let pool = inbox.postgres_pool().unwrap();
        let encrypted: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(pool)
                .await
                .unwrap();
        assert!(encrypted, "{tls_url}: the session is not encrypted");
        // The inbox works as usual over it.
        let intake = inbox.intake(verifier()).unwrap();
        let body = purchase_body("tls-1", "purchase.paid", 7);
        let receipt = intake
            .receive(&signed_headers(&signer(), &body), body)
            .await
            .unwrap();
        assert!(receipt.id.is_some());
        inbox.close().await;
    }
    drop_postgres(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_refuses_a_root_that_did_not_sign_the_server() {
    let Some((url, _root)) =
        tls_setup("postgres_tls_refuses_a_root_that_did_not_sign_the_server").await
    else {
        return;
    };
    let other = format!(
        "{}/tests/fixtures/tls/other-root.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let error = Inbox::connect(&with_tls(&url, &other)).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.to_ascii_lowercase().contains("certificate"),
        "not a certificate error: {text}"
    );
    assert!(
        !text.contains("chip_inbox:chip_inbox"),
        "the password leaked: {text}"
    );
    drop_postgres(&url).await;
}
