//! Issue 20: the mock's deliveries are bounded per target, not only per event. A thousand webhooks
//! and a few triggers used to open one outbound connection per delivery at once (32 triggers,
//! about 20,000 sockets, out of file descriptors). Now at most `Limits::max_outbound_requests`
//! attempts are in progress at once (the rest wait for a slot and are all delivered), and at most
//! `Limits::max_pending_per_webhook` events wait per webhook (a trigger past it is refused with
//! 429 naming the webhook). Real HTTP on 127.0.0.1.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chip_gate_api::types::EventName;
use chip_gate_mock::{DeliveryConfig, DeliveryFaults, Limits, MockConfig, MockError, MockServer};
use common::{Receiver, client, create_webhook, fast_config, stalling_receiver, webhook_body};
use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

/// What a [`CountingReceiver`] saw.
#[derive(Default)]
struct Counts {
    /// Connections being served now: from accept until the answer is written.
    open: AtomicUsize,
    /// The most connections ever served at once.
    peak: AtomicUsize,
    /// (path, object id) of every delivery received.
    got: Mutex<Vec<(String, String)>>,
}

/// A webhook receiver on 127.0.0.1 that speaks just enough HTTP/1.1 to count connections: one
/// request per connection, answered 200 after `delay`, then closed. A connection counts as open
/// from its accept until just before its answer is written, so a mock that waits for an answer
/// before sending the next request can never be seen above its bound.
struct CountingReceiver {
    addr: SocketAddr,
    counts: Arc<Counts>,
}

impl CountingReceiver {
    async fn start(delay: Duration) -> CountingReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_one(stream, shared.clone(), delay));
                    }
                    // Out of descriptors (the unbounded mock of old): wait and go on.
                    Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        });
        CountingReceiver { addr, counts }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn peak(&self) -> usize {
        self.counts.peak.load(Ordering::SeqCst)
    }

    fn received(&self) -> Vec<(String, String)> {
        self.counts.got.lock().unwrap().clone()
    }
}

async fn serve_one(mut stream: TcpStream, counts: Arc<Counts>, delay: Duration) {
    let now = counts.open.fetch_add(1, Ordering::SeqCst) + 1;
    counts.peak.fetch_max(now, Ordering::SeqCst);
    let request = read_request(&mut stream).await;
    tokio::time::sleep(delay).await;
    if let Some((path, body)) = request {
        let id = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_owned))
            .unwrap_or_default();
        counts.got.lock().unwrap().push((path, id));
    }
    counts.open.fetch_sub(1, Ordering::SeqCst);
    let _ = stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .await;
    let _ = stream.shutdown().await;
}

/// Reads one request: its path and body (by `Content-Length`). `None` if it is not one.
async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1)?.to_owned();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((path, body))
}

/// This process's open file descriptors, where `/proc/self/fd` can say.
fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count())
}

/// Creates `n` webhooks for `purchase.paid`, webhook `i` calling back `/hook/{i}` on `receiver`.
async fn create_many(mock: &MockServer, receiver: &CountingReceiver, n: usize) {
    let http = client(mock);
    let url = format!("{}/webhooks/", mock.base_url());
    futures::stream::iter(0..n)
        .map(|i| {
            let req = http.post(&url).json(&webhook_body(
                &receiver.url(&format!("/hook/{i}")),
                &["purchase.paid"],
            ));
            async move { req.send().await.unwrap().status() }
        })
        .buffer_unordered(8)
        .for_each(|status| async move { assert_eq!(status, StatusCode::CREATED) })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_webhooks_share_a_bounded_number_of_outbound_connections() {
    const WEBHOOKS: usize = 1_000;
    const TRIGGERS: usize = 4;
    const BOUND: usize = 16;
    let mock = MockServer::start(MockConfig {
        limits: Limits {
            max_webhooks: WEBHOOKS,
            max_outbound_requests: BOUND,
            delivery_log: 2 * WEBHOOKS * TRIGGERS,
            ..Limits::default()
        },
        // Room for a busy machine: an attempt that timed out would free its slot while the
        // receiver still serves it.
        delivery: DeliveryConfig {
            request_timeout: Duration::from_secs(30),
            ..fast_config().delivery
        },
        generate_keys: false,
        ..fast_config()
    })
    .await
    .unwrap();
    // Slow enough that deliveries overlap, quick enough for a short test.
    let receiver = CountingReceiver::start(Duration::from_millis(5)).await;
    create_many(&mock, &receiver, WEBHOOKS).await;

    // Sample this process's descriptors (the mock's sockets and the receiver's) while delivering.
    let baseline = open_fds();
    let fd_peak = Arc::new(AtomicUsize::new(baseline.unwrap_or(0)));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (fd_peak, sampling) = (fd_peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::SeqCst) {
                if let Some(n) = open_fds() {
                    fd_peak.fetch_max(n, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let objects: Vec<Uuid> = (0..TRIGGERS).map(|_| Uuid::new_v4()).collect();
    // A deadline so that a broken mock fails instead of hanging; nothing here is timed.
    let reports = tokio::time::timeout(Duration::from_secs(120), async {
        let reports = futures::future::join_all(
            objects
                .iter()
                .map(|&object| mock.trigger(EventName::PurchasePaid, Some(object))),
        )
        .await;
        mock.wait_idle(Duration::from_secs(60)).await.unwrap();
        reports
    })
    .await
    .expect("the deliveries did not finish");
    sampling.store(false, Ordering::SeqCst);
    sampler.await.unwrap();

    // Every trigger was accepted: the bound makes deliveries wait, it refuses none.
    for report in reports {
        assert_eq!(report.unwrap().deliveries.len(), WEBHOOKS);
    }
    // The receiver never saw more connections at once than the bound.
    assert!(
        receiver.peak() <= BOUND,
        "the receiver saw {} connections at once (bound {BOUND})",
        receiver.peak()
    );
    // Descriptors stayed bounded: the mock's outbound sockets and the receiver's accepted ones,
    // each at most about BOUND (a closed connection's socket may linger a moment), plus room for
    // the other tests of this binary, which share the process.
    if let Some(baseline) = baseline {
        let grew = fd_peak.load(Ordering::SeqCst).saturating_sub(baseline);
        assert!(
            grew <= 2 * BOUND + 64,
            "{grew} more descriptors open during delivery (bound {BOUND})"
        );
    }
    // None lost: every webhook got every event, and the mock logged each as accepted.
    let expected: BTreeSet<(String, String)> = (0..WEBHOOKS)
        .flat_map(|i| {
            objects
                .iter()
                .map(move |o| (format!("/hook/{i}"), o.to_string()))
        })
        .collect();
    let got: BTreeSet<(String, String)> = receiver.received().into_iter().collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "deliveries missing or unexpected"
    );
    assert!(got == expected, "deliveries missing or unexpected");
    let accepted: HashSet<(Uuid, Uuid)> = mock
        .deliveries()
        .iter()
        .filter(|r| r.accepted)
        .map(|r| (r.webhook_id, r.object_id))
        .collect();
    assert_eq!(accepted.len(), WEBHOOKS * TRIGGERS);
}

/// The object ids a [`Receiver`] got.
fn objects_received(receiver: &Receiver) -> BTreeSet<String> {
    receiver
        .received()
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_with_a_full_queue_refuses_the_excess_and_says_which() {
    const CAP: usize = 3;
    let mock = MockServer::start(MockConfig {
        limits: Limits {
            max_pending_per_webhook: CAP,
            ..Limits::default()
        },
        generate_keys: false,
        ..fast_config()
    })
    .await
    .unwrap();
    let (release, held) = tokio::sync::watch::channel(false);
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let slow = create_webhook(
        &mock,
        webhook_body(
            &stalling_receiver(held, move |body| {
                let id = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let _ = got_tx.send(id);
            })
            .await,
            &["purchase.paid"],
        ),
    )
    .await;
    let slow_id = slow["id"].as_str().unwrap().to_owned();
    // Another webhook, on a prompt receiver, gets paid and created purchases.
    let prompt = Receiver::start(&[]).await;
    create_webhook(
        &mock,
        webhook_body(&prompt.url(), &["purchase.paid", "purchase.created"]),
    )
    .await;
    let http = client(&mock);
    let trigger = |event: &str, object: Uuid| {
        http.post(format!("{}/__mock/trigger", mock.root_url()))
            .json(&json!({"event": event, "object_id": object}))
            .send()
    };

    // CAP events (different objects, so none waits behind another) fill the slow webhook's
    // queue: the receiver holds each one's first attempt.
    let accepted: Vec<Uuid> = (0..CAP).map(|_| Uuid::new_v4()).collect();
    let running: Vec<_> = accepted
        .iter()
        .map(|&object| tokio::spawn(trigger("purchase.paid", object)))
        .collect();
    let mut held_ids = BTreeSet::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while held_ids.len() < CAP {
            held_ids.insert(got.recv().await.unwrap());
        }
    })
    .await
    .expect("the slow receiver did not get its deliveries");

    // One more for that webhook is refused, whole, and the answer names the webhook.
    let refused = Uuid::new_v4();
    let resp = trigger("purchase.paid", refused).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["__all__"][0]["code"], "throttled");
    let message = body["__all__"][0]["message"].as_str().unwrap();
    assert!(
        message.contains(&slow_id) && message.contains(&format!("{CAP} deliveries")),
        "{message}"
    );
    // The library call says the same.
    match mock.trigger(EventName::PurchasePaid, Some(refused)).await {
        Err(MockError::Busy(why)) => assert!(why.contains(&slow_id), "{why}"),
        other => panic!("expected Busy, got {other:?}"),
    }
    // The cap is the slow webhook's alone: an event it does not receive goes through.
    let created = Uuid::new_v4();
    let resp = trigger("purchase.created", created).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let report: Value = resp.json().await.unwrap();
    assert_eq!(report["deliveries"][0]["accepted"], true);

    // Released, every accepted event is delivered to both webhooks; the refused one to neither.
    release.send(true).unwrap();
    for run in running {
        assert_eq!(run.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    mock.wait_idle(Duration::from_secs(20)).await.unwrap();
    let accepted_ids: BTreeSet<String> = accepted.iter().map(Uuid::to_string).collect();
    assert_eq!(held_ids, accepted_ids);
    let mut prompt_expected = accepted_ids.clone();
    prompt_expected.insert(created.to_string());
    assert_eq!(objects_received(&prompt), prompt_expected);
    let log = mock.deliveries();
    assert!(log.iter().all(|r| r.object_id != refused), "{log:?}");
    let delivered: HashSet<(Uuid, Uuid)> = log
        .iter()
        .filter(|r| r.accepted)
        .map(|r| (r.webhook_id, r.object_id))
        .collect();
    assert_eq!(delivered.len(), 2 * CAP + 1, "{log:?}");
    // Room again once the queue drained.
    let resp = trigger("purchase.paid", refused).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn held_back_events_count_against_their_webhooks_cap() {
    let mock = MockServer::start(MockConfig {
        limits: Limits {
            max_pending_per_webhook: 2,
            ..Limits::default()
        },
        // Every event held back a long while: each trigger answers at once, the events still
        // waiting.
        delivery_faults: DeliveryFaults {
            reorder_rate: 1.0,
            hold_back: Duration::from_secs(300),
            ..DeliveryFaults::none()
        },
        generate_keys: false,
        ..fast_config()
    })
    .await
    .unwrap();
    let hook = create_webhook(
        &mock,
        webhook_body("http://127.0.0.1:9/hook", &["purchase.paid"]),
    )
    .await;
    for _ in 0..2 {
        let report = mock.trigger(EventName::PurchasePaid, None).await.unwrap();
        assert!(report.deliveries[0].queued);
    }
    match mock.trigger(EventName::PurchasePaid, None).await {
        Err(MockError::Busy(why)) => {
            assert!(why.contains(hook["id"].as_str().unwrap()), "{why}");
        }
        other => panic!("expected Busy, got {other:?}"),
    }
    mock.shutdown().await;
}

#[tokio::test]
async fn new_limits_of_zero_are_refused() {
    for limits in [
        Limits {
            max_pending_per_webhook: 0,
            ..Limits::default()
        },
        Limits {
            max_outbound_requests: 0,
            ..Limits::default()
        },
    ] {
        match MockServer::start(MockConfig {
            limits,
            ..MockConfig::default()
        })
        .await
        {
            Err(MockError::InvalidConfig(why)) => assert!(why.contains("must be at least 1")),
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }
}
