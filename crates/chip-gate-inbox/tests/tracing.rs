//! Each delivery is traced (an intake span, a handle span), and no log line carries the body.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use chip_gate_inbox::{Inbox, StoredDelivery, WorkerOptions};
use common::*;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn spans_per_delivery_and_no_body_in_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (url, _dir) = sqlite_url();
    runtime.block_on(async {
        let inbox = Inbox::connect(&url).await.unwrap();
        let intake = inbox.intake(verifier()).unwrap();
        let body = bytes::Bytes::from_static(
            br#"{"id":"t-1","type":"purchase","event_type":"purchase.paid","updated_on":5,"client":{"email":"siti@example.com"}}"#,
        );
        intake
            .receive(&signed_headers(&signer(), &body), body.clone())
            .await
            .unwrap();
        // Refused: logged at debug, without the body.
        let _ = intake.receive(&header_map("AAAA"), body).await;
        inbox
            .worker(WorkerOptions::default())
            .process_batch(|d: StoredDelivery| async move {
                tracing::info!(delivery = ?d, "handling");
                Err::<(), _>("fails once")
            })
            .await
            .unwrap();
        // SQLite's connection threads hold on to the span of their last command until they are
        // done with it: close them, so that every span has closed (and been logged).
        inbox.close().await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("chip_inbox.intake"), "{text}");
    assert!(text.contains("outcome=\"stored\""), "{text}");
    assert!(text.contains("chip_inbox.handle"), "{text}");
    assert!(text.contains("delivery_id=1"), "{text}");
    assert!(text.contains("outcome=\"retried\""), "{text}");
    assert!(
        !text.contains("siti@example.com"),
        "a body leaked into the logs: {text}"
    );
}
