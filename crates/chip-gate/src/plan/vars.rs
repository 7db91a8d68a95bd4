//! The `${NAME}` variables of a webhook file: which ones it may read ([`LoadOptions`] and the
//! file's own `vars`), their values, and the checks every value passes before it goes into a
//! webhook.

use std::collections::BTreeSet;

use crate::error::Error;

/// The environment variable that is never interpolated into a file: the secret API key.
const FORBIDDEN_VARIABLE: &str = "CHIP_API_KEY";

/// How a webhook file's `${NAME}` variables are read, and which secret they may never carry.
///
/// A file reads the variables it declares (`vars = [...]`); these options add names from the
/// caller (`chip`'s `--var NAME` and `--var NAME=VALUE`). Values set here win over the
/// environment. Its `Debug` never shows the API key.
///
/// ```
/// use chip_gate::plan::{LoadOptions, WebhookFile};
///
/// let text = r#"
/// [[webhook]]
/// title = "Orders (${SHOP_ENV})"
/// callback = "https://${SHOP_HOST}/chip"
/// all_events = true
/// "#;
/// let options = LoadOptions::new()
///     .var("SHOP_ENV", "staging")?       // a value, as --var SHOP_ENV=staging
///     .allow("SHOP_HOST")?               // from the environment, as --var SHOP_HOST
///     .api_key("sk_live_the_key_in_use"); // refused in every value
/// let env = |name: &str| (name == "SHOP_HOST").then(|| "shop.example.com".to_owned());
/// let file = WebhookFile::parse_with_options(text, &options, env).unwrap();
/// assert_eq!(file.webhooks()[0].title(), "Orders (staging)");
///
/// // Without them the file must declare what it reads.
/// let error = WebhookFile::parse_with(text, env).unwrap_err();
/// assert!(error.to_string().starts_with("line 3: ${SHOP_ENV} is not declared"));
/// # Ok::<(), chip_gate::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// Names allowed by the caller; `Some` is a value that wins over the environment.
    vars: std::collections::BTreeMap<String, Option<String>>,
    api_key: Option<crate::ApiKey>,
}

impl LoadOptions {
    /// No variables beyond the file's own `vars`, and no API key to refuse.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets the file read `name` from the environment even if it does not declare it (`--var
    /// NAME`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `name` is not a variable name (letters, digits and `_`, not
    /// starting with a digit) or is `CHIP_API_KEY`.
    pub fn allow(mut self, name: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        check_name(&name).map_err(Error::invalid)?;
        self.vars.entry(name).or_insert(None);
        Ok(self)
    }

    /// Sets `name` to `value` for the file, whether or not it declares it and whatever the
    /// environment says (`--var NAME=VALUE`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] for a bad name (as [`allow`](Self::allow)).
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Result<Self, Error> {
        let name = name.into();
        check_name(&name).map_err(Error::invalid)?;
        self.vars.insert(name, Some(value.into()));
        Ok(self)
    }

    /// The API key in use: no variable's value, title, callback or event name of the file may
    /// contain it (errors say so without showing it). An empty key checks nothing.
    #[must_use]
    pub fn api_key(mut self, key: impl Into<crate::ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The key to refuse, when one was given and is not empty.
    fn secret(&self) -> Option<&str> {
        self.api_key
            .as_ref()
            .map(crate::ApiKey::expose)
            .filter(|k| !k.is_empty())
    }
}

/// Why `name` cannot be a variable of a file: not a name, or the API key's variable.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "{:?} is not a variable name (letters, digits and _, not starting with a digit)",
            name.chars().take(64).collect::<String>()
        ));
    }
    if name == FORBIDDEN_VARIABLE {
        return Err(format!(
            "{FORBIDDEN_VARIABLE} is the secret API key: it never goes into a webhook"
        ));
    }
    Ok(())
}

/// Whether `c` may not appear in a title, callback or event name: a control character (a newline
/// forges lines of the plan output, ESC starts terminal sequences) or a bidirectional override or
/// isolate (it reorders what a reviewer sees).
pub(super) fn is_forbidden_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Why `text` (a value after substitution) cannot go into a webhook: a forbidden character, or
/// the API key. `what` names it ("the title", "the value of SHOP_HOST").
pub(super) fn check_text(what: &str, text: &str, options: &LoadOptions) -> Result<(), String> {
    if let Some(c) = text.chars().find(|&c| is_forbidden_char(c)) {
        return Err(format!(
            "{what} contains the control character U+{:04X}: titles, callbacks and event names are \
             one line of printable text",
            u32::from(c)
        ));
    }
    if options.secret().is_some_and(|key| text.contains(key)) {
        return Err(format!(
            "{what} contains the API key in use: the secret key never goes into a webhook (check \
             the file and the variables it reads)"
        ));
    }
    Ok(())
}

/// The variables a file may read: its own `vars`, then the caller's [`LoadOptions`], with the
/// environment (`lookup`) for names that have no value of their own.
pub(super) struct Variables<'a, F> {
    pub(super) declared: BTreeSet<String>,
    pub(super) options: &'a LoadOptions,
    pub(super) lookup: &'a F,
}

impl<F: Fn(&str) -> Option<String>> Variables<'_, F> {
    /// The value of `${name}`, checked; the error is the message for the line.
    pub(super) fn value(&self, name: &str) -> Result<String, String> {
        if name == FORBIDDEN_VARIABLE {
            return Err(format!(
                "${{{FORBIDDEN_VARIABLE}}} is the secret API key: it never goes into a webhook"
            ));
        }
        let value = match self.options.vars.get(name) {
            Some(Some(value)) if value.is_empty() => {
                return Err(format!("variable {name} is given an empty value"));
            }
            Some(Some(value)) => Some(value.clone()),
            Some(None) => (self.lookup)(name),
            None if self.declared.contains(name) => (self.lookup)(name),
            None => {
                return Err(format!(
                    "${{{name}}} is not declared: a webhook file reads only the variables it \
                     declares; add vars = [\"{name}\"] at the top of the file (with chip, or pass \
                     --var {name})"
                ));
            }
        };
        match value {
            None => Err(format!("environment variable {name} is not set")),
            Some(value) if value.is_empty() => Err(format!("environment variable {name} is empty")),
            Some(value) => {
                check_text(&format!("the value of {name}"), &value, self.options)?;
                Ok(value)
            }
        }
    }
}

/// Replaces `${NAME}` with the variable's value; `$${` is a literal `${`.
pub(super) fn interpolate<F: Fn(&str) -> Option<String>>(
    text: &str,
    variables: &Variables<'_, F>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err("`${` without a closing `}` (write `$${` for a literal `${`)".into());
            };
            let name = &body[..end];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "`${{{}}}` is not a variable name (letters, digits and _, not starting with a \
                     digit)",
                    name.chars().take(64).collect::<String>()
                ));
            }
            out.push_str(&variables.value(name)?);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("shop.example.com".into()),
            "ENV" => Some("live".into()),
            "EMPTY" => Some(String::new()),
            "AWS_SECRET_ACCESS_KEY" => Some("aws-secret".into()),
            "SHOP_KEY" => Some("sk_live_in_use".into()),
            "NEWLINE" => Some("a\nb".into()),
            _ => None,
        }
    }

    /// `text` interpolated with `declared` names from `env` and `options`.
    fn expand(text: &str, declared: &[&str], options: &LoadOptions) -> Result<String, String> {
        let variables = Variables {
            declared: declared.iter().map(|s| (*s).to_owned()).collect(),
            options,
            lookup: &env,
        };
        interpolate(text, &variables)
    }

    #[test]
    fn interpolation() {
        let all = ["HOST", "ENV", "EMPTY", "NOPE"];
        let none = LoadOptions::new();
        let ok = |text: &str| expand(text, &all, &none).unwrap();
        let err = |text: &str| expand(text, &all, &none).unwrap_err();
        assert_eq!(ok("https://${HOST}/x"), "https://shop.example.com/x");
        assert_eq!(ok("$${HOST} $ $x ${ENV}$"), "${HOST} $ $x live$");
        assert!(err("${NOPE}").contains("NOPE is not set"));
        assert!(err("${EMPTY}").contains("EMPTY is empty"));
        assert!(err("${HOST").contains("closing"));
        assert!(err("${1A}").contains("not a variable name"));
        assert!(err("${}").contains("not a variable name"));
        assert!(err("${CHIP_API_KEY}").contains("secret"));
        assert_eq!(ok("ünï${ENV}çödé"), "ünïliveçödé");
    }

    #[test]
    fn only_declared_or_allowed_variables_are_read() {
        let none = LoadOptions::new();
        // Undeclared: an error naming the fix, and the environment is never asked.
        let error = expand("${AWS_SECRET_ACCESS_KEY}", &["HOST"], &none).unwrap_err();
        assert!(
            error.starts_with("${AWS_SECRET_ACCESS_KEY} is not declared"),
            "{error}"
        );
        assert!(
            error.contains("vars = [\"AWS_SECRET_ACCESS_KEY\"]"),
            "{error}"
        );
        assert!(error.contains("--var AWS_SECRET_ACCESS_KEY"), "{error}");
        assert!(!error.contains("aws-secret"), "{error}");
        // Allowed by the caller (--var NAME), or given a value (--var NAME=VALUE, which wins).
        let allowed = LoadOptions::new().allow("HOST").unwrap();
        assert_eq!(
            expand("${HOST}", &[], &allowed).unwrap(),
            "shop.example.com"
        );
        let empty = LoadOptions::new().var("HOST", "").unwrap();
        assert_eq!(
            expand("${HOST}", &["HOST"], &empty).unwrap_err(),
            "variable HOST is given an empty value"
        );
        let set = LoadOptions::new().var("HOST", "other.example").unwrap();
        assert_eq!(expand("${HOST}", &["HOST"], &set).unwrap(), "other.example");
        assert_eq!(
            expand(
                "${UNSET}",
                &[],
                &LoadOptions::new().var("UNSET", "v").unwrap()
            )
            .unwrap(),
            "v"
        );
        // The key's variable can be neither declared nor allowed.
        assert!(
            expand("${CHIP_API_KEY}", &["CHIP_API_KEY"], &none)
                .unwrap_err()
                .contains("secret API key")
        );
        assert!(LoadOptions::new().allow("CHIP_API_KEY").is_err());
        assert!(LoadOptions::new().var("CHIP_API_KEY", "x").is_err());
        assert!(LoadOptions::new().allow("A-B").is_err());
        assert!(LoadOptions::new().allow("").is_err());
    }

    #[test]
    fn values_carrying_the_key_or_control_characters_are_refused() {
        let options = LoadOptions::new().api_key("sk_live_in_use");
        let error =
            expand("https://a.example/?k=${SHOP_KEY}", &["SHOP_KEY"], &options).unwrap_err();
        assert!(
            error.contains("the value of SHOP_KEY contains the API key in use"),
            "{error}"
        );
        assert!(!error.contains("sk_live"), "{error}");
        // Without the key to compare with, only its own variable is refused.
        assert!(expand("${SHOP_KEY}", &["SHOP_KEY"], &LoadOptions::new()).is_ok());
        let error = expand("${NEWLINE}", &["NEWLINE"], &options).unwrap_err();
        assert!(
            error.contains("the value of NEWLINE contains the control character U+000A"),
            "{error}"
        );
        // Its Debug does not show the key.
        assert!(!format!("{options:?}").contains("sk_live"));
    }
}
