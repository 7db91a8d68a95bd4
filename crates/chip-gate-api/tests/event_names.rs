//! Event names are forward-compatible: a name CHIP adds later neither breaks decoding nor is lost.
#![allow(clippy::unwrap_used)]

use chip_gate_api::types::{EventName, Webhook, WebhookList};
use serde_json::json;

fn webhook_with(events: serde_json::Value) -> serde_json::Value {
    json!({
        "type": "webhook",
        "id": "0b7f3f0e-3c7e-4a55-9a43-6d0b2f5f8e01",
        "created_on": 1_700_000_000,
        "updated_on": 1_700_000_000,
        "title": "All the things",
        "all_events": false,
        "events": events,
        "callback": "https://example.com/chip",
        "public_key": "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
        "a_field_chip_adds_later": {"nested": true}
    })
}

#[test]
fn an_unknown_event_name_deserializes_and_keeps_the_raw_name() {
    let body = webhook_with(json!(["purchase.paid", "purchase.teleported"]));
    let webhook: Webhook = serde_json::from_value(body).unwrap();
    assert_eq!(webhook.event_names()[0], EventName::PurchasePaid);
    assert_eq!(
        webhook.event_names()[1],
        EventName::Unknown("purchase.teleported".into())
    );
    assert_eq!(webhook.event_names()[1].as_str(), "purchase.teleported");
    assert!(!webhook.event_names()[1].is_known());
    let again = serde_json::to_value(&webhook.events).unwrap();
    assert_eq!(again, json!(["purchase.paid", "purchase.teleported"]));
}

#[test]
fn a_list_page_with_an_unknown_name_still_decodes() {
    let page = json!({
        "results": [webhook_with(json!(["payout.teleported"]))],
        "next": null,
        "previous": null
    });
    let page: WebhookList = serde_json::from_value(page).unwrap();
    assert_eq!(
        page.results[0].event_names()[0].to_string(),
        "payout.teleported"
    );
}

#[test]
fn chips_29_names_round_trip_in_chips_order() {
    // At least CHIP's 29 (a regenerated spec may list names CHIP adds later, after these).
    assert!(EventName::ALL.len() >= 29);
    assert_eq!(EventName::ALL[0].as_str(), "purchase.created");
    assert_eq!(EventName::ALL[28].as_str(), "payment.chargeback_reversed");
    for name in EventName::ALL {
        let text = serde_json::to_string(&name).unwrap();
        let back: EventName = serde_json::from_str(&text).unwrap();
        assert_eq!(back, name);
        assert!(back.is_known());
        assert_eq!(name.as_str().parse::<EventName>().unwrap(), name);
    }
}

/// The spec is the single source of the names: the generated enum lists exactly the spec's.
#[test]
fn the_enum_lists_exactly_the_specs_names() {
    let spec = include_str!("../../../openapi/chip-collect-webhooks.yaml");
    let start = spec.find("    EventName:").unwrap();
    let names: Vec<&str> = spec[start..]
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("enum:"))
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- "))
        .map(|l| l.trim_start().trim_start_matches("- "))
        .collect();
    let generated: Vec<&str> = EventName::ALL.iter().map(EventName::as_str).collect();
    assert_eq!(names, generated);
}

#[test]
fn generated_types_derive_json_schema() {
    let schema = schemars::schema_for!(Webhook);
    let text = serde_json::to_string(&schema).unwrap();
    assert!(text.contains("public_key"));
    assert!(text.contains("EventName"));
}
