//! `chip inbox ...`: look into and act on a durable inbox (`chip-gate-inbox`) by its database URL.
//!
//! The URL comes from `--database-url` or `CHIP_INBOX_DATABASE_URL` (empty means unset). A password
//! in it is never printed: every message shows the URL as `postgres://user:***@host/db`, and any
//! text that holds the password has it replaced by `***`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chip_gate_inbox::{
    DeliveryState, DeliverySummary, Inbox, InboxError, InboxOptions, ListFilter, MIN_RETENTION,
    StoredDelivery,
};
use clap::{Args, Subcommand, ValueEnum};

use crate::common::{Failure, Outcome, env_value};
use crate::output::cell;
use crate::term::{clean, clean_lines};
use crate::{outln, output};

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
        /// The age: a number and a unit (s, m, h, d, w), e.g. `7d`, `48h`, `1d12h`.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
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

/// Parses `7d`, `48h`, `90m`, `30s`, `2w` or a sum such as `1d12h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    const HINT: &str = "expected a number and a unit (s, m, h, d, w), e.g. 7d, 48h or 1d12h";
    let text = text.trim();
    if text.is_empty() {
        return Err(HINT.to_owned());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(HINT.to_owned()),
        };
        let n: u64 = digits.parse().map_err(|_| HINT.to_owned())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| "the duration is too long".to_owned())?;
    }
    if !digits.is_empty() {
        return Err(HINT.to_owned());
    }
    Ok(Duration::from_secs(total))
}

/// A duration in at most two units, largest first: `7d`, `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
    ];
    let Some(first) = parts.iter().position(|&(n, _)| n > 0) else {
        return "0s".to_owned();
    };
    parts[first..]
        .iter()
        .take(2)
        .filter(|&&(n, _)| n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Unix milliseconds as RFC 3339 UTC to the second, as the rest of the CLI prints times.
fn time_ms(ms: i64) -> String {
    output::rfc3339(ms.div_euclid(1000))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How long ago `ms` was (zero for a time in the future).
fn age(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms().saturating_sub(ms)).unwrap_or(0))
}

/// The database URL, its password (if any) and how to show it.
struct DatabaseUrl {
    url: String,
    password: Option<String>,
}

impl DatabaseUrl {
    fn new(url: String) -> Self {
        let password = password_span(&url).map(|(start, end)| url[start..end].to_owned());
        DatabaseUrl { url, password }
    }

    /// The URL with its password replaced by `***`.
    fn shown(&self) -> String {
        clean(&redact(&self.url))
    }

    /// `text` with the password (as written, and percent-decoded) replaced by `***`.
    fn scrub(&self, text: &str) -> String {
        let mut text = redact(text);
        if let Some(password) = &self.password {
            let decoded = percent_decode(password);
            for secret in [password.as_str(), decoded.as_str()] {
                if !secret.is_empty() {
                    text = text.replace(secret, "***");
                }
            }
        }
        text
    }
}

/// Where the password of the URL that starts `text` is: after the first `:` of the user info,
/// before the last `@` of the authority.
fn password_span(text: &str) -> Option<(usize, usize)> {
    let start = text.find("://")? + 3;
    let rest = &text[start..];
    let authority = rest
        .find(['/', '?', '#', ' ', '\t', '\n', '`', '\'', '"'])
        .map_or(rest, |end| &rest[..end]);
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':')?;
    Some((start + colon + 1, start + at))
}

/// Replaces the password in every `scheme://user:password@` of `text` with `***`.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find("://") {
        // `password_span` reads the URL of this same first `://`.
        match password_span(rest) {
            Some((start, end)) => {
                out.push_str(&rest[..start]);
                out.push_str("***");
                rest = &rest[end..];
            }
            None => {
                out.push_str(&rest[..found + 3]);
                rest = &rest[found + 3..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes `%XX` escapes (anything else is kept as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|&b| hex(b)),
                bytes.get(i + 2).and_then(|&b| hex(b)),
            )
        {
            out.push(u8::try_from(hi * 16 + lo).unwrap_or(b'?'));
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The database URL: `--database-url`, else `CHIP_INBOX_DATABASE_URL`; blank means unset.
fn database_url(args: &InboxArgs) -> Result<DatabaseUrl, Failure> {
    let flag = args
        .database_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    let url = match flag {
        Some(url) => {
            let url = DatabaseUrl::new(url.to_owned());
            if url.password.is_some() {
                crate::term::warn_line(format_args!(
                    "warning: a password in --database-url is visible to other users in `ps` and \
                     kept in shell history; prefer {DATABASE_URL_ENV}"
                ));
            }
            url
        }
        None => DatabaseUrl::new(
            env_value(DATABASE_URL_ENV)?
                .map(|u| u.trim().to_owned())
                .ok_or_else(|| {
                    Failure::usage(format!(
                        "no inbox database: pass --database-url or set {DATABASE_URL_ENV} (e.g. \
                         sqlite://chip-inbox.db or postgres://USER@HOST/DB)"
                    ))
                })?,
        ),
    };
    Ok(url)
}

/// How long opening the inbox waits for a database connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The file a `sqlite:` URL names, as `sqlx` reads it, or `None` for an in-memory database.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .get("sqlite:".len()..)
        .unwrap_or_default()
        .trim_start_matches("//");
    let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
    if path == ":memory:" || params.split('&').any(|p| p == "mode=memory") {
        return None;
    }
    Some(PathBuf::from(percent_decode(path)))
}

/// Opens the inbox without changing the database: a `sqlite:` URL must name an existing file (the
/// library would create an empty database for a mistyped path), and the database must already
/// hold this version's inbox schema (it is never created or migrated from here: pointed at the
/// wrong database, or at one whose apps run another version, `chip inbox` changes nothing).
async fn open(url: &DatabaseUrl) -> Result<Inbox, Failure> {
    let scheme = url
        .url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sqlite") => {
            if let Some(path) = sqlite_path(&url.url)
                && !path.is_file()
            {
                return Err(Failure::op(format!(
                    "no inbox database at {} (from {}): create it with `chip inbox init` (or \
                     start the receiving app, whose Inbox::connect creates it); the other \
                     commands never create one",
                    clean(&path.display().to_string()),
                    url.shown()
                )));
            }
        }
        Some("postgres" | "postgresql") => {
            if let Err(e) = url::Url::parse(&url.url) {
                return Err(Failure::usage(format!(
                    "the database URL {} is not a valid URL: {e}",
                    url.shown()
                )));
            }
        }
        _ => {
            return Err(Failure::usage(format!(
                "unsupported database URL {}: use sqlite://PATH or postgres://USER@HOST/DB",
                url.shown()
            )));
        }
    }
    Inbox::connect_with(&url.url, cli_options().migrate(false))
        .await
        .map_err(|e| cannot_open(url, "open", &e))
}

/// The options `chip inbox` opens a database with (small pool, short waits).
fn cli_options() -> InboxOptions {
    InboxOptions::default()
        .max_connections(2)
        .acquire_timeout(CONNECT_TIMEOUT)
        .sqlite_busy_timeout(Duration::from_secs(10))
}

/// `chip inbox init`: creates the database (a SQLite file) and the inbox's tables, or migrates an
/// older inbox, with [`Inbox::connect_with`], and says which of these it did. Anything already
/// there is kept; run again, it changes nothing.
async fn init(url: &DatabaseUrl) -> Outcome {
    let scheme = url
        .url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    // What is there before: no file, or the schema version found (0: no inbox tables).
    let before: Option<i64> = match scheme.as_deref() {
        Some("sqlite") => {
            let Some(path) = sqlite_path(&url.url) else {
                return Err(Failure::usage(format!(
                    "{} is an in-memory database, gone when this command ends: give a file, \
                     e.g. sqlite://chip-inbox.db",
                    url.shown()
                )));
            };
            if path.exists() {
                Some(version_before(url).await?)
            } else {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
                    && !parent.is_dir()
                {
                    return Err(Failure::op(format!(
                        "cannot create the inbox at {}: the folder {} does not exist (create it \
                         first)",
                        url.shown(),
                        clean(&parent.display().to_string())
                    )));
                }
                None
            }
        }
        Some("postgres" | "postgresql") => {
            if let Err(e) = url::Url::parse(&url.url) {
                return Err(Failure::usage(format!(
                    "the database URL {} is not a valid URL: {e}",
                    url.shown()
                )));
            }
            Some(version_before(url).await?)
        }
        _ => {
            return Err(Failure::usage(format!(
                "unsupported database URL {}: use sqlite://PATH or postgres://USER@HOST/DB",
                url.shown()
            )));
        }
    };
    let inbox = Inbox::connect_with(&url.url, cli_options())
        .await
        .map_err(|e| cannot_open(url, "set up", &e))?;
    let after = inbox.schema_version().await.map_err(failed(url));
    inbox.close().await;
    let after = after?;
    let shown = url.shown();
    match before {
        None => outln!("Created the inbox at {shown} (schema version {after}).")?,
        Some(0) => outln!(
            "Created the inbox's tables in {shown} (schema version {after}); nothing else in \
             the database was changed."
        )?,
        Some(found) if found < after => outln!(
            "Migrated the inbox at {shown} from schema version {found} to {after}; its \
             deliveries are kept."
        )?,
        Some(_) => outln!(
            "The inbox at {shown} is already set up (schema version {after}): nothing to do."
        )?,
    }
    outln!(
        "Receivers store into it with chip_gate_inbox::Inbox::connect; look into it with `chip \
         inbox status`."
    )?;
    Ok(0)
}

/// The inbox schema version of an existing database, read without changing anything (0 when it
/// holds no inbox); a newer version than this `chip` knows is refused.
async fn version_before(url: &DatabaseUrl) -> Result<i64, Failure> {
    match Inbox::connect_with(&url.url, cli_options().migrate(false)).await {
        Ok(inbox) => {
            let version = inbox.schema_version().await.map_err(failed(url));
            inbox.close().await;
            version
        }
        Err(InboxError::SchemaTooOld { found, .. }) => Ok(found),
        Err(e @ InboxError::SchemaTooNew { .. }) => Err(Failure::op(format!(
            "the inbox at {} is newer than this chip knows ({}): use the chip of the version \
             your apps run; nothing was changed",
            url.shown(),
            url.scrub(&e.to_string())
        ))),
        Err(e) => Err(cannot_open(url, "open", &e)),
    }
}

/// A failure to open (or set up) the inbox at `url`, without the password.
fn cannot_open(url: &DatabaseUrl, verb: &str, e: &InboxError) -> Failure {
    let code = if matches!(e, InboxError::UnsupportedUrl { .. }) {
        2
    } else {
        1
    };
    // Only the library's text is scrubbed: the URL is already shown without its password
    // (scrubbing it too would hide a user or database name equal to the password).
    let mut message = format!(
        "cannot {verb} the inbox at {}: {}",
        url.shown(),
        url.scrub(&e.to_string())
    );
    if message.contains("timed out") {
        message.push_str(&format!(
            " (no connection within {} s: is the server running, and are the host and port \
             right?)",
            CONNECT_TIMEOUT.as_secs()
        ));
    }
    Failure {
        code,
        message,
        quiet: false,
    }
}

/// An error of an inbox call, as a one-line failure without the password.
fn failed(url: &DatabaseUrl) -> impl Fn(InboxError) -> Failure + '_ {
    move |e| Failure::op(url.scrub(&e.to_string()))
}

/// Runs an inbox subcommand.
pub async fn run(args: InboxArgs) -> Outcome {
    // Usage problems (a bad duration is caught by clap) come before the database.
    if let InboxCommand::Purge { older_than, force } = &args.command
        && *older_than < MIN_RETENTION
        && !*force
    {
        return Err(Failure::usage(format!(
            "--older-than {} is under 48 hours: a delivery removed before CHIP's last retry (up \
             to 36 hours) would be stored and handled again if CHIP sends it once more; pass \
             --force to purge anyway",
            human(*older_than)
        )));
    }
    let url = database_url(&args)?;
    if let InboxCommand::Init = args.command {
        return init(&url).await;
    }
    let inbox = open(&url).await?;
    let outcome = command(&inbox, &url, args.command).await;
    inbox.close().await;
    outcome
}

async fn command(inbox: &Inbox, url: &DatabaseUrl, command: InboxCommand) -> Outcome {
    match command {
        // Answered by `run` before anything is opened.
        InboxCommand::Init => return init(url).await,
        InboxCommand::Status { json } => {
            let status = inbox.status().await.map_err(failed(url))?;
            if json {
                let mut value = serde_json::to_value(status)
                    .map_err(|e| Failure::op(format!("cannot write JSON: {e}")))?;
                if let Some(map) = value.as_object_mut() {
                    let age_ms = status
                        .oldest_pending_received_at_ms
                        .map(|ms| u64::try_from(age(ms).as_millis()).unwrap_or(u64::MAX));
                    map.insert("oldest_pending_age_ms".to_owned(), age_ms.into());
                }
                output::json(&value)?;
            } else {
                print_status(&status)?;
            }
        }
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
            let items = inbox.list(&filter).await.map_err(failed(url))?;
            if json {
                output::json(&items)?;
            } else if items.is_empty() {
                outln!("No deliveries.")?;
            } else {
                outln!("{}", table(&items))?;
                if let Some(last) = items.last()
                    && items.len() == limit as usize
                {
                    outln!("(maybe more: add --before {} for the next page)", last.id)?;
                }
            }
        }
        InboxCommand::Show { id, json, body } => {
            let delivery = inbox.get(id).await.map_err(failed(url))?;
            if json {
                let mut value = serde_json::to_value(&delivery)
                    .map_err(|e| Failure::op(format!("cannot write JSON: {e}")))?;
                if let Some(map) = value.as_object_mut() {
                    if body {
                        let text = String::from_utf8_lossy(&delivery.body).into_owned();
                        map.insert("body".to_owned(), text.into());
                    } else {
                        map.remove("signature");
                    }
                }
                output::json(&value)?;
            } else {
                outln!("{}", details(&delivery, body))?;
            }
        }
        InboxCommand::Retry { id } => {
            if let Err(e) = inbox.retry(id).await {
                return Err(not_requeued(inbox, url, id, "retry", e).await);
            }
            outln!("Delivery {id} is pending again: due now, with a fresh set of attempts.")?;
        }
        InboxCommand::Replay { id } => {
            if let Err(e) = inbox.replay(id).await {
                return Err(not_requeued(inbox, url, id, "replay", e).await);
            }
            outln!("Delivery {id} is pending again: it will be handed over once more.")?;
        }
        InboxCommand::Purge { older_than, .. } => {
            let removed = inbox
                .purge_finished_before(older_than)
                .await
                .map_err(failed(url))?;
            outln!(
                "Removed {removed} done or stale deliveries finished more than {} ago.",
                human(older_than)
            )?;
        }
    }
    Ok(0)
}

/// Why a retry or replay did nothing; for a pending delivery, when it is due.
async fn not_requeued(
    inbox: &Inbox,
    url: &DatabaseUrl,
    id: i64,
    verb: &str,
    error: InboxError,
) -> Failure {
    let failure = failed(url)(error);
    match inbox.get(id).await {
        Ok(delivery) if delivery.summary.state == DeliveryState::Pending => {
            let summary = &delivery.summary;
            Failure::op(format!(
                "delivery {id} is pending already, nothing to {verb}: {} attempt(s) so far, the \
                 next one due {}",
                summary.attempts,
                time_ms(summary.next_attempt_at_ms)
            ))
        }
        _ => failure,
    }
}

fn print_status(status: &chip_gate_inbox::InboxStatus) -> Result<(), Failure> {
    let counts = &status.counts;
    let oldest = status.oldest_pending_received_at_ms.map_or_else(
        || "-".to_owned(),
        |ms| format!("{} ago (received {})", human(age(ms)), time_ms(ms)),
    );
    outln!(
        "Counts since the inbox was created:\n  \
         received:        {}\n  \
         duplicates:      {}\n  \
         stale:           {}\n  \
         done:            {}\n  \
         retried:         {}\n  \
         dead:            {}\n\
         Now:\n  \
         pending:         {} ({} being handled)\n  \
         dead:            {}\n  \
         finished, kept:  {}\n  \
         oldest pending:  {oldest}",
        counts.received,
        counts.duplicates,
        counts.stale,
        counts.done,
        counts.retried,
        counts.dead,
        status.pending,
        status.leased,
        status.dead,
        status.finished,
    )
}

fn object(summary: &DeliverySummary) -> String {
    match &summary.object_id {
        Some(id) => format!("{} {}", summary.object_kind, id),
        None => summary.object_kind.clone(),
    }
}

/// Formats deliveries as an aligned table with a header row; the last column is the last error.
fn table(items: &[DeliverySummary]) -> String {
    const COLUMNS: usize = 7;
    let header = [
        "ID",
        "STATE",
        "ATTEMPTS",
        "RECEIVED",
        "EVENT",
        "OBJECT",
        "LAST ERROR",
    ]
    .map(str::to_owned);
    let rows: Vec<[String; COLUMNS]> = items
        .iter()
        .map(|d| {
            [
                d.id.to_string(),
                d.state.to_string(),
                d.attempts.to_string(),
                time_ms(d.received_at_ms),
                cell(&d.event, 40),
                cell(&object(d), 60),
                d.last_error
                    .as_deref()
                    .map_or_else(String::new, |e| cell(e, 60)),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, value) in widths.iter_mut().zip(row) {
            *width = (*width).max(value.chars().count());
        }
    }
    let line = |row: &[String; COLUMNS]| {
        let mut out = String::new();
        for (i, (value, width)) in row.iter().zip(widths).enumerate() {
            out.push_str(value);
            if i + 1 < COLUMNS {
                out.push_str(&" ".repeat(width - value.chars().count() + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(&header);
    for row in &rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

/// Formats one delivery as `field: value` lines, then its signature and body when asked.
fn details(delivery: &StoredDelivery, with_body: bool) -> String {
    let d = &delivery.summary;
    let optional = |value: Option<&str>| value.map_or_else(|| "-".to_owned(), |v| cell(v, 1000));
    let mut lines = vec![
        format!("id:             {}", d.id),
        format!("state:          {}", d.state),
        format!("event:          {}", cell(&d.event, 200)),
        format!("object:         {}", cell(&object(d), 300)),
        format!(
            "updated_on:     {}",
            d.updated_on.map_or_else(|| "-".to_owned(), output::rfc3339)
        ),
        format!("dedup_key:      {}", cell(&d.dedup_key, 300)),
        format!("received:       {}", time_ms(d.received_at_ms)),
        format!("attempts:       {}", d.attempts),
        format!("duplicates:     {}", d.duplicates),
    ];
    if d.state == DeliveryState::Pending {
        lines.push(format!("next attempt:   {}", time_ms(d.next_attempt_at_ms)));
    }
    lines.push(format!(
        "finished:       {}",
        d.finished_at_ms.map_or_else(|| "-".to_owned(), time_ms)
    ));
    lines.push(format!(
        "last error:     {}",
        optional(d.last_error.as_deref())
    ));
    lines.push(format!(
        "typing problem: {}",
        optional(d.typing_problem.as_deref())
    ));
    if with_body {
        lines.push(format!("signature:      {}", clean(&delivery.signature)));
        lines.push(format!("body ({} bytes):", delivery.body.len()));
        lines.push(
            clean_lines(&String::from_utf8_lossy(&delivery.body))
                .trim_end()
                .to_owned(),
        );
    } else {
        lines.push(format!(
            "body:           {} bytes (--body prints it)",
            delivery.body.len()
        ));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let url = DatabaseUrl::new("postgres://shop:s3cr%40t@db.internal:5432/shop".to_owned());
        assert_eq!(url.shown(), "postgres://shop:***@db.internal:5432/shop");
        assert_eq!(
            url.scrub("password authentication failed: s3cr@t and s3cr%40t"),
            "password authentication failed: *** and ***"
        );
        assert_eq!(
            redact("a postgres://u:p@h/db and postgresql://v:q@h2?x=1 b"),
            "a postgres://u:***@h/db and postgresql://v:***@h2?x=1 b"
        );
        // No password, or an `@` only in the path: nothing to hide.
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://dir/a:b@c.db"), "sqlite://dir/a:b@c.db");
        assert_eq!(
            redact("postgres://h/d?user=a:b@c"),
            "postgres://h/d?user=a:b@c"
        );
        assert!(
            DatabaseUrl::new("sqlite://x.db".to_owned())
                .password
                .is_none()
        );
    }

    #[test]
    fn sqlite_paths_read_as_sqlx_reads_them() {
        assert_eq!(
            sqlite_path("sqlite://chip-inbox.db"),
            Some(PathBuf::from("chip-inbox.db"))
        );
        assert_eq!(
            sqlite_path("sqlite:///tmp/a%20b.db?mode=rw"),
            Some(PathBuf::from("/tmp/a b.db"))
        );
        assert_eq!(sqlite_path("sqlite:rel.db"), Some(PathBuf::from("rel.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("sqlite://?mode=memory"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in ["", "7", "d", "7x", "1.5h", "-1d", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(human(Duration::from_secs(12)), "12s");
        assert_eq!(human(Duration::from_secs(250)), "4m 10s");
        assert_eq!(human(Duration::from_secs(7500)), "2h 5m");
        assert_eq!(human(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(human(Duration::from_secs(3600 + 5)), "1h");
        assert_eq!(human(Duration::ZERO), "0s");
    }
}
