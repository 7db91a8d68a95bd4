//! The in-memory webhook store and CHIP-style validation of request bodies.

use std::collections::{BTreeMap, HashMap, HashSet};

use chip_gate_api::types::{EventName, Webhook};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::keys::SigningKey;

/// CHIP's limit on `title`, in characters.
pub(crate) const TITLE_MAX: usize = 100;
/// CHIP's limit on `callback`, in characters.
pub(crate) const CALLBACK_MAX: usize = 500;

/// A stored webhook and its private key.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) webhook: Webhook,
    pub(crate) key: SigningKey,
}

/// The webhooks of one mock, in creation order.
#[derive(Debug, Default)]
pub(crate) struct Store {
    by_id: HashMap<Uuid, (u64, Stored)>,
    order: BTreeMap<u64, Uuid>,
    seq: u64,
}

impl Store {
    pub(crate) fn insert(&mut self, stored: Stored) {
        self.seq += 1;
        let id = stored.webhook.id;
        self.order.insert(self.seq, id);
        self.by_id.insert(id, (self.seq, stored));
    }

    pub(crate) fn get(&self, id: &Uuid) -> Option<&Stored> {
        self.by_id.get(id).map(|(_, s)| s)
    }

    pub(crate) fn get_mut(&mut self, id: &Uuid) -> Option<&mut Stored> {
        self.by_id.get_mut(id).map(|(_, s)| s)
    }

    pub(crate) fn remove(&mut self, id: &Uuid) -> Option<Stored> {
        let (seq, stored) = self.by_id.remove(id)?;
        self.order.remove(&seq);
        Some(stored)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn clear(&mut self) {
        self.by_id.clear();
        self.order.clear();
    }

    /// All webhooks in creation order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Stored> {
        self.order
            .values()
            .filter_map(|id| self.by_id.get(id).map(|(_, s)| s))
    }
}

/// Which operation a body is validated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// POST /webhooks/ and PUT: the whole body; missing optional fields take defaults.
    Whole,
    /// PATCH: only the fields present change.
    Partial,
}

/// The settings a body asks for, after validation (merged with the existing webhook for PATCH).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub(crate) title: String,
    pub(crate) all_events: bool,
    pub(crate) events: Vec<EventName>,
    pub(crate) callback: String,
}

/// A CHIP-shaped error body: field name (or `__all__`) to a list of `{message, code}`.
pub(crate) type ErrorBody = Map<String, Value>;

/// `{"<field>": [{"message": ..., "code": ...}]}`.
pub(crate) fn error_body(field: &str, message: &str, code: &str) -> ErrorBody {
    let mut map = Map::new();
    push_error(&mut map, field, message, code);
    map
}

fn push_error(map: &mut ErrorBody, field: &str, message: &str, code: &str) {
    let entry = map
        .entry(field.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = entry {
        list.push(json!({ "message": message, "code": code }));
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// Parses a request body (raw bytes) into a JSON object, or a CHIP-shaped 400 body.
pub(crate) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ErrorBody> {
    if body.iter().all(u8::is_ascii_whitespace) {
        // The spec marks every request body as required.
        return Err(error_body(
            "__all__",
            "A JSON object body is required.",
            "required",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(error_body(
            "__all__",
            &format!(
                "Invalid data. Expected a dictionary, but got {}.",
                type_name(&other)
            ),
            "invalid",
        )),
        Err(e) => Err(error_body(
            "__all__",
            &format!("JSON parse error - {e}"),
            "parse_error",
        )),
    }
}

/// Validates a webhook body as CHIP does and returns the resulting settings.
///
/// `existing` is the stored webhook for PATCH (fields not in the body keep its values).
pub(crate) fn validate(
    body: &Map<String, Value>,
    mode: Mode,
    existing: Option<&Webhook>,
) -> Result<Settings, ErrorBody> {
    let mut errors = ErrorBody::new();

    let title = match body.get("title") {
        None if mode == Mode::Whole => {
            push_error(&mut errors, "title", "This field is required.", "required");
            None
        }
        None => None,
        Some(Value::Null) => {
            push_error(&mut errors, "title", "This field may not be null.", "null");
            None
        }
        Some(Value::String(s)) if s.chars().count() > TITLE_MAX => {
            push_error(
                &mut errors,
                "title",
                &format!("Ensure this field has no more than {TITLE_MAX} characters."),
                "max_length",
            );
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            push_error(&mut errors, "title", "Not a valid string.", "invalid");
            None
        }
    };

    let callback = match body.get("callback") {
        None if mode == Mode::Whole => {
            push_error(
                &mut errors,
                "callback",
                "This field is required.",
                "required",
            );
            None
        }
        None => None,
        Some(Value::Null) => {
            push_error(
                &mut errors,
                "callback",
                "This field may not be null.",
                "null",
            );
            None
        }
        Some(Value::String(s)) if s.chars().count() > CALLBACK_MAX => {
            push_error(
                &mut errors,
                "callback",
                &format!("Ensure this field has no more than {CALLBACK_MAX} characters."),
                "max_length",
            );
            None
        }
        Some(Value::String(s)) if is_http_url(s) => Some(s.clone()),
        Some(Value::String(_)) => {
            push_error(&mut errors, "callback", "Enter a valid URL.", "invalid");
            None
        }
        Some(_) => {
            push_error(&mut errors, "callback", "Not a valid string.", "invalid");
            None
        }
    };

    let all_events = match body.get("all_events") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(Value::Null) => {
            push_error(
                &mut errors,
                "all_events",
                "This field may not be null.",
                "null",
            );
            None
        }
        Some(_) => {
            push_error(
                &mut errors,
                "all_events",
                "Must be a valid boolean.",
                "invalid",
            );
            None
        }
    };

    let events = match body.get("events") {
        None => None,
        Some(Value::Null) => {
            push_error(&mut errors, "events", "This field may not be null.", "null");
            None
        }
        Some(Value::Array(items)) if items.is_empty() => {
            push_error(
                &mut errors,
                "events",
                "This list may not be empty.",
                "empty",
            );
            None
        }
        Some(Value::Array(items)) => {
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(items.len());
            let mut ok = true;
            for item in items {
                match item {
                    Value::String(s) if EventName::from(s.as_str()).is_known() => {
                        if !seen.insert(s.as_str()) {
                            ok = false;
                            push_error(
                                &mut errors,
                                "events",
                                &format!("Duplicate event \"{s}\": each event may be listed once."),
                                "unique",
                            );
                        } else {
                            out.push(EventName::from(s.as_str()));
                        }
                    }
                    other => {
                        ok = false;
                        let shown = match other {
                            Value::String(s) => s.clone(),
                            v => v.to_string(),
                        };
                        push_error(
                            &mut errors,
                            "events",
                            &format!("\"{shown}\" is not a valid choice."),
                            "invalid_choice",
                        );
                    }
                }
            }
            ok.then_some(out)
        }
        Some(other) => {
            push_error(
                &mut errors,
                "events",
                &format!(
                    "Expected a list of items but got type \"{}\".",
                    type_name(other)
                ),
                "not_a_list",
            );
            None
        }
    };

    if !errors.is_empty() {
        return Err(errors);
    }

    let settings = match (mode, existing) {
        (Mode::Partial, Some(old)) => Settings {
            title: title.unwrap_or_else(|| old.title.clone()),
            all_events: all_events.unwrap_or(old.all_events),
            events: events.unwrap_or_else(|| old.events.clone().unwrap_or_default()),
            callback: callback.unwrap_or_else(|| old.callback.clone()),
        },
        _ => Settings {
            title: title.unwrap_or_default(),
            all_events: all_events.unwrap_or(false),
            events: events.unwrap_or_default(),
            callback: callback.unwrap_or_default(),
        },
    };
    if !settings.all_events && settings.events.is_empty() {
        return Err(error_body(
            "__all__",
            "Either set all_events to true or list at least one event in events.",
            "invalid",
        ));
    }
    Ok(settings)
}

/// An absolute http(s) URL with a host.
fn is_http_url(s: &str) -> bool {
    match url::Url::parse(s) {
        Ok(u) => {
            matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty())
                && !s.chars().any(char::is_whitespace)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn whole_body_rules() {
        let ok = validate(
            &obj(
                json!({"title": "t", "callback": "https://x.test/h", "events": ["purchase.paid"]}),
            ),
            Mode::Whole,
            None,
        )
        .unwrap();
        assert_eq!(ok.events, vec![EventName::PurchasePaid]);
        assert!(!ok.all_events);

        let err = validate(&obj(json!({})), Mode::Whole, None).unwrap_err();
        assert_eq!(err["title"][0]["code"], "required");
        assert_eq!(err["callback"][0]["code"], "required");

        let err = validate(
            &obj(json!({"title": "t", "callback": "https://x.test/h"})),
            Mode::Whole,
            None,
        )
        .unwrap_err();
        assert!(err.contains_key("__all__"));

        let err = validate(
            &obj(json!({"title": "t", "callback": "ftp://x.test/h", "all_events": true})),
            Mode::Whole,
            None,
        )
        .unwrap_err();
        assert_eq!(err["callback"][0]["code"], "invalid");

        let err = validate(
            &obj(
                json!({"title": "t", "callback": "http://x.test", "events": ["purchase.paid", "purchase.paid", "nope"]}),
            ),
            Mode::Whole,
            None,
        )
        .unwrap_err();
        let codes: Vec<&str> = err["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, vec!["unique", "invalid_choice"]);
    }

    #[test]
    fn title_limit_counts_characters() {
        let title: String = "é".repeat(100);
        assert!(
            validate(
                &obj(json!({"title": title, "callback": "http://x.test", "all_events": true})),
                Mode::Whole,
                None
            )
            .is_ok()
        );
        let title: String = "é".repeat(101);
        let err = validate(
            &obj(json!({"title": title, "callback": "http://x.test", "all_events": true})),
            Mode::Whole,
            None,
        )
        .unwrap_err();
        assert_eq!(err["title"][0]["code"], "max_length");
    }

    #[test]
    fn non_json_and_non_object() {
        assert_eq!(
            parse_object(b"{").unwrap_err()["__all__"][0]["code"],
            "parse_error"
        );
        assert_eq!(
            parse_object(b"[1]").unwrap_err()["__all__"][0]["code"],
            "invalid"
        );
        assert_eq!(
            parse_object(b" ").unwrap_err()["__all__"][0]["code"],
            "required"
        );
        assert!(parse_object(b"{}").unwrap().is_empty());
    }
}
