//! The quickstart: one full round trip of CHIP webhooks.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! With no `CHIP_API_KEY` it starts a local CHIP Gate (the `chip-gate-mock` crate) in-process and
//! needs no account and no network: it starts a receiver, creates a webhook for `purchase.paid`,
//! lists webhooks, fires `purchase.paid`, receives and verifies the signed delivery, prints the
//! typed event and deletes the webhook.
//!
//! With `CHIP_API_KEY` set (and optionally `CHIP_BASE_URL`) it runs the management steps against
//! CHIP itself. CHIP can only deliver to a public URL: set `CHIP_CALLBACK_URL` to one you control
//! to register it (the webhook is deleted at the end either way).

use std::error::Error;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use chip_gate::{Client, Delivery, EventName, NewWebhook, VerifiedDelivery, Verifier, Webhook};
use chip_gate_mock::{MockConfig, MockServer};
use futures::TryStreamExt;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

fn step(n: u32, text: impl std::fmt::Display) {
    println!("[{n}] {text}");
}

#[tokio::main]
async fn main() -> Result<()> {
    if std::env::var_os(chip_gate::API_KEY_ENV).is_some_and(|k| !k.is_empty()) {
        against_chip().await
    } else {
        against_local_mock().await
    }
}

async fn create_and_list(client: &Client, callback: &str, n: u32) -> Result<Webhook> {
    let new =
        NewWebhook::new("chip-gate quickstart", callback).events([EventName::PurchasePaid])?;
    let webhook = client.webhooks().create(&new).await?;
    step(
        n,
        format!(
            "Created webhook {} for {} -> {}",
            webhook.id,
            EventName::PurchasePaid,
            webhook.callback
        ),
    );
    let all: Vec<Webhook> = client.webhooks().list_all().try_collect().await?;
    step(n + 1, format!("Listed webhooks: {} in all", all.len()));
    for w in &all {
        let events = if w.all_events {
            "all events".to_owned()
        } else {
            w.event_names()
                .iter()
                .map(EventName::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("      {}  {:<24}  {events}", w.id, w.title);
    }
    Ok(webhook)
}

async fn against_local_mock() -> Result<()> {
    println!("No CHIP_API_KEY set: running against a local CHIP Gate (no account, no network).\n");

    let mock = MockServer::start(MockConfig::default()).await?;
    step(
        1,
        format!("Started a local CHIP Gate at {}", mock.base_url()),
    );

    // The receiver's port must be known before the webhook is created (it is the callback URL),
    // and its key only after (CHIP makes a key pair per webhook): bind now, serve once the key is
    // known. Connections that arrive in between wait in the listen queue.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let callback = format!("http://{}/chip/webhook", listener.local_addr()?);
    step(2, format!("Started a receiver at {callback}"));

    let client = Client::builder(mock.api_key())
        .base_url(mock.base_url())
        .build()?;
    let webhook = create_and_list(&client, &callback, 3).await?;

    let verifier = Verifier::from_pem(&webhook.public_key)?;
    let (tx, mut deliveries) = mpsc::unbounded_channel::<Delivery>();
    let app = Router::new()
        .route(
            "/chip/webhook",
            post(move |VerifiedDelivery(delivery): VerifiedDelivery| {
                let tx = tx.clone();
                async move {
                    // Only verified deliveries get here; a forged one was answered 401.
                    let _ = tx.send(delivery);
                    "ok"
                }
            }),
        )
        .with_state(verifier);
    let receiver = tokio::spawn(async move { axum::serve(listener, app).await });

    let report = mock.trigger(EventName::PurchasePaid, None).await?;
    step(
        5,
        format!(
            "Fired {} for purchase {} ({} webhook(s) subscribed)",
            report.event,
            report.object_id,
            report.deliveries.len()
        ),
    );

    let delivery = tokio::time::timeout(Duration::from_secs(30), deliveries.recv())
        .await
        .map_err(|_| "no delivery arrived within 30 s")?
        .ok_or("the receiver stopped")?;
    step(
        6,
        format!(
            "Received a delivery whose X-Signature verified with the webhook's public key ({} bytes)",
            delivery.raw_body().len()
        ),
    );

    step(7, "The typed event:");
    println!("      event:      {}", delivery.event());
    println!("      object:     {:?}", delivery.kind());
    if let Some(purchase) = delivery.purchase() {
        println!(
            "      id:         {}",
            purchase.id.as_deref().unwrap_or("-")
        );
        println!(
            "      status:     {}",
            purchase.status.as_deref().unwrap_or("-")
        );
        if let Some(details) = &purchase.purchase {
            println!(
                "      total:      {} {} (minor units)",
                details.total.unwrap_or_default(),
                details.currency.as_deref().unwrap_or("-")
            );
            for product in details.products.iter().flatten() {
                println!(
                    "      product:    {} x {} at {}",
                    product.quantity.as_deref().unwrap_or("?"),
                    product.name.as_deref().unwrap_or("?"),
                    product.price.unwrap_or_default()
                );
            }
        }
    }
    if let Some(key) = delivery.dedup_key() {
        println!(
            "      dedup key:  {} / {} / {:?}",
            key.object_id, key.event, key.updated_on
        );
    }

    client.webhooks().delete(webhook.id).await?;
    step(8, format!("Deleted webhook {}", webhook.id));

    receiver.abort();
    mock.shutdown().await;
    println!("\nDone: every step ran on this machine. Next: `cargo test --workspace`.");
    Ok(())
}

async fn against_chip() -> Result<()> {
    let client = Client::from_env()?;
    println!(
        "CHIP_API_KEY is set: managing webhooks at {}.\n",
        client.base_url()
    );
    let callback = std::env::var("CHIP_CALLBACK_URL")
        .unwrap_or_else(|_| "https://example.com/chip-gate-quickstart".to_owned());
    step(1, "Connected (the key is never printed)");
    let webhook = create_and_list(&client, &callback, 2).await?;
    println!(
        "\n      Delivery needs a public callback URL that CHIP can reach; this run registered {callback}.\n      \
         Set CHIP_CALLBACK_URL to a URL you control (serving chip-gate's receiver) to receive events."
    );
    client.webhooks().delete(webhook.id).await?;
    step(4, format!("Deleted webhook {}", webhook.id));
    Ok(())
}
