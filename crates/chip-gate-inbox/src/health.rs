//! Health: liveness and readiness of an intake, and what makes the pool let go of connections
//! that cannot write.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use http::StatusCode;

use crate::error::InboxError;
use crate::store::{Backend, Dialect, Inbox, now_ms};

/// How long a successful commit vouches for the database without a probe.
const FRESH: i64 = 2_000;
/// How long a probe's result is reused (a load balancer polling readiness from many places
/// costs one write a second at most).
const PROBE_REUSE: Duration = Duration::from_secs(1);
/// The longest a readiness probe waits for the database.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the inbox's last writes did: when one last committed, when one last failed, and why.
#[derive(Debug, Default)]
pub(crate) struct WriteHealth {
    ok_at: AtomicI64,
    failed_at: AtomicI64,
    last_error: Mutex<Option<String>>,
    /// The last probe: when it ran (a monotonic instant) and what it found.
    probe: tokio::sync::Mutex<Option<(tokio::time::Instant, Result<(), String>)>>,
}

impl WriteHealth {
    fn committed(&self) {
        self.ok_at.store(now_ms(), Ordering::Relaxed);
    }

    fn failed(&self, error: &str) {
        self.failed_at.store(now_ms(), Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(error.to_owned());
        }
    }

    /// Whether a commit succeeded lately and no write failed since.
    fn vouched(&self) -> bool {
        let ok = self.ok_at.load(Ordering::Relaxed);
        ok > 0 && ok >= self.failed_at.load(Ordering::Relaxed) && now_ms() - ok < FRESH
    }
}

impl Inbox {
    /// A write that committed: the database takes writes.
    pub(crate) fn write_committed(&self) {
        self.shared.health.committed();
    }

    /// A write failed for a reason other than what it held (`error` is its one-line text): the
    /// pool's connections are closed when next taken, so that the next write opens fresh ones
    /// (a SQLite file opened read-only stays read-only for the connection's life; a PostgreSQL
    /// connection from before a restart is gone).
    pub(crate) fn write_failed(&self, error: &str) {
        self.shared.health.failed(error);
        self.shared.recycle.all();
    }

    /// Checks that the database takes writes now: brings the schema up to date if it was not yet
    /// (see [`connect_lazy`](Self::connect_lazy)), then commits a write that changes nothing
    /// (it rewrites the retention horizon's row with its own value), which a read-only file
    /// system, a full disk, a read-only replica or a stopped server all refuse.
    ///
    /// # Errors
    /// [`InboxError::Database`] (or a schema or file error) saying why it cannot write.
    pub async fn check_writable(&self) -> Result<(), InboxError> {
        let result = self.probe_write().await;
        match &result {
            Ok(()) => self.write_committed(),
            Err(error) => self.write_failed(&crate::error::error_text(error)),
        }
        result
    }

    async fn probe_write(&self) -> Result<(), InboxError> {
        self.ensure_schema().await?;
        const SQL: &str = "UPDATE chip_inbox_horizon SET updated_on = updated_on WHERE id = 1";
        match &self.shared.backend {
            Backend::Sqlite(pool) => {
                let mut tx = pool
                    .begin_with(<sqlx::Sqlite as Dialect>::BEGIN_WRITE)
                    .await?;
                sqlx::query(SQL).execute(&mut *tx).await?;
                tx.commit().await?;
            }
            Backend::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query(SQL).execute(&mut *tx).await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Readiness as the intake sees it (without the draining flag): vouched by a recent commit,
    /// or probed (one probe at a time, its result reused for a second, at most 2 s).
    pub(crate) async fn write_readiness(&self) -> Readiness {
        let health = &self.shared.health;
        if health.vouched() {
            return Readiness::Ready;
        }
        let mut probe = health.probe.lock().await;
        if let Some((at, result)) = probe.as_ref()
            && at.elapsed() < PROBE_REUSE
        {
            return Readiness::from_probe(result.clone());
        }
        let result = match tokio::time::timeout(PROBE_TIMEOUT, self.check_writable()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(crate::error::error_text(&error)),
            Err(_) => {
                let text = format!(
                    "the database did not take a write within {} s",
                    PROBE_TIMEOUT.as_secs()
                );
                self.write_failed(&text);
                Err(text)
            }
        };
        *probe = Some((tokio::time::Instant::now(), result.clone()));
        Readiness::from_probe(result)
    }
}

/// Whether an intake can take deliveries now: what a readiness endpoint answers (see
/// [`Intake::readiness`](crate::Intake::readiness)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// The database takes writes: deliveries are stored and acknowledged.
    Ready,
    /// The database cannot be written now (the reason, one line, never a secret: database URLs
    /// are not part of sqlx's errors). Deliveries are answered `503` and CHIP sends them again;
    /// the intake starts storing again as soon as the database does, without a restart.
    Unavailable(String),
    /// The intake is shutting down ([`Intake::drain`](crate::Intake::drain)): it still stores
    /// what reaches it, but a load balancer should send new requests elsewhere.
    Draining,
}

impl Readiness {
    fn from_probe(result: Result<(), String>) -> Self {
        match result {
            Ok(()) => Self::Ready,
            Err(reason) => Self::Unavailable(reason),
        }
    }

    /// Whether deliveries are taken.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready)
    }

    /// The status a readiness endpoint answers: `200 OK` when ready, else `503 Service
    /// Unavailable`.
    pub fn status(&self) -> StatusCode {
        if self.is_ready() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ready => f.write_str("ready"),
            Self::Unavailable(reason) => {
                write!(f, "not ready: the database cannot be written: {reason}")
            }
            Self::Draining => f.write_str("not ready: shutting down"),
        }
    }
}

/// The intake's draining flag.
#[derive(Debug, Default)]
pub(crate) struct Draining(AtomicBool);

impl Draining {
    pub(crate) fn start(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
