//! Reading a webhook file: the TOML with its spans and line numbers, each webhook checked
//! against CHIP's limits, and the errors that name the line at fault.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use chip_gate_api::types;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::vars::{LoadOptions, Variables, check_name, check_text, interpolate};
use crate::EventName;
use crate::error::Error;
use crate::webhooks::{MAX_CALLBACK_CHARS, MAX_TITLE_CHARS, NewWebhook};

/// The largest webhook file [`WebhookFile::load`] reads.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

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

/// The Levenshtein distance (`strsim`'s, on characters) between the first 128 characters of each:
/// the cost stays bounded however long a line of the file is (a suggestion, not a proof).
fn edit_distance(a: &str, b: &str) -> usize {
    /// `text` up to its 128th character.
    fn cut(text: &str) -> &str {
        text.char_indices()
            .nth(128)
            .map_or(text, |(end, _)| &text[..end])
    }
    strsim::levenshtein(cut(a), cut(b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
