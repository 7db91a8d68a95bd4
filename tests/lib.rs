//! Shared pieces of the end-to-end tests: a webhook receiver on 127.0.0.1 that verifies each
//! delivery with chip-gate's axum extractor and hands it to the test.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use chip_gate::serve::ServeOptions;
use chip_gate::{Delivery, VerifiedDelivery, Verifier};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A receiver bound to a free port on 127.0.0.1. Bind it first (its URL goes into the webhook),
/// then [`serve`](Self::serve) it with the key the API returned.
pub struct Receiver {
    listener: TcpListener,
    addr: SocketAddr,
}

/// A receiver that is serving: verified deliveries arrive on [`Serving::next`].
pub struct Serving {
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    /// Where the receiver listens.
    pub addr: SocketAddr,
}

impl Receiver {
    /// Binds 127.0.0.1 on a free port.
    pub async fn bind() -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        Ok(Receiver { listener, addr })
    }

    /// The callback URL to register.
    pub fn url(&self) -> String {
        format!("http://{}/chip/webhook", self.addr)
    }

    /// Starts serving: each verified delivery is forwarded to the test; anything else is answered
    /// 401 or 400 by the extractor and never forwarded.
    pub fn serve(self, verifier: Verifier) -> Serving {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Router::new()
            .route(
                "/chip/webhook",
                post(move |VerifiedDelivery(delivery): VerifiedDelivery| {
                    let tx = tx.clone();
                    async move {
                        // The test may have finished and dropped the receiving end.
                        let _ = tx.send(delivery);
                        "ok"
                    }
                }),
            )
            .with_state(verifier);
        tokio::spawn(async move {
            let _ = chip_gate::serve::serve(self.listener, app, ServeOptions::default()).await;
        });
        Serving {
            deliveries: rx,
            addr: self.addr,
        }
    }
}

impl Serving {
    /// The next verified delivery, or `None` if none arrives within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Delivery> {
        tokio::time::timeout(wait, self.deliveries.recv())
            .await
            .ok()
            .flatten()
    }
}
