//! Signed deliveries: triggering events, per-object ordering, retries with backoff, the log.
//!
//! Bounds (see [`Limits`](crate::Limits)): events waiting per object and in all, deliveries
//! waiting per webhook (a place is taken for each subscribed webhook when an event is accepted and
//! given back when that webhook's delivery ends), and outbound requests in progress at once (a
//! semaphore every attempt waits on; connections are not kept for reuse, so that bound is also
//! the bound on outbound sockets).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chip_gate_api::types::EventName;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use uuid::Uuid;

use crate::faults::{DeliveryFaultState, DeliveryFaults};
use crate::keys::SigningKey;
use crate::{DeliveryConfig, Limits, MockError, Shared, events, lock};

/// The delivery log keeps the most recent this many attempts by default (each holds its body);
/// see [`Limits::delivery_log`](crate::Limits::delivery_log).
pub const LOG_CAP: usize = 10_000;

/// One attempt to deliver one event to one webhook, as recorded in the delivery log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// The webhook the delivery was for.
    pub webhook_id: Uuid,
    /// The URL the delivery was POSTed to.
    pub callback: String,
    /// The event delivered.
    pub event: EventName,
    /// The `id` of the delivered object.
    pub object_id: Uuid,
    /// 1 for the first attempt, 2 for the first retry, and so on.
    pub attempt: u32,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why there was no answer (connection refused, timeout, ...), when there was none.
    pub error: Option<String>,
    /// Whether the receiver acknowledged the delivery (any 2xx).
    pub accepted: bool,
    /// Whether this was the last attempt for this delivery: it was accepted, the attempts ran
    /// out, or the webhook was deleted.
    pub last_attempt: bool,
    /// When the attempt started, in Unix milliseconds.
    pub started_at_ms: u64,
    /// When the attempt finished, in Unix milliseconds.
    pub finished_at_ms: u64,
    /// The `X-Signature` header sent.
    pub signature: String,
    /// The exact body sent (UTF-8 JSON).
    pub body: String,
}

/// What [`MockServer::trigger`](crate::MockServer::trigger) did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerReport {
    /// The event fired.
    pub event: EventName,
    /// The `id` of the object delivered.
    pub object_id: Uuid,
    /// The delivered body, parsed (the object plus `event_type`).
    pub object: serde_json::Value,
    /// One entry per subscribed webhook, in creation order. Empty when no webhook listens.
    pub deliveries: Vec<TriggerDelivery>,
}

/// The first attempt of one delivery started by a trigger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerDelivery {
    /// The subscribed webhook.
    pub webhook_id: Uuid,
    /// Its callback URL.
    pub callback: String,
    /// True when an earlier event for the same object was still being delivered, so this one
    /// waits behind it (deliveries are in order per object), or when a reorder fault
    /// ([`DeliveryFaults`]) holds it back; `status`, `error` and `accepted` then say nothing yet:
    /// watch the delivery log.
    pub queued: bool,
    /// The receiver's status on the first attempt, when it answered.
    pub status: Option<u16>,
    /// Why the first attempt got no answer, when it got none.
    pub error: Option<String>,
    /// Whether the first attempt was acknowledged (2xx). If not, retries continue in the
    /// background.
    pub accepted: bool,
}

struct FirstAttempt {
    status: Option<u16>,
    error: Option<String>,
    accepted: bool,
}

struct Target {
    webhook_id: Uuid,
    callback: String,
    key: SigningKey,
    first: Option<oneshot::Sender<FirstAttempt>>,
    /// The webhook's place taken for this delivery (see [`PerWebhook`]); given back when the
    /// delivery ends, however it ends. `None` until the job is accepted.
    slot: Option<Slot>,
}

/// Deliveries waiting, in progress or between retries, per webhook
/// ([`Limits::max_pending_per_webhook`]).
#[derive(Default)]
struct PerWebhook(std::sync::Mutex<HashMap<Uuid, usize>>);

impl PerWebhook {
    /// Takes one place for each target's webhook, or none at all (and says which webhook is full)
    /// when one of them already has `max`.
    fn reserve(self: &Arc<Self>, targets: &mut [Target], max: usize) -> Result<(), MockError> {
        let mut counts = lock(&self.0);
        if let Some(full) = targets
            .iter()
            .find(|t| counts.get(&t.webhook_id).is_some_and(|n| *n >= max))
        {
            return Err(MockError::Busy(format!(
                "webhook {} already has {max} deliveries waiting or being delivered",
                full.webhook_id
            )));
        }
        for target in targets {
            *counts.entry(target.webhook_id).or_insert(0) += 1;
            target.slot = Some(Slot {
                counts: Arc::clone(self),
                webhook_id: target.webhook_id,
            });
        }
        Ok(())
    }
}

/// One webhook's place for one delivery; dropping it gives the place back.
struct Slot {
    counts: Arc<PerWebhook>,
    webhook_id: Uuid,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts.0);
        if let Some(n) = counts.get_mut(&self.webhook_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.webhook_id);
            }
        }
    }
}

struct Job {
    event: EventName,
    object_id: Uuid,
    body: Bytes,
    targets: Vec<Target>,
}

struct Queue {
    tx: mpsc::UnboundedSender<Job>,
    pending: usize,
}

/// The delivery side of a mock.
pub(crate) struct Engine {
    /// Built on first use: building a TLS-capable client costs more than the rest of startup.
    http: std::sync::OnceLock<Result<reqwest::Client, String>>,
    config: DeliveryConfig,
    limits: Limits,
    log: std::sync::Mutex<std::collections::VecDeque<DeliveryRecord>>,
    version: watch::Sender<u64>,
    pending_jobs: AtomicUsize,
    queues: std::sync::Mutex<HashMap<Uuid, Queue>>,
    shutdown: watch::Receiver<bool>,
    faults: std::sync::Mutex<DeliveryFaultState>,
    /// The last `updated_on` given to each object recently, so that an object's states move
    /// forward even when several are triggered within one second.
    clock: std::sync::Mutex<HashMap<Uuid, i64>>,
    /// Deliveries waiting or in progress per webhook.
    per_webhook: Arc<PerWebhook>,
    /// One permit per outbound request in progress ([`Limits::max_outbound_requests`]).
    outbound: Semaphore,
}

/// Past this many remembered objects, those whose last `updated_on` is already in the past are
/// forgotten (they no longer change the next value).
const CLOCK_PRUNE_AT: usize = 10_000;

impl Engine {
    pub(crate) fn new(
        config: DeliveryConfig,
        limits: Limits,
        faults: DeliveryFaults,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, MockError> {
        Ok(Self {
            http: std::sync::OnceLock::new(),
            config,
            log: std::sync::Mutex::new(std::collections::VecDeque::new()),
            version: watch::Sender::new(0),
            pending_jobs: AtomicUsize::new(0),
            queues: std::sync::Mutex::new(HashMap::new()),
            shutdown,
            faults: std::sync::Mutex::new(DeliveryFaultState::new(faults)),
            clock: std::sync::Mutex::new(HashMap::new()),
            per_webhook: Arc::default(),
            outbound: Semaphore::new(
                limits
                    .max_outbound_requests
                    .clamp(1, Semaphore::MAX_PERMITS),
            ),
            limits,
        })
    }

    pub(crate) fn delivery_faults(&self) -> DeliveryFaults {
        lock(&self.faults).faults()
    }

    pub(crate) fn set_delivery_faults(&self, faults: DeliveryFaults) {
        *lock(&self.faults) = DeliveryFaultState::new(faults);
    }

    /// The `updated_on` of the object's next state: now, or one second past its previous state
    /// when that is not already in the past.
    fn next_updated_on(&self, object_id: Uuid, now: i64) -> i64 {
        let mut clock = lock(&self.clock);
        if clock.len() >= CLOCK_PRUNE_AT {
            clock.retain(|_, last| *last >= now);
        }
        let next = match clock.get(&object_id) {
            Some(last) if *last >= now => last.saturating_add(1),
            _ => now,
        };
        clock.insert(object_id, next);
        next
    }

    fn http(&self) -> Result<&reqwest::Client, MockError> {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .timeout(self.config.request_timeout)
                    // A connection per attempt, closed once its answer is read: idle connections
                    // kept for reuse (one or more per callback host) would hold sockets beyond
                    // `max_outbound_requests`.
                    .pool_max_idle_per_host(0)
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .user_agent(concat!("chip-gate-mock/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| MockError::Http(e.clone()))
    }

    pub(crate) fn records(&self) -> Vec<DeliveryRecord> {
        lock(&self.log).iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        lock(&self.log).clear();
        self.bump();
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending_jobs.load(Ordering::SeqCst)
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    fn push(&self, record: DeliveryRecord) {
        {
            let mut log = lock(&self.log);
            while log.len() >= self.limits.delivery_log {
                log.pop_front();
            }
            log.push_back(record);
        }
        self.bump();
    }

    fn backoff(&self, failed_attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(failed_attempt.saturating_sub(1));
        self.config
            .backoff_base
            .checked_mul(factor)
            .unwrap_or(self.config.backoff_cap)
            .min(self.config.backoff_cap)
    }
}

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Fires `event` for the object `object_id` (a new id when `None`).
pub(crate) async fn trigger(
    shared: &Arc<Shared>,
    event: EventName,
    object_id: Option<Uuid>,
) -> Result<TriggerReport, MockError> {
    let object_id = object_id.unwrap_or_else(Uuid::new_v4);
    let updated_on = shared.engine.next_updated_on(object_id, unix_now());
    let object = events::build_object(&event, object_id, updated_on);
    let body =
        Bytes::from(serde_json::to_vec(&object).map_err(|e| MockError::Http(e.to_string()))?);

    let subscribed: Vec<(Uuid, String, SigningKey)> = {
        let store = crate::read(&shared.store);
        store
            .iter()
            .filter(|w| w.receives(&event))
            .map(|w| (w.id, w.callback.clone(), w.key.clone()))
            .collect()
    };
    let mut report = TriggerReport {
        event: event.clone(),
        object_id,
        object: serde_json::Value::Object(object),
        deliveries: Vec::new(),
    };
    if subscribed.is_empty() {
        return Ok(report);
    }

    let mut targets = Vec::with_capacity(subscribed.len());
    let mut waits = Vec::with_capacity(subscribed.len());
    for (webhook_id, callback, key) in subscribed {
        let (tx, rx) = oneshot::channel();
        waits.push((webhook_id, callback.clone(), rx));
        targets.push(Target {
            webhook_id,
            callback,
            key,
            first: Some(tx),
            slot: None,
        });
    }
    let job = Job {
        event,
        object_id,
        body,
        targets,
    };
    let held = lock(&shared.engine.faults).hold_back();
    let queued = match held {
        Some(hold) => {
            hold_back(shared, job, hold)?;
            true
        }
        None => enqueue(shared, job)?,
    };
    for (webhook_id, callback, rx) in waits {
        let entry = if queued {
            TriggerDelivery {
                webhook_id,
                callback,
                queued: true,
                status: None,
                error: None,
                accepted: false,
            }
        } else {
            match rx.await {
                Ok(first) => TriggerDelivery {
                    webhook_id,
                    callback,
                    queued: false,
                    status: first.status,
                    error: first.error,
                    accepted: first.accepted,
                },
                Err(_) => TriggerDelivery {
                    webhook_id,
                    callback,
                    queued: false,
                    status: None,
                    error: Some("the mock shut down before the first attempt".into()),
                    accepted: false,
                },
            }
        };
        report.deliveries.push(entry);
    }
    Ok(report)
}

/// Queues a job behind the object's earlier jobs. Returns whether it had to wait, or
/// [`MockError::Busy`] when the whole engine, the object's queue or a subscribed webhook's queue
/// is full.
fn enqueue(shared: &Arc<Shared>, mut job: Job) -> Result<bool, MockError> {
    let engine = &shared.engine;
    let object_id = job.object_id;
    let mut queues = lock(&engine.queues);
    let max_total = engine.limits.max_pending_deliveries;
    if engine.pending_jobs.load(Ordering::SeqCst) >= max_total {
        return Err(all_busy(max_total));
    }
    let max_object = engine.limits.max_queued_per_object;
    if queues
        .get(&object_id)
        .is_some_and(|queue| queue.pending >= max_object)
    {
        return Err(MockError::Busy(format!(
            "{max_object} events for object {object_id} are already waiting or being delivered"
        )));
    }
    engine
        .per_webhook
        .reserve(&mut job.targets, engine.limits.max_pending_per_webhook)?;
    engine.pending_jobs.fetch_add(1, Ordering::SeqCst);
    if let Some(queue) = queues.get_mut(&object_id) {
        queue.pending += 1;
        if queue.tx.send(job).is_err() {
            queue.pending -= 1;
            engine.pending_jobs.fetch_sub(1, Ordering::SeqCst);
            return Err(MockError::ShutDown);
        }
        engine.bump();
        return Ok(true);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    if tx.send(job).is_err() {
        engine.pending_jobs.fetch_sub(1, Ordering::SeqCst);
        return Err(MockError::ShutDown);
    }
    queues.insert(object_id, Queue { tx, pending: 1 });
    drop(queues);
    engine.bump();
    tokio::spawn(worker(shared.clone(), object_id, rx));
    Ok(false)
}

/// The refusal when `max_total` events are already waiting or being delivered.
fn all_busy(max_total: usize) -> MockError {
    MockError::Busy(format!(
        "{max_total} events are already waiting or being delivered"
    ))
}

/// Delivers `job` after `hold`, outside its object's queue (a reorder fault): the object's later
/// events may go first.
fn hold_back(shared: &Arc<Shared>, mut job: Job, hold: Duration) -> Result<(), MockError> {
    let engine = &shared.engine;
    let max_total = engine.limits.max_pending_deliveries;
    if engine.pending_jobs.fetch_add(1, Ordering::SeqCst) >= max_total {
        engine.pending_jobs.fetch_sub(1, Ordering::SeqCst);
        return Err(all_busy(max_total));
    }
    if let Err(full) = engine
        .per_webhook
        .reserve(&mut job.targets, engine.limits.max_pending_per_webhook)
    {
        engine.pending_jobs.fetch_sub(1, Ordering::SeqCst);
        return Err(full);
    }
    engine.bump();
    tracing::debug!(object = %job.object_id, event = %job.event, ?hold, "event held back (injected reordering)");
    let shared = shared.clone();
    tokio::spawn(async move {
        let mut shutdown = shared.engine.shutdown.clone();
        let waited = tokio::select! {
            () = tokio::time::sleep(hold) => true,
            _ = shutdown.changed() => false,
        };
        if waited {
            run_job(&shared, job).await;
        }
        shared.engine.pending_jobs.fetch_sub(1, Ordering::SeqCst);
        shared.engine.bump();
    });
    Ok(())
}

async fn worker(shared: Arc<Shared>, object_id: Uuid, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = rx.recv().await {
        run_job(&shared, job).await;
        let engine = &shared.engine;
        let done = {
            let mut queues = lock(&engine.queues);
            let done = match queues.get_mut(&object_id) {
                Some(queue) => {
                    queue.pending = queue.pending.saturating_sub(1);
                    queue.pending == 0
                }
                None => true,
            };
            if done {
                queues.remove(&object_id);
            }
            done
        };
        engine.pending_jobs.fetch_sub(1, Ordering::SeqCst);
        engine.bump();
        if done {
            break;
        }
    }
}

async fn run_job(shared: &Arc<Shared>, job: Job) {
    let Job {
        event,
        object_id,
        body,
        targets,
    } = job;
    let sends = targets
        .into_iter()
        .map(|target| deliver(shared, &event, object_id, &body, target));
    futures::future::join_all(sends).await;
}

async fn deliver(
    shared: &Arc<Shared>,
    event: &EventName,
    object_id: Uuid,
    body: &Bytes,
    mut target: Target,
) {
    let engine = &shared.engine;
    let record = |attempt: u32,
                  started: SystemTime,
                  status: Option<u16>,
                  error: Option<String>,
                  accepted: bool,
                  last_attempt: bool,
                  signature: &str| DeliveryRecord {
        webhook_id: target.webhook_id,
        callback: target.callback.clone(),
        event: event.clone(),
        object_id,
        attempt,
        status,
        error,
        accepted,
        last_attempt,
        started_at_ms: unix_ms(started),
        finished_at_ms: unix_ms(SystemTime::now()),
        signature: signature.to_owned(),
        body: String::from_utf8_lossy(body).into_owned(),
    };

    let max = engine.config.max_attempts.max(1);
    let mut shutdown = engine.shutdown.clone();
    // Signed once, when the first attempt has its outbound slot: a delivery that is still waiting
    // holds no signature and costs no signing time.
    let mut prepared: Option<(String, reqwest::Client)> = None;
    for attempt in 1..=max {
        if *shutdown.borrow() {
            return;
        }
        if attempt > 1 && crate::read(&shared.store).get(&target.webhook_id).is_none() {
            // The webhook was deleted while we were retrying: stop, like CHIP.
            tracing::debug!(webhook = %target.webhook_id, "webhook deleted; retries stop");
            break;
        }
        // Wait for an outbound slot (`Limits::max_outbound_requests`, first come first served);
        // it is held until the answer has been read, and the wait is not part of the attempt's
        // timeout.
        let permit = tokio::select! {
            permit = engine.outbound.acquire() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed; stop rather than send without a slot.
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        if prepared.is_none() {
            let ready = target
                .key
                .sign_base64(body)
                .and_then(|sig| engine.http().map(|http| (sig, http.clone())));
            match ready {
                Ok(ready) => prepared = Some(ready),
                Err(e) => {
                    engine.push(record(
                        attempt,
                        SystemTime::now(),
                        None,
                        Some(e.to_string()),
                        false,
                        true,
                        "",
                    ));
                    if let Some(tx) = target.first.take() {
                        let _ = tx.send(FirstAttempt {
                            status: None,
                            error: Some(e.to_string()),
                            accepted: false,
                        });
                    }
                    return;
                }
            }
        }
        let Some((signature, http)) = &prepared else {
            return;
        };
        let started = SystemTime::now();
        let result = http
            .post(&target.callback)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("X-Signature", signature.as_str())
            .body(body.clone())
            .send()
            .await;
        let (status, error) = match result {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                // Read a little of the answer, never more than the limit: a receiver cannot make
                // the mock hold its body (or its connection) for long.
                let mut read = 0usize;
                while read < engine.limits.callback_read_bytes {
                    match resp.chunk().await {
                        Ok(Some(chunk)) => read = read.saturating_add(chunk.len()),
                        Ok(None) | Err(_) => break,
                    }
                }
                drop(resp);
                (Some(status), None)
            }
            Err(e) => (None, Some(describe(&e))),
        };
        // The answer is read and the connection let go: the next delivery may go.
        drop(permit);
        let acknowledged = status.is_some_and(|s| (200..300).contains(&s));
        // A duplicate fault: the receiver's 2xx is treated as lost, so the delivery is made again.
        let lost = acknowledged && attempt < max && lock(&engine.faults).lose_ack();
        let accepted = acknowledged && !lost;
        let error = if lost {
            Some(
                "acknowledgement treated as lost (injected duplicate); delivering again".to_owned(),
            )
        } else {
            error
        };
        let last = accepted || attempt == max;
        tracing::info!(
            webhook = %target.webhook_id,
            event = %event,
            object = %object_id,
            attempt,
            status = ?status,
            error = ?error,
            "delivery attempt"
        );
        engine.push(record(
            attempt,
            started,
            status,
            error.clone(),
            accepted,
            last,
            signature,
        ));
        if let Some(tx) = target.first.take() {
            let _ = tx.send(FirstAttempt {
                status,
                error,
                accepted,
            });
        }
        if last {
            return;
        }
        let gap = engine.backoff(attempt);
        tokio::select! {
            () = tokio::time::sleep(gap) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// A short description of a failed request: the error and its causes.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut out = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
