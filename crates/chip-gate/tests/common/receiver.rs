//! A webhook receiver served with `chip_gate::serve` on 127.0.0.1, and what sends to it.

use std::net::SocketAddr;

use axum::Router;
use chip_gate::serve::ServeOptions;

/// Serves `app` with [`chip_gate::serve::serve`] and `options` on 127.0.0.1 (a free port);
/// returns its address.
pub async fn serve(app: Router, options: ServeOptions) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(chip_gate::serve::serve(listener, app, options));
    addr
}

/// An HTTP client that ignores the environment's proxies (the receiver is on 127.0.0.1).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}
