//! `chip mock`: run the local CHIP Gate in the foreground until Ctrl-C or SIGTERM.

use chip_gate_mock::{MockConfig, MockServer, Variant};
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
