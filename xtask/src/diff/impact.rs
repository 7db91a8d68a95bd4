//! The verdict: how each change affects users ([`Impact`]), the changes found ([`Change`],
//! [`SpecDiff`]), and the summary a changelog entry starts from ([`SpecDiff::report`]).

use std::fmt;

use super::Version;

/// How a change affects users of `chip-gate-api` and `chip-gate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Impact {
    /// Nothing users can see in the Rust API (descriptions, limits checked at run time).
    Other,
    /// New things: existing code keeps compiling and working.
    Additive,
    /// Existing code may stop compiling or behave differently.
    Breaking,
}

impl fmt::Display for Impact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Impact::Other => "no API change",
            Impact::Additive => "additive",
            Impact::Breaking => "BREAKING",
        })
    }
}

/// One difference between the two specs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Where: `operation webhooks_list`, `schema Webhook`, `schema Webhook.title`...
    pub place: String,
    /// What changed, in words.
    pub what: String,
    /// What it means for users.
    pub impact: Impact,
}

/// Every difference, in a stable order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecDiff {
    /// The changes, operations first, then schemas.
    pub changes: Vec<Change>,
}

impl SpecDiff {
    /// The most serious impact, or `None` when nothing changed.
    pub fn impact(&self) -> Option<Impact> {
        self.changes.iter().map(|c| c.impact).max()
    }

    /// The breaking changes.
    pub fn breaking(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.impact == Impact::Breaking)
    }

    /// The summary: one line per change, then the verdict and the bump `current` needs.
    pub fn report(&self, current: Option<Version>) -> String {
        let mut out = String::new();
        if self.changes.is_empty() {
            out.push_str("No changes that reach the generated code.\n");
            return out;
        }
        let width = self
            .changes
            .iter()
            .map(|c| c.place.len())
            .max()
            .unwrap_or(0);
        for change in &self.changes {
            let mark = match change.impact {
                Impact::Breaking => "!",
                Impact::Additive => "+",
                Impact::Other => "~",
            };
            out.push_str(&format!(
                "{mark} {:width$}  {}  [{}]\n",
                change.place, change.what, change.impact
            ));
        }
        let breaking = self.breaking().count();
        let additive = self
            .changes
            .iter()
            .filter(|c| c.impact == Impact::Additive)
            .count();
        out.push('\n');
        let impact = self.impact().unwrap_or(Impact::Other);
        match impact {
            Impact::Breaking => out.push_str(&format!(
                "Verdict: BREAKING for users of chip-gate-api and chip-gate ({breaking} breaking, \
                 {additive} additive change(s)).\n"
            )),
            Impact::Additive => out.push_str(&format!(
                "Verdict: additive ({additive} change(s)); code that uses chip-gate-api and chip-gate \
                 keeps compiling.\n"
            )),
            Impact::Other => out.push_str(
                "Verdict: no change to the Rust API (descriptions or run-time limits only).\n",
            ),
        }
        if let Some(version) = current {
            let needed = version.bumped_for(impact);
            let kind = match (impact, version.major) {
                (Impact::Breaking, 0) => "a breaking release below 1.0: the minor number",
                (Impact::Breaking, _) => "a major release",
                (Impact::Additive, 0) => "a compatible release below 1.0: the patch number",
                (Impact::Additive, _) => "a minor release",
                (Impact::Other, _) => "a patch release",
            };
            out.push_str(&format!(
                "Semver: {version} -> {needed} at least ({kind}).\n"
            ));
        }
        out
    }
}
