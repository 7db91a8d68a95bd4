//! Every 404 a wrong base URL causes says so, on every operation, and a 404 for an unknown
//! webhook or page says that instead; a 401 from a local mock says that its key changes at every
//! start and how to pin one. Against the mock's real HTTP server on 127.0.0.1, which answers an
//! unknown webhook and a path that does not exist alike (a 404 without a body, as CHIP documents).
#![allow(clippy::unwrap_used)]

mod common;

use std::num::NonZeroU64;

use chip_gate::{Client, EventName, NewWebhook, WebhookChanges};
use uuid::Uuid;

fn client(base_url: &str, key: &str) -> Client {
    Client::builder(key).base_url(base_url).build().unwrap()
}

fn new_webhook() -> NewWebhook {
    NewWebhook::builder("Orders", "https://shop.example.com/chip")
        .events([EventName::PurchasePaid])
        .unwrap()
}

/// Every operation's error on `client`, as text, by name.
async fn every_operation(client: &Client, id: Uuid) -> Vec<(&'static str, String)> {
    let w = client.webhooks();
    let text = |r: Result<_, chip_gate::Error>| match r {
        Ok(_) => "succeeded".to_owned(),
        Err(e) => {
            assert_eq!(e.status().map(|s| s.as_u16()), Some(404), "{e}");
            e.to_string()
        }
    };
    vec![
        ("list", text(w.list().await.map(drop))),
        (
            "list_page",
            text(w.list_page(NonZeroU64::MIN).await.map(drop)),
        ),
        ("create", text(w.create(&new_webhook()).await.map(drop))),
        ("retrieve", text(w.retrieve(id).await.map(drop))),
        ("update", text(w.update(id, &new_webhook()).await.map(drop))),
        (
            "partial_update",
            text(
                w.partial_update(id, &WebhookChanges::new().title("x"))
                    .await
                    .map(drop),
            ),
        ),
        ("delete", text(w.delete(id).await)),
        ("public_key", text(client.public_key().await.map(drop))),
    ]
}

#[tokio::test]
async fn a_base_url_without_api_v1_is_named_on_every_operation() {
    let mock = common::mock::start(common::mock::config()).await;
    // The mock's root: what a user gets by leaving `/api/v1` off.
    let client = client(&mock.root_url(), mock.api_key());
    let id = Uuid::new_v4();
    for (operation, error) in every_operation(&client, id).await {
        assert!(
            error.contains("should end in /api/v1"),
            "{operation}: {error}"
        );
        assert!(!error.contains("no webhook"), "{operation}: {error}");
    }
}

#[tokio::test]
async fn a_base_url_where_nothing_answers_is_named_on_every_operation() {
    let mock = common::mock::start(common::mock::config()).await;
    // Ends in /api/v1, but nothing of CHIP's API is there.
    let base = format!("{}/shop/api/v1", mock.root_url());
    let client = client(&base, mock.api_key());
    for (operation, error) in every_operation(&client, Uuid::new_v4()).await {
        assert!(
            error.contains(&format!("nothing answers at {base}/webhooks/")),
            "{operation}: {error}"
        );
    }
}

#[tokio::test]
async fn an_unknown_webhook_or_page_on_the_right_base_url_says_so() {
    let mock = common::mock::start(common::mock::config()).await;
    let client = client(&mock.base_url(), mock.api_key());
    let w = client.webhooks();
    let id = Uuid::new_v4();
    let errors = [
        w.retrieve(id).await.map(drop).unwrap_err(),
        w.update(id, &new_webhook()).await.map(drop).unwrap_err(),
        w.partial_update(id, &WebhookChanges::new().title("x"))
            .await
            .map(drop)
            .unwrap_err(),
        w.delete(id).await.unwrap_err(),
    ];
    for error in errors {
        let text = error.to_string();
        assert!(text.contains(&format!("no webhook {id}")), "{text}");
        assert!(!text.contains("/api/v1"), "{text}");
    }
    let past = w
        .list_page(NonZeroU64::new(99).unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(past.contains("no page 99"), "{past}");
}

#[tokio::test]
async fn a_401_from_a_local_mock_says_its_key_changes_at_every_start() {
    let mock = common::mock::start(common::mock::config()).await;
    let client = client(&mock.base_url(), "test_mock_an_old_key");
    let error = client.webhooks().list().await.unwrap_err();
    assert_eq!(error.status().map(|s| s.as_u16()), Some(401));
    let text = error.to_string();
    assert!(text.contains(chip_gate::LOCAL_MOCK_KEY_HINT), "{text}");
    assert!(text.contains("chip mock --api-key"), "{text}");
    // Every operation, not only the list.
    let text = client.public_key().await.unwrap_err().to_string();
    assert!(text.contains(chip_gate::LOCAL_MOCK_KEY_HINT), "{text}");
}
