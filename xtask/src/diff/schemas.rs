//! Component schemas: removed and added types, enum values, object properties (their types,
//! whether they are required, whether the generated field is an `Option`), and run-time limits.

use std::collections::BTreeMap;

use serde_json::Value;

use super::spec::{Usage, is_true, required, schemas, signature};
use super::{Change, Impact};

/// Limits that the generated code checks at run time but that do not change a type.
const CONSTRAINTS: [&str; 11] = [
    "maxLength",
    "minLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "default",
];

pub(super) fn diff_schemas(
    old: &Value,
    new: &Value,
    old_use: &Usage,
    new_use: &Usage,
    changes: &mut Vec<Change>,
) {
    let (before, after) = (schemas(old), schemas(new));
    for (name, schema) in &before {
        let place = format!("schema {name}");
        let Some(now) = after.get(name) else {
            changes.push(Change {
                place,
                what: "removed: the type is gone".to_owned(),
                impact: Impact::Breaking,
            });
            continue;
        };
        let in_request = old_use.request.contains(name) || new_use.request.contains(name);
        let in_response = old_use.response.contains(name) || new_use.response.contains(name);
        diff_enum(&place, schema, now, true, changes);
        diff_object(&place, schema, now, in_request, in_response, changes);
        diff_constraints(&place, schema, now, changes);
    }
    for name in after.keys() {
        if !before.contains_key(name) {
            changes.push(Change {
                place: format!("schema {name}"),
                what: "added".to_owned(),
                impact: Impact::Additive,
            });
        }
    }
}

/// Enum values: a named string enum is generated open (new values arrive as `Unknown`), an inline
/// one closed.
fn diff_enum(place: &str, old: &Value, new: &Value, named: bool, changes: &mut Vec<Change>) {
    let values = |schema: &Value| -> Vec<String> {
        schema
            .get("enum")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (was, is) = (values(old), values(new));
    if was.is_empty() && is.is_empty() {
        return;
    }
    for value in &was {
        if !is.contains(value) {
            changes.push(Change {
                place: place.to_owned(),
                what: format!("enum value `{value}` removed"),
                impact: Impact::Breaking,
            });
        }
    }
    for value in &is {
        if !was.contains(value) {
            changes.push(Change {
                place: place.to_owned(),
                // Every generated enum is #[non_exhaustive], so a new variant breaks no code.
                what: format!(
                    "enum value `{value}` added{}",
                    if named {
                        " (an open enum: it arrived as Unknown before)"
                    } else {
                        " (an inline enum: older clients refuse the new value when decoding)"
                    }
                ),
                impact: Impact::Additive,
            });
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn diff_object(
    place: &str,
    old: &Value,
    new: &Value,
    in_request: bool,
    in_response: bool,
    changes: &mut Vec<Change>,
) {
    let props = |schema: &Value| -> BTreeMap<String, Value> {
        schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    };
    let (was, is) = (props(old), props(new));
    let (was_req, is_req) = (required(old), required(new));
    let (old_sig, new_sig) = (signature(Some(old)), signature(Some(new)));
    if was.is_empty() && is.is_empty() {
        // Not an object: compare the shape as a whole (enums are compared on their own).
        let strip = |s: &str| s.split(" enum [").next().unwrap_or(s).to_owned();
        if strip(&old_sig) != strip(&new_sig) {
            changes.push(Change {
                place: place.to_owned(),
                what: format!("type {old_sig} -> {new_sig}"),
                impact: Impact::Breaking,
            });
        }
        return;
    }
    for (name, schema) in &was {
        let here = format!("{place}.{name}");
        let Some(now) = is.get(name) else {
            changes.push(Change {
                place: here,
                what: "property removed (its field is gone)".to_owned(),
                impact: Impact::Breaking,
            });
            continue;
        };
        let strip = |s: String| {
            s.split(" enum [")
                .next()
                .unwrap_or(&s)
                .trim_end_matches(" or null")
                .to_owned()
        };
        let (a, b) = (strip(signature(Some(schema))), strip(signature(Some(now))));
        if a != b {
            changes.push(Change {
                place: here.clone(),
                what: format!("type {a} -> {b}"),
                impact: Impact::Breaking,
            });
        }
        diff_enum(&here, schema, now, false, changes);
        diff_constraints(&here, schema, now, changes);
        let (was_required, is_required) = (was_req.contains(name), is_req.contains(name));
        if !was_required && is_required && in_request {
            changes.push(Change {
                place: here.clone(),
                what: "optional -> required in a request: callers must now set it".to_owned(),
                impact: Impact::Breaking,
            });
        }
        match (is_option(schema, was_required), is_option(now, is_required)) {
            (false, true) => changes.push(Change {
                place: here,
                what: format!(
                    "{} -> {}: the field becomes an Option{}",
                    presence(schema, was_required),
                    presence(now, is_required),
                    if in_response {
                        ""
                    } else {
                        " (in a request only: builders take the same values)"
                    }
                ),
                impact: if in_response {
                    Impact::Breaking
                } else {
                    Impact::Additive
                },
            }),
            (true, false) => changes.push(Change {
                place: here,
                what: format!(
                    "{} -> {}: the field is no longer an Option",
                    presence(schema, was_required),
                    presence(now, is_required)
                ),
                impact: Impact::Breaking,
            }),
            (false, false) | (true, true) if was_required != is_required => {
                changes.push(Change {
                    place: here,
                    what: format!(
                        "{} -> {} (same Rust type)",
                        presence(schema, was_required),
                        presence(now, is_required)
                    ),
                    impact: Impact::Other,
                });
            }
            _ => {}
        }
    }
    for (name, schema) in &is {
        if was.contains_key(name) {
            continue;
        }
        let required = is_req.contains(name);
        let shape = signature(Some(schema));
        let breaking = required && in_request;
        changes.push(Change {
            place: format!("{place}.{name}"),
            what: format!(
                "{} property added ({shape}){}",
                if required { "required" } else { "optional" },
                if breaking {
                    ": requests must now carry it"
                } else {
                    ""
                }
            ),
            impact: if breaking {
                Impact::Breaking
            } else {
                Impact::Additive
            },
        });
    }
}

/// Whether the generator makes this property an `Option`: when it may be null, or when it may be
/// absent and has no default to stand in (an array that may be empty defaults to empty).
fn is_option(schema: &Value, required: bool) -> bool {
    if is_true(schema.get("nullable")) {
        return true;
    }
    if required || schema.get("default").is_some() {
        return false;
    }
    let empty_array_ok = schema.get("type").and_then(Value::as_str) == Some("array")
        && schema.get("minItems").and_then(Value::as_u64).unwrap_or(0) == 0;
    !empty_array_ok
}

/// `required`, `optional` and/or `nullable`, in words.
fn presence(schema: &Value, required: bool) -> String {
    let base = if required { "required" } else { "optional" };
    if is_true(schema.get("nullable")) {
        format!("{base} nullable")
    } else {
        base.to_owned()
    }
}

fn diff_constraints(place: &str, old: &Value, new: &Value, changes: &mut Vec<Change>) {
    for key in CONSTRAINTS {
        let (was, is) = (old.get(key), new.get(key));
        if was != is {
            let show = |v: Option<&Value>| v.map_or_else(|| "none".to_owned(), Value::to_string);
            changes.push(Change {
                place: place.to_owned(),
                what: format!("{key} {} -> {}", show(was), show(is)),
                impact: Impact::Other,
            });
        }
    }
}
