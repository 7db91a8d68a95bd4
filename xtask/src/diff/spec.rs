//! Reading a spec for the comparison: its operations and their parameters, bodies and success
//! responses, its component schemas, which of them requests and responses reach, and a schema's
//! shape in words.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// One operation, found by its id.
pub(super) struct Op<'a> {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) op: &'a Value,
    pub(super) path_item: &'a Value,
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

pub(super) fn operations(spec: &Value) -> BTreeMap<String, Op<'_>> {
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
pub(super) fn parameters<'a>(
    spec: &'a Value,
    op: &Op<'a>,
) -> BTreeMap<(String, String), &'a Value> {
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

pub(super) fn is_true(value: Option<&Value>) -> bool {
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
pub(super) fn body_schema<'a>(spec: &'a Value, holder: &'a Value) -> Option<&'a Value> {
    let holder = resolve(spec, holder);
    holder
        .get("content")?
        .as_object()?
        .values()
        .next()?
        .get("schema")
}

/// The success response (the first 2xx) of an operation: its status and schema.
pub(super) fn success<'a>(spec: &'a Value, op: &'a Value) -> Option<(String, Option<&'a Value>)> {
    let responses = op.get("responses")?.as_object()?;
    responses
        .iter()
        .find(|(status, _)| status.starts_with('2'))
        .map(|(status, response)| (status.clone(), body_schema(spec, response)))
}

pub(super) fn signature_opt(schema: Option<&Value>) -> String {
    match schema {
        Some(schema) => signature(Some(schema)),
        None => "no body".to_owned(),
    }
}

/// A schema's Rust-relevant shape, in words: `string (uuid)`, `array of EventName`, `Webhook`,
/// `integer (int64) or null`.
pub(super) fn signature(schema: Option<&Value>) -> String {
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
pub(super) struct Usage {
    pub(super) request: BTreeSet<String>,
    pub(super) response: BTreeSet<String>,
}

impl Usage {
    pub(super) fn of(spec: &Value) -> Usage {
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

pub(super) fn schemas(spec: &Value) -> BTreeMap<String, &Value> {
    spec.pointer("/components/schemas")
        .and_then(Value::as_object)
        .map(|map| map.iter().map(|(k, v)| (k.clone(), v)).collect())
        .unwrap_or_default()
}

pub(super) fn required(schema: &Value) -> BTreeSet<String> {
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
