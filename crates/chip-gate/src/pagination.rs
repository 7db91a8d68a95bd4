//! Following CHIP's page links.
//!
//! CHIP paginates lists Django REST Framework style: each page has `next` and `previous`, absolute
//! URLs such as `https://gate.chip-in.asia/api/v1/webhooks/?page=2`, or null at either end. The client
//! never requests such a URL as given: it checks that the URL lies under its own base URL at
//! `/webhooks/`, takes the `page` number from it and asks the generated client for that page at its
//! base URL. A link to another host, path or port can therefore never receive the API key. (The scheme
//! is not compared, because servers behind a TLS-terminating proxy often write `http://` links.)

use std::collections::VecDeque;
use std::num::NonZeroU64;

use futures::Stream;
use url::Url;

use crate::Webhook;
use crate::client::Client;
use crate::error::Error;

/// The page number named by `next`, a link found on a webhook page, checked against `base`.
pub(crate) fn page_number(base: &Url, next: &str) -> Result<NonZeroU64, Error> {
    let url = Url::parse(next)
        .map_err(|e| Error::pagination(format!("`next` is not an absolute URL ({e}): {next:?}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::pagination(format!(
            "`next` is not an http(s) URL: {next:?}"
        )));
    }
    let same_port = if url.scheme() == base.scheme() {
        url.port_or_known_default() == base.port_or_known_default()
    } else {
        url.port() == base.port()
    };
    if url.host() != base.host() || !same_port {
        return Err(Error::pagination(format!(
            "`next` points at another server than the client's base URL {}: {next:?}",
            base.as_str()
        )));
    }
    let expected = format!("{}/webhooks", base.path().trim_end_matches('/'));
    if url.path().trim_end_matches('/') != expected {
        return Err(Error::pagination(format!(
            "`next` is not a webhook list URL (expected the path {expected}/): {next:?}"
        )));
    }
    let mut pages = url.query_pairs().filter(|(key, _)| key == "page");
    let page = match (pages.next(), pages.next()) {
        (Some((_, value)), None) => value,
        (None, _) => {
            return Err(Error::pagination(format!(
                "`next` has no `page` number: {next:?}"
            )));
        }
        (Some(_), Some(_)) => {
            return Err(Error::pagination(format!(
                "`next` has more than one `page` number: {next:?}"
            )));
        }
    };
    page.parse::<NonZeroU64>().map_err(|_| {
        Error::pagination(format!(
            "`next` has a `page` that is not a positive whole number: {next:?}"
        ))
    })
}

/// Where a [`list_all`] stream is.
struct State {
    client: Client,
    /// The webhooks of the page being handed out.
    buffer: VecDeque<Webhook>,
    /// The number of the page read last (the first request, without `page`, reads page 1).
    last: u64,
    /// What to do once the buffer is empty.
    then: Then,
}

enum Then {
    /// Fetch this page (`None`: the first page, without a `page` parameter).
    Fetch(Option<NonZeroU64>),
    /// Yield this error, then end.
    Fail(Error),
    /// End.
    Stop,
}

/// Every webhook, one page in memory at a time; see
/// [`Webhooks::list_all`](crate::Webhooks::list_all).
pub(crate) fn list_all(
    client: Client,
) -> impl Stream<Item = Result<Webhook, Error>> + Send + Unpin + 'static {
    let state = State {
        client,
        buffer: VecDeque::new(),
        last: 0,
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
                Then::Fetch(page) => {
                    let webhooks = state.client.webhooks();
                    let result = match page {
                        None => webhooks.list().await,
                        Some(page) => webhooks.list_page(page).await,
                    };
                    let list = match result {
                        Ok(list) => list,
                        Err(err) => return Some((Err(err), state)),
                    };
                    let current = page.map_or(1, NonZeroU64::get);
                    state.last = current;
                    state.then = match webhooks.next_page(&list) {
                        Ok(None) => Then::Stop,
                        Ok(Some(next)) if next.get() <= state.last => {
                            Then::Fail(Error::pagination(format!(
                                "after page {current}, `next` names page {next} again; \
                                 stopping instead of looping"
                            )))
                        }
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

    fn base(s: &str) -> Url {
        match Url::parse(s) {
            Ok(url) => url,
            Err(e) => panic!("bad test URL {s}: {e}"),
        }
    }

    #[test]
    fn page_numbers_only_from_our_own_list_urls() {
        let b = base("https://gate.chip-in.asia/api/v1");
        let page = |next: &str| page_number(&b, next).map(NonZeroU64::get);
        assert_eq!(
            page("https://gate.chip-in.asia/api/v1/webhooks/?page=2").ok(),
            Some(2)
        );
        assert_eq!(
            page("https://GATE.chip-in.asia:443/api/v1/webhooks?page=7").ok(),
            Some(7)
        );
        assert_eq!(
            page("http://gate.chip-in.asia/api/v1/webhooks/?page=3").ok(),
            Some(3)
        );
        assert_eq!(
            page("https://gate.chip-in.asia/api/v1/webhooks/?foo=1&page=4").ok(),
            Some(4)
        );
        for bad in [
            "https://evil.example/api/v1/webhooks/?page=2",
            "https://gate.chip-in.asia:8443/api/v1/webhooks/?page=2",
            "https://gate.chip-in.asia/api/v2/webhooks/?page=2",
            "https://gate.chip-in.asia/api/v1/purchases/?page=2",
            "https://gate.chip-in.asia/api/v1/webhooks/",
            "https://gate.chip-in.asia/api/v1/webhooks/?page=0",
            "https://gate.chip-in.asia/api/v1/webhooks/?page=-1",
            "https://gate.chip-in.asia/api/v1/webhooks/?page=two",
            "https://gate.chip-in.asia/api/v1/webhooks/?page=2&page=3",
            "/api/v1/webhooks/?page=2",
            "ftp://gate.chip-in.asia/api/v1/webhooks/?page=2",
        ] {
            assert!(
                matches!(page_number(&b, bad), Err(Error::Pagination { .. })),
                "{bad} was accepted"
            );
        }
    }
}
