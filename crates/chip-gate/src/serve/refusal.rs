//! Logging refused deliveries, with a rate limit.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::StatusCode;

use super::{REFUSED, lock};

/// How many refusal lines [`log_refusal`] writes per [`REFUSAL_WINDOW`] at most.
const REFUSALS_PER_WINDOW: u32 = 10;
/// The window of [`log_refusal`]'s rate limit.
const REFUSAL_WINDOW: Duration = Duration::from_secs(5);

/// The rate limit's state: the current window's start, lines written and lines held back.
static REFUSALS: Mutex<Option<(Instant, u32, u64)>> = Mutex::new(None);

/// Logs one refused delivery at `warn` level (target `chip_gate::refused`): the reason and the
/// caller's address, never the body or a key; `reason` is a short stable name (such as
/// [`VerifyError::reason`](crate::VerifyError::reason)), counted in `chip_gate_requests_refused_total`. At most 10 lines per 5 s; past that, one line says
/// how many were not logged. When the signature is well formed but matches no configured key, the
/// line adds the most common cause: the receiver holds the company key (`GET /public_key/`)
/// instead of the webhook's own `public_key`.
///
/// The extractor and `chip-gate-inbox`'s handler call it for every request they refuse; call it
/// from your own handler if you verify by hand.
pub fn log_refusal(
    peer: Option<SocketAddr>,
    reason: &'static str,
    detail: &dyn std::fmt::Display,
    status: StatusCode,
) {
    metrics::counter!(REFUSED, "reason" => reason).increment(1);
    let now = Instant::now();
    let held_back = {
        let mut state = lock(&REFUSALS);
        let (start, written, held) = state.get_or_insert((now, 0, 0));
        let mut report = None;
        if now.duration_since(*start) >= REFUSAL_WINDOW {
            if *held > 0 {
                report = Some(*held);
            }
            *start = now;
            *written = 0;
            *held = 0;
        }
        if *written >= REFUSALS_PER_WINDOW {
            *held += 1;
            return;
        }
        *written += 1;
        report
    };
    if let Some(count) = held_back {
        tracing::warn!(
            target: "chip_gate::refused",
            count,
            "{count} more refused deliveries were not logged in the last {} s",
            REFUSAL_WINDOW.as_secs()
        );
    }
    let peer = peer.map_or_else(|| "unknown".to_owned(), |peer| peer.to_string());
    let text = detail.to_string();
    if reason == "signature_mismatch" {
        tracing::warn!(
            target: "chip_gate::refused",
            %peer,
            status = status.as_u16(),
            reason,
            detail = %text,
            "delivery refused. If every delivery is refused, check the key: a webhook's deliveries \
             verify with that webhook's public_key (returned when it was created, or by \
             GET /webhooks/{{id}}/), not the company key of GET /public_key/"
        );
    } else {
        tracing::warn!(
            target: "chip_gate::refused",
            %peer,
            status = status.as_u16(),
            reason,
            detail = %text,
            "delivery refused"
        );
    }
}
