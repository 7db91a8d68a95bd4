//! `plan` and `apply` against the local CHIP Gate mock: each kind of change, the readable and JSON
//! plans, no write on a second apply, the prune rules, convergence after a fault or a crash at
//! every request, repeated applies under random faults, and the key bundle verifying a triggered
//! delivery of each managed webhook.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chip_gate::plan::{self, Change, PlanOptions, StepOutcome, WebhookFile};
use chip_gate::serve::ServeOptions;
use chip_gate::{Client, EventName, NewWebhook, RetryPolicy, Verifier, Webhook};
use chip_gate_mock::{Fault, Faults, MockConfig, MockServer};
use common::mock::mock;
use futures::TryStreamExt;

fn client(mock: &MockServer) -> Client {
    common::mock::client_with(
        mock,
        mock.api_key(),
        Duration::from_secs(2),
        RetryPolicy::default()
            .max_attempts(3)
            .initial_backoff(Duration::from_millis(5))
            .max_backoff(Duration::from_millis(20)),
    )
}

const FILE: &str = r#"vars = ["HOST"]
[[webhook]]
title = "shop/orders"
callback = "https://${HOST}/chip/orders"
events = ["purchase.paid", "payment.refunded"]

[[webhook]]
title = "shop/payouts"
callback = "https://${HOST}/chip/payouts"
events = ["payout.success", "payout.failed"]

[[webhook]]
title = "shop/audit"
callback = "https://${HOST}/chip/audit"
all_events = true

[[webhook]]
title = "shop/new"
callback = "https://${HOST}/chip/new"
events = ["purchase.created"]
"#;

fn file() -> WebhookFile {
    WebhookFile::parse_with(FILE, |name| {
        (name == "HOST").then(|| "shop.example.com".to_owned())
    })
    .unwrap()
}

fn new(title: &str, callback: &str, events: &[EventName]) -> NewWebhook {
    let builder = NewWebhook::builder(title, callback);
    if events.is_empty() {
        builder.all_events().unwrap()
    } else {
        builder.events(events.iter().cloned()).unwrap()
    }
}

async fn all(client: &Client) -> Vec<Webhook> {
    client.webhooks().list_all().try_collect().await.unwrap()
}

/// The account as the test sees it: title -> (count, callback, all_events, sorted events).
fn summary(webhooks: &[Webhook]) -> BTreeMap<String, (usize, String, bool, Vec<String>)> {
    let mut out: BTreeMap<String, (usize, String, bool, Vec<String>)> = BTreeMap::new();
    for w in webhooks {
        let mut events: Vec<String> = if w.all_events {
            Vec::new()
        } else {
            w.event_names()
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect()
        };
        events.sort();
        let entry =
            out.entry(w.title.clone())
                .or_insert((0, w.callback.clone(), w.all_events, events));
        entry.0 += 1;
    }
    out
}

/// The file's webhooks as [`summary`] shows them.
fn desired(file: &WebhookFile) -> BTreeMap<String, (usize, String, bool, Vec<String>)> {
    file.webhooks()
        .iter()
        .map(|w| {
            let mut events: Vec<String> = w
                .event_names()
                .iter()
                .map(|e| e.as_str().to_owned())
                .collect();
            events.sort();
            (
                w.title().to_owned(),
                (1, w.callback().to_owned(), w.is_all_events(), events),
            )
        })
        .collect()
}

/// Seeds the account: `shop/orders` matching, `shop/payouts` with another callback and events,
/// `shop/audit` twice (one not all-events, created first, one matching), `shop/old` (a stale
/// prefix match) and `billing` (someone else's). Returns them by a short name.
async fn seed(client: &Client) -> HashMap<&'static str, Webhook> {
    let hooks = client.webhooks();
    let mut made = HashMap::new();
    let specs: [(&str, NewWebhook); 6] = [
        (
            "orders",
            new(
                "shop/orders",
                "https://shop.example.com/chip/orders",
                &[EventName::PaymentRefunded, EventName::PurchasePaid],
            ),
        ),
        (
            "payouts",
            new(
                "shop/payouts",
                "https://old.example.com/chip/payouts",
                &[EventName::PayoutSuccess, EventName::PayoutPending],
            ),
        ),
        (
            "audit-stale",
            new(
                "shop/audit",
                "https://shop.example.com/chip/audit",
                &[EventName::PurchasePaid],
            ),
        ),
        (
            "audit",
            new("shop/audit", "https://shop.example.com/chip/audit", &[]),
        ),
        (
            "old",
            new("shop/old", "https://shop.example.com/chip/old", &[]),
        ),
        (
            "billing",
            new(
                "billing",
                "https://billing.example.com/chip",
                &[EventName::PurchasePaid],
            ),
        ),
    ];
    for (name, spec) in specs {
        made.insert(name, hooks.create(&spec).await.unwrap());
    }
    made
}

fn with_names(text: &str, made: &HashMap<&'static str, Webhook>) -> String {
    let mut text = text.to_owned();
    for (name, w) in made {
        text = text.replace(&w.id.to_string(), &format!("<{name}>"));
    }
    text
}

#[tokio::test]
async fn the_plan_shows_each_kind_of_change() {
    let mock = mock(2).await;
    let client = client(&mock);
    let made = seed(&client).await;
    let file = file();

    // Without prune: creates and updates only; the duplicate and the unmanaged ones are reported.
    let plan = plan::plan(&client, &file, &PlanOptions::new())
        .await
        .unwrap();
    assert_eq!(plan.counts(), (1, 1, 0));
    assert_eq!(
        with_names(&plan.to_string(), &made),
        r#"+ create "shop/new"
      callback:   https://shop.example.com/chip/new
      events:     purchase.created
~ update "shop/payouts" (<payouts>)
      callback:   https://old.example.com/chip/payouts -> https://shop.example.com/chip/payouts
      events:     + payout.failed  - payout.pending
= unchanged "shop/orders" (<orders>)
= unchanged "shop/audit" (<audit>)
! 2 webhooks are titled "shop/audit" and each gets every delivery: <audit> is managed; run with --prune to delete <audit-stale>
  (2 other webhook(s) on the account are not in the file and are left alone)
Plan: 1 to create, 1 to update, 0 to delete, 2 unchanged.
"#
    );
    assert!(!plan.is_converged());

    // With prune and a prefix: the extra "shop/audit" and the stale "shop/old" go; "billing" stays.
    let options = PlanOptions::new()
        .prune(true)
        .prune_prefix("shop/")
        .unwrap();
    let plan = plan::plan(&client, &file, &options).await.unwrap();
    assert_eq!(plan.counts(), (1, 1, 2));
    let text = with_names(&plan.to_string(), &made);
    assert!(
        text.contains(
            "- delete \"shop/audit\" (<audit-stale>)\n      callback:   https://shop.example.com/chip/audit\n      why:        a duplicate: <audit> is kept for this title\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "- delete \"shop/old\" (<old>)\n      callback:   https://shop.example.com/chip/old\n      why:        not in the file, and its title starts with the prune prefix \"shop/\"\n"
        ),
        "{text}"
    );
    // The extra copy is reported once, by its delete block (issue 22): no second line about it.
    assert_eq!(text.matches("<audit-stale>").count(), 1, "{text}");
    assert!(!text.contains("\n! "), "{text}");
    assert!(text.ends_with("Plan: 1 to create, 1 to update, 2 to delete, 2 unchanged.\n"));

    // Prune alone (no prefix) reduces duplicates but never deletes a title the file does not list.
    let plan = plan::plan(&client, &file, &PlanOptions::new().prune(true))
        .await
        .unwrap();
    assert_eq!(plan.counts(), (1, 1, 1));
    assert!(
        plan.changes()
            .iter()
            .all(|c| !matches!(c, Change::Delete { title, .. } if title != "shop/audit"))
    );

    // When no copy matches, the oldest is kept and updated; as JSON.
    client
        .webhooks()
        .update(
            made["audit"].id,
            &new(
                "shop/audit",
                "https://shop.example.com/chip/audit",
                &[EventName::PurchasePaid],
            ),
        )
        .await
        .unwrap();
    let plan = plan::plan(&client, &file, &options).await.unwrap();
    let json = serde_json::to_value(&plan).unwrap();
    let changes = json["changes"].as_array().unwrap();
    let update = changes
        .iter()
        .find(|c| c["action"] == "update" && c["webhook"]["title"] == "shop/audit")
        .unwrap();
    assert_eq!(update["id"], made["audit-stale"].id.to_string());
    assert_eq!(
        update["fields"],
        serde_json::json!([{"field": "all_events", "from": false, "to": true}])
    );
    assert_eq!(update["webhook"]["all_events"], true);
    let create = &changes[0];
    assert_eq!(
        create,
        &serde_json::json!({
            "action": "create",
            "webhook": {
                "title": "shop/new",
                "callback": "https://shop.example.com/chip/new",
                "all_events": false,
                "events": ["purchase.created"],
                "line": 17,
            }
        })
    );
    let delete = changes
        .iter()
        .find(|c| c["action"] == "delete" && c["id"] == made["old"].id.to_string())
        .unwrap();
    assert_eq!(
        delete["reason"],
        serde_json::json!({"kind": "prefix", "prefix": "shop/"})
    );
    assert_eq!(json["unmanaged"][0]["title"], "billing");
    assert_eq!(json["prune"], true);
    assert_eq!(json["duplicates"][0]["title"], "shop/audit");
}

/// How many API requests `run` makes, read from what is left of a script of no-op faults.
async fn requests_made<F: std::future::Future>(mock: &MockServer, run: F) -> (usize, F::Output) {
    const N: usize = 10_000;
    mock.set_faults(Faults::script(vec![Fault::DelayMs(0); N]));
    let out = run.await;
    let left = mock.faults().script.len();
    mock.set_faults(Faults::none());
    (N - left, out)
}

#[tokio::test]
async fn apply_converges_and_a_second_apply_writes_nothing() {
    let mock = mock(2).await;
    let client = client(&mock);
    let made = seed(&client).await;
    let file = file();
    let options = PlanOptions::new()
        .prune(true)
        .prune_prefix("shop/")
        .unwrap();

    let plan = plan::plan(&client, &file, &options).await.unwrap();
    let mut printed = Vec::new();
    let (requests, report) = requests_made(
        &mock,
        plan::apply_with_progress(&client, &plan, |step| printed.push(step.to_string())),
    )
    .await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.write_calls(), 4);
    assert_eq!(requests, 4, "one request per change, nothing else");
    let printed = with_names(&printed.join("\n"), &made);
    assert!(printed.starts_with("created \"shop/new\" ("), "{printed}");
    assert!(
        printed.ends_with(
            "updated \"shop/payouts\" (<payouts>)\ndeleted \"shop/audit\" (<audit-stale>)\ndeleted \"shop/old\" (<old>)"
        ),
        "{printed}"
    );

    let after = all(&client).await;
    let mut expected = desired(&file);
    expected.insert(
        "billing".into(),
        (
            1,
            "https://billing.example.com/chip".into(),
            false,
            vec!["purchase.paid".into()],
        ),
    );
    assert_eq!(summary(&after), expected);
    // The unmanaged webhook is untouched, and the kept duplicate is the one that matched.
    let billing = after.iter().find(|w| w.title == "billing").unwrap();
    assert_eq!(billing.updated_on, made["billing"].updated_on);
    assert!(after.iter().any(|w| w.id == made["audit"].id));

    // Plan again: nothing to do; apply makes no write call (only the list pages are read).
    let (requests, plan) = requests_made(&mock, plan::plan(&client, &file, &options)).await;
    let plan = plan.unwrap();
    assert_eq!(requests, 3, "five webhooks, two per page");
    assert!(plan.is_empty() && plan.is_converged());
    assert_eq!(
        plan.to_string().lines().last(),
        Some("No changes: the account matches the file.")
    );
    let before = mock.webhooks();
    let (requests, report) = requests_made(&mock, plan::apply(&client, &plan)).await;
    assert_eq!((requests, report.write_calls()), (0, 0));
    let now = mock.webhooks();
    assert_eq!(
        before
            .iter()
            .map(|w| (w.id, w.updated_on))
            .collect::<Vec<_>>(),
        now.iter().map(|w| (w.id, w.updated_on)).collect::<Vec<_>>()
    );
    assert_eq!(plan.managed().len(), 4);
}

#[tokio::test]
async fn without_prune_nothing_outside_the_file_is_touched() {
    let mock = mock(20).await;
    let client = client(&mock);
    let made = seed(&client).await;
    let file = file();
    let plan = plan::plan(&client, &file, &PlanOptions::new())
        .await
        .unwrap();
    let report = plan::apply(&client, &plan).await;
    assert!(report.is_complete());
    let after = all(&client).await;
    for name in ["old", "billing", "audit-stale", "orders", "audit"] {
        let w = after.iter().find(|w| w.id == made[name].id).unwrap();
        assert_eq!(w.updated_on, made[name].updated_on, "{name} was written");
    }
    // Duplicates remain, so the account does not match the file yet.
    let again = plan::plan(&client, &file, &PlanOptions::new())
        .await
        .unwrap();
    assert!(again.is_empty());
    assert!(!again.is_converged());
    assert_eq!(again.duplicates().len(), 1);
    assert!(again.to_string().ends_with(
        "No changes to make, but the account does not match the file: duplicates remain.\n"
    ));
}

/// Plans and applies until the account matches, at most `max` rounds; returns the write calls.
async fn converge(client: &Client, file: &WebhookFile, options: &PlanOptions, max: usize) -> usize {
    let mut writes = 0;
    for _ in 0..max {
        let Ok(plan) = plan::plan(client, file, options).await else {
            continue;
        };
        if plan.is_converged() {
            return writes;
        }
        writes += plan::apply(client, &plan).await.write_calls();
    }
    panic!("no convergence after {max} rounds");
}

/// The account holds exactly the file's webhooks (each title once) and `billing`, untouched.
async fn assert_exactly_the_file(client: &Client, file: &WebhookFile, billing: &Webhook) {
    let after = all(client).await;
    let mut expected = desired(file);
    expected.insert(
        "billing".into(),
        (
            1,
            billing.callback.clone(),
            false,
            vec!["purchase.paid".into()],
        ),
    );
    assert_eq!(summary(&after), expected);
    let now = after.iter().find(|w| w.id == billing.id).unwrap();
    assert_eq!(now.updated_on, billing.updated_on);
}

#[tokio::test]
async fn a_fault_or_a_crash_at_any_request_then_a_rerun_converges_exactly() {
    let file = file();
    let options = PlanOptions::new()
        .prune(true)
        .prune_prefix("shop/")
        .unwrap();
    // Requests of one clean plan + apply from the seeded state: 4 list pages (6 webhooks, 2 a
    // page) + 4 writes; every position is hit with every fault.
    let faults: [fn() -> Fault; 4] = [
        || Fault::DropAfterHandling,
        || Fault::Drop,
        || Fault::Status(500),
        || Fault::Delay(Duration::from_millis(300)),
    ];
    for (kind, fault) in faults.iter().enumerate() {
        for position in 0..9 {
            let mock = mock(2).await;
            let client = client(&mock);
            let made = seed(&client).await;
            let mut script = vec![Fault::DelayMs(0); position];
            script.push(fault());
            mock.set_faults(Faults::script(script));
            let run = async {
                let plan = plan::plan(&client, &file, &options).await?;
                Ok::<_, chip_gate::Error>(plan::apply(&client, &plan).await)
            };
            if kind == 3 {
                // A crash: the process dies while this request is in flight.
                let _ = tokio::time::timeout(Duration::from_millis(100), run).await;
                tokio::time::sleep(Duration::from_millis(400)).await;
            } else {
                let _ = run.await;
            }
            mock.set_faults(Faults::none());
            converge(&client, &file, &options, 3).await;
            assert_exactly_the_file(&client, &file, &made["billing"]).await;
        }
    }
}

#[tokio::test]
async fn repeated_applies_under_random_faults_end_with_exactly_the_file() {
    let file = file();
    let options = PlanOptions::new()
        .prune(true)
        .prune_prefix("shop/")
        .unwrap();
    let mut total_writes = 0;
    for seed_value in 1..=12u64 {
        let mock = mock(2).await;
        let client = client(&mock);
        let made = seed(&client).await;
        // A reproducible script of faults for the first 120 requests: drops before and after
        // handling, 5xx and 429 among normal answers.
        let mut rng = fastrand::Rng::with_seed(seed_value);
        let script: Vec<Fault> = (0..120)
            .map(|_| match rng.u8(0..10) {
                0 => Fault::DropAfterHandling,
                1 => Fault::Drop,
                2 => Fault::Status(503),
                3 => Fault::Status(500),
                4 => Fault::TooMany { retry_after: 0 },
                _ => Fault::DelayMs(0),
            })
            .collect();
        mock.set_faults(Faults::script(script));
        let mut runs = 0;
        loop {
            runs += 1;
            assert!(runs < 60, "seed {seed_value}: no convergence");
            let Ok(plan) = plan::plan(&client, &file, &options).await else {
                continue;
            };
            if plan.is_converged() {
                break;
            }
            let report = plan::apply(&client, &plan).await;
            total_writes += report.write_calls();
            if let Some(error) = report.failure() {
                // The step that failed is named, and the steps after it did not run.
                let failed = report
                    .steps
                    .iter()
                    .position(|s| matches!(s.outcome, StepOutcome::Failed(_)))
                    .unwrap();
                assert!(
                    report.steps[failed + 1..]
                        .iter()
                        .all(|s| matches!(s.outcome, StepOutcome::NotRun)),
                    "{error}"
                );
            }
        }
        mock.set_faults(Faults::none());
        assert_exactly_the_file(&client, &file, &made["billing"]).await;
    }
    // 12 accounts, 4 changes each at the least; faults add some, but never unboundedly many.
    assert!((48..=48 * 4).contains(&total_writes), "{total_writes}");
}

#[tokio::test]
async fn the_key_bundle_verifies_a_delivery_of_each_managed_webhook() {
    use axum::{Router, routing::post};

    let app = Router::new().route("/{*path}", post(|| async { "ok" }));
    let port = common::receiver::serve(app, ServeOptions::default())
        .await
        .port();
    let mock = common::mock::start(MockConfig::default()).await;
    let client = client(&mock);
    let text = r#"vars = ["PORT"]
[[webhook]]
title = "paid"
callback = "http://127.0.0.1:${PORT}/paid"
events = ["purchase.paid"]

[[webhook]]
title = "paid and refunded"
callback = "http://127.0.0.1:${PORT}/both"
events = ["purchase.paid", "payment.refunded"]

[[webhook]]
title = "everything"
callback = "http://127.0.0.1:${PORT}/all"
all_events = true
"#;
    let file = WebhookFile::parse_with(text, |_| Some(port.to_string())).unwrap();
    // Someone else's webhook gets the same events, with a key the bundle must not hold.
    let other = client
        .webhooks()
        .create(&new(
            "other",
            &format!("http://127.0.0.1:{port}/other"),
            &[EventName::PurchasePaid],
        ))
        .await
        .unwrap();
    let options = PlanOptions::new();
    converge(&client, &file, &options, 2).await;
    let plan = plan::plan(&client, &file, &options).await.unwrap();
    assert!(plan.is_converged());
    let bundle = plan.key_bundle().unwrap();
    assert_eq!(bundle.matches("-----BEGIN PUBLIC KEY-----").count(), 3);
    assert!(bundle.starts_with("# webhook "));
    let verifier = Verifier::from_pem_bundle(&bundle).unwrap();
    assert_eq!(verifier.keys().len(), 3);

    mock.trigger(EventName::PurchasePaid, None).await.unwrap();
    mock.trigger(EventName::PaymentRefunded, None)
        .await
        .unwrap();
    let deliveries = mock
        .wait_for_deliveries(Duration::from_secs(10), |log| {
            log.iter().filter(|d| d.accepted).count() >= 6
        })
        .await
        .unwrap();
    let managed: Vec<_> = plan.managed().iter().map(|w| w.id).collect();
    let mut verified = HashMap::new();
    for delivery in &deliveries {
        let ok = verifier
            .verify(delivery.body.as_bytes(), &delivery.signature)
            .is_ok();
        if delivery.webhook_id == other.id {
            assert!(!ok, "the bundle verified a webhook it does not manage");
        } else {
            assert!(ok, "{} did not verify", delivery.callback);
            *verified.entry(delivery.webhook_id).or_insert(0) += 1;
        }
    }
    // purchase.paid reached all three, payment.refunded two of them.
    assert_eq!(verified.len(), 3);
    assert!(managed.iter().all(|id| verified.contains_key(id)));
    assert_eq!(verified.values().sum::<i32>(), 5);
}

#[tokio::test]
async fn the_variations_chip_allows_converge_too() {
    // Relative page links, no created_on (so the oldest is the first listed), events null for an
    // all-events webhook.
    let mock = common::mock::variations(2).await;
    let client = client(&mock);
    let made = seed(&client).await;
    let file = file();
    let options = PlanOptions::new()
        .prune(true)
        .prune_prefix("shop/")
        .unwrap();
    let plan = plan::plan(&client, &file, &options).await.unwrap();
    assert_eq!(plan.counts(), (1, 1, 2));
    assert!(plan::apply(&client, &plan).await.is_complete());
    let again = plan::plan(&client, &file, &options).await.unwrap();
    assert!(again.is_converged(), "{again}");
    assert_exactly_the_file(&client, &file, &made["billing"]).await;
}
