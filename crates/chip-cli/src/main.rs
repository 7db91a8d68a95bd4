//! `chip`: manage CHIP webhooks, verify deliveries, and run a local CHIP Gate to develop against.
//!
//! Every failure is one line on stderr and a non-zero exit; the API key is never printed.

mod common;
mod files;
mod http;
mod inbox;
mod input;
mod listen;
mod mock;
mod output;
mod plan;
mod relay;
mod term;
mod trigger;
mod verify;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::common::{ApiArgs, Failure};

/// The command line.
#[derive(Parser)]
#[command(
    name = "chip",
    version,
    about = "Manage CHIP webhooks, verify signed deliveries, and develop against a local CHIP Gate",
    after_help = "The commands that talk to CHIP (webhooks, public-key, trigger, listen --webhook) \
                  take the API key from CHIP_API_KEY, --api-key-file or --api-key, and the base \
                  URL from --base-url or CHIP_BASE_URL (empty means unset); see their --help. \
                  Start a local CHIP Gate with `chip mock`."
)]
struct Cli {
    #[command(flatten)]
    before: ApiArgsBefore,
    #[command(subcommand)]
    command: Command,
}

/// as earlier versions took them: still accepted, not shown in `--help`, and refused before a
/// subcommand they do not apply to. Given after it as well, the subcommand's win.
#[derive(clap::Args, Clone, Default)]
struct ApiArgsBefore {
    #[arg(
        long = "api-key",
        id = "before_api_key",
        hide = true,
        conflicts_with = "before_api_key_file"
    )]
    api_key: Option<String>,
    #[arg(long = "api-key-file", id = "before_api_key_file", hide = true)]
    api_key_file: Option<PathBuf>,
    #[arg(long = "base-url", id = "before_base_url", hide = true)]
    base_url: Option<String>,
}

impl ApiArgsBefore {
    fn given(&self) -> bool {
        self.api_key.is_some() || self.api_key_file.is_some() || self.base_url.is_some()
    }

    /// `after` (the subcommand's own options), completed with these.
    fn under(self, after: ApiArgs) -> ApiArgs {
        let key_after = after.api_key.is_some() || after.api_key_file.is_some();
        ApiArgs {
            api_key: if key_after {
                after.api_key
            } else {
                self.api_key
            },
            api_key_file: if key_after {
                after.api_key_file
            } else {
                self.api_key_file
            },
            base_url: after.base_url.or(self.base_url),
        }
    }

    /// Refuses these options before `command`, which does not talk to CHIP.
    fn refuse_for(&self, command: &str) -> Result<(), Failure> {
        if self.given() {
            return Err(Failure::usage(format!(
                "--api-key, --api-key-file and --base-url do not apply to `chip {command}`, which \
                 does not talk to CHIP; leave them out"
            )));
        }
        Ok(())
    }
}

/// A command that talks to CHIP and has no other options.
#[derive(clap::Args)]
struct ConnectionOnly {
    #[command(flatten)]
    api: ApiArgs,
}

/// `chip webhooks`: the connection options, then a subcommand.
#[derive(clap::Args)]
struct WebhooksArgs {
    #[command(flatten)]
    api: ApiArgs,
    #[command(subcommand)]
    command: webhooks::WebhooksCommand,
}

/// `chip trigger`: its arguments and the connection options.
#[derive(clap::Args)]
struct TriggerCommand {
    #[command(flatten)]
    args: trigger::TriggerArgs,
    #[command(flatten)]
    api: ApiArgs,
}

/// `chip listen`: its arguments and the connection options (used with --webhook).
#[derive(clap::Args)]
struct ListenCommand {
    #[command(flatten)]
    args: listen::ListenArgs,
    #[command(flatten)]
    api: ApiArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Create, list, show, change and delete webhooks.
    Webhooks(WebhooksArgs),
    /// Print the company public key as PEM (for purchase success callbacks).
    ///
    /// This key verifies purchase success callbacks, not a webhook's deliveries: those verify with
    /// the webhook's own key (`chip webhooks get ID --public-key`).
    PublicKey(ConnectionOnly),
    /// Verify a delivery's X-Signature: prints `valid` (exit 0) or `invalid: <reason>` (exit 1).
    Verify(verify::VerifyArgs),
    /// Run a local CHIP Gate in the foreground and print how to use it.
    Mock(mock::MockArgs),
    /// Ask a running local CHIP Gate to fire an event at its subscribed webhooks.
    Trigger(TriggerCommand),
    /// Receive deliveries locally: verify each one and print a line per delivery.
    Listen(ListenCommand),
    /// Look into and act on a durable inbox (chip-gate-inbox) by its database URL.
    Inbox(inbox::InboxArgs),
    /// Receive CHIP's deliveries durably and forward each to your app, signed with Standard
    /// Webhooks: in order per object, retried until the app answers 2xx.
    Relay(relay::RelayArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // As `error.exit()`, except that under `plan --detailed-exitcode` a usage error is 1:
            // there 2 means "the account differs from the file".
            let _ = error.print();
            let code = u8::try_from(error.exit_code()).unwrap_or(2);
            let detailed = std::env::args_os().any(|a| a == "--detailed-exitcode");
            return ExitCode::from(if detailed && code == 2 { 1 } else { code });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            term::warn_line(format_args!("error: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let before = cli.before;
    let outcome = runtime.block_on(async move {
        match cli.command {
            Command::Webhooks(w) => webhooks::run(&before.under(w.api), w.command).await,
            Command::PublicKey(c) => webhooks::public_key(&before.under(c.api)).await,
            Command::Verify(args) => match before.refuse_for("verify") {
                Ok(()) => verify::run(&args),
                Err(failure) => Err(failure),
            },
            Command::Mock(args) => match before.refuse_for("mock") {
                Ok(()) => mock::run(args).await,
                Err(failure) => Err(failure),
            },
            Command::Trigger(t) => trigger::run(&before.under(t.api), t.args).await,
            Command::Listen(l) => listen::run(&before.under(l.api), l.args).await,
            Command::Inbox(args) => match before.refuse_for("inbox") {
                Ok(()) => inbox::run(args).await,
                Err(failure) => Err(failure),
            },
            Command::Relay(args) => match before.refuse_for("relay") {
                Ok(()) => relay::run(args).await,
                Err(failure) => Err(failure),
            },
        }
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(failure) if failure.quiet => ExitCode::from(failure.code),
        Err(failure) => {
            term::warn_line(format_args!("error: {}", term::clean(&failure.message)));
            ExitCode::from(failure.code.max(1))
        }
    }
}
