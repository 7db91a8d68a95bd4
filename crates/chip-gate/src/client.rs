//! The CHIP API client: configuration, authentication and the company public key.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use url::Url;

use crate::call::{self, Operation, ops};
use crate::error::Error;
use crate::retry::RetryPolicy;

/// CHIP's API base URL (one host for test and live keys: the key decides the mode).
pub const DEFAULT_BASE_URL: &str = "https://gate.chip-in.asia/api/v1";

/// The hint of a `401` from a local mock (a plain `http://` loopback base URL): the mock makes a
/// new API key each time it starts, so a key exported for an earlier run is refused. The `chip`
/// command words its own 401s (`chip trigger`) the same way.
pub const LOCAL_MOCK_KEY_HINT: &str = "a local mock makes a new API key each time it starts: use the \
     CHIP_API_KEY it printed at its latest start, or pin one by starting it with `chip mock \
     --api-key KEY` (chip-gate-mock: --api-key or CHIP_MOCK_API_KEY) and exporting CHIP_API_KEY=KEY";

/// The `User-Agent` every request carries.
pub const USER_AGENT: &str = concat!("chip-gate/", env!("CARGO_PKG_VERSION"));

/// The default time allowed to open a connection (TCP and TLS).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The default time allowed for one attempt, from connecting to the last byte of the answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The default for [`ClientBuilder::max_response_bytes`]: 8 MiB, far above any CHIP answer.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// The environment variable [`Client::from_env`] reads the API key from.
pub const API_KEY_ENV: &str = "CHIP_API_KEY";

/// The environment variable [`Client::from_env`] reads an optional base URL from.
pub const BASE_URL_ENV: &str = "CHIP_BASE_URL";

/// A CHIP secret API key.
///
/// Its [`Debug`] and [`Display`](fmt::Display) print `[redacted]`, so it can sit in structs that are
/// logged. The client sends it as a sensitive `Authorization: Bearer` header.
///
/// ```
/// let key = chip_gate::ApiKey::new("sk_live_abc123");
/// assert_eq!(format!("{key:?} {key}"), "[redacted] [redacted]");
/// assert_eq!(key.expose(), "sk_live_abc123");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wrap a key. Surrounding whitespace (a trailing newline from a file, say) is dropped.
    pub fn new(key: impl Into<String>) -> Self {
        let key = key.into();
        let trimmed = key.trim();
        if trimmed.len() == key.len() {
            ApiKey(key)
        } else {
            ApiKey(trimmed.to_owned())
        }
    }

    /// The key itself. Take care where it goes.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for ApiKey {
    fn from(key: String) -> Self {
        ApiKey::new(key)
    }
}

impl From<&str> for ApiKey {
    fn from(key: &str) -> Self {
        ApiKey::new(key)
    }
}

/// Configures and builds a [`Client`]; start with [`Client::builder`].
///
/// ```
/// use std::time::Duration;
/// use chip_gate::{Client, RetryPolicy};
///
/// let client = Client::builder("sk_test_123")
///     .base_url("http://127.0.0.1:8080/api/v1/")
///     .connect_timeout(Duration::from_secs(2))
///     .timeout(Duration::from_secs(10))
///     .retry_policy(RetryPolicy::default().max_attempts(4))
///     .build()?;
/// assert_eq!(client.base_url(), "http://127.0.0.1:8080/api/v1");
/// # Ok::<(), chip_gate::Error>(())
/// ```
pub struct ClientBuilder {
    api_key: ApiKey,
    base_url: String,
    connect_timeout: Duration,
    timeout: Duration,
    retry: RetryPolicy,
    max_pages: u64,
    max_response_bytes: usize,
    http: Option<reqwest::ClientBuilder>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("api_key", &self.api_key)
            .field("base_url", &self.base_url)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("max_pages", &self.max_pages)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("custom_http_client", &self.http.is_some())
            .finish()
    }
}

impl ClientBuilder {
    /// The API base URL, with or without a trailing slash; [`DEFAULT_BASE_URL`] unless set.
    ///
    /// It must be `https://`, or `http://` to a loopback address (`127.0.0.0/8`, `::1`, `localhost`,
    /// e.g. a local mock): the key is never sent in clear text over a network. It must not carry a
    /// user name, password, query or fragment.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The time allowed to open a connection; [`DEFAULT_CONNECT_TIMEOUT`] unless set.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The time allowed for one attempt, from connecting to reading the whole answer;
    /// [`DEFAULT_TIMEOUT`] unless set. Retries each get this much again; the
    /// [`RetryPolicy`] bounds the total.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How failed calls are retried; [`RetryPolicy::default`] unless set.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The most pages one [`list_all`](crate::Webhooks::list_all) walk reads before it stops with
    /// [`Error::Pagination`]; [`DEFAULT_MAX_PAGES`](crate::DEFAULT_MAX_PAGES) unless set (0 counts
    /// as 1). A guard against a server whose pages never end.
    pub fn max_pages(mut self, pages: u64) -> Self {
        self.max_pages = pages.max(1);
        self
    }

    /// The most bytes of a response body the client reads; past it a call fails with
    /// [`Error::ResponseTooLarge`] instead of buffering an unbounded answer.
    /// [`DEFAULT_MAX_RESPONSE_BYTES`] unless set. (Error bodies are read up to 64 KiB and cut there.)
    pub fn max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// Build the HTTP client from your own [`reqwest::ClientBuilder`] (proxies, root certificates,
    /// DNS resolution, connection pool settings, extra default headers...).
    ///
    /// chip-gate then sets on it, overriding any earlier setting of the same thing: the
    /// `Authorization` header (marked sensitive) and `User-Agent`, the two timeouts above, no
    /// redirects (so the key never follows one), `https_only` when the base URL is `https://`, and
    /// no proxy at all when it is plain `http://` to a loopback address (see [`Client::builder`]).
    ///
    /// A ready-built `reqwest::Client` is not accepted: reqwest cannot add a default header to a built
    /// client, and the generated API client has no hook to add one per request, so the key could not
    /// be attached without chip-gate sending requests by hand.
    pub fn http_client_builder(mut self, builder: reqwest::ClientBuilder) -> Self {
        self.http = Some(builder);
        self
    }

    /// Check the configuration and build the client. Nothing is sent.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when the key is empty or not a valid header value, the base URL is not
    /// a usable `https://` URL (or `http://` to a loopback address), or the HTTP client cannot be built
    /// (for example when no TLS backend can load).
    pub fn build(self) -> Result<Client, Error> {
        let base = parse_base_url(&self.base_url)?;
        let key = self.api_key.expose();
        if key.is_empty() {
            return Err(Error::invalid("the API key is empty"));
        }
        let mut auth = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
            Error::invalid(
                "the API key contains characters that cannot be sent in an HTTP header \
                 (CHIP keys are printable ASCII)",
            )
        })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::with_capacity(1);
        headers.insert(AUTHORIZATION, auth);

        let https = base.scheme() == "https";
        let mut http = self.http.unwrap_or_default();
        if !https {
            // Plain http is only allowed to loopback (checked above) and must never leave the
            // machine: an HTTP_PROXY / ALL_PROXY from the environment (or one set on a caller's
            // builder) would otherwise receive the key in clear text and answer for CHIP. Over
            // https a proxy only sees a CONNECT, so reqwest's proxy settings stand there.
            http = http.no_proxy();
        }
        if base
            .host_str()
            .is_some_and(chip_gate_api::is_localhost_name)
        {
            // `localhost` is loopback only if no resolver decides where it goes: pin it to
            // 127.0.0.1 and ::1, so the key (in clear text over http) never leaves the machine.
            http = chip_gate_api::pin_localhost(http);
        }
        let http = http
            .default_headers(headers)
            .user_agent(USER_AGENT)
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .https_only(https)
            .build()
            .map_err(|e| Error::invalid(format!("cannot build the HTTP client: {e}")))?;

        let base_url = base.as_str().trim_end_matches('/').to_owned();
        let hooks =
            chip_gate_api::Hooks::default().with_max_response_bytes(self.max_response_bytes);
        let api = chip_gate_api::Client::new_with_client(&base_url, http, hooks);
        Ok(Client {
            inner: Arc::new(Inner {
                api,
                base,
                base_url,
                api_key: self.api_key,
                retry: self.retry,
                max_pages: self.max_pages,
                connect_timeout: self.connect_timeout,
                timeout: self.timeout,
            }),
        })
    }
}

/// Parse and check a base URL; the result has no trailing slash in its path.
fn parse_base_url(raw: &str) -> Result<Url, Error> {
    let mut url = Url::parse(raw.trim()).map_err(|e| {
        Error::invalid(format!(
            "the base URL is not a valid URL ({e}); expected something like {DEFAULT_BASE_URL}"
        ))
    })?;
    match url.scheme() {
        "https" => {}
        "http" => {
            if !url.host_str().is_some_and(chip_gate_api::is_loopback_host) {
                let host = url.host_str().unwrap_or("a host-less URL");
                let dot = if host.ends_with('.') {
                    " (a trailing dot makes a DNS name, which a resolver may point anywhere: write \
                     `localhost` or 127.0.0.1)"
                } else {
                    ""
                };
                return Err(Error::invalid(format!(
                    "refusing to send the API key over plain http:// to {host}{dot}: anyone on the \
                     network could read it. Use https://, or http:// only to a loopback address \
                     (127.0.0.0/8, ::1, localhost) such as a local mock",
                )));
            }
        }
        other => {
            return Err(Error::invalid(format!(
                "the base URL must be https:// (or http:// to a loopback address), not {other}://"
            )));
        }
    }
    if url.host().is_none() {
        return Err(Error::invalid("the base URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::invalid(
            "the base URL must not contain a user name or password: the API key is the only credential",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(Error::invalid(
            "the base URL must not have a query (?...) or fragment (#...)",
        ));
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// A CHIP Collect API client for webhooks and the company public key.
///
/// Cheap to clone (clones share one connection pool), and safe to share between tasks. Every call goes
/// through the generated [`chip_gate_api::Client`], adding authentication, retries (see
/// [`RetryPolicy`]), typed errors and a `tracing` span.
///
/// ```no_run
/// # async fn run() -> Result<(), chip_gate::Error> {
/// let client = chip_gate::Client::from_env()?;
/// let pem = client.public_key().await?;
/// assert!(pem.starts_with("-----BEGIN"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    api: chip_gate_api::Client,
    base: Url,
    base_url: String,
    api_key: ApiKey,
    retry: RetryPolicy,
    max_pages: u64,
    connect_timeout: Duration,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url)
            .field("api_key", &self.inner.api_key)
            .field("connect_timeout", &self.inner.connect_timeout)
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.inner.retry)
            .finish()
    }
}

impl Client {
    /// Start configuring a client that authenticates with `api_key`.
    pub fn builder(api_key: impl Into<ApiKey>) -> ClientBuilder {
        ClientBuilder {
            api_key: api_key.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            retry: RetryPolicy::default(),
            max_pages: crate::pagination::DEFAULT_MAX_PAGES,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            http: None,
        }
    }

    /// A client with the default settings for `api_key` and CHIP's base URL.
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::build`].
    pub fn new(api_key: impl Into<ApiKey>) -> Result<Client, Error> {
        Self::builder(api_key).build()
    }

    /// A builder preset from the environment: the key from `CHIP_API_KEY` and, when set and not
    /// empty, the base URL from `CHIP_BASE_URL`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when `CHIP_API_KEY` is not set or not valid Unicode.
    pub fn builder_from_env() -> Result<ClientBuilder, Error> {
        let key = std::env::var(API_KEY_ENV).map_err(|_| {
            Error::invalid(format!(
                "{API_KEY_ENV} is not set (or not valid Unicode): export your CHIP secret key in it"
            ))
        })?;
        let mut builder = Self::builder(key);
        if let Ok(url) = std::env::var(BASE_URL_ENV)
            && !url.trim().is_empty()
        {
            builder = builder.base_url(url);
        }
        Ok(builder)
    }

    /// A client configured from `CHIP_API_KEY` and the optional `CHIP_BASE_URL`, with the other
    /// settings at their defaults.
    ///
    /// # Errors
    ///
    /// As [`Client::builder_from_env`] and [`ClientBuilder::build`].
    pub fn from_env() -> Result<Client, Error> {
        Self::builder_from_env()?.build()
    }

    /// The base URL requests go to, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// The retry policy in force.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    /// The most pages a [`list_all`](crate::Webhooks::list_all) walk reads.
    pub fn max_pages(&self) -> u64 {
        self.inner.max_pages
    }

    /// The company public key, as PEM text with real newlines.
    ///
    /// It verifies the `X-Signature` of purchase success callbacks (each webhook's deliveries are
    /// verified with that webhook's own [`public_key`](crate::Webhook::public_key) instead).
    ///
    /// # Errors
    ///
    /// Any [`Error`]; reads are retried as the [`RetryPolicy`] says.
    pub async fn public_key(&self) -> Result<String, Error> {
        let api = self.api();
        self.call(ops::PUBLIC_KEY, || api.public_key().send())
            .await
            .map_err(|e| e.with_hint_for(404, || self.wrong_base_url_hint()))
    }

    /// The hint of a 404 on a request that CHIP always answers (the list, the public key): the base
    /// URL is not CHIP's API root.
    pub(crate) fn wrong_base_url_hint(&self) -> String {
        let base = self.base_url();
        if base.ends_with("/api/v1") {
            format!(
                "nothing answers at {base}/webhooks/: is {base} CHIP's API (e.g. {DEFAULT_BASE_URL})?"
            )
        } else {
            format!(
                "the base URL {base} should end in /api/v1, like {DEFAULT_BASE_URL} (or \
                 http://127.0.0.1:PORT/api/v1 for the local mock)"
            )
        }
    }

    /// The generated client.
    pub(crate) fn api(&self) -> &chip_gate_api::Client {
        &self.inner.api
    }

    /// The parsed base URL (path without a trailing slash).
    pub(crate) fn base(&self) -> &Url {
        &self.inner.base
    }

    /// Run one generated-client call under the retry policy.
    pub(crate) async fn call<T, F, Fut>(&self, op: Operation, send: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<chip_gate_api::ResponseValue<T>, chip_gate_api::Error<()>>>,
    {
        call::run(&self.inner.retry, self.inner.api_key.expose(), op, send)
            .await
            .map_err(|e| e.with_hint_for(401, || self.unauthorized_hint()))
    }

    /// The hint of a 401: a local mock's key changes at every start; CHIP's is the account's.
    fn unauthorized_hint(&self) -> String {
        // Plain http:// is only ever allowed to a loopback address, where a mock runs.
        if self.inner.base.scheme() == "http" {
            LOCAL_MOCK_KEY_HINT.to_owned()
        } else {
            "check the API key (CHIP_API_KEY): a secret key from the CHIP dashboard, of the test \
             or live account you mean"
                .to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        let ok = |s: &str| parse_base_url(s).map(|u| u.to_string());
        assert_eq!(
            ok("https://gate.chip-in.asia/api/v1/").ok().as_deref(),
            Some("https://gate.chip-in.asia/api/v1")
        );
        assert!(ok("http://127.0.0.1:9/api/v1").is_ok());
        assert!(ok("http://127.8.9.10/api/v1").is_ok());
        assert!(ok("http://[::1]:80/x").is_ok());
        assert!(ok("http://LOCALHOST:3000/").is_ok());
        assert!(ok("http://example.com/api/v1").is_err());
        assert!(ok("http://10.0.0.1/api/v1").is_err());
        assert!(ok("http://localhost.example.com/").is_err());
        let dot = ok("http://localhost.:4010/api/v1")
            .err()
            .map(|e| e.to_string());
        assert!(
            dot.as_deref()
                .is_some_and(|e| e.contains("write `localhost` or 127.0.0.1")),
            "{dot:?}"
        );
        assert!(ok("ftp://127.0.0.1/").is_err());
        assert!(ok("https://user:pw@gate.chip-in.asia/").is_err());
        assert!(ok("https://gate.chip-in.asia/api/v1?x=1").is_err());
        assert!(ok("not a url").is_err());
    }

    #[test]
    fn keys_are_trimmed_and_checked() {
        assert_eq!(ApiKey::new(" k\n").expose(), "k");
        assert!(Client::new("").is_err());
        assert!(Client::new("bad\u{7}key").is_err());
        assert!(Client::new("good-key").is_ok());
    }
}
