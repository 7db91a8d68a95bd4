//! CHIP's real delivery samples parse into the right event and object, and re-serialize losslessly.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;

use chip_gate::delivery::{Delivery, DeliveryError, DeliveryObject, ObjectKind};
use chip_gate::{EventName, Verifier};
use common::fixture;
use serde_json::Value;

#[test]
fn every_sample_is_listed_here() {
    let listed: HashSet<&str> = DELIVERIES.iter().map(|(file, _, _)| *file).collect();
    let samples: HashSet<&str> = chip_gate_mock::SAMPLES.iter().map(|s| s.file).collect();
    assert_eq!(listed, samples);
}

const DELIVERIES: [(&str, EventName, ObjectKind); 17] = [
    (
        "01-event-Purchase-paid.json",
        EventName::PurchasePaid,
        ObjectKind::Purchase,
    ),
    (
        "02-event-Purchase-created.json",
        EventName::PurchaseCreated,
        ObjectKind::Purchase,
    ),
    (
        "03-event-Purchase-viewed.json",
        EventName::PurchaseViewed,
        ObjectKind::Purchase,
    ),
    (
        "04-event-Purchase-failed.json",
        EventName::PurchasePaymentFailure,
        ObjectKind::Purchase,
    ),
    (
        "05-event-Purchase-pending-execute.json",
        EventName::PurchasePendingExecute,
        ObjectKind::Purchase,
    ),
    (
        "06-event-Purchase-preauthorized.json",
        EventName::PurchasePreauthorized,
        ObjectKind::Purchase,
    ),
    (
        "07-event-Purchase-settled.json",
        EventName::PurchaseSettled,
        ObjectKind::Purchase,
    ),
    (
        "08-event-Purchase-hold.json",
        EventName::PurchaseHold,
        ObjectKind::Purchase,
    ),
    (
        "09-event-Purchase-pending-capture.json",
        EventName::PurchasePendingCapture,
        ObjectKind::Purchase,
    ),
    (
        "10-event-Purchase-captured.json",
        EventName::PurchaseCaptured,
        ObjectKind::Purchase,
    ),
    (
        "11-event-Purchase-pending-refund.json",
        EventName::PurchasePendingRefund,
        ObjectKind::Purchase,
    ),
    (
        "12-event-Purchase-refunded.json",
        EventName::PaymentRefunded,
        ObjectKind::Payment,
    ),
    (
        "13-event-Purchase-pending-recurring-token-delete.json",
        EventName::PurchasePendingRecurringTokenDelete,
        ObjectKind::Purchase,
    ),
    (
        "14-event-Purchase-recurring-token-deleted.json",
        EventName::PurchaseRecurringTokenDeleted,
        ObjectKind::Purchase,
    ),
    (
        "15-event-Purchase-pending-release.json",
        EventName::PurchasePendingRelease,
        ObjectKind::Purchase,
    ),
    (
        "16-event-Purchase-released.json",
        EventName::PurchaseReleased,
        ObjectKind::Purchase,
    ),
    (
        "17-event-Purchase-cancelled.json",
        EventName::PurchaseCancelled,
        ObjectKind::Purchase,
    ),
];

#[test]
fn all_17_real_deliveries_parse_and_round_trip() {
    let mut keys = HashSet::new();
    for (file, event, kind) in DELIVERIES {
        let body = fixture(&format!("chip-collect/deliveries/{file}"));
        let delivery = Delivery::parse_unverified(body.clone()).unwrap();
        assert_eq!(delivery.event(), &event, "{file}");
        assert!(delivery.event().is_known(), "{file}");
        assert_eq!(delivery.kind(), kind, "{file}");
        assert_eq!(delivery.raw_body(), body.as_slice(), "{file}");

        let original: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(delivery.raw_json().unwrap(), original, "{file}");
        let reserialized = serde_json::to_value(&delivery).unwrap();
        assert_eq!(
            reserialized, original,
            "{file}: re-serialization changed the JSON"
        );
        // And through text, as a user storing it would.
        let text = serde_json::to_string(&delivery).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            original,
            "{file}"
        );

        let key = delivery.dedup_key().unwrap();
        assert_eq!(
            Some(key.object_id.as_str()),
            original["id"].as_str(),
            "{file}"
        );
        assert_eq!(key.updated_on, original["updated_on"].as_i64(), "{file}");
        assert!(keys.insert(key.to_string()), "{file}: duplicate dedup key");
    }
}

#[test]
fn purchase_fields_are_typed() {
    let delivery = Delivery::parse_unverified(fixture(
        "chip-collect/deliveries/01-event-Purchase-paid.json",
    ))
    .unwrap();
    let purchase = delivery.purchase().unwrap();
    assert_eq!(
        purchase.id.as_deref(),
        Some("bb2529fa-42b7-404b-a412-ed75b2191b38")
    );
    assert_eq!(purchase.object_type.as_deref(), Some("purchase"));
    assert_eq!(purchase.status.as_deref(), Some("paid"));
    assert_eq!(purchase.is_test, Some(true));
    assert_eq!(purchase.viewed_on, Some(1_708_327_310));
    assert_eq!(purchase.refundable_amount, Some(200));
    assert_eq!(purchase.order_id, None);
    assert_eq!(
        purchase.extra.get("order_id"),
        Some(&Value::Null),
        "a null stays visible in extra"
    );
    assert!(
        purchase.extra.contains_key("upsell_campaigns"),
        "unknown fields are kept"
    );

    let details = purchase.purchase.as_ref().unwrap();
    assert_eq!(details.currency.as_deref(), Some("MYR"));
    assert_eq!(details.total, Some(200));
    let product = &details.products.as_ref().unwrap()[0];
    assert_eq!(product.price, Some(200));
    assert_eq!(product.quantity.as_deref(), Some("1.0000"));
    assert_eq!(product.tax_percent.as_deref(), Some("0.00"));

    let payment = purchase.payment.as_ref().unwrap();
    assert_eq!(
        (payment.amount, payment.net_amount, payment.fee_amount),
        (Some(200), Some(180), Some(0))
    );
    assert_eq!(payment.pending_amount, Some(20));

    let history = purchase.status_history.as_ref().unwrap();
    let statuses: Vec<_> = history
        .iter()
        .filter_map(|change| change.status.as_deref())
        .collect();
    assert_eq!(statuses, ["created", "viewed", "paid"]);
    assert_eq!(
        purchase.client.as_ref().unwrap().email.as_deref(),
        Some("test@gmail.com")
    );
    assert_eq!(
        purchase
            .transaction_data
            .as_ref()
            .unwrap()
            .payment_method
            .as_deref(),
        Some("fpx")
    );
}

#[test]
fn refund_payment_is_typed_with_its_related_purchase() {
    let delivery = Delivery::parse_unverified(fixture(
        "chip-collect/deliveries/12-event-Purchase-refunded.json",
    ))
    .unwrap();
    let payment = delivery.payment().unwrap();
    let related = payment.related_to.as_ref().unwrap();
    assert_eq!(
        related.id.as_deref(),
        Some("b6cd91ee-3969-49e1-87e1-0d2dbc277294")
    );
    assert_eq!(related.object_type.as_deref(), Some("purchase"));
    assert_eq!(related.reference.as_deref(), Some("CH8512"));
    let details = payment.payment.as_ref().unwrap();
    assert_eq!(details.payment_type.as_deref(), Some("refund"));
    assert_eq!(details.is_outgoing, Some(true));
    assert_eq!(payment.fee_amount, Some(20));
    let transaction = payment.transaction_data.as_ref().unwrap();
    assert_eq!(
        transaction.method_extra.as_ref().unwrap()["card_brand"],
        "visa"
    );
}

#[test]
fn the_signed_vector_verifies_then_parses() {
    let pem = std::str::from_utf8(&fixture("chip-collect/signed-vector/public_key.pem"))
        .unwrap()
        .to_owned();
    let signature =
        String::from_utf8(fixture("chip-collect/signed-vector/x-signature.txt")).unwrap();
    let body = fixture("chip-collect/signed-vector/body.json");
    let delivery = Verifier::from_pem(&pem)
        .unwrap()
        .verify_and_parse(body.clone(), &signature)
        .unwrap();
    assert_eq!(delivery.event(), &EventName::PurchaseCreated);
    assert_eq!(delivery.kind(), ObjectKind::Purchase);
    assert_eq!(
        serde_json::to_value(&delivery).unwrap(),
        serde_json::from_slice::<Value>(&body).unwrap()
    );
    // Its id is empty but present: the dedup key still exists.
    assert_eq!(
        delivery.dedup_key().unwrap().to_string(),
        ":purchase.created:1642056635"
    );
}

#[test]
fn unknown_events_and_object_types_are_kept() {
    let body =
        br#"{"id":"o1","type":"voucher","event_type":"voucher.redeemed","updated_on":5,"x":[1]}"#;
    let delivery = Delivery::parse_unverified(body.as_slice()).unwrap();
    assert_eq!(
        delivery.event(),
        &EventName::Unknown("voucher.redeemed".to_owned())
    );
    assert_eq!(delivery.kind(), ObjectKind::Unknown);
    assert_eq!(
        delivery.dedup_key().unwrap().to_string(),
        "o1:voucher.redeemed:5"
    );
    assert_eq!(
        serde_json::to_value(&delivery).unwrap(),
        serde_json::from_slice::<Value>(body).unwrap()
    );
}

#[test]
fn payout_and_billing_template_client_are_recognised() {
    let payout = br#"{"id":"p","type":"payout","event_type":"payout.success","status":"success","payment":{"amount":1500,"currency":"MYR"}}"#;
    let delivery = Delivery::parse_unverified(payout.as_slice()).unwrap();
    assert_eq!(delivery.event(), &EventName::PayoutSuccess);
    let DeliveryObject::Payout(payout) = delivery.object() else {
        panic!("not a payout")
    };
    assert_eq!(payout.payment.as_ref().unwrap().amount, Some(1500));

    // Without a `type`, the event prefix decides.
    let btc = br#"{"id":"b","event_type":"billing_template_client.subscription_billing_cancelled","status":"cancelled"}"#;
    let delivery = Delivery::parse_unverified(btc.as_slice()).unwrap();
    assert_eq!(delivery.kind(), ObjectKind::BillingTemplateClient);
    assert_eq!(
        serde_json::to_value(&delivery).unwrap(),
        serde_json::from_slice::<Value>(btc).unwrap()
    );
}

#[test]
fn malformed_bodies_are_rejected_precisely() {
    assert!(matches!(
        Delivery::parse_unverified(b"{\"a\":".as_slice()),
        Err(DeliveryError::NotJson { line: 1, .. })
    ));
    assert_eq!(
        Delivery::parse_unverified(b"[1,2]".as_slice()),
        Err(DeliveryError::NotAnObject)
    );
    assert_eq!(
        Delivery::parse_unverified(b"{\"id\":\"x\"}".as_slice()),
        Err(DeliveryError::MissingEventType)
    );
    assert_eq!(
        Delivery::parse_unverified(b"{\"event_type\":7}".as_slice()),
        Err(DeliveryError::InvalidField {
            path: "event_type".to_owned()
        })
    );
    assert_eq!(
        Delivery::parse_unverified(
            br#"{"type":"purchase","event_type":"purchase.paid","updated_on":"yesterday"}"#
                .as_slice()
        ),
        Err(DeliveryError::InvalidField {
            path: "updated_on".to_owned()
        })
    );
    assert_eq!(
        Delivery::parse_unverified(
            br#"{"type":"payment","event_type":"payment.refunded","related_to":{"id":5}}"#
                .as_slice()
        ),
        Err(DeliveryError::InvalidField {
            path: "related_to.id".to_owned()
        })
    );
}
