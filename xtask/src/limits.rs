//! The spec's length and count limits as Rust constants, so that the spec stays their one source.
//!
//! For every property of an object schema in `components/schemas` that declares `maxLength`,
//! `minLength`, `maxItems` or `minItems`, the generated crate gets a constant in a `limits` module,
//! named `<SCHEMA>_<PROPERTY>_<KEYWORD>` in upper snake case, e.g.
//! `WEBHOOK_CREATE_TITLE_MAX_LENGTH = 100`. The wrapper checks input and the mock validates
//! requests with these constants instead of writing the numbers again.

use openapiv3::{OpenAPI, ReferenceOr, SchemaKind, Type};
use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

/// One limit: its constant name, value and what it limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The constant's name, e.g. `WEBHOOK_CREATE_TITLE_MAX_LENGTH`.
    pub name: String,
    /// The value.
    pub value: usize,
    /// What it limits, in words, for the constant's doc comment.
    pub doc: String,
}

/// `WebhookCreate` -> `WEBHOOK_CREATE`, `all_events` -> `ALL_EVENTS`.
fn upper_snake(text: &str) -> String {
    let mut out = String::new();
    let mut previous_lower = false;
    for c in text.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('_');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push('_');
        }
    }
    out
}

/// Every limit the object schemas of `components/schemas` declare, in spec order.
pub fn collect(spec: &OpenAPI) -> Vec<Limit> {
    let mut found = Vec::new();
    let Some(components) = &spec.components else {
        return found;
    };
    for (schema_name, schema) in &components.schemas {
        let ReferenceOr::Item(schema) = schema else {
            continue;
        };
        let SchemaKind::Type(Type::Object(object)) = &schema.schema_kind else {
            continue;
        };
        for (property, schema) in &object.properties {
            let ReferenceOr::Item(schema) = schema else {
                continue;
            };
            let mut push = |keyword: &str, words: &str, value: Option<usize>| {
                if let Some(value) = value {
                    found.push(Limit {
                        name: format!(
                            "{}_{}_{}",
                            upper_snake(schema_name),
                            upper_snake(property),
                            upper_snake(keyword)
                        ),
                        value,
                        doc: format!("`{schema_name}.{property}`: {words} {value} (`{keyword}`)."),
                    });
                }
            };
            match &schema.schema_kind {
                SchemaKind::Type(Type::String(string)) => {
                    push("minLength", "at least", string.min_length);
                    push("maxLength", "at most", string.max_length);
                }
                SchemaKind::Type(Type::Array(array)) => {
                    push("minItems", "at least", array.min_items);
                    push("maxItems", "at most", array.max_items);
                }
                _ => {}
            }
        }
    }
    found
}

/// The `limits` module's tokens.
pub fn tokens(limits: &[Limit]) -> TokenStream {
    let items = limits.iter().map(|limit| {
        let name = Ident::new(&limit.name, Span::call_site());
        let value = proc_macro2::Literal::usize_unsuffixed(limit.value);
        let doc = &limit.doc;
        quote! {
            #[doc = #doc]
            pub const #name: usize = #value;
        }
    });
    quote! {
        /// The length and count limits the spec declares, one constant per property and keyword
        /// (lengths count characters, as JSON Schema does).
        pub mod limits {
            #(#items)*
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_upper_snake_case() {
        assert_eq!(upper_snake("WebhookCreate"), "WEBHOOK_CREATE");
        assert_eq!(upper_snake("all_events"), "ALL_EVENTS");
        assert_eq!(upper_snake("maxLength"), "MAX_LENGTH");
        assert_eq!(upper_snake("public_key"), "PUBLIC_KEY");
    }
}
