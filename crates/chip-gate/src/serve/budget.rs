//! A request's body read through the shared body budget, the size cap and the deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::connections::{Conn, Phase, Shared};
use super::{BODY_BUDGET_BYTES, BodyError};

/// A request body read through the budget, the size cap and the deadline.
pub(super) struct Guarded {
    pub(super) inner: hyper::body::Incoming,
    pub(super) state: GuardState,
    pub(super) shared: Arc<Shared>,
    pub(super) conn: Arc<Conn>,
    pub(super) need: usize,
    pub(super) read: usize,
    pub(super) max: usize,
    pub(super) deadline: tokio::time::Instant,
    /// The deadline's timer, made only once the body has to be waited for (most bodies are
    /// already in hyper's buffer when the handler reads them).
    pub(super) timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The room this body holds in the budget. Kept while the body's bytes can be in memory:
    /// until the body (and with it the request) is dropped.
    pub(super) permit: Option<OwnedSemaphorePermit>,
}

type Reserve = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, BodyError>> + Send>>;

pub(super) enum GuardState {
    /// Nothing read or reserved yet.
    Start,
    /// Waiting for room in the budget.
    Reserving(Reserve),
    /// Room reserved: reading.
    Reading,
    /// The body is complete, or failed.
    Done,
}

/// Reserves `need` bytes of the budget, closing the oldest connections still sending a body to
/// make room, for at most the budget wait.
async fn reserve(
    shared: Arc<Shared>,
    me: u64,
    need: u32,
) -> Result<OwnedSemaphorePermit, BodyError> {
    let budget = Arc::clone(&shared.budget);
    if let Ok(permit) = Arc::clone(&budget).try_acquire_many_owned(need) {
        return Ok(permit);
    }
    let deadline = tokio::time::Instant::now() + shared.options.budget_wait;
    loop {
        let evicted = shared.evict_oldest(Some(me), true);
        let wait = if evicted {
            // An evicted connection frees its room once its task has dropped it.
            Duration::from_millis(5)
        } else {
            Duration::from_millis(25)
        };
        let until = (tokio::time::Instant::now() + wait).min(deadline);
        match tokio::time::timeout_at(until, Arc::clone(&budget).acquire_many_owned(need)).await {
            Ok(Ok(permit)) => return Ok(permit),
            Ok(Err(_closed)) => return Err(BodyError::Busy),
            Err(_) if tokio::time::Instant::now() >= deadline => return Err(BodyError::Busy),
            Err(_) => {}
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(permit) = &self.permit {
            metrics::gauge!(BODY_BUDGET_BYTES).decrement(permit.num_permits() as f64);
        }
    }
}

impl Guarded {
    /// Whether the deadline has passed; arms its timer so that `cx` is woken then.
    fn past_deadline(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// Room reserved: read.
    fn hold(&mut self, permit: OwnedSemaphorePermit) {
        let held = u64::try_from(permit.num_permits()).unwrap_or(u64::MAX);
        self.conn.reserved.store(held, Ordering::Relaxed);
        metrics::gauge!(BODY_BUDGET_BYTES).increment(held as f64);
        self.permit = Some(permit);
        self.state = GuardState::Reading;
    }

    fn fail(
        &mut self,
        error: BodyError,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        self.state = GuardState::Done;
        Poll::Ready(Some(Err(Box::new(error))))
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                GuardState::Done => return Poll::Ready(None),
                GuardState::Start => {
                    if this.need > this.max {
                        // Declared larger than allowed: refused unread, nothing reserved.
                        return this.fail(BodyError::TooLarge { max: this.max });
                    }
                    let need = u32::try_from(this.need.max(1)).unwrap_or(u32::MAX);
                    // Room at once (the usual case), or wait for it.
                    match Arc::clone(&this.shared.budget).try_acquire_many_owned(need) {
                        Ok(permit) => this.hold(permit),
                        Err(_) => {
                            let reserve = reserve(Arc::clone(&this.shared), this.conn.id, need);
                            this.state = GuardState::Reserving(Box::pin(reserve));
                        }
                    }
                }
                GuardState::Reserving(reserving) => {
                    let reserved = reserving.as_mut().poll(cx);
                    match reserved {
                        Poll::Ready(Ok(permit)) => this.hold(permit),
                        Poll::Ready(Err(error)) => return this.fail(error),
                        Poll::Pending if this.past_deadline(cx) => {
                            return this.fail(BodyError::Timeout);
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
                GuardState::Reading => {
                    let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
                        Poll::Ready(frame) => frame,
                        Poll::Pending if this.past_deadline(cx) => {
                            return this.fail(BodyError::Timeout);
                        }
                        Poll::Pending => return Poll::Pending,
                    };
                    match frame {
                        None => {
                            this.state = GuardState::Done;
                            this.conn.set(Phase::Answering);
                            return Poll::Ready(None);
                        }
                        Some(Err(error)) => {
                            this.state = GuardState::Done;
                            return Poll::Ready(Some(Err(Box::new(error))));
                        }
                        Some(Ok(frame)) => {
                            if let Some(data) = frame.data_ref() {
                                this.read = this.read.saturating_add(data.len());
                                if this.read > this.max || this.read > this.need {
                                    let max = this.max.min(this.need);
                                    return this.fail(BodyError::TooLarge { max });
                                }
                            }
                            if http_body::Body::is_end_stream(&this.inner) {
                                this.conn.set(Phase::Answering);
                            }
                            return Poll::Ready(Some(Ok(frame)));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, GuardState::Done)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self.state {
            GuardState::Done => http_body::SizeHint::with_exact(0),
            _ => self.inner.size_hint(),
        }
    }
}
