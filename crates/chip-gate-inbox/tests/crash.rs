//! The crash test: the mock CHIP Gate (chip-gate-mock) delivers thousands of signed events, with
//! duplicates (acknowledgements it treats as lost) and out-of-order arrivals (events it holds
//! back) from its delivery fault injection, through a loopback balancer, to receiver processes
//! that are killed with SIGKILL at random moments and restarted. Workers record each effect in a
//! table with a unique constraint, inside the transaction that marks the delivery done. At the
//! end: every delivery the mock saw acknowledged is in the store, the mock gave up on none, each
//! distinct event has exactly one effect or was stale (older than a state already handled), and
//! no object's effects are out of order.
//!
//! The child processes are this test binary itself, started with `CHIP_INBOX_CRASH_ROLE` set
//! (see `crash_child`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chip_gate::EventName;
use chip_gate::Verifier;
use chip_gate_inbox::{Backoff, Inbox, TxJob, WorkerOptions};
use chip_gate_mock::{DeliveryConfig, DeliveryFaults, Limits, MockConfig, MockError, MockServer};
use common::*;
use sqlx::Row;
use uuid::Uuid;

const ROLE_ENV: &str = "CHIP_INBOX_CRASH_ROLE";
const URL_ENV: &str = "CHIP_INBOX_CRASH_URL";
const PORT_ENV: &str = "CHIP_INBOX_CRASH_PORT";
const KEY_ENV: &str = "CHIP_INBOX_CRASH_PUBLIC_KEY";

/// Objects and states per object: OBJECTS * STATES distinct events.
const OBJECTS: usize = 500;
const STATES: usize = 4;
const EVENTS: [&str; STATES] = [
    "purchase.created",
    "purchase.pending_execute",
    "purchase.paid",
    "purchase.pending_refund",
];
/// The mock's delivery log must hold every attempt of the run.
const LOG_RECORDS: usize = 200_000;

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
            // The webhook's public key, as the mock's API handed it out.
            let verifier = Verifier::from_pem(&std::env::var(KEY_ENV).unwrap()).unwrap();
            let intake = inbox.intake(verifier).unwrap();
            let app: axum::Router = intake.router("/chip/webhook");
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            tokio::spawn(chip_gate::serve::serve(
                listener,
                app,
                chip_gate::serve::ServeOptions::default(),
            ));
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

struct Children {
    url: String,
    public_key: String,
    procs: Vec<Proc>,
    kills: usize,
}

impl Children {
    fn spawn(&self, role: &'static str, port: Option<u16>) -> Proc {
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
            .env(URL_ENV, &self.url)
            .env(KEY_ENV, &self.public_key)
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

    /// SIGKILLs one child at random and starts it again.
    fn kill_one(&mut self) {
        let victim = fastrand::usize(0..self.procs.len());
        let proc = &mut self.procs[victim];
        proc.child.kill().unwrap(); // SIGKILL
        proc.child.wait().unwrap();
        self.kills += 1;
        let (role, port) = (proc.role, proc.port);
        self.procs[victim] = self.spawn(role, port);
    }

    fn kill_all(&mut self) {
        for proc in &mut self.procs {
            proc.child.kill().unwrap();
            proc.child.wait().unwrap();
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for proc in &mut self.procs {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP balancer on 127.0.0.1, like the load balancer in front of several app instances: each
/// connection goes to a receiver chosen at random, the next one if it does not answer, and is
/// closed when none does (the mock then retries the delivery).
async fn balancer(backends: Vec<u16>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let mut order = backends.clone();
            fastrand::shuffle(&mut order);
            tokio::spawn(async move {
                for backend in order {
                    if let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
    port
}

/// A mock that retries until acknowledged, quickly, and duplicates and reorders on purpose.
async fn start_mock(seed: u64) -> MockServer {
    MockServer::start(MockConfig {
        limits: Limits {
            max_pending_deliveries: OBJECTS * STATES,
            delivery_log: LOG_RECORDS,
            ..Limits::default()
        },
        delivery: DeliveryConfig {
            max_attempts: 100_000,
            backoff_base: Duration::from_millis(20),
            backoff_cap: Duration::from_millis(200),
            request_timeout: Duration::from_secs(5),
        },
        delivery_faults: DeliveryFaults {
            duplicate_rate: 0.2,
            reorder_rate: 0.1,
            hold_back: Duration::from_millis(400),
            seed: Some(seed),
        },
        generate_keys: false,
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

/// Creates the webhook through the mock's API, as a user would, and returns its public key.
async fn subscribe(mock: &MockServer, callback: &str) -> String {
    let created: serde_json::Value = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{}/webhooks/", mock.base_url()))
        .bearer_auth(mock.api_key())
        .json(&serde_json::json!({
            "title": "crash test",
            "callback": callback,
            "events": EVENTS,
        }))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    created["public_key"].as_str().unwrap().to_owned()
}

/// Triggers every state of every object: 32 objects at a time, each object's states one after
/// the other (so a held-back state is overtaken by the next one); a full queue is waited out.
async fn trigger_all(mock: Arc<MockServer>) {
    let objects: Vec<Uuid> = (0..OBJECTS).map(|_| Uuid::new_v4()).collect();
    let permits = Arc::new(tokio::sync::Semaphore::new(32));
    let mut running = tokio::task::JoinSet::new();
    for object in objects {
        let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
        let mock = Arc::clone(&mock);
        running.spawn(async move {
            for event in EVENTS {
                loop {
                    match mock.trigger(EventName::from(event), Some(object)).await {
                        Ok(_) => break,
                        Err(MockError::Busy(_)) => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("trigger failed: {e}"),
                    }
                }
            }
            drop(permit);
        });
    }
    while let Some(done) = running.join_next().await {
        done.unwrap();
    }
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

    let seed = fastrand::u64(..);
    let mock = Arc::new(start_mock(seed).await);
    let ports: Vec<u16> = (0..receivers).map(|_| free_port()).collect();
    let front = balancer(ports.clone()).await;
    let public_key = subscribe(&mock, &format!("http://127.0.0.1:{front}/chip/webhook")).await;
    let mut children = Children {
        url: url.clone(),
        public_key,
        procs: Vec::new(),
        kills: 0,
    };
    children.procs = ports
        .iter()
        .map(|&port| children.spawn("receiver", Some(port)))
        .chain((0..workers).map(|_| children.spawn("worker", None)))
        .collect();

    let distinct = OBJECTS * STATES;
    let triggers = tokio::spawn(trigger_all(Arc::clone(&mock)));

    // Kill a random child now and then until every event is triggered and acknowledged.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        if triggers.is_finished() && mock.wait_idle(Duration::from_millis(1)).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: the mock's deliveries did not finish in time (seed {seed})"
        );
        tokio::time::sleep(Duration::from_millis(fastrand::u64(150..450))).await;
        children.kill_one();
    }
    triggers.await.unwrap();
    // A few more kills while the workers catch up, then let them finish.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(100..300))).await;
        children.kill_one();
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
    children.kill_all();

    // What the mock did: every attempt, its answer, and what it treated as acknowledged.
    let log = mock.deliveries();
    assert!(log.len() < LOG_RECORDS, "the delivery log overflowed");
    let mut acknowledged = HashSet::new(); // keys the receivers answered 2xx for
    let (mut acks, mut lost_acks, mut unanswered, mut finals) = (0, 0, 0, 0);
    // Per object: the newest `updated_on` acknowledged so far, to count late arrivals.
    let mut newest: HashMap<Uuid, i64> = HashMap::new();
    let mut late = 0;
    for record in &log {
        let delivery = chip_gate::Delivery::from_verified(Bytes::from(record.body.clone()));
        let updated_on = delivery.dedup_key().unwrap().updated_on.unwrap();
        if record.status.is_some_and(|s| (200..300).contains(&s)) {
            acks += 1;
            if record.accepted {
                finals += 1;
            } else {
                lost_acks += 1;
            }
            if acknowledged.insert(chip_gate_inbox::dedup_key(&delivery)) {
                let seen = newest.entry(record.object_id).or_insert(updated_on);
                if *seen > updated_on {
                    late += 1;
                }
                *seen = (*seen).max(updated_on);
            }
        } else {
            unanswered += 1;
        }
        assert!(
            !record.last_attempt || record.accepted,
            "the mock gave up on a delivery: {record:?}"
        );
    }

    let (effects, stored) = read_back(&inbox).await;
    let attempts_sql =
        "SELECT CAST(COALESCE(SUM(attempts), 0) AS BIGINT) FROM chip_inbox_deliveries";
    let claims = scalar(&inbox, attempts_sql).await;
    let counts = inbox.counts().await.unwrap();
    let store_keys: HashMap<&str, (&str, &str, i64)> = stored
        .iter()
        .map(|(k, s, o, u)| (k.as_str(), (s.as_str(), o.as_str(), *u)))
        .collect();
    let stale: Vec<_> = stored.iter().filter(|r| r.1 == "stale").collect();
    let done = stored.iter().filter(|r| r.1 == "done").count();

    // Straight to stderr, past the test harness's capture: the counts show in every run.
    let _ = writeln!(
        std::io::stderr(),
        "{label}: {distinct} events from the mock (seed {seed}); {} delivery attempts: {acks} answered 2xx \
         ({lost_acks} of them treated as lost by the mock, so delivered again), {unanswered} refused or \
         cut by kills; {late} events arrived after a newer state of their object; {} SIGKILLs; \
         inbox: {} effects, {} stale, {} claims cut short by a kill and handed over again, \
         counts {:?}; {:.1} s",
        log.len(),
        children.kills,
        effects.len(),
        stale.len(),
        claims - i64::try_from(done).unwrap() - i64::try_from(counts.retried).unwrap(),
        counts,
        started.elapsed().as_secs_f64(),
    );

    // The run had what it was meant to have: duplicates, late arrivals, kills.
    assert!(
        lost_acks > 0 && counts.duplicates > 0,
        "no duplicates were made"
    );
    assert!(late > 0, "no event arrived out of order");
    assert!(children.kills > 0);
    // Every event was acknowledged in the end, once as far as the mock is concerned.
    assert_eq!(finals, distinct, "one accepted attempt per event");
    assert_eq!(acknowledged.len(), distinct);
    // Everything acknowledged is in the store; the store holds exactly the distinct events.
    for key in &acknowledged {
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
