//! Checks for every construct progenitor 0.15 would panic on or reject, each reported with the
//! operation it sits in; plus the one safe rewrite of error responses (left to the wrapper).

use std::collections::BTreeMap;
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

/// Validates every operation; rewrites only what is safe (error responses are left undeclared for
/// the generator, so the wrapper reads them raw) and records each rewrite in `notes`.
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
    let mut error_statuses = Vec::new();

    for (status, response) in &op.responses.responses {
        if is_error(status) {
            // Error responses never reach progenitor (see below), so their bodies, media types
            // and $refs cannot trouble it.
            error_statuses.push(status.clone());
            continue;
        }
        let Some(response) = resolve_response(response, components) else {
            problems.push(Problem {
                location: location.to_owned(),
                message: format!(
                    "the {} response is a $ref that does not resolve",
                    status_name(status)
                ),
            });
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
        success
            .entry(body_of(response))
            .or_default()
            .push(status_name(status));
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

    // Every error response is left out of the copy progenitor reads. The generated client then
    // returns each non-2xx answer as an unexpected response with its status, headers and raw
    // body, whatever that body is (empty, HTML from a proxy, a JSON string or array, an object),
    // and the wrapper reads it leniently. Declared error bodies would instead be decoded by the
    // generated code, which turns a status with a body of another shape into a decode error that
    // has lost the status; and error bodies of different shapes (a 400 with a body beside a
    // bodiless 404, as CHIP publishes) would make progenitor panic. The checked-in spec keeps
    // every error response for the contract checks.
    if !error_statuses.is_empty() {
        let names: Vec<String> = error_statuses.iter().map(status_name).collect();
        for status in &error_statuses {
            op.responses.responses.shift_remove(status);
        }
        notes.push(Normalization {
            location: location.to_owned(),
            change: format!(
                "error responses {} handed to the wrapper as raw bytes (left undeclared for the \
                 generator; every non-2xx status still returns an error with its status and body)",
                names.join(", ")
            ),
        });
    }
}
