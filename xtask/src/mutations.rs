//! Spec changes of each kind, applied to a parsed spec: the walk that `cargo xtask evolve` and the
//! tests run to show that additive changes just work and breaking ones are named.

use serde_json::{Value, json};

/// One change to a spec, with what it is meant to be.
pub struct Mutation {
    /// A short name, e.g. `Webhook gains an optional property`.
    pub name: &'static str,
    /// Whether users' code keeps compiling (additive) or not (breaking).
    pub breaking: bool,
    /// Where the diff must name it (a substring of a change's place).
    pub place: &'static str,
    /// Applies the change; `Err` names what was missing from the spec.
    pub apply: fn(&mut Value) -> Result<(), String>,
}

fn at<'a>(spec: &'a mut Value, pointer: &str) -> Result<&'a mut Value, String> {
    spec.pointer_mut(pointer)
        .ok_or_else(|| format!("the spec has no {pointer}"))
}

fn object<'a>(
    spec: &'a mut Value,
    pointer: &str,
) -> Result<&'a mut serde_json::Map<String, Value>, String> {
    at(spec, pointer)?
        .as_object_mut()
        .ok_or_else(|| format!("{pointer} is not an object"))
}

fn array<'a>(spec: &'a mut Value, pointer: &str) -> Result<&'a mut Vec<Value>, String> {
    at(spec, pointer)?
        .as_array_mut()
        .ok_or_else(|| format!("{pointer} is not a list"))
}

/// Every mutation of the walk: additive ones first.
pub fn all() -> Vec<Mutation> {
    vec![
        Mutation {
            name: "Webhook gains an optional property",
            breaking: false,
            place: "schema Webhook.description",
            apply: |spec| {
                object(spec, "/components/schemas/Webhook/properties")?.insert(
                    "description".into(),
                    json!({"type": "string", "description": "A note."}),
                );
                Ok(())
            },
        },
        Mutation {
            name: "WebhookCreate gains an optional property",
            breaking: false,
            place: "schema WebhookCreate.description",
            apply: |spec| {
                object(spec, "/components/schemas/WebhookCreate/properties")?.insert(
                    "description".into(),
                    json!({"type": "string", "maxLength": 200, "description": "A note."}),
                );
                Ok(())
            },
        },
        Mutation {
            name: "EventName gains a value",
            breaking: false,
            place: "schema EventName",
            apply: |spec| {
                array(spec, "/components/schemas/EventName/enum")?
                    .push(json!("purchase.added_by_the_evolve_walk"));
                Ok(())
            },
        },
        Mutation {
            name: "the list gains an optional query parameter",
            breaking: false,
            place: "operation webhooks_list",
            apply: |spec| {
                array(spec, "/paths/~1webhooks~1/get/parameters")?.push(json!({
                    "name": "page_size",
                    "in": "query",
                    "required": false,
                    "description": "Webhooks per page.",
                    "schema": {"type": "integer", "format": "int64", "minimum": 1},
                }));
                Ok(())
            },
        },
        Mutation {
            name: "a new operation",
            breaking: false,
            place: "operation webhooks_test",
            apply: |spec| {
                object(spec, "/paths")?.insert(
                    "/webhooks/{id}/test/".into(),
                    json!({
                        "parameters": [{"$ref": "#/components/parameters/WebhookId"}],
                        "post": {
                            "operationId": "webhooks_test",
                            "summary": "Send a test delivery.",
                            "responses": {
                                "200": {
                                    "description": "The test result.",
                                    "content": {"application/json": {"schema": {
                                        "$ref": "#/components/schemas/WebhookTest"
                                    }}}
                                },
                                "404": {"description": "No such webhook."}
                            }
                        }
                    }),
                );
                object(spec, "/components/schemas")?.insert(
                    "WebhookTest".into(),
                    json!({
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"type": "integer", "format": "int64"}}
                    }),
                );
                Ok(())
            },
        },
        Mutation {
            name: "Webhook.title becomes optional",
            breaking: true,
            place: "schema Webhook.title",
            apply: |spec| {
                array(spec, "/components/schemas/Webhook/required")?
                    .retain(|v| v.as_str() != Some("title"));
                Ok(())
            },
        },
        Mutation {
            name: "Webhook.callback is renamed",
            breaking: true,
            place: "schema Webhook.callback",
            apply: |spec| {
                let props = object(spec, "/components/schemas/Webhook/properties")?;
                let callback = props
                    .remove("callback")
                    .ok_or("Webhook has no callback property")?;
                props.insert("callback_url".into(), callback);
                for name in array(spec, "/components/schemas/Webhook/required")? {
                    if name.as_str() == Some("callback") {
                        *name = json!("callback_url");
                    }
                }
                Ok(())
            },
        },
        Mutation {
            name: "an operation is removed",
            breaking: true,
            place: "operation webhooks_delete",
            apply: |spec| {
                object(spec, "/paths/~1webhooks~1{id}~1")?
                    .remove("delete")
                    .ok_or("no DELETE operation")?;
                Ok(())
            },
        },
        Mutation {
            name: "an event name is removed",
            breaking: true,
            place: "schema EventName",
            apply: |spec| {
                array(spec, "/components/schemas/EventName/enum")?
                    .retain(|v| v.as_str() != Some("purchase.paid"));
                Ok(())
            },
        },
        Mutation {
            name: "Webhook.created_on changes type",
            breaking: true,
            place: "schema Webhook.created_on",
            apply: |spec| {
                *at(spec, "/components/schemas/Webhook/properties/created_on")? =
                    json!({"type": "string", "format": "date-time"});
                Ok(())
            },
        },
        Mutation {
            name: "WebhookPatch.title becomes required",
            breaking: true,
            place: "schema WebhookPatch.title",
            apply: |spec| {
                object(spec, "/components/schemas/WebhookPatch")?
                    .insert("required".into(), json!(["title"]));
                Ok(())
            },
        },
    ]
}
