//! Attacks by someone without CHIP's signing key who can capture and replay deliveries (CHIP
//! signs no timestamp), and deliveries the database cannot hold as text: on real databases,
//! SQLite always, PostgreSQL when `CHIP_INBOX_TEST_POSTGRES_URL` is set.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chip_gate_inbox::{
    BackendKind, DeliveryState, Inbox, InboxError, InboxOptions, IntakeError, IntakeOptions,
    ListFilter, Receipt, StalePolicy, StoredDelivery,
};
use common::*;
use http::StatusCode;

fn now_s() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// A purchase delivery CHIP signed but the typed model cannot read (`purchase.total` is a
/// string): stored raw, with a typing problem, under the same `type` and `id`.
fn untyped_purchase_body(id: &str, event: &str, updated_on: i64) -> Bytes {
    Bytes::from(format!(
        r#"{{"id":"{id}","type":"purchase","event_type":"{event}","created_on":1700000000,"updated_on":{updated_on},"status":"paid","purchase":{{"total":"lots","currency":"MYR"}}}}"#
    ))
}

fn spawn_receive(
    intake: &chip_gate_inbox::Intake,
    body: Bytes,
) -> tokio::task::JoinHandle<Result<Receipt, IntakeError>> {
    let intake = intake.clone();
    let headers = signed_headers(&signer(), &body);
    tokio::spawn(async move { intake.receive(&headers, body).await })
}

async fn store(inbox: &Inbox, body: Bytes) -> Receipt {
    let intake = inbox.intake(verifier()).unwrap();
    let headers = signed_headers(&signer(), &body);
    intake.receive(&headers, body).await.unwrap()
}

async fn state(inbox: &Inbox, receipt: &Receipt) -> DeliveryState {
    inbox.get(receipt.id.unwrap()).await.unwrap().summary.state
}

// --- 1. Replay after retention -------------------------------------------------------------

/// A `purchase.paid` captured two months ago and sent again, after retention removed it and
/// after the purchase's later `purchase.pending_refund` was handled: recorded, never handed over.
/// Nor is the captured refund, nor any state that old; a new state of the object is.
async fn a_replay_after_retention_is_never_handed_over(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let two_months_ago = now_s() - 60 * 86_400;
    let paid = purchase_body("p-replayed", "purchase.paid", two_months_ago);
    let refund = purchase_body(
        "p-replayed",
        "purchase.pending_refund",
        two_months_ago + 3600,
    );
    let original = store(&inbox, paid.clone()).await;
    assert_eq!(drain(&inbox, fast_worker()).await.len(), 1);
    store(&inbox, refund.clone()).await;
    assert_eq!(drain(&inbox, fast_worker()).await.len(), 1);
    // Two months pass; the worker's retention (7 days) removes both, and the object's mark.
    exec(
        &inbox,
        "UPDATE chip_inbox_deliveries SET finished_at = finished_at - 5184000000",
    )
    .await;
    exec(
        &inbox,
        "UPDATE chip_inbox_lanes SET handled_at = handled_at - 5184000000",
    )
    .await;
    assert_eq!(inbox.worker(fast_worker()).purge().await.unwrap(), 2);
    assert!(matches!(
        inbox.get(original.id.unwrap()).await,
        Err(InboxError::NotFound(_))
    ));
    assert_eq!(
        inbox.retention_horizon().await.unwrap(),
        Some(two_months_ago + 3600)
    );
    let lanes = scalar(&inbox, "SELECT COUNT(*) FROM chip_inbox_lanes").await;
    assert_eq!(
        lanes, 0,
        "the horizon covers the object's mark, so it went too"
    );

    // The attacker sends the captured deliveries again, and one CHIP never got through that old.
    let replayed_paid = store(&inbox, paid.clone()).await;
    let replayed_refund = store(&inbox, refund).await;
    let never_seen = store(
        &inbox,
        purchase_body("p-other", "purchase.paid", two_months_ago),
    )
    .await;
    assert!(
        !replayed_paid.duplicate,
        "recorded as a delivery of its own"
    );
    // Not even a worker that hands stale deliveries over (flagged) hands these over.
    let report = inbox
        .worker(fast_worker().stale(StalePolicy::Deliver))
        .process_batch(|_d: StoredDelivery| async { Ok::<(), String>(()) })
        .await
        .unwrap();
    assert_eq!((report.handed_over, report.stale), (0, 3), "{report:?}");
    let handed = drain(&inbox, fast_worker()).await;
    assert!(
        handed.is_empty(),
        "a replayed delivery was handed over: {handed:?}"
    );
    for receipt in [&replayed_paid, &replayed_refund, &never_seen] {
        let stored = inbox.get(receipt.id.unwrap()).await.unwrap();
        assert_eq!(stored.summary.state, DeliveryState::Stale);
        assert!(
            stored
                .summary
                .last_error
                .as_deref()
                .unwrap()
                .contains("retention horizon"),
            "{stored:?}"
        );
    }
    let counts = inbox.counts().await.unwrap();
    assert_eq!((counts.stale, counts.expired, counts.done), (3, 3, 2));
    // Sent yet again: a duplicate of what is stored now.
    assert!(store(&inbox, paid).await.duplicate);

    // A new state of the same object goes through as usual.
    let refunded = store(
        &inbox,
        purchase_body("p-replayed", "purchase.refunded", now_s()),
    )
    .await;
    let handed = drain(&inbox, fast_worker()).await;
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].id(), refunded.id.unwrap());
    // An operator can still hand an expired one over, explicitly.
    inbox.replay(never_seen.id.unwrap()).await.unwrap();
    assert_eq!(drain(&inbox, fast_worker()).await.len(), 1);
}
on_both!(a_replay_after_retention_is_never_handed_over);

/// Retention keeps an object's mark (the newest state handled) while newer-than-horizon
/// deliveries may still come, and removes it once the horizon covers it.
async fn retention_keeps_what_replays_need(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let day = 86_400;
    let t = now_s() - 30 * day;
    // Object A: an old state, removed by retention; its newer state recent (kept).
    store(&inbox, purchase_body("p-a", "purchase.paid", t)).await;
    drain(&inbox, fast_worker()).await;
    exec(
        &inbox,
        "UPDATE chip_inbox_deliveries SET finished_at = finished_at - 2592000000",
    )
    .await;
    let refund = store(
        &inbox,
        purchase_body("p-a", "purchase.pending_refund", now_s()),
    )
    .await;
    drain(&inbox, fast_worker()).await;
    // A delivery without updated_on is kept whatever its age: only its copy recognises a repeat.
    let timeless = Bytes::from_static(
        br#"{"id":"p-t","type":"purchase","event_type":"purchase.viewed","n":1}"#,
    );
    store(&inbox, timeless.clone()).await;
    drain(&inbox, fast_worker()).await;
    exec(
        &inbox,
        "UPDATE chip_inbox_deliveries SET finished_at = finished_at - 2592000000 \
         WHERE object_id = 'p-t'",
    )
    .await;
    assert_eq!(inbox.worker(fast_worker()).purge().await.unwrap(), 1);
    assert_eq!(inbox.retention_horizon().await.unwrap(), Some(t));
    assert!(store(&inbox, timeless).await.duplicate);
    assert_eq!(state(&inbox, &refund).await, DeliveryState::Done);
    // A state between the horizon and the newest handled one: stale by the object's mark.
    let late = store(&inbox, purchase_body("p-a", "purchase.paid", t + day)).await;
    assert!(drain(&inbox, fast_worker()).await.is_empty());
    assert_eq!(state(&inbox, &late).await, DeliveryState::Stale);
    assert_eq!(inbox.counts().await.unwrap().expired, 0);
}
on_both!(retention_keeps_what_replays_need);

/// A new inbox remembers nothing handled before it (a previous receiver, a reset database): with
/// `IntakeOptions::max_age`, a captured delivery older than that is recorded, never handed over.
async fn an_intake_with_a_max_age_expires_older_states(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let options =
        chip_gate_inbox::IntakeOptions::default().max_age(Some(Duration::from_secs(7 * 86_400)));
    let intake = chip_gate_inbox::Intake::new(&inbox, verifier(), options).unwrap();
    let receive = |body: Bytes| spawn_receive(&intake, body);
    let old = receive(purchase_body(
        "p-old",
        "purchase.paid",
        now_s() - 8 * 86_400,
    ))
    .await
    .unwrap()
    .unwrap();
    let recent = receive(purchase_body("p-new", "purchase.paid", now_s() - 3600))
        .await
        .unwrap()
        .unwrap();
    let handed = drain(&inbox, fast_worker()).await;
    assert_eq!(handed.len(), 1, "{handed:?}");
    assert_eq!(handed[0].id(), recent.id.unwrap());
    assert_eq!(state(&inbox, &old).await, DeliveryState::Stale);
    assert_eq!(inbox.counts().await.unwrap().expired, 1);
    assert_eq!(inbox.retention_horizon().await.unwrap(), None);
}
on_both!(an_intake_with_a_max_age_expires_older_states);

/// Stored in one batch, deliveries are expired as they are one at a time (on PostgreSQL a lone
/// delivery takes a statement of its own): at or below the retention horizon, or older than
/// `max_age`, recorded and never handed over; the rest handed over.
async fn a_batch_expires_what_a_lone_delivery_would(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let horizon = now_s() - 30 * 86_400;
    exec(
        &inbox,
        &format!("UPDATE chip_inbox_horizon SET updated_on = {horizon} WHERE id = 1"),
    )
    .await;
    let options = IntakeOptions::default().max_age(Some(Duration::from_secs(7 * 86_400)));
    let answers = in_one_batch_with(
        &inbox,
        &url,
        options,
        vec![
            purchase_body("p-at-horizon", "purchase.paid", horizon),
            purchase_body("p-too-old", "purchase.paid", now_s() - 8 * 86_400),
            purchase_body("p-recent", "purchase.paid", now_s() - 3600),
            purchase_body("p-recent-2", "purchase.paid", now_s() - 60),
        ],
    )
    .await;
    let receipts: Vec<Receipt> = answers.into_iter().map(Result::unwrap).collect();
    let handed = drain(&inbox, fast_worker()).await;
    let mut handed_ids: Vec<i64> = handed.iter().map(StoredDelivery::id).collect();
    handed_ids.sort_unstable();
    // The two recent ones; the first delivery, stored alone before the batch (its updated_on
    // is 1), is expired by the lone statement.
    assert_eq!(handed.len(), 2, "{handed:?}");
    for recent in &receipts[2..] {
        assert!(handed_ids.contains(&recent.id.unwrap()), "{handed:?}");
    }
    for expired in &receipts[..2] {
        assert_eq!(state(&inbox, expired).await, DeliveryState::Stale);
    }
    assert_eq!(inbox.counts().await.unwrap().expired, 3);
}
on_both!(a_batch_expires_what_a_lone_delivery_would);

// --- 2. One delivery never fails its neighbours --------------------------------------------

/// Sends `bodies` so that they land in one batch: the writer is held on a first delivery while
/// the rest queue up. Returns the answers to the rest, in order.
async fn in_one_batch(
    inbox: &Inbox,
    url: &str,
    bodies: Vec<Bytes>,
) -> Vec<Result<Receipt, IntakeError>> {
    in_one_batch_with(inbox, url, IntakeOptions::default(), bodies).await
}

/// [`in_one_batch`] through an intake with `options`.
async fn in_one_batch_with(
    inbox: &Inbox,
    url: &str,
    options: IntakeOptions,
    bodies: Vec<Bytes>,
) -> Vec<Result<Receipt, IntakeError>> {
    let intake = chip_gate_inbox::Intake::new(inbox, verifier(), options).unwrap();
    let blocker = WriteLock::take(url, inbox.backend_kind() == BackendKind::Sqlite).await;
    let first = spawn_receive(
        &intake,
        purchase_body(&format!("first-{}", fastrand::u64(..)), "purchase.paid", 1),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rest: Vec<_> = bodies
        .into_iter()
        .map(|body| spawn_receive(&intake, body))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    blocker.release().await;
    first.await.unwrap().unwrap();
    let mut answers = Vec::new();
    for answer in rest {
        answers.push(answer.await.unwrap());
    }
    answers
}

/// 197 valid deliveries and three with a NUL (`\u0000`) in the object id, the event or both, in
/// one batch: all are stored (PostgreSQL's `text` cannot hold NUL: the key escapes it, the shown
/// columns replace it, the body stays exact), and each is handed over.
async fn a_nul_in_a_delivery_fails_nothing(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let mut bodies: Vec<Bytes> = (0..197)
        .map(|n| purchase_body(&format!("valid-{n}"), "purchase.paid", 5))
        .collect();
    let nul_id = purchase_body("nul\\u0000id", "purchase.paid", 5);
    let nul_event = purchase_body("p-nul-event", "purchase.paid\\u0000x", 5);
    let nul_both = untyped_purchase_body("b\\u0000:%", "purchase.\\u0000", 5);
    bodies.extend([nul_id.clone(), nul_event.clone(), nul_both.clone()]);
    fastrand::shuffle(&mut bodies);
    let answers = in_one_batch(&inbox, &url, bodies.clone()).await;
    for answer in &answers {
        let receipt = answer.as_ref().unwrap();
        assert!(!receipt.duplicate, "{receipt:?}");
    }
    let key_of = |body: &Bytes| {
        let at = bodies.iter().position(|b| b == body).unwrap();
        answers[at].as_ref().unwrap().dedup_key.clone()
    };
    assert_eq!(key_of(&nul_id), "nul%00id:purchase.paid:5");
    assert_eq!(key_of(&nul_event), "p-nul-event:purchase.paid%00x:5");
    assert_eq!(key_of(&nul_both), "b%00%3A%25:purchase.%00:5");
    for body in [&nul_id, &nul_event, &nul_both] {
        let at = bodies.iter().position(|b| b == body).unwrap();
        let stored = inbox
            .get(answers[at].as_ref().unwrap().id.unwrap())
            .await
            .unwrap();
        assert_eq!(&stored.body, body, "the body is kept exact");
        assert!(!stored.summary.event.contains('\0'));
        // Sent again: meets its original.
        assert!(store(&inbox, body.clone()).await.duplicate);
    }
    let counts = inbox.counts().await.unwrap();
    assert_eq!((counts.received, counts.duplicates), (201, 3));
    assert_eq!(drain(&inbox, fast_worker()).await.len(), 201);
}
on_both!(a_nul_in_a_delivery_fails_nothing);

/// When the database refuses one record of a batch (here a trigger), the batch is stored apart
/// and only that record is answered 503; the others are stored, and counted, once.
async fn one_refused_record_fails_only_itself(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let statements: &[&str] = match inbox.backend_kind() {
        BackendKind::Sqlite => &[
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
    let boom = purchase_body("boom", "purchase.paid", 1);
    let mut bodies: Vec<Bytes> = (0..150)
        .map(|n| purchase_body(&format!("fine-{n}"), "purchase.paid", 1))
        .collect();
    bodies.push(bodies[3].clone());
    bodies.push(boom.clone());
    fastrand::shuffle(&mut bodies);
    let answers = in_one_batch(&inbox, &url, bodies.clone()).await;
    for (body, answer) in bodies.iter().zip(&answers) {
        if body == &boom {
            let error = answer.as_ref().unwrap_err();
            assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert!(error.to_string().contains("injected failure"), "{error}");
        } else {
            assert!(answer.is_ok(), "{answer:?}");
        }
    }
    let counts = inbox.counts().await.unwrap();
    assert_eq!((counts.received, counts.duplicates), (151, 1));
    assert_eq!(inbox.status().await.unwrap().pending, 151);
}
on_both!(one_refused_record_fails_only_itself);

// --- 3. Order by object identity, whatever the typing result -------------------------------

/// An object whose states alternate between fitting the typed model and not: one lane, so the
/// states go in `updated_on` order and an older one arriving late is stale.
async fn typed_and_untyped_states_share_one_order(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let typed = |u: i64| purchase_body("p-mixed", "purchase.paid", u);
    let untyped = |u: i64| untyped_purchase_body("p-mixed", "purchase.paid", u);
    // Stored out of order before any worker runs: handed over in updated_on order.
    let twenty = store(&inbox, untyped(20)).await;
    store(&inbox, typed(10)).await;
    assert!(
        inbox
            .get(twenty.id.unwrap())
            .await
            .unwrap()
            .summary
            .typing_problem
            .is_some()
    );
    let order: Vec<i64> = drain(&inbox, fast_worker())
        .await
        .iter()
        .map(|d| d.summary.updated_on.unwrap())
        .collect();
    assert_eq!(order, [10, 20]);
    // Newer states handled, older ones of the other typing arriving late: stale.
    store(&inbox, typed(30)).await;
    assert_eq!(drain(&inbox, fast_worker()).await.len(), 1);
    let late_untyped = store(&inbox, untyped(25)).await;
    assert!(drain(&inbox, fast_worker()).await.is_empty());
    assert_eq!(state(&inbox, &late_untyped).await, DeliveryState::Stale);
    store(&inbox, untyped(40)).await;
    assert_eq!(drain(&inbox, fast_worker()).await.len(), 1);
    let late_typed = store(&inbox, typed(35)).await;
    assert!(drain(&inbox, fast_worker()).await.is_empty());
    assert_eq!(state(&inbox, &late_typed).await, DeliveryState::Stale);
    assert_eq!(inbox.counts().await.unwrap().stale, 2);
    // An untyped state without `type` takes its kind from the event's prefix: the same lane.
    let no_type = Bytes::from_static(
        br#"{"id":"p-mixed","event_type":"purchase.paid","updated_on":38,"purchase":{"total":"x"}}"#,
    );
    let late = store(&inbox, no_type).await;
    assert!(drain(&inbox, fast_worker()).await.is_empty());
    assert_eq!(state(&inbox, &late).await, DeliveryState::Stale);
}
on_both!(typed_and_untyped_states_share_one_order);

// --- 4. An injective dedup key -------------------------------------------------------------

/// Two different deliveries whose `<id>:<event>:<updated_on>` used to be the same text (a `:`
/// in the id or the event) are both stored, each under its own key.
async fn keys_with_colons_never_collide(url: String) {
    let inbox = Inbox::connect(&url).await.unwrap();
    let one = store(&inbox, purchase_body("a:b", "c", 1)).await;
    let two = store(&inbox, purchase_body("a", "b:c", 1)).await;
    assert!(!one.duplicate && !two.duplicate);
    assert_ne!(one.id, two.id);
    assert_eq!(one.dedup_key, "a%3Ab:c:1");
    assert_eq!(two.dedup_key, "a:b%3Ac:1");
    // An id that looks like an escape stays apart too.
    let three = store(&inbox, purchase_body("a%3Ab", "c", 1)).await;
    assert!(!three.duplicate);
    assert_eq!(three.dedup_key, "a%253Ab:c:1");
    assert_eq!(inbox.counts().await.unwrap().received, 3);
    assert_eq!(drain(&inbox, fast_worker()).await.len(), 3);
}
on_both!(keys_with_colons_never_collide);

#[test]
fn dedup_keys_are_injective() {
    let key = |body: Bytes| chip_gate_inbox::dedup_key(&chip_gate::Delivery::from_verified(body));
    // CHIP's ids and events read as before.
    assert_eq!(
        key(purchase_body("k-1", "purchase.paid", 9)),
        "k-1:purchase.paid:9"
    );
    let pairs = [
        (("a:b", "c"), ("a", "b:c")),
        (("a%3A", "b"), ("a:", "b")),
        (("a", "b:-"), ("a:b", "-")),
    ];
    for ((id1, ev1), (id2, ev2)) in pairs {
        assert_ne!(
            key(purchase_body(id1, ev1, 1)),
            key(purchase_body(id2, ev2, 1))
        );
    }
    let timeless = key(Bytes::from_static(
        br#"{"id":"x:y","type":"purchase","event_type":"purchase.viewed"}"#,
    ));
    assert!(timeless.starts_with("x%3Ay:purchase.viewed:-:sha256:"));
    assert_eq!(timeless.split(':').count(), 5);
}

/// An inbox made by the previous version (schema 1) with keys and lanes of the old form: the
/// migration rewrites the ones that need escaping, so a repeat of an old delivery meets its
/// original, and carries the marks of untyped deliveries' old lanes over to their objects' lanes.
async fn the_migration_keeps_old_deliveries_recognised(url: String) {
    let sqlite = url.starts_with("sqlite:");
    let version_one = if sqlite {
        include_str!("../migrations/sqlite/0001_inbox.sql")
    } else {
        include_str!("../migrations/postgres/0001_inbox.sql")
    };
    let recent = now_s() - 3600;
    let colon = purchase_body("a:b", "c", recent);
    let plain = purchase_body("plain", "purchase.paid", recent);
    let timeless = Bytes::from_static(
        br#"{"id":"x:y","type":"purchase","event_type":"purchase.viewed","n":1}"#,
    );
    let untyped = untyped_purchase_body("u-1", "purchase.paid", recent + 50);
    let nul = purchase_body("n\\u0000ul", "purchase.paid", recent);
    let hash = chip_gate_inbox::dedup_key(&chip_gate::Delivery::from_verified(timeless.clone()));
    let hash = &hash[hash.len() - 64..];
    {
        let old = OldDatabase::open(&url).await;
        old.run(version_one).await;
        old.run(
            "CREATE TABLE chip_inbox_migrations (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .await;
        old.run("INSERT INTO chip_inbox_migrations VALUES (1, 'deliveries, lanes, counters', 0)")
            .await;
        let rows: [OldRow<'_>; 4] = [
            (
                "a:b:c:U",
                "purchase:a:b",
                "c",
                "purchase",
                Some(recent),
                &colon,
                "done",
                "a:b",
            ),
            (
                "plain:purchase.paid:U",
                "purchase:plain",
                "purchase.paid",
                "purchase",
                Some(recent),
                &plain,
                "pending",
                "plain",
            ),
            (
                "x:y:purchase.viewed:-:sha256:H",
                "purchase:x:y",
                "purchase.viewed",
                "purchase",
                None,
                &timeless,
                "done",
                "x:y",
            ),
            (
                "u-1:purchase.paid:V",
                "unknown:u-1",
                "purchase.paid",
                "unknown",
                Some(recent + 50),
                &untyped,
                "done",
                "u-1",
            ),
        ];
        for (key, lane, event, kind, updated_on, body, state, id) in rows {
            let key = key
                .replace('U', &recent.to_string())
                .replace('V', &(recent + 50).to_string())
                .replace('H', hash);
            old.insert(&key, lane, event, kind, id, updated_on, body, state)
                .await;
        }
        if sqlite {
            // SQLite text held a NUL; the old key had it raw.
            old.insert(
                &format!("n\0ul:purchase.paid:{recent}"),
                "purchase:n\0ul",
                "purchase.paid",
                "purchase",
                "n\0ul",
                Some(recent),
                &nul,
                "done",
            )
            .await;
            if let OldDatabase::Sqlite(conn) = &old {
                sqlx::query(
                    "INSERT INTO chip_inbox_lanes (lane, handled_updated_on) VALUES ($1, $2)",
                )
                .bind("purchase:n\0ul")
                .bind(recent + 5)
                .execute(&mut *conn.lock().await)
                .await
                .unwrap();
            }
        }
        old.run(&format!(
            "INSERT INTO chip_inbox_lanes (lane, handled_updated_on) VALUES \
             ('purchase:a:b', {recent}), ('unknown:u-1', {}), ('purchase:u-1', {})",
            recent + 50,
            recent + 40
        ))
        .await;
        old.run("INSERT INTO chip_inbox_counters VALUES ('received', 0, 4)")
            .await;
    }
    // A tool that does not migrate refuses it.
    let latest = latest_schema(&url);
    let error = Inbox::connect_with(&url, InboxOptions::default().migrate(false))
        .await
        .unwrap_err();
    assert!(
        matches!(error, InboxError::SchemaTooOld { found: 1, known } if known == latest),
        "{error:?}"
    );
    // An app migrates it.
    let inbox = Inbox::connect(&url).await.unwrap();
    assert_eq!(inbox.schema_version().await.unwrap(), latest);
    for body in [&colon, &plain, &timeless, &untyped] {
        let again = store(&inbox, body.clone()).await;
        assert!(again.duplicate, "{again:?}");
        assert!(again.id.is_some());
    }
    let keys: Vec<String> = inbox
        .list(&ListFilter::new())
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.dedup_key)
        .collect();
    assert!(keys.contains(&format!("a%3Ab:c:{recent}")), "{keys:?}");
    assert!(
        keys.contains(&format!("plain:purchase.paid:{recent}")),
        "{keys:?}"
    );
    if sqlite {
        assert!(
            keys.contains(&format!("n%00ul:purchase.paid:{recent}")),
            "{keys:?}"
        );
        assert!(store(&inbox, nul).await.duplicate);
        let sql = format!(
            "SELECT COUNT(*) FROM chip_inbox_lanes WHERE lane = 'purchase:n%00ul' \
             AND handled_updated_on = {}",
            recent + 5
        );
        assert_eq!(scalar(&inbox, &sql).await, 1);
        let sql = "SELECT COUNT(*) FROM chip_inbox_deliveries WHERE lane = 'purchase:n%00ul'";
        assert_eq!(scalar(&inbox, sql).await, 1);
    }
    // The untyped delivery's mark (recent + 50) now guards the purchase's lane: a typed state
    // older than it is stale, though the purchase lane itself had handled only recent + 40.
    let late = store(&inbox, purchase_body("u-1", "purchase.paid", recent + 45)).await;
    let handed = drain(&inbox, fast_worker()).await;
    assert_eq!(handed.len(), 1, "only the pending old delivery: {handed:?}");
    assert_eq!(state(&inbox, &late).await, DeliveryState::Stale);
    // The escaped lane kept its mark.
    let colon_late = store(&inbox, purchase_body("a:b", "purchase.paid", recent - 10)).await;
    assert!(drain(&inbox, fast_worker()).await.is_empty());
    assert_eq!(state(&inbox, &colon_late).await, DeliveryState::Stale);
    // Recent deliveries are not expired: the horizon an old inbox starts with is 48 hours back.
    assert!(inbox.retention_horizon().await.unwrap().unwrap() < now_s() - 47 * 3600);
    assert_eq!(inbox.counts().await.unwrap().expired, 0);
}
on_both!(the_migration_keeps_old_deliveries_recognised);

/// A delivery as the previous version stored it: key, lane, event, kind, updated_on, body, state,
/// object id.
type OldRow<'a> = (
    &'a str,
    &'a str,
    &'a str,
    &'a str,
    Option<i64>,
    &'a Bytes,
    &'a str,
    &'a str,
);

/// A plain connection to a database made by hand as the previous version would have.
enum OldDatabase {
    Sqlite(tokio::sync::Mutex<sqlx::SqliteConnection>),
    Postgres(tokio::sync::Mutex<sqlx::PgConnection>),
}

impl OldDatabase {
    async fn open(url: &str) -> Self {
        use sqlx::Connection as _;
        if url.starts_with("sqlite:") {
            let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(url)
                .unwrap()
                .create_if_missing(true);
            Self::Sqlite(tokio::sync::Mutex::new(
                sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .unwrap(),
            ))
        } else {
            Self::Postgres(tokio::sync::Mutex::new(
                sqlx::PgConnection::connect(url).await.unwrap(),
            ))
        }
    }

    async fn run(&self, sql: &str) {
        match self {
            Self::Sqlite(conn) => {
                sqlx::raw_sql(sql)
                    .execute(&mut *conn.lock().await)
                    .await
                    .unwrap();
            }
            Self::Postgres(conn) => {
                sqlx::raw_sql(sql)
                    .execute(&mut *conn.lock().await)
                    .await
                    .unwrap();
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert(
        &self,
        key: &str,
        lane: &str,
        event: &str,
        kind: &str,
        id: &str,
        updated_on: Option<i64>,
        body: &Bytes,
        state: &str,
    ) {
        let sql = "INSERT INTO chip_inbox_deliveries (dedup_key, lane, event, object_kind, \
                   object_id, updated_on, signature, body, received_at, next_attempt_at, state, \
                   finished_at) VALUES ($1, $2, $3, $4, $5, $6, 'sig', $7, $8, $8, $9, \
                   CASE WHEN $9 = 'pending' THEN NULL ELSE $8 END)";
        let now = now_s() * 1000;
        macro_rules! insert {
            ($conn:expr) => {
                sqlx::query(sql)
                    .bind(key)
                    .bind(lane)
                    .bind(event)
                    .bind(kind)
                    .bind(id)
                    .bind(updated_on)
                    .bind(body.as_ref())
                    .bind(now)
                    .bind(state)
                    .execute($conn)
                    .await
                    .unwrap()
            };
        }
        match self {
            Self::Sqlite(conn) => {
                insert!(&mut *conn.lock().await);
            }
            Self::Postgres(conn) => {
                insert!(&mut *conn.lock().await);
            }
        }
    }
}

// --- 5. Files -------------------------------------------------------------------------------

/// The SQLite file, and the -wal and -shm files SQLite makes beside it, are readable by their
/// owner only, whatever the umask.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let (url, dir) = sqlite_url();
    let inbox = Inbox::connect(&url).await.unwrap();
    store(&inbox, purchase_body("p-file", "purchase.paid", 1)).await;
    for name in ["inbox.db", "inbox.db-wal", "inbox.db-shm"] {
        let path = dir.path().join(name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} has mode {mode:o}");
    }
    inbox.close().await;
    // Opening an existing file leaves it as it is.
    let again = Inbox::connect(&url).await.unwrap();
    assert_eq!(again.counts().await.unwrap().received, 1);
    // A file that cannot be created is a clear error.
    let missing = format!("sqlite://{}", dir.path().join("no/such/dir/x.db").display());
    let error = Inbox::connect(&missing).await.unwrap_err();
    assert!(matches!(error, InboxError::CreateFile { .. }), "{error:?}");
}
