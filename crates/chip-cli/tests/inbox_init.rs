//! `chip inbox init`: the README's `chip inbox` walkthrough starts here, on a fresh machine with
//! no database. It creates the inbox (a SQLite file, owner-only) or adds its tables to a
//! database that has none, keeps whatever is there, and changes nothing when run again.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Output;

use chip_gate_inbox::{Inbox, InboxOptions};

fn chip(args: &[&str]) -> Output {
    common::bare(args).output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn init_creates_the_inbox_the_other_commands_then_open() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("chip-inbox.db").display());

    // Before: the first command of the walkthrough says how to make one.
    let out = chip(&["inbox", "status", "--database-url", &url]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("chip inbox init"), "{stderr}");

    let out = chip(&["inbox", "init", "--database-url", &url]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("Created the inbox at sqlite://"),
        "{stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("chip-inbox.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "owner-only: {mode:o}");
    }

    let out = chip(&["inbox", "status", "--json", "--database-url", &url]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["counts"]["received"], 0, "{stdout}");

    // Again: nothing to do, exit 0.
    let out = chip(&["inbox", "init", "--database-url", &url]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("already set up"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_keeps_what_is_there() {
    let dir = tempfile::tempdir().unwrap();
    // Another app's database, without an inbox: the inbox's tables are added beside its own.
    let url = format!("sqlite://{}", dir.path().join("shop.db").display());
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&format!("{url}?mode=rwc"))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE shipments (id TEXT PRIMARY KEY)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO shipments VALUES ('p1')")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }
    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || chip(&["inbox", "init", "--database-url", &url])
    })
    .await
    .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("Created the inbox's tables in"), "{stdout}");
    // The shop's row is still there, and the inbox opens without migrating.
    let inbox = Inbox::connect_with(&url, InboxOptions::default().migrate(false))
        .await
        .unwrap();
    let pool = inbox.sqlite_pool().unwrap();
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM shipments")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 1);
    inbox.close().await;
}

#[test]
fn init_refuses_what_cannot_be_an_inbox() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}", dir.path().join("no/such/inbox.db").display());
    for (url, code, says) in [
        (missing.as_str(), 1, "does not exist (create it first)"),
        ("sqlite::memory:", 2, "in-memory"),
        (
            "mysql://shop@127.0.0.1/shop",
            2,
            "use sqlite://PATH or postgres://",
        ),
    ] {
        let out = chip(&["inbox", "init", "--database-url", url]);
        let (stdout, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(code), "{url}: {stdout}{stderr}");
        assert!(stderr.contains(says), "{url}: {stderr}");
    }
    assert!(!dir.path().join("no").exists(), "nothing created");
}
