//! Validation of request bodies, exactly as `openapi/chip-collect-webhooks.yaml` states it (which
//! follows CHIP's published schema), with CHIP-shaped, field-keyed error bodies.

use std::collections::HashSet;

use chip_gate_api::types::EventName;
use serde_json::{Map, Value, json};

use crate::store::Webhook;

/// CHIP's limit on `title`, in characters (the spec's `maxLength`).
pub(crate) const TITLE_MAX: usize = chip_gate_api::limits::WEBHOOK_CREATE_TITLE_MAX_LENGTH;
/// CHIP's limit on `callback`, in characters (the spec's `maxLength`).
pub(crate) const CALLBACK_MAX: usize = chip_gate_api::limits::WEBHOOK_CREATE_CALLBACK_MAX_LENGTH;

/// Which operation a body is validated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// POST /webhooks/ and PUT: the whole body (`WebhookCreate`): `title`, `callback` and a
    /// non-empty `events` are required; a missing `all_events` is false.
    Whole,
    /// PATCH (`WebhookPatch`): only the fields present change.
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

impl Settings {
    /// Writes these settings into a stored webhook and moves `updated_on` strictly forward, so a
    /// change is always visible even within one second.
    pub(crate) fn apply(self, w: &mut Webhook, now: i64) {
        w.title = self.title;
        w.all_events = self.all_events;
        w.events = self.events;
        w.callback = self.callback;
        w.updated_on = now.max(w.updated_on.saturating_add(1));
    }
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

/// Whitespace as the spec's patterns spell it out: `[\t\n\v\f\r \u00a0\u1680\u2000-\u200a
/// \u2028\u2029\u202f\u205f\u3000]`, the characters that ECMAScript, Python and Rust regexes
/// all count as `\s` (they disagree on U+001C to U+001F, U+0085 and U+FEFF, which are therefore
/// not whitespace here).
pub(crate) fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{0b}' | '\u{0c}' | '\r' | ' ' | '\u{a0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}'
    )
}

/// The spec's callback pattern, `^[Hh][Tt][Tt][Pp][Ss]?://[^/?#@<whitespace>]`: `http://` or
/// `https://` in any case, then a first character of a host (anything but `/`, `?`, `#`, `@` or
/// whitespace, see [`is_space`]). What follows is not constrained.
pub(crate) fn callback_matches(s: &str) -> bool {
    let rest = if s.len() >= 8 && s.is_char_boundary(8) && s[..8].eq_ignore_ascii_case("https://") {
        &s[8..]
    } else if s.len() >= 7 && s.is_char_boundary(7) && s[..7].eq_ignore_ascii_case("http://") {
        &s[7..]
    } else {
        return false;
    };
    rest.chars()
        .next()
        .is_some_and(|c| !matches!(c, '/' | '?' | '#' | '@') && !is_space(c))
}

fn string_field(
    body: &Map<String, Value>,
    name: &str,
    mode: Mode,
    errors: &mut ErrorBody,
    max: usize,
    check: impl Fn(&str) -> Option<(&'static str, &'static str)>,
) -> Option<String> {
    match body.get(name) {
        None if mode == Mode::Whole => {
            push_error(errors, name, "This field is required.", "required");
            None
        }
        None => None,
        Some(Value::Null) => {
            push_error(errors, name, "This field may not be null.", "null");
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            push_error(errors, name, "This field may not be blank.", "blank");
            None
        }
        Some(Value::String(s)) if s.chars().count() > max => {
            push_error(
                errors,
                name,
                &format!("Ensure this field has no more than {max} characters."),
                "max_length",
            );
            None
        }
        Some(Value::String(s)) => match check(s) {
            None => Some(s.clone()),
            Some((message, code)) => {
                push_error(errors, name, message, code);
                None
            }
        },
        Some(_) => {
            push_error(errors, name, "Not a valid string.", "invalid");
            None
        }
    }
}

/// Validates a webhook body as the spec says and returns the resulting settings.
///
/// `existing` is the stored webhook for PATCH (fields not in the body keep its values); call it
/// under the store's write lock so that two PATCHes cannot undo each other.
pub(crate) fn validate(
    body: &Map<String, Value>,
    mode: Mode,
    existing: Option<&Webhook>,
) -> Result<Settings, ErrorBody> {
    let mut errors = ErrorBody::new();

    let title = string_field(body, "title", mode, &mut errors, TITLE_MAX, |s| {
        (!s.chars().any(|c| !is_space(c))).then_some(("This field may not be blank.", "blank"))
    });
    let callback = string_field(body, "callback", mode, &mut errors, CALLBACK_MAX, |s| {
        (!callback_matches(s)).then_some(("Enter a valid URL.", "invalid"))
    });

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
        // CHIP's published schema requires `events` on create and update, even with
        // `all_events: true` (its prose says "either"; the schema is the stricter reading).
        None if mode == Mode::Whole => {
            push_error(&mut errors, "events", "This field is required.", "required");
            None
        }
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
                        if seen.insert(s.as_str()) {
                            out.push(EventName::from(s.as_str()));
                        } else {
                            ok = false;
                            push_error(
                                &mut errors,
                                "events",
                                &format!("Duplicate event \"{s}\": each event may be listed once."),
                                "unique",
                            );
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

    Ok(match (mode, existing) {
        (Mode::Partial, Some(old)) => Settings {
            title: title.unwrap_or_else(|| old.title.clone()),
            all_events: all_events.unwrap_or(old.all_events),
            events: events.unwrap_or_else(|| old.events.clone()),
            callback: callback.unwrap_or_else(|| old.callback.clone()),
        },
        _ => Settings {
            title: title.unwrap_or_default(),
            all_events: all_events.unwrap_or(false),
            events: events.unwrap_or_default(),
            callback: callback.unwrap_or_default(),
        },
    })
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
        assert_eq!(err["events"][0]["code"], "required");

        // all_events does not stand in for events.
        let err = validate(
            &obj(json!({"title": "t", "callback": "https://x.test/h", "all_events": true})),
            Mode::Whole,
            None,
        )
        .unwrap_err();
        assert_eq!(err["events"][0]["code"], "required");

        let err = validate(
            &obj(json!({"title": "t", "callback": "ftp://x.test/h", "events": ["purchase.paid"]})),
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
    fn title_limit_counts_characters_and_blank_is_refused() {
        let body = |title: Value| {
            obj(json!({"title": title, "callback": "http://x.test", "events": ["purchase.paid"]}))
        };
        assert!(validate(&body(json!("é".repeat(100))), Mode::Whole, None).is_ok());
        let err = validate(&body(json!("é".repeat(101))), Mode::Whole, None).unwrap_err();
        assert_eq!(err["title"][0]["code"], "max_length");
        for blank in ["", " ", "\t\n\u{0b}\u{0c}\r", "\u{3000}\u{a0}\u{2009}"] {
            let err = validate(&body(json!(blank)), Mode::Whole, None).unwrap_err();
            assert_eq!(err["title"][0]["code"], "blank", "{blank:?}");
        }
        // Characters the regex dialects disagree on are not whitespace for the spec.
        for odd in [" a ", "\u{1f}", "\u{85}", "\u{feff}", "\u{200b}"] {
            assert!(
                validate(&body(json!(odd)), Mode::Whole, None).is_ok(),
                "{odd:?}"
            );
        }
    }

    #[test]
    fn callback_follows_the_spec_pattern() {
        for good in [
            "http://a",
            "HTTPS://x.test/h?q=1",
            "http://127.0.0.1:9/x",
            "hTtP://é",
            "http://\u{1c}",
        ] {
            assert!(callback_matches(good), "{good}");
        }
        for bad in [
            "",
            "http://",
            "https:///x",
            "http://@x",
            "http:// x",
            "ftp://x",
            "mailto:a@b",
            "httpé://x",
            "é",
        ] {
            assert!(!callback_matches(bad), "{bad}");
        }
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
