//! The HTTP clients the CLI builds: plain http never goes through a proxy, every request has a
//! timeout, and redirects are never followed (a key must not follow one).

use std::time::Duration;

use url::Url;

/// The time allowed to open a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The time allowed for one request, from connecting to reading the whole answer.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Whether `url` is `http://` to a loopback address (`127.0.0.0/8`, `::1`, `localhost`): a local
/// mock or forwarder, which must be reached directly and never through a proxy.
pub fn is_plain_loopback(url: &Url) -> bool {
    url.scheme() == "http" && url.host_str().is_some_and(chip_gate_api::is_loopback_host)
}

/// A `reqwest` builder for requests to `url`: timeouts, no redirects, and no proxy when `url` is
/// plain http to a loopback address (a proxy from `HTTP_PROXY`/`ALL_PROXY` would otherwise see the
/// request, and its `Authorization` header, in clear text).
pub fn builder_for(url: &Url) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
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
        ] {
            assert!(!is_plain_loopback(&Url::parse(no).unwrap()), "{no}");
        }
    }
}
