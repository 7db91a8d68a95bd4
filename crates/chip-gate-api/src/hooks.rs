//! The generated client's request hook: the one hand-written adjustment to what it sends.
//!
//! The generator is told (`cargo xtask generate`) that the client carries a [`Hooks`] value and that
//! this crate implements progenitor's `ClientHooks` for it. Each operation calls `pre` on the built
//! request before sending it. Today the hook does one thing: a client made with
//! [`Client::with_link_query`](crate::Client::with_link_query) replaces the generated query string
//! with the one from a pagination link, so every parameter of CHIP's `next` link is kept (the path,
//! host and scheme stay the generated ones).

use progenitor_client::{ClientHooks, ClientInfo, Error, OperationInfo};

/// Per-client adjustments applied to every request before it is sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    /// When set, the query string every request carries, replacing the generated one.
    link_query: Option<String>,
}

impl Hooks {
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
}
