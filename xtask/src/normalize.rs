//! Parsing and the safe, reported rewrites that let a spec as CHIP publishes it through.

use std::fmt;

use serde_json::{Map, Value};

/// One rewrite applied to the spec before generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalization {
    /// Where it applied (a JSON pointer into the spec, or an operation).
    pub location: String,
    /// What was changed and why it is safe.
    pub change: String,
}

impl fmt::Display for Normalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.change)
    }
}

/// Keywords that only OpenAPI 3.1 (JSON Schema 2020-12) gives meaning to. A spec that declares
/// 3.1 but uses none of these is read as 3.0.3.
const ONLY_3_1: &[&str] = &[
    "const",
    "prefixItems",
    "unevaluatedProperties",
    "unevaluatedItems",
    "dependentSchemas",
    "dependentRequired",
    "$defs",
    "$dynamicRef",
    "$anchor",
    "if",
    "then",
    "else",
    "contentEncoding",
    "contentMediaType",
];

/// Parses YAML (JSON is accepted too) into a JSON value, turning non-string map keys
/// (`200:` unquoted) into strings as OpenAPI means them.
pub fn parse_document(text: &str) -> Result<Value, String> {
    let yaml: serde_norway::Value = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    yaml_to_json(yaml)
}

fn yaml_to_json(yaml: serde_norway::Value) -> Result<Value, String> {
    use serde_norway::Value as Y;
    Ok(match yaml {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(&n).map_err(|e| e.to_string())?,
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(yaml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let key = match key {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => return Err(format!("unsupported map key {other:?}")),
                };
                out.insert(key, yaml_to_json(value)?);
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => yaml_to_json(tagged.value)?,
    })
}

/// Rewrites what is safe to rewrite, then reads the document as OpenAPI 3.0.
pub fn to_openapi(mut document: Value) -> Result<(openapiv3::OpenAPI, Vec<Normalization>), String> {
    let mut notes = Vec::new();
    let version = document
        .get("openapi")
        .and_then(Value::as_str)
        .ok_or("there is no `openapi` version field (Swagger 2.0 is not supported)")?
        .to_owned();
    if version.starts_with("3.1") {
        let mut found = Vec::new();
        downgrade_schemas(&mut document, String::new(), false, &mut notes, &mut found);
        if document
            .get("webhooks")
            .is_some_and(|w| w.as_object().is_some_and(|m| !m.is_empty()))
        {
            found.push("/webhooks (3.1 top-level webhooks)".to_owned());
        }
        if document.get("jsonSchemaDialect").is_some() {
            found.push("/jsonSchemaDialect".to_owned());
        }
        if !found.is_empty() {
            return Err(format!(
                "it declares openapi {version} and uses constructs that only 3.1 has, which progenitor \
                 (3.0 only) cannot read: {}",
                found.join(", ")
            ));
        }
        if let Some(obj) = document.as_object_mut() {
            obj.insert("openapi".into(), Value::String("3.0.3".into()));
            obj.remove("webhooks");
        }
        notes.insert(
            0,
            Normalization {
                location: "/openapi".into(),
                change: format!(
                    "declared {version} but written with 3.0 constructs only; read as 3.0.3"
                ),
            },
        );
    } else if !version.starts_with("3.0") {
        return Err(format!(
            "it declares openapi {version}; only 3.0.x (or 3.1 written with 3.0 constructs) is supported"
        ));
    }
    let spec = serde_json::from_value(document).map_err(|e| e.to_string())?;
    Ok((spec, notes))
}

/// Walks the document; `names` is true where the keys of the current map are names (of
/// properties or schemas), not keywords.
fn downgrade_schemas(
    value: &mut Value,
    pointer: String,
    names: bool,
    notes: &mut Vec<Normalization>,
    found: &mut Vec<String>,
) {
    match value {
        Value::Object(map) => {
            if !names {
                rewrite_type_array(map, &pointer, notes, found);
                for key in ONLY_3_1 {
                    if map.contains_key(*key) {
                        found.push(format!("{pointer}/{key}"));
                    }
                }
                for key in ["exclusiveMinimum", "exclusiveMaximum"] {
                    if map.get(key).is_some_and(Value::is_number) {
                        found.push(format!("{pointer}/{key} (a number, as in 3.1)"));
                    }
                }
            }
            for (key, child) in map.iter_mut() {
                let child_names = !names
                    && matches!(
                        key.as_str(),
                        "properties" | "schemas" | "definitions" | "paths"
                    );
                downgrade_schemas(
                    child,
                    format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1")),
                    child_names,
                    notes,
                    found,
                );
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter_mut().enumerate() {
                downgrade_schemas(child, format!("{pointer}/{i}"), false, notes, found);
            }
        }
        _ => {}
    }
}

/// `type: [T, "null"]` is 3.1's spelling of 3.0's `type: T, nullable: true`.
fn rewrite_type_array(
    map: &mut Map<String, Value>,
    pointer: &str,
    notes: &mut Vec<Normalization>,
    found: &mut Vec<String>,
) {
    let Some(Value::Array(types)) = map.get("type") else {
        return;
    };
    let non_null: Vec<&Value> = types
        .iter()
        .filter(|t| t.as_str() != Some("null"))
        .collect();
    let has_null = non_null.len() < types.len();
    match (non_null.as_slice(), has_null) {
        ([single], _) => {
            let single = (*single).clone();
            map.insert("type".into(), single.clone());
            if has_null {
                map.insert("nullable".into(), Value::Bool(true));
            }
            notes.push(Normalization {
                location: format!("{pointer}/type"),
                change: format!(
                    "type list rewritten as type {single}{}",
                    if has_null { " with nullable: true" } else { "" }
                ),
            });
        }
        _ => found.push(format!("{pointer}/type (a list of several types)")),
    }
}
