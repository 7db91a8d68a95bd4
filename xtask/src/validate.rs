//! Checks for every construct progenitor 0.15 would panic on or reject, each reported with the
//! operation it sits in; plus the one safe rewrite of error responses.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use openapiv3::{
    Components, OpenAPI, Operation, PathItem, ReferenceOr, RequestBody, Response, StatusCode,
};

use crate::Normalization;

/// One construct in the spec that progenitor cannot handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: the operation (its id, method and path) or the path.
    pub location: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

fn operations_mut(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("GET", &mut item.get),
        ("PUT", &mut item.put),
        ("POST", &mut item.post),
        ("DELETE", &mut item.delete),
        ("OPTIONS", &mut item.options),
        ("HEAD", &mut item.head),
        ("PATCH", &mut item.patch),
        ("TRACE", &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
    .collect()
}

/// The body an error or success response carries, as progenitor tells them apart.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Body {
    None,
    Schema(String),
}

fn resolve_response<'a>(
    response: &'a ReferenceOr<Response>,
    components: Option<&'a Components>,
) -> Option<&'a Response> {
    match response {
        ReferenceOr::Item(item) => Some(item),
        ReferenceOr::Reference { reference } => {
            let name = reference.strip_prefix("#/components/responses/")?;
            match components?.responses.get(name)? {
                ReferenceOr::Item(item) => Some(item),
                ReferenceOr::Reference { .. } => None,
            }
        }
    }
}

fn resolve_body<'a>(
    body: &'a ReferenceOr<RequestBody>,
    components: Option<&'a Components>,
) -> Option<&'a RequestBody> {
    match body {
        ReferenceOr::Item(item) => Some(item),
        ReferenceOr::Reference { reference } => {
            let name = reference.strip_prefix("#/components/requestBodies/")?;
            match components?.request_bodies.get(name)? {
                ReferenceOr::Item(item) => Some(item),
                ReferenceOr::Reference { .. } => None,
            }
        }
    }
}

fn body_of(response: &Response) -> Body {
    match response.content.first() {
        None => Body::None,
        Some((media, content)) => Body::Schema(format!(
            "{media} {}",
            content
                .schema
                .as_ref()
                .and_then(|s| serde_json::to_string(s).ok())
                .unwrap_or_default()
        )),
    }
}

fn status_name(status: &StatusCode) -> String {
    match status {
        StatusCode::Code(code) => code.to_string(),
        StatusCode::Range(range) => format!("{range}XX"),
    }
}

fn is_error(status: &StatusCode) -> bool {
    match status {
        StatusCode::Code(code) => *code >= 400,
        StatusCode::Range(range) => *range >= 4,
    }
}

/// Validates every operation; rewrites only what is safe (bodiless error responses beside error
/// responses with a body) and records each rewrite in `notes`.
pub fn validate_and_normalize(spec: &mut OpenAPI, notes: &mut Vec<Normalization>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen_ids: BTreeMap<String, String> = BTreeMap::new();
    let components = spec.components.clone();
    let components = components.as_ref();

    for (path, item) in spec.paths.paths.iter_mut() {
        let item = match item {
            ReferenceOr::Item(item) => item,
            ReferenceOr::Reference { reference } => {
                problems.push(Problem {
                    location: format!("path {path}"),
                    message: format!(
                        "the path item is a $ref ({reference}); write the operations inline"
                    ),
                });
                continue;
            }
        };
        for (method, op) in operations_mut(item) {
            let here = format!("{method} {path}");
            let location = match &op.operation_id {
                Some(id) => format!("operation `{id}` ({here})"),
                None => format!("operation {here}"),
            };
            match &op.operation_id {
                None => problems.push(Problem {
                    location: location.clone(),
                    message: "has no operationId; progenitor names each method after it, so add a \
                              unique snake_case operationId"
                        .into(),
                }),
                Some(id) => {
                    if let Some(first) = seen_ids.get(id) {
                        problems.push(Problem {
                            location: location.clone(),
                            message: format!(
                                "duplicate operationId `{id}`, already used by {first}; make each one unique"
                            ),
                        });
                    } else {
                        seen_ids.insert(id.clone(), here.clone());
                    }
                }
            }

            if let Some(body) = &op.request_body {
                match resolve_body(body, components) {
                    None => problems.push(Problem {
                        location: location.clone(),
                        message: "the request body is a $ref that does not resolve".into(),
                    }),
                    Some(body) if body.content.len() > 1 => problems.push(Problem {
                        location: location.clone(),
                        message: format!(
                            "the request body has several media types ({}); progenitor takes one, so keep application/json",
                            body.content.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    }),
                    Some(_) => {}
                }
            }

            check_responses(op, &location, components, &mut problems, notes);
        }
    }
    problems
}

fn check_responses(
    op: &mut Operation,
    location: &str,
    components: Option<&Components>,
    problems: &mut Vec<Problem>,
    notes: &mut Vec<Normalization>,
) {
    let mut success: BTreeMap<Body, Vec<String>> = BTreeMap::new();
    let mut errors: BTreeMap<Body, Vec<String>> = BTreeMap::new();
    let mut bodiless_errors = Vec::new();
    let mut resolved_all = true;

    for (status, response) in &op.responses.responses {
        let Some(response) = resolve_response(response, components) else {
            problems.push(Problem {
                location: location.to_owned(),
                message: format!(
                    "the {} response is a $ref that does not resolve",
                    status_name(status)
                ),
            });
            resolved_all = false;
            continue;
        };
        if response.content.len() > 1 {
            problems.push(Problem {
                location: location.to_owned(),
                message: format!(
                    "the {} response has several media types ({}); progenitor takes one, so keep application/json",
                    status_name(status),
                    response.content.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            });
        }
        let body = body_of(response);
        if is_error(status) {
            if body == Body::None {
                bodiless_errors.push(status.clone());
            }
            errors.entry(body).or_default().push(status_name(status));
        } else {
            success.entry(body).or_default().push(status_name(status));
        }
    }

    if let Some(default) = &op.responses.default {
        let typed_success = success.keys().any(|b| *b != Body::None);
        if typed_success {
            let codes: Vec<String> = success.values().flatten().cloned().collect();
            problems.push(Problem {
                location: location.to_owned(),
                message: format!(
                    "a `default` response beside the typed success {}; progenitor needs one success \
                     type, so list the error statuses (4XX, 5XX) instead of `default`",
                    codes.join(", ")
                ),
            });
        } else if let Some(response) = resolve_response(default, components) {
            success
                .entry(body_of(response))
                .or_default()
                .push("default".into());
        }
    }

    if success.len() > 1 {
        problems.push(Problem {
            location: location.to_owned(),
            message: format!(
                "the success responses carry different bodies ({}); progenitor needs one success type",
                success.values().map(|v| v.join("/")).collect::<Vec<_>>().join(" vs ")
            ),
        });
    }

    let with_body: Vec<&Body> = errors.keys().filter(|b| **b != Body::None).collect();
    match with_body.len() {
        0 | 1 if errors.len() <= 1 || !resolved_all => {}
        1 => {
            // A body beside no body: progenitor would panic. Dropping the bodiless statuses is
            // safe: they still come back as errors (unexpected responses, with the raw response).
            let kept = errors
                .iter()
                .find(|(b, _)| **b != Body::None)
                .map(|(_, codes)| codes.join(", "))
                .unwrap_or_default();
            for status in bodiless_errors {
                op.responses.responses.shift_remove(&status);
                notes.push(Normalization {
                    location: location.to_owned(),
                    change: format!(
                        "dropped the bodiless {} response beside {kept} with a body; that status \
                         still returns an error, as an unexpected response",
                        status_name(&status)
                    ),
                });
            }
        }
        _ => {
            let groups: BTreeSet<String> = errors
                .iter()
                .filter(|(b, _)| **b != Body::None)
                .map(|(_, codes)| codes.join("/"))
                .collect();
            problems.push(Problem {
                location: location.to_owned(),
                message: format!(
                    "the error responses carry different bodies ({}); progenitor needs one error type, \
                     so point them all at one error schema",
                    groups.into_iter().collect::<Vec<_>>().join(" vs ")
                ),
            });
        }
    }
}
