//! How much the chip-gate client costs over a bare `reqwest::Client`.
//!
//! Starts the local CHIP Gate mock on 127.0.0.1, creates one webhook, then makes 2,000 sequential
//! `GET /webhooks/{id}/` calls through `chip_gate::Client::webhooks().retrieve()` and 2,000 through a
//! bare `reqwest::Client` sending the same request (same headers, JSON decoded into the same type),
//! alternating in three rounds after a warm-up. Prints each round, the median rates and the ratio
//! wrapper/bare (the target is at least 0.9).
//!
//! ```text
//! cargo run --release -p chip-gate --example client_bench
//! ```

use std::time::{Duration, Instant};

use chip_gate::{Client, EventName, NewWebhook};
use chip_gate_api::types::Webhook;
use chip_gate_mock::{MockConfig, MockServer};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue};

const CALLS: usize = 2_000;
const WARM_UP: usize = 200;
const ROUNDS: usize = 3;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mock = MockServer::start(MockConfig {
        generate_keys: false,
        ..Default::default()
    })
    .await?;
    let base = mock.base_url();

    let client = Client::builder(mock.api_key()).base_url(&base).build()?;
    let webhook = client
        .webhooks()
        .create(
            &NewWebhook::builder("bench", "https://bench.example.com/chip")
                .events([EventName::PurchasePaid])?,
        )
        .await?;
    let id = webhook.id;

    let mut auth = HeaderValue::try_from(format!("Bearer {}", mock.api_key()))?;
    auth.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, auth);
    let bare = reqwest::Client::builder()
        .default_headers(headers)
        .user_agent(chip_gate::USER_AGENT)
        .connect_timeout(chip_gate::DEFAULT_CONNECT_TIMEOUT)
        .timeout(chip_gate::DEFAULT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    let wrapper_run = |n: usize| {
        let client = client.clone();
        async move {
            let start = Instant::now();
            for _ in 0..n {
                let got = client.webhooks().retrieve(id).await?;
                debug_assert_eq!(got.id, id);
            }
            Ok::<Duration, BoxError>(start.elapsed())
        }
    };
    let bare_run = |n: usize| {
        let bare = bare.clone();
        let base = base.clone();
        async move {
            let start = Instant::now();
            for _ in 0..n {
                let got: Webhook = bare
                    .get(format!("{base}/webhooks/{id}/"))
                    .header(ACCEPT, "application/json")
                    .header("api-version", "1.0.0")
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                debug_assert_eq!(got.id, id);
            }
            Ok::<Duration, BoxError>(start.elapsed())
        }
    };

    wrapper_run(WARM_UP).await?;
    bare_run(WARM_UP).await?;

    let rate = |d: Duration| CALLS as f64 / d.as_secs_f64();
    let mut wrapper_rates = Vec::with_capacity(ROUNDS);
    let mut bare_rates = Vec::with_capacity(ROUNDS);
    for round in 1..=ROUNDS {
        // Alternate which goes first, so neither always runs on a warmer machine.
        let (w, b) = if round % 2 == 1 {
            let b = bare_run(CALLS).await?;
            (wrapper_run(CALLS).await?, b)
        } else {
            let w = wrapper_run(CALLS).await?;
            (w, bare_run(CALLS).await?)
        };
        println!(
            "round {round}: wrapper {:>8.0} calls/s ({:?}), bare reqwest {:>8.0} calls/s ({:?})",
            rate(w),
            w,
            rate(b),
            b
        );
        wrapper_rates.push(rate(w));
        bare_rates.push(rate(b));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (w, b) = (median(&mut wrapper_rates), median(&mut bare_rates));
    println!(
        "{CALLS} sequential retrieve calls against the local mock, median of {ROUNDS} rounds:"
    );
    println!("  wrapper (chip_gate::Client): {w:.0} calls/s");
    println!("  bare reqwest::Client:        {b:.0} calls/s");
    println!(
        "  ratio wrapper/bare:          {:.3} (target >= 0.9)",
        w / b
    );
    mock.shutdown().await;
    Ok(())
}
