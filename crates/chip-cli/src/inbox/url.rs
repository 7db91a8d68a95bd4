//! The inbox's database URL: where it comes from, the SQLite file it names, and showing it (or any
//! text holding its password) without the password.

use std::path::PathBuf;

use crate::common::{Failure, env_value};
use crate::term::clean;

use super::DATABASE_URL_ENV;

/// The database URL, its password (if any) and how to show it.
pub(super) struct DatabaseUrl {
    pub(super) url: String,
    password: Option<String>,
}

impl DatabaseUrl {
    pub(super) fn new(url: String) -> Self {
        let password = password_span(&url).map(|(start, end)| url[start..end].to_owned());
        DatabaseUrl { url, password }
    }

    /// The URL with its password replaced by `***`.
    pub(super) fn shown(&self) -> String {
        clean(&redact(&self.url))
    }

    /// `text` with the password (as written, and percent-decoded) replaced by `***`.
    pub(super) fn scrub(&self, text: &str) -> String {
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
pub(super) fn database_url(flag: Option<&str>) -> Result<DatabaseUrl, Failure> {
    let flag = flag.map(str::trim).filter(|u| !u.is_empty());
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
    Some(PathBuf::from(percent_decode(path)))
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
}
