//! The inbox against real databases: SQLite always, PostgreSQL when
//! `CHIP_INBOX_TEST_POSTGRES_URL` is set.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chip_gate_inbox::{
    Backoff, DeliveryState, Inbox, InboxError, InboxOptions, IntakeError, ListFilter, StalePolicy,
    StoredDelivery, WorkerOptions,
};
use common::*;
use http::StatusCode;

/// Signs `body` and hands it to `intake` in a task of its own, so that deliveries sent one after
/// the other arrive together.
fn spawn_receive(
    intake: &chip_gate_inbox::Intake,
    body: Bytes,
) -> tokio::task::JoinHandle<Result<chip_gate_inbox::Receipt, IntakeError>> {
    let intake = intake.clone();
    let headers = signed_headers(&signer(), &body);
    tokio::spawn(async move { intake.receive(&headers, body).await })
}

async fn store(inbox: &Inbox, body: Bytes) -> chip_gate_inbox::Receipt {
    let intake = inbox.intake(verifier()).unwrap();
    let headers = signed_headers(&signer(), &body);
    intake.receive(&headers, body).await.unwrap()
}

async fn rows(inbox: &Inbox) -> Vec<chip_gate_inbox::DeliverySummary> {
    inbox.list(&ListFilter::new().limit(1000)).await.unwrap()
}

async fn stores_once_and_records_duplicates(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let intake = inbox.intake(verifier()).unwrap();
    let body = purchase_body("p-1", "purchase.paid", 1_700_000_100);
    let headers = signed_headers(&signer(), &body);
    let first = intake.receive(&headers, body.clone()).await.unwrap();
    assert!(!first.duplicate);
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.dedup_key, "p-1:purchase.paid:1700000100");
    let again = intake.receive(&headers, body.clone()).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.id, first.id);
    assert_eq!(again.status(), StatusCode::OK);

    let stored = inbox.get(first.id.unwrap()).await.unwrap();
    assert_eq!(stored.body, body, "the exact bytes are kept");
    assert_eq!(
        stored.signature,
        headers["x-signature"].to_str().unwrap(),
        "the signature is kept"
    );
    assert_eq!(stored.summary.event, "purchase.paid");
    assert_eq!(stored.summary.object_kind, "purchase");
    assert_eq!(stored.summary.object_id.as_deref(), Some("p-1"));
    assert_eq!(stored.summary.updated_on, Some(1_700_000_100));
    assert_eq!(stored.summary.duplicates, 1);
    assert_eq!(stored.summary.state, DeliveryState::Pending);
    assert!(stored.summary.received_at_ms > 0);

    let counts = inbox.counts().await.unwrap();
    assert_eq!((counts.received, counts.duplicates), (1, 1));
    assert_eq!(rows(&inbox).await.len(), 1);
}
on_both!(stores_once_and_records_duplicates);

async fn keyless_and_untyped_deliveries_are_stored(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    // Signed by CHIP's key but unreadable by the typed model: stored raw, never refused.
    let not_json = Bytes::from_static(b"this is not json");
    let receipt = store(&inbox, not_json.clone()).await;
    assert!(receipt.dedup_key.starts_with("sha256:"));
    assert!(store(&inbox, not_json).await.duplicate);
    // No updated_on: the key carries a hash of the body, so different bodies stay apart.
    let a =
        Bytes::from_static(br#"{"id":"x","type":"purchase","event_type":"purchase.viewed","n":1}"#);
    let b =
        Bytes::from_static(br#"{"id":"x","type":"purchase","event_type":"purchase.viewed","n":2}"#);
    let ka = store(&inbox, a.clone()).await;
    let kb = store(&inbox, b).await;
    assert!(ka.dedup_key.starts_with("x:purchase.viewed:-:sha256:"));
    assert_ne!(ka.dedup_key, kb.dedup_key);
    assert!(store(&inbox, a).await.duplicate);
    let all = rows(&inbox).await;
    assert_eq!(all.len(), 3);
    let untyped = all.iter().find(|r| r.object_id.is_none()).unwrap();
    assert!(untyped.typing_problem.is_some());
    // Every one of them is handed over.
    assert_eq!(drain(&inbox, fast_worker()).await.len(), 3);
}
on_both!(keyless_and_untyped_deliveries_are_stored);

async fn bad_input_is_refused_and_never_stored(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let intake = inbox.intake(verifier().with_max_body_bytes(4096)).unwrap();
    let body = purchase_body("p-2", "purchase.paid", 5);

    let unsigned = intake.receive(&http::HeaderMap::new(), body.clone()).await;
    assert!(matches!(unsigned, Err(IntakeError::Signature(_))));
    assert_eq!(unsigned.unwrap_err().status(), StatusCode::UNAUTHORIZED);

    let wrong_key = intake
        .receive(&signed_headers(&other_signer(), &body), body.clone())
        .await
        .unwrap_err();
    assert_eq!(wrong_key.status(), StatusCode::UNAUTHORIZED);

    let good = signed_headers(&signer(), &body);
    let tampered = Bytes::from(body.iter().copied().rev().collect::<Vec<u8>>());
    let tampered = intake.receive(&good, tampered).await.unwrap_err();
    assert_eq!(tampered.status(), StatusCode::UNAUTHORIZED);

    let garbage = intake
        .receive(&header_map("!!!not base64!!!"), body.clone())
        .await
        .unwrap_err();
    assert_eq!(garbage.status(), StatusCode::UNAUTHORIZED);

    let mut twice = good.clone();
    twice.append("x-signature", good["x-signature"].clone());
    let twice = intake.receive(&twice, body.clone()).await.unwrap_err();
    assert_eq!(twice.status(), StatusCode::UNAUTHORIZED);

    let big = Bytes::from(vec![b' '; 5000]);
    let oversized = intake
        .receive(&signed_headers(&signer(), &big), big)
        .await
        .unwrap_err();
    assert_eq!(oversized.status(), StatusCode::PAYLOAD_TOO_LARGE);

    let unparseable = Bytes::from_static(b"{not json");
    let unsigned_garbage = intake
        .receive(&header_map("AAAA"), unparseable)
        .await
        .unwrap_err();
    assert_eq!(unsigned_garbage.status(), StatusCode::UNAUTHORIZED);

    assert!(rows(&inbox).await.is_empty(), "nothing refused is stored");
    assert_eq!(inbox.counts().await.unwrap().received, 0);
}
on_both!(bad_input_is_refused_and_never_stored);

async fn objects_are_handled_in_updated_on_order(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    // CHIP's retries may bring an object's states out of order; all three are stored before a
    // worker runs.
    for updated_on in [30, 10, 20] {
        store(&inbox, purchase_body("p-3", "purchase.paid", updated_on)).await;
    }
    store(&inbox, purchase_body("other", "purchase.paid", 1)).await;
    let seen = drain(&inbox, fast_worker()).await;
    let order: Vec<i64> = seen
        .iter()
        .filter(|d| d.summary.object_id.as_deref() == Some("p-3"))
        .map(|d| d.summary.updated_on.unwrap())
        .collect();
    assert_eq!(order, [10, 20, 30]);
    assert_eq!(seen.len(), 4);
    assert_eq!(inbox.counts().await.unwrap().done, 4);
}
on_both!(objects_are_handled_in_updated_on_order);

async fn claims_take_deliveries_in_the_order_they_came_due(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    // Three objects, stored in this order: the first one waits an hour for a retry, the second
    // came due after the third (a retry of it fell due later than the third arrived).
    let waiting = store(&inbox, purchase_body("waits", "purchase.paid", 1)).await;
    let later = store(&inbox, purchase_body("due-later", "purchase.paid", 1)).await;
    let sooner = store(&inbox, purchase_body("due-sooner", "purchase.paid", 1)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    for (id, due) in [
        (waiting.id.unwrap(), now + 3_600_000),
        (later.id.unwrap(), now - 1_000),
        (sooner.id.unwrap(), now - 2_000),
    ] {
        exec(
            &inbox,
            &format!(
                "UPDATE chip_inbox_deliveries SET attempts = 1, last_error = 'down', \
                 next_attempt_at = {due} WHERE id = {id}"
            ),
        )
        .await;
    }
    let seen = drain(&inbox, fast_worker().batch_size(1)).await;
    let order: Vec<&str> = seen
        .iter()
        .map(|d| d.summary.object_id.as_deref().unwrap())
        .collect();
    assert_eq!(
        order,
        ["due-sooner", "due-later"],
        "in the order they came due; the one waiting for its retry is not handed over"
    );
    let status = inbox.status().await.unwrap();
    assert_eq!(status.pending, 1);
    assert_eq!(
        inbox.get(waiting.id.unwrap()).await.unwrap().summary.state,
        DeliveryState::Pending
    );
}
on_both!(claims_take_deliveries_in_the_order_they_came_due);

async fn older_than_handled_is_stale(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    store(&inbox, purchase_body("p-4", "payment.refunded", 50)).await;
    assert_eq!(drain(&inbox, fast_worker()).await.len(), 1);
    // The older purchase.paid arrives after the refund was handled: never handed over.
    let late = store(&inbox, purchase_body("p-4", "purchase.paid", 40)).await;
    assert!(drain(&inbox, fast_worker()).await.is_empty());
    let stale = inbox.get(late.id.unwrap()).await.unwrap();
    assert_eq!(stale.summary.state, DeliveryState::Stale);
    let counts = inbox.counts().await.unwrap();
    assert_eq!((counts.done, counts.stale), (1, 1));

    // The same state again (another event at the same updated_on) is not stale.
    store(&inbox, purchase_body("p-4", "purchase.settled", 50)).await;
    assert_eq!(drain(&inbox, fast_worker()).await.len(), 1);

    // With StalePolicy::Deliver the handler sees it, flagged.
    store(&inbox, purchase_body("p-4", "purchase.created", 1)).await;
    let seen = drain(&inbox, fast_worker().stale(StalePolicy::Deliver)).await;
    assert_eq!(seen.len(), 1);
    assert!(seen[0].stale);

    // A replay hands a stale delivery over once more, past the stale check.
    inbox.replay(late.id.unwrap()).await.unwrap();
    let replayed = drain(&inbox, fast_worker()).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].id(), late.id.unwrap());
    assert!(matches!(
        inbox.replay(late.id.unwrap() + 1000).await,
        Err(InboxError::NotFound(_))
    ));
}
on_both!(older_than_handled_is_stale);

async fn failures_retry_with_backoff_then_die(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let receipt = store(&inbox, purchase_body("p-5", "purchase.paid", 1)).await;
    let later = store(&inbox, purchase_body("p-5", "purchase.paid", 2)).await;
    let worker = inbox.worker(fast_worker().max_attempts(3));
    let calls = Arc::new(Mutex::new(Vec::new()));
    let fail_first = |calls: Arc<Mutex<Vec<(i64, i64)>>>| {
        move |delivery: StoredDelivery| {
            let calls = Arc::clone(&calls);
            async move {
                calls
                    .lock()
                    .unwrap()
                    .push((delivery.id(), delivery.attempt()));
                if delivery.summary.updated_on == Some(1) {
                    Err("the warehouse is down")
                } else {
                    Ok(())
                }
            }
        }
    };
    let mut dead = 0;
    for _ in 0..200 {
        let report = worker
            .process_batch(fail_first(Arc::clone(&calls)))
            .await
            .unwrap();
        dead += report.dead;
        if dead > 0 && report.handed_over == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let calls = calls.lock().unwrap().clone();
    let first_id = receipt.id.unwrap();
    let attempts: Vec<i64> = calls
        .iter()
        .filter(|c| c.0 == first_id)
        .map(|c| c.1)
        .collect();
    assert_eq!(attempts, [1, 2, 3], "three attempts, then dead");
    // The later state of the object waited behind the failing one, then went through.
    let later_pos = calls.iter().position(|c| c.0 == later.id.unwrap()).unwrap();
    assert!(later_pos > 2);
    let stored = inbox.get(first_id).await.unwrap();
    assert_eq!(stored.summary.state, DeliveryState::Dead);
    assert_eq!(
        stored.summary.last_error.as_deref(),
        Some("the warehouse is down")
    );
    let counts = inbox.counts().await.unwrap();
    assert_eq!((counts.retried, counts.dead, counts.done), (2, 1, 1));
    let status = inbox.status().await.unwrap();
    assert_eq!((status.dead, status.pending), (1, 0));
    let dead_list = inbox
        .list(&ListFilter::new().state(DeliveryState::Dead))
        .await
        .unwrap();
    assert_eq!(dead_list.len(), 1);
    assert_eq!(dead_list[0].id, first_id);
    let of_object = inbox
        .list(&ListFilter::new().object_id("p-5").before_id(first_id + 1))
        .await
        .unwrap();
    assert_eq!(of_object.len(), 1, "newest first, below the id given");

    // Retry a dead delivery: a fresh set of attempts. It is now older than the handled one, so
    // the usual rules mark it stale; replay would hand it over.
    assert!(matches!(
        inbox.retry(later.id.unwrap()).await,
        Err(InboxError::InvalidState { .. })
    ));
    inbox.retry(first_id).await.unwrap();
    assert!(drain(&inbox, fast_worker()).await.is_empty());
    assert_eq!(
        inbox.get(first_id).await.unwrap().summary.state,
        DeliveryState::Stale
    );
}
on_both!(failures_retry_with_backoff_then_die);

async fn a_dead_worker_loses_its_lease(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let receipt = store(&inbox, purchase_body("p-6", "purchase.paid", 1)).await;
    let options = fast_worker().lease(Duration::from_secs(2));
    let stuck = inbox.worker(options.clone());
    // A handler that never returns, its worker stopped mid-way (as a killed process would be).
    let (started, handler_started) = tokio::sync::oneshot::channel::<()>();
    let started = Arc::new(Mutex::new(Some(started)));
    let abandoned = tokio::spawn(async move {
        stuck
            .process_batch(move |_d: StoredDelivery| {
                let started = Arc::clone(&started);
                async move {
                    if let Some(started) = started.lock().unwrap().take() {
                        let _ = started.send(());
                    }
                    std::future::pending::<()>().await;
                    Ok::<(), String>(())
                }
            })
            .await
    });
    handler_started.await.unwrap();
    let lease_taken = std::time::Instant::now();
    abandoned.abort();
    let other = inbox.worker(options);
    let report = other
        .process_batch(|_d: StoredDelivery| async { Ok::<(), String>(()) })
        .await
        .unwrap();
    if lease_taken.elapsed() < Duration::from_millis(1500) {
        assert_eq!(report.handed_over, 0, "the lease is still held");
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let seen = drain(&inbox, fast_worker()).await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].attempt(), 2);
    assert_eq!(
        inbox.get(receipt.id.unwrap()).await.unwrap().summary.state,
        DeliveryState::Done
    );
}
on_both!(a_dead_worker_loses_its_lease);

async fn effects_commit_with_the_done_mark(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let create = "CREATE TABLE shipments (dedup_key TEXT PRIMARY KEY, purchase_id TEXT NOT NULL)";
    exec(&inbox, create).await;
    store(&inbox, purchase_body("p-7", "purchase.paid", 1)).await;
    let worker = inbox.worker(fast_worker().max_attempts(2));
    // First attempt writes, then fails: the write is rolled back with it.
    let fails = Arc::new(Mutex::new(true));
    for _ in 0..50 {
        let fails = Arc::clone(&fails);
        worker
            .process_batch_in_transaction(move |mut job: chip_gate_inbox::TxJob| {
                let fails = Arc::clone(&fails);
                async move {
                    let key = job.delivery().dedup_key().to_owned();
                    let id = job.delivery().summary.object_id.clone().unwrap_or_default();
                    let insert = "INSERT INTO shipments (dedup_key, purchase_id) VALUES ($1, $2)";
                    match job.sqlite() {
                        Ok(conn) => sqlx::query(insert)
                            .bind(&key)
                            .bind(&id)
                            .execute(conn)
                            .await
                            .map(|_| ()),
                        Err(_) => {
                            let conn = job.postgres().map_err(|e| e.to_string())?;
                            sqlx::query(insert)
                                .bind(&key)
                                .bind(&id)
                                .execute(conn)
                                .await
                                .map(|_| ())
                        }
                    }
                    .map_err(|e| e.to_string())?;
                    if std::mem::replace(&mut *fails.lock().unwrap(), false) {
                        return Err("failed after writing".to_owned());
                    }
                    job.complete().await.map_err(|e| e.to_string())
                }
            })
            .await
            .unwrap();
        if inbox.counts().await.unwrap().done == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let count = "SELECT COUNT(*) FROM shipments";
    let shipments = scalar(&inbox, count).await;
    assert_eq!(shipments, 1, "exactly one effect");
    let counts = inbox.counts().await.unwrap();
    assert_eq!((counts.done, counts.retried), (1, 1));
}
on_both!(effects_commit_with_the_done_mark);

async fn workers_share_without_double_handling(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let intake = inbox.intake(verifier()).unwrap();
    let mut sends = Vec::new();
    for n in 0..300 {
        let body = purchase_body(&format!("obj-{}", n % 60), "purchase.paid", n);
        let headers = signed_headers(&signer(), &body);
        let intake = intake.clone();
        sends.push(tokio::spawn(
            async move { intake.receive(&headers, body).await },
        ));
    }
    for send in sends {
        send.await.unwrap().unwrap();
    }
    let handled = Arc::new(Mutex::new(Vec::new()));
    let in_flight = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let worker = inbox.worker(fast_worker().concurrency(3).batch_size(5));
        let handled = Arc::clone(&handled);
        let in_flight = Arc::clone(&in_flight);
        workers.push(tokio::spawn(async move {
            loop {
                let handled = Arc::clone(&handled);
                let in_flight = Arc::clone(&in_flight);
                let report = worker
                    .process_batch(move |d: StoredDelivery| {
                        let handled = Arc::clone(&handled);
                        let in_flight = Arc::clone(&in_flight);
                        async move {
                            let object = d.summary.object_id.clone().unwrap();
                            assert!(
                                in_flight.lock().unwrap().insert(object.clone()),
                                "object handled twice at once"
                            );
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            handled
                                .lock()
                                .unwrap()
                                .push((object.clone(), d.summary.updated_on.unwrap()));
                            in_flight.lock().unwrap().remove(&object);
                            Ok::<(), String>(())
                        }
                    })
                    .await
                    .unwrap();
                if report.handed_over == 0 {
                    break;
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let handled = handled.lock().unwrap().clone();
    assert_eq!(handled.len(), 300, "each delivery handled exactly once");
    let mut last = std::collections::HashMap::new();
    for (object, updated_on) in handled {
        let previous = last.insert(object, updated_on).unwrap_or(-1);
        assert!(updated_on > previous, "per-object order");
    }
    assert_eq!(inbox.counts().await.unwrap().done, 300);
}
on_both!(workers_share_without_double_handling);

async fn retention_removes_only_finished(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    store(&inbox, purchase_body("p-8", "purchase.paid", 1)).await;
    drain(&inbox, fast_worker()).await;
    store(&inbox, purchase_body("p-9", "purchase.paid", 1)).await;
    let worker = inbox.worker(fast_worker().max_attempts(1));
    worker
        .process_batch(|_d: StoredDelivery| async { Err::<(), _>("no") })
        .await
        .unwrap();
    store(&inbox, purchase_body("p-10", "purchase.paid", 1)).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        inbox.purge_finished_before(Duration::ZERO).await.unwrap(),
        1
    );
    let left: Vec<DeliveryState> = rows(&inbox).await.iter().map(|r| r.state).collect();
    assert_eq!(left, [DeliveryState::Pending, DeliveryState::Dead]);
    // The counts survive retention.
    assert_eq!(inbox.counts().await.unwrap().received, 3);
    // The worker's own retention keeps at least 48 h.
    assert_eq!(
        inbox
            .worker(fast_worker().retention(Some(Duration::ZERO)))
            .purge()
            .await
            .unwrap(),
        0
    );
}
on_both!(retention_removes_only_finished);

/// Stores `n` deliveries handled in 1970 (objects `old-1`... with `updated_on` 1...), straight
/// into the table: old enough for any retention.
async fn store_finished_long_ago(inbox: &Inbox, n: u32) {
    exec(
        inbox,
        &format!(
            "WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n}) \
             INSERT INTO chip_inbox_deliveries (dedup_key, lane, event, object_kind, object_id, \
             updated_on, signature, body, received_at, next_attempt_at, state, finished_at) \
             SELECT 'old-' || i, 'old-' || i, 'purchase.paid', 'purchase', 'old-' || i, i, 's', \
             '{{}}', 1, 1, 'done', 1 FROM n"
        ),
    )
    .await;
}

async fn retention_goes_through_every_chunk(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    // 2,500 finished deliveries, two and a half of the purge's chunks, each on a lane of its
    // own; a lane under a lease and one with a pending delivery, both kept.
    store_finished_long_ago(&inbox, 2_500).await;
    exec(
        &inbox,
        "WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500) \
         INSERT INTO chip_inbox_lanes (lane, handled_updated_on) SELECT 'old-' || i, i FROM n",
    )
    .await;
    exec(
        &inbox,
        "INSERT INTO chip_inbox_lanes (lane, lease_owner, lease_token, lease_until) \
         VALUES ('leased', 'w', 't', 1)",
    )
    .await;
    // Handled once (which makes its lane), then pending again, as a replayed delivery is.
    let pending = store(&inbox, purchase_body("kept", "purchase.paid", 1)).await;
    drain(&inbox, fast_worker()).await;
    exec(
        &inbox,
        &format!(
            "UPDATE chip_inbox_deliveries SET state = 'pending', finished_at = NULL \
             WHERE id = {}",
            pending.id.unwrap()
        ),
    )
    .await;

    assert_eq!(
        inbox.purge_finished_before(Duration::ZERO).await.unwrap(),
        2500
    );
    assert_eq!(
        scalar(&inbox, "SELECT COUNT(*) FROM chip_inbox_deliveries").await,
        1
    );
    assert_eq!(
        scalar(&inbox, "SELECT COUNT(*) FROM chip_inbox_lanes").await,
        2,
        "the lanes of every chunk's deliveries went with them"
    );
    assert_eq!(
        scalar(
            &inbox,
            "SELECT COUNT(*) FROM chip_inbox_lanes WHERE lane = 'leased' OR lane LIKE '%kept%'"
        )
        .await,
        2
    );
    assert_eq!(inbox.retention_horizon().await.unwrap(), Some(2500));
    assert_eq!(
        inbox.purge_finished_before(Duration::ZERO).await.unwrap(),
        0
    );
}
on_both!(retention_goes_through_every_chunk);

async fn a_dropped_worker_leaves_no_purge_running(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    // Twenty chunks of deliveries finished long ago: a purge of some 100 ms at least (a pause
    // between chunks), which the worker runs beside its claims.
    store_finished_long_ago(&inbox, 20_000).await;
    let count = "SELECT COUNT(*) FROM chip_inbox_deliveries";
    let worker = inbox.worker(fast_worker().retention(Some(chip_gate_inbox::MIN_RETENTION)));
    {
        let run = worker.run(|_d: StoredDelivery| async { Ok::<(), String>(()) });
        tokio::pin!(run);
        // The worker runs until its purge has removed a chunk; then its future is dropped, as
        // a `select!` whose other branch won drops it.
        loop {
            tokio::select! {
                () = &mut run => unreachable!("a worker runs until it is stopped"),
                () = tokio::time::sleep(Duration::from_millis(1)) => {}
            }
            if scalar(&inbox, count).await < 20_000 {
                break;
            }
        }
    }
    // The chunk under way when the worker was dropped ends; no other follows.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let left = scalar(&inbox, count).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        scalar(&inbox, count).await,
        left,
        "no purge outlived its worker"
    );
    assert!(left > 0, "the purge was stopped before its end");
    assert_eq!(left % 1000, 0, "whole chunks only: {left}");
    // Nothing was left locked or half done: the next purge goes on from there.
    assert_eq!(
        inbox.purge_finished_before(Duration::ZERO).await.unwrap(),
        u64::try_from(left).unwrap()
    );
}
on_both!(a_dropped_worker_leaves_no_purge_running);

async fn a_worker_dropped_at_any_moment_leaves_nothing_locked(url: String) {
    // A short busy timeout, so that a write lock left held shows as an error, not as a wait.
    let inbox = Inbox::connect_with(
        &url,
        InboxOptions::default().sqlite_busy_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap();
    let intake = inbox.intake(verifier()).unwrap();
    for round in 0..120 {
        for i in 0..10 {
            let body = purchase_body(&format!("o{round}-{i}"), "purchase.paid", 1);
            intake
                .receive(&signed_headers(&signer(), &body), body)
                .await
                .unwrap();
        }
        // Dropped at a moment of chance: before, during or after a claim, a handler, the
        // record of the outcomes (as a `select!` whose other branch won drops it).
        let worker = inbox.worker(fast_worker());
        let run = worker.run(|_d: StoredDelivery| async { Ok::<(), String>(()) });
        let _ = tokio::time::timeout(Duration::from_micros(fastrand::u64(0..3000)), run).await;
        let body = purchase_body(&format!("probe-{round}"), "purchase.paid", 1);
        let stored = tokio::time::timeout(
            Duration::from_secs(10),
            intake.receive(&signed_headers(&signer(), &body), body),
        )
        .await;
        assert!(
            matches!(stored, Ok(Ok(_))),
            "round {round}: storing after a dropped worker: {stored:?}"
        );
        // Operations that open their transactions through sqlx work too: a connection the
        // dropped worker left mid-transaction comes back to the pool with nothing open, as sqlx
        // counts it as well as SQLite (a purge opens at least one).
        let purged = tokio::time::timeout(
            Duration::from_secs(10),
            inbox.purge_finished_before(Duration::ZERO),
        )
        .await;
        assert!(
            matches!(purged, Ok(Ok(_))),
            "round {round}: a purge after a dropped worker: {purged:?}"
        );
    }
    // Whatever the dropped workers left under a lease is handed over once the leases expire;
    // everything stored is there.
    assert_eq!(inbox.counts().await.unwrap().received, 120 * 11);
}
on_both!(a_worker_dropped_at_any_moment_leaves_nothing_locked);

async fn storage_failure_answers_503(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let intake = inbox.intake(verifier()).unwrap();
    inbox.close().await;
    let body = purchase_body("p-11", "purchase.paid", 1);
    let error = intake
        .receive(&signed_headers(&signer(), &body), body)
        .await
        .unwrap_err();
    assert!(matches!(error, IntakeError::Storage(_)));
    assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
}
on_both!(storage_failure_answers_503);

/// A batch that fails inside its transaction is answered 503 and leaves nothing behind: not the
/// failed delivery, and not an open transaction on a pooled connection (the next deliveries are
/// stored as usual).
async fn a_failure_inside_the_transaction_is_rolled_back(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let statements: &[&str] = match inbox.backend_kind() {
        chip_gate_inbox::BackendKind::Sqlite => &[
            "CREATE TRIGGER refuse_boom BEFORE INSERT ON chip_inbox_deliveries \
             WHEN NEW.object_id = 'boom' BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        ],
        _ => &[
            "CREATE FUNCTION refuse_boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.object_id = 'boom' THEN RAISE EXCEPTION 'injected failure'; END IF; \
             RETURN NEW; END $$",
            "CREATE TRIGGER refuse_boom BEFORE INSERT ON chip_inbox_deliveries \
             FOR EACH ROW EXECUTE FUNCTION refuse_boom()",
        ],
    };
    for sql in statements {
        exec(&inbox, sql).await;
    }
    let intake = inbox.intake(verifier()).unwrap();
    let boom = purchase_body("boom", "purchase.paid", 1);
    let error = intake
        .receive(&signed_headers(&signer(), &boom), boom)
        .await
        .unwrap_err();
    assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(error.to_string().contains("injected failure"), "{error}");
    // More deliveries than the pool has connections, one after the other: each is stored.
    for n in 0..12 {
        let body = purchase_body(&format!("after-{n}"), "purchase.paid", 1);
        let receipt = intake
            .receive(&signed_headers(&signer(), &body), body)
            .await
            .unwrap();
        assert!(!receipt.duplicate);
    }
    let counts = inbox.counts().await.unwrap();
    assert_eq!(counts.received, 12);
    assert_eq!(inbox.status().await.unwrap().pending, 12);
}
on_both!(a_failure_inside_the_transaction_is_rolled_back);

/// When a batch's new deliveries are committed and only recording its repeats fails, the new
/// ones are answered as stored and only the repeats get a 503 (CHIP sends them again, and they
/// are counted then): nothing stored is refused, and no count is off.
async fn a_failed_repeat_leaves_its_batch_stored(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let intake = inbox.intake(verifier()).unwrap();
    let receive = |body: Bytes| spawn_receive(&intake, body);
    let original = purchase_body("dup-boom", "purchase.paid", 1);
    assert!(!receive(original.clone()).await.unwrap().unwrap().duplicate);
    let sqlite = inbox.backend_kind() == chip_gate_inbox::BackendKind::Sqlite;
    let refuse: &[&str] = if sqlite {
        &[
            "CREATE TRIGGER refuse_repeat BEFORE UPDATE OF duplicates ON chip_inbox_deliveries \
           WHEN NEW.object_id = 'dup-boom' BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
        ]
    } else {
        &[
            "CREATE FUNCTION refuse_repeat() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.object_id = 'dup-boom' THEN RAISE EXCEPTION 'injected failure'; END IF; \
             RETURN NEW; END $$",
            "CREATE TRIGGER refuse_repeat BEFORE UPDATE OF duplicates ON chip_inbox_deliveries \
             FOR EACH ROW EXECUTE FUNCTION refuse_repeat()",
        ]
    };
    for sql in refuse {
        exec(&inbox, sql).await;
    }
    // Another connection holds the write lock: the intake's writer takes the first delivery and
    // waits; what arrives meanwhile queues up behind it and is stored as one batch.
    let blocker = WriteLock::take(&url, sqlite).await;
    let first = receive(purchase_body("first", "purchase.paid", 1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fresh = purchase_body("fresh", "purchase.paid", 1);
    let batch = [
        receive(original.clone()),
        receive(fresh.clone()),
        receive(fresh.clone()),
    ];
    tokio::time::sleep(Duration::from_millis(300)).await;
    blocker.release().await;

    assert!(!first.await.unwrap().unwrap().duplicate);
    let mut answers = Vec::new();
    for answer in batch {
        answers.push(answer.await.unwrap());
    }
    let refused: Vec<&IntakeError> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    let stored: Vec<_> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    // The new delivery is stored and said so; its second copy and the repeat of the earlier one
    // are answered 503.
    assert_eq!(stored.len(), 1, "{answers:?}");
    assert!(!stored[0].duplicate);
    assert_eq!(stored[0].dedup_key, "fresh:purchase.paid:1");
    assert_eq!(refused.len(), 2, "{answers:?}");
    for error in refused {
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        let text = error.to_string();
        assert!(
            text.contains("this repeat of it was not recorded"),
            "{text}"
        );
        assert!(text.contains("injected failure"), "{text}");
    }
    let counts = inbox.counts().await.unwrap();
    assert_eq!((counts.received, counts.duplicates), (3, 0));

    // CHIP sends the two again; now they are recorded as duplicates of what is stored.
    let drop_trigger = if sqlite {
        "DROP TRIGGER refuse_repeat"
    } else {
        "DROP TRIGGER refuse_repeat ON chip_inbox_deliveries"
    };
    exec(&inbox, drop_trigger).await;
    for body in [original, fresh] {
        let again = receive(body).await.unwrap().unwrap();
        assert!(again.duplicate);
    }
    let counts = inbox.counts().await.unwrap();
    assert_eq!((counts.received, counts.duplicates), (3, 2));
    assert_eq!(inbox.status().await.unwrap().pending, 3);
}
on_both!(a_failed_repeat_leaves_its_batch_stored);

/// However large a batch is allowed to be, one that arrives all at once is stored: 3,000
/// deliveries queued behind a held write lock would need 33,000 parameters in one SQLite insert,
/// past SQLite's limit, if the batch were not capped.
async fn a_huge_batch_is_stored(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let options = chip_gate_inbox::IntakeOptions::default().max_batch(usize::MAX);
    let intake = chip_gate_inbox::Intake::new(&inbox, verifier(), options).unwrap();
    let blocker = WriteLock::take(
        &url,
        inbox.backend_kind() == chip_gate_inbox::BackendKind::Sqlite,
    )
    .await;
    let body = |n: usize| purchase_body(&format!("huge-{n}"), "purchase.paid", 1);
    let first = spawn_receive(&intake, body(0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rest: Vec<_> = (1..3_000)
        .map(|n| spawn_receive(&intake, body(n)))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocker.release().await;
    assert!(!first.await.unwrap().unwrap().duplicate);
    for answer in rest {
        assert!(!answer.await.unwrap().unwrap().duplicate);
    }
    assert_eq!(inbox.counts().await.unwrap().received, 3_000);
}
on_both!(a_huge_batch_is_stored);

#[tokio::test]
async fn unsupported_urls_are_refused() {
    let error = Inbox::connect("mysql://localhost/x").await.unwrap_err();
    assert!(matches!(error, InboxError::UnsupportedUrl { .. }));
    assert!(error.to_string().contains("sqlite://"));
}

#[tokio::test]
async fn migrations_run_once_and_again() {
    let (url, _dir) = sqlite_url();
    let inbox = Inbox::connect(&url).await.unwrap();
    inbox.migrate().await.unwrap();
    let again = Inbox::connect(&url).await.unwrap();
    again.migrate().await.unwrap();
}

#[test]
fn backoff_grows_and_is_capped() {
    let backoff = Backoff {
        initial: Duration::from_secs(4),
        max: Duration::from_secs(60),
    };
    for _ in 0..100 {
        let first = backoff.delay(1);
        assert!(first <= Duration::from_secs(4) && first >= Duration::from_secs(3));
        let third = backoff.delay(3);
        assert!(third <= Duration::from_secs(16) && third >= Duration::from_secs(12));
        assert!(backoff.delay(1000) <= Duration::from_secs(60));
        assert!(backoff.delay(i64::MAX) >= Duration::from_secs(45));
        assert!(backoff.delay(i64::MIN) <= Duration::from_secs(4));
    }
}

#[test]
fn dedup_keys() {
    let delivery = chip_gate::Delivery::from_verified(purchase_body("k-1", "purchase.paid", 9));
    assert_eq!(chip_gate_inbox::dedup_key(&delivery), "k-1:purchase.paid:9");
    let a = chip_gate::Delivery::from_verified(Bytes::from_static(b"[1]"));
    let b = chip_gate::Delivery::from_verified(Bytes::from_static(b"[2]"));
    let (ka, kb) = (
        chip_gate_inbox::dedup_key(&a),
        chip_gate_inbox::dedup_key(&b),
    );
    assert_eq!(ka.len(), "sha256:".len() + 64);
    assert_ne!(ka, kb);
    assert_eq!(ka, chip_gate_inbox::dedup_key(&a), "deterministic");
}

/// Runs one batch on a worker whose handlers each take three leases (1.8 s with a 600 ms lease,
/// so the worker must extend the leases meanwhile), while a second worker with the same options
/// keeps claiming. Returns the slow batch's report and how many deliveries the second worker was
/// handed in that time.
async fn claim_during_a_slow_batch(
    inbox: &Inbox,
    options: WorkerOptions,
) -> (chip_gate_inbox::ProcessReport, usize) {
    let options = options.lease(Duration::from_millis(600));
    let started = Arc::new(Mutex::new(0));
    let slow = {
        let worker = inbox.worker(options.clone());
        let started = Arc::clone(&started);
        tokio::spawn(async move {
            worker
                .process_batch(move |_d: StoredDelivery| {
                    let started = Arc::clone(&started);
                    async move {
                        *started.lock().unwrap() += 1;
                        tokio::time::sleep(Duration::from_millis(1800)).await;
                        Ok::<(), String>(())
                    }
                })
                .await
                .unwrap()
        })
    };
    while *started.lock().unwrap() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let other = inbox.worker(options);
    let mut taken = 0;
    while !slow.is_finished() {
        let report = other
            .process_batch(|_d: StoredDelivery| async { Ok::<(), String>(()) })
            .await
            .unwrap();
        taken += report.handed_over;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (slow.await.unwrap(), taken)
}

async fn a_long_handler_keeps_its_lease(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    store(&inbox, purchase_body("p-12", "purchase.paid", 1)).await;
    let (report, taken) = claim_during_a_slow_batch(&inbox, fast_worker()).await;
    assert_eq!(report.done, 1, "{report:?}");
    assert_eq!(taken, 0, "handed over once");
}
on_both!(a_long_handler_keeps_its_lease);

/// A batch larger than one extension statement (a hundred leases) keeps every lease while its
/// handlers run: another worker gets none of them.
async fn a_large_batch_keeps_all_its_leases(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    store_objects(&inbox, "big", 0..150, 1).await;
    let options = fast_worker().batch_size(150).concurrency(150);
    let (report, taken) = claim_during_a_slow_batch(&inbox, options).await;
    assert_eq!((report.handed_over, report.done), (150, 150), "{report:?}");
    assert_eq!(
        taken, 0,
        "another worker took a delivery whose lease was kept"
    );
    assert_eq!(inbox.counts().await.unwrap().done, 150);
}
on_both!(a_large_batch_keeps_all_its_leases);

/// Without a set `batch_size`, a worker sizes each claim to its handlers' pace: 64 first, up to
/// 256 after fast handlers, down towards `concurrency` after slow ones (so that the rest of a
/// backlog stays for other replicas), and up again once they are fast.
async fn claims_follow_the_handlers_pace(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let worker = inbox.worker(fast_worker().concurrency(4));
    let fast = |_d: StoredDelivery| async { Ok::<(), String>(()) };
    let slow = |_d: StoredDelivery| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<(), String>(())
    };
    store_objects(&inbox, "pace", 0..100, 1).await;
    let first = worker.process_batch(fast).await.unwrap();
    assert_eq!(first.handed_over, 64, "a first claim takes 64: {first:?}");
    let rest = worker.process_batch(fast).await.unwrap();
    assert_eq!(rest.handed_over, 36, "{rest:?}");

    store_objects(&inbox, "pace", 100..500, 1).await;
    // After fast handlers, a claim takes the most: 256 of the 400 due.
    let large = worker.process_batch(slow).await.unwrap();
    assert_eq!(large.handed_over, 256, "{large:?}");
    // 256 handlers of 20 ms, 4 at a time, took at least 1.28 s: at most 200 a second, so the
    // next claim is at most 50 (a quarter of a second of them), and never under 4.
    let small = worker.process_batch(fast).await.unwrap();
    assert!(
        (4..=50).contains(&small.handed_over),
        "after slow handlers a claim is small: {small:?}"
    );
    // Fast again: the rest, more than 64, in one claim.
    let remaining = 400 - 256 - small.handed_over;
    let again = worker.process_batch(fast).await.unwrap();
    assert_eq!(again.handed_over, remaining, "{again:?}");
    assert!(remaining > 64);
    assert_eq!(inbox.counts().await.unwrap().done, 500);
}
on_both!(claims_follow_the_handlers_pace);

async fn a_panicking_handler_is_retried(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let receipt = store(&inbox, purchase_body("p-13", "purchase.paid", 1)).await;
    let report = inbox
        .worker(fast_worker())
        .process_batch(|d: StoredDelivery| async move {
            if d.attempt() == 1 {
                panic!("a deliberate panic in a test handler");
            }
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    assert_eq!(report.retried, 1);
    let stored = inbox.get(receipt.id.unwrap()).await.unwrap();
    assert_eq!(
        stored.summary.last_error.as_deref(),
        Some("the handler panicked")
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(drain(&inbox, fast_worker()).await.len(), 1);
}
on_both!(a_panicking_handler_is_retried);

async fn concurrent_copies_are_stored_once(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let intake = inbox.intake(verifier()).unwrap();
    let body = purchase_body("p-14", "purchase.paid", 3);
    // Copies arriving together land in one group commit (and on PostgreSQL in one statement).
    let copies: Vec<_> = (0..20)
        .map(|_| spawn_receive(&intake, body.clone()))
        .collect();
    let mut receipts = Vec::new();
    for copy in copies {
        receipts.push(copy.await.unwrap().unwrap());
    }
    assert_eq!(receipts.iter().filter(|r| !r.duplicate).count(), 1);
    let id = receipts[0].id;
    assert!(receipts.iter().all(|r| r.id == id && id.is_some()));
    let counts = inbox.counts().await.unwrap();
    assert_eq!((counts.received, counts.duplicates), (1, 19));
    assert_eq!(inbox.get(id.unwrap()).await.unwrap().summary.duplicates, 19);
    assert_eq!(drain(&inbox, fast_worker()).await.len(), 1);
}
on_both!(concurrent_copies_are_stored_once);

/// New deliveries, copies of one of them and copies of one stored before, arriving together:
/// the counts say exactly what was stored and what was repeated.
async fn a_mixed_batch_is_counted_exactly(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let intake = inbox.intake(verifier()).unwrap();
    let earlier = purchase_body("p-earlier", "purchase.paid", 3);
    intake
        .receive(&signed_headers(&signer(), &earlier), earlier.clone())
        .await
        .unwrap();
    let mut bodies: Vec<Bytes> = (0..10)
        .map(|n| purchase_body(&format!("p-new-{n}"), "purchase.paid", 3))
        .collect();
    let first = bodies[0].clone();
    bodies.extend((0..4).map(|_| first.clone()));
    bodies.extend((0..5).map(|_| earlier.clone()));
    fastrand::shuffle(&mut bodies);
    let copies: Vec<_> = bodies
        .into_iter()
        .map(|body| spawn_receive(&intake, body))
        .collect();
    let mut receipts = Vec::new();
    for copy in copies {
        receipts.push(copy.await.unwrap().unwrap());
    }
    assert_eq!(receipts.iter().filter(|r| !r.duplicate).count(), 10);
    assert!(receipts.iter().all(|r| r.id.is_some()));
    let counts = inbox.counts().await.unwrap();
    assert_eq!((counts.received, counts.duplicates), (11, 9));
    assert_eq!(inbox.status().await.unwrap().pending, 11);
}
on_both!(a_mixed_batch_is_counted_exactly);

/// On PostgreSQL a worker in another process (here: another `Inbox`, with its own pool) starts
/// on a new or replayed delivery at once, not at its next poll: its poll interval is an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_workers_elsewhere_wake_on_new_and_replayed_deliveries() {
    let Some(url) =
        postgres_url("postgres_workers_elsewhere_wake_on_new_and_replayed_deliveries").await
    else {
        return;
    };
    let receiving = Inbox::connect(&url).await.unwrap();
    let working = Inbox::connect(&url).await.unwrap();
    let (handled_tx, mut handled) = tokio::sync::mpsc::unbounded_channel::<String>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = working.worker(fast_worker().poll_interval(Duration::from_secs(3600)));
    let running = tokio::spawn(async move {
        worker
            .run_until(
                move |delivery: StoredDelivery| {
                    let handled_tx = handled_tx.clone();
                    async move {
                        handled_tx.send(delivery.dedup_key().to_owned()).unwrap();
                        Ok::<(), String>(())
                    }
                },
                async {
                    let _ = stopped.await;
                },
            )
            .await;
    });
    // Let the worker make its first (empty) claim and go idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let receipt = store(&receiving, purchase_body("p-elsewhere", "purchase.paid", 7)).await;
    let first = tokio::time::timeout(Duration::from_secs(20), handled.recv())
        .await
        .expect("the idle worker was not woken by the new delivery")
        .unwrap();
    assert_eq!(first, receipt.dedup_key);
    // Wait for the "done" mark, then replay it from the other process.
    loop {
        let stored = receiving.get(receipt.id.unwrap()).await.unwrap();
        if stored.summary.state == chip_gate_inbox::DeliveryState::Done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    receiving.replay(receipt.id.unwrap()).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(20), handled.recv())
        .await
        .expect("the idle worker was not woken by the replay")
        .unwrap();
    assert_eq!(again, receipt.dedup_key);
    stop.send(()).unwrap();
    running.await.unwrap();
    drop_postgres(&url).await;
}

/// Runs one statement on the database at `url` with a plain connection (no inbox involved),
/// creating a SQLite file if needed; returns the first column of the first row, if any.
async fn raw(url: &str, sql: &str) -> Option<i64> {
    use sqlx::Connection as _;
    if url.starts_with("sqlite:") {
        let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)
            .unwrap()
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&options)
            .await
            .unwrap();
        sqlx::query_scalar(sql)
            .fetch_optional(&mut conn)
            .await
            .unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql)
            .fetch_optional(&mut conn)
            .await
            .unwrap()
    }
}

/// An operations tool opens the inbox without migrating: pointed at a database that is not an
/// inbox, or at one of another version, it fails and changes nothing.
async fn opening_without_migrating_changes_nothing(url: String) {
    let count_inbox_tables = if url.starts_with("sqlite:") {
        "SELECT COUNT(*) FROM sqlite_master WHERE name LIKE 'chip_inbox%'"
    } else {
        "SELECT COUNT(*) FROM pg_catalog.pg_tables WHERE tablename LIKE 'chip_inbox%'"
    };
    let read_only = || InboxOptions::default().migrate(false);
    let latest = latest_schema(&url);
    // Somebody else's database: refused, and still without inbox tables.
    raw(&url, "CREATE TABLE app_orders (id BIGINT PRIMARY KEY)").await;
    let error = Inbox::connect_with(&url, read_only()).await.unwrap_err();
    assert!(
        matches!(error, InboxError::SchemaTooOld { found: 0, known } if known == latest),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("no chip-gate-inbox tables"),
        "{error}"
    );
    assert_eq!(raw(&url, count_inbox_tables).await, Some(0));
    // Once an app has connected (and migrated), it opens.
    let app = Inbox::connect(&url).await.unwrap();
    store(&app, purchase_body("p-ro", "purchase.paid", 1)).await;
    let tool = Inbox::connect_with(&url, read_only()).await.unwrap();
    assert_eq!(tool.schema_version().await.unwrap(), latest);
    assert_eq!(tool.counts().await.unwrap().received, 1);
    // A database migrated by a newer version: refused, untouched.
    raw(
        &url,
        &format!(
            "INSERT INTO chip_inbox_migrations (version, description, applied_at) \
             VALUES ({}, 'later', 0)",
            latest + 1
        ),
    )
    .await;
    let error = Inbox::connect_with(&url, read_only()).await.unwrap_err();
    assert!(
        matches!(error, InboxError::SchemaTooNew { found, known } if known == latest && found == latest + 1),
        "{error:?}"
    );
    // The app refuses it too (it cannot migrate backwards).
    assert!(matches!(
        Inbox::connect(&url).await.unwrap_err(),
        InboxError::SchemaTooNew { .. }
    ));
}
on_both!(opening_without_migrating_changes_nothing);

#[tokio::test]
async fn opening_a_missing_sqlite_file_without_migrating_creates_nothing() {
    let (url, dir) = sqlite_url();
    let error = Inbox::connect_with(&url, InboxOptions::default().migrate(false))
        .await
        .unwrap_err();
    assert!(matches!(error, InboxError::Database(_)), "{error:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// PostgreSQL stores a CHIP-sized body (a few kilobytes) as it came, inside its row: neither
/// compressed on every insert nor moved to the TOAST table (schema version 5). A body past
/// the row's limit (about 8 KB) is still stored, compressed as PostgreSQL does by default.
#[tokio::test]
async fn postgres_keeps_bodies_of_a_few_kilobytes_uncompressed_in_their_row() {
    let Some(url) =
        postgres_url("postgres_keeps_bodies_of_a_few_kilobytes_uncompressed_in_their_row").await
    else {
        return;
    };
    let inbox = Inbox::connect(&url).await.unwrap();
    // JSON compresses well, as CHIP's bodies do: pglz would halve it.
    let body = |id: &str, items: usize| {
        let products: Vec<String> = (0..items)
            .map(|n| (n, n * 100 + 1))
            .map(|(n, price)| format!(r#"{{"name":"Product {n}","quantity":"1.0000","price":{price},"discount":0,"tax_percent":"0.00","category":"general"}}"#))
            .collect();
        Bytes::from(format!(
            r#"{{"id":"{id}","type":"purchase","event_type":"purchase.paid","created_on":1700000000,"updated_on":1700000001,"status":"paid","purchase":{{"total":1000,"currency":"MYR","products":[{}]}}}}"#,
            products.join(",")
        ))
    };
    let chip_sized = body("body-inline", 30);
    assert!(
        (3000..4500).contains(&chip_sized.len()),
        "{}",
        chip_sized.len()
    );
    let large = body("body-large", 200);
    assert!(large.len() > 16_000, "{}", large.len());
    store(&inbox, chip_sized.clone()).await;
    store(&inbox, large.clone()).await;

    let stored_size = |id: &str| {
        format!(
            "SELECT CAST(pg_column_size(body) AS BIGINT) FROM chip_inbox_deliveries \
             WHERE object_id = '{id}'"
        )
    };
    let inline = scalar(&inbox, &stored_size("body-inline")).await;
    assert!(
        inline >= i64::try_from(chip_sized.len()).unwrap(),
        "a {}-byte body takes {inline} bytes: compressed",
        chip_sized.len()
    );
    let toast_pages = "SELECT CAST(pg_relation_size(reltoastrelid) AS BIGINT) FROM pg_class \
                       WHERE relname = 'chip_inbox_deliveries'";
    // Only the large body may have gone out of line; compressed, it fits in one TOAST page.
    assert!(scalar(&inbox, toast_pages).await <= 8192);
    let large_stored = scalar(&inbox, &stored_size("body-large")).await;
    assert!(large_stored < i64::try_from(large.len()).unwrap());
    for (id, sent) in [("body-inline", &chip_sized), ("body-large", &large)] {
        let length = scalar(
            &inbox,
            &format!(
                "SELECT CAST(octet_length(body) AS BIGINT) FROM chip_inbox_deliveries \
                 WHERE object_id = '{id}'"
            ),
        )
        .await;
        assert_eq!(length, i64::try_from(sent.len()).unwrap());
    }
    inbox.close().await;
    drop_postgres(&url).await;
}
