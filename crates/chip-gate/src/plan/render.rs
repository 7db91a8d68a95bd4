//! Rendering a plan as text: what `chip webhooks plan` prints. (Its JSON is the `Serialize` of
//! the plan's types.)

use std::fmt;

use uuid::Uuid;

use super::compute::{Change, DeleteReason, FieldChange, Plan};
use super::file::DesiredWebhook;
use super::vars::is_forbidden_char;
use crate::EventName;

pub(super) fn quoted(text: &str) -> String {
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
    writeln!(f, "      callback:   {}", shown(webhook.callback()))?;
    if webhook.is_all_events() {
        writeln!(f, "      all_events: true")
    } else {
        let names: Vec<&str> = webhook
            .event_names()
            .iter()
            .map(EventName::as_str)
            .collect();
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
        for change in self.changes() {
            match change {
                Change::Create { webhook } => {
                    writeln!(f, "+ create {}", quoted(webhook.title()))?;
                    write_settings(f, webhook)?;
                }
                Change::Update {
                    id,
                    fields,
                    webhook,
                } => {
                    writeln!(f, "~ update {} ({id})", quoted(webhook.title()))?;
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
        for webhook in self.unchanged() {
            writeln!(f, "= unchanged {} ({})", quoted(&webhook.title), webhook.id)?;
        }
        // With pruning, each extra copy is reported once, by its `- delete` block (which names the
        // one kept); without, nothing deletes them, so each title is reported once here.
        for duplicate in self.duplicates().iter().filter(|_| !self.prune) {
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
        if !self.unmanaged().is_empty() {
            writeln!(
                f,
                "  ({} other webhook(s) on the account are not in the file and are left alone)",
                self.unmanaged().len()
            )?;
        }
        let (create, update, delete) = self.counts();
        if self.changes().is_empty() {
            if self.duplicates().is_empty() {
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
                self.unchanged().len()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Webhook;
    use crate::plan::{PlanOptions, WebhookFile};
    use crate::webhooks::NewWebhook;

    #[test]
    fn plan_output_cannot_be_forged_by_a_callback() {
        assert_eq!(shown("https://a.example/x"), "https://a.example/x");
        assert_eq!(
            shown("https://a.example/\n+ create \"evil\"\u{1b}[2J\u{202e}"),
            "https://a.example/\\u{a}+ create \"evil\"\\u{1b}[2J\\u{202e}"
        );
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
}
