//! What changed between two versions of the spec, and what each change means for users of the
//! generated crate and the wrapper: additive (their code keeps compiling and working), breaking
//! (some of their code stops compiling or behaves differently), or neither (wording, limits on the
//! wire). The summary is what a changelog entry for a regeneration starts from.
//!
//! The rules follow what the generator makes of each construct: a property becomes a struct field
//! (`Option<T>` when it may be null, or absent without a default), every generated struct and enum
//! is `#[non_exhaustive]` (so new fields and variants break nobody), request types are built
//! through builders, a named string enum becomes an open enum (`Unknown(String)` for new values),
//! an operation a method, a parameter a builder method.
//!
//! One job per module: `spec` reads a spec, `operations` and `schemas` compare the two specs'
//! operations and component schemas, `impact` holds the verdict and its report, `version` the
//! semver bump it needs.

mod impact;
mod operations;
mod schemas;
mod spec;
mod version;

use serde_json::Value;

pub use impact::{Change, Impact, SpecDiff};
pub use version::Version;

use spec::Usage;

/// Compares two specs (as parsed documents).
pub fn diff(old: &Value, new: &Value) -> SpecDiff {
    let mut changes = Vec::new();
    let (old_use, new_use) = (Usage::of(old), Usage::of(new));
    operations::diff_operations(old, new, &mut changes);
    schemas::diff_schemas(old, new, &old_use, &new_use, &mut changes);
    SpecDiff { changes }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Value {
        match crate::load_document(
            include_str!("../../../openapi/chip-collect-webhooks.yaml"),
            "spec",
        ) {
            Ok(spec) => spec,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn the_same_spec_has_no_changes() {
        assert_eq!(diff(&spec(), &spec()).impact(), None);
    }

    /// Every mutation of the walk is named at its place, additive ones never as breaking, breaking
    /// ones always, with the bump they need.
    #[test]
    fn each_mutation_is_named_with_its_impact() {
        for mutation in crate::mutations::all() {
            let mut changed = spec();
            if let Err(e) = (mutation.apply)(&mut changed) {
                panic!("{}: {e}", mutation.name);
            }
            let found = diff(&spec(), &changed);
            assert!(
                found
                    .changes
                    .iter()
                    .any(|c| c.place.starts_with(mutation.place)),
                "{}: not named:\n{}",
                mutation.name,
                found.report(None)
            );
            let report = found.report(Version::parse("0.1.0"));
            if mutation.breaking {
                assert_eq!(found.impact(), Some(Impact::Breaking), "{}", mutation.name);
                assert!(
                    found
                        .breaking()
                        .any(|c| c.place.starts_with(mutation.place)),
                    "{}: {report}",
                    mutation.name
                );
                assert!(report.contains("0.1.0 -> 0.2.0"), "{report}");
            } else {
                assert_eq!(
                    found.impact(),
                    Some(Impact::Additive),
                    "{}: {report}",
                    mutation.name
                );
                assert!(report.contains("0.1.0 -> 0.1.1"), "{report}");
            }
        }
    }
}
