//! Intake: verify, parse, store in one transaction, and only then acknowledge.

use std::sync::Arc;
use std::time::Duration;

use aws_lc_rs::digest;
use bytes::Bytes;
use chip_gate::verify::SIGNATURE_HEADER;
use chip_gate::{Delivery, DeliveryObject, ObjectKind, Verifier, VerifyError};
use http::{HeaderMap, StatusCode};
use sqlx::Row;
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;

use crate::error::{InboxError, IntakeError};
use crate::store::{Backend, DUPLICATES, Dialect, Inbox, RECEIVED, now_ms};

/// The largest batch [`IntakeOptions::max_batch`] allows: 11 parameters a delivery stay within
/// SQLite's limit of 32,766 a statement.
const MAX_BATCH: usize = 2_000;

/// Settings for [`Intake`].
#[derive(Clone, Debug)]
pub struct IntakeOptions {
    max_batch: usize,
    writers: Option<usize>,
    queue: usize,
    max_age: Option<Duration>,
}

impl Default for IntakeOptions {
    fn default() -> Self {
        Self {
            max_batch: 256,
            writers: None,
            queue: 4096,
            max_age: None,
        }
    }
}

impl IntakeOptions {
    /// The most deliveries committed together (group commit; default 256, at most 2,000).
    /// Deliveries that arrive while a commit is under way wait for the next one, which takes all
    /// of them at once; a lone delivery is committed at once, never held back to fill a batch. `1`
    /// commits each delivery in its own transaction. (The cap keeps a SQLite batch's insert
    /// within SQLite's 32,766 parameters per statement.)
    #[must_use]
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.clamp(1, MAX_BATCH);
        self
    }

    /// How many transactions may be writing at once (default 1: one commit at a time takes
    /// everything that arrived meanwhile, the largest batches and the fewest flushes; SQLite has
    /// one writer anyway). On PostgreSQL more writers overlap their flushes, which can help on
    /// fast disks; each instance of your app has its own writers.
    #[must_use]
    pub fn writers(mut self, n: usize) -> Self {
        self.writers = Some(n.max(1));
        self
    }

    /// The oldest state a delivery may carry and still be handed over (default `None`: no limit
    /// but the [retention horizon](Inbox::retention_horizon)). A delivery whose `updated_on` is
    /// more than `max_age` before its arrival is stored, answered `200`, recorded as stale and
    /// [expired](crate::Counts::expired), and never handed over on its own (an operator's
    /// [`Inbox::replay`] hands it over).
    ///
    /// Set it (7 days, say: CHIP retries for 36 hours) when the inbox cannot remember everything
    /// handled before it: a new inbox on an account with a history (deliveries handled by a
    /// previous receiver), or a database restored or reset. There, a captured delivery older than
    /// the inbox itself would otherwise be new to it, and handed over.
    #[must_use]
    pub fn max_age(mut self, max_age: Option<Duration>) -> Self {
        self.max_age = max_age;
        self
    }

    /// How many verified deliveries may wait for a commit before new ones wait to be queued
    /// (default 4,096).
    #[must_use]
    pub fn queue(mut self, n: usize) -> Self {
        self.queue = n.max(1);
        self
    }
}

/// What [`Intake::receive`] did with a delivery. Answer CHIP with [`status`](Self::status)
/// (`200 OK`): the delivery is committed to the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The stored delivery's id (for a duplicate, the id of the delivery it repeats; `None` only
    /// in the rare case that the original was removed by retention during this very call).
    pub id: Option<i64>,
    /// The key it was deduplicated on.
    pub dedup_key: String,
    /// Whether the same delivery had been stored before (recorded as a duplicate, not stored again).
    pub duplicate: bool,
}

impl Receipt {
    /// The HTTP status to answer with: `200 OK` (CHIP takes any 2xx as delivered).
    pub fn status(&self) -> StatusCode {
        StatusCode::OK
    }

    /// A short text to answer with: `stored` or `duplicate`.
    pub fn public_text(&self) -> &'static str {
        if self.duplicate {
            "duplicate"
        } else {
            "stored"
        }
    }
}

/// The columns of one delivery to store.
#[derive(Debug)]
pub(crate) struct NewRecord {
    pub(crate) dedup_key: String,
    pub(crate) lane: String,
    pub(crate) event: String,
    pub(crate) object_kind: &'static str,
    pub(crate) object_id: Option<String>,
    pub(crate) updated_on: Option<i64>,
    pub(crate) signature: String,
    pub(crate) body: Bytes,
    pub(crate) typing_problem: Option<String>,
}

impl NewRecord {
    /// The record for a delivery whose signature verified.
    ///
    /// The text columns are made storable as text on both databases (PostgreSQL's `text` cannot
    /// hold NUL): the key and the lane escape their parts (injective), the event, object id and
    /// typing problem show a NUL as U+FFFD. The body is kept exact either way.
    pub(crate) fn new(delivery: &Delivery, signature: String) -> Self {
        let dedup_key = dedup_key(delivery);
        let object_kind = kind_name(delivery.kind());
        let object_id = delivery.object().id();
        let lane = match object_id {
            Some(id) => {
                let mut lane = String::new();
                push_key_part(&mut lane, &identity_kind(delivery));
                lane.push(':');
                push_key_part(&mut lane, id);
                lane
            }
            None => format!("delivery:{dedup_key}"),
        };
        Self {
            lane,
            event: storable_text(delivery.event().as_str()),
            object_kind,
            object_id: object_id.map(storable_text),
            updated_on: delivery.object().updated_on(),
            signature,
            body: Bytes::copy_from_slice(delivery.raw_body()),
            typing_problem: delivery
                .typing_problem()
                .map(|problem| storable_text(&problem.to_string())),
            dedup_key,
        }
    }
}

/// The kind of object a delivery carries, for its lane: the typed kind, or, when the typed
/// model could not read the body or does not know the kind, what the raw JSON says (its `type`
/// when that is a string, `unknown` for another value, else the event's prefix), so that the
/// states of one object share a lane whether or not each fits the typed model.
fn identity_kind(delivery: &Delivery) -> String {
    match delivery.object() {
        DeliveryObject::Unknown(fields) => match fields.get("type") {
            Some(serde_json::Value::String(name)) => name.clone(),
            Some(_) => "unknown".to_owned(),
            None => match delivery.event().as_str().split('.').next() {
                Some(prefix) if !prefix.is_empty() => prefix.to_owned(),
                _ => "unknown".to_owned(),
            },
        },
        _ => kind_name(delivery.kind()).to_owned(),
    }
}

/// Text as a database text column can hold it: a NUL (which PostgreSQL's `text` cannot hold)
/// becomes U+FFFD. For columns that only show or filter; keys escape losslessly instead.
pub(crate) fn storable_text(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// Appends one part of a key, escaped so that parts never run into one another: `%` as `%25`,
/// `:` as `%3A` and NUL as `%00` (every other character as is).
fn push_key_part(key: &mut String, part: &str) {
    for c in part.chars() {
        match c {
            '%' => key.push_str("%25"),
            ':' => key.push_str("%3A"),
            '\0' => key.push_str("%00"),
            c => key.push(c),
        }
    }
}

/// The key a delivery is deduplicated on: two deliveries share it exactly when they carry the
/// same object id, event and `updated_on` (or the same body, see below).
///
/// `<object id>:<event>:<updated_on>` when the object has an id and an `updated_on`, each part
/// escaped so that the key is injective: `%` is written `%25`, `:` `%3A` and NUL `%00` (so an id
/// `a:b` with event `c` gives `a%3Ab:c:1`, apart from id `a` with event `b:c`, `a:b%3Ac:1`). CHIP's
/// ids and event names hold none of these, so their keys read as before, e.g.
/// `7a1b...:purchase.paid:1700000100`. Without `updated_on`, `<object id>:<event>:-:sha256:<hex>`;
/// without an object id, `sha256:<hex>`: the SHA-256 of the exact body, so a repeated delivery
/// (CHIP resends the same bytes) still meets its first copy, and two different bodies never
/// collapse into one. The forms have different numbers of `:`-separated parts, so they never
/// meet either.
pub fn dedup_key(delivery: &Delivery) -> String {
    let body_hash = || {
        let hash = digest::digest(&digest::SHA256, delivery.raw_body());
        let mut hex = String::with_capacity(64);
        for byte in hash.as_ref() {
            hex.push_str(&format!("{byte:02x}"));
        }
        hex
    };
    let Some(id) = delivery.object().id() else {
        return format!("sha256:{}", body_hash());
    };
    let mut key = String::with_capacity(id.len() + 40);
    push_key_part(&mut key, id);
    key.push(':');
    push_key_part(&mut key, delivery.event().as_str());
    match delivery.object().updated_on() {
        Some(updated_on) => key.push_str(&format!(":{updated_on}")),
        None => key.push_str(&format!(":-:sha256:{}", body_hash())),
    }
    key
}

/// The stored name of an object kind.
pub(crate) fn kind_name(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::Purchase => "purchase",
        ObjectKind::Payment => "payment",
        ObjectKind::Payout => "payout",
        ObjectKind::BillingTemplateClient => "billing_template_client",
        _ => "unknown",
    }
}

/// Per record of a batch: the id it is stored under and whether it repeats a delivery stored
/// before, or why it was not recorded (answered 503, so that CHIP sends it again).
type RecordOutcome = Result<(Option<i64>, bool), String>;

type Reply = oneshot::Sender<RecordOutcome>;

struct Queued {
    record: NewRecord,
    reply: Reply,
}

struct IntakeInner {
    verifier: Verifier,
    queue: mpsc::Sender<Queued>,
    inbox: Inbox,
    draining: crate::health::Draining,
}

/// Receives deliveries durably: verifies the signature, stores the delivery in one transaction
/// under its dedup key, and answers only after the commit.
///
/// Cheap to clone (share one per endpoint). Deliveries that arrive together are committed together
/// (group commit, see [`IntakeOptions::max_batch`]): each caller still waits for the commit that
/// holds its own delivery, so nothing is acknowledged before it is on disk.
///
/// Use [`receive`](Self::receive) from any framework, or [`router`](Self::router) /
/// [`handler`](crate::axum::handler) with axum (feature `axum`).
#[derive(Clone)]
pub struct Intake {
    inner: Arc<IntakeInner>,
}

impl std::fmt::Debug for Intake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intake")
            .field("verifier", &self.inner.verifier)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// An intake with default settings that verifies with `verifier`.
    ///
    /// # Errors
    /// [`InboxError::NoRuntime`] outside a Tokio runtime (the intake runs its writers as tasks).
    pub fn intake(&self, verifier: Verifier) -> Result<Intake, InboxError> {
        Intake::new(self, verifier, IntakeOptions::default())
    }
}

impl Intake {
    /// An intake storing into `inbox`, verifying with `verifier`.
    ///
    /// # Errors
    /// [`InboxError::NoRuntime`] outside a Tokio runtime (the intake runs its writers as tasks;
    /// they stop when the last clone of the intake is dropped).
    pub fn new(
        inbox: &Inbox,
        verifier: Verifier,
        options: IntakeOptions,
    ) -> Result<Self, InboxError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| InboxError::NoRuntime)?;
        let (sender, receiver) = mpsc::channel(options.queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let writers = options.writers.unwrap_or(1);
        for _ in 0..writers {
            let receiver = Arc::clone(&receiver);
            let inbox = inbox.clone();
            let max_batch = options.max_batch;
            let max_age = options.max_age;
            runtime.spawn(async move { writer(inbox, receiver, max_batch, max_age).await });
        }
        Ok(Self {
            inner: Arc::new(IntakeInner {
                verifier,
                queue: sender,
                inbox: inbox.clone(),
                draining: crate::health::Draining::default(),
            }),
        })
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    /// Liveness: whether the intake's writers are running (what a liveness endpoint answers;
    /// `false` only if they stopped, which a restart mends). It does not depend on the
    /// database: a restart does not make a database writable, readiness says that.
    pub fn is_live(&self) -> bool {
        !self.inner.queue.is_closed()
    }

    /// Readiness: whether deliveries are stored now. [`Readiness::Ready`](crate::Readiness) when
    /// a commit succeeded within the last 2 s; otherwise the database is probed with a write
    /// that changes nothing ([`Inbox::check_writable`]; one probe at a time, its result reused
    /// for a second, at most 2 s), so a readiness endpoint polled often costs at most one write
    /// a second. [`Readiness::Draining`](crate::Readiness) once [`drain`](Self::drain) was called.
    ///
    /// A failed write (the intake's or the probe's) makes the pool close its connections when
    /// next taken: after a read-only file system, a full disk or a restarted PostgreSQL, the
    /// next write opens fresh connections, so the intake stores again within a second or two
    /// of the database taking writes, without a restart.
    pub async fn readiness(&self) -> crate::Readiness {
        if self.inner.draining.is_set() {
            return crate::Readiness::Draining;
        }
        self.inner.inbox.write_readiness().await
    }

    /// Starts shutting down: [`readiness`](Self::readiness) answers
    /// [`Readiness::Draining`](crate::Readiness) from now on, so that load balancers send new
    /// requests elsewhere. Deliveries that still arrive are stored and acknowledged as before;
    /// stop accepting connections with [`chip_gate::serve::serve_with_shutdown`], which lets the
    /// requests under way finish (each answered once its commit is done).
    pub fn drain(&self) {
        self.inner.draining.start();
    }

    /// Receives one delivery from any framework: the request's headers and its complete body.
    ///
    /// Checks, in order: exactly one `X-Signature` header, the body size
    /// ([`Verifier::max_body_bytes`]), the signature over the exact bytes. Then stores it and
    /// returns once the transaction has committed. A verified body is never refused, even one the
    /// typed model cannot read: it is stored raw (refusing it would make CHIP retry for 36 hours
    /// and then drop it).
    ///
    /// Answer with [`Receipt::status`] on success and [`IntakeError::status`] otherwise.
    ///
    /// # Errors
    /// An [`IntakeError`]: nothing was stored (or, for [`IntakeError::Storage`], nothing
    /// acknowledged).
    pub async fn receive(&self, headers: &HeaderMap, body: Bytes) -> Result<Receipt, IntakeError> {
        let mut values = headers.get_all(SIGNATURE_HEADER).iter();
        let signature = match (values.next(), values.next()) {
            (None, _) => Err(VerifyError::MissingSignature),
            (Some(_), Some(_)) => Err(VerifyError::SeveralSignatures),
            (Some(value), None) => value.to_str().map_err(|_| VerifyError::SignatureNotBase64),
        };
        match signature {
            Ok(signature) => self.receive_signed(body, signature).await,
            Err(error) => {
                let result = Err(error.into());
                count_outcome(&result);
                result
            }
        }
    }

    /// Receives one delivery given its body and the `X-Signature` value, as
    /// [`receive`](Self::receive) does.
    ///
    /// # Errors
    /// As [`receive`](Self::receive).
    pub async fn receive_signed(
        &self,
        body: Bytes,
        x_signature: &str,
    ) -> Result<Receipt, IntakeError> {
        let span = tracing::info_span!(
            "chip_inbox.intake",
            event = tracing::field::Empty,
            dedup_key = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        async move {
            let result = self.verify_and_store(body, x_signature).await;
            let span = tracing::Span::current();
            count_outcome(&result);
            match &result {
                Ok(receipt) => {
                    span.record("outcome", receipt.public_text());
                }
                Err(error) => {
                    span.record("outcome", error.public_text());
                    match error {
                        IntakeError::Storage(_) => {
                            tracing::error!(%error, "verified delivery not recorded; answering 503");
                        }
                        _ => tracing::debug!(%error, "delivery refused"),
                    }
                }
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn verify_and_store(
        &self,
        body: Bytes,
        x_signature: &str,
    ) -> Result<Receipt, IntakeError> {
        let verifier = &self.inner.verifier;
        if x_signature.trim().is_empty() {
            return Err(VerifyError::MissingSignature.into());
        }
        if body.len() > verifier.max_body_bytes() {
            return Err(IntakeError::TooLarge {
                max: verifier.max_body_bytes(),
            });
        }
        verifier.verify(&body, x_signature)?;
        let delivery = Delivery::from_verified(body);
        if let Some(problem) = delivery.typing_problem() {
            tracing::warn!(%problem, "verified delivery stored raw: its body does not fit the typed model");
        }
        let record = NewRecord::new(&delivery, x_signature.trim().to_owned());
        let span = tracing::Span::current();
        span.record("event", record.event.as_str());
        span.record("dedup_key", record.dedup_key.as_str());
        let dedup_key = record.dedup_key.clone();
        let (reply, answer) = oneshot::channel();
        self.inner
            .queue
            .send(Queued { record, reply })
            .await
            .map_err(|_| IntakeError::Storage("the intake's writers have stopped".to_owned()))?;
        match answer.await {
            Ok(Ok((id, duplicate))) => Ok(Receipt {
                id,
                dedup_key,
                duplicate,
            }),
            Ok(Err(error)) => Err(IntakeError::Storage(error)),
            Err(_) => Err(IntakeError::Storage(
                "the intake's writer stopped before committing".to_owned(),
            )),
        }
    }
}

/// Counts what the intake answered in `chip_inbox_intake_total` (one counter increment, no
/// query).
fn count_outcome(result: &Result<Receipt, IntakeError>) {
    match result {
        Ok(receipt) => {
            ::metrics::counter!(crate::metrics::INTAKE, "outcome" => receipt.public_text())
                .increment(1);
        }
        Err(IntakeError::Storage(_)) => {
            ::metrics::counter!(crate::metrics::INTAKE, "outcome" => "unavailable").increment(1);
        }
        Err(error) => {
            ::metrics::counter!(
                crate::metrics::INTAKE,
                "outcome" => "refused",
                "reason" => error.reason()
            )
            .increment(1);
        }
    }
}

/// One writer: takes whatever is queued (up to `max_batch`), commits it in one transaction, then
/// answers every caller.
async fn writer(
    inbox: Inbox,
    receiver: Arc<Mutex<mpsc::Receiver<Queued>>>,
    max_batch: usize,
    max_age: Option<Duration>,
) {
    loop {
        let mut batch = Vec::new();
        {
            let mut receiver = receiver.lock().await;
            match receiver.recv().await {
                Some(first) => batch.push(first),
                None => return,
            }
            while batch.len() < max_batch {
                match receiver.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        let records: Vec<&NewRecord> = batch.iter().map(|queued| &queued.record).collect();
        let started = std::time::Instant::now();
        let outcomes = match inbox.ensure_schema().await {
            Ok(()) => store_isolating(&inbox, &records, max_age).await,
            Err(error) => {
                let text = crate::error::error_text(&error);
                inbox.write_failed(&text);
                vec![Err(text); records.len()]
            }
        };
        ::metrics::histogram!(crate::metrics::COMMIT_SECONDS)
            .record(started.elapsed().as_secs_f64());
        ::metrics::histogram!(crate::metrics::COMMIT_BATCH_SIZE).record(records.len() as f64);
        let stored_new = outcomes.iter().any(|o| matches!(o, Ok((_, false))));
        for (queued, outcome) in batch.into_iter().zip(outcomes) {
            let _ = queued.reply.send(outcome);
        }
        if stored_new {
            inbox.shared.stored.notify_waiters();
        }
    }
}

/// Stores a batch so that one record the database refuses never fails the others: when a
/// batch's insert fails with an error about its data (not the connection, the disk or a lock),
/// it is split in halves and each half stored again, down to single records, so only the record
/// at fault is answered 503 (one bad record in a batch of `n` costs about 2 log2(n) more
/// transactions, paid only when it happens). Per record, as [`store_batch`].
async fn store_isolating(
    inbox: &Inbox,
    records: &[&NewRecord],
    max_age: Option<Duration>,
) -> Vec<RecordOutcome> {
    let backend = &inbox.shared.backend;
    let mut outcomes: Vec<Option<RecordOutcome>> = vec![None; records.len()];
    // (start, end) ranges of `records` still to store, last first.
    let mut ranges = vec![(0, records.len())];
    while let Some((start, end)) = ranges.pop() {
        let part = &records[start..end];
        match store_batch(backend, part, max_age).await {
            Ok(stored) => {
                inbox.write_committed();
                for (slot, outcome) in outcomes[start..end].iter_mut().zip(stored) {
                    *slot = Some(outcome);
                }
            }
            Err(error) if part.len() > 1 && refuses_data(&error) => {
                tracing::warn!(%error, records = part.len(),
                    "a batch's insert was refused; storing its records apart");
                let middle = start + part.len() / 2;
                ranges.push((middle, end));
                ranges.push((start, middle));
            }
            Err(error) => {
                let text = crate::error::error_text(&error);
                if !refuses_data(&error) {
                    // The connection or what is under it: fresh connections for the next try.
                    inbox.write_failed(&text);
                }
                for slot in &mut outcomes[start..end] {
                    *slot = Some(Err(text.clone()));
                }
            }
        }
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|| Err("not stored".to_owned())))
        .collect()
}

/// Whether `error` is the database refusing what a batch holds (a constraint, a value it cannot
/// store, a trigger), which storing the records apart can isolate; not a lost connection, a
/// full disk, a lock or a shutdown, which would fail each part the same way.
fn refuses_data(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else {
        return false;
    };
    let code = db.code().unwrap_or_default();
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // SQLITE_BUSY, SQLITE_LOCKED, SQLITE_NOMEM, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CORRUPT,
        // SQLITE_FULL, SQLITE_CANTOPEN (primary codes, in the low byte of the extended ones).
        let primary = code.parse::<i64>().unwrap_or(0) & 0xff;
        return !matches!(primary, 5 | 6 | 7 | 8 | 10 | 11 | 13 | 14);
    }
    // PostgreSQL classes: 08 connection, 53 insufficient resources, 57 operator intervention,
    // 58 system error, XX internal error.
    !matches!(
        code.get(..2).unwrap_or_default(),
        "08" | "53" | "57" | "58" | "XX"
    )
}

/// Stores a batch; per record, its id and whether it was a duplicate, or why it was not recorded.
///
/// A few statements per batch whatever its size: the deliveries in one
/// `INSERT ... ON CONFLICT (dedup_key) DO NOTHING RETURNING` with the count, committed, then,
/// only when the batch repeats deliveries, a second transaction recording the repeats on their
/// originals and in the count of duplicates. When only that second one fails, the new
/// deliveries stay stored and are answered as such; only the repeats are answered 503 (CHIP
/// sends them again, and they are counted then), so no count is off and nothing stored is
/// refused. Rows go in key order so that concurrent writers on PostgreSQL take their locks in one
/// order and never deadlock. The lane of each object (its order and lease) is made by the first worker that
/// claims one of its deliveries, not here: intake writes as little as it can before it answers.
pub(crate) async fn store_batch(
    backend: &Backend,
    records: &[&NewRecord],
    max_age: Option<Duration>,
) -> Result<Vec<RecordOutcome>, sqlx::Error> {
    use std::collections::BTreeMap;

    let now = now_ms();
    // The oldest `updated_on` (Unix seconds) handed over when it arrives now.
    let oldest = match max_age {
        Some(age) => now
            .div_euclid(1000)
            .saturating_sub(i64::try_from(age.as_secs()).unwrap_or(i64::MAX)),
        None => i64::MIN,
    };
    // Each distinct key once (its first record), in key order; how many records carry it.
    let mut keys: BTreeMap<&str, (usize, i64)> = BTreeMap::new();
    for (index, record) in records.iter().enumerate() {
        keys.entry(record.dedup_key.as_str())
            .and_modify(|(_, n)| *n += 1)
            .or_insert((index, 1));
    }
    let stored = match backend {
        Backend::Postgres(pool) => store_batch_postgres(pool, records, &keys, now, oldest).await?,
        Backend::Sqlite(pool) => store_batch_sqlite(pool, records, &keys, now, oldest).await?,
    };
    Ok(outcomes(records, &keys, &stored))
}

/// What a batch's two transactions did: the ids of its keys (stored now, or found as the
/// originals of repeats), and why recording the repeats failed, if it did (the new deliveries
/// were committed before).
struct StoredBatch {
    ids: std::collections::BTreeMap<String, (i64, bool)>,
    repeats_failed: Option<sqlx::Error>,
}

/// A pooled SQLite connection inside a transaction this module opened with SQL of its own
/// (`BEGIN IMMEDIATE` sent together with the first statements, to save a round trip to the
/// connection's thread). Until [`finish`](Self::finish), dropping it closes the connection
/// instead of returning it to the pool with the transaction still open.
struct OpenSqliteTx {
    conn: sqlx::pool::PoolConnection<sqlx::Sqlite>,
    finished: bool,
}

impl OpenSqliteTx {
    fn conn(&mut self) -> &mut sqlx::SqliteConnection {
        &mut self.conn
    }

    /// The transaction is over (committed, or rolled back by [`abort`](Self::abort)): the
    /// connection may go back to the pool.
    fn finish(mut self) {
        self.finished = true;
    }

    /// Rolls back after an error; if even that fails, the connection is closed.
    async fn abort(mut self) {
        if sqlx::query("ROLLBACK").execute(self.conn()).await.is_ok() {
            self.finish();
        }
    }
}

impl Drop for OpenSqliteTx {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.close_on_drop();
        }
    }
}

/// The SQLite batch. New deliveries take one round trip to the connection's thread: one string
/// of statements with anonymous parameters (`?`, bound in order across the statements: for each
/// of a statement's parameters sqlx asks SQLite its name, and SQLite finds a name by walking the
/// whole list, which makes thousands of named parameters quadratic): `BEGIN IMMEDIATE`, the
/// deliveries (`ON CONFLICT (dedup_key) DO NOTHING RETURNING`), the `received` count (SQLite's
/// `changes()`: the rows that insert stored), `COMMIT`. Repeats (of deliveries stored before, or
/// second copies within the batch) then take a transaction of their own, which records them on
/// the original row and in the `duplicates` count; each transaction's counts commit with what
/// they count.
async fn store_batch_sqlite(
    pool: &sqlx::SqlitePool,
    records: &[&NewRecord],
    keys: &std::collections::BTreeMap<&str, (usize, i64)>,
    now: i64,
    oldest: i64,
) -> Result<StoredBatch, sqlx::Error> {
    let mut sql = format!(
        "{}; INSERT INTO chip_inbox_deliveries (dedup_key, lane, event, object_kind, object_id, \
         updated_on, signature, body, typing_problem, received_at, next_attempt_at, expired) \
         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, v.column7, \
         v.column8, v.column9, v.column10, v.column11, \
         CASE WHEN v.column6 <= (SELECT updated_on FROM chip_inbox_horizon WHERE id = 1) \
         OR v.column6 < ? THEN 1 ELSE 0 END FROM (VALUES ",
        <sqlx::Sqlite as Dialect>::BEGIN_WRITE
    );
    for n in 0..keys.len() {
        sql.push_str(if n == 0 { "" } else { ", " });
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    }
    sql.push_str(
        ") AS v WHERE true ON CONFLICT (dedup_key) DO NOTHING RETURNING id, dedup_key; \
         INSERT INTO chip_inbox_counters (name, shard, value) \
         SELECT ?, ?, changes() WHERE changes() > 0 \
         ON CONFLICT (name, shard) DO UPDATE SET value = chip_inbox_counters.value + excluded.value; \
         COMMIT",
    );
    // Anonymous parameters bind in the order they appear: the oldest accepted first.
    let mut query = sqlx::query(&sql).bind(oldest);
    for &(index, _) in keys.values() {
        let record = records[index];
        query = query
            .bind(&record.dedup_key)
            .bind(&record.lane)
            .bind(&record.event)
            .bind(record.object_kind)
            .bind(&record.object_id)
            .bind(record.updated_on)
            .bind(&record.signature)
            .bind(record.body.as_ref())
            .bind(&record.typing_problem)
            .bind(now)
            .bind(now);
    }
    let shard = i64::from(fastrand::u32(0..crate::store::COUNTER_SHARDS));
    query = query.bind(RECEIVED).bind(shard);

    let mut tx = OpenSqliteTx {
        conn: pool.acquire().await?,
        finished: false,
    };
    let inserted = match query.fetch_all(tx.conn()).await {
        Ok(rows) => rows,
        Err(error) => {
            tx.abort().await;
            return Err(error);
        }
    };
    tx.finish();
    let mut ids: std::collections::BTreeMap<String, (i64, bool)> =
        std::collections::BTreeMap::new();
    for row in inserted {
        ids.insert(row.try_get("dedup_key")?, (row.try_get("id")?, true));
    }

    let repeats = repeats(keys, &ids);
    let repeats_failed = if repeats.is_empty() {
        None
    } else {
        record_repeats_sqlite(pool, &repeats, &mut ids, now)
            .await
            .err()
    };
    Ok(StoredBatch {
        ids,
        repeats_failed,
    })
}

/// The SQLite batch's second transaction: each repeated key's count on its original (whose id
/// goes into `ids` when the batch did not store it), and the `duplicates` count.
async fn record_repeats_sqlite(
    pool: &sqlx::SqlitePool,
    repeats: &[(&str, i64)],
    ids: &mut std::collections::BTreeMap<String, (i64, bool)>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = pool
        .begin_with(<sqlx::Sqlite as Dialect>::BEGIN_WRITE)
        .await?;
    for &(key, n) in repeats {
        let original = sqlx::query(
            "UPDATE chip_inbox_deliveries SET duplicates = duplicates + $2, \
             last_duplicate_at = $3 WHERE dedup_key = $1 RETURNING id",
        )
        .bind(key)
        .bind(n)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if let (Some(row), false) = (original, ids.contains_key(key)) {
            ids.insert(key.to_owned(), (row.try_get("id")?, false));
        }
    }
    let duplicates: i64 = repeats.iter().map(|r| r.1).sum();
    crate::store::add_counts!(tx, [(DUPLICATES, duplicates)])?;
    tx.commit().await
}

/// Per record: the id it is stored under and whether it repeats a delivery stored before (or
/// earlier in the same batch); when recording the repeats failed, every repeat gets the error.
fn outcomes(
    records: &[&NewRecord],
    keys: &std::collections::BTreeMap<&str, (usize, i64)>,
    stored: &StoredBatch,
) -> Vec<RecordOutcome> {
    let repeats_failed = stored.repeats_failed.as_ref().map(|error| {
        format!(
            "the delivery is stored, but this repeat of it was not recorded: {}",
            crate::error::error_text(error)
        )
    });
    records
        .iter()
        .enumerate()
        .map(|(index, record)| {
            let first = keys.get(record.dedup_key.as_str()).map(|k| k.0);
            match (stored.ids.get(&record.dedup_key), &repeats_failed) {
                (Some(&(id, true)), _) if first == Some(index) => Ok((Some(id), false)),
                (_, Some(error)) => Err(error.clone()),
                (Some(&(id, _)), None) => Ok((Some(id), true)),
                (None, None) => Ok((None, true)),
            }
        })
        .collect()
}

/// The repeats of a batch, per key with how many: all the copies of a key stored before, and
/// the second and later copies within the batch of a key stored now.
fn repeats<'k>(
    keys: &std::collections::BTreeMap<&'k str, (usize, i64)>,
    stored_now: &std::collections::BTreeMap<String, (i64, bool)>,
) -> Vec<(&'k str, i64)> {
    keys.iter()
        .map(|(key, &(_, copies))| {
            let n = if stored_now.contains_key(*key) {
                copies - 1
            } else {
                copies
            };
            (*key, n)
        })
        .filter(|&(_, n)| n > 0)
        .collect()
}

/// The PostgreSQL batch: one statement (arrays unnested: the same prepared statement for every
/// batch size) stores the deliveries and the count, and announces them to idle workers in other
/// processes (`pg_notify`, sent on commit) in one round trip and one commit;
/// a second one records repeats, when there are any. Keys go in sorted order, so concurrent
/// writers lock in one order.
async fn store_batch_postgres(
    pool: &sqlx::PgPool,
    records: &[&NewRecord],
    keys: &std::collections::BTreeMap<&str, (usize, i64)>,
    now: i64,
    oldest: i64,
) -> Result<StoredBatch, sqlx::Error> {
    let rows: Vec<&NewRecord> = keys.values().map(|&(index, _)| records[index]).collect();
    let shard = i64::from(fastrand::u32(0..crate::store::COUNTER_SHARDS));
    let stored = sqlx::query(
        "WITH horizon AS ( \
             SELECT updated_on FROM chip_inbox_horizon WHERE id = 1 FOR SHARE \
         ), input AS ( \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                                  $6::int8[], $7::text[], $8::bytea[], $9::text[]) \
             AS t(dedup_key, lane, event, object_kind, object_id, updated_on, signature, body, typing_problem) \
         ), stored AS ( \
             INSERT INTO chip_inbox_deliveries (dedup_key, lane, event, object_kind, object_id, \
                 updated_on, signature, body, typing_problem, received_at, next_attempt_at, expired) \
             SELECT dedup_key, lane, event, object_kind, object_id, updated_on, signature, body, \
                 typing_problem, $10, $10, \
                 CASE WHEN updated_on <= (SELECT updated_on FROM horizon) OR updated_on < $13 \
                 THEN 1 ELSE 0 END \
             FROM input ORDER BY dedup_key \
             ON CONFLICT (dedup_key) DO NOTHING RETURNING id, dedup_key \
         ), counted AS ( \
             INSERT INTO chip_inbox_counters (name, shard, value) \
             SELECT 'received', $11, COUNT(*) FROM stored HAVING COUNT(*) > 0 \
             ON CONFLICT (name, shard) DO UPDATE SET value = chip_inbox_counters.value + excluded.value \
         ), announced AS ( \
             SELECT pg_notify($12, '') FROM (SELECT 1 FROM stored LIMIT 1) AS any_stored \
         ) SELECT s.id, s.dedup_key FROM stored s CROSS JOIN (SELECT COUNT(*) FROM announced) AS a",
    )
    .bind(rows.iter().map(|r| r.dedup_key.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.lane.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.event.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.object_kind).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.object_id.as_deref()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.updated_on).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.signature.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.body.as_ref()).collect::<Vec<&[u8]>>())
    .bind(rows.iter().map(|r| r.typing_problem.as_deref()).collect::<Vec<_>>())
    .bind(now)
    .bind(shard)
    .bind(crate::store::DUE_CHANNEL)
    .bind(oldest)
    .fetch_all(pool)
    .await?;
    let mut ids = std::collections::BTreeMap::new();
    for row in stored {
        ids.insert(
            row.try_get::<String, _>("dedup_key")?,
            (row.try_get::<i64, _>("id")?, true),
        );
    }
    let (repeated, counts): (Vec<&str>, Vec<i64>) = repeats(keys, &ids).into_iter().unzip();
    let mut repeats_failed = None;
    if !repeated.is_empty() {
        let originals = sqlx::query(
            "WITH repeats AS ( \
                 SELECT * FROM UNNEST($1::text[], $2::int8[]) AS u(dedup_key, n) \
             ), updated AS ( \
                 UPDATE chip_inbox_deliveries d SET duplicates = d.duplicates + r.n, last_duplicate_at = $3 \
                 FROM repeats r WHERE d.dedup_key = r.dedup_key RETURNING d.id, d.dedup_key \
             ), counted AS ( \
                 INSERT INTO chip_inbox_counters (name, shard, value) \
                 SELECT 'duplicates', $4, CAST(SUM(n) AS BIGINT) FROM repeats HAVING SUM(n) > 0 \
                 ON CONFLICT (name, shard) DO UPDATE SET value = chip_inbox_counters.value + excluded.value \
             ) SELECT id, dedup_key FROM updated",
        )
        .bind(&repeated)
        .bind(&counts)
        .bind(now)
        .bind(shard)
        .fetch_all(pool)
        .await;
        match originals {
            Ok(originals) => {
                for row in originals {
                    let key: String = row.try_get("dedup_key")?;
                    let id: i64 = row.try_get("id")?;
                    ids.entry(key).or_insert((id, false));
                }
            }
            Err(error) => repeats_failed = Some(error),
        }
    }
    Ok(StoredBatch {
        ids,
        repeats_failed,
    })
}
