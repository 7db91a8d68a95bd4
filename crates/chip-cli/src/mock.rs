//! `chip mock`: run the local CHIP Gate in the foreground until Ctrl-C or SIGTERM.

use std::time::Duration;

use chip_gate_mock::{DeliveryFaults, MockConfig, MockServer, Variant};
use clap::Args;

use crate::{Failure, Outcome, outln};

/// Arguments of `chip mock`.
#[derive(Args)]
pub struct MockArgs {
    /// The port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The API key the mock accepts [default: a random key, printed once]
    #[arg(long, value_name = "K")]
    api_key: Option<String>,
    /// Answer with the variations CHIP may send (relative page links, no `previous`, webhooks
    /// without the fields CHIP does not require, a bodiless 401) instead of as CHIP documents.
    #[arg(long)]
    variations: bool,
    /// Deliver again this share of the deliveries your receiver acknowledges, as CHIP does when it
    /// misses an acknowledgement (0.0 to 1.0): to see that your receiver handles each event once.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    duplicate_rate: f64,
    /// Hold back this share of events (0.0 to 1.0) for --hold-back-ms, so that an object's later
    /// events arrive first: to see that your receiver copes with states out of order.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    reorder_rate: f64,
    /// How long --reorder-rate holds an event back, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    hold_back_ms: u64,
}

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
        seed: None,
    };
    if let Err(why) = config.delivery_faults.validate() {
        // The library names its fields; say the flags instead.
        let why = why
            .replace("duplicate_rate", "--duplicate-rate")
            .replace("reorder_rate", "--reorder-rate")
            .replace("hold_back", "--hold-back-ms");
        return Err(Failure::usage(why));
    }
    let faults = describe_faults(&config.delivery_faults);
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

fn percent(rate: f64) -> String {
    let text = format!("{:.1}", rate * 100.0);
    text.strip_suffix(".0").map_or(text.clone(), str::to_owned)
}
