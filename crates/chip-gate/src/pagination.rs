//! Following CHIP's page links: checking a `next` link, and a stream over a page-fetching closure.
//!
//! CHIP paginates lists Django REST Framework style: each page has `next` and `previous`, absolute
//! URLs such as `https://gate.chip-in.asia/api/v1/webhooks/?page=2`, or null (or nothing) at either
//! end. A `next` link is followed as the link it is: a relative link is resolved against the list's
//! URL, and every query parameter it carries is sent. What is never taken from the link is where the
//! request goes: the link must name the client's own host and port and the list's own path, and the
//! request is then sent to the client's base URL (so on its scheme) with the link's query. The API
//! key therefore never reaches another server, port, scheme or path. (A link whose scheme differs
//! from the base URL's is accepted, because servers behind a TLS-terminating proxy often write
//! `http://` links; the request still goes out on the base URL's scheme.)
//!
//! A walk stops with [`Error::Pagination`] when a link repeats a page already read, when a page is
//! empty yet links to a next one, or after the client's page limit; the webhooks already read are
//! handed out first. This module knows nothing of the client: the stream calls a closure for each page.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::future::Future;
use std::num::NonZeroU64;

use futures::Stream;
use url::Url;

use crate::error::Error;
use crate::{Webhook, WebhookList};

/// The default for [`ClientBuilder::max_pages`](crate::ClientBuilder::max_pages).
pub const DEFAULT_MAX_PAGES: u64 = 1_000;

/// A checked `next` link from a webhook list page: the query to send for the following page.
///
/// Get one from [`Webhooks::next_page`](crate::Webhooks::next_page) and fetch its page with
/// [`Webhooks::list_next`](crate::Webhooks::list_next).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageLink {
    /// The link's query string, exactly as given (without `?`); empty when it had none.
    query: String,
    /// The link as CHIP wrote it, for messages.
    raw: String,
}

impl PageLink {
    /// The link's query string (without `?`), sent as it is with the next request.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The link's `page` number, when it carries exactly one that is a positive whole number.
    pub fn page(&self) -> Option<NonZeroU64> {
        let mut pages = url::form_urlencoded::parse(self.query.as_bytes())
            .filter(|(key, _)| key == "page")
            .map(|(_, value)| value.parse::<NonZeroU64>().ok());
        match (pages.next(), pages.next()) {
            (Some(page), None) => page,
            _ => None,
        }
    }

    /// The query with its parameters in a fixed order, so that `page=2&size=5` and
    /// `size=5&page=2` count as one page.
    fn canonical(&self) -> String {
        canonical_query(&self.query)
    }
}

impl fmt::Display for PageLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    pairs.sort();
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// Reads `next` links against a client's base URL and remembers what a walk has read.
#[derive(Clone, Debug)]
pub(crate) struct Pager {
    /// `{base}/webhooks/`: what relative links resolve against, and the only path a link may name.
    list_url: Url,
    /// The canonical queries of the pages read so far.
    seen: HashSet<String>,
    /// How many pages were read.
    read: u64,
    /// The most pages one walk reads.
    max_pages: u64,
}

impl Pager {
    /// A pager for the webhook list under `base` (a base URL whose path has no trailing slash).
    pub(crate) fn new(base: &Url, max_pages: u64) -> Self {
        let mut list_url = base.clone();
        list_url.set_path(&format!("{}/webhooks/", base.path().trim_end_matches('/')));
        list_url.set_query(None);
        Pager {
            list_url,
            seen: HashSet::new(),
            read: 0,
            max_pages: max_pages.max(1),
        }
    }

    /// Check `next` (absolute or relative) and return the query to request.
    pub(crate) fn link(&self, next: &str) -> Result<PageLink, Error> {
        let url = self.list_url.join(next.trim()).map_err(|e| {
            Error::pagination(format!("`next` is not a usable link ({e}): {next:?}"))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::pagination(format!(
                "`next` is not an http(s) link: {next:?}"
            )));
        }
        let base = &self.list_url;
        let same_port = if url.scheme() == base.scheme() {
            url.port_or_known_default() == base.port_or_known_default()
        } else {
            url.port() == base.port()
        };
        if url.host() != base.host() || !same_port {
            return Err(Error::pagination(format!(
                "`next` points at another server than the client's base URL: {next:?}"
            )));
        }
        if url.path().trim_end_matches('/') != base.path().trim_end_matches('/') {
            return Err(Error::pagination(format!(
                "`next` is not a webhook list link (expected the path {}): {next:?}",
                base.path()
            )));
        }
        Ok(PageLink {
            query: url.query().unwrap_or_default().to_owned(),
            raw: next.to_owned(),
        })
    }

    /// Record that the page requested with `requested` (`None`: the first page, with no query) was
    /// read and holds `page`; return the link to read next, if any.
    pub(crate) fn after(
        &mut self,
        requested: Option<&PageLink>,
        page: &WebhookList,
    ) -> Result<Option<PageLink>, Error> {
        self.read += 1;
        match requested {
            Some(link) => {
                self.seen.insert(link.canonical());
            }
            None => {
                // CHIP's first page is both the list without a query and `?page=1`.
                self.seen.insert(String::new());
                self.seen.insert(canonical_query("page=1"));
            }
        }
        let Some(next) = page.next.as_deref() else {
            return Ok(None);
        };
        if page.results.is_empty() {
            return Err(Error::pagination(format!(
                "page {} is empty yet links to a next page ({next:?}); stopping instead of \
                 following empty pages",
                self.read
            )));
        }
        let link = self.link(next)?;
        if self.seen.contains(&link.canonical()) {
            let which = link
                .page()
                .map_or_else(|| format!("{next:?}"), |n| format!("page {n}"));
            return Err(Error::pagination(format!(
                "after page {}, `next` names {which} again, a page already read; stopping instead \
                 of looping",
                self.read
            )));
        }
        if self.read >= self.max_pages {
            return Err(Error::pagination(format!(
                "stopped after {} pages, the client's page limit (ClientBuilder::max_pages); \
                 the next link was {next:?}",
                self.read
            )));
        }
        Ok(Some(link))
    }
}

/// Where a [`walk`] stream is.
struct State<F> {
    pager: Pager,
    fetch: F,
    /// The webhooks of the page being handed out.
    buffer: VecDeque<Webhook>,
    /// What to do once the buffer is empty.
    then: Then,
}

enum Then {
    /// Fetch this page (`None`: the first page).
    Fetch(Option<PageLink>),
    /// Yield this error, then end.
    Fail(Error),
    /// End.
    Stop,
}

/// Every webhook of a list, one page in memory at a time: `fetch(None)` reads the first page,
/// `fetch(Some(link))` the page a checked `next` link names.
pub(crate) fn walk<F, Fut>(
    pager: Pager,
    fetch: F,
) -> impl Stream<Item = Result<Webhook, Error>> + Send + Unpin + 'static
where
    F: FnMut(Option<PageLink>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<WebhookList, Error>> + Send + 'static,
{
    let state = State {
        pager,
        fetch,
        buffer: VecDeque::new(),
        then: Then::Fetch(None),
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(webhook) = state.buffer.pop_front() {
                return Some((Ok(webhook), state));
            }
            match std::mem::replace(&mut state.then, Then::Stop) {
                Then::Stop => return None,
                Then::Fail(err) => return Some((Err(err), state)),
                Then::Fetch(link) => {
                    let list = match (state.fetch)(link.clone()).await {
                        Ok(list) => list,
                        Err(err) => return Some((Err(err), state)),
                    };
                    state.then = match state.pager.after(link.as_ref(), &list) {
                        Ok(None) => Then::Stop,
                        Ok(Some(next)) => Then::Fetch(Some(next)),
                        Err(err) => Then::Fail(err),
                    };
                    state.buffer = list.results.into();
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pager(base: &str, max_pages: u64) -> Pager {
        match Url::parse(base) {
            Ok(url) => Pager::new(&url, max_pages),
            Err(e) => panic!("bad test URL {base}: {e}"),
        }
    }

    fn webhook(n: u32) -> Webhook {
        match serde_json::from_value(serde_json::json!({
            "id": format!("00000000-0000-4000-8000-{n:012}"),
            "title": "t",
            "callback": "https://shop.example.com/",
            "public_key": "k",
        })) {
            Ok(w) => w,
            Err(e) => panic!("{e}"),
        }
    }

    fn list(results: usize, next: Option<&str>) -> WebhookList {
        let results: Vec<Webhook> = (0..results).map(|i| webhook(i as u32)).collect();
        match serde_json::from_value(serde_json::json!({"results": results, "next": next})) {
            Ok(page) => page,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn links_resolve_and_keep_every_parameter() {
        let p = pager("https://gate.chip-in.asia/api/v1", 10);
        let query = |next: &str| p.link(next).map(|l| l.query().to_owned()).ok();
        for (next, expected) in [
            (
                "https://gate.chip-in.asia/api/v1/webhooks/?page=2",
                "page=2",
            ),
            (
                "https://GATE.chip-in.asia:443/api/v1/webhooks?page=7",
                "page=7",
            ),
            ("http://gate.chip-in.asia/api/v1/webhooks/?page=3", "page=3"),
            ("/api/v1/webhooks/?page=2", "page=2"),
            ("?page=2&page_size=50", "page=2&page_size=50"),
            (
                "https://gate.chip-in.asia/api/v1/webhooks/?cursor=abc%3D&x=1",
                "cursor=abc%3D&x=1",
            ),
        ] {
            assert_eq!(query(next).as_deref(), Some(expected), "{next}");
        }
        assert_eq!(
            p.link("?page=2&page_size=50").ok().and_then(|l| l.page()),
            NonZeroU64::new(2)
        );
        assert_eq!(p.link("?cursor=x").ok().and_then(|l| l.page()), None);
    }

    #[test]
    fn links_elsewhere_are_refused() {
        let p = pager("https://gate.chip-in.asia/api/v1", 10);
        for bad in [
            "https://evil.example/api/v1/webhooks/?page=2",
            "//evil.example/api/v1/webhooks/?page=2",
            "https://gate.chip-in.asia:8443/api/v1/webhooks/?page=2",
            "https://gate.chip-in.asia/api/v2/webhooks/?page=2",
            "https://gate.chip-in.asia/api/v1/purchases/?page=2",
            "/webhooks/?page=2",
            "ftp://gate.chip-in.asia/api/v1/webhooks/?page=2",
            "http://[::1",
        ] {
            assert!(
                matches!(p.link(bad), Err(Error::Pagination { .. })),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn a_walk_stops_on_repeats_empty_pages_and_the_limit() {
        let mut p = pager("https://gate.chip-in.asia/api/v1", 3);
        let first = p.after(None, &list(2, Some("?page=2")));
        let Ok(Some(second)) = first else {
            panic!("{first:?}")
        };
        // Page 2 links back to page 1 (in another spelling): a repeat.
        let again = p.clone().after(Some(&second), &list(2, Some("?page=1")));
        assert!(
            matches!(&again, Err(Error::Pagination { reason }) if reason.contains("again")),
            "{again:?}"
        );
        // An empty page with a next link.
        let empty = p.clone().after(Some(&second), &list(0, Some("?page=3")));
        assert!(
            matches!(&empty, Err(Error::Pagination { reason }) if reason.contains("empty")),
            "{empty:?}"
        );
        // The limit: three pages read, a fourth is not fetched.
        let third = match p.after(Some(&second), &list(2, Some("?page=3"))) {
            Ok(Some(link)) => link,
            other => panic!("{other:?}"),
        };
        let limit = p.after(Some(&third), &list(2, Some("?page=4")));
        assert!(
            matches!(&limit, Err(Error::Pagination { reason }) if reason.contains("page limit")),
            "{limit:?}"
        );
        // The last page ends the walk, whatever was read before.
        let mut q = pager("https://gate.chip-in.asia/api/v1", 3);
        assert!(matches!(q.after(None, &list(0, None)), Ok(None)));
    }
}
