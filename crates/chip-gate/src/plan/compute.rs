//! Computing the plan: the file's webhooks against the account's, as creates, updates and deletes.

use std::collections::{BTreeSet, HashMap};

use futures::TryStreamExt;
use serde::Serialize;
use uuid::Uuid;

use super::file::{DesiredWebhook, WebhookFile};
use crate::client::Client;
use crate::error::Error;
use crate::{EventName, Webhook};

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
///
/// [`apply()`]: super::apply()
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
///
/// [`apply()`]: super::apply()
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    changes: Vec<Change>,
    unchanged: Vec<AccountWebhook>,
    duplicates: Vec<Duplicate>,
    unmanaged: Vec<AccountWebhook>,
    pub(super) prune: bool,
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
    ///
    /// [`apply()`]: super::apply()
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
        for desired in file.webhooks() {
            let Some(candidates) = by_title.get(desired.title()) else {
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
                    title: desired.title().to_owned(),
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
}

impl DesiredWebhook {
    /// How `existing` differs from this webhook; empty when it matches. The title is the identity
    /// and is not compared; events are compared as a set.
    pub fn differences(&self, existing: &Webhook) -> Vec<FieldChange> {
        let mut changes = Vec::new();
        if existing.callback != self.callback() {
            changes.push(FieldChange::Callback {
                from: existing.callback.clone(),
                to: self.callback().to_owned(),
            });
        }
        if existing.all_events != self.is_all_events() {
            changes.push(FieldChange::AllEvents {
                from: existing.all_events,
                to: self.is_all_events(),
            });
        }
        if !self.is_all_events() {
            let have: BTreeSet<&str> = existing.event_names().iter().map(|e| e.as_str()).collect();
            let want: BTreeSet<&str> = self.event_names().iter().map(EventName::as_str).collect();
            let added: Vec<String> = self
                .event_names()
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
