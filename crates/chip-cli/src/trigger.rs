//! `chip trigger`: make a running local CHIP Gate (`chip mock`) fire an event.

use chip_gate::EventName;
use clap::Args;

use chip_gate_mock::TriggerReport;

use crate::common::{ApiArgs, Failure, Outcome, api_key, base_url};
use crate::term::clean;
use crate::{http, outln};

/// The most bytes read from the mock's answer.
const ANSWER_MAX: usize = 1024 * 1024;

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

/// Reads the answer's body, at most [`ANSWER_MAX`] bytes.
async fn read_answer(mut response: reqwest::Response, base: &str) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        Failure::op(format!(
            "cannot read the answer of the mock at {base}: {}",
            e.without_url()
        ))
    })? {
        if body.len() + chunk.len() > ANSWER_MAX {
            return Err(Failure::op(format!(
                "the answer of the mock at {base} is larger than 1 MiB"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Fires an event on the running mock and prints which webhooks got it and their answers.
///
/// The request carries the API key (the same one-line error as the other commands when there is
/// none), goes straight to the loopback mock (never through a proxy), has a timeout, and follows
/// no redirect.
pub async fn run(api: &ApiArgs, args: TriggerArgs) -> Outcome {
    let base = base_url(api)?.ok_or_else(|| {
        Failure::usage(
            "no mock to trigger: pass --base-url or set CHIP_BASE_URL to the URL `chip mock` printed",
        )
    })?;
    let mut url = url::Url::parse(&base)
        .map_err(|e| Failure::usage(format!("the base URL is not a URL: {e}")))?;
    if !http::is_plain_loopback(&url) {
        return Err(Failure::usage(
            "trigger only works against a local CHIP Gate (`chip mock`, http:// on a loopback \
             address); CHIP itself fires events",
        ));
    }
    let key = api_key(api)?;
    url.set_path("/__mock/trigger");
    url.set_query(None);
    let client = http::builder_for(&url)
        .build()
        .map_err(|e| Failure::op(format!("cannot build the HTTP client: {e}")))?;
    let response = client
        .post(url)
        .bearer_auth(key)
        .json(&serde_json::json!({
            "event": args.event.as_str(),
            "object_id": args.object_id,
        }))
        .send()
        .await
        .map_err(|e| {
            Failure::op(format!(
                "cannot reach the mock at {base}: {}",
                e.without_url()
            ))
        })?;
    let status = response.status();
    let body = read_answer(response, &base).await?;
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    if !status.is_success() {
        let said = json
            .as_ref()
            .and_then(|v| v.get("message").or_else(|| v.get("detail")))
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        let said: String = clean(said.trim()).chars().take(300).collect();
        // Worded as the library words a 401 from a mock (`chip webhooks list` and the rest).
        let hint = if status == reqwest::StatusCode::UNAUTHORIZED {
            format!(" ({})", chip_gate::LOCAL_MOCK_KEY_HINT)
        } else {
            String::new()
        };
        return Err(Failure::op(format!(
            "the mock refused the trigger ({status}): {said}{hint}"
        )));
    }
    let report: TriggerReport = serde_json::from_slice(&body).map_err(|e| {
        Failure::op(format!(
            "the mock's answer is not a trigger report ({e}); is {base} a chip mock?"
        ))
    })?;
    print_report(&report)?;
    Ok(0)
}

/// One line for the event, then one line per subscribed webhook: what its first attempt got.
fn print_report(report: &TriggerReport) -> Result<(), Failure> {
    outln!(
        "Fired {} for object {}",
        clean(report.event.as_str()),
        report.object_id
    )?;
    if report.deliveries.is_empty() {
        outln!("No webhook is subscribed to this event.")?;
    }
    for d in &report.deliveries {
        let answer = if d.queued {
            "queued behind an earlier event for this object".to_owned()
        } else {
            let outcome = match (d.status, d.error.as_deref()) {
                (Some(status), _) => format!("answered {status}"),
                (None, Some(error)) => format!("no answer ({})", clean(error)),
                (None, None) => "no answer".to_owned(),
            };
            let verdict = if d.accepted {
                "accepted"
            } else {
                "not accepted, will retry"
            };
            format!("{outcome}, {verdict}")
        };
        outln!(
            "  webhook {} -> {}: {answer}",
            d.webhook_id,
            clean(&d.callback)
        )?;
    }
    Ok(())
}
