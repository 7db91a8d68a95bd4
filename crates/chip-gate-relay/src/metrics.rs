//! The relay's own metrics, through the `metrics` facade (the inbox's and chip-gate's are there
//! too: see `chip_gate_inbox::metrics`).

/// Counter: deliveries sent to the app, by `outcome`: `delivered` (2xx), `refused` (another
/// status), `timeout`, `unreachable`.
pub const FORWARDED: &str = "chip_relay_forwarded_total";
/// Histogram: seconds from sending a delivery to the app's answer (or the failure).
pub const FORWARD_SECONDS: &str = "chip_relay_forward_seconds";
