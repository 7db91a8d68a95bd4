//! How webhooks are shown: a readable table, or JSON.
//!
//! Everything a server sent is cleaned of terminal control characters before it is shown (JSON
//! output escapes them anyway).

use chip_gate::Webhook;
use jiff::SignedDuration;
use jiff::civil::DateTime;

use crate::outln;
use crate::term::{clean, clean_lines};

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<(), crate::common::Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| crate::common::Failure::op(format!("cannot write JSON: {e}")))?;
    outln!("{text}")
}

fn events(webhook: &Webhook) -> String {
    if webhook.all_events {
        "(all events)".to_owned()
    } else {
        webhook
            .event_names()
            .iter()
            .map(|e| clean(e.as_str()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Keeps a table cell on one line and within `width` characters.
pub fn cell(text: &str, width: usize) -> String {
    let flat = clean(text);
    if flat.chars().count() <= width {
        flat
    } else {
        let cut: String = flat.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Formats webhooks as an aligned table with a header row.
pub fn table(webhooks: &[Webhook]) -> String {
    let rows: Vec<[String; 4]> = webhooks
        .iter()
        .map(|w| {
            [
                w.id.to_string(),
                cell(&w.title, 40),
                cell(&events(w), 60),
                cell(&w.callback, 60),
            ]
        })
        .collect();
    aligned(&["ID", "TITLE", "EVENTS", "CALLBACK"], &rows).join("\n")
}

/// The lines of a table: `header`, then `rows`, in columns two spaces apart, each as wide as its
/// widest value; the last column is not padded.
pub fn aligned<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> Vec<String> {
    let mut widths = header.map(|h| h.chars().count());
    for row in rows {
        for (width, value) in widths.iter_mut().zip(row) {
            *width = (*width).max(value.chars().count());
        }
    }
    let line = |row: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (value, width)) in row.zip(widths).enumerate() {
            out.push_str(value);
            if i + 1 < N {
                out.push_str(&" ".repeat(width - value.chars().count() + 2));
            }
        }
        out
    };
    let mut lines = vec![line(&mut header.iter().copied())];
    lines.extend(
        rows.iter()
            .map(|row| line(&mut row.iter().map(String::as_str))),
    );
    lines
}

/// A Unix time as RFC 3339 in UTC (`2026-11-27T13:56:15Z`), or `-` when it was left out. `--json`
/// keeps the raw seconds.
fn unix_time(seconds: Option<i64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), rfc3339)
}

/// Formats Unix seconds as RFC 3339 in UTC, for years 0 to 9999; anything outside is shown as the
/// raw number of seconds.
pub fn rfc3339(seconds: i64) -> String {
    const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);
    match EPOCH.checked_add(SignedDuration::from_secs(seconds)) {
        // Whole seconds: shown without a fraction.
        Ok(utc) if utc.year() >= 0 => format!("{utc}Z"),
        _ => format!("{seconds} (Unix seconds)"),
    }
}

/// Formats one webhook as `field: value` lines.
pub fn details(webhook: &Webhook) -> String {
    format!(
        "id:         {}\ntitle:      {}\nevents:     {}\ncallback:   {}\ncreated_on: {}\nupdated_on: {}\npublic_key:\n{}",
        webhook.id,
        cell(&webhook.title, 200),
        events(webhook),
        cell(&webhook.callback, 600),
        unix_time(webhook.created_on),
        unix_time(webhook.updated_on),
        clean_lines(webhook.public_key.trim_end())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_seconds_read_as_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_784_638), "2026-11-27T13:03:58Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(-62_167_219_200), "0000-01-01T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_800), "253402300800 (Unix seconds)");
        assert_eq!(rfc3339(-62_167_219_201), "-62167219201 (Unix seconds)");
        assert_eq!(rfc3339(i64::MAX), format!("{} (Unix seconds)", i64::MAX));
        assert_eq!(rfc3339(i64::MIN), format!("{} (Unix seconds)", i64::MIN));
        assert_eq!(unix_time(None), "-");
    }

    #[test]
    fn tables_align_all_but_the_last_column() {
        let rows = [["1".to_owned(), "long value".to_owned(), "x".to_owned()]];
        assert_eq!(
            aligned(&["ID", "NAME", "LAST"], &rows),
            ["ID  NAME        LAST", "1   long value  x"]
        );
    }
}
