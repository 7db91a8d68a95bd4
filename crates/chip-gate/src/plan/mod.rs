//! Webhooks as code: describe the webhooks an account should have in a TOML file, see what would
//! change ([`plan()`]), then make it so ([`apply()`]), as Terraform does for infrastructure.
//!
//! # The file
//!
//! ```toml
//! # chip-webhooks.toml: one file for every environment.
//! vars = ["SHOP_ENV", "SHOP_HOST"]        # the only environment variables ${...} may read
//!
//! [[webhook]]
//! title = "Orders (${SHOP_ENV})"          # the identity of the webhook: unique in the file
//! callback = "https://${SHOP_HOST}/chip/webhook"
//! events = ["purchase.paid", "payment.refunded"]
//!
//! [[webhook]]
//! title = "Audit log (${SHOP_ENV})"
//! callback = "https://${SHOP_HOST}/chip/audit"
//! all_events = true                       # every event, present and future
//! ```
//!
//! | key | where | meaning |
//! |---|---|---|
//! | `vars` | top level, before the first `[[webhook]]` | the environment variables the file reads, by name |
//! | `[[webhook]]` | top level, repeated | one webhook the account should have |
//! | `title` | webhook, required | its name, at most 100 characters, not blank; **the identity**: the account's webhook with exactly this title is this webhook, so titles are unique in the file |
//! | `callback` | webhook, required | an `http(s)://` URL, at most 500 characters |
//! | `events` | webhook | CHIP's event names, at least one, each once |
//! | `all_events` | webhook | `true` for every event (instead of `events`) |
//! | `allow_unknown_events` | top level, default `false` | accept event names this version does not know (CHIP added one) |
//!
//! # Variables
//!
//! Every string may use `${NAME}` (letters, digits and `_`); `$${` writes a literal `${`. A file
//! reads **only the variables it declares** in `vars`, or that the caller allows or sets with
//! [`LoadOptions`] (`chip webhooks plan --var NAME` or `--var NAME=VALUE`): a pipeline runs `plan`
//! with its secrets in the environment, and a file from a pull request must not be able to copy
//! one (`${AWS_SECRET_ACCESS_KEY}`) into a webhook, the plan output or the key bundle. An undeclared
//! `${NAME}`, or one that is unset or empty, is an error; `CHIP_API_KEY` cannot be declared or
//! allowed at all.
//!
//! After substitution, a title, callback or event name may not contain a control character (a
//! newline would forge lines of the plan output) or a bidirectional override, and, when the
//! caller says which API key is in use ([`LoadOptions::api_key`]; `chip` always does), may not
//! contain that key, whether it came from a variable exported under another name or was written
//! in the file. Errors never show the key.
//!
//! Every error in the file (TOML syntax, an unknown key, a missing or bad value, an unknown event,
//! a title used twice, an undeclared or unset variable) is reported with its line before any call
//! is made.
//!
//! # Plan and apply
//!
//! ```no_run
//! use chip_gate::Client;
//! use chip_gate::plan::{self, PlanOptions, WebhookFile};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::from_env()?;
//! let file = WebhookFile::load("chip-webhooks.toml")?;
//! let plan = plan::plan(&client, &file, &PlanOptions::new()).await?;
//! print!("{plan}");
//! let report = plan::apply(&client, &plan).await;
//! if let Some(error) = report.failure() {
//!     eprintln!("stopped: {error}; run it again, it picks up where it stopped");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Safety rules, all enforced by the types (a [`Plan`] can only be made by [`plan()`] or
//! [`Plan::compute`]):
//!
//! - A webhook whose title is not in the file is never touched, unless pruning is on
//!   ([`PlanOptions::prune`]) *and* its title starts with a prefix given to
//!   [`PlanOptions::prune_prefix`].
//! - Several webhooks on the account with one title of the file are reported
//!   ([`Plan::duplicates`]); with pruning on, all but one are deleted (the one that already matches
//!   the file, else the oldest).
//! - Updates are `PUT`s of the whole webhook, so an update that was interrupted is simply made again.
//! - A second apply with nothing changed makes no write call: [`Plan::is_empty`].
//! - An apply stops at its first failed step. Running plan and apply again converges: a create
//!   whose answer was lost is found by its title on the next listing, and is not created twice.
//!
//! Two applies must not run against one account at the same time (a deploy pipeline runs one
//! at a time); each plan is made from one listing of the account.

// One job per file: `file` reads a webhook file and `vars` its `${NAME}` variables; `compute`
// diffs it against the account; `render` prints the plan; `keys` writes the key bundle; `apply`
// makes the changes.
mod apply;
mod compute;
mod file;
mod keys;
mod render;
mod vars;

pub use apply::{ApplyReport, Step, StepOutcome, apply, apply_with_progress};
pub use compute::{
    AccountWebhook, Change, DeleteReason, Duplicate, FieldChange, Plan, PlanOptions, plan,
};
pub use file::{DesiredWebhook, FileError, MAX_FILE_BYTES, WebhookFile};
pub use keys::key_bundle;
pub use vars::LoadOptions;
