//! The inbox's database URL: where it comes from, the SQLite file it names, and showing it (or any
//! text holding its password) without the password.

use std::borrow::Cow;
use std::path::PathBuf;

use percent_encoding::percent_decode_str;
use url::Url;

use crate::common::{Failure, env_value};
use crate::term::clean;

use super::DATABASE_URL_ENV;

/// The database URL, its password (if any) and how to show it.
pub(crate) struct DatabaseUrl {
    pub(super) url: String,
    /// The password as the URL holds it: percent-encoded, and as written when that differs.
    passwords: Vec<String>,
}

impl DatabaseUrl {
    pub(crate) fn new(url: String) -> Self {
        let mut passwords = Vec::new();
        if let Ok(parsed) = Url::parse(&url)
            && let Some(password) = parsed.password()
        {
            passwords.push(password.to_owned());
        }
        if let Some((start, end)) = unparsed_password(&url) {
            passwords.push(url[start..end].to_owned());
        }
        passwords.dedup();
        DatabaseUrl { url, passwords }
    }

    /// Whether the URL holds a password.
    pub(super) fn has_password(&self) -> bool {
        !self.passwords.is_empty()
    }

    /// The URL with its password replaced by `***`.
    pub(super) fn shown(&self) -> String {
        clean(&redact(&self.url))
    }

    /// `text` with the password (as written, and percent-decoded) replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut text = redact(text);
        for password in &self.passwords {
            let decoded = percent_decode_str(password).decode_utf8_lossy();
            for secret in [password.as_str(), &decoded] {
                if !secret.is_empty() {
                    text = text.replace(secret, "***");
                }
            }
        }
        text
    }
}

/// Replaces the password of every URL in `text` (a word holding `scheme://`) with `***`.
pub(super) fn redact(text: &str) -> String {
    let is_separator = |c: char| c.is_whitespace() || matches!(c, '`' | '\'' | '"');
    text.split_inclusive(is_separator)
        .map(|piece| {
            let word = piece.trim_end_matches(is_separator);
            let Some(found) = word.find("://") else {
                return Cow::Borrowed(piece);
            };
            let is_scheme = |c: &char| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.');
            let start = found - word[..found].chars().rev().take_while(is_scheme).count();
            Cow::Owned(format!(
                "{}{}{}",
                &word[..start],
                redact_url(&word[start..]),
                &piece[word.len()..]
            ))
        })
        .collect()
}

/// `url` with its password replaced by `***`, as the `url` crate (and so the database driver)
/// reads it.
fn redact_url(url: &str) -> Cow<'_, str> {
    match Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() && parsed.set_password(Some("***")).is_ok() {
                Cow::Owned(parsed.into())
            } else {
                Cow::Borrowed(url)
            }
        }
        // Not a URL the crate reads (a bad port, say), yet it may hold a password all the same.
        Err(_) => match unparsed_password(url) {
            Some((start, end)) => Cow::Owned(format!("{}***{}", &url[..start], &url[end..])),
            None => Cow::Borrowed(url),
        },
    }
}

/// Where the password is in `url` as written: after the first `:` of the user info, before the
/// last `@` of the authority. Used where the `url` crate cannot help: for a URL it refuses (which
/// must still not show its password), and to find the password exactly as written.
fn unparsed_password(url: &str) -> Option<(usize, usize)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority = rest.find(['/', '?', '#']).map_or(rest, |end| &rest[..end]);
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':')?;
    Some((start + colon + 1, start + at))
}

/// The database URL: `--database-url`, else `CHIP_INBOX_DATABASE_URL`; blank means unset.
pub(super) fn database_url(flag: Option<&str>) -> Result<DatabaseUrl, Failure> {
    let flag = flag.map(str::trim).filter(|u| !u.is_empty());
    let url = match flag {
        Some(url) => {
            let url = DatabaseUrl::new(url.to_owned());
            if url.has_password() {
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

/// The file a `sqlite:` URL names, as `sqlx` reads it, or `None` for an in-memory database.
pub(super) fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url
        .get("sqlite:".len()..)
        .unwrap_or_default()
        .trim_start_matches("//");
    let (path, params) = rest.split_once('?').unwrap_or((rest, ""));
    if path == ":memory:" || params.split('&').any(|p| p == "mode=memory") {
        return None;
    }
    Some(PathBuf::from(
        percent_decode_str(path).decode_utf8_lossy().into_owned(),
    ))
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
        assert!(!DatabaseUrl::new("sqlite://x.db".to_owned()).has_password());
        // An `@` in the password, percent-encoded or not; text around a URL, and quotes.
        assert_eq!(
            DatabaseUrl::new("postgres://u:p@ss@h/db".to_owned()).shown(),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact("at 'postgres://u:p@h/db': (mysql://v:q@h) x://"),
            "at 'postgres://u:***@h/db': (mysql://v:***@h) x://"
        );
        // A URL the `url` crate refuses still hides its password; non-URLs are kept.
        let bad_port = DatabaseUrl::new("postgres://shop:hunter2@h:99999999/db".to_owned());
        assert!(bad_port.has_password());
        assert_eq!(bad_port.shown(), "postgres://shop:***@h:99999999/db");
        assert_eq!(bad_port.scrub("x hunter2 y"), "x *** y");
        for kept in ["chip-inbox.db", "sqlite:rel.db", "sqlite::memory:", "a:b@c"] {
            assert_eq!(redact(kept), kept);
        }
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
}
