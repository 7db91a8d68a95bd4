//! Realistic delivery objects, built from CHIP's published delivery samples (`samples/*.json`).
//!
//! Purchase events reuse the sample for that event when CHIP published one, and the `purchase.paid`
//! sample with the matching status otherwise. Payment events reuse the `payment.refunded` sample (a
//! Payment with `related_to`). CHIP published no Payout or BillingTemplateClient delivery, so those
//! objects are built from the shapes CHIP documents; they are approximations.

use std::sync::OnceLock;

use chip_gate_api::types::EventName;
use serde_json::{Map, Value, json};
use uuid::Uuid;

/// One of CHIP's published delivery samples: the exact bytes CHIP posted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The event it was delivered for (its `event_type`).
    pub event: &'static str,
    /// Its file name under the crate's `samples/` folder.
    pub file: &'static str,
    /// The body, byte for byte as CHIP sent it.
    pub body: &'static str,
}

/// The 17 published samples: the one copy in the workspace. The mock builds its deliveries from
/// them, and the wrapper's tests parse them.
pub const SAMPLES: [Sample; 17] = [
    Sample {
        event: "purchase.paid",
        file: "01-event-Purchase-paid.json",
        body: include_str!("../samples/01-event-Purchase-paid.json"),
    },
    Sample {
        event: "purchase.created",
        file: "02-event-Purchase-created.json",
        body: include_str!("../samples/02-event-Purchase-created.json"),
    },
    Sample {
        event: "purchase.viewed",
        file: "03-event-Purchase-viewed.json",
        body: include_str!("../samples/03-event-Purchase-viewed.json"),
    },
    Sample {
        event: "purchase.payment_failure",
        file: "04-event-Purchase-failed.json",
        body: include_str!("../samples/04-event-Purchase-failed.json"),
    },
    Sample {
        event: "purchase.pending_execute",
        file: "05-event-Purchase-pending-execute.json",
        body: include_str!("../samples/05-event-Purchase-pending-execute.json"),
    },
    Sample {
        event: "purchase.preauthorized",
        file: "06-event-Purchase-preauthorized.json",
        body: include_str!("../samples/06-event-Purchase-preauthorized.json"),
    },
    Sample {
        event: "purchase.settled",
        file: "07-event-Purchase-settled.json",
        body: include_str!("../samples/07-event-Purchase-settled.json"),
    },
    Sample {
        event: "purchase.hold",
        file: "08-event-Purchase-hold.json",
        body: include_str!("../samples/08-event-Purchase-hold.json"),
    },
    Sample {
        event: "purchase.pending_capture",
        file: "09-event-Purchase-pending-capture.json",
        body: include_str!("../samples/09-event-Purchase-pending-capture.json"),
    },
    Sample {
        event: "purchase.captured",
        file: "10-event-Purchase-captured.json",
        body: include_str!("../samples/10-event-Purchase-captured.json"),
    },
    Sample {
        event: "purchase.pending_refund",
        file: "11-event-Purchase-pending-refund.json",
        body: include_str!("../samples/11-event-Purchase-pending-refund.json"),
    },
    Sample {
        event: "payment.refunded",
        file: "12-event-Purchase-refunded.json",
        body: include_str!("../samples/12-event-Purchase-refunded.json"),
    },
    Sample {
        event: "purchase.pending_recurring_token_delete",
        file: "13-event-Purchase-pending-recurring-token-delete.json",
        body: include_str!("../samples/13-event-Purchase-pending-recurring-token-delete.json"),
    },
    Sample {
        event: "purchase.recurring_token_deleted",
        file: "14-event-Purchase-recurring-token-deleted.json",
        body: include_str!("../samples/14-event-Purchase-recurring-token-deleted.json"),
    },
    Sample {
        event: "purchase.pending_release",
        file: "15-event-Purchase-pending-release.json",
        body: include_str!("../samples/15-event-Purchase-pending-release.json"),
    },
    Sample {
        event: "purchase.released",
        file: "16-event-Purchase-released.json",
        body: include_str!("../samples/16-event-Purchase-released.json"),
    },
    Sample {
        event: "purchase.cancelled",
        file: "17-event-Purchase-cancelled.json",
        body: include_str!("../samples/17-event-Purchase-cancelled.json"),
    },
];

fn samples() -> &'static [(&'static str, Map<String, Value>)] {
    static PARSED: OnceLock<Vec<(&'static str, Map<String, Value>)>> = OnceLock::new();
    PARSED.get_or_init(|| {
        SAMPLES
            .iter()
            .filter_map(|sample| match serde_json::from_str::<Value>(sample.body) {
                Ok(Value::Object(map)) => Some((sample.event, map)),
                _ => None,
            })
            .collect()
    })
}

fn sample(event: &str) -> Option<Map<String, Value>> {
    samples()
        .iter()
        .find(|(e, _)| *e == event)
        .map(|(_, m)| m.clone())
}

/// The Purchase `status` after a purchase event for which CHIP published no sample.
fn purchase_status(event: &str) -> String {
    match event {
        "purchase.created" => "created",
        "purchase.paid" | "purchase.captured" | "purchase.settled" => "paid",
        "purchase.payment_failure" | "purchase.subscription_charge_failure" => "error",
        "purchase.refund_failure" => "paid",
        "purchase.capture_failure" | "purchase.release_failure" | "purchase.hold" => "hold",
        "purchase.pending_execute" => "pending_execute",
        "purchase.pending_charge" => "pending_charge",
        "purchase.cancelled" => "cancelled",
        "purchase.pending_capture" => "pending_capture",
        "purchase.released" => "released",
        "purchase.pending_release" => "pending_release",
        "purchase.preauthorized"
        | "purchase.pending_recurring_token_delete"
        | "purchase.recurring_token_deleted" => "preauthorized",
        "purchase.pending_refund" => "pending_refund",
        "purchase.viewed" => "viewed",
        other => return other.rsplit('.').next().unwrap_or(other).to_owned(),
    }
    .to_owned()
}

/// Builds the delivery body for `event` about object `id`: the flat object plus `event_type`, with
/// `id`, `status`, `created_on` and `updated_on` (Unix seconds, `now`) set to match.
pub(crate) fn build_object(event: &EventName, id: Uuid, now: i64) -> Map<String, Value> {
    let name = event.as_str();
    let family = name.split('.').next().unwrap_or("");
    let mut obj = match family {
        "payment" => payment(name, id),
        "payout" => payout(name, id, now),
        "billing_template_client" => billing_template_client(name, id, now),
        _ => purchase(name, id, now),
    };
    obj.insert("id".into(), json!(id));
    obj.insert("created_on".into(), json!(now));
    obj.insert("updated_on".into(), json!(now));
    obj.insert("event_type".into(), json!(name));
    obj
}

fn purchase(event: &str, id: Uuid, now: i64) -> Map<String, Value> {
    let (mut obj, status) = match sample(event) {
        Some(obj) => {
            let status = obj
                .get("status")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| purchase_status(event));
            (obj, status)
        }
        None => (
            sample("purchase.paid").unwrap_or_default(),
            purchase_status(event),
        ),
    };
    obj.insert("type".into(), json!("purchase"));
    obj.insert("status".into(), json!(status));
    obj.insert("due".into(), json!(now + 3600));
    obj.insert(
        "checkout_url".into(),
        json!(format!("https://gate.chip-in.asia/p/{id}/invoice/")),
    );
    obj
}

fn payment(event: &str, id: Uuid) -> Map<String, Value> {
    let mut obj = sample("payment.refunded").unwrap_or_default();
    let payment_type = match event {
        "payment.refunded" => "refund",
        "payment.charged_back" => "chargeback",
        "payment.chargeback_reversed" => "chargeback_reversal",
        other => other.rsplit('.').next().unwrap_or(other),
    };
    obj.insert("type".into(), json!("payment"));
    obj.insert("status".into(), json!("success"));
    if let Some(Value::Object(p)) = obj.get_mut("payment") {
        p.insert("payment_type".into(), json!(payment_type));
    }
    // The purchase this payment belongs to: a fresh id, derived from the payment id so that
    // repeated events for one payment point at one purchase.
    let mut bytes = *id.as_bytes();
    bytes[0] ^= 0x5a;
    let purchase_id = Uuid::from_bytes(bytes);
    obj.insert(
        "related_to".into(),
        json!({ "id": purchase_id, "type": "purchase", "reference": "CH-MOCK" }),
    );
    obj
}

fn payout(event: &str, _id: Uuid, now: i64) -> Map<String, Value> {
    let status = match event {
        "payout.created" => "created",
        "payout.pending" => "pending",
        "payout.failed" => "error",
        "payout.success" => "success",
        other => other.rsplit('.').next().unwrap_or(other),
    };
    let company_id = sample("purchase.paid")
        .and_then(|s| s.get("company_id").cloned())
        .unwrap_or(Value::Null);
    match json!({
        "type": "payout",
        "status": status,
        "is_test": true,
        "company_id": company_id,
        "brand_id": "e0bb63e2-bf75-4606-8379-49d91459aa66",
        "user_id": null,
        "reference": "payout-mock-1",
        "reference_generated": "PO-MOCK-1",
        "client": {
            "email": "recipient@example.com",
            "full_name": "Mock Recipient",
            "bank_account": "12345567890",
            "bank_code": "MBB"
        },
        "payment": {
            "amount": 1000,
            "currency": "MYR",
            "fee_amount": 0,
            "net_amount": 1000,
            "description": "Mock payout",
            "is_outgoing": true,
            "payment_type": "payout",
            "paid_on": if status == "success" { json!(now) } else { Value::Null },
            "remote_paid_on": null,
            "pending_amount": 0,
            "pending_unfreeze_on": null
        },
        "error_description": if status == "error" { json!("The receiving bank rejected the transfer.") } else { Value::Null },
        "payout_url": null
    }) {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn billing_template_client(event: &str, _id: Uuid, now: i64) -> Map<String, Value> {
    let status = match event {
        "billing_template_client.subscription_billing_cancelled" => {
            "subscription_billing_cancelled"
        }
        other => other.rsplit('.').next().unwrap_or(other),
    };
    match json!({
        "type": "billing_template_client",
        "status": status,
        "client_id": "70647b72-c5aa-4a52-848b-3e7243962184",
        "billing_template_id": "0ee1d9c2-4f5e-4a43-9f3c-8c2f6d5e1a10",
        "is_subscription": true,
        "is_test": true,
        "recurring_token": null,
        "next_billing_on": now + 30 * 24 * 3600,
        "send_receipt": false,
        "send_invoice_on_charge_failure": false,
        "send_invoice_on_add_subscriber": false,
        "payment_method_whitelist": null
    }) {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_event_builds_a_matching_object() {
        assert_eq!(samples().len(), 17);
        for event in EventName::ALL {
            let id = Uuid::new_v4();
            let obj = build_object(&event, id, 1_700_000_000);
            assert_eq!(obj["id"], json!(id), "{event}");
            assert_eq!(obj["event_type"], json!(event.as_str()));
            assert_eq!(obj["updated_on"], json!(1_700_000_000));
            assert!(obj["status"].is_string(), "{event}");
            let family = event.as_str().split('.').next().unwrap_or_default();
            assert_eq!(obj["type"], json!(family), "{event}");
        }
        let paid = build_object(&EventName::PurchasePaid, Uuid::nil(), 1);
        assert_eq!(paid["status"], "paid");
        assert!(paid.contains_key("purchase"));
        let refund = build_object(&EventName::PaymentRefunded, Uuid::nil(), 1);
        assert_eq!(refund["related_to"]["type"], "purchase");
        let unknown = build_object(&EventName::from("purchase.teleported"), Uuid::nil(), 1);
        assert_eq!(unknown["status"], "teleported");
    }
}
