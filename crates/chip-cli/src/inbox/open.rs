//! Opening the inbox's database from `chip inbox` (never creating or migrating it), and one-line
//! failures that never show the password.

use std::time::Duration;

use chip_gate_inbox::{Inbox, InboxError, InboxOptions};

use crate::common::Failure;
use crate::term::clean;

use super::url::{DatabaseUrl, sqlite_path};

/// How long opening the inbox waits for a database connection.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the inbox without changing the database: a `sqlite:` URL must name an existing file (the
/// library would create an empty database for a mistyped path), and the database must already
/// hold this version's inbox schema (it is never created or migrated from here: pointed at the
/// wrong database, or at one whose apps run another version, `chip inbox` changes nothing).
pub(super) async fn open(url: &DatabaseUrl) -> Result<Inbox, Failure> {
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
pub(super) fn cli_options() -> InboxOptions {
    InboxOptions::default()
        .max_connections(2)
        .acquire_timeout(CONNECT_TIMEOUT)
        .sqlite_busy_timeout(Duration::from_secs(10))
}

/// The inbox schema version of an existing database, read without changing anything (0 when it
/// holds no inbox); a newer version than this `chip` knows is refused.
pub(super) async fn version_before(url: &DatabaseUrl) -> Result<i64, Failure> {
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
pub(super) fn cannot_open(url: &DatabaseUrl, verb: &str, e: &InboxError) -> Failure {
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
pub(super) fn failed(url: &DatabaseUrl) -> impl Fn(InboxError) -> Failure + '_ {
    move |e| Failure::op(url.scrub(&e.to_string()))
}
