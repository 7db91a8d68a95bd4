//! The loopback rule for the client's base URL: `localhost` (exactly) is reached at 127.0.0.1 or
//! ::1 without asking any resolver, and `localhost.` (a DNS name a resolver may point anywhere) is
//! refused for plain http.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chip_gate::Client;
use futures::TryStreamExt;

/// A resolver that answers nothing and remembers being asked: it stands for DNS, `/etc/hosts` or a
/// search domain that would point `localhost` elsewhere.
struct Refuse(Arc<AtomicBool>);

impl reqwest::dns::Resolve for Refuse {
    fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
        self.0.store(true, Ordering::SeqCst);
        Box::pin(async { Err("this resolver answers nothing".into()) })
    }
}

#[tokio::test]
async fn localhost_is_pinned_to_loopback_and_no_resolver_is_asked() {
    let mock = common::mock::start(common::mock::config()).await;
    let port = mock.addr().port();
    let asked = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::builder().dns_resolver(Arc::new(Refuse(asked.clone())));
    let client = Client::builder(mock.api_key())
        .base_url(format!("http://LocalHost:{port}/api/v1"))
        .http_client_builder(http)
        .build()
        .unwrap();
    let all: Vec<_> = client.webhooks().list_all().try_collect().await.unwrap();
    assert!(all.is_empty());
    assert!(
        !asked.load(Ordering::SeqCst),
        "a resolver was asked for localhost"
    );
}

#[test]
fn a_trailing_dot_is_not_loopback() {
    for url in ["http://localhost.:4010/api/v1", "http://LOCALHOST./api/v1"] {
        let error = Client::builder("sk_test_key")
            .base_url(url)
            .build()
            .unwrap_err()
            .to_string();
        assert!(error.contains("refusing to send the API key"), "{error}");
        assert!(error.contains("write `localhost` or 127.0.0.1"), "{error}");
        assert!(!error.contains("sk_test_key"), "{error}");
    }
    // Over https a trailing dot is just a name (TLS checks the certificate).
    assert!(
        Client::builder("k")
            .base_url("https://localhost.:4010/api/v1")
            .build()
            .is_ok()
    );
}
