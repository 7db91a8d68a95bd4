//! How webhooks are shown: a readable table, or JSON.

use chip_gate::Webhook;

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<(), crate::Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| crate::Failure::op(format!("cannot write JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

fn events(webhook: &Webhook) -> String {
    if webhook.all_events {
        "(all events)".to_owned()
    } else {
        webhook
            .event_names()
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Keeps a table cell on one line and within `width` characters.
fn cell(text: &str, width: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
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
    let header = ["ID", "TITLE", "EVENTS", "CALLBACK"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, value) in widths.iter_mut().zip(row) {
            *width = (*width).max(value.chars().count());
        }
    }
    let line = |row: &[String; 4]| {
        let mut out = String::new();
        for (i, (value, width)) in row.iter().zip(widths).enumerate() {
            if i == 3 {
                out.push_str(value);
            } else {
                let pad = width - value.chars().count();
                out.push_str(value);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        out
    };
    let mut out = line(&header);
    for row in &rows {
        out.push('\n');
        out.push_str(&line(row));
    }
    out
}

/// A Unix time as CHIP sent it, or `-` when it was left out.
fn unix_time(seconds: Option<i64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), |s| s.to_string())
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
        webhook.public_key.trim_end()
    )
}
