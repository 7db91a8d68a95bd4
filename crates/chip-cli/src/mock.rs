//! `chip mock` (run the local CHIP Gate) and `chip trigger` (make it fire an event).

use chip_gate::EventName;
use chip_gate_mock::{MockConfig, MockServer, Variant};
use clap::Args;

use crate::{ApiArgs, Failure, Outcome};

/// Arguments of `chip mock`.
#[derive(Args)]
pub struct MockArgs {
    /// The port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The API key the mock accepts [default: a random key, printed once]
    #[arg(long, value_name = "K")]
    api_key: Option<String>,
    /// Answer with the variations CHIP may send (relative page links, no `previous`, webhooks
    /// without the fields CHIP does not require, a bodiless 401) instead of as CHIP documents.
    #[arg(long)]
    variations: bool,
}

/// Runs the mock in the foreground until Ctrl-C.
pub async fn run(args: MockArgs) -> Outcome {
    let mut config = MockConfig {
        port: args.port,
        ..MockConfig::default()
    };
    if args.variations {
        config.variant = Variant::Variations;
    }
    // The default key is random per run; a key the user gave is never printed.
    let chose_key = args.api_key.is_none();
    if let Some(key) = args.api_key {
        config.api_key = key;
    }
    let server = MockServer::start(config)
        .await
        .map_err(|e| Failure::op(format!("cannot start the mock: {e}")))?;
    let flavour = if args.variations {
        " (answering with CHIP's variations)"
    } else {
        ""
    };
    println!("Local CHIP Gate running at {}{flavour}", server.base_url());
    println!("Use it from another shell:");
    println!("  export CHIP_BASE_URL={}", server.base_url());
    if chose_key {
        println!("  export CHIP_API_KEY={}", server.api_key());
    } else {
        println!("  export CHIP_API_KEY=<the key you passed with --api-key>");
    }
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| Failure::op(format!("cannot wait for Ctrl-C: {e}")))?;
    server.shutdown().await;
    Ok(0)
}

/// Arguments of `chip trigger`.
#[derive(Args)]
pub struct TriggerArgs {
    /// The event to fire, e.g. purchase.paid.
    #[arg(value_parser = crate::webhooks::parse_event)]
    event: EventName,
    /// The id (a UUID) of the object the event is about [default: a new one].
    #[arg(long, value_name = "ID")]
    object_id: Option<uuid::Uuid>,
}

/// Fires an event on the running mock and prints which webhooks got it and their answers.
pub async fn trigger(api: &ApiArgs, args: TriggerArgs) -> Outcome {
    let base = api.base_url.as_deref().ok_or_else(|| {
        Failure::usage("no mock to trigger: pass --base-url or set CHIP_BASE_URL to the URL `chip mock` printed")
    })?;
    let mut url = url::Url::parse(base)
        .map_err(|e| Failure::usage(format!("the base URL is not a URL: {e}")))?;
    if !matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")) {
        return Err(Failure::usage(
            "trigger only works against a local CHIP Gate (`chip mock`); CHIP itself fires events",
        ));
    }
    url.set_path("/__mock/trigger");
    url.set_query(None);
    let mut request = reqwest::Client::new().post(url).json(&serde_json::json!({
        "event": args.event.as_str(),
        "object_id": args.object_id,
    }));
    if let Some(key) = &api.api_key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|e| {
        Failure::op(format!(
            "cannot reach the mock at {base}: {}",
            e.without_url()
        ))
    })?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(|e| {
        Failure::op(format!(
            "the mock's answer is not JSON: {}",
            e.without_url()
        ))
    })?;
    if !status.is_success() {
        return Err(Failure::op(format!(
            "the mock refused the trigger ({status}): {body}"
        )));
    }
    print_report(&body);
    Ok(0)
}

fn print_report(report: &serde_json::Value) {
    let text = |v: &serde_json::Value, key: &str| match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => "-".to_owned(),
        Some(other) => other.to_string(),
    };
    println!(
        "Fired {} for object {}",
        text(report, "event"),
        text(report, "object_id")
    );
    let deliveries = report
        .get("deliveries")
        .and_then(|d| d.as_array())
        .cloned()
        .unwrap_or_default();
    if deliveries.is_empty() {
        println!("No webhook is subscribed to this event.");
    }
    for d in deliveries {
        let answer = if d.get("queued").and_then(|q| q.as_bool()) == Some(true) {
            "queued behind an earlier event for this object".to_owned()
        } else {
            let outcome = match (
                d.get("status").and_then(|s| s.as_u64()),
                d.get("error").and_then(|e| e.as_str()),
            ) {
                (Some(status), _) => format!("answered {status}"),
                (None, Some(error)) => format!("no answer ({error})"),
                (None, None) => "no answer".to_owned(),
            };
            let verdict = if d.get("accepted").and_then(|a| a.as_bool()) == Some(true) {
                "accepted"
            } else {
                "not accepted, will retry"
            };
            format!("{outcome}, {verdict}")
        };
        println!(
            "  webhook {} -> {}: {answer}",
            text(&d, "webhook_id"),
            text(&d, "callback")
        );
    }
}
