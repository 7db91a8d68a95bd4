//! The generated client's request hook: the one hand-written adjustment to what it sends.
//!
//! The generator is told (`cargo xtask generate`) that the client carries a [`Hooks`] value and that
//! this crate implements progenitor's `ClientHooks` for it. Each operation calls `pre` on the built
//! request before sending it, and `exec` to send it. The hooks do two things:
//!
//! - a client made with [`Client::with_link_query`](crate::Client::with_link_query) replaces the
//!   generated query string with the one from a pagination link, so every parameter of CHIP's
//!   `next` link is kept (the path, host and scheme stay the generated ones);
//! - with [`Hooks::max_response_bytes`] set, a response body longer than that fails to read (with
//!   an error whose source is `http_body_util::LengthLimitError`) instead of filling memory.

use progenitor_client::{ClientHooks, ClientInfo, Error, OperationInfo};

/// Per-client adjustments applied to every request before it is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    /// When set, the query string every request carries, replacing the generated one.
    link_query: Option<String>,
    /// When set, the most bytes of a response body that are read.
    max_response_bytes: Option<usize>,
}

impl Hooks {
    /// Hooks that cap every response body at `max` bytes.
    pub fn with_max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = Some(max);
        self
    }

    /// The cap on response bodies, if any.
    pub fn max_response_bytes(&self) -> Option<usize> {
        self.max_response_bytes
    }

    /// The query string that replaces the generated one, if any.
    pub fn link_query(&self) -> Option<&str> {
        self.link_query.as_deref()
    }
}

impl crate::Client {
    /// A client at `baseurl` that sends requests with `http` and adjusts nothing.
    pub fn from_http(baseurl: &str, http: reqwest::Client) -> Self {
        Self::new_with_client(baseurl, http, Hooks::default())
    }

    /// The hooks this client applies.
    pub fn hooks(&self) -> &Hooks {
        self.inner()
    }

    /// A copy of this client (same base URL and HTTP client) whose requests carry exactly `query`
    /// as their query string: the parameters of a pagination link, `page=2&page_size=50` say.
    ///
    /// Use it only with the list operation, for a link whose host and path were checked to be this
    /// client's: the hook keeps the generated scheme, host and path and replaces only the query.
    pub fn with_link_query(&self, query: impl Into<String>) -> Self {
        Self::new_with_client(
            self.baseurl(),
            self.client().clone(),
            Hooks {
                link_query: Some(query.into()),
                ..self.inner().clone()
            },
        )
    }
}

impl ClientHooks<Hooks> for crate::Client {
    async fn pre<E>(
        &self,
        request: &mut reqwest::Request,
        _info: &OperationInfo,
    ) -> Result<(), Error<E>> {
        if let Some(query) = self.inner().link_query() {
            request
                .url_mut()
                .set_query(Some(query).filter(|q| !q.is_empty()));
        }
        Ok(())
    }

    async fn exec(
        &self,
        request: reqwest::Request,
        _info: &OperationInfo,
    ) -> reqwest::Result<reqwest::Response> {
        let response = self.client().execute(request).await?;
        Ok(match self.inner().max_response_bytes() {
            Some(max) => limit_body(response, max),
            None => response,
        })
    }
}

/// The same response, whose body fails to read past `max` bytes.
fn limit_body(response: reqwest::Response, max: usize) -> reqwest::Response {
    let url = response.url().clone();
    let (parts, body) = http::Response::<reqwest::Body>::from(response).into_parts();
    let limited = reqwest::Body::wrap(http_body_util::Limited::new(body, max));
    let mut builder = http::Response::builder()
        .status(parts.status)
        .version(parts.version);
    if let Some(headers) = builder.headers_mut() {
        *headers = parts.headers;
    }
    let builder = reqwest::ResponseBuilderExt::url(builder, url);
    match builder.body(limited) {
        Ok(rebuilt) => reqwest::Response::from(rebuilt),
        // Unreachable with parts taken from a valid response; if it ever happens, a bodiless 502
        // is the safe answer: an error, never a success and never unbounded memory.
        Err(_) => {
            let mut failed = http::Response::new(reqwest::Body::from(Vec::new()));
            *failed.status_mut() = http::StatusCode::BAD_GATEWAY;
            reqwest::Response::from(failed)
        }
    }
}
