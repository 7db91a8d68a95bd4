//! `chip inbox status`, `list` and `show`: what the inbox holds, as text or JSON.

use chip_gate_inbox::{DeliveryState, DeliverySummary, Inbox, ListFilter, StoredDelivery};

use crate::common::{Failure, Outcome};
use crate::output::cell;
use crate::term::{clean, clean_lines};
use crate::{outln, output};

use super::open::failed;
use super::time::{age, human, time_ms};
use super::url::DatabaseUrl;

/// `chip inbox status`.
pub(super) async fn status(inbox: &Inbox, url: &DatabaseUrl, json: bool) -> Outcome {
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
    Ok(0)
}

/// `chip inbox list`: a page of deliveries matching `filter` (at most `limit`).
pub(super) async fn list(
    inbox: &Inbox,
    url: &DatabaseUrl,
    filter: &ListFilter,
    limit: u32,
    json: bool,
) -> Outcome {
    let items = inbox.list(filter).await.map_err(failed(url))?;
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
    Ok(0)
}

/// `chip inbox show`.
pub(super) async fn show(
    inbox: &Inbox,
    url: &DatabaseUrl,
    id: i64,
    json: bool,
    body: bool,
) -> Outcome {
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
    Ok(0)
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
         stale:           {} (of which expired: {}, at or below the retention horizon)\n  \
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
        counts.expired,
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
    let header = [
        "ID",
        "STATE",
        "ATTEMPTS",
        "RECEIVED",
        "EVENT",
        "OBJECT",
        "LAST ERROR",
    ];
    let rows: Vec<[String; 7]> = items
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
    // The last error may be empty: no padding is left before it.
    output::aligned(&header, &rows)
        .iter()
        .map(|line| line.trim_end())
        .collect::<Vec<_>>()
        .join("\n")
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
