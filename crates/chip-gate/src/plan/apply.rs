//! Applying a plan: its changes made one by one, in order, stopping at the first that fails.

use std::fmt;

use super::compute::{Change, Plan};
use super::render::quoted;
use crate::Webhook;
use crate::client::Client;
use crate::error::Error;

/// How one change went.
#[derive(Debug)]
pub enum StepOutcome {
    /// Made; the webhook as CHIP answered (none for a delete).
    Done(Option<Box<Webhook>>),
    /// A delete answered 404: the webhook was already gone (for instance an earlier, interrupted
    /// delete went through).
    AlreadyGone,
    /// The call failed; apply stopped here. The change may or may not have been made (a create whose
    /// answer was lost): plan again, and the next apply converges.
    Failed(Error),
    /// Not tried, because an earlier step failed.
    NotRun,
}

/// One change and how it went.
#[derive(Debug)]
pub struct Step {
    /// The change.
    pub change: Change,
    /// How it went.
    pub outcome: StepOutcome,
}

impl Step {
    /// Whether a write call was made for it (successful or not).
    pub fn was_attempted(&self) -> bool {
        !matches!(self.outcome, StepOutcome::NotRun)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = match &self.change {
            Change::Update { id, .. } | Change::Delete { id, .. } => Some(*id),
            Change::Create { .. } => None,
        };
        let title = quoted(self.change.title());
        match &self.outcome {
            StepOutcome::Done(webhook) => {
                let id = id.or_else(|| webhook.as_ref().map(|w| w.id));
                let past = match &self.change {
                    Change::Create { .. } => "created",
                    Change::Update { .. } => "updated",
                    Change::Delete { .. } => "deleted",
                };
                match id {
                    Some(id) => write!(f, "{past} {title} ({id})"),
                    None => write!(f, "{past} {title}"),
                }
            }
            StepOutcome::AlreadyGone => write!(f, "deleted {title}: it was already gone"),
            StepOutcome::Failed(error) => {
                write!(f, "failed to {} {title}: {error}", self.change.verb())
            }
            StepOutcome::NotRun => write!(f, "not run: {} {title}", self.change.verb()),
        }
    }
}

/// What [`apply()`] did, step by step.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// Every change of the plan, in order, with its outcome.
    pub steps: Vec<Step>,
}

impl ApplyReport {
    /// The error that stopped the apply, if any.
    pub fn failure(&self) -> Option<&Error> {
        self.steps.iter().find_map(|s| match &s.outcome {
            StepOutcome::Failed(error) => Some(error),
            _ => None,
        })
    }

    /// Whether every change was made.
    pub fn is_complete(&self) -> bool {
        self.steps
            .iter()
            .all(|s| matches!(s.outcome, StepOutcome::Done(_) | StepOutcome::AlreadyGone))
    }

    /// How many write calls were made (one per attempted change; the client's own retries of a
    /// `PUT` or `DELETE` are not counted separately).
    pub fn write_calls(&self) -> usize {
        self.steps.iter().filter(|s| s.was_attempted()).count()
    }
}

/// Makes the plan's changes one by one, in order, and stops at the first that fails.
///
/// A plan with no changes makes no call. Creates are `POST`s (never retried once they may have
/// reached CHIP), updates `PUT`s of the whole webhook, deletes `DELETE`s (a 404 means already
/// gone). After a failure, make a new plan: it sees what was done, including a create whose answer
/// was lost, so running plan and apply again converges.
pub async fn apply(client: &Client, plan: &Plan) -> ApplyReport {
    apply_with_progress(client, plan, |_| {}).await
}

/// [`apply()`], calling `progress` after each step (to print it as it happens).
pub async fn apply_with_progress(
    client: &Client,
    plan: &Plan,
    mut progress: impl FnMut(&Step),
) -> ApplyReport {
    let webhooks = client.webhooks();
    let mut report = ApplyReport::default();
    let mut failed = false;
    for change in plan.changes() {
        let outcome = if failed {
            StepOutcome::NotRun
        } else {
            let result = match change {
                Change::Create { webhook } => webhooks
                    .create(webhook.to_new_webhook())
                    .await
                    .map(|w| StepOutcome::Done(Some(Box::new(w)))),
                Change::Update { id, webhook, .. } => webhooks
                    .update(*id, webhook.to_new_webhook())
                    .await
                    .map(|w| StepOutcome::Done(Some(Box::new(w)))),
                Change::Delete { id, .. } => match webhooks.delete(*id).await {
                    Ok(()) => Ok(StepOutcome::Done(None)),
                    Err(e) if e.status().is_some_and(|s| s.as_u16() == 404) => {
                        Ok(StepOutcome::AlreadyGone)
                    }
                    Err(e) => Err(e),
                },
            };
            result.unwrap_or_else(|error| {
                failed = true;
                StepOutcome::Failed(error)
            })
        };
        let step = Step {
            change: change.clone(),
            outcome,
        };
        if step.was_attempted() {
            progress(&step);
        }
        report.steps.push(step);
    }
    report
}
