//! The `chip-gate-mock` binary: runs a local CHIP Gate until Ctrl-C or SIGTERM.
//!
//! Prints `CHIP_BASE_URL=...` on stdout once it listens, and `CHIP_API_KEY=...` when it chose the
//! key itself (no `--api-key` and no `CHIP_MOCK_API_KEY`); the lines can be `eval`ed or sourced by
//! a shell. Then it logs to stderr.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use chip_gate_mock::{
    DeliveryConfig, DeliveryFaults, Faults, Limits, MockConfig, MockServer, Variant,
};
use clap::Parser;

/// A local CHIP Gate: the CHIP Collect webhooks API in memory, and signed deliveries on demand.
#[derive(Debug, Parser)]
#[command(name = "chip-gate-mock", version)]
struct Args {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Address to listen on. On a loopback address (the default) requests whose Host is not
    /// localhost, 127.0.0.0/8 or [::1] are refused; any other address turns that check off.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// The API key to accept (Authorization: Bearer KEY) [default: a random key, printed once].
    #[arg(long, env = "CHIP_MOCK_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Webhooks per page of GET /webhooks/.
    #[arg(long, default_value_t = 20)]
    page_size: usize,
    /// Answer with the variations CHIP may send (relative page links, no `previous`, webhooks
    /// without the fields CHIP does not require, a bodiless 401) instead of as CHIP documents.
    #[arg(long)]
    variations: bool,
    /// The most webhooks stored at once; creates past it are refused with 400.
    #[arg(long, default_value_t = Limits::default().max_webhooks)]
    max_webhooks: usize,
    /// The most connections served at once; further ones wait to be accepted.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// The most events waiting or being delivered for one object; triggers past it get 429.
    #[arg(long, default_value_t = Limits::default().max_queued_per_object)]
    max_queued_per_object: usize,
    /// The most events waiting or being delivered in all; triggers past it get 429.
    #[arg(long, default_value_t = Limits::default().max_pending_deliveries)]
    max_pending_deliveries: usize,
    /// The most events waiting or being delivered for one webhook; a trigger that would put a
    /// subscribed webhook past it gets 429 (and no webhook receives that event).
    #[arg(long, default_value_t = Limits::default().max_pending_per_webhook)]
    max_pending_per_webhook: usize,
    /// The most delivery attempts (outbound requests) in progress at once; further attempts wait
    /// for a slot.
    #[arg(long, default_value_t = Limits::default().max_outbound_requests)]
    max_outbound_requests: usize,
    /// The most bytes read from each callback's answer.
    #[arg(long, default_value_t = Limits::default().callback_read_bytes)]
    callback_read_bytes: usize,
    /// Share of API requests answered with --error-status (0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// The status used by --error-rate.
    #[arg(long, default_value_t = 503)]
    error_status: u16,
    /// Share of API requests answered 429 with Retry-After.
    #[arg(long, default_value_t = 0.0)]
    too_many_rate: f64,
    /// Retry-After seconds on injected 429s.
    #[arg(long, default_value_t = 1)]
    retry_after_secs: u64,
    /// Share of API requests whose connection is closed without an answer.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Milliseconds added to every API request.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Seed for the random faults (reproducible runs).
    #[arg(long)]
    seed: Option<u64>,
    /// The most delivery attempts kept in the log (GET /__mock/deliveries).
    #[arg(long, default_value_t = Limits::default().delivery_log)]
    delivery_log: usize,
    /// Share of acknowledged deliveries treated as unacknowledged, so they are delivered again
    /// (injected duplicates, 0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    duplicate_rate: f64,
    /// Share of events held back for --hold-back-ms before their first attempt, so later events
    /// of the same object may arrive first (injected reordering, 0.0 to 1.0).
    #[arg(long, default_value_t = 0.0)]
    reorder_rate: f64,
    /// How long --reorder-rate holds an event back, in milliseconds.
    #[arg(long, default_value_t = 500)]
    hold_back_ms: u64,
    /// Delivery attempts per event and webhook, the first included.
    #[arg(long, default_value_t = 5)]
    max_attempts: u32,
    /// Milliseconds before the first retry; later gaps double.
    #[arg(long, default_value_t = 100)]
    backoff_base_ms: u64,
    /// Longest gap between retries, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    backoff_cap_ms: u64,
    /// Timeout of one delivery attempt, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    delivery_timeout_ms: u64,
    /// Reuse the 16 pre-made keys round-robin instead of generating a key per webhook after them.
    #[arg(long)]
    reuse_keys: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let chose_key = args.api_key.is_none();
    let config = MockConfig {
        api_key: args.api_key.unwrap_or_else(chip_gate_mock::random_api_key),
        bind: args.bind,
        port: args.port,
        page_size: args.page_size,
        variant: if args.variations {
            Variant::Variations
        } else {
            Variant::Documented
        },
        limits: Limits {
            max_webhooks: args.max_webhooks,
            max_connections: args.max_connections,
            max_queued_per_object: args.max_queued_per_object,
            max_pending_deliveries: args.max_pending_deliveries,
            max_pending_per_webhook: args.max_pending_per_webhook,
            max_outbound_requests: args.max_outbound_requests,
            callback_read_bytes: args.callback_read_bytes,
            delivery_log: args.delivery_log,
        },
        delivery: DeliveryConfig {
            max_attempts: args.max_attempts,
            backoff_base: Duration::from_millis(args.backoff_base_ms),
            backoff_cap: Duration::from_millis(args.backoff_cap_ms),
            request_timeout: Duration::from_millis(args.delivery_timeout_ms),
        },
        faults: Faults {
            error_rate: args.error_rate,
            error_status: args.error_status,
            too_many_rate: args.too_many_rate,
            retry_after_secs: args.retry_after_secs,
            drop_rate: args.drop_rate,
            latency: Duration::from_millis(args.latency_ms),
            seed: args.seed,
            script: Vec::new(),
        },
        delivery_faults: DeliveryFaults {
            duplicate_rate: args.duplicate_rate,
            reorder_rate: args.reorder_rate,
            hold_back: Duration::from_millis(args.hold_back_ms),
            seed: args.seed,
        },
        generate_keys: !args.reuse_keys,
    };
    let mock = match MockServer::start(config).await {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("chip-gate-mock: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        // The key is printed only when the mock chose it: a key the user gave stays out of
        // terminals and logs.
        let printed = writeln!(out, "CHIP_BASE_URL={}", mock.base_url())
            .and_then(|()| {
                if chose_key {
                    writeln!(out, "CHIP_API_KEY={}", mock.api_key())
                } else {
                    Ok(())
                }
            })
            .and_then(|()| out.flush());
        if let Err(e) = printed {
            eprintln!("chip-gate-mock: cannot write to stdout: {e}");
            return ExitCode::FAILURE;
        }
    }
    wait_for_signal().await;
    tracing::info!("shutting down");
    mock.shutdown().await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
