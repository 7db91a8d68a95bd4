//! `chip inbox ...`: look into and act on a durable inbox (`chip-gate-inbox`) by its database URL.
//!
//! The URL comes from `--database-url` or `CHIP_INBOX_DATABASE_URL` (empty means unset). A password
//! in it is never printed: every message shows the URL as `postgres://user:***@host/db`, and any
//! text that holds the password has it replaced by `***`.

mod init;
mod open;
mod purge;
mod requeue;
mod time;
mod url;
mod view;

use std::time::Duration;

use chip_gate_inbox::{DeliveryState, Inbox, ListFilter};
use clap::{Args, Subcommand, ValueEnum};

use crate::common::Outcome;

pub(crate) use self::time::parse_duration;
pub(crate) use self::url::DatabaseUrl;

/// The environment variable holding the inbox's database URL.
pub const DATABASE_URL_ENV: &str = "CHIP_INBOX_DATABASE_URL";

/// `chip inbox`.
#[derive(Args)]
pub struct InboxArgs {
    /// The inbox's database: `sqlite://PATH` or `postgres://USER@HOST/DB` [default:
    /// $CHIP_INBOX_DATABASE_URL]. A password here is visible to other users in `ps`: prefer the
    /// environment variable
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: InboxCommand,
}

/// The inbox subcommands.
#[derive(Subcommand)]
enum InboxCommand {
    /// Create the inbox database (a missing SQLite file) and its tables, or bring an older
    /// inbox's schema up to date, as a receiving app does when it starts; safe to run again.
    /// The other commands never create or change a schema.
    Init,
    /// Counts since the inbox was created (received, duplicates, stale, done, retried, dead) and
    /// what it holds now (pending, dead, the age of the oldest pending delivery).
    Status {
        /// Print JSON (times as Unix milliseconds).
        #[arg(long)]
        json: bool,
    },
    /// List stored deliveries, newest first, without their bodies.
    List {
        /// Only deliveries in this state.
        #[arg(long, value_enum)]
        state: Option<StateArg>,
        /// Only deliveries of this object (its CHIP id).
        #[arg(long, value_name = "OBJECT_ID")]
        object: Option<String>,
        /// Only deliveries with an id below this one (the next page: the last id shown).
        #[arg(long, value_name = "ID")]
        before: Option<i64>,
        /// At most this many (1 to 1000).
        #[arg(long, value_name = "N", default_value_t = 50,
              value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
        /// Print JSON (times as Unix milliseconds).
        #[arg(long)]
        json: bool,
    },
    /// Show one stored delivery: its metadata, and its body and signature with --body.
    Show {
        /// The delivery's id in the inbox (as `list` shows it).
        id: i64,
        /// Print JSON (times as Unix milliseconds; with --body the body as a JSON string).
        #[arg(long)]
        json: bool,
        /// Also print the signature and the body (deliveries carry customers' names, emails and
        /// bank details). Without --json, terminal control characters are removed from it.
        #[arg(long)]
        body: bool,
    },
    /// Make a dead delivery pending again, due now, with a fresh set of attempts.
    Retry {
        /// The delivery's id in the inbox.
        id: i64,
    },
    /// Hand a done, stale or dead delivery to the workers once more (past the stale check).
    Replay {
        /// The delivery's id in the inbox.
        id: i64,
    },
    /// Remove done and stale deliveries that finished more than DURATION ago. Dead and pending
    /// ones are never removed.
    Purge {
        /// The age: numbers with units (s, m, h, d, w; or spelled out, `36 hours`), e.g. `7d`,
        /// `48h`, `1d12h`.
        #[arg(long, value_name = "DURATION", value_parser = time::parse_duration)]
        older_than: Duration,
        /// Allow an age under 48 hours: a delivery removed before CHIP's last retry (up to 36
        /// hours) would be stored and handled again if CHIP sends it once more.
        #[arg(long)]
        force: bool,
    },
}

/// A delivery state, as `--state` takes it.
#[derive(Clone, Copy, ValueEnum)]
enum StateArg {
    /// Waiting to be handled, being handled, or waiting for a retry.
    Pending,
    /// Handled.
    Done,
    /// Older than a delivery of the same object already handled: not handed over.
    Stale,
    /// Failed every allowed attempt: kept until retried.
    Dead,
}

impl From<StateArg> for DeliveryState {
    fn from(state: StateArg) -> Self {
        match state {
            StateArg::Pending => DeliveryState::Pending,
            StateArg::Done => DeliveryState::Done,
            StateArg::Stale => DeliveryState::Stale,
            StateArg::Dead => DeliveryState::Dead,
        }
    }
}

/// Runs an inbox subcommand.
pub async fn run(args: InboxArgs) -> Outcome {
    // Usage problems (a bad duration is caught by clap) come before the database.
    if let InboxCommand::Purge { older_than, force } = &args.command {
        purge::check(*older_than, *force)?;
    }
    let url = url::database_url(args.database_url.as_deref())?;
    if let InboxCommand::Init = args.command {
        return init::init(&url).await;
    }
    let inbox = open::open(&url).await?;
    let outcome = command(&inbox, &url, args.command).await;
    inbox.close().await;
    outcome
}

async fn command(inbox: &Inbox, url: &DatabaseUrl, command: InboxCommand) -> Outcome {
    match command {
        // Answered by `run` before anything is opened.
        InboxCommand::Init => init::init(url).await,
        InboxCommand::Status { json } => view::status(inbox, url, json).await,
        InboxCommand::List {
            state,
            object,
            before,
            limit,
            json,
        } => {
            let mut filter = ListFilter::new().limit(limit);
            if let Some(state) = state {
                filter = filter.state(state.into());
            }
            if let Some(object) = object {
                filter = filter.object_id(object);
            }
            if let Some(before) = before {
                filter = filter.before_id(before);
            }
            view::list(inbox, url, &filter, limit, json).await
        }
        InboxCommand::Show { id, json, body } => view::show(inbox, url, id, json, body).await,
        InboxCommand::Retry { id } => requeue::retry(inbox, url, id).await,
        InboxCommand::Replay { id } => requeue::replay(inbox, url, id).await,
        InboxCommand::Purge { older_than, .. } => purge::purge(inbox, url, older_than).await,
    }
}
