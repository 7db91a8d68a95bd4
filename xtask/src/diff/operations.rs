//! Operations: removed, added or moved ones, and the parameters, request body and success
//! response of those in both specs.

use serde_json::Value;

use super::spec::{
    body_schema, is_true, operations, parameters, signature, signature_opt, success,
};
use super::{Change, Impact};

pub(super) fn diff_operations(old: &Value, new: &Value, changes: &mut Vec<Change>) {
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
