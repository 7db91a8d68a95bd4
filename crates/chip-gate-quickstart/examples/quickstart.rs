//! The quickstart: one full round trip of CHIP webhooks.
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! It always starts a local CHIP Gate (the `chip-gate-mock` crate) in-process and needs no account
//! and no network, whatever the environment holds (a `CHIP_API_KEY` exported for the CLI is not
//! used): it starts a receiver, creates a webhook for `purchase.paid`, lists webhooks, fires
//! `purchase.paid`, receives and verifies the signed delivery, prints the typed event and deletes
//! the webhook.
//!
//! Running against a real CHIP account is a separate, explicit choice:
//!
//! ```sh
//! CHIP_API_KEY=... CHIP_CALLBACK_URL=https://your.host/chip cargo run --example quickstart -- --live
//! ```
//!
//! It says what it will do on that account before doing it (create one webhook named
//! `chip-gate quickstart` for `purchase.paid` to your callback, list the webhooks, delete that one
//! webhook), then does it.

use std::error::Error;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use chip_gate::serve::ServeOptions;
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
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let live = match args.as_slice() {
        [] => false,
        [flag] if flag == "--live" => true,
        _ => {
            eprintln!(
                "usage: cargo run --example quickstart [-- --live]\n\
                 (without --live everything runs on a local CHIP Gate; --live uses CHIP_API_KEY)"
            );
            return std::process::ExitCode::from(2);
        }
    };
    let outcome = if live {
        against_chip().await
    } else {
        against_local_mock().await
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nThe quickstart stopped: {error}");
            eprintln!("What to do: {}", advice(&*error, live));
            std::process::ExitCode::FAILURE
        }
    }
}

/// A next step for the person who ran the quickstart, from what went wrong.
fn advice(error: &(dyn Error + 'static), live: bool) -> String {
    match error.downcast_ref::<chip_gate::Error>() {
        Some(e) if e.status().is_some_and(|s| s.as_u16() == 401) => {
            "CHIP refused the API key: check CHIP_API_KEY (a secret key from the CHIP dashboard)."
                .into()
        }
        Some(chip_gate::Error::InvalidRequest { .. }) => {
            "fix the setting named above and run it again.".into()
        }
        Some(chip_gate::Error::Transport { .. } | chip_gate::Error::Timeout { .. }) if live => {
            "check your network and CHIP_BASE_URL (unset means https://gate.chip-in.asia/api/v1)."
                .into()
        }
        _ if live => "run without --live first: `cargo run --example quickstart`.".into(),
        _ => "this runs only on this machine; run `cargo test --workspace` and look for the same \
              failure, or report it with the line above."
            .into(),
    }
}

async fn create_and_list(client: &Client, callback: &str, n: u32) -> Result<Webhook> {
    let new =
        NewWebhook::builder("chip-gate quickstart", callback).events([EventName::PurchasePaid])?;
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
    println!("Running on a local CHIP Gate: no account, no network, nothing leaves this machine.");
    if std::env::var_os(chip_gate::API_KEY_ENV).is_some_and(|k| !k.is_empty()) {
        println!("(CHIP_API_KEY is set and not used; `-- --live` would use it.)");
    }
    println!();

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
    // chip-gate's server bounds what an anonymous caller can make it read before a signature.
    let receiver = tokio::spawn(chip_gate::serve::serve(
        listener,
        app,
        ServeOptions::default(),
    ));

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
            if let Some(total) = details.total_amount() {
                println!("      total:      {total}");
            }
            let currency = details.currency.as_deref().unwrap_or("MYR");
            for product in details.products.iter().flatten() {
                let price = product
                    .price
                    .map(|p| chip_gate::Amount::new(p, currency).to_string());
                println!(
                    "      product:    {} x {} at {}",
                    product.quantity.as_deref().unwrap_or("?"),
                    product.name.as_deref().unwrap_or("?"),
                    price.as_deref().unwrap_or("?")
                );
            }
        }
    }
    if let Some(key) = delivery.dedup_key() {
        println!("      dedup key:  {key}");
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
    let callback = std::env::var("CHIP_CALLBACK_URL").map_err(|_| {
        "--live needs CHIP_CALLBACK_URL: a public https:// URL you control, where CHIP can deliver \
         (nothing is created on the account without it)"
    })?;
    println!(
        "Running against CHIP at {} with CHIP_API_KEY.",
        client.base_url()
    );
    println!("On that account this run will:");
    println!(
        "  1. create one webhook named \"chip-gate quickstart\" for purchase.paid -> {callback}"
    );
    println!("  2. list the account's webhooks");
    println!("  3. delete the webhook it created (and nothing else)\n");
    let webhook = create_and_list(&client, &callback, 1).await?;
    step(
        3,
        format!(
            "CHIP will sign deliveries to this webhook with:\n{}",
            webhook.public_key
        ),
    );
    client.webhooks().delete(webhook.id).await?;
    step(4, format!("Deleted webhook {}", webhook.id));
    println!(
        "\nDone. To receive events, serve chip-gate's receiver at {callback} with that key \
         (see the README's \"Receiving deliveries\")."
    );
    Ok(())
}
