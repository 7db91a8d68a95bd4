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

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use chip_gate_api::types;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use toml::Spanned;
use uuid::Uuid;

use crate::client::Client;
use crate::error::Error;
use crate::verify::{KeyError, VerificationKey};
use crate::webhooks::{MAX_CALLBACK_CHARS, MAX_TITLE_CHARS, NewWebhook};
use crate::{EventName, Webhook};

/// The largest webhook file [`WebhookFile::load`] reads.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The environment variable that is never interpolated into a file: the secret API key.
const FORBIDDEN_VARIABLE: &str = "CHIP_API_KEY";

// ---------------------------------------------------------------------------------------------
// How a file is read.

/// How a webhook file's `${NAME}` variables are read, and which secret they may never carry.
///
/// A file reads the variables it declares (`vars = [...]`); these options add names from the
/// caller (`chip`'s `--var NAME` and `--var NAME=VALUE`). Values set here win over the
/// environment. Its `Debug` never shows the API key.
///
/// ```
/// use chip_gate::plan::{LoadOptions, WebhookFile};
///
/// let text = r#"
/// [[webhook]]
/// title = "Orders (${SHOP_ENV})"
/// callback = "https://${SHOP_HOST}/chip"
/// all_events = true
/// "#;
/// let options = LoadOptions::new()
///     .var("SHOP_ENV", "staging")?       // a value, as --var SHOP_ENV=staging
///     .allow("SHOP_HOST")?               // from the environment, as --var SHOP_HOST
///     .api_key("sk_live_the_key_in_use"); // refused in every value
/// let env = |name: &str| (name == "SHOP_HOST").then(|| "shop.example.com".to_owned());
/// let file = WebhookFile::parse_with_options(text, &options, env).unwrap();
/// assert_eq!(file.webhooks()[0].title(), "Orders (staging)");
///
/// // Without them the file must declare what it reads.
/// let error = WebhookFile::parse_with(text, env).unwrap_err();
/// assert!(error.to_string().starts_with("line 3: ${SHOP_ENV} is not declared"));
/// # Ok::<(), chip_gate::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Names allowed by the caller; `Some` is a value that wins over the environment.
    vars: std::collections::BTreeMap<String, Option<String>>,
    api_key: Option<crate::ApiKey>,
}

impl LoadOptions {
    /// No variables beyond the file's own `vars`, and no API key to refuse.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets the file read `name` from the environment even if it does not declare it (`--var
    /// NAME`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `name` is not a variable name (letters, digits and `_`, not
    /// starting with a digit) or is `CHIP_API_KEY`.
    pub fn allow(mut self, name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        check_name(&name).map_err(Error::invalid)?;
        self.vars.entry(name).or_insert(None);
        Ok(self)
    }

    /// Sets `name` to `value` for the file, whether or not it declares it and whatever the
    /// environment says (`--var NAME=VALUE`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for a bad name (as [`allow`](Self::allow)).
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        check_name(&name).map_err(Error::invalid)?;
        self.vars.insert(name, Some(value.into()));
        Ok(self)
    }

    /// The API key in use: no variable's value, title, callback or event name of the file may
    /// contain it (errors say so without showing it). An empty key checks nothing.
    #[must_use]
    pub fn api_key(mut self, key: impl Into<crate::ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The key to refuse, when one was given and is not empty.
    fn secret(&self) -> Option<&str> {
        self.api_key
            .as_ref()
            .map(crate::ApiKey::expose)
            .filter(|k| !k.is_empty())
    }
}

/// Why `name` cannot be a variable of a file: not a name, or the API key's variable.
fn check_name(name: &str) -> Result<(), String> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "{:?} is not a variable name (letters, digits and _, not starting with a digit)",
            name.chars().take(64).collect::<String>()
        ));
    }
    if name == FORBIDDEN_VARIABLE {
        return Err(format!(
            "{FORBIDDEN_VARIABLE} is the secret API key: it never goes into a webhook"
        ));
    }
    Ok(())
}

/// Whether `c` may not appear in a title, callback or event name: a control character (a newline
/// forges lines of the plan output, ESC starts terminal sequences) or a bidirectional override or
/// isolate (it reorders what a reviewer sees).
fn is_forbidden_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Why `text` (a value after substitution) cannot go into a webhook: a forbidden character, or
/// the API key. `what` names it ("the title", "the value of SHOP_HOST").
fn check_text(what: &str, text: &str, options: &LoadOptions) -> Result<(), String> {
    if let Some(c) = text.chars().find(|&c| is_forbidden_char(c)) {
        return Err(format!(
            "{what} contains the control character U+{:04X}: titles, callbacks and event names are \
             one line of printable text",
            u32::from(c)
        ));
    }
    if options.secret().is_some_and(|key| text.contains(key)) {
        return Err(format!(
            "{what} contains the API key in use: the secret key never goes into a webhook (check \
             the file and the variables it reads)"
        ));
    }
    Ok(())
}

/// The variables a file may read: its own `vars`, then the caller's [`LoadOptions`], with the
/// environment (`lookup`) for names that have no value of their own.
struct Variables<'a, F> {
    declared: BTreeSet<String>,
    options: &'a LoadOptions,
    lookup: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Variables<'_, F> {
    /// The value of `${name}`, checked; the error is the message for the line.
    fn value(&self, name: &str) -> Result<String, String> {
        if name == FORBIDDEN_VARIABLE {
            return Err(format!(
                "${{{FORBIDDEN_VARIABLE}}} is the secret API key: it never goes into a webhook"
            ));
        }
        let value = match self.options.vars.get(name) {
            Some(Some(value)) if value.is_empty() => {
                return Err(format!("variable {name} is given an empty value"));
            }
            Some(Some(value)) => Some(value.clone()),
            Some(None) => (self.lookup)(name),
            None if self.declared.contains(name) => (self.lookup)(name),
            None => {
                return Err(format!(
                    "${{{name}}} is not declared: a webhook file reads only the variables it \
                     declares; add vars = [\"{name}\"] at the top of the file (with chip, or pass \
                     --var {name})"
                ));
            }
        };
        match value {
            None => Err(format!("environment variable {name} is not set")),
            Some(value) if value.is_empty() => Err(format!("environment variable {name} is empty")),
            Some(value) => {
                check_text(&format!("the value of {name}"), &value, self.options)?;
                Ok(value)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors in the file.

/// A problem with a webhook file, found before any call to CHIP: where it is and what is wrong.
///
/// Its `Display` is one line: `FILE:LINE: message` (or `line LINE: message` for text parsed without
/// a path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    path: Option<PathBuf>,
    line: Option<usize>,
    message: String,
}

impl FileError {
    fn at(line: Option<usize>, message: impl Into<String>) -> Self {
        FileError {
            path: None,
            line,
            message: message.into(),
        }
    }

    fn with_path(mut self, path: &Path) -> Self {
        self.path = Some(path.to_owned());
        self
    }

    /// The file, when it was read with [`WebhookFile::load`].
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The line (1-based) the problem is on, when it is on one.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// What is wrong, without the place.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.line) {
            (Some(path), Some(line)) => write!(f, "{}:{line}: {}", path.display(), self.message),
            (Some(path), None) => write!(f, "{}: {}", path.display(), self.message),
            (None, Some(line)) => write!(f, "line {line}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for FileError {}

// ---------------------------------------------------------------------------------------------
// The file.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    vars: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    allow_unknown_events: Option<bool>,
    #[serde(default)]
    webhook: Vec<Spanned<RawWebhook>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    title: Option<Spanned<String>>,
    callback: Option<Spanned<String>>,
    events: Option<Spanned<Vec<Spanned<String>>>>,
    all_events: Option<Spanned<bool>>,
}

/// One webhook the account should have: its settings, checked against CHIP's limits, and the line
/// of the file that declares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DesiredWebhook {
    title: String,
    callback: String,
    all_events: bool,
    #[serde(serialize_with = "event_strings")]
    events: Vec<EventName>,
    line: Option<usize>,
    #[serde(skip)]
    new: NewWebhook,
}

fn event_strings<S: serde::Serializer>(events: &[EventName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(events.iter().map(EventName::as_str))
}

impl DesiredWebhook {
    fn from_new(new: NewWebhook, line: Option<usize>) -> Self {
        DesiredWebhook {
            title: new.title().to_owned(),
            callback: new.callback().to_owned(),
            all_events: new.is_all_events(),
            events: new.event_names().map(<[_]>::to_vec).unwrap_or_default(),
            line,
            new,
        }
    }

    /// The title: the webhook's identity.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The callback URL.
    pub fn callback(&self) -> &str {
        &self.callback
    }

    /// Whether it receives every event.
    pub fn is_all_events(&self) -> bool {
        self.all_events
    }

    /// The events it receives (empty when it receives every event).
    pub fn event_names(&self) -> &[EventName] {
        &self.events
    }

    /// The line of the file that declares it (its `[[webhook]]` table), when it came from a file.
    pub fn line(&self) -> Option<usize> {
        self.line
    }

    /// The settings, as [`Webhooks::create`](crate::Webhooks::create) and
    /// [`Webhooks::update`](crate::Webhooks::update) take them.
    pub fn to_new_webhook(&self) -> &NewWebhook {
        &self.new
    }

    /// How `existing` differs from this webhook; empty when it matches. The title is the identity
    /// and is not compared; events are compared as a set.
    pub fn differences(&self, existing: &Webhook) -> Vec<FieldChange> {
        let mut changes = Vec::new();
        if existing.callback != self.callback {
            changes.push(FieldChange::Callback {
                from: existing.callback.clone(),
                to: self.callback.clone(),
            });
        }
        if existing.all_events != self.all_events {
            changes.push(FieldChange::AllEvents {
                from: existing.all_events,
                to: self.all_events,
            });
        }
        if !self.all_events {
            let have: BTreeSet<&str> = existing.event_names().iter().map(|e| e.as_str()).collect();
            let want: BTreeSet<&str> = self.events.iter().map(EventName::as_str).collect();
            let added: Vec<String> = self
                .events
                .iter()
                .map(EventName::as_str)
                .filter(|e| !have.contains(e))
                .map(str::to_owned)
                .collect();
            let mut seen = BTreeSet::new();
            let removed: Vec<String> = existing
                .event_names()
                .iter()
                .map(|e| e.as_str())
                .filter(|e| !want.contains(e) && seen.insert(*e))
                .map(str::to_owned)
                .collect();
            if !added.is_empty() || !removed.is_empty() {
                changes.push(FieldChange::Events { added, removed });
            }
        }
        changes
    }
}

/// The webhooks an account should have: a parsed, checked webhook file.
///
/// ```
/// use chip_gate::plan::WebhookFile;
///
/// let text = r#"vars = ["ENV"]
///
/// [[webhook]]
/// title = "Orders (${ENV})"
/// callback = "https://shop.example.com/chip"
/// events = ["purchase.paid"]
/// "#;
/// let file = WebhookFile::parse_with(text, |name| (name == "ENV").then(|| "live".to_owned()))?;
/// assert_eq!(file.webhooks()[0].title(), "Orders (live)");
///
/// let error = WebhookFile::parse_with(text, |_| None).unwrap_err();
/// assert_eq!(error.to_string(), "line 4: environment variable ENV is not set");
/// # Ok::<(), chip_gate::plan::FileError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookFile {
    webhooks: Vec<DesiredWebhook>,
}

impl WebhookFile {
    /// Reads and parses the file at `path` (at most [`MAX_FILE_BYTES`]), interpolating the
    /// variables it declares from the process environment. Errors name the file and the line.
    ///
    /// # Errors
    ///
    /// A [`FileError`] when the file cannot be read or is not a valid webhook file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, FileError> {
        Self::load_with(path, &LoadOptions::new())
    }

    /// [`load`](Self::load) with the caller's variables and the API key in use (see
    /// [`LoadOptions`]).
    ///
    /// # Errors
    ///
    /// A [`FileError`] when the file cannot be read or is not a valid webhook file.
    pub fn load_with(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Self, FileError> {
        let path = path.as_ref();
        let read = || -> Result<String, String> {
            let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
            let mut bytes = Vec::new();
            file.take(MAX_FILE_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("cannot read it: {e}"))?;
            if bytes.len() as u64 > MAX_FILE_BYTES {
                return Err(format!(
                    "larger than {} MiB; refusing to read it",
                    MAX_FILE_BYTES / (1024 * 1024)
                ));
            }
            String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())
        };
        let text = read().map_err(|message| FileError::at(None, message).with_path(path))?;
        Self::parse_with_options(&text, options, |name| std::env::var(name).ok())
            .map_err(|e| e.with_path(path))
    }

    /// Parses a webhook file, interpolating the variables it declares from the process
    /// environment.
    ///
    /// # Errors
    ///
    /// A [`FileError`] naming the line of the first problem.
    pub fn parse(text: &str) -> Result<Self, FileError> {
        Self::parse_with(text, |name| std::env::var(name).ok())
    }

    /// Parses a webhook file, interpolating the variables it declares with `lookup` (`None` means
    /// unset). `lookup` is never asked for a name the file does not declare.
    ///
    /// # Errors
    ///
    /// A [`FileError`] naming the line of the first problem.
    pub fn parse_with(
        text: &str,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, FileError> {
        Self::parse_with_options(text, &LoadOptions::new(), lookup)
    }

    /// Parses a webhook file with the caller's variables and API key ([`LoadOptions`]), reading
    /// the other variables the file declares, and those `options` allow, with `lookup`.
    ///
    /// # Errors
    ///
    /// A [`FileError`] naming the line of the first problem.
    pub fn parse_with_options(
        text: &str,
        options: &LoadOptions,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, FileError> {
        let lines = LineIndex::new(text);
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| lines.line(span.start));
            FileError::at(line, toml_message(e.message()))
        })?;
        let mut declared = BTreeSet::new();
        if let Some(vars) = &raw.vars {
            for name in vars.get_ref() {
                let line = lines.span(&name.span());
                check_name(name.get_ref())
                    .map_err(|m| FileError::at(line, format!("in vars: {m}")))?;
                if !declared.insert(name.get_ref().clone()) {
                    return Err(FileError::at(
                        line,
                        format!("variable {} is declared twice in vars", name.get_ref()),
                    ));
                }
            }
        }
        let variables = Variables {
            declared,
            options,
            lookup: &lookup,
        };
        let allow_unknown = raw.allow_unknown_events.unwrap_or(false);
        let mut webhooks: Vec<DesiredWebhook> = Vec::with_capacity(raw.webhook.len());
        let mut titles: HashMap<String, usize> = HashMap::new();
        for entry in raw.webhook {
            let entry_line = lines.line(entry.span().start);
            let desired = read_webhook(
                entry.into_inner(),
                entry_line,
                &lines,
                &variables,
                allow_unknown,
            )?;
            if let Some(first) = titles.get(&desired.title) {
                return Err(FileError::at(
                    desired.line,
                    format!(
                        "title {:?} is already used at line {first}: the title identifies a \
                         webhook, so each must be unique",
                        desired.title
                    ),
                ));
            }
            titles.insert(desired.title.clone(), desired.line.unwrap_or(entry_line));
            webhooks.push(desired);
        }
        Ok(WebhookFile { webhooks })
    }

    /// A file made in code: these webhooks, whose titles must be unique.
    ///
    /// # Errors
    ///
    /// A [`FileError`] when two webhooks share a title.
    pub fn from_webhooks(
        webhooks: impl IntoIterator<Item = NewWebhook>,
    ) -> Result<Self, FileError> {
        let mut out: Vec<DesiredWebhook> = Vec::new();
        for new in webhooks {
            if out.iter().any(|w| w.title == new.title()) {
                return Err(FileError::at(
                    None,
                    format!(
                        "title {:?} is used twice: the title identifies a webhook",
                        new.title()
                    ),
                ));
            }
            out.push(DesiredWebhook::from_new(new, None));
        }
        Ok(WebhookFile { webhooks: out })
    }

    /// The webhooks, in file order.
    pub fn webhooks(&self) -> &[DesiredWebhook] {
        &self.webhooks
    }

    /// The webhook with this title.
    pub fn get(&self, title: &str) -> Option<&DesiredWebhook> {
        self.webhooks.iter().find(|w| w.title == title)
    }
}

/// Byte offsets to 1-based line numbers.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn line(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    fn span(&self, span: &Range<usize>) -> Option<usize> {
        Some(self.line(span.start))
    }
}

/// The toml crate's message, on one line.
fn toml_message(message: &str) -> String {
    let flat: Vec<&str> = message.split_whitespace().collect();
    let flat = flat.join(" ");
    if flat.is_empty() {
        "not a valid TOML file".to_owned()
    } else if flat.contains("unknown field `vars`")
        || flat.contains("unknown field `allow_unknown_events`")
    {
        // TOML puts a key written after `[[webhook]]` into that webhook.
        format!(
            "{flat} (vars and allow_unknown_events go at the top, before the first [[webhook]])"
        )
    } else {
        flat
    }
}

fn read_webhook<F: Fn(&str) -> Option<String>>(
    raw: RawWebhook,
    entry_line: usize,
    lines: &LineIndex,
    variables: &Variables<'_, F>,
    allow_unknown: bool,
) -> Result<DesiredWebhook, FileError> {
    let at_entry = |message: String| FileError::at(Some(entry_line), message);
    // Substitutes, then checks the result as a whole: a forbidden character or the key may also
    // be written in the file itself.
    let expand = |value: &Spanned<String>, what: &str| -> Result<String, FileError> {
        let line = lines.span(&value.span());
        let text = interpolate(value.get_ref(), variables).map_err(|m| FileError::at(line, m))?;
        check_text(what, &text, variables.options).map_err(|m| FileError::at(line, m))?;
        Ok(text)
    };

    let Some(title_raw) = &raw.title else {
        return Err(at_entry(
            "this webhook has no title (the title identifies it)".into(),
        ));
    };
    let title_line = lines.span(&title_raw.span());
    let title = expand(title_raw, "the title")?;
    if title.trim().is_empty() {
        return Err(FileError::at(title_line, "the title is blank"));
    }
    if title.trim() != title {
        // A server that trims titles would store another title than the file's: the webhook
        // would never be found by its title again, and each apply would create one more.
        return Err(FileError::at(
            title_line,
            "the title starts or ends with whitespace; remove it (the title identifies the \
             webhook and must come back from CHIP exactly as written)",
        ));
    }
    let chars = title.chars().count();
    if chars > MAX_TITLE_CHARS {
        return Err(FileError::at(
            title_line,
            format!("the title is {chars} characters long; CHIP allows at most {MAX_TITLE_CHARS}"),
        ));
    }
    types::WebhookCreateTitle::try_from(title.as_str()).map_err(|e| {
        FileError::at(
            title_line,
            format!("the title is not accepted by CHIP: {e}"),
        )
    })?;

    let Some(callback_raw) = &raw.callback else {
        return Err(at_entry(format!("webhook {title:?} has no callback")));
    };
    let callback_line = lines.span(&callback_raw.span());
    let callback = expand(callback_raw, "the callback")?;
    let chars = callback.chars().count();
    if chars > MAX_CALLBACK_CHARS {
        return Err(FileError::at(
            callback_line,
            format!(
                "the callback is {chars} characters long; CHIP allows at most {MAX_CALLBACK_CHARS}"
            ),
        ));
    }
    types::WebhookCreateCallback::try_from(callback.as_str()).map_err(|_| {
        FileError::at(
            callback_line,
            "the callback must be an http:// or https:// URL with a host",
        )
    })?;

    let all_events = raw.all_events.as_ref().is_some_and(|a| *a.get_ref());
    let builder = NewWebhook::builder(title.clone(), callback.clone());
    let new = match (&raw.events, all_events) {
        (Some(events), true) => {
            return Err(FileError::at(
                lines.span(&events.span()),
                format!(
                    "webhook {title:?} sets both events and all_events = true: keep one of them"
                ),
            ));
        }
        (None, true) => builder.all_events(),
        (None, false) => {
            return Err(at_entry(format!(
                "webhook {title:?} has no events: list them (events = [\"purchase.paid\"]) or set \
                 all_events = true"
            )));
        }
        (Some(events), false) => {
            let events_line = lines.span(&events.span());
            if events.get_ref().is_empty() {
                return Err(FileError::at(
                    events_line,
                    "events is empty: list at least one event, or set all_events = true",
                ));
            }
            let mut names: Vec<EventName> = Vec::with_capacity(events.get_ref().len());
            for event in events.get_ref() {
                let line = lines.span(&event.span());
                let text = expand(event, "an event name")?;
                let name = EventName::from(text.as_str());
                if !name.is_known() && !allow_unknown {
                    return Err(FileError::at(line, unknown_event_message(&text)));
                }
                if text.trim().is_empty() {
                    return Err(FileError::at(line, "an event name is empty"));
                }
                if names.iter().any(|n| n.as_str() == text) {
                    return Err(FileError::at(
                        line,
                        format!("event {text:?} is listed twice"),
                    ));
                }
                names.push(name);
            }
            builder.events(names)
        }
    };
    // The builder names the field at fault ("callback: ..."): report it at that value's line.
    let new = new.map_err(|e| {
        let reason = invalid_reason(e);
        let line = if reason.starts_with("callback:") {
            callback_line
        } else if reason.starts_with("title:") {
            title_line
        } else if reason.starts_with("events:") {
            raw.events.as_ref().and_then(|e| lines.span(&e.span()))
        } else {
            None
        };
        FileError::at(line.or(Some(entry_line)), reason)
    })?;
    Ok(DesiredWebhook::from_new(new, Some(entry_line)))
}

fn invalid_reason(error: Error) -> String {
    match error {
        Error::InvalidRequest { reason } => reason,
        other => other.to_string(),
    }
}

fn unknown_event_message(text: &str) -> String {
    let suggestion = EventName::ALL
        .iter()
        .map(|e| (edit_distance(text, e.as_str()), e.as_str()))
        .min_by_key(|(d, _)| *d)
        .filter(|(d, _)| *d <= 3)
        .map(|(_, name)| format!(" (did you mean {name:?}?)"))
        .unwrap_or_default();
    format!(
        "unknown event name {text:?}{suggestion}; CHIP's names are listed in the README. If CHIP \
         added it after this version, set allow_unknown_events = true at the top of the file"
    )
}

/// Levenshtein distance, on characters; long inputs are cut (a suggestion, not a proof).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(128).collect();
    let b: Vec<char> = b.chars().take(128).collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let current = row[j + 1];
            row[j + 1] = if ca == cb {
                previous
            } else {
                1 + previous.min(row[j]).min(current)
            };
            previous = current;
        }
    }
    row[b.len()]
}

/// Replaces `${NAME}` with the variable's value; `$${` is a literal `${`.
fn interpolate<F: Fn(&str) -> Option<String>>(
    text: &str,
    variables: &Variables<'_, F>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err("`${` without a closing `}` (write `$${` for a literal `${`)".into());
            };
            let name = &body[..end];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "`${{{}}}` is not a variable name (letters, digits and _, not starting with a \
                     digit)",
                    name.chars().take(64).collect::<String>()
                ));
            }
            out.push_str(&variables.value(name)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The plan.

/// What [`plan()`] may delete. The default deletes nothing.
///
/// ```
/// use chip_gate::plan::PlanOptions;
///
/// // Delete extra copies of the file's titles, and webhooks titled "shop: ..." that the file no
/// // longer lists.
/// let options = PlanOptions::new().prune(true).prune_prefix("shop: ")?;
/// assert!(options.is_pruning());
/// assert!(PlanOptions::new().prune_prefix("  ").is_err()); // would match every webhook
/// # Ok::<(), chip_gate::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanOptions {
    prune: bool,
    prefixes: Vec<String>,
}

impl PlanOptions {
    /// Delete nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the plan may delete: extra webhooks that share a title of the file (all but one),
    /// and webhooks whose title starts with a [`prune_prefix`](Self::prune_prefix) and is not in the
    /// file. Other webhooks are never deleted.
    #[must_use]
    pub fn prune(mut self, prune: bool) -> Self {
        self.prune = prune;
        self
    }

    /// With [`prune`](Self::prune): the webhooks whose title starts with `prefix` belong to the file,
    /// so those it does not list are deleted. May be given several times.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for a blank prefix, which would match every webhook.
    pub fn prune_prefix(mut self, prefix: impl Into<String>) -> Result<Self, Error> {
        let prefix = prefix.into();
        if prefix.trim().is_empty() {
            return Err(Error::invalid(
                "a blank prune prefix would match every webhook on the account",
            ));
        }
        self.prefixes.push(prefix);
        Ok(self)
    }

    /// Whether deletes are allowed.
    pub fn is_pruning(&self) -> bool {
        self.prune
    }

    /// The prune prefixes.
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }
}

/// One field of a webhook that an update changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "field", rename_all = "snake_case")]
pub enum FieldChange {
    /// The callback URL.
    Callback {
        /// On the account now.
        from: String,
        /// In the file.
        to: String,
    },
    /// Whether every event is delivered.
    AllEvents {
        /// On the account now.
        from: bool,
        /// In the file.
        to: bool,
    },
    /// The events (compared as a set).
    Events {
        /// In the file, not on the account.
        added: Vec<String>,
        /// On the account, not in the file.
        removed: Vec<String>,
    },
}

/// Why a webhook is deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeleteReason {
    /// Another webhook with this title of the file is kept.
    Duplicate {
        /// The webhook kept for the title.
        kept: Uuid,
    },
    /// Its title starts with a prune prefix and is not in the file.
    Prefix {
        /// The prefix it matched.
        prefix: String,
    },
}

/// One write [`apply()`] makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    /// `POST /webhooks/`: no webhook on the account has this title.
    Create {
        /// What to create.
        webhook: DesiredWebhook,
    },
    /// `PUT /webhooks/{id}/`: the webhook with this title differs from the file.
    Update {
        /// The webhook on the account.
        id: Uuid,
        /// What differs.
        fields: Vec<FieldChange>,
        /// Its settings afterwards (the whole webhook is sent).
        webhook: DesiredWebhook,
    },
    /// `DELETE /webhooks/{id}/` (only with pruning).
    Delete {
        /// The webhook on the account.
        id: Uuid,
        /// Its title.
        title: String,
        /// Its callback.
        callback: String,
        /// Why it goes.
        reason: DeleteReason,
    },
}

impl Change {
    /// The title of the webhook the change is about.
    pub fn title(&self) -> &str {
        match self {
            Change::Create { webhook } | Change::Update { webhook, .. } => webhook.title(),
            Change::Delete { title, .. } => title,
        }
    }

    /// `create`, `update` or `delete`.
    pub fn verb(&self) -> &'static str {
        match self {
            Change::Create { .. } => "create",
            Change::Update { .. } => "update",
            Change::Delete { .. } => "delete",
        }
    }
}

/// A webhook on the account: its id and title.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountWebhook {
    /// Its id.
    pub id: Uuid,
    /// Its title.
    pub title: String,
}

impl From<&Webhook> for AccountWebhook {
    fn from(webhook: &Webhook) -> Self {
        AccountWebhook {
            id: webhook.id,
            title: webhook.title.clone(),
        }
    }
}

/// Several webhooks on the account share one title of the file: each event is delivered to every
/// one of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Duplicate {
    /// The title.
    pub title: String,
    /// The webhook kept (it matches the file, or is the oldest).
    pub kept: Uuid,
    /// The others: deleted with pruning, left (and reported) without.
    pub extra: Vec<Uuid>,
}

/// What [`apply()`] would do to make the account match a [`WebhookFile`]: made by [`plan()`] (or
/// [`Plan::compute`] from a listing), never by hand.
///
/// Its `Display` is the readable difference that `chip webhooks plan` prints; it serializes to the
/// JSON of `chip webhooks plan --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    changes: Vec<Change>,
    unchanged: Vec<AccountWebhook>,
    duplicates: Vec<Duplicate>,
    unmanaged: Vec<AccountWebhook>,
    prune: bool,
    prune_prefixes: Vec<String>,
    #[serde(skip)]
    managed: Vec<Webhook>,
}

impl Plan {
    /// The plan for `file` against the account's `existing` webhooks (every page of the list).
    ///
    /// For each title of the file: no webhook with it means create; one that differs means update
    /// (a `PUT` of the whole webhook); several mean a [`Duplicate`]: the one that already matches is
    /// kept (else the oldest), the others are deleted with pruning. Webhooks whose title is not in
    /// the file are deleted only with pruning and a matching prefix; all others are left alone
    /// ([`unmanaged`](Self::unmanaged)). Changes come in the order [`apply()`] makes them:
    /// creates, updates, then deletes.
    pub fn compute(file: &WebhookFile, existing: &[Webhook], options: &PlanOptions) -> Plan {
        let mut by_title: HashMap<&str, Vec<&Webhook>> = HashMap::new();
        for webhook in existing {
            by_title
                .entry(webhook.title.as_str())
                .or_default()
                .push(webhook);
        }
        let mut creates = Vec::new();
        let mut updates = Vec::new();
        let mut deletes = Vec::new();
        let mut unchanged = Vec::new();
        let mut duplicates = Vec::new();
        let mut managed = Vec::new();
        for desired in &file.webhooks {
            let Some(candidates) = by_title.get(desired.title.as_str()) else {
                creates.push(Change::Create {
                    webhook: desired.clone(),
                });
                continue;
            };
            // Keep the oldest one that already matches, else the oldest; list order breaks ties.
            let oldest = |list: Vec<(usize, &&Webhook)>| {
                list.into_iter()
                    .min_by_key(|(i, w)| (w.created_on.unwrap_or(i64::MAX), *i))
                    .map(|(i, _)| i)
            };
            let matching: Vec<(usize, &&Webhook)> = candidates
                .iter()
                .enumerate()
                .filter(|(_, w)| desired.differences(w).is_empty())
                .collect();
            let kept_index = oldest(matching)
                .or_else(|| oldest(candidates.iter().enumerate().collect()))
                .unwrap_or(0);
            let Some(kept) = candidates.get(kept_index).copied() else {
                continue;
            };
            managed.push(kept.clone());
            let fields = desired.differences(kept);
            if fields.is_empty() {
                unchanged.push(AccountWebhook::from(kept));
            } else {
                updates.push(Change::Update {
                    id: kept.id,
                    fields,
                    webhook: desired.clone(),
                });
            }
            let extra: Vec<&Webhook> = candidates
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != kept_index)
                .map(|(_, w)| *w)
                .collect();
            if !extra.is_empty() {
                duplicates.push(Duplicate {
                    title: desired.title.clone(),
                    kept: kept.id,
                    extra: extra.iter().map(|w| w.id).collect(),
                });
                if options.prune {
                    deletes.extend(extra.iter().map(|w| Change::Delete {
                        id: w.id,
                        title: w.title.clone(),
                        callback: w.callback.clone(),
                        reason: DeleteReason::Duplicate { kept: kept.id },
                    }));
                }
            }
        }
        let mut unmanaged = Vec::new();
        for webhook in existing {
            if file.get(&webhook.title).is_some() {
                continue;
            }
            let prefix = options
                .prefixes
                .iter()
                .find(|p| webhook.title.starts_with(p.as_str()));
            match prefix {
                Some(prefix) if options.prune => deletes.push(Change::Delete {
                    id: webhook.id,
                    title: webhook.title.clone(),
                    callback: webhook.callback.clone(),
                    reason: DeleteReason::Prefix {
                        prefix: prefix.clone(),
                    },
                }),
                _ => unmanaged.push(AccountWebhook::from(webhook)),
            }
        }
        let mut changes = creates;
        changes.append(&mut updates);
        changes.append(&mut deletes);
        Plan {
            changes,
            unchanged,
            duplicates,
            unmanaged,
            prune: options.prune,
            prune_prefixes: options.prefixes.clone(),
            managed,
        }
    }

    /// The writes to make, in order: creates, updates, deletes.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// The file's webhooks that already match.
    pub fn unchanged(&self) -> &[AccountWebhook] {
        &self.unchanged
    }

    /// Titles of the file with several webhooks on the account.
    pub fn duplicates(&self) -> &[Duplicate] {
        &self.duplicates
    }

    /// Webhooks on the account that the file does not manage: never touched.
    pub fn unmanaged(&self) -> &[AccountWebhook] {
        &self.unmanaged
    }

    /// The account's webhooks that stand for the file's titles (one per title; the kept one when
    /// there are duplicates), as listed when the plan was made. After a plan with no changes these
    /// are exactly the file's webhooks, with their public keys.
    pub fn managed(&self) -> &[Webhook] {
        &self.managed
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether the account matches the file: nothing to write and no title on the account twice.
    pub fn is_converged(&self) -> bool {
        self.changes.is_empty() && self.duplicates.is_empty()
    }

    /// How many changes of each kind: `(create, update, delete)`.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for change in &self.changes {
            match change {
                Change::Create { .. } => counts.0 += 1,
                Change::Update { .. } => counts.1 += 1,
                Change::Delete { .. } => counts.2 += 1,
            }
        }
        counts
    }

    /// The public keys of the [`managed`](Self::managed) webhooks as one PEM bundle: a comment line
    /// naming each webhook, then its key as SPKI PEM. [`Verifier::from_pem_bundle`] reads it.
    ///
    /// [`Verifier::from_pem_bundle`]: crate::Verifier::from_pem_bundle
    ///
    /// # Errors
    ///
    /// The [`KeyError`] of the first key that cannot be used, with the webhook's id.
    pub fn key_bundle(&self) -> Result<String, (Uuid, KeyError)> {
        key_bundle(&self.managed)
    }
}

/// The public keys of `webhooks` as one PEM bundle (see [`Plan::key_bundle`]).
///
/// # Errors
///
/// The webhook's id and the [`KeyError`] of the first key that cannot be used.
pub fn key_bundle(webhooks: &[Webhook]) -> Result<String, (Uuid, KeyError)> {
    let mut out = String::new();
    for webhook in webhooks {
        let key = VerificationKey::from_pem(&webhook.public_key).map_err(|e| (webhook.id, e))?;
        let title: String = webhook
            .title
            .chars()
            .map(|c| if c.is_control() || c == '-' { ' ' } else { c })
            .collect();
        out.push_str(&format!("# webhook {} {:?}\n", webhook.id, title.trim()));
        out.push_str(&pem::encode(&pem::Pem::new(
            "PUBLIC KEY",
            key.spki_der().to_vec(),
        )));
    }
    Ok(out)
}

fn quoted(text: &str) -> String {
    format!("{text:?}")
}

/// `text` (a callback, maybe from the account) with every control character and bidirectional
/// override escaped (`\u{a}`), so that it stays on its line of the plan as it reads.
fn shown(text: &str) -> String {
    text.chars()
        .map(|c| {
            if is_forbidden_char(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The widest a line of the plan gets when a list of events is wrapped (a value longer than that
/// stays whole on its own line).
const PLAN_WIDTH: usize = 100;

/// The label column of a setting line (`      events:     `): continuation lines start under the
/// values.
const LABEL_WIDTH: usize = 18;

/// `events` as words to wrap: each shown, with a comma after all but the last; the first one
/// prefixed with `mark` (`+ `, `- ` or nothing).
fn event_words(mark: &str, events: &[impl AsRef<str>]) -> Vec<String> {
    let last = events.len().saturating_sub(1);
    events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let prefix = if i == 0 { mark } else { "" };
            let comma = if i < last { "," } else { "" };
            format!("{prefix}{}{comma}", shown(e.as_ref()))
        })
        .collect()
}

/// Writes `label` (padded to [`LABEL_WIDTH`]) and `groups` of words, separated by one space within
/// a group and two between groups, wrapped at [`PLAN_WIDTH`] with continuation lines indented
/// under the first value.
fn write_wrapped(f: &mut fmt::Formatter<'_>, label: &str, groups: &[Vec<String>]) -> fmt::Result {
    let mut line = format!("{label:<LABEL_WIDTH$}");
    let mut at_start = true;
    for (g, group) in groups.iter().enumerate() {
        for (w, word) in group.iter().enumerate() {
            let gap = if at_start {
                ""
            } else if w == 0 && g > 0 {
                "  "
            } else {
                " "
            };
            let width = line.chars().count() + gap.len() + word.chars().count();
            if !at_start && width > PLAN_WIDTH {
                writeln!(f, "{line}")?;
                line = " ".repeat(LABEL_WIDTH);
                line.push_str(word);
            } else {
                line.push_str(gap);
                line.push_str(word);
            }
            at_start = false;
        }
    }
    writeln!(f, "{line}")
}

fn write_settings(f: &mut fmt::Formatter<'_>, webhook: &DesiredWebhook) -> fmt::Result {
    writeln!(f, "      callback:   {}", shown(&webhook.callback))?;
    if webhook.all_events {
        writeln!(f, "      all_events: true")
    } else {
        let names: Vec<&str> = webhook.events.iter().map(EventName::as_str).collect();
        write_wrapped(f, "      events:", &[event_words("", &names)])
    }
}

impl fmt::Display for Plan {
    /// The readable form: one block per change (`+ create`, `~ update` with each field's old and
    /// new value, `- delete` with the reason), the unchanged ones, a warning per duplicated title
    /// that nothing deletes (without pruning; with it, each extra copy's `- delete` block says
    /// so), and a summary line. Event lists are wrapped at 100 columns. Titles and URLs may come from the account: titles are quoted and callbacks
    /// have their control characters escaped, so no value can start a line of its own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for change in &self.changes {
            match change {
                Change::Create { webhook } => {
                    writeln!(f, "+ create {}", quoted(&webhook.title))?;
                    write_settings(f, webhook)?;
                }
                Change::Update {
                    id,
                    fields,
                    webhook,
                } => {
                    writeln!(f, "~ update {} ({id})", quoted(&webhook.title))?;
                    for field in fields {
                        match field {
                            FieldChange::Callback { from, to } => {
                                writeln!(f, "      callback:   {} -> {}", shown(from), shown(to))?;
                            }
                            FieldChange::AllEvents { from, to } => {
                                writeln!(f, "      all_events: {from} -> {to}")?;
                            }
                            FieldChange::Events { added, removed } => {
                                let mut groups = Vec::new();
                                if !added.is_empty() {
                                    groups.push(event_words("+ ", added));
                                }
                                if !removed.is_empty() {
                                    groups.push(event_words("- ", removed));
                                }
                                write_wrapped(f, "      events:", &groups)?;
                            }
                        }
                    }
                }
                Change::Delete {
                    id,
                    title,
                    callback,
                    reason,
                } => {
                    let why = match reason {
                        DeleteReason::Duplicate { kept } => {
                            format!("a duplicate: {kept} is kept for this title")
                        }
                        DeleteReason::Prefix { prefix } => format!(
                            "not in the file, and its title starts with the prune prefix {}",
                            quoted(prefix)
                        ),
                    };
                    writeln!(f, "- delete {} ({id})", quoted(title))?;
                    writeln!(f, "      callback:   {}", shown(callback))?;
                    writeln!(f, "      why:        {why}")?;
                }
            }
        }
        for webhook in &self.unchanged {
            writeln!(f, "= unchanged {} ({})", quoted(&webhook.title), webhook.id)?;
        }
        // With pruning, each extra copy is reported once, by its `- delete` block (which names the
        // one kept); without, nothing deletes them, so each title is reported once here.
        for duplicate in self.duplicates.iter().filter(|_| !self.prune) {
            let ids: Vec<String> = duplicate.extra.iter().map(Uuid::to_string).collect();
            writeln!(
                f,
                "! {} webhooks are titled {} and each gets every delivery: {} is managed; run \
                 with --prune to delete {}",
                duplicate.extra.len() + 1,
                quoted(&duplicate.title),
                duplicate.kept,
                ids.join(", ")
            )?;
        }
        if !self.unmanaged.is_empty() {
            writeln!(
                f,
                "  ({} other webhook(s) on the account are not in the file and are left alone)",
                self.unmanaged.len()
            )?;
        }
        let (create, update, delete) = self.counts();
        if self.changes.is_empty() {
            if self.duplicates.is_empty() {
                writeln!(f, "No changes: the account matches the file.")
            } else {
                writeln!(
                    f,
                    "No changes to make, but the account does not match the file: duplicates remain."
                )
            }
        } else {
            writeln!(
                f,
                "Plan: {create} to create, {update} to update, {delete} to delete, {} unchanged.",
                self.unchanged.len()
            )
        }
    }
}

/// Lists every webhook on the account (all pages) and computes the [`Plan`] for `file`.
///
/// # Errors
///
/// Any [`Error`] from listing; nothing is written.
pub async fn plan(
    client: &Client,
    file: &WebhookFile,
    options: &PlanOptions,
) -> Result<Plan, Error> {
    let existing: Vec<Webhook> = client.webhooks().list_all().try_collect().await?;
    Ok(Plan::compute(file, &existing, options))
}

// ---------------------------------------------------------------------------------------------
// Apply.

/// How one change went.
#[derive(Debug)]
pub enum StepOutcome {
    /// Made; the webhook as CHIP answered (none for a delete).
    Done(Option<Box<Webhook>>),
    /// A delete answered 404: the webhook was already gone (for instance an earlier, interrupted
    /// delete went through).
    AlreadyGone,
    /// The call failed; apply stopped here. The change may or may not have been made (a create whose
    /// answer was lost): plan again, and the next apply converges.
    Failed(Error),
    /// Not tried, because an earlier step failed.
    NotRun,
}

/// One change and how it went.
#[derive(Debug)]
pub struct Step {
    /// The change.
    pub change: Change,
    /// How it went.
    pub outcome: StepOutcome,
}

impl Step {
    /// Whether a write call was made for it (successful or not).
    pub fn was_attempted(&self) -> bool {
        !matches!(self.outcome, StepOutcome::NotRun)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = match &self.change {
            Change::Update { id, .. } | Change::Delete { id, .. } => Some(*id),
            Change::Create { .. } => None,
        };
        let title = quoted(self.change.title());
        match &self.outcome {
            StepOutcome::Done(webhook) => {
                let id = id.or_else(|| webhook.as_ref().map(|w| w.id));
                let past = match &self.change {
                    Change::Create { .. } => "created",
                    Change::Update { .. } => "updated",
                    Change::Delete { .. } => "deleted",
                };
                match id {
                    Some(id) => write!(f, "{past} {title} ({id})"),
                    None => write!(f, "{past} {title}"),
                }
            }
            StepOutcome::AlreadyGone => write!(f, "deleted {title}: it was already gone"),
            StepOutcome::Failed(error) => {
                write!(f, "failed to {} {title}: {error}", self.change.verb())
            }
            StepOutcome::NotRun => write!(f, "not run: {} {title}", self.change.verb()),
        }
    }
}

/// What [`apply()`] did, step by step.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Every change of the plan, in order, with its outcome.
    pub steps: Vec<Step>,
}

impl ApplyReport {
    /// The error that stopped the apply, if any.
    pub fn failure(&self) -> Option<&Error> {
        self.steps.iter().find_map(|s| match &s.outcome {
            StepOutcome::Failed(error) => Some(error),
            _ => None,
        })
    }

    /// Whether every change was made.
    pub fn is_complete(&self) -> bool {
        self.steps
            .iter()
            .all(|s| matches!(s.outcome, StepOutcome::Done(_) | StepOutcome::AlreadyGone))
    }

    /// How many write calls were made (one per attempted change; the client's own retries of a
    /// `PUT` or `DELETE` are not counted separately).
    pub fn write_calls(&self) -> usize {
        self.steps.iter().filter(|s| s.was_attempted()).count()
    }
}

/// Makes the plan's changes one by one, in order, and stops at the first that fails.
///
/// A plan with no changes makes no call. Creates are `POST`s (never retried once they may have
/// reached CHIP), updates `PUT`s of the whole webhook, deletes `DELETE`s (a 404 means already
/// gone). After a failure, make a new plan: it sees what was done, including a create whose answer
/// was lost, so running plan and apply again converges.
pub async fn apply(client: &Client, plan: &Plan) -> ApplyReport {
    apply_with_progress(client, plan, |_| {}).await
}

/// [`apply()`], calling `progress` after each step (to print it as it happens).
pub async fn apply_with_progress(
    client: &Client,
    plan: &Plan,
    mut progress: impl FnMut(&Step),
) -> ApplyReport {
    let webhooks = client.webhooks();
    let mut report = ApplyReport::default();
    let mut failed = false;
    for change in &plan.changes {
        let outcome = if failed {
            StepOutcome::NotRun
        } else {
            let result = match change {
                Change::Create { webhook } => webhooks
                    .create(webhook.to_new_webhook())
                    .await
                    .map(|w| StepOutcome::Done(Some(Box::new(w)))),
                Change::Update { id, webhook, .. } => webhooks
                    .update(*id, webhook.to_new_webhook())
                    .await
                    .map(|w| StepOutcome::Done(Some(Box::new(w)))),
                Change::Delete { id, .. } => match webhooks.delete(*id).await {
                    Ok(()) => Ok(StepOutcome::Done(None)),
                    Err(e) if e.status().is_some_and(|s| s.as_u16() == 404) => {
                        Ok(StepOutcome::AlreadyGone)
                    }
                    Err(e) => Err(e),
                },
            };
            result.unwrap_or_else(|error| {
                failed = true;
                StepOutcome::Failed(error)
            })
        };
        let step = Step {
            change: change.clone(),
            outcome,
        };
        if step.was_attempted() {
            progress(&step);
        }
        report.steps.push(step);
    }
    report
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("shop.example.com".into()),
            "ENV" => Some("live".into()),
            "EMPTY" => Some(String::new()),
            "AWS_SECRET_ACCESS_KEY" => Some("aws-secret".into()),
            "SHOP_KEY" => Some("sk_live_in_use".into()),
            "NEWLINE" => Some("a\nb".into()),
            _ => None,
        }
    }

    /// `text` interpolated with `declared` names from `env` and `options`.
    fn expand(text: &str, declared: &[&str], options: &LoadOptions) -> Result<String, String> {
        let variables = Variables {
            declared: declared.iter().map(|s| (*s).to_owned()).collect(),
            options,
            lookup: &env,
        };
        interpolate(text, &variables)
    }

    #[test]
    fn interpolation() {
        let all = ["HOST", "ENV", "EMPTY", "NOPE"];
        let none = LoadOptions::new();
        let ok = |text: &str| expand(text, &all, &none).unwrap();
        let err = |text: &str| expand(text, &all, &none).unwrap_err();
        assert_eq!(ok("https://${HOST}/x"), "https://shop.example.com/x");
        assert_eq!(ok("$${HOST} $ $x ${ENV}$"), "${HOST} $ $x live$");
        assert!(err("${NOPE}").contains("NOPE is not set"));
        assert!(err("${EMPTY}").contains("EMPTY is empty"));
        assert!(err("${HOST").contains("closing"));
        assert!(err("${1A}").contains("not a variable name"));
        assert!(err("${}").contains("not a variable name"));
        assert!(err("${CHIP_API_KEY}").contains("secret"));
        assert_eq!(ok("ünï${ENV}çödé"), "ünïliveçödé");
    }

    #[test]
    fn only_declared_or_allowed_variables_are_read() {
        let none = LoadOptions::new();
        // Undeclared: an error naming the fix, and the environment is never asked.
        let error = expand("${AWS_SECRET_ACCESS_KEY}", &["HOST"], &none).unwrap_err();
        assert!(
            error.starts_with("${AWS_SECRET_ACCESS_KEY} is not declared"),
            "{error}"
        );
        assert!(
            error.contains("vars = [\"AWS_SECRET_ACCESS_KEY\"]"),
            "{error}"
        );
        assert!(error.contains("--var AWS_SECRET_ACCESS_KEY"), "{error}");
        assert!(!error.contains("aws-secret"), "{error}");
        // Allowed by the caller (--var NAME), or given a value (--var NAME=VALUE, which wins).
        let allowed = LoadOptions::new().allow("HOST").unwrap();
        assert_eq!(
            expand("${HOST}", &[], &allowed).unwrap(),
            "shop.example.com"
        );
        let empty = LoadOptions::new().var("HOST", "").unwrap();
        assert_eq!(
            expand("${HOST}", &["HOST"], &empty).unwrap_err(),
            "variable HOST is given an empty value"
        );
        let set = LoadOptions::new().var("HOST", "other.example").unwrap();
        assert_eq!(expand("${HOST}", &["HOST"], &set).unwrap(), "other.example");
        assert_eq!(
            expand(
                "${UNSET}",
                &[],
                &LoadOptions::new().var("UNSET", "v").unwrap()
            )
            .unwrap(),
            "v"
        );
        // The key's variable can be neither declared nor allowed.
        assert!(
            expand("${CHIP_API_KEY}", &["CHIP_API_KEY"], &none)
                .unwrap_err()
                .contains("secret API key")
        );
        assert!(LoadOptions::new().allow("CHIP_API_KEY").is_err());
        assert!(LoadOptions::new().var("CHIP_API_KEY", "x").is_err());
        assert!(LoadOptions::new().allow("A-B").is_err());
        assert!(LoadOptions::new().allow("").is_err());
    }

    #[test]
    fn values_carrying_the_key_or_control_characters_are_refused() {
        let options = LoadOptions::new().api_key("sk_live_in_use");
        let error =
            expand("https://a.example/?k=${SHOP_KEY}", &["SHOP_KEY"], &options).unwrap_err();
        assert!(
            error.contains("the value of SHOP_KEY contains the API key in use"),
            "{error}"
        );
        assert!(!error.contains("sk_live"), "{error}");
        // Without the key to compare with, only its own variable is refused.
        assert!(expand("${SHOP_KEY}", &["SHOP_KEY"], &LoadOptions::new()).is_ok());
        let error = expand("${NEWLINE}", &["NEWLINE"], &options).unwrap_err();
        assert!(
            error.contains("the value of NEWLINE contains the control character U+000A"),
            "{error}"
        );
        // Its Debug does not show the key.
        assert!(!format!("{options:?}").contains("sk_live"));
    }

    #[test]
    fn plan_output_cannot_be_forged_by_a_callback() {
        assert_eq!(shown("https://a.example/x"), "https://a.example/x");
        assert_eq!(
            shown("https://a.example/\n+ create \"evil\"\u{1b}[2J\u{202e}"),
            "https://a.example/\\u{a}+ create \"evil\"\\u{1b}[2J\\u{202e}"
        );
    }

    #[test]
    fn a_bad_callback_is_reported_at_its_own_line() {
        // Passes CHIP's pattern, but no URL: the port is out of range.
        let text = "[[webhook]]\ntitle = \"orders\"\n\ncallback = \"https://shop.example.com:99999/chip\"\nall_events = true\n";
        let error = WebhookFile::parse_with(text, |_| None).unwrap_err();
        assert_eq!(error.line(), Some(4), "{error}");
        assert!(error.message().starts_with("callback: "), "{error}");
        // A value of the wrong type, too (toml's span).
        for (setting, line) in [
            ("callback = 5\nall_events = true", 4),
            ("callback = \"https://a.example/\"\nall_events = \"yes\"", 5),
            (
                "callback = \"https://a.example/\"\nevents = \"purchase.paid\"",
                5,
            ),
        ] {
            let text = format!("[[webhook]]\ntitle = \"orders\"\n\n{setting}\n");
            let error = WebhookFile::parse_with(&text, |_| None).unwrap_err();
            assert_eq!(error.line(), Some(line), "{setting}: {error}");
        }
    }

    /// A webhook on the account, as CHIP lists it.
    fn account(id: u128, title: &str, events: &[&str]) -> Webhook {
        serde_json::from_value(serde_json::json!({
            "id": Uuid::from_u128(id),
            "title": title,
            "callback": "https://old.example.com/chip",
            "all_events": false,
            "events": events,
            "public_key": "",
            "created_on": id,
        }))
        .unwrap()
    }

    #[test]
    fn long_event_lists_are_wrapped_and_each_duplicate_is_reported_once() {
        let many: Vec<EventName> = EventName::ALL.iter().take(12).cloned().collect();
        let new = NewWebhook::builder("orders", "https://shop.example.com/chip")
            .events(many.clone())
            .unwrap();
        let file = WebhookFile::from_webhooks([new]).unwrap();

        let plan = Plan::compute(&file, &[], &PlanOptions::new());
        let text = plan.to_string();
        for line in text.lines() {
            assert!(line.chars().count() <= PLAN_WIDTH, "{line:?} in\n{text}");
        }
        let continued: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&" ".repeat(LABEL_WIDTH)))
            .collect();
        assert!(!continued.is_empty(), "{text}");
        // Every event once, in order, and nothing else.
        let listed: String = text
            .lines()
            .skip_while(|l| !l.starts_with("      events:"))
            .take_while(|l| l.starts_with("      "))
            .map(|l| l[LABEL_WIDTH..].to_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let names: Vec<&str> = many.iter().map(EventName::as_str).collect();
        assert_eq!(listed, names.join(", "));

        // An update adding many and removing some wraps too, the groups two spaces apart.
        let existing = [account(1, "orders", &["purchase.paid", "payout.failed"])];
        let text = Plan::compute(&file, &existing, &PlanOptions::new()).to_string();
        assert!(
            text.lines().all(|l| l.chars().count() <= PLAN_WIDTH),
            "{text}"
        );
        assert!(text.contains("  - payout.failed"), "{text}");

        // Three webhooks with the file's title, pruned: each extra copy is reported once (its
        // delete block), not again on a line of its own.
        let existing = [
            account(1, "orders", &["purchase.paid"]),
            account(2, "orders", &["purchase.paid"]),
            account(3, "orders", &["purchase.paid"]),
        ];
        let pruning = PlanOptions::new().prune(true);
        let text = Plan::compute(&file, &existing, &pruning).to_string();
        for id in [2, 3] {
            let id = Uuid::from_u128(id).to_string();
            assert_eq!(text.matches(&id).count(), 1, "{id} in\n{text}");
        }
        assert!(!text.contains("\n! "), "{text}");
        // Without pruning nothing deletes them: one warning for the title.
        let text = Plan::compute(&file, &existing, &PlanOptions::new()).to_string();
        assert_eq!(
            text.matches("! 3 webhooks are titled \"orders\"").count(),
            1,
            "{text}"
        );
        for id in [2, 3] {
            let id = Uuid::from_u128(id).to_string();
            assert_eq!(text.matches(&id).count(), 1, "{id} in\n{text}");
        }
    }

    #[test]
    fn lines_and_distances() {
        let index = LineIndex::new("a\nbc\n\nd");
        assert_eq!(index.line(0), 1);
        assert_eq!(index.line(1), 1);
        assert_eq!(index.line(2), 2);
        assert_eq!(index.line(5), 3);
        assert_eq!(index.line(6), 4);
        assert_eq!(index.line(600), 4);
        assert_eq!(edit_distance("purchase.payed", "purchase.paid"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
