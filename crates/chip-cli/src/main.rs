//! `chip`: manage CHIP webhooks, verify deliveries, and run a local CHIP Gate to develop against.
//!
//! Every failure is one line on stderr and a non-zero exit; the API key is never printed.

mod listen;
mod mock;
mod output;
mod verify;
mod webhooks;

use std::fmt;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The command line.
#[derive(Parser)]
#[command(
    name = "chip",
    version,
    about = "Manage CHIP webhooks, verify signed deliveries, and develop against a local CHIP Gate",
    after_help = "The API key and base URL come from --api-key / --base-url or from CHIP_API_KEY / \
                  CHIP_BASE_URL. Start a local CHIP Gate with `chip mock`."
)]
struct Cli {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: Command,
}

/// How to reach CHIP (or the mock).
#[derive(clap::Args, Clone)]
pub struct ApiArgs {
    /// The secret API key
    #[arg(long, global = true, env = "CHIP_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The API base URL [default: CHIP's; a local mock prints its own]
    #[arg(long, global = true, env = "CHIP_BASE_URL")]
    pub base_url: Option<String>,
}

impl fmt::Debug for ApiArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiArgs")
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("base_url", &self.base_url)
            .finish()
    }
}

#[derive(Subcommand)]
enum Command {
    /// Create, list, show, change and delete webhooks.
    #[command(subcommand)]
    Webhooks(webhooks::WebhooksCommand),
    /// Print the company public key (it verifies purchase success callbacks) as PEM.
    PublicKey,
    /// Verify a delivery's X-Signature: prints `valid` (exit 0) or `invalid: <reason>` (exit 1).
    Verify(verify::VerifyArgs),
    /// Run a local CHIP Gate in the foreground and print how to use it.
    Mock(mock::MockArgs),
    /// Ask a running local CHIP Gate to fire an event at its subscribed webhooks.
    Trigger(mock::TriggerArgs),
    /// Receive deliveries locally: verify each one and print a line per delivery.
    Listen(listen::ListenArgs),
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit code: 1 for a failed operation, 2 for bad usage or an unusable input.
    pub code: u8,
    /// One line, printed after `error: `.
    pub message: String,
}

impl Failure {
    /// A failed operation (exit 1).
    pub fn op(message: impl fmt::Display) -> Self {
        Failure {
            code: 1,
            message: message.to_string(),
        }
    }

    /// Bad usage or unusable input (exit 2).
    pub fn usage(message: impl fmt::Display) -> Self {
        Failure {
            code: 2,
            message: message.to_string(),
        }
    }
}

impl From<chip_gate::Error> for Failure {
    fn from(error: chip_gate::Error) -> Self {
        Failure::op(error)
    }
}

/// What a command does when it succeeds: the exit code (0, or 1 for `verify` saying invalid).
pub type Outcome = Result<u8, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Webhooks(command) => webhooks::run(&cli.api, command).await,
            Command::PublicKey => webhooks::public_key(&cli.api).await,
            Command::Verify(args) => verify::run(&args),
            Command::Mock(args) => mock::run(args).await,
            Command::Trigger(args) => mock::trigger(&cli.api, args).await,
            Command::Listen(args) => listen::run(&cli.api, args).await,
        }
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failure) => {
            let line = failure.message.replace(['\n', '\r'], " ");
            eprintln!("error: {line}");
            ExitCode::from(failure.code.max(1))
        }
    }
}

/// Builds the API client from the flags or the environment.
pub fn client(api: &ApiArgs) -> Result<chip_gate::Client, Failure> {
    let key = api
        .api_key
        .clone()
        .filter(|k| !k.trim().is_empty())
        .ok_or_else(|| {
            Failure::usage(
                "no API key: pass --api-key or set CHIP_API_KEY (`chip mock` prints one)",
            )
        })?;
    let mut builder = chip_gate::Client::builder(key);
    if let Some(url) = &api.base_url {
        builder = builder.base_url(url.clone());
    }
    builder.build().map_err(Failure::usage)
}
