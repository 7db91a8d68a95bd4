//! `chip inbox retry` and `replay`: hand a delivery to the workers again.

use chip_gate_inbox::{DeliveryState, Inbox, InboxError};

use crate::common::{Failure, Outcome};
use crate::outln;

use super::open::failed;
use super::time::time_ms;
use super::url::DatabaseUrl;

/// `chip inbox retry`: a dead delivery becomes pending again, due now.
pub(super) async fn retry(inbox: &Inbox, url: &DatabaseUrl, id: i64) -> Outcome {
    if let Err(e) = inbox.retry(id).await {
        return Err(not_requeued(inbox, url, id, "retry", e).await);
    }
    outln!("Delivery {id} is pending again: due now, with a fresh set of attempts.")?;
    Ok(0)
}

/// `chip inbox replay`: a done, stale or dead delivery is handed over once more.
pub(super) async fn replay(inbox: &Inbox, url: &DatabaseUrl, id: i64) -> Outcome {
    if let Err(e) = inbox.replay(id).await {
        return Err(not_requeued(inbox, url, id, "replay", e).await);
    }
    outln!("Delivery {id} is pending again: it will be handed over once more.")?;
    Ok(0)
}

/// Why a retry or replay did nothing; for a pending delivery, when it is due.
async fn not_requeued(
    inbox: &Inbox,
    url: &DatabaseUrl,
    id: i64,
    verb: &str,
    error: InboxError,
) -> Failure {
    let failure = failed(url)(error);
    match inbox.get(id).await {
        Ok(delivery) if delivery.summary.state == DeliveryState::Pending => {
            let summary = &delivery.summary;
            Failure::op(format!(
                "delivery {id} is pending already, nothing to {verb}: {} attempt(s) so far, the \
                 next one due {}",
                summary.attempts,
                time_ms(summary.next_attempt_at_ms)
            ))
        }
        _ => failure,
    }
}
