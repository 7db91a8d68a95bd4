//! The HTTP clients the CLI builds: plain http never goes through a proxy, the name `localhost`
//! never goes to a resolver, every request has a timeout, and redirects are never followed (a key
//! must not follow one).

use std::time::Duration;

use url::Url;

/// The time allowed to open a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The time allowed for one request, from connecting to reading the whole answer.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `url` is `http://` to a loopback address (`127.0.0.0/8`, `::1`, `localhost` without a
/// trailing dot): a local mock or forwarder, which must be reached directly and never through a
/// proxy.
pub fn is_plain_loopback(url: &Url) -> bool {
    url.scheme() == "http" && url.host_str().is_some_and(chip_gate_api::is_loopback_host)
}

/// A `reqwest` builder for requests to `url`: timeouts, no redirects, no proxy when `url` is plain
/// http to a loopback address (a proxy from `HTTP_PROXY`/`ALL_PROXY` would otherwise see the
/// request, and its `Authorization` header, in clear text), and, when its host is `localhost`, that
/// name pinned to 127.0.0.1 and ::1 so no resolver can point it elsewhere.
pub fn builder_for(url: &Url) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    if url.host_str().is_some_and(chip_gate_api::is_localhost_name) {
        builder = chip_gate_api::pin_localhost(builder);
    }
    if is_plain_loopback(url) {
        builder.no_proxy()
    } else {
        builder
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_to_loopback_skips_the_proxy() {
        for yes in [
            "http://127.0.0.1:4010/api/v1",
            "http://127.9.9.9/",
            "http://[::1]:80/",
            "http://LOCALHOST:1/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(is_plain_loopback(&Url::parse(yes).unwrap()), "{yes}");
        }
        for no in [
            "https://127.0.0.1/",
            "http://10.0.0.1/",
            "http://localhost.example.com/",
            "https://gate.chip-in.asia/api/v1",
            "http://localhost.:4010/",
            "http://LOCALHOST./",
        ] {
            assert!(!is_plain_loopback(&Url::parse(no).unwrap()), "{no}");
        }
    }

    /// A resolver that answers nothing and remembers being asked.
    struct Refuse(std::sync::Arc<std::sync::atomic::AtomicBool>);

    impl reqwest::dns::Resolve for Refuse {
        fn resolve(&self, _: reqwest::dns::Name) -> reqwest::dns::Resolving {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async { Err("this resolver answers nothing".into()) })
        }
    }

    #[tokio::test]
    async fn localhost_reaches_this_machine_without_asking_a_resolver() {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = server.local_addr().unwrap().port();
        tokio::spawn(async move {
            let app = axum::Router::new().fallback(|| async { "here" });
            let _ = axum::serve(server, app).await;
        });
        let url = Url::parse(&format!("http://localhost:{port}/x")).unwrap();
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The resolver stands for DNS, /etc/hosts or a search domain answering otherwise.
        let client = builder_for(&url)
            .dns_resolver(std::sync::Arc::new(Refuse(asked.clone())))
            .build()
            .unwrap();
        let body = client.get(url).send().await.unwrap().text().await.unwrap();
        assert_eq!(body, "here");
        assert!(!asked.load(std::sync::atomic::Ordering::SeqCst));
    }
}
