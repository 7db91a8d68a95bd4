//! The local CHIP Gate mock (`chip-gate-mock`) on 127.0.0.1, and clients for it.

use std::time::Duration;

use chip_gate::{Client, RetryPolicy};
use chip_gate_mock::{MockConfig, MockServer, Variant};

/// The mock's configuration for most tests: CHIP's tidy answers, no generated webhook keys (fast).
pub fn config() -> MockConfig {
    MockConfig {
        generate_keys: false,
        ..MockConfig::default()
    }
}

/// Starts a mock with `config`.
pub async fn start(config: MockConfig) -> MockServer {
    MockServer::start(config).await.unwrap()
}

/// Starts a mock with [`config`] and `page_size` webhooks a page.
pub async fn mock(page_size: usize) -> MockServer {
    start(MockConfig {
        page_size,
        ..config()
    })
    .await
}

/// Starts a mock in its variations mode (the answers CHIP's document allows beyond its tidy
/// reading) with [`config`] otherwise and `page_size` webhooks a page.
pub async fn variations(page_size: usize) -> MockServer {
    start(MockConfig {
        page_size,
        variant: Variant::Variations,
        ..config()
    })
    .await
}

/// A client for the mock with `key`, `timeout` and `policy` as given.
pub fn client_with(mock: &MockServer, key: &str, timeout: Duration, policy: RetryPolicy) -> Client {
    Client::builder(key)
        .base_url(mock.base_url())
        .timeout(timeout)
        .retry_policy(policy)
        .build()
        .unwrap()
}

/// A client for the mock with its key, a 10 s timeout and retries 10 ms apart.
pub fn client(mock: &MockServer) -> Client {
    client_with(
        mock,
        mock.api_key(),
        Duration::from_secs(10),
        RetryPolicy::default().initial_backoff(Duration::from_millis(10)),
    )
}
