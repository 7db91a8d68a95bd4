//! "As fast as the best PostgreSQL job queues": one run, side by side.
//!
//! 1. **Intake** over loopback HTTP (`chip_gate::serve::serve`, as the app serves it) at 1, 8, 32
//!    and 256 concurrent keep-alive senders, ~2.7 KB signed bodies (RSA-2048, the fixtures' test
//!    key): verify only; a naive handler (verify, one INSERT per request, answer after its commit);
//!    a minimal group commit written here (one multi-row INSERT per flush); on SQLite, the same
//!    group commit storing what the inbox stores, into the inbox's table with the inbox's
//!    statement (to tell what the row costs from what the inbox's machinery costs); the inbox's
//!    `Intake`.
//!    Each durable receiver on SQLite (file, WAL, `synchronous=FULL`) and PostgreSQL (defaults),
//!    on a fresh database. Deliveries/s, p50/p99, process CPU per delivery and PostgreSQL server
//!    CPU per delivery (all `postgres` processes, from `/proc`).
//! 2. **Processing** on PostgreSQL: drain 20,000 stored jobs (1 object per job, and 10 jobs per
//!    object) with a no-op handler and with a handler that writes one row, with the inbox's
//!    `Worker`, `awa` and `graphile_worker`; jobs/s, and violations of per-object order
//!    (a job of an object started while another of the same object ran, or out of order). Then
//!    pickup latency (stored to handler start) with jobs trickling in at 100/s.
//! 3. `profile` (not part of `all`): every statement sqlx runs while the inbox and awa drain a
//!    backlog (`BENCH_PROFILE_JOBS`, default 5000), per job, with its client-side time.
//!
//! Scenarios alternate within each round; medians over rounds are printed with ratios.
//! Usage: `chip-gate-queue-bench [intake|processing|all|profile] [rounds]`, env `BENCH_POSTGRES_URL`
//! (default `postgres://chip_inbox:chip_inbox@127.0.0.1:5432/chip_inbox`, a role that may create
//! databases), `BENCH_INTAKE_DELIVERIES` (default 4000), `BENCH_JOBS` (default 20000); to explore,
//! `BENCH_ONLY` (processing: a comma-separated list of queue-name prefixes, e.g. `chip,awa`) and
//! `BENCH_INBOX_BATCH` / `BENCH_INBOX_CONCURRENCY` (the inbox worker's settings instead of its
//! defaults), `BENCH_INBOX_POOL` (its pool's size), `BENCH_HANDLER` (`noop`, `row` or `apart`: one handler only), `BENCH_SENDERS` (intake: a
//! comma-separated list of sender counts), `BENCH_RECEIVERS` (intake: receiver-name prefixes,
//! e.g. `verify,inbox`, or separated by `/` to name a database: `verify/inbox, SQLite`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use chip_gate::testing::TestSigner;
use chip_gate::{Digest, Verifier};
use chip_gate_inbox::{Inbox, Intake, IntakeOptions, StoredDelivery, WorkerOptions};
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::{mpsc, oneshot};

const PRIVATE_KEY: &str =
    include_str!("../../../crates/chip-gate-inbox/tests/fixtures/rsa2048-private-pkcs8.pem");
const PUBLIC_KEY: &str =
    include_str!("../../../crates/chip-gate-inbox/tests/fixtures/rsa2048-public-spki.pem");

// ---------------------------------------------------------------------------------------------
// Measuring helpers.

/// CPU time (user + system) of the process `pid` ("self" for this one), from `/proc`.
fn proc_cpu(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn self_cpu() -> Duration {
    proc_cpu("self").unwrap_or_default()
}

/// CPU time of every `postgres` process on this machine, by pid.
fn postgres_cpu() -> HashMap<u32, Duration> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if comm.trim() == "postgres"
            && let Some(cpu) = proc_cpu(&pid.to_string())
        {
            out.insert(pid, cpu);
        }
    }
    out
}

/// Server CPU used between two snapshots (processes started since count from zero).
fn postgres_cpu_since(before: &HashMap<u32, Duration>) -> Duration {
    postgres_cpu()
        .iter()
        .map(|(pid, cpu)| cpu.saturating_sub(before.get(pid).copied().unwrap_or_default()))
        .sum()
}

fn now_us() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros(),
    )
    .unwrap()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    values[values.len() / 2]
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

// ---------------------------------------------------------------------------------------------
// Databases.

fn postgres_base() -> String {
    std::env::var("BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://chip_inbox:chip_inbox@127.0.0.1:5432/chip_inbox".to_owned())
}

/// A fresh PostgreSQL database; its URL.
async fn postgres_database(base: &str) -> String {
    let name = format!("chip_queue_bench_{:08x}", fastrand::u32(..));
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let (prefix, _) = base.rsplit_once('/').unwrap();
    format!("{prefix}/{name}")
}

// The inbox's tests' helper, shared by path (the benchmark uses only the patient drop).
#[allow(dead_code)]
#[path = "../../../crates/chip-gate-inbox/tests/common/drop_database.rs"]
mod drop_database;

/// Drops a scenario's database, waiting out an autovacuum worker on it (a database that just
/// took 20,000 jobs often has one, which `WITH (FORCE)` may not end); one that cannot be
/// dropped is named, not fatal.
async fn drop_postgres_database(base: &str, url: &str) {
    let (_, name) = url.rsplit_once('/').unwrap();
    let mut conn = sqlx::PgConnection::connect(base).await.unwrap();
    match drop_database::drop_database_patiently(&mut conn, name).await {
        Ok(true) => {}
        Ok(false) => eprintln!("database {name} left in place: still in use"),
        Err(error) => eprintln!("database {name} left in place: {error}"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Db {
    Sqlite,
    Postgres,
}

impl Db {
    fn name(self) -> &'static str {
        match self {
            Db::Sqlite => "SQLite",
            Db::Postgres => "PostgreSQL",
        }
    }
}

/// A fresh database of kind `db`: its URL and, for SQLite, the directory that holds it.
async fn fresh(db: Db) -> (String, Option<tempfile::TempDir>) {
    match db {
        Db::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            (url, Some(dir))
        }
        Db::Postgres => (postgres_database(&postgres_base()).await, None),
    }
}

async fn cleanup(db: Db, url: &str) {
    if db == Db::Postgres {
        drop_postgres_database(&postgres_base(), url).await;
    }
}

/// The table the naive handler and the minimal group commit store into: what the inbox keeps
/// of a delivery, with the same unique dedup key.
const SQLITE_TABLE: &str = "CREATE TABLE bench_deliveries (id INTEGER PRIMARY KEY, \
    dedup_key TEXT NOT NULL UNIQUE, event TEXT NOT NULL, object_id TEXT, updated_on INTEGER, \
    body BLOB NOT NULL, signature TEXT NOT NULL, received_at INTEGER NOT NULL)";
const POSTGRES_TABLE: &str = "CREATE TABLE bench_deliveries (id BIGSERIAL PRIMARY KEY, \
    dedup_key TEXT NOT NULL UNIQUE, event TEXT NOT NULL, object_id TEXT, updated_on BIGINT, \
    body BYTEA NOT NULL, signature TEXT NOT NULL, received_at BIGINT NOT NULL)";

#[derive(Clone)]
enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
    /// SQLite, storing into the inbox's own table with the inbox's statement (its schema made
    /// by the inbox's migrations): the group commit's batching with the inbox's writes.
    SqliteInboxTable(sqlx::SqlitePool),
}

impl Pool {
    /// Connects to `url` with `connections` connections and makes the table.
    async fn open(db: Db, url: &str, connections: u32) -> Pool {
        match db {
            Db::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .unwrap()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(30));
                let pool = SqlitePoolOptions::new()
                    .max_connections(connections)
                    .connect_with(options)
                    .await
                    .unwrap();
                sqlx::query(SQLITE_TABLE).execute(&pool).await.unwrap();
                Pool::Sqlite(pool)
            }
            Db::Postgres => {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(connections)
                    .connect(url)
                    .await
                    .unwrap();
                sqlx::query(POSTGRES_TABLE).execute(&pool).await.unwrap();
                Pool::Postgres(pool)
            }
        }
    }

    /// The inbox's table on the SQLite file `url`, made by the inbox's migrations, and a pool
    /// of one connection opened as [`Pool::open`] opens SQLite's, plus the one setting the
    /// inbox adds (`temp_store = MEMORY`).
    async fn open_inbox_table(url: &str) -> Pool {
        let inbox = Inbox::connect(url).await.unwrap();
        inbox.migrate().await.unwrap();
        inbox.close().await;
        let options = SqliteConnectOptions::from_str(url)
            .unwrap()
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .pragma("temp_store", "memory")
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        Pool::SqliteInboxTable(pool)
    }

    async fn count(&self) -> i64 {
        let sql = "SELECT COUNT(*) FROM bench_deliveries";
        match self {
            Pool::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
            Pool::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
            Pool::SqliteInboxTable(p) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM chip_inbox_deliveries")
                    .fetch_one(p)
                    .await
                    .unwrap()
            }
        }
    }

    async fn close(&self) {
        match self {
            Pool::Sqlite(p) | Pool::SqliteInboxTable(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }

    /// One multi-row insert (autocommit: one transaction, one flush).
    async fn insert(&self, rows: &[Row]) -> Result<(), sqlx::Error> {
        if let Pool::SqliteInboxTable(pool) = self {
            return insert_inbox_table(pool, rows).await;
        }
        let mut sql = String::from(
            "INSERT INTO bench_deliveries (dedup_key, event, object_id, updated_on, body, \
             signature, received_at) VALUES ",
        );
        for i in 0..rows.len() {
            sql.push_str(if i == 0 { "" } else { ", " });
            match self {
                // Anonymous parameters, as the inbox binds them on SQLite: for each parameter
                // sqlx asks SQLite its name, which SQLite finds by walking the whole list, so
                // numbered ones make a large batch's binding quadratic (3 % of this writer's
                // CPU at 256 senders when it used them).
                Pool::Sqlite(_) => sql.push_str("(?, ?, ?, ?, ?, ?, ?)"),
                Pool::SqliteInboxTable(_) => unreachable!("stored by insert_inbox_table"),
                Pool::Postgres(_) => {
                    let p = i * 7;
                    sql.push_str(&format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5,
                        p + 6,
                        p + 7
                    ));
                }
            }
        }
        sql.push_str(" ON CONFLICT (dedup_key) DO NOTHING");
        macro_rules! bind_all {
            ($pool:expr) => {{
                let mut q = sqlx::query(&sql);
                for r in rows {
                    q = q
                        .bind(&r.dedup_key)
                        .bind(&r.event)
                        .bind(r.object_id.as_deref())
                        .bind(r.updated_on)
                        .bind(r.body.as_ref())
                        .bind(&r.signature)
                        .bind(r.received_at);
                }
                q.execute($pool).await.map(|_| ())
            }};
        }
        match self {
            Pool::Sqlite(p) => bind_all!(p),
            Pool::Postgres(p) => bind_all!(p),
            Pool::SqliteInboxTable(_) => unreachable!("stored by insert_inbox_table"),
        }
    }
}

/// The group commit's batch written as the inbox writes one on SQLite (the statement of
/// `store_batch_sqlite` in the inbox's `intake/batch.rs`, copied here to be measured apart), in
/// one round trip: `BEGIN IMMEDIATE`, the deliveries' twelve columns into the inbox's table
/// (its four indexes, its id sequence, the retention horizon, `ON CONFLICT (dedup_key) DO
/// NOTHING RETURNING`), the `received` counter on a random shard, `COMMIT`. Around it, the
/// minimal group commit's own machinery: its queue, its writer, its pool of one connection taken
/// for each batch; none of the inbox's (its queue and writer, the connection it keeps, the ids
/// and repeats it answers with).
async fn insert_inbox_table(pool: &sqlx::SqlitePool, rows: &[Row]) -> Result<(), sqlx::Error> {
    let mut sql = String::from(
        "BEGIN IMMEDIATE; INSERT INTO chip_inbox_deliveries (dedup_key, lane, event, \
         object_kind, object_id, updated_on, signature, body, typing_problem, received_at, \
         next_attempt_at, expired) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, \
         v.column8, v.column9, v.column10, v.column11, \
         CASE WHEN v.column6 <= (SELECT updated_on FROM chip_inbox_horizon WHERE id = 1) \
         OR v.column6 < ? THEN 1 ELSE 0 END FROM (VALUES ",
    );
    for i in 0..rows.len() {
        sql.push_str(if i == 0 { "" } else { ", " });
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    }
    sql.push_str(
        ") AS v WHERE true ON CONFLICT (dedup_key) DO NOTHING RETURNING id, dedup_key; \
         INSERT INTO chip_inbox_counters (name, shard, value) \
         SELECT 'received', ?, changes() WHERE changes() > 0 \
         ON CONFLICT (name, shard) DO UPDATE SET value = chip_inbox_counters.value + excluded.value; \
         COMMIT",
    );
    let now = now_us() / 1000;
    // The inbox's default `max_age` (none): only the horizon decides what arrives expired.
    let mut query = sqlx::query(&sql).bind(i64::MIN);
    for r in rows {
        query = query
            .bind(&r.dedup_key)
            .bind(&r.lane)
            .bind(&r.event)
            .bind(r.object_kind)
            .bind(r.object_id.as_deref())
            .bind(r.updated_on)
            .bind(&r.signature)
            .bind(r.body.as_ref())
            .bind(r.typing_problem.as_deref())
            .bind(now)
            .bind(now);
    }
    query = query.bind(i64::from(fastrand::u32(0..64)));
    let mut conn = pool.acquire().await?;
    match query.fetch_all(&mut *conn).await {
        Ok(_) => Ok(()),
        Err(error) => {
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            Err(error)
        }
    }
}

/// What the naive handler and the group commit store (`lane`, `object_kind` and
/// `typing_problem` only into the inbox's table).
struct Row {
    dedup_key: String,
    lane: String,
    object_kind: &'static str,
    typing_problem: Option<String>,
    event: String,
    object_id: Option<String>,
    updated_on: Option<i64>,
    body: Bytes,
    signature: String,
    received_at: i64,
}

/// Verifies and reads the delivery as the inbox does; `None` when it does not verify.
fn verified_row(verifier: &Verifier, headers: &HeaderMap, body: Bytes) -> Option<Row> {
    let delivery = verifier
        .verify_headers_and_parse(body.clone(), headers)
        .ok()?;
    let signature = headers.get("x-signature")?.to_str().ok()?.to_owned();
    let object_id = delivery.object().id().map(str::to_owned);
    Some(Row {
        dedup_key: chip_gate_inbox::dedup_key(&delivery),
        // The inbox's lane for an object (its kind, then its id; these ids need no escaping).
        lane: format!("purchase:{}", object_id.as_deref().unwrap_or_default()),
        object_kind: "purchase",
        typing_problem: delivery.typing_problem().map(|p| p.to_string()),
        event: delivery.event().to_string(),
        object_id,
        updated_on: delivery.object().updated_on(),
        body,
        signature,
        received_at: now_us() / 1000,
    })
}

// ---------------------------------------------------------------------------------------------
// Part 1: intake.

async fn verify_only(
    State(verifier): State<Verifier>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    match verifier.verify_headers_and_parse(body, &headers) {
        Ok(delivery) => {
            std::hint::black_box(chip_gate_inbox::dedup_key(&delivery));
            (StatusCode::OK, "ok")
        }
        Err(_) => (StatusCode::UNAUTHORIZED, "invalid signature"),
    }
}

async fn naive(
    State((verifier, pool)): State<(Verifier, Pool)>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let Some(row) = verified_row(&verifier, &headers, body) else {
        return (StatusCode::UNAUTHORIZED, "invalid signature");
    };
    match pool.insert(std::slice::from_ref(&row)).await {
        Ok(()) => (StatusCode::OK, "ok"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

type Waiting = (Row, oneshot::Sender<bool>);

/// The minimal group commit: one writer takes what is queued (up to 256), stores it with one
/// multi-row INSERT, then answers each.
async fn group_writer(pool: Pool, mut queue: mpsc::Receiver<Waiting>) {
    let mut batch: Vec<Waiting> = Vec::with_capacity(256);
    while queue.recv_many(&mut batch, 256).await > 0 {
        let (rows, answers): (Vec<Row>, Vec<oneshot::Sender<bool>>) = batch.drain(..).unzip();
        let ok = pool.insert(&rows).await.is_ok();
        for answer in answers {
            let _ = answer.send(ok);
        }
    }
}

async fn group_commit(
    State((verifier, queue)): State<(Verifier, mpsc::Sender<Waiting>)>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let Some(row) = verified_row(&verifier, &headers, body) else {
        return (StatusCode::UNAUTHORIZED, "invalid signature");
    };
    let (tx, rx) = oneshot::channel();
    if queue.send((row, tx)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    }
    match rx.await {
        Ok(true) => (StatusCode::OK, "ok"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
    }
}

async fn serve(app: Router) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ =
            chip_gate::serve::serve(listener, app, chip_gate::serve::ServeOptions::default()).await;
    });
    (port, task)
}

#[derive(Clone, Debug, Default)]
struct IntakeFigures {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    server_cpu_us: Option<f64>,
}

async fn load(
    port: u16,
    deliveries: &Arc<Vec<(Bytes, String)>>,
    senders: usize,
    postgres: bool,
) -> IntakeFigures {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(senders)
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/chip/webhook");
    let next = Arc::new(AtomicUsize::new(0));
    let server_before = postgres.then(postgres_cpu);
    let cpu_before = self_cpu();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..senders {
        let (client, url, next, deliveries) = (
            client.clone(),
            url.clone(),
            Arc::clone(&next),
            Arc::clone(deliveries),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, signature)) = deliveries.get(i) else {
                    return latencies;
                };
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("x-signature", signature)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "{}", response.status());
                let _ = response.bytes().await.unwrap();
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let n = latencies.len() as f64;
    let cpu_us = self_cpu().saturating_sub(cpu_before).as_secs_f64() * 1e6 / n;
    let server_cpu_us = server_before.map(|b| postgres_cpu_since(&b).as_secs_f64() * 1e6 / n);
    latencies.sort_unstable_by(f64::total_cmp);
    IntakeFigures {
        rate: n / elapsed.as_secs_f64(),
        p50_ms: quantile(&latencies, 0.50),
        p99_ms: quantile(&latencies, 0.99),
        cpu_us,
        server_cpu_us,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Receiver {
    VerifyOnly,
    Naive(Db),
    GroupCommit(Db),
    /// The group commit storing into the inbox's table, as the inbox does (on SQLite only: the
    /// question it answers, why the inbox trails the minimal group commit, is SQLite's).
    GroupCommitInboxTable,
    Inbox(Db),
}

impl Receiver {
    /// The database it stores into.
    fn db(self) -> Option<Db> {
        match self {
            Receiver::VerifyOnly => None,
            Receiver::Naive(db) | Receiver::GroupCommit(db) | Receiver::Inbox(db) => Some(db),
            Receiver::GroupCommitInboxTable => Some(Db::Sqlite),
        }
    }

    fn name(self) -> String {
        match self {
            Receiver::VerifyOnly => "verify only".to_owned(),
            Receiver::Naive(db) => format!("naive, {}", db.name()),
            Receiver::GroupCommit(db) => format!("group commit, {}", db.name()),
            Receiver::GroupCommitInboxTable => "group commit, inbox's table, SQLite".to_owned(),
            Receiver::Inbox(db) => format!("inbox, {}", db.name()),
        }
    }
}

async fn intake_scenario(
    receiver: Receiver,
    verify_port: u16,
    deliveries: &Arc<Vec<(Bytes, String)>>,
    senders: usize,
) -> IntakeFigures {
    let verifier = Verifier::from_pem(PUBLIC_KEY).unwrap();
    let n = deliveries.len() as i64;
    match receiver {
        Receiver::VerifyOnly => load(verify_port, deliveries, senders, false).await,
        Receiver::Naive(_) | Receiver::GroupCommit(_) | Receiver::GroupCommitInboxTable => {
            let db = receiver.db().unwrap_or(Db::Sqlite);
            let (url, _dir) = fresh(db).await;
            // Naive: SQLite has one writer, so one connection (more only busy-wait on its
            // lock); PostgreSQL: sqlx's default pool of 10. Group commit: one writer.
            let connections = match (receiver, db) {
                (Receiver::Naive(_), Db::Postgres) => 10,
                _ => 1,
            };
            let pool = if receiver == Receiver::GroupCommitInboxTable {
                Pool::open_inbox_table(&url).await
            } else {
                Pool::open(db, &url, connections).await
            };
            let (app, writer) = if matches!(receiver, Receiver::Naive(_)) {
                let app = Router::new()
                    .route("/chip/webhook", post(naive))
                    .with_state((verifier, pool.clone()));
                (app, None)
            } else {
                let (tx, rx) = mpsc::channel(4096);
                let writer = tokio::spawn(group_writer(pool.clone(), rx));
                let app = Router::new()
                    .route("/chip/webhook", post(group_commit))
                    .with_state((verifier, tx));
                (app, Some(writer))
            };
            let (port, server) = serve(app).await;
            let figures = load(port, deliveries, senders, db == Db::Postgres).await;
            server.abort();
            let _ = server.await;
            if let Some(writer) = writer {
                writer.abort();
            }
            assert_eq!(
                pool.count().await,
                n,
                "every acknowledged delivery is stored"
            );
            pool.close().await;
            cleanup(db, &url).await;
            figures
        }
        Receiver::Inbox(db) => {
            let (url, _dir) = fresh(db).await;
            let mut options = chip_gate_inbox::InboxOptions::default();
            if let Some(n) = std::env::var("BENCH_INBOX_POOL")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                options = options.max_connections(n);
            }
            let inbox = Inbox::connect_with(&url, options).await.unwrap();
            let intake = Intake::new(&inbox, verifier, IntakeOptions::default()).unwrap();
            let app: Router = intake.router("/chip/webhook");
            let (port, server) = serve(app).await;
            let figures = load(port, deliveries, senders, db == Db::Postgres).await;
            server.abort();
            let _ = server.await;
            let counts = inbox.counts().await.unwrap();
            assert_eq!(
                counts.received as i64, n,
                "every acknowledged delivery is stored"
            );
            drop(intake);
            inbox.close().await;
            cleanup(db, &url).await;
            figures
        }
    }
}

/// A CHIP purchase delivery of about 2.3 KB.
fn purchase_body(n: usize) -> String {
    let products: Vec<String> = (0..8)
        .map(|p| {
            format!(
                r#"{{"name":"Kopi susu ais, large, less sugar, extra shot #{p}","price":1290,"quantity":"1.0000","discount":0,"tax_percent":"6.00","category":"drinks-{p}"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"id":"d6f1c1a2-{n:08}-4e4b-9a31-5b0c8c1f0e7d","type":"purchase","event_type":"purchase.paid","created_on":1700000000,"updated_on":1700000100,"status":"paid","brand_id":"2b1d6a8e-3c5f-4a7e-9d2b-1f0e8c7a6b5d","company_id":"7c0a9f3e-1b2d-4c5e-8f6a-9b0c1d2e3f4a","is_test":true,"reference":"ORDER-{n:08}","client":{{"email":"buyer{n}@example.com","full_name":"Siti Nurhaliza binti Ahmad","phone":"+60123456789","street_address":"12 Jalan Bukit Bintang","city":"Kuala Lumpur","zip_code":"55100","country":"MY","shipping_street_address":"12 Jalan Bukit Bintang","shipping_city":"Kuala Lumpur","shipping_zip_code":"55100","shipping_country":"MY"}},"purchase":{{"currency":"MYR","total":10320,"language":"en","notes":"Please deliver after 6pm; call on arrival.","products":[{}]}},"payment":{{"amount":10320,"currency":"MYR","net_amount":10010,"fee_amount":310,"payment_type":"purchase","paid_on":1700000100,"remote_paid_on":1700000100,"description":"Payment for ORDER-{n:08}"}},"transaction_data":{{"payment_method":"fpx","flow":"payform","extra":{{}},"country":"MY","attempts":[{{"type":"execute","successful":true,"payment_method":"fpx","country":"MY","processing_time":1700000099,"client_ip":"203.0.113.7","fee_amount":310}}]}},"success_redirect":"https://shop.example.com/orders/{n}/paid","failure_redirect":"https://shop.example.com/orders/{n}/failed","cancel_redirect":"https://shop.example.com/orders/{n}/cancelled","success_callback":"https://shop.example.com/chip/webhook","platform":"api","product":"purchases","send_receipt":false}}"#,
        products.join(",")
    )
}

async fn sign_all(bodies: Vec<String>) -> Vec<(Bytes, String)> {
    // Two threads (this machine's cores): RSA signing is the slow part of preparing.
    let chunks: Vec<Vec<String>> = {
        let half = bodies.len().div_ceil(2).max(1);
        bodies.chunks(half).map(<[String]>::to_vec).collect()
    };
    let mut handles = Vec::new();
    for chunk in chunks {
        handles.push(tokio::task::spawn_blocking(move || {
            let signer = TestSigner::from_pem(PRIVATE_KEY).unwrap();
            chunk
                .into_iter()
                .map(|b| {
                    let signature = signer.sign(b.as_bytes(), Digest::Sha256).unwrap();
                    (Bytes::from(b), signature)
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut out = Vec::new();
    for h in handles {
        out.extend(h.await.unwrap());
    }
    out
}

async fn intake_part(rounds: usize) {
    let count: usize = std::env::var("BENCH_INTAKE_DELIVERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    eprintln!("intake: signing {count} deliveries...");
    let deliveries = Arc::new(sign_all((0..count).map(purchase_body).collect()).await);
    let size = deliveries.iter().map(|(b, _)| b.len()).sum::<usize>() / count;
    let verifier = Verifier::from_pem(PUBLIC_KEY).unwrap();
    let verify_app = Router::new()
        .route("/chip/webhook", post(verify_only))
        .with_state(verifier);
    let (verify_port, _verify_server) = serve(verify_app).await;
    let warm = Arc::new(deliveries.iter().take(500).cloned().collect::<Vec<_>>());
    load(verify_port, &warm, 8, false).await;

    let senders_list = [1usize, 8, 32, 256];
    let receivers = [
        Receiver::VerifyOnly,
        Receiver::Naive(Db::Sqlite),
        Receiver::GroupCommit(Db::Sqlite),
        Receiver::GroupCommitInboxTable,
        Receiver::Inbox(Db::Sqlite),
        Receiver::Naive(Db::Postgres),
        Receiver::GroupCommit(Db::Postgres),
        Receiver::Inbox(Db::Postgres),
    ];
    // results[senders][receiver][round]
    let mut results: Vec<Vec<Vec<IntakeFigures>>> =
        vec![vec![Vec::new(); receivers.len()]; senders_list.len()];
    let receivers_only = std::env::var("BENCH_RECEIVERS").unwrap_or_default();
    let receiver_wanted = |r: Receiver| {
        // Names hold a comma ("inbox, SQLite"): a list with a `/` is split there instead.
        let separator = if receivers_only.contains('/') {
            '/'
        } else {
            ','
        };
        receivers_only.is_empty()
            || receivers_only
                .split(separator)
                .any(|w| r.name().starts_with(w))
    };
    let senders_only = std::env::var("BENCH_SENDERS").unwrap_or_default();
    let senders_wanted = |n: usize| {
        senders_only.is_empty() || senders_only.split(',').any(|w| w.trim() == n.to_string())
    };
    for round in 0..rounds {
        for (si, &senders) in senders_list.iter().enumerate() {
            if !senders_wanted(senders) {
                continue;
            }
            eprintln!("intake round {} of {rounds}, {senders} senders", round + 1);
            for (ri, &receiver) in receivers.iter().enumerate() {
                if !receiver_wanted(receiver) {
                    continue;
                }
                let f = intake_scenario(receiver, verify_port, &deliveries, senders).await;
                eprintln!(
                    "  {:<26} {:>8.0}/s p50 {:>6.2} ms p99 {:>6.2} ms cpu {:>4.0} us server {}",
                    receiver.name(),
                    f.rate,
                    f.p50_ms,
                    f.p99_ms,
                    f.cpu_us,
                    f.server_cpu_us
                        .map_or_else(|| "-".to_owned(), |s| format!("{s:.0} us"))
                );
                results[si][ri].push(f);
            }
        }
    }

    println!();
    println!(
        "INTAKE: {count} deliveries (~{size} bytes, RSA-2048 SHA-256) per scenario, {rounds} rounds \
         alternating, HTTP/1.1 keep-alive on loopback; medians of the rounds"
    );
    println!(
        "| senders | receiver | deliveries/s | p50 ms | p99 ms | CPU µs/del (process) | PG server CPU µs/del | vs verify only | inbox vs it (each round) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---|");
    for (si, &senders) in senders_list.iter().enumerate() {
        if !senders_wanted(senders) {
            continue;
        }
        let verify_rate = median(results[si][0].iter().map(|f| f.rate).collect());
        for (ri, &receiver) in receivers.iter().enumerate() {
            let runs = &results[si][ri];
            if runs.is_empty() {
                continue;
            }
            let rate = median(runs.iter().map(|f| f.rate).collect());
            let server: Vec<f64> = runs.iter().filter_map(|f| f.server_cpu_us).collect();
            // The inbox of the same database, round by round, against this receiver.
            let inbox_vs = match receiver {
                Receiver::Naive(_) | Receiver::GroupCommit(_) | Receiver::GroupCommitInboxTable => {
                    let db = receiver.db().unwrap_or(Db::Sqlite);
                    let ii = receivers
                        .iter()
                        .position(|r| *r == Receiver::Inbox(db))
                        .unwrap();
                    let each: Vec<String> = runs
                        .iter()
                        .zip(&results[si][ii])
                        .map(|(f, i)| format!("{:.2}", i.rate / f.rate))
                        .collect();
                    each.join(", ")
                }
                Receiver::Inbox(_) => {
                    // Against verify only, round by round.
                    let each: Vec<String> = runs
                        .iter()
                        .zip(&results[si][0])
                        .map(|(i, v)| format!("vs verify {:.2}", i.rate / v.rate))
                        .collect();
                    each.join(", ")
                }
                Receiver::VerifyOnly => String::new(),
            };
            println!(
                "| {senders} | {} | {rate:.0} | {:.2} | {:.2} | {:.0} | {} | {:.2} | {} |",
                receiver.name(),
                median(runs.iter().map(|f| f.p50_ms).collect()),
                median(runs.iter().map(|f| f.p99_ms).collect()),
                median(runs.iter().map(|f| f.cpu_us).collect()),
                if server.is_empty() {
                    "-".to_owned()
                } else {
                    format!("{:.0}", median(server))
                },
                rate / verify_rate,
                inbox_vs
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Part 2: processing.

/// The payload every queue carries: the object, its sequence number, and when it was enqueued
/// (µs since the epoch; 0 in a backlog).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Job {
    obj: u32,
    seq: u32,
    t: i64,
}

/// What handlers record: counts, pickup latencies, per-object order violations.
struct Recorder {
    target: usize,
    done: AtomicUsize,
    finished: tokio::sync::Notify,
    pickups: Mutex<Vec<f64>>,
    /// When each object's job was about to be stored (the trickle), µs since the epoch.
    stamps: Mutex<HashMap<u32, i64>>,
    /// Per object: (a handler running, last sequence finished).
    objects: Mutex<HashMap<u32, (bool, i64)>>,
    violations: AtomicUsize,
    last_done: Mutex<Option<Instant>>,
}

impl Recorder {
    fn new(target: usize) -> Arc<Recorder> {
        Arc::new(Recorder {
            target,
            done: AtomicUsize::new(0),
            finished: tokio::sync::Notify::new(),
            pickups: Mutex::new(Vec::new()),
            stamps: Mutex::new(HashMap::new()),
            objects: Mutex::new(HashMap::new()),
            violations: AtomicUsize::new(0),
            last_done: Mutex::new(None),
        })
    }

    /// Notes that `obj`'s job is about to be stored (the trickle).
    fn stamp(&self, obj: u32) {
        self.stamps.lock().unwrap().insert(obj, now_us());
    }

    fn start(&self, job: &Job) {
        let stamped = self.stamps.lock().unwrap().get(&job.obj).copied();
        if let Some(t) = stamped.or((job.t > 0).then_some(job.t)) {
            let ms = (now_us() - t) as f64 / 1000.0;
            self.pickups.lock().unwrap().push(ms);
        }
        let mut objects = self.objects.lock().unwrap();
        let entry = objects.entry(job.obj).or_insert((false, -1));
        if entry.0 || i64::from(job.seq) != entry.1 + 1 {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
        entry.0 = true;
    }

    fn end(&self, job: &Job) {
        {
            let mut objects = self.objects.lock().unwrap();
            let entry = objects.entry(job.obj).or_insert((false, -1));
            entry.0 = false;
            entry.1 = entry.1.max(i64::from(job.seq));
        }
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if done >= self.target {
            *self.last_done.lock().unwrap() = Some(Instant::now());
            self.finished.notify_one();
        }
    }

    async fn wait(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.done.load(Ordering::SeqCst) >= self.target {
                return true;
            }
            if tokio::time::timeout_at(deadline, self.finished.notified())
                .await
                .is_err()
            {
                return self.done.load(Ordering::SeqCst) >= self.target;
            }
        }
    }
}

/// The recorder the queues' handlers (static functions) report to.
static CURRENT: RwLock<Option<Arc<Recorder>>> = RwLock::new(None);

fn recorder() -> Arc<Recorder> {
    CURRENT.read().unwrap().clone().expect("a recorder is set")
}

fn set_recorder(r: &Arc<Recorder>) {
    *CURRENT.write().unwrap() = Some(Arc::clone(r));
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Queue {
    Inbox,
    Awa,
    Graphile,
}

impl Queue {
    fn name(self) -> &'static str {
        match self {
            Queue::Inbox => "chip-gate-inbox Worker",
            Queue::Awa => "awa 0.6.9",
            Queue::Graphile => "graphile_worker 0.14.1",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Handler {
    Noop,
    /// Inserts one row: in the inbox inside the done-mark's transaction, in the others as a
    /// separate autocommit.
    WriteRow,
    /// The inbox only: a plain handler that inserts one row in a separate autocommit through
    /// the inbox's pool, as awa's and graphile_worker's handlers do (like for like, without
    /// the exactly-once of `WriteRow`).
    WriteRowApart,
}

const EFFECTS_TABLE: &str = "CREATE TABLE bench_effects (obj INTEGER NOT NULL, seq INTEGER NOT NULL, \
     PRIMARY KEY (obj, seq))";

fn jobs_for(n: usize, per_object: usize, t: i64) -> Vec<Job> {
    let objects = (n / per_object).max(1);
    // Interleaved, as deliveries of many objects arrive: object i % objects, in order.
    (0..n)
        .map(|i| Job {
            obj: u32::try_from(i % objects).unwrap(),
            seq: u32::try_from(i / objects).unwrap(),
            t,
        })
        .collect()
}

fn inbox_body(job: &Job) -> String {
    // updated_on orders an object's states; seq is it.
    format!(
        r#"{{"id":"o{}","type":"purchase","event_type":"purchase.paid","updated_on":{},"obj":{},"seq":{},"t":{}}}"#,
        job.obj,
        1_700_000_000 + i64::from(job.seq),
        job.obj,
        job.seq,
        job.t
    )
}

fn job_of(d: &StoredDelivery) -> Job {
    serde_json::from_slice(&d.body).unwrap()
}

// awa.
#[derive(Clone, Debug, Serialize, Deserialize, awa::JobArgs)]
struct BenchJob {
    obj: u32,
    seq: u32,
    t: i64,
}

impl From<&Job> for BenchJob {
    fn from(j: &Job) -> Self {
        BenchJob {
            obj: j.obj,
            seq: j.seq,
            t: j.t,
        }
    }
}

impl From<&BenchJob> for Job {
    fn from(j: &BenchJob) -> Self {
        Job {
            obj: j.obj,
            seq: j.seq,
            t: j.t,
        }
    }
}

// graphile_worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct GraphileJob {
    obj: u32,
    seq: u32,
    t: i64,
    write: bool,
}

impl graphile_worker::TaskHandler for GraphileJob {
    const IDENTIFIER: &'static str = "bench_job";

    async fn run(
        self,
        ctx: graphile_worker::WorkerContext,
    ) -> impl graphile_worker::IntoTaskHandlerResult {
        let job = Job {
            obj: self.obj,
            seq: self.seq,
            t: self.t,
        };
        let rec = recorder();
        rec.start(&job);
        if self.write {
            sqlx09::query("INSERT INTO bench_effects (obj, seq) VALUES ($1, $2)")
                .bind(i64::from(job.obj))
                .bind(i64::from(job.seq))
                .execute(ctx.pg_pool())
                .await
                .map_err(|e| e.to_string())?;
        }
        rec.end(&job);
        Ok::<(), String>(())
    }
}

/// A running queue under test: enqueue, then wait; `stop` ends it.
#[allow(clippy::large_enum_variant)]
enum Running {
    Inbox {
        inbox: Inbox,
        intake: Intake,
        worker: tokio::task::JoinHandle<()>,
        stop: Option<oneshot::Sender<()>>,
    },
    Awa {
        pool: sqlx::PgPool,
        client: awa::Client,
    },
    Graphile {
        pool: sqlx09::PgPool,
        worker: tokio::task::JoinHandle<()>,
        utils: graphile_worker::WorkerUtils,
    },
}

/// Sets up queue `q` on the fresh database `url` (its schema, its tables), not started.
async fn setup(q: Queue, url: &str) {
    match q {
        Queue::Inbox => {
            let inbox = Inbox::connect(url).await.unwrap();
            sqlx::query(&EFFECTS_TABLE.replace("INTEGER", "BIGINT"))
                .execute(inbox.postgres_pool().unwrap())
                .await
                .unwrap();
            inbox.close().await;
        }
        Queue::Awa => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            awa::migrations::run(&pool).await.unwrap();
            sqlx::query(&EFFECTS_TABLE.replace("INTEGER", "BIGINT"))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        Queue::Graphile => {
            let pool = sqlx09::PgPool::connect(url).await.unwrap();
            sqlx09::query(sqlx09::AssertSqlSafe(
                EFFECTS_TABLE.replace("INTEGER", "BIGINT"),
            ))
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
    }
}

/// Stores `jobs` as a backlog (before any worker runs, or while it runs for the trickle).
async fn enqueue_backlog(
    q: Queue,
    url: &str,
    jobs: &[Job],
    signed: &[(Bytes, String)],
    write: bool,
) {
    match q {
        Queue::Inbox => {
            let inbox = Inbox::connect(url).await.unwrap();
            let intake = inbox
                .intake(Verifier::from_pem(PUBLIC_KEY).unwrap())
                .unwrap();
            let mut sends = tokio::task::JoinSet::new();
            for (body, signature) in signed {
                let (intake, body, signature) = (intake.clone(), body.clone(), signature.clone());
                sends.spawn(async move { intake.receive_signed(body, &signature).await.unwrap() });
                if sends.len() >= 256 {
                    sends.join_next().await.unwrap().unwrap();
                }
            }
            while let Some(r) = sends.join_next().await {
                r.unwrap();
            }
            assert_eq!(inbox.counts().await.unwrap().received as usize, jobs.len());
            drop(intake);
            inbox.close().await;
        }
        Queue::Awa => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            for chunk in jobs.chunks(1000) {
                let params: Vec<awa::InsertParams> = chunk
                    .iter()
                    .map(|j| awa::insert::params(&BenchJob::from(j)).unwrap())
                    .collect();
                awa::insert_many(&pool, &params).await.unwrap();
            }
            pool.close().await;
        }
        Queue::Graphile => {
            let pool = sqlx09::PgPool::connect(url).await.unwrap();
            let worker = graphile_worker::WorkerOptions::default()
                .schema("graphile_worker")
                .define_job::<GraphileJob>()
                .pg_pool(pool.clone())
                .listen_os_shutdown_signals(false)
                .init()
                .await
                .unwrap();
            let utils = worker.create_utils();
            for chunk in jobs.chunks(1000) {
                let specs: Vec<graphile_worker::RawJobSpec> = chunk
                    .iter()
                    .map(|j| graphile_worker::RawJobSpec {
                        identifier: "bench_job".into(),
                        payload: serde_json::to_value(GraphileJob {
                            obj: j.obj,
                            seq: j.seq,
                            t: j.t,
                            write,
                        })
                        .unwrap(),
                        spec: graphile_spec(j),
                    })
                    .collect();
                utils.add_raw_jobs(&specs).await.unwrap();
            }
            drop(worker);
            pool.close().await;
        }
    }
}

/// graphile_worker runs the jobs of one named queue one at a time, in order: the object's id as
/// the queue name is how it keeps per-object order.
fn graphile_spec(j: &Job) -> graphile_worker::JobSpec {
    graphile_worker::JobSpec {
        queue_name: Some(format!("o{}", j.obj)),
        ..Default::default()
    }
}

/// The inbox's worker settings: its defaults, unless `BENCH_INBOX_BATCH` or
/// `BENCH_INBOX_CONCURRENCY` say otherwise (to explore them; the figures are the defaults').
fn inbox_worker_options() -> WorkerOptions {
    let mut options = WorkerOptions::default();
    if let Some(n) = std::env::var("BENCH_INBOX_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options = options.batch_size(n);
    }
    if let Some(n) = std::env::var("BENCH_INBOX_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options = options.concurrency(n);
    }
    options
}

async fn start(q: Queue, url: &str, handler: Handler) -> Running {
    match q {
        Queue::Inbox => {
            let mut options = chip_gate_inbox::InboxOptions::default();
            if let Some(n) = std::env::var("BENCH_INBOX_POOL")
                .ok()
                .and_then(|v| v.parse().ok())
            {
                options = options.max_connections(n);
            }
            let inbox = Inbox::connect_with(url, options).await.unwrap();
            let intake = inbox
                .intake(Verifier::from_pem(PUBLIC_KEY).unwrap())
                .unwrap();
            let worker = inbox.worker(inbox_worker_options());
            let inbox_pool = inbox.postgres_pool().unwrap().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(async move {
                let shutdown = async {
                    let _ = stopped.await;
                };
                match handler {
                    Handler::Noop => {
                        worker
                            .run_until(
                                |d: StoredDelivery| async move {
                                    let rec = recorder();
                                    let job = job_of(&d);
                                    rec.start(&job);
                                    rec.end(&job);
                                    Ok::<(), String>(())
                                },
                                shutdown,
                            )
                            .await;
                    }
                    Handler::WriteRowApart => {
                        let pool = inbox_pool.clone();
                        worker
                            .run_until(
                                |d: StoredDelivery| {
                                    let pool = pool.clone();
                                    async move {
                                        let rec = recorder();
                                        let job = job_of(&d);
                                        rec.start(&job);
                                        sqlx::query(
                                            "INSERT INTO bench_effects (obj, seq) VALUES ($1, $2)",
                                        )
                                        .bind(i64::from(job.obj))
                                        .bind(i64::from(job.seq))
                                        .execute(&pool)
                                        .await
                                        .map_err(|e| e.to_string())?;
                                        rec.end(&job);
                                        Ok::<(), String>(())
                                    }
                                },
                                shutdown,
                            )
                            .await;
                    }
                    Handler::WriteRow => {
                        worker
                            .run_in_transaction_until(
                                |mut tx: chip_gate_inbox::TxJob| async move {
                                    let rec = recorder();
                                    let job = job_of(tx.delivery());
                                    rec.start(&job);
                                    sqlx::query(
                                        "INSERT INTO bench_effects (obj, seq) VALUES ($1, $2)",
                                    )
                                    .bind(i64::from(job.obj))
                                    .bind(i64::from(job.seq))
                                    .execute(tx.postgres().map_err(|e| e.to_string())?)
                                    .await
                                    .map_err(|e| e.to_string())?;
                                    let completed =
                                        tx.complete().await.map_err(|e| e.to_string())?;
                                    rec.end(&job);
                                    Ok::<_, String>(completed)
                                },
                                shutdown,
                            )
                            .await;
                    }
                }
            });
            Running::Inbox {
                inbox,
                intake,
                worker: task,
                stop: Some(stop),
            }
        }
        Queue::Awa => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let write = handler == Handler::WriteRow;
            let client = awa::Client::builder(pool.clone())
                .queue("default", awa::QueueConfig::default())
                .register::<BenchJob, _, _>(move |args: BenchJob, ctx: &awa::JobContext| {
                    let pool = ctx.pool().clone();
                    async move {
                        let rec = recorder();
                        let job = Job::from(&args);
                        rec.start(&job);
                        if write {
                            sqlx::query("INSERT INTO bench_effects (obj, seq) VALUES ($1, $2)")
                                .bind(i64::from(job.obj))
                                .bind(i64::from(job.seq))
                                .execute(&pool)
                                .await
                                .map_err(awa::JobError::retryable)?;
                        }
                        rec.end(&job);
                        Ok(awa::JobResult::Completed)
                    }
                })
                .build()
                .unwrap();
            client.start().await.unwrap();
            Running::Awa { pool, client }
        }
        Queue::Graphile => {
            let pool = sqlx09::PgPool::connect(url).await.unwrap();
            let worker = graphile_worker::WorkerOptions::default()
                .schema("graphile_worker")
                .define_job::<GraphileJob>()
                .pg_pool(pool.clone())
                .listen_os_shutdown_signals(false)
                // Its batch-fetching mode: without it, each poll (1 s) or NOTIFY fetches one job
                // per slot, so a stored backlog drains at about `concurrency` jobs a second.
                .local_queue(graphile_worker::LocalQueueConfig::default())
                .init()
                .await
                .unwrap();
            let utils = worker.create_utils();
            let task = tokio::spawn(async move {
                let _ = worker.run().await;
            });
            Running::Graphile {
                pool,
                worker: task,
                utils,
            }
        }
    }
}

impl Running {
    /// Enqueues one job now (the trickle); `t` is stamped just before the insert.
    async fn enqueue_one(&self, job: &Job, signer: &TestSigner, write: bool) {
        match self {
            Running::Inbox { intake, .. } => {
                // Signed first (about a millisecond), then stamped just before it is stored.
                let body = inbox_body(job);
                let signature = signer.sign(body.as_bytes(), Digest::Sha256).unwrap();
                recorder().stamp(job.obj);
                let _ = intake
                    .receive_signed(Bytes::from(body), &signature)
                    .await
                    .unwrap();
            }
            Running::Awa { pool, .. } => {
                let args = BenchJob::from(job);
                recorder().stamp(job.obj);
                awa::insert(pool, &args).await.unwrap();
            }
            Running::Graphile { utils, .. } => {
                let payload = GraphileJob {
                    obj: job.obj,
                    seq: job.seq,
                    t: 0,
                    write,
                };
                recorder().stamp(job.obj);
                utils.add_job(payload, graphile_spec(job)).await.unwrap();
            }
        }
    }

    async fn stop(mut self) {
        match &mut self {
            Running::Inbox {
                inbox,
                worker,
                stop,
                ..
            } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                let _ = tokio::time::timeout(Duration::from_secs(30), worker).await;
                inbox.close().await;
            }
            Running::Awa { pool, client } => {
                client.shutdown(Duration::from_secs(10)).await;
                pool.close().await;
            }
            Running::Graphile { pool, worker, .. } => {
                worker.abort();
                let _ = worker.await;
                pool.close().await;
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
struct DrainFigures {
    rate: f64,
    violations: usize,
}

async fn drain(
    q: Queue,
    handler: Handler,
    jobs: &[Job],
    signed: &[(Bytes, String)],
) -> DrainFigures {
    let base = postgres_base();
    let url = postgres_database(&base).await;
    setup(q, &url).await;
    enqueue_backlog(q, &url, jobs, signed, handler != Handler::Noop).await;
    let rec = Recorder::new(jobs.len());
    set_recorder(&rec);
    let started = Instant::now();
    let running = start(q, &url, handler).await;
    let finished = rec.wait(Duration::from_secs(120)).await;
    let elapsed = rec
        .last_done
        .lock()
        .unwrap()
        .map_or_else(|| started.elapsed(), |t| t - started);
    running.stop().await;
    let done = rec.done.load(Ordering::SeqCst);
    if !finished {
        eprintln!("  {} did not finish: {done} of {}", q.name(), jobs.len());
    }
    drop_postgres_database(&base, &url).await;
    DrainFigures {
        rate: done as f64 / elapsed.as_secs_f64(),
        violations: rec.violations.load(Ordering::Relaxed),
    }
}

/// Pickup latency: jobs enqueued one by one at about `rate` a second while the workers run idle;
/// stored (just before the insert) to handler start, in ms, sorted.
async fn pickup(q: Queue, count: usize, rate: f64) -> Vec<f64> {
    let base = postgres_base();
    let url = postgres_database(&base).await;
    setup(q, &url).await;
    let rec = Recorder::new(count);
    set_recorder(&rec);
    let running = start(q, &url, Handler::Noop).await;
    // Let the workers settle (listen, first polls).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signer = TestSigner::from_pem(PRIVATE_KEY).unwrap();
    let jobs = jobs_for(count, 1, 0);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    for job in &jobs {
        tick.tick().await;
        running.enqueue_one(job, &signer, false).await;
    }
    rec.wait(Duration::from_secs(60)).await;
    running.stop().await;
    drop_postgres_database(&base, &url).await;
    let mut p = rec.pickups.lock().unwrap().clone();
    p.sort_unstable_by(f64::total_cmp);
    p
}

async fn processing_part(rounds: usize) {
    let n: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let layouts = [1usize, 10];
    eprintln!("processing: signing 2 x {n} inbox deliveries...");
    let mut prepared = Vec::new();
    for &per in &layouts {
        let jobs = jobs_for(n, per, 0);
        let signed = sign_all(jobs.iter().map(inbox_body).collect()).await;
        prepared.push((per, Arc::new(jobs), Arc::new(signed)));
    }
    let queues = [Queue::Inbox, Queue::Awa, Queue::Graphile];
    let handlers = [Handler::Noop, Handler::WriteRow, Handler::WriteRowApart];
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let wanted = |q: Queue| only.is_empty() || only.split(',').any(|w| q.name().starts_with(w));
    let handler_only = std::env::var("BENCH_HANDLER").unwrap_or_default();
    let handler_wanted = |h: Handler| match handler_only.as_str() {
        "noop" => h == Handler::Noop,
        "row" => h == Handler::WriteRow,
        "apart" => h == Handler::WriteRowApart,
        _ => true,
    };
    // results[layout][handler][queue][round]
    let mut results = vec![vec![vec![Vec::<DrainFigures>::new(); queues.len()]; handlers.len()]; 2];
    let mut pickups: Vec<Vec<Vec<f64>>> = vec![Vec::new(); queues.len()];
    for round in 0..rounds {
        for (li, (per, jobs, signed)) in prepared.iter().enumerate() {
            for (hi, &handler) in handlers.iter().enumerate() {
                if !handler_wanted(handler) {
                    continue;
                }
                for (qi, &q) in queues.iter().enumerate() {
                    // The others' `WriteRow` is already apart.
                    if !wanted(q) || (handler == Handler::WriteRowApart && q != Queue::Inbox) {
                        continue;
                    }
                    // Retried (up to twice) when it fails, e.g. when the PostgreSQL server is
                    // restarted by someone else mid-run; a scenario's figures are from one run.
                    let mut attempt = 0;
                    let f = loop {
                        let run = std::panic::AssertUnwindSafe(drain(q, handler, jobs, signed))
                            .catch_unwind();
                        match run.await {
                            Ok(f) => break f,
                            Err(e) if attempt < 2 => {
                                attempt += 1;
                                eprintln!("  {} failed ({e:?}); again in 5 s", q.name());
                                tokio::time::sleep(Duration::from_secs(5)).await;
                            }
                            Err(e) => panic!("{} failed three times: {e:?}", q.name()),
                        }
                    };
                    eprintln!(
                        "  round {} {per}/object {handler:?} {:<24} {:>8.0} jobs/s, {} order violations",
                        round + 1,
                        q.name(),
                        f.rate,
                        f.violations
                    );
                    results[li][hi][qi].push(f);
                }
            }
        }
        for (qi, &q) in queues.iter().enumerate() {
            if !wanted(q) {
                continue;
            }
            let mut attempt = 0;
            let p = loop {
                match std::panic::AssertUnwindSafe(pickup(q, 300, 100.0))
                    .catch_unwind()
                    .await
                {
                    Ok(p) => break p,
                    Err(e) if attempt < 2 => {
                        attempt += 1;
                        eprintln!("  pickup {} failed ({e:?}); again in 5 s", q.name());
                        tokio::time::sleep(Duration::from_secs(5)).await;
                    }
                    Err(e) => panic!("pickup {} failed three times: {e:?}", q.name()),
                }
            };
            eprintln!(
                "  round {} pickup {:<24} p50 {:.2} ms p99 {:.2} ms ({} jobs)",
                round + 1,
                q.name(),
                quantile(&p, 0.5),
                quantile(&p, 0.99),
                p.len()
            );
            pickups[qi].push(p);
        }
    }

    println!();
    println!(
        "PROCESSING on PostgreSQL: drain {n} stored jobs, each library's default worker \
         settings (graphile_worker with its LocalQueue), {rounds} rounds alternating; medians \
         of the rounds"
    );
    println!(
        "| jobs per object | handler | queue | jobs/s | vs inbox | order violations (max of rounds) |"
    );
    println!("|---:|---|---|---:|---:|---:|");
    for (li, &per) in layouts.iter().enumerate() {
        for (hi, &handler) in handlers.iter().enumerate() {
            let inbox_rate = median(results[li][hi][0].iter().map(|f| f.rate).collect());
            for (qi, &q) in queues.iter().enumerate() {
                let runs = &results[li][hi][qi];
                if runs.is_empty() {
                    continue;
                }
                let rate = median(runs.iter().map(|f| f.rate).collect());
                println!(
                    "| {per} | {} | {} | {rate:.0} | {:.2} | {} |",
                    match handler {
                        Handler::Noop => "no-op",
                        Handler::WriteRow => "writes one row",
                        Handler::WriteRowApart => "writes one row, apart (autocommit)",
                    },
                    q.name(),
                    rate / inbox_rate,
                    runs.iter().map(|f| f.violations).max().unwrap_or(0)
                );
            }
        }
    }
    println!();
    println!(
        "PICKUP LATENCY on PostgreSQL: 300 jobs enqueued one at a time at 100/s into idle \
         workers; stored (just before the insert) to handler start"
    );
    println!("| queue | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|");
    for (qi, &q) in queues.iter().enumerate() {
        if pickups[qi].is_empty() {
            continue;
        }
        let mut all: Vec<f64> = pickups[qi].iter().flatten().copied().collect();
        all.sort_unstable_by(f64::total_cmp);
        println!(
            "| {} | {:.2} | {:.2} | {:.2} |",
            q.name(),
            quantile(&all, 0.5),
            quantile(&all, 0.99),
            all.last().copied().unwrap_or(f64::NAN)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Part 3: where processing's time goes (statements per job, as sqlx logs them).

/// Every statement sqlx runs, as its `sqlx::query` events report it: count and client-side
/// time (sent to result read, so round trip included), by statement text.
#[derive(Default)]
struct StatementLog {
    by_statement: Mutex<HashMap<String, (u64, f64)>>,
}

static STATEMENTS: std::sync::OnceLock<Arc<StatementLog>> = std::sync::OnceLock::new();

struct StatementLayer(Arc<StatementLog>);

#[derive(Default)]
struct StatementVisitor {
    summary: String,
    statement: String,
    elapsed: f64,
}

impl tracing::field::Visit for StatementVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.statement = value.to_owned(),
            _ => {}
        }
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed = value;
        }
    }
    fn record_debug(&mut self, _field: &tracing::field::Field, _value: &dyn std::fmt::Debug) {}
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StatementLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut v = StatementVisitor::default();
        event.record(&mut v);
        let text = if v.statement.trim().is_empty() {
            v.summary
        } else {
            v.statement
        };
        let mut key: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if key.len() > 110 {
            let mut end = 110;
            while !key.is_char_boundary(end) {
                end -= 1;
            }
            key.truncate(end);
            key.push('…');
        }
        let mut map = self.0.by_statement.lock().unwrap();
        let entry = map.entry(key).or_default();
        entry.0 += 1;
        entry.1 += v.elapsed;
    }
}

fn install_statement_log() -> Arc<StatementLog> {
    use tracing_subscriber::layer::SubscriberExt;
    let log = Arc::new(StatementLog::default());
    let subscriber = tracing_subscriber::registry()
        .with(StatementLayer(Arc::clone(&log)))
        .with(
            tracing_subscriber::filter::Targets::new()
                .with_target("sqlx::query", tracing::Level::TRACE),
        );
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let _ = STATEMENTS.set(Arc::clone(&log));
    log
}

async fn profile_part() {
    let n: usize = std::env::var("BENCH_PROFILE_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let log = install_statement_log();
    for per in [1usize, 10] {
        let jobs = jobs_for(n, per, 0);
        let signed = sign_all(jobs.iter().map(inbox_body).collect()).await;
        for q in [Queue::Inbox, Queue::Awa] {
            for handler in [Handler::Noop, Handler::WriteRow] {
                let base = postgres_base();
                let url = postgres_database(&base).await;
                setup(q, &url).await;
                enqueue_backlog(q, &url, &jobs, &signed, handler == Handler::WriteRow).await;
                log.by_statement.lock().unwrap().clear();
                let rec = Recorder::new(jobs.len());
                set_recorder(&rec);
                let server_before = postgres_cpu();
                let cpu_before = self_cpu();
                let started = Instant::now();
                let running = start(q, &url, handler).await;
                rec.wait(Duration::from_secs(120)).await;
                let elapsed = rec
                    .last_done
                    .lock()
                    .unwrap()
                    .map_or_else(|| started.elapsed(), |t| t - started);
                let cpu = self_cpu().saturating_sub(cpu_before).as_secs_f64() * 1e6 / n as f64;
                let server = postgres_cpu_since(&server_before).as_secs_f64() * 1e6 / n as f64;
                let mut rows: Vec<(String, u64, f64)> = log
                    .by_statement
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|(k, (c, t))| (k.clone(), *c, *t))
                    .collect();
                running.stop().await;
                drop_postgres_database(&base, &url).await;
                rows.sort_by(|a, b| b.2.total_cmp(&a.2));
                let total_count: u64 = rows.iter().map(|r| r.1).sum();
                let total_time: f64 = rows.iter().map(|r| r.2).sum();
                println!();
                println!(
                    "PROFILE {} {per}/object {handler:?}: {n} jobs in {:.2} s ({:.0}/s); {:.1} \
                     statements per job, {:.3} ms of statement time per job (client side, summed \
                     over connections); process CPU {cpu:.0} µs/job, PostgreSQL server CPU \
                     {server:.0} µs/job",
                    q.name(),
                    elapsed.as_secs_f64(),
                    n as f64 / elapsed.as_secs_f64(),
                    total_count as f64 / n as f64,
                    total_time * 1000.0 / n as f64
                );
                println!("| per job | ms per job | share | statement |");
                println!("|---:|---:|---:|---|");
                for (k, c, t) in rows.iter().take(14) {
                    println!(
                        "| {:.2} | {:.3} | {:.0}% | `{}` |",
                        *c as f64 / n as f64,
                        t * 1000.0 / n as f64,
                        100.0 * t / total_time,
                        k.replace('|', "\\|")
                    );
                }
            }
        }
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_default();
    format!("{cores} cores, {cpu}; {mem}")
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "all".to_owned());
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3).max(1);
    println!("machine: {}", machine());
    if what == "intake" || what == "all" {
        intake_part(rounds).await;
    }
    if what == "processing" || what == "all" {
        processing_part(rounds).await;
    }
    if what == "profile" {
        profile_part().await;
    }
}
