//! Intake: verify, parse, store in one transaction, and only then acknowledge.

mod batch;
mod options;
mod record;
mod writer;

use std::sync::Arc;

use bytes::Bytes;
use chip_gate::verify::SIGNATURE_HEADER;
use chip_gate::{Delivery, Verifier, VerifyError};
use http::{HeaderMap, StatusCode};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::Instrument;

use crate::error::{InboxError, IntakeError};
use crate::store::Inbox;
use writer::{Queued, writer};

pub(crate) use batch::store_batch;
pub use options::IntakeOptions;
pub use record::dedup_key;
pub(crate) use record::{NewRecord, storable_text};
// At its path before intake became a folder, for the crate's other modules (none uses it yet).
#[allow(unused_imports)]
pub(crate) use record::kind_name;

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
        // Writers keep a connection between batches only when that leaves one or more in the
        // pool for everything else (an in-memory SQLite inbox has a single connection).
        let keep =
            usize::try_from(inbox.shared.backend.max_connections()).is_ok_and(|max| max > writers);
        for _ in 0..writers {
            let receiver = Arc::clone(&receiver);
            let inbox = inbox.clone();
            let max_batch = options.max_batch;
            let max_age = options.max_age;
            runtime.spawn(async move { writer(inbox, receiver, max_batch, max_age, keep).await });
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
        // The parsed delivery is dropped here, not held while the commit is awaited: only its
        // record (the body shared, a few short strings) waits in the batch.
        let record = {
            let delivery = Delivery::from_verified(body.clone());
            if let Some(problem) = delivery.typing_problem() {
                tracing::warn!(%problem, "verified delivery stored raw: its body does not fit the typed model");
            }
            NewRecord::new(&delivery, body, x_signature.trim().to_owned())
        };
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
