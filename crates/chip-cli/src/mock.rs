//! `chip mock`: run the local CHIP Gate in the foreground until Ctrl-C or SIGTERM.

use std::time::Duration;

use chip_gate_mock::{DeliveryFaults, Faults, MockConfig, MockServer, Variant};
use clap::Args;

use crate::common::{Failure, Outcome};
use crate::outln;

/// Arguments of `chip mock`.
#[derive(Args)]
pub struct MockArgs {
    /// The port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The API key the mock accepts [default: a new random key at every start, printed once].
    /// Give one to keep it across restarts (and export it as CHIP_API_KEY where you call the mock)
    #[arg(long, value_name = "K")]
    api_key: Option<String>,
    /// Answer with the variations CHIP may send (relative page links, no `previous`, webhooks
    /// without the fields CHIP does not require, a bodiless 401) instead of as CHIP documents.
    #[arg(long)]
    variations: bool,
    /// Deliver again this share of the deliveries your receiver acknowledges, as CHIP does when it
    /// misses an acknowledgement (0.0 to 1.0): to see that your receiver handles each event once.
    #[arg(long, value_name = "F", default_value_t = 0.0, help_heading = DELIVERY_FAULTS)]
    duplicate_rate: f64,
    /// Hold back this share of events (0.0 to 1.0) for --hold-back-ms, so that an object's later
    /// events arrive first: to see that your receiver copes with states out of order.
    #[arg(long, value_name = "F", default_value_t = 0.0, help_heading = DELIVERY_FAULTS)]
    reorder_rate: f64,
    /// How long --reorder-rate holds an event back, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500, help_heading = DELIVERY_FAULTS)]
    hold_back_ms: u64,
    /// Answer this share of API requests (0.0 to 1.0) with --error-status: to see that your
    /// client retries what it may and reports the rest.
    #[arg(long, value_name = "F", default_value_t = 0.0, help_heading = API_FAULTS)]
    error_rate: f64,
    /// The status --error-rate answers with.
    #[arg(long, value_name = "STATUS", default_value_t = 503, help_heading = API_FAULTS)]
    error_status: u16,
    /// Answer this share of API requests (0.0 to 1.0) 429 with a Retry-After of
    /// --retry-after-secs.
    #[arg(long, value_name = "F", default_value_t = 0.0, help_heading = API_FAULTS)]
    too_many_rate: f64,
    /// The Retry-After, in seconds, of the 429s of --too-many-rate.
    #[arg(long, value_name = "S", default_value_t = 1, help_heading = API_FAULTS)]
    retry_after_secs: u64,
    /// Close the connection of this share of API requests (0.0 to 1.0) without an answer.
    #[arg(long, value_name = "F", default_value_t = 0.0, help_heading = API_FAULTS)]
    drop_rate: f64,
    /// Milliseconds added to every API request.
    #[arg(long, value_name = "MS", default_value_t = 0, help_heading = API_FAULTS)]
    latency_ms: u64,
    /// The seed of the random faults (API and delivery), for a run that can be repeated.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
}

/// The heading of the faults in what the receiver gets.
const DELIVERY_FAULTS: &str = "Delivery faults (what your receiver gets)";
/// The heading of the faults in the API's answers.
const API_FAULTS: &str = "API faults (what your client gets)";

/// Runs the mock in the foreground until Ctrl-C.
pub async fn run(args: MockArgs) -> Outcome {
    let mut config = MockConfig {
        port: args.port,
        ..MockConfig::default()
    };
    if args.variations {
        config.variant = Variant::Variations;
    }
    config.delivery_faults = DeliveryFaults {
        duplicate_rate: args.duplicate_rate,
        reorder_rate: args.reorder_rate,
        hold_back: Duration::from_millis(args.hold_back_ms),
        seed: args.seed,
    };
    config.faults = Faults {
        error_rate: args.error_rate,
        error_status: args.error_status,
        too_many_rate: args.too_many_rate,
        retry_after_secs: args.retry_after_secs,
        drop_rate: args.drop_rate,
        latency: Duration::from_millis(args.latency_ms),
        seed: args.seed,
        script: Vec::new(),
    };
    if let Err(why) = config
        .delivery_faults
        .validate()
        .and_then(|()| config.faults.validate())
    {
        // The library names its fields; say the flags instead.
        let why = why
            .replace("duplicate_rate", "--duplicate-rate")
            .replace("reorder_rate", "--reorder-rate")
            .replace("hold_back", "--hold-back-ms")
            .replace("error_rate", "--error-rate")
            .replace("error_status", "--error-status")
            .replace("too_many_rate", "--too-many-rate")
            .replace("retry_after_secs", "--retry-after-secs")
            .replace("drop_rate", "--drop-rate")
            .replace("latency", "--latency-ms");
        return Err(Failure::usage(why));
    }
    let faults = describe_faults(&config.delivery_faults);
    let api_faults = describe_api_faults(&config.faults);
    // The default key is random per run; a key the user gave is never printed.
    let chose_key = args.api_key.is_none();
    if let Some(key) = args.api_key {
        config.api_key = key;
    }
    let server = MockServer::start(config)
        .await
        .map_err(|e| Failure::op(format!("cannot start the mock: {e}")))?;
    let flavour = if args.variations {
        " (answering with CHIP's variations)"
    } else {
        ""
    };
    // Installed before the first line is printed, so a signal right after it is never missed.
    let stop = crate::listen::stop_signal();
    outln!("Local CHIP Gate running at {}{flavour}", server.base_url())?;
    if let Some(faults) = faults {
        outln!("{faults}")?;
    }
    if let Some(faults) = api_faults {
        outln!("{faults}")?;
    }
    outln!("Use it from another shell:")?;
    outln!("  export CHIP_BASE_URL={}", server.base_url())?;
    if chose_key {
        outln!("  export CHIP_API_KEY={}", server.api_key())?;
    } else {
        outln!("  export CHIP_API_KEY=<the key you passed with --api-key>")?;
    }
    outln!("Press Ctrl-C to stop.")?;
    stop.await;
    server.shutdown().await;
    Ok(0)
}

/// One line saying which delivery faults are on, or `None` when none is.
fn describe_faults(faults: &DeliveryFaults) -> Option<String> {
    let mut parts = Vec::new();
    if faults.duplicate_rate > 0.0 {
        parts.push(format!(
            "{}% of acknowledged deliveries are sent again",
            percent(faults.duplicate_rate)
        ));
    }
    if faults.reorder_rate > 0.0 {
        parts.push(format!(
            "{}% of events are held back {} ms",
            percent(faults.reorder_rate),
            faults.hold_back.as_millis()
        ));
    }
    (!parts.is_empty()).then(|| format!("Delivery faults: {}.", parts.join("; ")))
}

/// One line saying which API faults are on, or `None` when none is.
fn describe_api_faults(faults: &Faults) -> Option<String> {
    let mut parts = Vec::new();
    if faults.error_rate > 0.0 {
        parts.push(format!(
            "{}% of API requests are answered {}",
            percent(faults.error_rate),
            faults.error_status
        ));
    }
    if faults.too_many_rate > 0.0 {
        parts.push(format!(
            "{}% are answered 429 (Retry-After: {})",
            percent(faults.too_many_rate),
            faults.retry_after_secs
        ));
    }
    if faults.drop_rate > 0.0 {
        parts.push(format!(
            "{}% are dropped unanswered",
            percent(faults.drop_rate)
        ));
    }
    if !faults.latency.is_zero() {
        parts.push(format!(
            "every request waits {} ms",
            faults.latency.as_millis()
        ));
    }
    (!parts.is_empty()).then(|| format!("API faults: {}.", parts.join("; ")))
}

fn percent(rate: f64) -> String {
    let text = format!("{:.1}", rate * 100.0);
    text.strip_suffix(".0").map_or(text.clone(), str::to_owned)
}
