//! `chip inbox ...` against a real SQLite inbox in a temporary folder, filled through the
//! library's own intake (signed deliveries) and worker, as a receiving app would fill it.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use chip_gate::Digest;
use chip_gate::testing::TestSigner;
use chip_gate_inbox::{Inbox, StoredDelivery, WorkerOptions};
use common::{Run, bare, run, with_closed_stdout};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../chip-gate-inbox/tests/fixtures")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

fn purchase(id: &str, event: &str, updated_on: i64) -> Bytes {
    Bytes::from(format!(
        r#"{{"id":"{id}","type":"purchase","event_type":"{event}","created_on":1700000000,"updated_on":{updated_on},"status":"paid","purchase":{{"total":1000,"currency":"MYR"}}}}"#
    ))
}

/// A hostile event name: an escape sequence that would retitle the terminal and clear it.
const HOSTILE_EVENT: &str = r"purchase.paid\u001b]0;pwned\u0007\u001b[2J";

/// The ids of what [`populate`] stored.
struct Stored {
    /// `purchase.created` of p1: done.
    created: i64,
    /// `purchase.paid` of p1: done, delivered twice (one duplicate).
    paid: i64,
    /// `purchase.paid` of p2: its handler failed, so it is dead.
    dead: i64,
    /// p3 with a hostile event name: pending, never handled.
    pending: i64,
}

/// An inbox in `dir` with two done deliveries (one delivered twice), one dead and one pending.
async fn populate(dir: &Path) -> (String, Stored) {
    let url = format!("sqlite://{}", dir.join("inbox.db").display());
    let stored = populate_url(&url).await;
    (url, stored)
}

/// Fills the inbox at `url` as [`populate`] describes.
async fn populate_url(url: &str) -> Stored {
    let inbox = Inbox::connect(url).await.unwrap();
    let verifier = chip_gate::Verifier::from_pem(&fixture("rsa2048-public-spki.pem")).unwrap();
    let signer = TestSigner::from_pem(&fixture("rsa2048-private-pkcs8.pem")).unwrap();
    let intake = inbox.intake(verifier).unwrap();
    let store = async |body: Bytes| {
        let headers = signer.signed_headers(&body, Digest::Sha256).unwrap();
        intake.receive(&headers, body).await.unwrap()
    };
    let created = store(purchase("p1", "purchase.created", 100)).await;
    let paid = store(purchase("p1", "purchase.paid", 200)).await;
    let again = store(purchase("p1", "purchase.paid", 200)).await;
    assert!(again.duplicate);
    let dead = store(purchase("p2", "purchase.paid", 300)).await;

    let worker = inbox.worker(WorkerOptions::default().max_attempts(1));
    loop {
        let report = worker
            .process_batch(|d: StoredDelivery| async move {
                if d.summary.object_id.as_deref() == Some("p2") {
                    Err("warehouse said no\n\u{1b}[31mred")
                } else {
                    Ok(())
                }
            })
            .await
            .unwrap();
        if report.handed_over == 0 && report.stale == 0 {
            break;
        }
    }
    let pending = store(purchase("p3", HOSTILE_EVENT, 400)).await;
    inbox.close().await;
    Stored {
        created: created.id.unwrap(),
        paid: paid.id.unwrap(),
        dead: dead.id.unwrap(),
        pending: pending.id.unwrap(),
    }
}

fn command(env_url: Option<&str>, args: &[&str]) -> Command {
    let mut command = bare(args);
    command.stdin(Stdio::null());
    if let Some(url) = env_url {
        command.env("CHIP_INBOX_DATABASE_URL", url);
    }
    command
}

/// Runs `chip inbox ARGS` with the inbox's URL in `CHIP_INBOX_DATABASE_URL`.
async fn inbox(url: &str, args: &[&str]) -> Run {
    let mut all = vec!["inbox"];
    all.extend_from_slice(args);
    run(command(Some(url), &all)).await
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(run.ok_silent()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn status_counts_and_what_is_pending() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _) = populate(dir.path()).await;

    let out = inbox(&url, &["status"]).await;
    let text = out.ok_silent();
    for line in [
        "  received:        4",
        "  duplicates:      1",
        "  stale:           0 (of which expired: 0, at or below the retention horizon)",
        "  done:            2",
        "  retried:         0",
        "  dead:            1",
        "  pending:         1 (0 being handled)",
        "  finished, kept:  2",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
    }
    let oldest = text
        .lines()
        .find(|l| l.starts_with("  oldest pending:  "))
        .unwrap();
    assert!(
        oldest.ends_with("Z)") && oldest.contains(" ago (received 20"),
        "{oldest}"
    );

    let status = json(&inbox(&url, &["status", "--json"]).await);
    assert_eq!(status["counts"]["received"], 4);
    assert_eq!(status["counts"]["duplicates"], 1);
    assert_eq!(status["counts"]["dead"], 1);
    assert_eq!(status["pending"], 1);
    assert!(status["oldest_pending_received_at_ms"].as_i64().unwrap() > 0);
    assert!(status["oldest_pending_age_ms"].is_u64());

    // The flag works before or after the subcommand, and wins over the environment.
    let flag = run(command(
        Some("sqlite:///nonexistent/elsewhere.db"),
        &["inbox", "--database-url", &url, "status", "--json"],
    ))
    .await;
    assert_eq!(json(&flag)["counts"]["received"], 4);
    let after = run(command(None, &["inbox", "status", "--database-url", &url])).await;
    assert!(after.ok_silent().contains("\n  received:        4\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn list_filters_pages_and_cleans_what_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let (url, ids) = populate(dir.path()).await;

    let out = inbox(&url, &["list"]).await;
    let text = out.ok_silent();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("ID  STATE    ATTEMPTS  RECEIVED"),
        "{text}"
    );
    assert_eq!(lines.len(), 5, "a header and four deliveries:\n{text}");
    // Newest first.
    assert!(
        lines[1].starts_with(&format!("{}   pending", ids.pending)),
        "{text}"
    );
    assert!(
        lines[4].starts_with(&format!("{}   done", ids.created)),
        "{text}"
    );
    assert!(text.contains("purchase p1"), "{text}");
    assert!(text.contains("warehouse said no"), "the last error: {text}");
    assert!(
        !text.chars().any(|c| c.is_control() && c != '\n'),
        "no control character reaches the terminal: {text:?}"
    );
    assert!(text.contains("purchase.paid ]0;pwned  [2J"), "{text}");

    let dead = inbox(&url, &["list", "--state", "dead"]).await;
    let dead = dead.ok_silent();
    assert_eq!(dead.lines().count(), 2, "{dead}");
    assert!(
        dead.lines()
            .nth(1)
            .unwrap()
            .starts_with(&ids.dead.to_string())
    );

    let none = inbox(&url, &["list", "--state", "stale"]).await;
    assert_eq!(none.ok_silent(), "No deliveries.\n");

    let page = inbox(&url, &["list", "--limit", "2"]).await;
    let page = page.ok_silent();
    assert_eq!(page.lines().count(), 4, "{page}");
    assert!(
        page.ends_with(&format!(
            "(maybe more: add --before {} for the next page)\n",
            ids.dead
        )),
        "{page}"
    );
    let next = json(&inbox(&url, &["list", "--before", &ids.dead.to_string(), "--json"]).await);
    let next_ids: Vec<i64> = next
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(next_ids, [ids.paid, ids.created]);

    let of_p1 = json(&inbox(&url, &["list", "--object", "p1", "--json"]).await);
    let of_p1 = of_p1.as_array().unwrap();
    assert_eq!(of_p1.len(), 2);
    assert_eq!(of_p1[0]["state"], "done");
    assert_eq!(of_p1[0]["duplicates"], 1);
    assert_eq!(of_p1[0]["event"], "purchase.paid");
    assert!(of_p1[0]["received_at_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(of_p1[0].get("body").is_none());

    // The hostile event name stays exact in JSON (escaped, never raw).
    let all = inbox(&url, &["list", "--json"]).await;
    assert!(!all.stdout.contains('\u{1b}'));
    assert_eq!(
        json(&all)[0]["event"],
        "purchase.paid\u{1b}]0;pwned\u{7}\u{1b}[2J"
    );

    // Usage errors: exit 2.
    for args in [
        &["list", "--state", "lost"][..],
        &["list", "--limit", "0"],
        &["list", "--limit", "1001"],
        &["show", "seven"],
    ] {
        let out = inbox(&url, args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn show_prints_the_body_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (url, ids) = populate(dir.path()).await;
    let dead = ids.dead.to_string();

    let out = inbox(&url, &["show", &dead]).await;
    let text = out.ok_silent();
    for line in [
        format!("id:             {dead}"),
        "state:          dead".to_owned(),
        "event:          purchase.paid".to_owned(),
        "object:         purchase p2".to_owned(),
        "updated_on:     1970-01-01T00:05:00Z".to_owned(),
        "dedup_key:      p2:purchase.paid:300".to_owned(),
        "attempts:       1".to_owned(),
        "last error:     warehouse said no  [31mred".to_owned(),
        "typing problem: -".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
    }
    assert!(text.contains("\nbody:           "), "{text}");
    assert!(text.contains(" bytes (--body prints it)"), "{text}");
    assert!(
        !text.contains("MYR") && !text.contains("signature"),
        "{text}"
    );

    let body = purchase("p2", "purchase.paid", 300);
    let with_body = inbox(&url, &["show", &dead, "--body"]).await;
    let with_body = with_body.ok_silent();
    assert!(with_body.contains(&format!("body ({} bytes):\n", body.len())));
    assert!(with_body.ends_with(&format!("{}\n", std::str::from_utf8(&body).unwrap())));
    assert!(with_body.contains("\nsignature:      "), "{with_body}");

    let meta = json(&inbox(&url, &["show", &dead, "--json"]).await);
    assert_eq!(meta["id"], ids.dead);
    assert_eq!(meta["state"], "dead");
    assert!(meta.get("body").is_none() && meta.get("signature").is_none());
    let full = json(&inbox(&url, &["show", &dead, "--json", "--body"]).await);
    assert_eq!(full["body"], std::str::from_utf8(&body).unwrap());
    assert!(full["signature"].as_str().unwrap().len() > 100);

    // The hostile delivery: cleaned for the terminal, exact in JSON.
    let pending = ids.pending.to_string();
    let hostile = inbox(&url, &["show", &pending, "--body"]).await;
    let hostile = hostile.ok_silent();
    assert!(!hostile.chars().any(|c| c.is_control() && c != '\n'));
    assert!(hostile.contains("next attempt:   20"), "{hostile}");
    let exact = json(&inbox(&url, &["show", &pending, "--json", "--body"]).await);
    let raw = purchase("p3", HOSTILE_EVENT, 400);
    assert_eq!(exact["body"], std::str::from_utf8(&raw).unwrap());

    let missing = inbox(&url, &["show", "9999"]).await;
    assert_eq!(missing.failed(1), "error: no delivery with id 9999");
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_and_replay_requeue_what_they_may() {
    let dir = tempfile::tempdir().unwrap();
    let (url, ids) = populate(dir.path()).await;
    let state = async |id: i64| {
        json(&inbox(&url, &["show", &id.to_string(), "--json"]).await)["state"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    let dead = ids.dead.to_string();
    let retried = inbox(&url, &["retry", &dead]).await;
    assert_eq!(
        retried.ok_silent(),
        format!("Delivery {dead} is pending again: due now, with a fresh set of attempts.\n")
    );
    assert_eq!(state(ids.dead).await, "pending");
    let again = inbox(&url, &["retry", &dead]).await;
    let line = again.failed(1);
    assert!(
        line.starts_with(&format!(
            "error: delivery {dead} is pending already, nothing to retry: 0 attempt(s) so far, \
             the next one due 20"
        )),
        "{line}"
    );

    let done = ids.created.to_string();
    let line = inbox(&url, &["retry", &done]).await;
    assert_eq!(
        line.failed(1),
        format!("error: delivery {done} is done; only a dead delivery can be retried")
    );
    let replayed = inbox(&url, &["replay", &done]).await;
    assert_eq!(
        replayed.ok_silent(),
        format!("Delivery {done} is pending again: it will be handed over once more.\n")
    );
    assert_eq!(state(ids.created).await, "pending");
    let pending = ids.pending.to_string();
    let line = inbox(&url, &["replay", &pending]).await;
    assert!(
        line.failed(1).starts_with(&format!(
            "error: delivery {pending} is pending already, nothing to replay: "
        )),
        "{}",
        line.stderr
    );

    for command in ["retry", "replay"] {
        let missing = inbox(&url, &[command, "424242"]).await;
        assert_eq!(missing.failed(1), "error: no delivery with id 424242");
    }
    let status = json(&inbox(&url, &["status", "--json"]).await);
    assert_eq!(status["pending"], 3);
    assert_eq!(status["dead"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_removes_finished_deliveries_only() {
    let dir = tempfile::tempdir().unwrap();
    let (url, ids) = populate(dir.path()).await;

    let short = inbox(&url, &["purge", "--older-than", "1h"]).await;
    assert!(short.failed(2).contains("pass --force"), "{}", short.stderr);
    let bad = inbox(&url, &["purge", "--older-than", "soon"]).await;
    assert_eq!(bad.code, Some(2));

    let none = inbox(&url, &["purge", "--older-than", "7d"]).await;
    assert_eq!(
        none.ok_silent(),
        "Removed 0 done or stale deliveries finished more than 7d ago.\n"
    );
    let now = inbox(&url, &["purge", "--older-than", "0s", "--force"]).await;
    assert_eq!(
        now.ok_silent(),
        "Removed 2 done or stale deliveries finished more than 0s ago.\n"
    );
    let left = json(&inbox(&url, &["list", "--json"]).await);
    let left: Vec<i64> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect();
    assert_eq!(left, [ids.pending, ids.dead], "dead and pending are kept");
    // The counts stay: they count since the inbox was created.
    let status = json(&inbox(&url, &["status", "--json"]).await);
    assert_eq!(status["counts"]["done"], 2);
    assert_eq!(status["finished"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_database_urls_are_one_line_errors_that_never_show_a_password() {
    let dir = tempfile::tempdir().unwrap();

    let missing = run(command(None, &["inbox", "status"])).await;
    assert!(
        missing.failed(2).contains("CHIP_INBOX_DATABASE_URL"),
        "{}",
        missing.stderr
    );
    let empty = run(command(Some("  "), &["inbox", "list"])).await;
    empty.failed(2);

    let unsupported = run(command(
        Some("mysql://shop:hunter2@db/shop"),
        &["inbox", "status"],
    ))
    .await;
    assert_eq!(
        unsupported.failed(2),
        "error: unsupported database URL mysql://shop:***@db/shop: use sqlite://PATH or \
         postgres://USER@HOST/DB"
    );
    let bare = run(command(Some("chip-inbox.db"), &["inbox", "status"])).await;
    bare.failed(2);

    // A mistyped SQLite path is an error, never a new empty inbox.
    let absent = dir.path().join("typo.db");
    let absent_url = format!("sqlite://{}", absent.display());
    let out = run(command(Some(&absent_url), &["inbox", "status"])).await;
    assert!(
        out.failed(1).contains("no inbox database at "),
        "{}",
        out.stderr
    );
    assert!(!absent.exists());

    // A file that is not a database.
    let junk = dir.path().join("junk.db");
    std::fs::write(
        &junk,
        "not a database, just text that is long enough to be a header\n".repeat(50),
    )
    .unwrap();
    let out = run(command(
        Some(&format!("sqlite://{}", junk.display())),
        &["inbox", "status"],
    ))
    .await;
    assert!(
        out.failed(1).contains("cannot open the inbox at sqlite://"),
        "{}",
        out.stderr
    );

    // PostgreSQL that is not there (port 1 on loopback): the password is never shown, from the
    // environment or from the flag (which adds a warning about `ps`).
    let pg = "postgres://shop:hunter2@127.0.0.1:1/shop";
    // Both wait out the connection timeout: run them side by side.
    let (from_env, from_flag) = tokio::join!(
        run(command(Some(pg), &["inbox", "status"])),
        run(command(None, &["inbox", "list", "--database-url", pg])),
    );
    let line = from_env.failed(1);
    assert!(
        line.starts_with("error: cannot open the inbox at postgres://shop:***@127.0.0.1:1/shop: "),
        "{line}"
    );
    let out = from_flag;
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr
            .starts_with("warning: a password in --database-url"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 2, "{}", out.stderr);
    assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    let bad_port = run(command(
        Some("postgres://shop:hunter2@h:99999999/db"),
        &["inbox", "status"],
    ))
    .await;
    assert!(
        !bad_port.failed(2).contains("hunter2"),
        "{}",
        bad_port.stderr
    );
}

/// Pointed at a database that is not an inbox, or one a newer version migrated, `chip inbox`
/// says so and changes nothing: it never creates or migrates the inbox's tables.
#[tokio::test(flavor = "multi_thread")]
async fn the_wrong_database_is_refused_and_left_as_it_was() {
    use sqlx::Connection as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.db");
    let url = format!("sqlite://{}", path.display());
    let open = async || {
        let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap()
    };
    let mut shop = open().await;
    sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        .execute(&mut shop)
        .await
        .unwrap();
    shop.close().await.unwrap();
    let tables = async || -> Vec<String> {
        let mut conn = open().await;
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    };
    for command in [
        &["status"][..],
        &["list"],
        &["retry", "1"],
        &["purge", "--older-than", "7d"],
    ] {
        let run = inbox(&url, command).await;
        let message = run.failed(1);
        assert!(message.contains("no chip-gate-inbox tables"), "{message}");
    }
    assert_eq!(tables().await, ["orders"]);

    // An inbox migrated by a newer chip-gate-inbox: refused too, untouched.
    let (inbox_url, _) = populate(dir.path()).await;
    let mut conn = sqlx::SqliteConnection::connect(&inbox_url).await.unwrap();
    sqlx::query(
        "INSERT INTO chip_inbox_migrations (version, description, applied_at) VALUES (99, 'later', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let run = inbox(&inbox_url, &["status"]).await;
    let message = run.failed(1);
    assert!(message.contains("version 99, newer"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_ends_every_inbox_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let (url, ids) = populate(dir.path()).await;
    let dead = ids.dead.to_string();
    let done = ids.paid.to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["inbox", "status"],
        vec!["inbox", "status", "--json"],
        vec!["inbox", "list"],
        vec!["inbox", "list", "--json"],
        vec!["inbox", "show", &dead],
        vec!["inbox", "show", &dead, "--body"],
        vec!["inbox", "show", &dead, "--json", "--body"],
        vec!["inbox", "retry", &dead],
        vec!["inbox", "replay", &done],
        vec!["inbox", "purge", "--older-than", "30d"],
    ];
    for args in cases {
        let (code, stderr) = with_closed_stdout(command(Some(&url), &args)).await;
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
    }
    // The retry and the replay were made before the output failed.
    let status = json(&inbox(&url, &["status", "--json"]).await);
    assert_eq!(status["pending"], 3);
}

/// The same commands on PostgreSQL, when `CHIP_INBOX_TEST_POSTGRES_URL` names a role that may
/// create databases (as for chip-gate-inbox's tests); otherwise the test says it was skipped.
#[tokio::test(flavor = "multi_thread")]
async fn the_same_commands_on_postgres() {
    use sqlx::Connection;
    const ENV: &str = "CHIP_INBOX_TEST_POSTGRES_URL";
    let Some(base) = std::env::var(ENV).ok().filter(|u| !u.trim().is_empty()) else {
        // Straight to stderr, past the harness's capture: the test counts as passed, so say so.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the PostgreSQL test of chip-cli's inbox tests (counted as passed, nothing \
             ran): set {ENV} to run it, e.g. {ENV}=postgres://USER:PASSWORD@127.0.0.1/DB cargo \
             test -p chip-cli -- postgres (a role that may create databases; .ci/run starts one)"
        );
        return;
    };
    let name = format!(
        "chip_inbox_t_cli_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    let url = format!("{prefix}/{name}");
    let ids = populate_url(&url).await;

    let status = json(&inbox(&url, &["status", "--json"]).await);
    assert_eq!(status["counts"]["received"], 4);
    assert_eq!(status["counts"]["duplicates"], 1);
    assert_eq!(
        (status["pending"].as_u64(), status["dead"].as_u64()),
        (Some(1), Some(1))
    );
    let dead = inbox(&url, &["list", "--state", "dead"]).await;
    assert!(
        dead.ok_silent().contains("warehouse said no"),
        "{}",
        dead.stdout
    );
    let shown = inbox(&url, &["show", &ids.dead.to_string(), "--body"]).await;
    assert!(
        shown.ok_silent().contains("\"id\":\"p2\""),
        "{}",
        shown.stdout
    );
    inbox(&url, &["retry", &ids.dead.to_string()])
        .await
        .ok_silent();
    inbox(&url, &["replay", &ids.created.to_string()])
        .await
        .ok_silent();
    let missing = inbox(&url, &["show", "9999"]).await;
    assert_eq!(missing.failed(1), "error: no delivery with id 9999");
    let purged = inbox(&url, &["purge", "--older-than", "0s", "--force"]).await;
    assert!(
        purged.ok_silent().starts_with("Removed 1 "),
        "{}",
        purged.stdout
    );

    // A wrong password: refused, and neither password is printed.
    let wrong = match url.split_once('@') {
        Some((user_info, rest)) => {
            let user = user_info
                .rsplit_once(':')
                .map_or(user_info, |(user, _)| user);
            format!("{user}:n0t-th3-pa55w0rd@{rest}")
        }
        None => url.replacen("://", "://nobody:n0t-th3-pa55w0rd@", 1),
    };
    let refused = inbox(&wrong, &["status"]).await;
    let line = refused.failed(1);
    assert!(!line.contains("n0t-th3-pa55w0rd"), "{line}");
    if let Some(password) = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(user_info, _)| user_info.split_once(':'))
        .map(|(_, password)| password)
    {
        assert!(!line.contains(&format!(":{password}@")), "{line}");
    }

    common::drop_test_database(&mut conn, &name).await;
}
