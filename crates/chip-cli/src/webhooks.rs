//! `chip webhooks ...` and `chip public-key`.

use chip_gate::{EventName, NewWebhook, Webhook, WebhookChanges};
use clap::{Args, Subcommand};
use futures::TryStreamExt;
use uuid::Uuid;

use crate::common::{ApiArgs, Failure, Outcome, client};
use crate::term::clean_lines;
use crate::{outln, output};

/// The webhook subcommands.
#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// List webhooks (the first page, or every page with --all).
    List {
        /// Follow `next` through every page.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one webhook.
    Get {
        /// The webhook's id.
        id: Uuid,
        /// Print JSON.
        #[arg(long, conflicts_with = "public_key")]
        json: bool,
        /// Print only the webhook's public key, as PEM (for `chip verify --key`).
        #[arg(long)]
        public_key: bool,
    },
    /// Create a webhook and print it (only its id with --id-only).
    Create {
        #[command(flatten)]
        settings: Settings,
        /// Print JSON.
        #[arg(long, conflicts_with = "id_only")]
        json: bool,
        /// Print only the new webhook's id, e.g. `ID=$(chip webhooks create ... --id-only)`.
        #[arg(long, visible_alias = "quiet")]
        id_only: bool,
    },
    /// Replace a webhook's settings (PUT): give them all.
    Update {
        /// The webhook's id.
        id: Uuid,
        #[command(flatten)]
        settings: Settings,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change some of a webhook's settings (PATCH): only what you give changes.
    Patch {
        /// The webhook's id.
        id: Uuid,
        /// A new title (at most 100 characters).
        #[arg(long)]
        title: Option<String>,
        /// A new callback URL.
        #[arg(long)]
        callback: Option<String>,
        /// The new set of events (repeat the flag for several).
        #[arg(long = "event", value_name = "EVENT", value_parser = parse_event)]
        events: Vec<EventName>,
        /// Deliver every event, present and future.
        #[arg(long, conflicts_with = "no_all_events")]
        all_events: bool,
        /// Deliver only the listed events (turns --all-events off).
        #[arg(long)]
        no_all_events: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a webhook.
    Delete {
        /// The webhook's id.
        id: Uuid,
    },
    /// Show what `apply` would change to make the account match a webhook file (no change is
    /// made).
    Plan(crate::plan::PlanArgs),
    /// Make the account match a webhook file: show the plan, ask, apply it step by step, check.
    /// Exits 0 only when the account matches the file afterwards.
    Apply(crate::plan::ApplyArgs),
}

/// The settings of a webhook, as create and update take them.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["events", "all_events"]))]
pub struct Settings {
    /// A name for the webhook (at most 100 characters).
    #[arg(long)]
    title: String,
    /// The URL CHIP POSTs deliveries to.
    #[arg(long)]
    callback: String,
    /// An event to deliver; repeat the flag for several.
    #[arg(long = "event", value_name = "EVENT", value_parser = parse_event)]
    events: Vec<EventName>,
    /// Deliver every event, present and future.
    #[arg(long)]
    all_events: bool,
}

/// Parses one of CHIP's 29 event names; anything else is a usage error that lists them.
pub fn parse_event(text: &str) -> Result<EventName, String> {
    let event = EventName::from(text);
    if event.is_known() {
        Ok(event)
    } else {
        let known: Vec<&str> = EventName::ALL.iter().map(EventName::as_str).collect();
        Err(format!(
            "unknown event name; CHIP's are: {}",
            known.join(", ")
        ))
    }
}

impl Settings {
    fn to_new(&self) -> Result<NewWebhook, Failure> {
        let builder = NewWebhook::builder(self.title.clone(), self.callback.clone());
        let new = if self.all_events {
            builder.all_events()
        } else {
            builder.events(self.events.clone())
        };
        new.map_err(Failure::usage)
    }
}

fn show(webhook: &Webhook, json: bool) -> Result<(), Failure> {
    if json {
        output::json(webhook)
    } else {
        outln!("{}", output::details(webhook))
    }
}

/// Runs a webhook subcommand.
pub async fn run(api: &ApiArgs, command: WebhooksCommand) -> Outcome {
    // The webhook file is read and checked before anything else (the client included).
    let command = match command {
        WebhooksCommand::Plan(args) => return crate::plan::plan(api, args).await,
        WebhooksCommand::Apply(args) => return crate::plan::apply(api, args).await,
        other => other,
    };
    let client = client(api)?;
    let webhooks = client.webhooks();
    match command {
        WebhooksCommand::List { all, json } => {
            let (items, more) = if all {
                (webhooks.list_all().try_collect::<Vec<_>>().await?, false)
            } else {
                let page = webhooks.list().await?;
                let more = page.next.is_some();
                (page.results, more)
            };
            if json {
                output::json(&items)?;
            } else if items.is_empty() {
                outln!("No webhooks.")?;
            } else {
                outln!("{}", output::table(&items))?;
                if more {
                    outln!("(more pages: add --all to list every webhook)")?;
                }
            }
        }
        WebhooksCommand::Get {
            id,
            json,
            public_key,
        } => {
            let webhook = webhooks.retrieve(id).await.map_err(Failure::from)?;
            if public_key {
                outln!("{}", clean_lines(webhook.public_key.trim_end()))?;
            } else {
                show(&webhook, json)?;
            }
        }
        WebhooksCommand::Create {
            settings,
            json,
            id_only,
        } => {
            let created = webhooks.create(&settings.to_new()?).await?;
            if id_only {
                outln!("{}", created.id)?;
            } else {
                if !json {
                    outln!("Created webhook {}.", created.id)?;
                }
                show(&created, json)?;
            }
        }
        WebhooksCommand::Update { id, settings, json } => {
            show(
                &webhooks
                    .update(id, &settings.to_new()?)
                    .await
                    .map_err(Failure::from)?,
                json,
            )?;
        }
        WebhooksCommand::Patch {
            id,
            title,
            callback,
            events,
            all_events,
            no_all_events,
            json,
        } => {
            let mut changes = WebhookChanges::new();
            if let Some(title) = title {
                changes = changes.title(title);
            }
            if let Some(callback) = callback {
                changes = changes.callback(callback);
            }
            if !events.is_empty() {
                changes = changes.events(events);
            }
            if all_events || no_all_events {
                changes = changes.all_events(all_events);
            }
            if changes.is_empty() {
                return Err(Failure::usage(
                    "nothing to change: give --title, --callback, --event, --all-events or \
                     --no-all-events",
                ));
            }
            changes.validate().map_err(Failure::usage)?;
            show(
                &webhooks
                    .partial_update(id, &changes)
                    .await
                    .map_err(Failure::from)?,
                json,
            )?;
        }
        WebhooksCommand::Delete { id } => {
            webhooks.delete(id).await.map_err(Failure::from)?;
            outln!("Deleted webhook {id}.")?;
        }
        WebhooksCommand::Plan(_) | WebhooksCommand::Apply(_) => {}
    }
    Ok(0)
}

/// `chip public-key`: the company key as PEM.
pub async fn public_key(api: &ApiArgs) -> Outcome {
    let pem = client(api)?.public_key().await?;
    outln!("{}", clean_lines(pem.trim_end()))?;
    Ok(0)
}
