//! The crash test: thousands of signed deliveries, with duplicates and out-of-order arrivals,
//! sent over HTTP to receiver processes that are killed with SIGKILL at random moments and
//! restarted. Workers record each effect in a table with a unique constraint, inside the
//! transaction that marks the delivery done. At the end: every acknowledged delivery is in the
//! store, each distinct delivery has exactly one effect or was stale, no effect is out of order.
//!
//! The child processes are this test binary itself, started with `CHIP_INBOX_CRASH_ROLE` set
//! (see `crash_child`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chip_gate_inbox::{Backoff, Inbox, TxJob, WorkerOptions};
use common::*;
use sqlx::Row;
use tokio::sync::Mutex;

const ROLE_ENV: &str = "CHIP_INBOX_CRASH_ROLE";
const URL_ENV: &str = "CHIP_INBOX_CRASH_URL";
const PORT_ENV: &str = "CHIP_INBOX_CRASH_PORT";

/// Objects and states per object: OBJECTS * STATES distinct deliveries.
const OBJECTS: usize = 500;
const STATES: usize = 4;
const EVENTS: [&str; STATES] = [
    "purchase.created",
    "purchase.pending_execute",
    "purchase.paid",
    "payment.refunded",
];

/// Not a test of its own: the entry point of the child processes (a receiver with a worker, or a
/// worker alone). Returns at once when `CHIP_INBOX_CRASH_ROLE` is not set.
#[test]
fn crash_child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let url = std::env::var(URL_ENV).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let inbox = Inbox::connect(&url).await.unwrap();
        if role == "receiver" {
            let port: u16 = std::env::var(PORT_ENV).unwrap().parse().unwrap();
            let intake = inbox.intake(verifier()).unwrap();
            let app: axum::Router = intake.router("/chip/webhook");
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        }
        let worker = inbox.worker(
            WorkerOptions::default()
                .lease(Duration::from_millis(1500))
                .poll_interval(Duration::from_millis(30))
                .max_attempts(10_000)
                .batch_size(8)
                .backoff(Backoff {
                    initial: Duration::from_millis(20),
                    max: Duration::from_millis(100),
                }),
        );
        worker.run_in_transaction(record_effect).await;
    });
}

/// The handler: one row per effect, unique on the dedup key; now and then a transient failure.
async fn record_effect(mut job: TxJob) -> Result<chip_gate_inbox::Completed, String> {
    let key = job.delivery().dedup_key().to_owned();
    let object = job.delivery().summary.object_id.clone().unwrap_or_default();
    let updated_on = job.delivery().summary.updated_on.unwrap_or(-1);
    if fastrand::u8(0..50) == 0 {
        return Err("transient failure before writing".to_owned());
    }
    let insert = "INSERT INTO crash_effects (dedup_key, object_id, updated_on) VALUES ($1, $2, $3)";
    match job.sqlite() {
        Ok(conn) => sqlx::query(insert)
            .bind(&key)
            .bind(&object)
            .bind(updated_on)
            .execute(conn)
            .await
            .map(|_| ()),
        Err(_) => {
            let conn = job.postgres().map_err(|e| e.to_string())?;
            sqlx::query(insert)
                .bind(&key)
                .bind(&object)
                .bind(updated_on)
                .execute(conn)
                .await
                .map(|_| ())
        }
    }
    .map_err(|e| e.to_string())?;
    // Widen the window in which a kill lands between the effect and the commit.
    if fastrand::bool() {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..3))).await;
    }
    job.complete().await.map_err(|e| e.to_string())
}

struct Proc {
    role: &'static str,
    port: Option<u16>,
    child: Child,
}

fn spawn(url: &str, role: &'static str, port: Option<u16>) -> Proc {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ROLE_ENV, role)
        .env(URL_ENV, url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(port) = port {
        command.env(PORT_ENV, port.to_string());
    }
    Proc {
        role,
        port,
        child: command.spawn().unwrap(),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The deliveries to send, in sending order: every state of every object, some sent twice, some
/// moved ahead of earlier states of their object.
fn plan() -> (Vec<(String, Bytes)>, usize) {
    let mut distinct = Vec::new();
    for (state, event) in EVENTS.iter().enumerate() {
        for object in 0..OBJECTS {
            let id = format!("obj-{object:04}");
            let updated_on = 1_700_000_000 + i64::try_from(state).unwrap() * 10;
            distinct.push((id.clone(), purchase_body(&id, event, updated_on)));
        }
    }
    let n = distinct.len();
    let mut sends = distinct.clone();
    // Out of order: one in ten moves up to 600 places ahead (past its own object's earlier state).
    for i in 0..sends.len() {
        if fastrand::u8(0..10) == 0 {
            let j = i.saturating_sub(fastrand::usize(1..600));
            sends.swap(i, j);
        }
    }
    // Duplicates: one in five is sent again later.
    for delivery in distinct.iter().filter(|_| fastrand::u8(0..5) == 0) {
        let at = fastrand::usize(0..=sends.len());
        sends.insert(at, delivery.clone());
    }
    (sends, n)
}

async fn exec(inbox: &Inbox, sql: &str) {
    match (inbox.sqlite_pool(), inbox.postgres_pool()) {
        (Some(pool), _) => sqlx::query(sql).execute(pool).await.map(|_| ()),
        (_, Some(pool)) => sqlx::query(sql).execute(pool).await.map(|_| ()),
        _ => unreachable!(),
    }
    .unwrap();
}

/// (dedup_key, object_id, updated_on, seq) of every effect, and (dedup_key, state, object_id,
/// updated_on) of every stored delivery.
#[allow(clippy::type_complexity)]
async fn read_back(
    inbox: &Inbox,
) -> (
    Vec<(String, String, i64, i64)>,
    Vec<(String, String, String, i64)>,
) {
    let effects_sql =
        "SELECT dedup_key, object_id, updated_on, seq FROM crash_effects ORDER BY seq";
    let store_sql = "SELECT dedup_key, state, object_id, updated_on FROM chip_inbox_deliveries";
    macro_rules! read {
        ($pool:expr) => {{
            let effects = sqlx::query(effects_sql)
                .fetch_all($pool)
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get::<String, _>(0),
                        r.get::<String, _>(1),
                        r.get::<i64, _>(2),
                        r.get::<i64, _>(3),
                    )
                })
                .collect();
            let stored = sqlx::query(store_sql)
                .fetch_all($pool)
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.get::<String, _>(0),
                        r.get::<String, _>(1),
                        r.get::<Option<String>, _>(2).unwrap_or_default(),
                        r.get::<Option<i64>, _>(3).unwrap_or(-1),
                    )
                })
                .collect();
            (effects, stored)
        }};
    }
    match (inbox.sqlite_pool(), inbox.postgres_pool()) {
        (Some(pool), _) => read!(pool),
        (_, Some(pool)) => read!(pool),
        _ => unreachable!(),
    }
}

async fn crash_run(label: &str, url: String, receivers: usize, workers: usize) {
    let started = Instant::now();
    let inbox = Inbox::connect(&url).await.unwrap();
    let seq = match inbox.backend_kind() {
        chip_gate_inbox::BackendKind::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        _ => "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    };
    exec(
        &inbox,
        &format!(
            "CREATE TABLE crash_effects (seq {seq}, dedup_key TEXT NOT NULL UNIQUE, \
             object_id TEXT NOT NULL, updated_on BIGINT NOT NULL)"
        ),
    )
    .await;

    let ports: Vec<u16> = (0..receivers).map(|_| free_port()).collect();
    let mut procs: Vec<Proc> = ports
        .iter()
        .map(|&port| spawn(&url, "receiver", Some(port)))
        .chain((0..workers).map(|_| spawn(&url, "worker", None)))
        .collect();

    let (sends, distinct) = plan();
    let requests_planned = sends.len();
    let queue = Arc::new(Mutex::new(sends.into_iter()));
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let (attempts, refused, dup_acks) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let signer = Arc::new(signer());
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut senders = Vec::new();
    for _ in 0..16 {
        let (queue, acked, client, signer, ports) = (
            Arc::clone(&queue),
            Arc::clone(&acked),
            client.clone(),
            Arc::clone(&signer),
            ports.clone(),
        );
        let (attempts, refused, dup_acks) = (
            Arc::clone(&attempts),
            Arc::clone(&refused),
            Arc::clone(&dup_acks),
        );
        senders.push(tokio::spawn(async move {
            loop {
                let next = queue.lock().await.next();
                let Some((_, body)) = next else { return };
                let signature = signer.sign(&body, chip_gate::Digest::Sha256).unwrap();
                // Like CHIP: deliver again until a 2xx comes back.
                loop {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    let port = ports[fastrand::usize(0..ports.len())];
                    let answer = client
                        .post(format!("http://127.0.0.1:{port}/chip/webhook"))
                        .header("x-signature", &signature)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match answer {
                        Ok(response) if response.status().is_success() => {
                            let text = response.text().await.unwrap_or_default();
                            if text == "duplicate" {
                                dup_acks.fetch_add(1, Ordering::Relaxed);
                            }
                            let key = chip_gate_inbox::dedup_key(
                                &chip_gate::Delivery::from_verified(body.clone()),
                            );
                            acked.lock().await.insert(key);
                            break;
                        }
                        _ => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
        }));
    }

    // Kill a random child now and then while deliveries flow, and restart it.
    let mut kills = 0_usize;
    let deadline = Instant::now() + Duration::from_secs(90);
    while senders.iter().any(|s| !s.is_finished()) {
        assert!(
            Instant::now() < deadline,
            "{label}: sending did not finish in time"
        );
        tokio::time::sleep(Duration::from_millis(fastrand::u64(150..450))).await;
        let victim = fastrand::usize(0..procs.len());
        let Proc { role, port, child } = &mut procs[victim];
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        let (role, port) = (*role, *port);
        procs[victim] = spawn(&url, role, port);
    }
    for sender in senders {
        sender.await.unwrap();
    }
    // A few more kills while the workers catch up, then let them finish.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(100..300))).await;
        let victim = fastrand::usize(0..procs.len());
        procs[victim].child.kill().unwrap();
        procs[victim].child.wait().unwrap();
        kills += 1;
        let (role, port) = (procs[victim].role, procs[victim].port);
        procs[victim] = spawn(&url, role, port);
    }
    loop {
        let status = inbox.status().await.unwrap();
        if status.pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: {} deliveries still pending",
            status.pending
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for proc in &mut procs {
        proc.child.kill().unwrap();
        proc.child.wait().unwrap();
    }

    let (effects, stored) = read_back(&inbox).await;
    let attempts_sql =
        "SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) FROM chip_inbox_deliveries";
    let claims: i64 = match (inbox.sqlite_pool(), inbox.postgres_pool()) {
        (Some(pool), _) => sqlx::query_scalar(attempts_sql)
            .fetch_one(pool)
            .await
            .unwrap(),
        (_, Some(pool)) => sqlx::query_scalar(attempts_sql)
            .fetch_one(pool)
            .await
            .unwrap(),
        _ => unreachable!(),
    };
    let counts = inbox.counts().await.unwrap();
    let acked = acked.lock().await.clone();
    let store_keys: HashMap<&str, (&str, &str, i64)> = stored
        .iter()
        .map(|(k, s, o, u)| (k.as_str(), (s.as_str(), o.as_str(), *u)))
        .collect();
    let stale: Vec<_> = stored.iter().filter(|r| r.1 == "stale").collect();
    let done = stored.iter().filter(|r| r.1 == "done").count();

    println!(
        "{label}: {distinct} distinct deliveries, {requests_planned} planned sends, {} HTTP attempts \
         ({} refused or cut by kills, {} acknowledged as duplicates), {kills} SIGKILLs, \
         {} effects, {} stale, {} claims cut short by a kill and handed over again, counts {:?}, {:.1} s",
        attempts.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        dup_acks.load(Ordering::Relaxed),
        effects.len(),
        stale.len(),
        claims - i64::try_from(done).unwrap() - i64::try_from(counts.retried).unwrap(),
        counts,
        started.elapsed().as_secs_f64(),
    );

    // Every acknowledged delivery is in the store; the store holds exactly the distinct ones.
    assert_eq!(
        acked.len(),
        distinct,
        "every delivery was acknowledged once in the end"
    );
    for key in &acked {
        assert!(
            store_keys.contains_key(key.as_str()),
            "acknowledged but not stored: {key}"
        );
    }
    assert_eq!(stored.len(), distinct, "no delivery stored twice");
    // Exactly one effect per handled delivery, none for a stale one, none missing.
    let effect_keys: HashSet<&str> = effects.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(effect_keys.len(), effects.len(), "no duplicate effects");
    assert_eq!(effects.len(), done, "one effect per done delivery");
    assert_eq!(
        effects.len() + stale.len(),
        distinct,
        "every delivery done or stale"
    );
    for key in &effect_keys {
        assert_eq!(store_keys[key].0, "done");
    }
    assert_eq!(counts.done, u64::try_from(done).unwrap());
    assert_eq!(counts.stale, u64::try_from(stale.len()).unwrap());
    assert_eq!(counts.received, u64::try_from(distinct).unwrap());
    assert_eq!(counts.dead, 0);
    // Per-object order: each object's effects in commit order have rising updated_on.
    let mut last: HashMap<&str, i64> = HashMap::new();
    for (_, object, updated_on, _) in &effects {
        let previous = last.insert(object.as_str(), *updated_on);
        assert!(
            previous.is_none_or(|p| p < *updated_on),
            "effects of {object} out of order"
        );
    }
    // A stale delivery really was older than a handled state of its object.
    for (key, _, object, updated_on) in &stale {
        assert!(
            last.get(object.as_str())
                .is_some_and(|handled| handled > updated_on),
            "{key} marked stale but nothing newer was handled"
        );
    }
}

#[test]
fn crash_sqlite() {
    let (url, _dir) = sqlite_url();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // One receiver (with its worker) and one more worker on one SQLite file.
    runtime.block_on(crash_run("crash_sqlite", url, 1, 1));
}

#[test]
fn crash_postgres() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let Some(url) = postgres_url("crash_postgres").await else {
            return;
        };
        // Three receivers, each with its worker, on one PostgreSQL database.
        crash_run("crash_postgres", url.clone(), 3, 0).await;
        drop_postgres(&url).await;
    });
}
