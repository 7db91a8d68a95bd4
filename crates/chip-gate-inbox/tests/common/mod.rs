//! Helpers shared by the inbox's tests: keys, signed bodies, and real databases.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use bytes::Bytes;
use chip_gate::testing::TestSigner;
use chip_gate::{Digest, Verifier};
use http::{HeaderMap, HeaderValue};
use sqlx::Connection;

// Shared with the CLI's tests, which include this file by path.
mod drop_database;
#[allow(unused_imports, reason = "not every test file drops a database")]
pub use drop_database::drop_test_database;

/// The environment variable holding a PostgreSQL URL for the PostgreSQL tests (a role that may
/// create databases). Without it those tests say they were skipped.
pub const POSTGRES_URL_ENV: &str = "CHIP_INBOX_TEST_POSTGRES_URL";

pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap()
}

pub fn signer() -> TestSigner {
    TestSigner::from_pem(&fixture("rsa2048-private-pkcs8.pem")).unwrap()
}

pub fn other_signer() -> TestSigner {
    TestSigner::from_pem(&fixture("rsa3072-private-pkcs8.pem")).unwrap()
}

pub fn verifier() -> Verifier {
    Verifier::from_pem(&fixture("rsa2048-public-spki.pem")).unwrap()
}

/// A CHIP-like purchase delivery body.
pub fn purchase_body(id: &str, event: &str, updated_on: i64) -> Bytes {
    Bytes::from(format!(
        r#"{{"id":"{id}","type":"purchase","event_type":"{event}","created_on":1700000000,"updated_on":{updated_on},"status":"paid","purchase":{{"total":1000,"currency":"MYR"}}}}"#
    ))
}

pub fn signed_headers(signer: &TestSigner, body: &[u8]) -> HeaderMap {
    signer.signed_headers(body, Digest::Sha256).unwrap()
}

pub fn header_map(signature: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-signature", HeaderValue::from_str(signature).unwrap());
    headers
}

/// Runs one statement of a test's own on the inbox's database, whichever it is.
pub async fn exec(inbox: &chip_gate_inbox::Inbox, sql: &str) {
    match (inbox.sqlite_pool(), inbox.postgres_pool()) {
        (Some(pool), _) => sqlx::query(sql).execute(pool).await.map(|_| ()),
        (_, Some(pool)) => sqlx::query(sql).execute(pool).await.map(|_| ()),
        _ => unreachable!("an inbox is on SQLite or PostgreSQL"),
    }
    .unwrap();
}

/// The one integer a test's own query returns, on the inbox's database.
pub async fn scalar(inbox: &chip_gate_inbox::Inbox, sql: &str) -> i64 {
    match (inbox.sqlite_pool(), inbox.postgres_pool()) {
        (Some(pool), _) => sqlx::query_scalar(sql).fetch_one(pool).await,
        (_, Some(pool)) => sqlx::query_scalar(sql).fetch_one(pool).await,
        _ => unreachable!("an inbox is on SQLite or PostgreSQL"),
    }
    .unwrap()
}

/// A fresh SQLite database in a temporary directory (kept alive by the returned guard).
pub fn sqlite_url() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("inbox.db").display());
    (url, dir)
}

/// A fresh PostgreSQL database on the server named by [`POSTGRES_URL_ENV`], or `None` (and a
/// line saying the test was skipped) when the variable is not set.
pub async fn postgres_url(test: &str) -> Option<String> {
    let Ok(base) = std::env::var(POSTGRES_URL_ENV) else {
        skipped(&format!(
            "set {POSTGRES_URL_ENV} to run them (first skipped: {test})"
        ));
        return None;
    };
    let name = format!("chip_inbox_t_{:016x}", fastrand::u64(..));
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    Some(format!("{prefix}/{name}"))
}

/// Says, once per test binary, that its PostgreSQL tests were skipped, why, and how to run them.
///
/// libtest decides `#[ignore]` when the binary is built, and the database's URL is only known when
/// it runs, so a skipped test is counted as passed: this line (straight to stderr, past the
/// harness's capture) is what shows it, once rather than once per test.
pub fn skipped(how: &str) {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        use std::io::Write;
        let binary = std::env::current_exe()
            .ok()
            .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .map(|stem| {
                stem.rsplit_once('-')
                    .map_or(stem.clone(), |(name, _)| name.to_owned())
            })
            .unwrap_or_else(|| "this test binary".to_owned());
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the PostgreSQL tests of {binary} (counted as passed, nothing ran): {how}, \
             e.g. {POSTGRES_URL_ENV}=postgres://USER:PASSWORD@127.0.0.1/DB cargo test -p \
             chip-gate-inbox -- postgres (a role that may create databases; .ci/run starts one)"
        );
    });
}

/// Drops a database made by [`postgres_url`] (the test passed; a failed one leaves it to look at).
pub async fn drop_postgres(url: &str) {
    let (_, name) = url.rsplit_once('/').unwrap();
    let base = std::env::var(POSTGRES_URL_ENV).unwrap();
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    drop_test_database(&mut conn, name).await;
}

/// Runs an async scenario on SQLite, and on PostgreSQL when configured.
#[macro_export]
macro_rules! on_both {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let (url, _dir) = $crate::common::sqlite_url();
                super::$scenario(url).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(url) =
                    $crate::common::postgres_url(concat!(stringify!($scenario), "::postgres")).await
                {
                    super::$scenario(url.clone()).await;
                    $crate::common::drop_postgres(&url).await;
                }
            }
        }
    };
}

/// Another connection holding the inbox's write lock (SQLite: an open `BEGIN IMMEDIATE`;
/// PostgreSQL: a lock on the deliveries table that conflicts with inserts and updates).
pub enum WriteLock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteLock {
    pub async fn take(url: &str, sqlite: bool) -> Self {
        use sqlx::Connection;
        if sqlite {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .unwrap();
            Self::Sqlite(conn)
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query("BEGIN").execute(&mut conn).await.unwrap();
            sqlx::query("LOCK TABLE chip_inbox_deliveries IN SHARE ROW EXCLUSIVE MODE")
                .execute(&mut conn)
                .await
                .unwrap();
            Self::Postgres(conn)
        }
    }

    pub async fn release(self) {
        match self {
            Self::Sqlite(mut conn) => {
                sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
            }
            Self::Postgres(mut conn) => {
                sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
            }
        }
    }
}

/// Stores one `purchase.paid` delivery, updated at `updated_on`, for each object `{prefix}-{n}`
/// with `n` in `objects`, through one intake.
pub async fn store_objects(
    inbox: &chip_gate_inbox::Inbox,
    prefix: &str,
    objects: std::ops::Range<u32>,
    updated_on: i64,
) {
    let intake = inbox.intake(verifier()).unwrap();
    for n in objects {
        let body = purchase_body(&format!("{prefix}-{n}"), "purchase.paid", updated_on);
        intake
            .receive(&signed_headers(&signer(), &body), body)
            .await
            .unwrap();
    }
}

/// Worker settings for tests: polls every 20 ms, retries after 10-40 ms.
pub fn fast_worker() -> chip_gate_inbox::WorkerOptions {
    chip_gate_inbox::WorkerOptions::default()
        .poll_interval(std::time::Duration::from_millis(20))
        .backoff(chip_gate_inbox::Backoff {
            initial: std::time::Duration::from_millis(10),
            max: std::time::Duration::from_millis(40),
        })
}

/// Handles everything due with a handler that succeeds, returning what was handed over, in order.
pub async fn drain(
    inbox: &chip_gate_inbox::Inbox,
    options: chip_gate_inbox::WorkerOptions,
) -> Vec<chip_gate_inbox::StoredDelivery> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let worker = inbox.worker(options);
    loop {
        let seen = std::sync::Arc::clone(&seen);
        let report = worker
            .process_batch(move |delivery: chip_gate_inbox::StoredDelivery| {
                let seen = std::sync::Arc::clone(&seen);
                async move {
                    seen.lock().unwrap().push(delivery);
                    Ok::<(), String>(())
                }
            })
            .await
            .unwrap();
        if report.handed_over == 0 && report.stale == 0 {
            break;
        }
    }
    seen.lock().unwrap().clone()
}

/// The newest inbox schema version for the database at `url`. The two went apart after version 2:
/// PostgreSQL's 3 to 5 are indexes for its planner and its claims' walk and bodies kept
/// uncompressed; SQLite's 3 drops the index of due deliveries its planner never used and its 4
/// orders the state index by the time deliveries come due.
pub fn latest_schema(url: &str) -> i64 {
    if url.starts_with("sqlite:") { 4 } else { 5 }
}
