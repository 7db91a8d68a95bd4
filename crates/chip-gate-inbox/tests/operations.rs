//! Operating the inbox: health endpoints over real HTTP, recovery after the database could not
//! be written (a SQLite file system read-only when the receiver started), leases handed back at
//! once on shutdown (also through SIGTERM to a real receiver process), and transactional
//! handlers longer than the lease costing the rest of their batch nothing.
//!
//! The SIGTERM test's receiver is this test binary itself, started with
//! `CHIP_INBOX_SHUTDOWN_ROLE` set (see `shutdown_child`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chip_gate_inbox::{Inbox, InboxOptions, Intake, Readiness, TxJob, WorkerOptions};
use common::*;

const ROLE_ENV: &str = "CHIP_INBOX_SHUTDOWN_ROLE";
const URL_ENV: &str = "CHIP_INBOX_SHUTDOWN_URL";

/// How long a test waits for something that takes milliseconds when it works: far above
/// that, far below the 60 s leases the shutdown tests would otherwise wait for.
const PATIENCE: Duration = Duration::from_secs(15);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Serves the intake's webhook route and its health routes on loopback; returns the base URL.
async fn serve(intake: &Intake) -> String {
    let app: axum::Router = intake.router("/chip/webhook").merge(intake.health_router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(chip_gate::serve::serve(
        listener,
        app,
        chip_gate::serve::ServeOptions::default(),
    ));
    format!("http://{address}")
}

async fn get(url: &str) -> (u16, String) {
    let response = client().get(url).send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Posts a signed delivery; returns the status.
async fn post_signed(base: &str, id: &str, updated_on: i64) -> u16 {
    let body = purchase_body(id, "purchase.paid", updated_on);
    let signature = signer().sign(&body, chip_gate::Digest::Sha256).unwrap();
    client()
        .post(format!("{base}/chip/webhook"))
        .header("x-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Polls `/readyz` until it answers 200; returns how long that took, or panics after
/// [`PATIENCE`] with the last answer.
async fn until_ready(base: &str) -> Duration {
    let started = Instant::now();
    loop {
        let (status, text) = get(&format!("{base}/readyz")).await;
        if status == 200 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "still not ready after {PATIENCE:?}: {status} {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A directory bind-mounted over itself, read-only until [`writable`](Self::writable): what a
/// file system remounted read-only looks like to the processes that open files after it (files
/// opened before keep writing, as on a real remount they would have blocked it). Unmounted when
/// dropped. `None` when this process may not mount (not root): the test says so and stops.
struct ReadOnlyDir(PathBuf);

impl ReadOnlyDir {
    fn new(dir: &Path) -> Option<Self> {
        let mount = |args: &[&str]| {
            Command::new("mount")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let path = dir.to_str().unwrap();
        if !mount(&["--bind", path, path]) {
            return None;
        }
        let guard = Self(dir.to_owned());
        assert!(mount(&["-o", "remount,bind,ro", path]), "remount read-only");
        Some(guard)
    }

    fn writable(&self) {
        let path = self.0.to_str().unwrap();
        let status = Command::new("mount")
            .args(["-o", "remount,bind,rw", path])
            .status()
            .unwrap();
        assert!(status.success(), "remount writable");
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .args(["-l", self.0.to_str().unwrap()])
            .status();
    }
}

/// The reported failure: a receiver restarted while its SQLite file system was read-only
/// started, listened and answered 503, and kept answering 503 for 30 minutes after the disk was
/// writable again (its pooled connections had opened the file read-only). Now it says it is not
/// ready (and why), and stores again within moments of the disk taking writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_read_only_at_start_recovers_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("inbox.db").display());
    // The process that had the database open before (its -wal and -shm files stay).
    let before = Inbox::connect(&url).await.unwrap();
    exec(&before, "SELECT 1").await;

    let Some(read_only) = ReadOnlyDir::new(dir.path()) else {
        eprintln!(
            "SKIPPED sqlite_read_only_at_start_recovers_without_a_restart: it bind-mounts a \
             directory read-only, which needs root (.ci/run runs as root)"
        );
        return;
    };
    // The receiver starts on the read-only file system: its connections open the file
    // read-only (reading works; the schema is up to date, so connecting needs no write).
    let inbox = Inbox::connect(&url).await.unwrap();
    let intake = inbox.intake(verifier()).unwrap();
    let base = serve(&intake).await;

    assert_eq!(get(&format!("{base}/livez")).await, (200, "live".into()));
    let (status, text) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("readonly") || text.contains("read-only"),
        "{text}"
    );
    assert!(!intake.readiness().await.is_ready());
    assert_eq!(post_signed(&base, "ro-1", 100).await, 503);
    assert_eq!(post_signed(&base, "ro-2", 100).await, 503);

    read_only.writable();
    let took = until_ready(&base).await;
    eprintln!("ready {took:?} after the file system took writes again");
    assert_eq!(post_signed(&base, "ro-1", 100).await, 200);
    assert_eq!(post_signed(&base, "ro-3", 100).await, 200);
    assert_eq!(
        scalar(&inbox, "SELECT COUNT(*) FROM chip_inbox_deliveries").await,
        2
    );
    drop(read_only);
}

/// A receiver started before its database exists in a writable place: `connect_lazy` starts,
/// reports not ready, and creates and migrates the database on the first write that succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_inbox_starts_before_its_database_can_be_made() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-yet");
    let url = format!("sqlite://{}", missing.join("inbox.db").display());
    let inbox = Inbox::connect_lazy(&url, InboxOptions::default()).unwrap();
    let intake = inbox.intake(verifier()).unwrap();
    let base = serve(&intake).await;
    let (status, text) = get(&format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{text}");
    assert!(
        text.contains("not-yet"),
        "the reason names the file: {text}"
    );
    assert_eq!(post_signed(&base, "lazy-1", 5).await, 503);

    std::fs::create_dir(&missing).unwrap();
    until_ready(&base).await;
    assert_eq!(post_signed(&base, "lazy-1", 5).await, 200);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(missing.join("inbox.db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let drained = drain(&inbox, fast_worker()).await;
    assert_eq!(drained.len(), 1);
}

/// Draining: readiness turns to "shutting down" while deliveries are still stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_intake_is_not_ready_but_still_stores() {
    let (url, _dir) = sqlite_url();
    let inbox = Inbox::connect(&url).await.unwrap();
    let intake = inbox.intake(verifier()).unwrap();
    let base = serve(&intake).await;
    assert_eq!(get(&format!("{base}/readyz")).await, (200, "ready".into()));
    intake.drain();
    assert_eq!(intake.readiness().await, Readiness::Draining);
    assert_eq!(
        get(&format!("{base}/readyz")).await,
        (503, "not ready: shutting down".into())
    );
    assert_eq!(post_signed(&base, "drain-1", 1).await, 200);
    assert_eq!(get(&format!("{base}/livez")).await.0, 200);
}

/// PostgreSQL connections are not checked with a round trip each time they are taken (that
/// cost every claim, done mark and commit one), only after sitting idle: connections the
/// server closed while they were idle (here terminated, as `idle_session_timeout`, a proxy or
/// a firewall would) are replaced, and the next delivery is stored, not answered 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_while_idle_are_replaced_before_a_delivery_fails() {
    use sqlx::Connection as _;
    let Some(url) =
        postgres_url("connections_closed_while_idle_are_replaced_before_a_delivery_fails").await
    else {
        return;
    };
    let inbox = Inbox::connect(&url).await.unwrap();
    let intake = inbox.intake(verifier()).unwrap();
    let base = serve(&intake).await;
    assert_eq!(post_signed(&base, "idle-1", 1).await, 200);
    assert_eq!(post_signed(&base, "idle-2", 1).await, 200);
    // Idle past the check's threshold (one second), then every connection of the pool goes.
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_, database) = url.rsplit_once('/').unwrap();
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let terminated: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()) AS t",
    )
    .bind(database)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(terminated >= 1, "the inbox's connections were terminated");
    admin.close().await.unwrap();
    assert_eq!(post_signed(&base, "idle-3", 1).await, 200);
    assert_eq!(
        scalar(&inbox, "SELECT COUNT(*) FROM chip_inbox_deliveries").await,
        3
    );
    drop(intake);
    inbox.close().await;
    drop_postgres(&url).await;
}

/// A worker told to stop while a handler runs: the handler finishes and is recorded, the rest
/// of its batch is handed back at once (attempt not counted), and the next worker takes them
/// straight away although the leases were for a minute.
async fn shutdown_hands_back_the_rest_of_the_batch(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    store_objects(&inbox, "stop", 0..8, 10).await;

    let options = fast_worker()
        .lease(Duration::from_secs(60))
        .batch_size(8)
        .concurrency(1);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Mutex::new(Some(started_tx));
    let release = Arc::new(tokio::sync::Notify::new());
    let handled = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let first = {
        let (inbox, release, handled) = (inbox.clone(), release.clone(), handled.clone());
        tokio::spawn(async move {
            let worker = inbox.worker(options);
            worker
                .run_until(
                    move |_delivery| {
                        let (release, handled) = (release.clone(), handled.clone());
                        let started = started_tx.lock().unwrap().take();
                        async move {
                            if let Some(started) = started {
                                let _ = started.send(());
                            }
                            release.notified().await;
                            handled.fetch_add(1, Ordering::SeqCst);
                            Ok::<(), String>(())
                        }
                    },
                    async move {
                        let _ = stop_rx.await;
                    },
                )
                .await;
        })
    };
    started_rx.await.unwrap();
    stop_tx.send(()).unwrap();
    // The other seven are handed back while the first handler still runs.
    let started = Instant::now();
    while scalar(
        &inbox,
        "SELECT COUNT(*) FROM chip_inbox_lanes WHERE lease_token IS NOT NULL",
    )
    .await
        > 1
    {
        assert!(started.elapsed() < PATIENCE, "leases not handed back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    release.notify_one();
    first.await.unwrap();
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    assert_eq!(
        scalar(
            &inbox,
            "SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'pending' AND attempts = 0"
        )
        .await,
        7,
        "the seven unstarted deliveries are pending with no attempt counted"
    );

    // The next worker takes them at once: nothing waits for a 60 s lease.
    let next = drain(&inbox, fast_worker().lease(Duration::from_secs(60))).await;
    assert_eq!(next.len(), 7);
    assert!(next.iter().all(|d| d.summary.attempts == 1));
    assert_eq!(
        scalar(
            &inbox,
            "SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'done'"
        )
        .await,
        8
    );
}
on_both!(shutdown_hands_back_the_rest_of_the_batch);

/// Transactional handlers longer than the lease, two workers competing, several deliveries per
/// batch: the deliveries waiting in a batch keep their leases, so each is handled once, on its
/// first attempt, and none ends dead. Effects are counted per delivery (no unique constraint):
/// a delivery taken over by the other worker would show as a double.
async fn long_transactional_handlers_cost_the_batch_nothing(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    exec(
        &inbox,
        "CREATE TABLE effects (delivery_id BIGINT NOT NULL, worker TEXT NOT NULL)",
    )
    .await;
    store_objects(&inbox, "long", 0..8, 10).await;

    let lease = Duration::from_millis(300);
    let options = fast_worker().lease(lease).batch_size(4).concurrency(1);
    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut workers = Vec::new();
    for name in ["a", "b"] {
        let inbox = inbox.clone();
        let options = options.clone();
        let mut stop = stop_tx.subscribe();
        workers.push(tokio::spawn(async move {
            let worker = inbox.worker(options);
            worker
                .run_in_transaction_until(
                    move |mut job: TxJob| async move {
                        // Longer than the lease.
                        tokio::time::sleep(lease + lease / 2).await;
                        let id = job.delivery().summary.id;
                        let sql = "INSERT INTO effects (delivery_id, worker) VALUES ($1, $2)";
                        if let Ok(conn) = job.sqlite() {
                            sqlx::query(sql).bind(id).bind(name).execute(conn).await?;
                        } else {
                            let conn = job.postgres().unwrap();
                            sqlx::query(sql).bind(id).bind(name).execute(conn).await?;
                        }
                        job.complete()
                            .await
                            .map_err(|e| sqlx::Error::Protocol(e.to_string()))
                    },
                    async move {
                        let _ = stop.recv().await;
                    },
                )
                .await;
        }));
    }
    let started = Instant::now();
    while scalar(
        &inbox,
        "SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state <> 'pending'",
    )
    .await
        < 8
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not all handled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    for worker in workers {
        worker.await.unwrap();
    }
    let effects = scalar(&inbox, "SELECT COUNT(*) FROM effects").await;
    let doubled = scalar(
        &inbox,
        "SELECT COUNT(*) FROM (SELECT delivery_id FROM effects GROUP BY delivery_id \
         HAVING COUNT(*) > 1) AS d",
    )
    .await;
    let retried = scalar(
        &inbox,
        "SELECT COUNT(*) FROM chip_inbox_deliveries WHERE attempts <> 1",
    )
    .await;
    let done = scalar(
        &inbox,
        "SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'done'",
    )
    .await;
    assert_eq!((effects, doubled, retried, done), (8, 0, 0, 8));
}
on_both!(long_transactional_handlers_cost_the_batch_nothing);

/// On PostgreSQL a transactional handler's transaction locks its lane only for the done mark.
/// A worker that stalls past its lease while its handler runs (here: the lease is made to
/// expire from outside, and another worker takes the delivery and completes it) gets
/// `LeaseLost` from `complete()`: its writes roll back with its done mark, and the delivery is
/// handled once. Effects are counted per delivery (no unique constraint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_handler_whose_lease_was_taken_over_commits_nothing() {
    let Some(url) =
        postgres_url("a_transactional_handler_whose_lease_was_taken_over_commits_nothing").await
    else {
        return;
    };
    let inbox = Inbox::connect(&url).await.unwrap();
    exec(
        &inbox,
        "CREATE TABLE effects (delivery_id BIGINT NOT NULL, worker TEXT NOT NULL)",
    )
    .await;
    store_objects(&inbox, "taken", 0..1, 10).await;
    // Long enough that the first worker never extends the lease during the test.
    let options = fast_worker().lease(Duration::from_secs(60));
    let insert = "INSERT INTO effects (delivery_id, worker) VALUES ($1, $2)";
    let stalled = inbox.worker(options.clone());
    let other = inbox.worker(options);
    let completed = Arc::new(Mutex::new(None));
    let outcome = Arc::clone(&completed);
    let report = stalled
        .process_batch_in_transaction(|mut job: TxJob| {
            let other = &other;
            let inbox = &inbox;
            let outcome = Arc::clone(&outcome);
            async move {
                // The "stall": the lease expires and the other worker handles the delivery.
                exec(inbox, "UPDATE chip_inbox_lanes SET lease_until = 0").await;
                let theirs = other
                    .process_batch_in_transaction(|mut job: TxJob| async move {
                        let id = job.delivery().summary.id;
                        let conn = job.postgres().unwrap();
                        sqlx::query(insert)
                            .bind(id)
                            .bind("other")
                            .execute(conn)
                            .await?;
                        job.complete()
                            .await
                            .map_err(|e| sqlx::Error::Protocol(e.to_string()))
                    })
                    .await
                    .unwrap();
                assert_eq!((theirs.handed_over, theirs.done), (1, 1), "{theirs:?}");
                let id = job.delivery().summary.id;
                let conn = job.postgres().unwrap();
                sqlx::query(insert)
                    .bind(id)
                    .bind("stalled")
                    .execute(conn)
                    .await
                    .unwrap();
                let result = job.complete().await;
                *outcome.lock().unwrap() = Some(format!("{result:?}"));
                result.map_err(|e| e.to_string())
            }
        })
        .await
        .unwrap();
    let completed = completed.lock().unwrap().clone().unwrap();
    assert!(completed.contains("LeaseLost"), "{completed}");
    assert_eq!((report.handed_over, report.done), (1, 0), "{report:?}");
    let effects = scalar(&inbox, "SELECT COUNT(*) FROM effects").await;
    let theirs = scalar(
        &inbox,
        "SELECT COUNT(*) FROM effects WHERE worker = 'other'",
    )
    .await;
    let done = scalar(
        &inbox,
        "SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'done'",
    )
    .await;
    assert_eq!((effects, theirs, done), (1, 1, 1));
    assert_eq!(inbox.counts().await.unwrap().done, 1);
    inbox.close().await;
    drop_postgres(&url).await;
}

/// On PostgreSQL the transactional handlers of a batch commit on connections the batch keeps
/// between them (a connection given back to the pool costs a round trip). What one handler
/// leaves must not reach the next: a handler that fails after writing is rolled back, and its
/// connection is not reused mid-transaction; a handler's own nested transaction is a savepoint
/// inside the job's. Effects are counted per delivery (no unique constraint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_handlers_of_a_batch_reuse_connections_cleanly() {
    use sqlx::Connection as _;
    let Some(url) =
        postgres_url("transactional_handlers_of_a_batch_reuse_connections_cleanly").await
    else {
        return;
    };
    let inbox = Inbox::connect(&url).await.unwrap();
    exec(
        &inbox,
        "CREATE TABLE effects (delivery_id BIGINT NOT NULL, backend INT NOT NULL, \
         nested BOOLEAN NOT NULL)",
    )
    .await;
    store_objects(&inbox, "reuse", 0..8, 10).await;
    warm_pool(&inbox).await;
    let failed = Arc::new(Mutex::new(None::<i64>));
    let first_failure = Arc::clone(&failed);
    let report = inbox
        .worker(fast_worker().batch_size(8).concurrency(1))
        .process_batch_in_transaction(|mut job: TxJob| {
            let first_failure = Arc::clone(&first_failure);
            async move {
                let id = job.delivery().summary.id;
                let conn = job.postgres().unwrap();
                let insert = "INSERT INTO effects (delivery_id, backend, nested) \
                              VALUES ($1, pg_backend_pid(), $2)";
                sqlx::query(insert)
                    .bind(id)
                    .bind(false)
                    .execute(&mut *conn)
                    .await?;
                // The third handler fails after writing; the fifth writes in a nested
                // transaction (a savepoint) as well.
                let n = scalar_on(conn, "SELECT COUNT(*) FROM effects").await;
                if n == 3 && first_failure.lock().unwrap().is_none() {
                    *first_failure.lock().unwrap() = Some(id);
                    return Err(sqlx::Error::Protocol("a deliberate failure".into()));
                }
                if n == 5 {
                    let mut nested = conn.begin().await?;
                    sqlx::query(insert)
                        .bind(id)
                        .bind(true)
                        .execute(&mut *nested)
                        .await?;
                    nested.commit().await?;
                }
                job.complete()
                    .await
                    .map_err(|e| sqlx::Error::Protocol(e.to_string()))
            }
        })
        .await
        .unwrap();
    assert_eq!((report.done, report.retried), (7, 1), "{report:?}");
    let failed = failed.lock().unwrap().unwrap();
    let failed_effects = scalar(
        &inbox,
        &format!("SELECT COUNT(*) FROM effects WHERE delivery_id = {failed}"),
    )
    .await;
    let effects = scalar(&inbox, "SELECT COUNT(*) FROM effects WHERE NOT nested").await;
    let nested = scalar(&inbox, "SELECT COUNT(*) FROM effects WHERE nested").await;
    let backends = scalar(&inbox, "SELECT COUNT(DISTINCT backend) FROM effects").await;
    assert_eq!((failed_effects, effects, nested), (0, 7, 1));
    // Seven commits, one after the other: on one connection but for the failure's, after which
    // the next handler took another from the pool.
    assert!(backends <= 2, "{backends} connections for one batch");
    // Nothing was left open: every connection of the pool answers outside a transaction.
    let open = scalar(
        &inbox,
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND state LIKE 'idle in transaction%'",
    )
    .await;
    assert_eq!(open, 0);
    inbox.close().await;
    drop_postgres(&url).await;
}

/// The intake's writer stores one delivery after another on the connection it kept, not on
/// the pool's connections in turn (each given back costs a round trip, and on SQLite a fresh
/// page cache); it lets go of it when the inbox is closed, at once, with the intake still alive.
/// A trigger records the server process behind each insert (no unique constraint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intake_stores_on_the_connection_it_kept() {
    let Some(url) = postgres_url("the_intake_stores_on_the_connection_it_kept").await else {
        return;
    };
    let inbox = Inbox::connect(&url).await.unwrap();
    exec(&inbox, "CREATE TABLE inserted_by (backend INT NOT NULL)").await;
    exec(
        &inbox,
        "CREATE FUNCTION note_backend() RETURNS trigger LANGUAGE plpgsql AS \
         $$BEGIN INSERT INTO inserted_by VALUES (pg_backend_pid()); RETURN NEW; END$$",
    )
    .await;
    exec(
        &inbox,
        "CREATE TRIGGER note_backend AFTER INSERT ON chip_inbox_deliveries \
         FOR EACH ROW EXECUTE FUNCTION note_backend()",
    )
    .await;
    warm_pool(&inbox).await;
    let intake = inbox.intake(verifier()).unwrap();
    let base = serve(&intake).await;
    for n in 0..20 {
        assert_eq!(post_signed(&base, &format!("kept-{n}"), 1).await, 200);
    }
    let backends = scalar(&inbox, "SELECT COUNT(DISTINCT backend) FROM inserted_by").await;
    let inserts = scalar(&inbox, "SELECT COUNT(*) FROM inserted_by").await;
    assert_eq!(inserts, 20);
    // One connection; another for each time the machine stalled for longer than the writer
    // keeps one idle (100 ms). Taken from the pool in turn, they were six or seven.
    assert!(
        backends <= 3,
        "20 deliveries stored on {backends} connections"
    );
    // `close` waits for every connection, the kept one included.
    assert_eq!(post_signed(&base, "kept-last", 1).await, 200);
    tokio::time::timeout(PATIENCE, inbox.close())
        .await
        .expect("the inbox closed while its intake was alive");
    assert_eq!(post_signed(&base, "after-close", 1).await, 503);
    drop(intake);
    drop_postgres(&url).await;
}

/// Leaves six idle connections in the inbox's PostgreSQL pool, which hands them out in turn.
async fn warm_pool(inbox: &Inbox) {
    let pool = inbox.postgres_pool().unwrap();
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(pool.acquire().await.unwrap());
    }
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn scalar_on(conn: &mut sqlx::PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

/// Not a test of its own: the receiver process of
/// `sigterm_stores_what_it_acknowledged_and_hands_back_its_leases`. Returns at once when
/// `CHIP_INBOX_SHUTDOWN_ROLE` is not set. Serves an intake and runs a worker whose handler
/// takes a second; on SIGTERM it drains, stops accepting, answers what is under way, and its
/// worker hands back what it has not started; then it prints `stopped` and exits.
#[test]
fn shutdown_child() {
    let Ok(_role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let url = std::env::var(URL_ENV).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).unwrap();
        let inbox = Inbox::connect(&url).await.unwrap();
        let intake = inbox.intake(verifier()).unwrap();
        let app: axum::Router = intake.router("/chip/webhook").merge(intake.health_router());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("listening {}", listener.local_addr().unwrap());
        let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
        let mut serve_stop = stop_tx.subscribe();
        let server = tokio::spawn(chip_gate::serve::serve_with_shutdown(
            listener,
            app,
            chip_gate::serve::ServeOptions::default(),
            async move {
                let _ = serve_stop.recv().await;
            },
        ));
        let mut worker_stop = stop_tx.subscribe();
        let worker = inbox.worker(
            WorkerOptions::default()
                .lease(Duration::from_secs(60))
                .batch_size(16)
                .concurrency(1),
        );
        let working = tokio::spawn(async move {
            worker
                .run_until(
                    |_delivery| async {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Ok::<(), String>(())
                    },
                    async move {
                        let _ = worker_stop.recv().await;
                    },
                )
                .await;
        });
        terminate.recv().await;
        intake.drain();
        let _ = stop_tx.send(());
        server.await.unwrap().unwrap();
        working.await.unwrap();
        println!("stopped");
    });
}

/// SIGTERM to a real receiver process under traffic: every delivery it answered 200 is stored,
/// it exits once what was under way is answered, and the deliveries its worker had claimed but
/// not started are handed back: a new worker handles all of them at once, although the dead
/// process's leases were for a minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stores_what_it_acknowledged_and_hands_back_its_leases() {
    use std::io::BufRead;
    /// Kills the receiver if the test fails before it exits.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let (url, _dir) = sqlite_url();
    Inbox::connect(&url).await.unwrap().close().await;
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "shutdown_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ROLE_ENV, "receiver")
        .env(URL_ENV, &url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    // The child's lines, read on a thread of their own (libtest prints its own words before
    // the child's first line, on the same line).
    let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });
    let address = loop {
        let line = line_rx.recv_timeout(PATIENCE).expect("the receiver starts");
        if let Some((_, address)) = line.split_once("listening ") {
            break address.trim().to_owned();
        }
    };
    let base = format!("http://{address}");

    // Traffic: 8 senders posting deliveries of distinct objects until the receiver is gone.
    let answered: Arc<Mutex<HashMap<String, u16>>> = Arc::default();
    let mut senders = Vec::new();
    for sender in 0..8 {
        let (base, answered) = (base.clone(), answered.clone());
        senders.push(tokio::spawn(async move {
            for n in 0.. {
                let id = format!("term-{sender}-{n}");
                let body = purchase_body(&id, "purchase.paid", 1);
                let signature = signer().sign(&body, chip_gate::Digest::Sha256).unwrap();
                let sent = client()
                    .post(format!("{base}/chip/webhook"))
                    .header("x-signature", signature)
                    .body(body)
                    .send()
                    .await;
                match sent {
                    Ok(response) => {
                        answered
                            .lock()
                            .unwrap()
                            .insert(id, response.status().as_u16());
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Let the worker claim a batch and start its one-second handler.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the receiver did not stop within {PATIENCE:?} of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let said: Vec<String> = line_rx.try_iter().collect();
    assert!(
        exit.success() && said.iter().any(|l| l.contains("stopped")),
        "clean exit: {exit:?} {said:?}"
    );
    for sender in senders {
        sender.await.unwrap();
    }

    let inbox = Inbox::connect(&url).await.unwrap();
    let acknowledged: Vec<String> = answered
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, status)| **status == 200)
        .map(|(id, _)| id.clone())
        .collect();
    assert!(
        acknowledged.len() > 20,
        "traffic flowed: {}",
        acknowledged.len()
    );
    for id in &acknowledged {
        let stored = scalar(
            &inbox,
            &format!("SELECT COUNT(*) FROM chip_inbox_deliveries WHERE object_id = '{id}'"),
        )
        .await;
        assert_eq!(stored, 1, "acknowledged {id} is stored");
    }
    assert_eq!(
        scalar(
            &inbox,
            "SELECT COUNT(*) FROM chip_inbox_lanes WHERE lease_token IS NOT NULL"
        )
        .await,
        0,
        "no lease left behind"
    );
    let done_before = scalar(
        &inbox,
        "SELECT COUNT(*) FROM chip_inbox_deliveries WHERE state = 'done'",
    )
    .await;
    assert!(done_before >= 1, "the running handler finished");
    let stored = scalar(&inbox, "SELECT COUNT(*) FROM chip_inbox_deliveries").await;
    let next = drain(&inbox, fast_worker().lease(Duration::from_secs(60))).await;
    assert_eq!(next.len() as i64, stored - done_before);
    assert!(
        next.iter().all(|d| d.summary.attempts == 1),
        "no attempt was burned by the shutdown"
    );
}
