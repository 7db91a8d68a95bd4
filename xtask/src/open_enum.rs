//! Forward-compatible string enums.
//!
//! Progenitor's string enums are strict: one value CHIP adds tomorrow would make a whole list
//! or retrieve call fail. Every string enum named in `components/schemas` is therefore generated
//! here instead, with every value the spec lists plus `Unknown(String)` that keeps the raw
//! value, and progenitor is told (`with_replacement`) to use it.

use openapiv3::{OpenAPI, ReferenceOr, SchemaKind, Type};
use proc_macro2::{Ident, Span, TokenStream};
use quote::quote;

use crate::Problem;

/// A string enum of the spec, generated as an open enum.
#[derive(Debug, Clone)]
pub struct OpenEnum {
    /// The schema's (and the Rust type's) name.
    pub name: String,
    description: String,
    values: Vec<String>,
}

/// Finds every named string enum in `components/schemas`.
pub fn collect(spec: &OpenAPI) -> Result<Vec<OpenEnum>, Vec<Problem>> {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    let Some(components) = &spec.components else {
        return Ok(found);
    };
    for (name, schema) in &components.schemas {
        let ReferenceOr::Item(schema) = schema else {
            continue;
        };
        let SchemaKind::Type(Type::String(string)) = &schema.schema_kind else {
            continue;
        };
        if string.enumeration.is_empty() {
            continue;
        }
        let values: Vec<String> = string.enumeration.iter().flatten().cloned().collect();
        let mut idents: Vec<String> = values.iter().map(|v| variant_name(v)).collect();
        idents.push("Unknown".into());
        let mut sorted = idents.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != idents.len() || !is_ident(name) {
            problems.push(Problem {
                location: format!("schema `{name}`"),
                message:
                    "its enum values do not map to distinct Rust variant names (or clash with \
                          `Unknown`)"
                        .into(),
            });
            continue;
        }
        found.push(OpenEnum {
            name: name.clone(),
            description: schema
                .schema_data
                .description
                .clone()
                .unwrap_or_else(|| format!("The `{name}` values of the spec.")),
            values,
        });
    }
    if problems.is_empty() {
        Ok(found)
    } else {
        Err(problems)
    }
}

fn is_ident(name: &str) -> bool {
    syn::parse_str::<Ident>(name).is_ok()
}

/// `purchase.payment_failure` -> `PurchasePaymentFailure`.
fn variant_name(value: &str) -> String {
    let mut name: String = value
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, 'V');
    }
    name
}

fn tokens(open: &OpenEnum) -> TokenStream {
    let name = Ident::new(&open.name, Span::call_site());
    let name_str = &open.name;
    let description = open.description.trim();
    let values = &open.values;
    let variants: Vec<Ident> = values
        .iter()
        .map(|v| Ident::new(&variant_name(v), Span::call_site()))
        .collect();
    let variant_docs: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
    let count = proc_macro2::Literal::usize_unsuffixed(values.len());
    quote! {
        #[doc = #description]
        ///
        /// Forward-compatible: a value this version does not list deserializes to
        /// [`Self::Unknown`] with the raw string, and serializes back unchanged.
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum #name {
            #(
                #[doc = #variant_docs]
                #variants,
            )*
            /// A value the spec did not list when this client was generated, kept as received.
            Unknown(::std::string::String),
        }

        impl #name {
            /// Every value the spec lists, in the spec's order.
            pub const ALL: [#name; #count] = [#(#name::#variants),*];

            /// The value exactly as the API spells it.
            pub fn as_str(&self) -> &str {
                match self {
                    #(#name::#variants => #values,)*
                    #name::Unknown(raw) => raw.as_str(),
                }
            }

            /// Whether the value is one the spec lists (not [`Self::Unknown`]).
            pub fn is_known(&self) -> bool {
                !matches!(self, #name::Unknown(_))
            }
        }

        impl ::std::fmt::Display for #name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::convert::From<&str> for #name {
            fn from(value: &str) -> Self {
                match value {
                    #(#values => #name::#variants,)*
                    other => #name::Unknown(other.to_owned()),
                }
            }
        }

        impl ::std::convert::From<::std::string::String> for #name {
            fn from(value: ::std::string::String) -> Self {
                match #name::from(value.as_str()) {
                    #name::Unknown(_) => #name::Unknown(value),
                    known => known,
                }
            }
        }

        impl ::std::str::FromStr for #name {
            type Err = ::std::convert::Infallible;
            fn from_str(value: &str) -> ::std::result::Result<Self, Self::Err> {
                Ok(#name::from(value))
            }
        }

        impl ::serde::Serialize for #name {
            fn serialize<S: ::serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for #name {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                ::std::string::String::deserialize(deserializer).map(#name::from)
            }
        }

        impl ::schemars::JsonSchema for #name {
            fn schema_name() -> ::std::string::String {
                #name_str.to_owned()
            }

            fn json_schema(
                generator: &mut ::schemars::r#gen::SchemaGenerator,
            ) -> ::schemars::schema::Schema {
                let mut schema = <::std::string::String as ::schemars::JsonSchema>::json_schema(generator)
                    .into_object();
                schema.metadata().description = Some(#description.to_owned());
                schema.metadata().examples = vec![#(::serde_json::json!(#values)),*];
                schema.into()
            }
        }
    }
}

/// Adds the open enums to the generated `types` module, where progenitor's own types live.
pub fn insert_into_types(file: &mut syn::File, enums: &[OpenEnum]) -> Result<(), String> {
    if enums.is_empty() {
        return Ok(());
    }
    let module = file
        .items
        .iter_mut()
        .find_map(|item| match item {
            syn::Item::Mod(m) if m.ident == "types" => m.content.as_mut(),
            _ => None,
        })
        .ok_or("progenitor's output has no `types` module")?;
    for open in enums {
        let parsed: syn::File = syn::parse2(tokens(open))
            .map_err(|e| format!("the open enum `{}` does not parse: {e}", open.name))?;
        module.1.extend(parsed.items);
    }
    Ok(())
}
