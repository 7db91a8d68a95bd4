//! Faults injected by the local CHIP Gate mock: reads and deletes succeed within the retry bound
//! through 503s, 429 + `Retry-After`, dropped connections and slow answers; a create that meets a
//! dropped connection fails and leaves at most one new webhook, never two; a slow server hits the
//! configured timeout.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use chip_gate::{Client, Error, EventName, NewWebhook, RetryPolicy, Webhook};
use chip_gate_mock::{Fault, Faults, MockServer};
use common::mock::mock;
use futures::TryStreamExt;

fn client_for(mock: &MockServer, timeout: Duration, policy: RetryPolicy) -> Client {
    common::mock::client_with(
        mock,
        mock.api_key(),
        timeout,
        policy
            .initial_backoff(Duration::from_millis(10))
            .max_backoff(Duration::from_millis(100)),
    )
}

fn hook(title: &str) -> NewWebhook {
    NewWebhook::builder(title, "https://shop.example.com/chip")
        .events([EventName::PurchasePaid])
        .unwrap()
}

async fn seed(mock: &MockServer, n: usize) -> Vec<Webhook> {
    let client = client_for(mock, Duration::from_secs(10), RetryPolicy::none());
    let mut made = Vec::new();
    for i in 0..n {
        made.push(
            client
                .webhooks()
                .create(&hook(&format!("hook {i}")))
                .await
                .unwrap(),
        );
    }
    made
}

#[tokio::test]
async fn reads_and_deletes_ride_out_every_fault_within_the_bound() {
    let mock = mock(2).await;
    let made = seed(&mock, 5).await;
    let client = client_for(
        &mock,
        Duration::from_secs(2),
        RetryPolicy::default().max_attempts(4),
    );

    // Each read meets up to three faults in a row and succeeds on the fourth attempt.
    let faults = [
        Fault::Status(503),
        Fault::TooMany { retry_after: 1 },
        Fault::Drop,
        Fault::Status(502),
        Fault::Status(504),
        Fault::Delay(Duration::from_secs(5)),
    ];
    mock.set_faults(Faults::script(faults[..3].to_vec()));
    assert_eq!(
        client.webhooks().retrieve(made[0].id).await.unwrap().id,
        made[0].id
    );

    mock.set_faults(Faults::script(faults[3..].to_vec()));
    let page = client.webhooks().list().await.unwrap();
    assert_eq!(page.results.len(), 2);

    mock.set_faults(Faults::script(vec![Fault::Drop, Fault::Status(503)]));
    let pem = client.public_key().await.unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));

    // A list_all whose page requests keep meeting faults still yields every webhook once
    // (`DelayMs(0)` lets a request through untouched).
    mock.set_faults(Faults::script(vec![
        Fault::Status(503),
        Fault::Drop,
        Fault::TooMany { retry_after: 0 },
        Fault::DelayMs(0), // page 1, fourth attempt
        Fault::Status(502),
        Fault::DelayMs(0), // page 2, second attempt
        Fault::Drop,       // page 3, first attempt
    ]));
    let all: Vec<Webhook> = client.webhooks().list_all().try_collect().await.unwrap();
    assert_eq!(all.len(), 5);

    // Deletes: 503, then a dropped connection, then it goes through.
    mock.set_faults(Faults::script(vec![Fault::Status(503), Fault::Drop]));
    client.webhooks().delete(made[1].id).await.unwrap();
    assert_eq!(mock.webhook_count(), 4);

    // A replace (PUT) that met a dropped connection after the mock applied it is simply applied
    // again: same result.
    mock.set_faults(Faults::script(vec![Fault::DropAfterHandling]));
    let replaced = client
        .webhooks()
        .update(made[2].id, &hook("replaced"))
        .await
        .unwrap();
    assert_eq!(replaced.title, "replaced");
    assert_eq!(mock.webhook_count(), 4);
}

#[tokio::test]
async fn a_delete_whose_answer_was_lost_reports_404_on_the_retry() {
    let mock = mock(2).await;
    let made = seed(&mock, 1).await;
    let client = client_for(&mock, Duration::from_secs(2), RetryPolicy::default());
    mock.set_faults(Faults::script(vec![Fault::DropAfterHandling]));
    let err = client.webhooks().delete(made[0].id).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404), "{err:?}");
    assert_eq!(mock.webhook_count(), 0);
}

#[tokio::test]
async fn reads_give_up_after_the_bound() {
    let mock = mock(2).await;
    let client = client_for(
        &mock,
        Duration::from_secs(2),
        RetryPolicy::default().max_attempts(3),
    );
    mock.set_faults(Faults::script(vec![Fault::Status(503); 3]));
    let err = client.webhooks().list().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    // Exactly three attempts used the three scripted faults: the next single attempt succeeds.
    let once = client_for(&mock, Duration::from_secs(2), RetryPolicy::none());
    once.webhooks().list().await.unwrap();
}

#[tokio::test]
async fn a_create_that_meets_a_dropped_connection_never_makes_two_webhooks() {
    let mock = mock(2).await;
    let client = client_for(
        &mock,
        Duration::from_secs(2),
        RetryPolicy::default().max_attempts(5),
    );

    // Dropped before the mock handled it: an error, and no webhook.
    mock.set_faults(Faults::script(vec![Fault::Drop]));
    let err = client
        .webhooks()
        .create(&hook("dropped"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_eq!(mock.webhook_count(), 0);

    // Dropped after the mock stored it: an error, and exactly one webhook (a retry would make two).
    mock.set_faults(Faults::script(vec![Fault::DropAfterHandling]));
    let err = client.webhooks().create(&hook("stored")).await.unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_eq!(mock.webhook_count(), 1);

    // A 503 before handling is not retried either: the caller decides.
    mock.set_faults(Faults::script(vec![Fault::Status(503)]));
    let err = client
        .webhooks()
        .create(&hook("unavailable"))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(503));
    assert_eq!(mock.webhook_count(), 1);

    // With no fault, the create goes through once.
    client.webhooks().create(&hook("fine")).await.unwrap();
    assert_eq!(mock.webhook_count(), 2);
}

#[tokio::test]
async fn a_partial_update_that_meets_a_dropped_connection_is_not_repeated() {
    let mock = mock(2).await;
    let made = seed(&mock, 1).await;
    let client = client_for(
        &mock,
        Duration::from_secs(2),
        RetryPolicy::default().max_attempts(5),
    );
    mock.set_faults(Faults::script(vec![Fault::Drop]));
    let changes = chip_gate::WebhookChanges::new().title("renamed");
    client
        .webhooks()
        .partial_update(made[0].id, &changes)
        .await
        .unwrap_err();
    // Not retried: the title is unchanged.
    mock.set_faults(Faults::none());
    let now = client.webhooks().retrieve(made[0].id).await.unwrap();
    assert_eq!(now.title, "hook 0");
}

#[tokio::test]
async fn a_slow_server_hits_the_configured_timeout() {
    let mock = mock(2).await;
    let made = seed(&mock, 1).await;
    let client = client_for(
        &mock,
        Duration::from_millis(200),
        RetryPolicy::default().max_attempts(2),
    );
    mock.set_faults(Faults::script(vec![
        Fault::Delay(Duration::from_secs(10));
        2
    ]));
    let err = client.webhooks().retrieve(made[0].id).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());

    // A create meeting a slow server times out too, and is not repeated.
    mock.set_faults(Faults::script(vec![Fault::Delay(Duration::from_millis(
        600,
    ))]));
    let err = client.webhooks().create(&hook("slow")).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    // The mock finishes handling after the client gave up: one new webhook at most.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(mock.webhook_count() <= 2, "{}", mock.webhook_count());
}
