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

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::Value;

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

/// A `major.minor.patch` version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

impl Version {
    /// Parses `1.2.3` (a pre-release or build suffix is ignored).
    pub fn parse(text: &str) -> Option<Version> {
        let core = text.trim().split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
        let version = Version {
            major: parts.next()??,
            minor: parts.next()??,
            patch: parts.next()??,
        };
        parts.next().is_none().then_some(version)
    }

    /// The smallest version after this one that Cargo treats as allowing `impact`: below 1.0 a
    /// breaking change moves the minor number and anything else the patch number.
    pub fn bumped_for(self, impact: Impact) -> Version {
        match (impact, self.major) {
            (Impact::Breaking, 0) => Version {
                major: 0,
                minor: self.minor + 1,
                patch: 0,
            },
            (Impact::Breaking, major) => Version {
                major: major + 1,
                minor: 0,
                patch: 0,
            },
            (Impact::Additive, 0) | (Impact::Other, _) => Version {
                patch: self.patch + 1,
                ..self
            },
            (Impact::Additive, _) => Version {
                minor: self.minor + 1,
                patch: 0,
                ..self
            },
        }
    }

    /// Whether going from `self` to `to` is a large enough bump for `impact`.
    pub fn allows(self, to: Version, impact: Impact) -> bool {
        to >= self.bumped_for(impact)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
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

/// Compares two specs (as parsed documents).
pub fn diff(old: &Value, new: &Value) -> SpecDiff {
    let mut changes = Vec::new();
    let (old_use, new_use) = (Usage::of(old), Usage::of(new));
    diff_operations(old, new, &mut changes);
    diff_schemas(old, new, &old_use, &new_use, &mut changes);
    SpecDiff { changes }
}

/// One operation, found by its id.
struct Op<'a> {
    method: String,
    path: String,
    op: &'a Value,
    path_item: &'a Value,
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn operations(spec: &Value) -> BTreeMap<String, Op<'_>> {
    let mut out = BTreeMap::new();
    if let Some(paths) = spec.get("paths").and_then(Value::as_object) {
        for (path, item) in paths {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    let id = op.get("operationId").and_then(Value::as_str).map_or_else(
                        || format!("{} {path}", method.to_uppercase()),
                        str::to_owned,
                    );
                    out.insert(
                        id,
                        Op {
                            method: method.to_uppercase(),
                            path: path.clone(),
                            op,
                            path_item: item,
                        },
                    );
                }
            }
        }
    }
    out
}

/// The parameters of an operation (its own and its path item's), by `in` and name.
fn parameters<'a>(spec: &'a Value, op: &Op<'a>) -> BTreeMap<(String, String), &'a Value> {
    let mut out = BTreeMap::new();
    for list in [op.path_item.get("parameters"), op.op.get("parameters")]
        .into_iter()
        .flatten()
    {
        for param in list.as_array().into_iter().flatten() {
            let param = resolve(spec, param);
            let name = param.get("name").and_then(Value::as_str).unwrap_or("?");
            let place = param.get("in").and_then(Value::as_str).unwrap_or("?");
            out.insert((place.to_owned(), name.to_owned()), param);
        }
    }
    out
}

fn is_true(value: Option<&Value>) -> bool {
    value.and_then(Value::as_bool).unwrap_or(false)
}

/// Follows one local `$ref`.
fn resolve<'a>(spec: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix('#')
            .and_then(|pointer| spec.pointer(pointer))
            .unwrap_or(value),
        None => value,
    }
}

/// The schema of a request body or a response, if it has one.
fn body_schema<'a>(spec: &'a Value, holder: &'a Value) -> Option<&'a Value> {
    let holder = resolve(spec, holder);
    holder
        .get("content")?
        .as_object()?
        .values()
        .next()?
        .get("schema")
}

/// The success response (the first 2xx) of an operation: its status and schema.
fn success<'a>(spec: &'a Value, op: &'a Value) -> Option<(String, Option<&'a Value>)> {
    let responses = op.get("responses")?.as_object()?;
    responses
        .iter()
        .find(|(status, _)| status.starts_with('2'))
        .map(|(status, response)| (status.clone(), body_schema(spec, response)))
}

fn diff_operations(old: &Value, new: &Value, changes: &mut Vec<Change>) {
    let (before, after) = (operations(old), operations(new));
    for (id, op) in &before {
        let place = format!("operation {id}");
        let Some(now) = after.get(id) else {
            changes.push(Change {
                place,
                what: format!(
                    "removed (was {} {}): its method is gone",
                    op.method, op.path
                ),
                impact: Impact::Breaking,
            });
            continue;
        };
        if (op.method.as_str(), op.path.as_str()) != (now.method.as_str(), now.path.as_str()) {
            changes.push(Change {
                place: place.clone(),
                what: format!(
                    "moved from {} {} to {} {}",
                    op.method, op.path, now.method, now.path
                ),
                impact: Impact::Other,
            });
        }
        let (old_params, new_params) = (parameters(old, op), parameters(new, now));
        for ((kind, name), param) in &old_params {
            match new_params.get(&(kind.clone(), name.clone())) {
                None => changes.push(Change {
                    place: place.clone(),
                    what: format!("{kind} parameter `{name}` removed"),
                    impact: Impact::Breaking,
                }),
                Some(now_param) => {
                    let (was, is) = (
                        signature(param.get("schema")),
                        signature(now_param.get("schema")),
                    );
                    if was != is {
                        changes.push(Change {
                            place: place.clone(),
                            what: format!("{kind} parameter `{name}`: {was} -> {is}"),
                            impact: Impact::Breaking,
                        });
                    }
                    match (
                        is_true(param.get("required")),
                        is_true(now_param.get("required")),
                    ) {
                        (false, true) => changes.push(Change {
                            place: place.clone(),
                            what: format!("{kind} parameter `{name}` now required"),
                            impact: Impact::Breaking,
                        }),
                        (true, false) => changes.push(Change {
                            place: place.clone(),
                            what: format!("{kind} parameter `{name}` now optional"),
                            impact: Impact::Additive,
                        }),
                        _ => {}
                    }
                }
            }
        }
        for ((kind, name), param) in &new_params {
            if !old_params.contains_key(&(kind.clone(), name.clone())) {
                let required = is_true(param.get("required"));
                changes.push(Change {
                    place: place.clone(),
                    what: format!(
                        "{} {kind} parameter `{name}` added",
                        if required { "required" } else { "optional" }
                    ),
                    impact: if required {
                        Impact::Breaking
                    } else {
                        Impact::Additive
                    },
                });
            }
        }
        let (was, is) = (
            op.op.get("requestBody").and_then(|b| body_schema(old, b)),
            now.op.get("requestBody").and_then(|b| body_schema(new, b)),
        );
        let (was, is) = (signature_opt(was), signature_opt(is));
        if was != is {
            changes.push(Change {
                place: place.clone(),
                what: format!("request body: {was} -> {is}"),
                impact: Impact::Breaking,
            });
        }
        match (success(old, op.op), success(new, now.op)) {
            (Some((was_status, was_body)), Some((is_status, is_body))) => {
                let (was, is) = (signature_opt(was_body), signature_opt(is_body));
                if was != is {
                    changes.push(Change {
                        place: place.clone(),
                        what: format!("success body: {was} -> {is}"),
                        impact: Impact::Breaking,
                    });
                } else if was_status != is_status {
                    changes.push(Change {
                        place: place.clone(),
                        what: format!("success status {was_status} -> {is_status}"),
                        impact: Impact::Other,
                    });
                }
            }
            (None, None) => {}
            (was, is) => changes.push(Change {
                place: place.clone(),
                what: format!(
                    "success response {} -> {}",
                    was.map_or("none".into(), |(s, _)| s),
                    is.map_or("none".into(), |(s, _)| s)
                ),
                impact: Impact::Breaking,
            }),
        }
    }
    for (id, op) in &after {
        if !before.contains_key(id) {
            changes.push(Change {
                place: format!("operation {id}"),
                what: format!("added ({} {})", op.method, op.path),
                impact: Impact::Additive,
            });
        }
    }
}

fn signature_opt(schema: Option<&Value>) -> String {
    match schema {
        Some(schema) => signature(Some(schema)),
        None => "no body".to_owned(),
    }
}

/// A schema's Rust-relevant shape, in words: `string (uuid)`, `array of EventName`, `Webhook`,
/// `integer (int64) or null`.
fn signature(schema: Option<&Value>) -> String {
    let Some(schema) = schema else {
        return "no schema".to_owned();
    };
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return reference.rsplit('/').next().unwrap_or(reference).to_owned();
    }
    let mut text = match schema.get("type").and_then(Value::as_str) {
        Some("array") => format!("array of {}", signature(schema.get("items"))),
        Some(kind) => match schema.get("format").and_then(Value::as_str) {
            // Formats that change the generated type.
            Some(
                format @ ("uuid" | "int32" | "int64" | "date-time" | "date" | "float" | "double"),
            ) => {
                format!("{kind} ({format})")
            }
            _ => kind.to_owned(),
        },
        None if schema.get("properties").is_some() => "object".to_owned(),
        None => "any".to_owned(),
    };
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let names: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        text = format!("{text} enum [{}]", names.join(", "));
    }
    if is_true(schema.get("nullable")) {
        text.push_str(" or null");
    }
    text
}

/// Which component schemas requests and responses reach.
struct Usage {
    request: BTreeSet<String>,
    response: BTreeSet<String>,
}

impl Usage {
    fn of(spec: &Value) -> Usage {
        let mut request = BTreeSet::new();
        let mut response = BTreeSet::new();
        for op in operations(spec).values() {
            if let Some(schema) = op.op.get("requestBody").and_then(|b| body_schema(spec, b)) {
                reach(spec, schema, &mut request);
            }
            for param in parameters(spec, op).values() {
                if let Some(schema) = param.get("schema") {
                    reach(spec, schema, &mut request);
                }
            }
            if let Some((_, Some(schema))) = success(spec, op.op) {
                reach(spec, schema, &mut response);
            }
        }
        Usage { request, response }
    }
}

/// Adds every component schema `schema` refers to, transitively.
fn reach(spec: &Value, schema: &Value, names: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(reference) = map.get("$ref").and_then(Value::as_str) {
                if let Some(name) = reference.strip_prefix("#/components/schemas/")
                    && names.insert(name.to_owned())
                    && let Some(target) = spec.pointer(&format!("/components/schemas/{name}"))
                {
                    reach(spec, target, names);
                }
                return;
            }
            for value in map.values() {
                reach(spec, value, names);
            }
        }
        Value::Array(items) => {
            for item in items {
                reach(spec, item, names);
            }
        }
        _ => {}
    }
}

fn schemas(spec: &Value) -> BTreeMap<String, &Value> {
    spec.pointer("/components/schemas")
        .and_then(Value::as_object)
        .map(|map| map.iter().map(|(k, v)| (k.clone(), v)).collect())
        .unwrap_or_default()
}

fn required(schema: &Value) -> BTreeSet<String> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

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

fn diff_schemas(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_bump_as_cargo_reads_them() {
        let v = |s| {
            Version::parse(s).unwrap_or(Version {
                major: 9,
                minor: 9,
                patch: 9,
            })
        };
        assert_eq!(v("0.1.0").bumped_for(Impact::Breaking), v("0.2.0"));
        assert_eq!(v("0.1.3").bumped_for(Impact::Additive), v("0.1.4"));
        assert_eq!(v("1.4.2").bumped_for(Impact::Breaking), v("2.0.0"));
        assert_eq!(v("1.4.2").bumped_for(Impact::Additive), v("1.5.0"));
        assert!(v("0.1.0").allows(v("0.2.0"), Impact::Breaking));
        assert!(!v("0.1.0").allows(v("0.1.1"), Impact::Breaking));
        assert_eq!(Version::parse("1.2"), None);
    }

    fn spec() -> Value {
        match crate::load_document(
            include_str!("../../openapi/chip-collect-webhooks.yaml"),
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
