//! Webhook subscriptions: create, list, retrieve, replace, change, delete.

use std::collections::HashSet;
use std::num::NonZeroU64;

use chip_gate_api::types;
use futures::Stream;
use uuid::Uuid;

use crate::call::ops;
use crate::client::Client;
use crate::error::Error;
use crate::pagination::{self, PageLink, Pager};
use crate::{EventName, Webhook, WebhookList};

/// The longest title CHIP accepts, in characters (from the spec's `maxLength`).
pub const MAX_TITLE_CHARS: usize = chip_gate_api::limits::WEBHOOK_CREATE_TITLE_MAX_LENGTH;

/// The longest callback URL CHIP accepts, in characters (from the spec's `maxLength`).
pub const MAX_CALLBACK_CHARS: usize = chip_gate_api::limits::WEBHOOK_CREATE_CALLBACK_MAX_LENGTH;

/// The webhook operations of a [`Client`]; get one with [`Client::webhooks`].
///
/// ```no_run
/// use chip_gate::{Client, EventName, NewWebhook};
///
/// # async fn run() -> Result<(), chip_gate::Error> {
/// let client = Client::from_env()?;
/// let webhook = client
///     .webhooks()
///     .create(
///         &NewWebhook::builder("Orders", "https://shop.example.com/chip/webhook")
///             .events([EventName::PurchasePaid, EventName::PaymentRefunded])?,
///     )
///     .await?;
/// println!("created {} - verify its deliveries with:\n{}", webhook.id, webhook.public_key);
/// client.webhooks().delete(webhook.id).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Webhooks<'a> {
    client: &'a Client,
}

impl Client {
    /// The webhook operations: create, list, retrieve, update, delete.
    pub fn webhooks(&self) -> Webhooks<'_> {
        Webhooks { client: self }
    }
}

impl<'a> Webhooks<'a> {
    /// Create a webhook (`POST /webhooks/`).
    ///
    /// Not retried once the request may have reached CHIP (see [`RetryPolicy`](crate::RetryPolicy)):
    /// on a transport error or timeout the webhook may or may not exist; list to find out.
    ///
    /// # Errors
    ///
    /// Any [`Error`]; CHIP's validation errors arrive as [`Error::Api`] with status 400. CHIP never
    /// answers a create 404, so a 404 is a wrong base URL, and its hint says so.
    pub async fn create(&self, webhook: &NewWebhook) -> Result<Webhook, Error> {
        let body = webhook.to_api()?;
        let api = self.client.api();
        self.client
            .call(ops::CREATE, || {
                api.webhooks_create().body(body.clone()).send()
            })
            .await
            .map_err(|e| e.with_hint_for(404, || self.client.wrong_base_url_hint()))
    }

    /// The first page of webhooks (`GET /webhooks/`).
    ///
    /// # Errors
    ///
    /// Any [`Error`].
    pub async fn list(&self) -> Result<WebhookList, Error> {
        let api = self.client.api();
        self.client
            .call(ops::LIST, || api.webhooks_list().send())
            .await
            .map_err(|e| e.with_hint_for(404, || self.client.wrong_base_url_hint()))
    }

    /// One page of webhooks (`GET /webhooks/?page=N`, 1-based). Use
    /// [`next_page`](Self::next_page) and [`list_next`](Self::list_next) to go on from a page, or
    /// [`list_all`](Self::list_all) to walk every page.
    ///
    /// # Errors
    ///
    /// Any [`Error`]; CHIP answers 404 for a page past the end (the hint says which: a past-the-end
    /// page, or a wrong base URL, see [`retrieve`](Self::retrieve)).
    pub async fn list_page(&self, page: NonZeroU64) -> Result<WebhookList, Error> {
        let api = self.client.api();
        match self
            .client
            .call(ops::LIST, || api.webhooks_list().page(page).send())
            .await
        {
            Ok(list) => Ok(list),
            Err(e) => Err(self.explain_404(e, || past_the_end(page.get())).await),
        }
    }

    /// The page after `page`, as a checked link, or `None` on the last page (`next` null or absent).
    ///
    /// A relative link is resolved against the list's URL. The link must name this client's host and
    /// port and the webhook list's path; its query (every parameter) is what
    /// [`list_next`](Self::list_next) sends, to this client's base URL, so the API key never goes
    /// where a link says.
    ///
    /// # Errors
    ///
    /// [`Error::Pagination`] when the link points at another server or path, or is not a link.
    pub fn next_page(&self, page: &WebhookList) -> Result<Option<PageLink>, Error> {
        let pager = Pager::new(self.client.base(), self.client.max_pages());
        page.next
            .as_deref()
            .map(|next| pager.link(next))
            .transpose()
    }

    /// The page a [`next_page`](Self::next_page) link names (`GET /webhooks/?<the link's query>`).
    ///
    /// # Errors
    ///
    /// Any [`Error`].
    pub async fn list_next(&self, link: &PageLink) -> Result<WebhookList, Error> {
        let api = self.client.api().with_link_query(link.query());
        match self
            .client
            .call(ops::LIST, || api.webhooks_list().send())
            .await
        {
            Ok(list) => Ok(list),
            Err(e) => {
                let query = link.query().to_owned();
                Err(self
                    .explain_404(e, || {
                        format!("CHIP has no page ?{query} of webhooks (past the last page?)")
                    })
                    .await)
            }
        }
    }

    /// Every webhook, as a stream that fetches one page at a time, following `next` until it is null
    /// or absent.
    ///
    /// Only one page is held in memory. Each `next` link is checked as in
    /// [`next_page`](Self::next_page). The stream yields the webhooks already read, then an
    /// [`Error::Pagination`], and ends, when a link cannot be followed safely, names a page already
    /// read, sits on a page that is empty, or would pass the client's page limit
    /// ([`ClientBuilder::max_pages`](crate::ClientBuilder::max_pages)). A failed page request (after
    /// retries) is yielded as an error and ends the stream too.
    ///
    /// The stream owns a clone of the client, so it can outlive this handle or move to another task,
    /// and it is `Unpin`, so `next()` / `try_next()` work on it directly.
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    ///
    /// # async fn run(client: chip_gate::Client) -> Result<(), chip_gate::Error> {
    /// let all: Vec<chip_gate::Webhook> = client.webhooks().list_all().try_collect().await?;
    /// println!("{} webhooks", all.len());
    /// # Ok(())
    /// # }
    /// ```
    pub fn list_all(&self) -> impl Stream<Item = Result<Webhook, Error>> + Send + Unpin + 'static {
        let client = self.client.clone();
        let pager = Pager::new(client.base(), client.max_pages());
        pagination::walk(pager, move |link: Option<PageLink>| {
            let client = client.clone();
            async move {
                let webhooks = client.webhooks();
                match link {
                    None => webhooks.list().await,
                    Some(link) => webhooks.list_next(&link).await,
                }
            }
        })
    }

    /// One webhook (`GET /webhooks/{id}/`).
    ///
    /// # Errors
    ///
    /// Any [`Error`]; an unknown id is [`Error::Api`] with status 404.
    ///
    /// CHIP answers an unknown id and a path that does not exist alike (a 404 without a body), so
    /// after a 404 the client asks once for the first page of webhooks (`GET /webhooks/`, not
    /// retried), which CHIP always answers at its API root: when that is not found either, the
    /// hint says the base URL is wrong; otherwise it says this webhook is not on the account.
    /// The same holds for every operation on a webhook id.
    pub async fn retrieve(&self, id: Uuid) -> Result<Webhook, Error> {
        let api = self.client.api();
        match self
            .client
            .call(ops::RETRIEVE, || api.webhooks_retrieve().id(id).send())
            .await
        {
            Ok(webhook) => Ok(webhook),
            Err(e) => Err(self.explain_404(e, || no_such_webhook(id)).await),
        }
    }

    /// Replace all of a webhook's settings (`PUT /webhooks/{id}/`).
    ///
    /// # Errors
    ///
    /// Any [`Error`]; a 404 is explained as in [`retrieve`](Self::retrieve).
    pub async fn update(&self, id: Uuid, webhook: &NewWebhook) -> Result<Webhook, Error> {
        let body = webhook.to_api()?;
        let api = self.client.api();
        match self
            .client
            .call(ops::UPDATE, || {
                api.webhooks_update().id(id).body(body.clone()).send()
            })
            .await
        {
            Ok(webhook) => Ok(webhook),
            Err(e) => Err(self.explain_404(e, || no_such_webhook(id)).await),
        }
    }

    /// Change only the settings set in `changes` (`PATCH /webhooks/{id}/`).
    ///
    /// Not retried once the request may have reached CHIP (see [`RetryPolicy`](crate::RetryPolicy)).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when a set value breaks CHIP's limits (nothing is sent); otherwise any
    /// [`Error`]; a 404 is explained as in [`retrieve`](Self::retrieve).
    pub async fn partial_update(
        &self,
        id: Uuid,
        changes: &WebhookChanges,
    ) -> Result<Webhook, Error> {
        let body = changes.to_api()?;
        let api = self.client.api();
        match self
            .client
            .call(ops::PARTIAL_UPDATE, || {
                api.webhooks_partial_update()
                    .id(id)
                    .body(body.clone())
                    .send()
            })
            .await
        {
            Ok(webhook) => Ok(webhook),
            Err(e) => Err(self.explain_404(e, || no_such_webhook(id)).await),
        }
    }

    /// Delete a webhook (`DELETE /webhooks/{id}/`); its deliveries stop.
    ///
    /// Retried like a read. If a first attempt deleted the webhook but its answer was lost, the retry
    /// gets a 404: the result is then [`Error::Api`] with status 404 although the webhook is gone.
    ///
    /// # Errors
    ///
    /// Any [`Error`]; a 404 is explained as in [`retrieve`](Self::retrieve).
    pub async fn delete(&self, id: Uuid) -> Result<(), Error> {
        let api = self.client.api();
        match self
            .client
            .call(ops::DELETE, || api.webhooks_delete().id(id).send())
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => Err(self.explain_404(e, || no_such_webhook(id)).await),
        }
    }

    /// `error` with the hint of its cause when it is a 404: a wrong base URL when the webhook list,
    /// which CHIP always answers at its API root, is not found either; else `otherwise()`.
    async fn explain_404(&self, error: Error, otherwise: impl FnOnce() -> String) -> Error {
        if error.status().map(|s| s.as_u16()) != Some(404) {
            return error;
        }
        let hint = if self.list_is_missing().await {
            self.client.wrong_base_url_hint()
        } else {
            otherwise()
        };
        error.with_hint_for(404, || hint)
    }

    /// Whether `GET /webhooks/` is answered 404 (one attempt, no retry): nothing at this base URL
    /// is CHIP's API. Any other answer, or none, says nothing against the base URL.
    async fn list_is_missing(&self) -> bool {
        match self.client.api().webhooks_list().send().await {
            Ok(_) => false,
            Err(chip_gate_api::Error::UnexpectedResponse(response)) => {
                response.status().as_u16() == 404
            }
            Err(chip_gate_api::Error::ErrorResponse(response)) => response.status().as_u16() == 404,
            Err(_) => false,
        }
    }
}

/// The hint of a 404 for a webhook id, on a base URL where CHIP's API answers.
fn no_such_webhook(id: Uuid) -> String {
    format!(
        "no webhook {id} on this account: it was deleted, or belongs to another account or to \
         the other mode (test or live)"
    )
}

/// The hint of a 404 for a page of the list, on a base URL where CHIP's API answers.
fn past_the_end(page: u64) -> String {
    format!("CHIP has no page {page} of webhooks: it is past the last page")
}

/// A webhook's full settings, checked against CHIP's limits: what [`Webhooks::create`] and
/// [`Webhooks::update`] send.
///
/// Start with [`NewWebhook::builder`], then choose the events with [`NewWebhookBuilder::events`] or
/// [`NewWebhookBuilder::all_events`]; both check every limit and return an [`Error::InvalidRequest`]
/// that names the problem, before anything is sent.
///
/// ```
/// use chip_gate::{EventName, NewWebhook};
///
/// let paid = NewWebhook::builder("Paid orders", "https://shop.example.com/chip")
///     .events([EventName::PurchasePaid])?;
/// assert_eq!(paid.event_names(), Some(&[EventName::PurchasePaid][..]));
///
/// let everything = NewWebhook::builder("Audit log", "https://audit.example.com/chip").all_events()?;
/// assert!(everything.is_all_events());
///
/// // Invalid settings never get as far as a request:
/// assert!(NewWebhook::builder("x", "not a url").all_events().is_err());
/// assert!(NewWebhook::builder("x", "https://a.example").events([]).is_err());
/// # Ok::<(), chip_gate::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWebhook {
    title: String,
    callback: String,
    events: Option<Vec<EventName>>,
}

/// The first half of a [`NewWebhook`]: a title and a callback URL, waiting for the events.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use = "call .events([...]) or .all_events() to finish the webhook"]
pub struct NewWebhookBuilder {
    title: String,
    callback: String,
}

impl NewWebhook {
    /// Start a webhook named `title` (at most 100 characters) that delivers to `callback` (an
    /// `http(s)://` URL of at most 500 characters). Finish it with
    /// [`events`](NewWebhookBuilder::events) or [`all_events`](NewWebhookBuilder::all_events).
    pub fn builder(title: impl Into<String>, callback: impl Into<String>) -> NewWebhookBuilder {
        NewWebhookBuilder {
            title: title.into(),
            callback: callback.into(),
        }
    }

    /// The title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// The callback URL.
    pub fn callback(&self) -> &str {
        &self.callback
    }

    /// The chosen events, or `None` for a webhook that receives every event.
    pub fn event_names(&self) -> Option<&[EventName]> {
        self.events.as_deref()
    }

    /// Whether the webhook receives every event, present and future.
    pub fn is_all_events(&self) -> bool {
        self.events.is_none()
    }

    /// The generated client's request body.
    ///
    /// CHIP's published schema requires a non-empty `events` on create and replace, while its prose
    /// lets `all_events: true` stand in for it. An all-events webhook therefore sends both:
    /// `all_events: true` and every event name this version knows, so that the request satisfies
    /// either reading (and the webhook still receives events CHIP adds later).
    ///
    /// Built with the generated builder, never a struct literal, so a property CHIP adds to the
    /// request schema (optional, with a default) needs no change here.
    fn to_api(&self) -> Result<types::WebhookCreate, Error> {
        let title = types::WebhookCreateTitle::try_from(self.title.as_str())
            .map_err(|e| Error::invalid(format!("title: {e}")))?;
        let callback = types::WebhookCreateCallback::try_from(self.callback.as_str())
            .map_err(|e| Error::invalid(format!("callback: {e}")))?;
        let events = match &self.events {
            Some(events) => events.clone(),
            None => EventName::ALL.to_vec(),
        };
        types::WebhookCreate::builder()
            .title(title)
            .callback(callback)
            .events(events)
            .all_events(self.events.is_none())
            .try_into()
            .map_err(|e: types::error::ConversionError| Error::invalid(e.to_string()))
    }
}

impl NewWebhookBuilder {
    /// Deliver exactly these events (at least one, each once).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when the title, the callback or the events break CHIP's limits.
    pub fn events(self, events: impl IntoIterator<Item = EventName>) -> Result<NewWebhook, Error> {
        let events: Vec<EventName> = events.into_iter().collect();
        check_title(&self.title)?;
        check_callback(&self.callback)?;
        check_events(&events)?;
        Ok(NewWebhook {
            title: self.title,
            callback: self.callback,
            events: Some(events),
        })
    }

    /// Deliver every event, including event types CHIP adds later.
    ///
    /// The request carries `all_events: true` together with every event name in [`EventName::ALL`]:
    /// CHIP's schema requires a non-empty `events`, and its prose says `all_events` overrides it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] when the title or the callback break CHIP's limits.
    pub fn all_events(self) -> Result<NewWebhook, Error> {
        check_title(&self.title)?;
        check_callback(&self.callback)?;
        Ok(NewWebhook {
            title: self.title,
            callback: self.callback,
            events: None,
        })
    }
}

/// Some of a webhook's settings, for [`Webhooks::partial_update`]: only the fields set here are sent.
///
/// The values are checked against CHIP's limits when the update is sent (or by
/// [`validate`](Self::validate)).
///
/// ```
/// use chip_gate::{EventName, WebhookChanges};
///
/// let rename = WebhookChanges::new().title("Orders (v2)");
/// assert!(rename.validate().is_ok());
///
/// let retarget = WebhookChanges::new()
///     .callback("https://new.example.com/chip")
///     .events([EventName::PurchasePaid, EventName::PurchaseCancelled]);
/// assert!(retarget.validate().is_ok());
///
/// assert!(WebhookChanges::new().title("x".repeat(101)).validate().is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookChanges {
    title: Option<String>,
    callback: Option<String>,
    events: Option<Vec<EventName>>,
    all_events: Option<bool>,
}

impl WebhookChanges {
    /// No changes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set a new title (at most 100 characters).
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Set a new callback URL (`http(s)://`, at most 500 characters).
    pub fn callback(mut self, callback: impl Into<String>) -> Self {
        self.callback = Some(callback.into());
        self
    }

    /// Set a new list of events (at least one, each once).
    pub fn events(mut self, events: impl IntoIterator<Item = EventName>) -> Self {
        self.events = Some(events.into_iter().collect());
        self
    }

    /// Turn delivery of every event on or off.
    pub fn all_events(mut self, all: bool) -> Self {
        self.all_events = Some(all);
        self
    }

    /// Whether no field is set (the update would change nothing).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// Check the set values against CHIP's limits.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRequest`] naming the first value that breaks a limit.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(title) = &self.title {
            check_title(title)?;
        }
        if let Some(callback) = &self.callback {
            check_callback(callback)?;
        }
        if let Some(events) = &self.events {
            check_events(events)?;
        }
        Ok(())
    }

    /// The generated client's request body.
    fn to_api(&self) -> Result<types::WebhookPatch, Error> {
        self.validate()?;
        let title = self
            .title
            .as_deref()
            .map(types::WebhookPatchTitle::try_from)
            .transpose()
            .map_err(|e| Error::invalid(format!("title: {e}")))?;
        let callback = self
            .callback
            .as_deref()
            .map(types::WebhookPatchCallback::try_from)
            .transpose()
            .map_err(|e| Error::invalid(format!("callback: {e}")))?;
        types::WebhookPatch::builder()
            .title(title)
            .callback(callback)
            .events(self.events.clone())
            .all_events(self.all_events)
            .try_into()
            .map_err(|e: types::error::ConversionError| Error::invalid(e.to_string()))
    }
}

fn check_title(title: &str) -> Result<(), Error> {
    if title.trim().is_empty() {
        return Err(Error::invalid("title: must not be empty"));
    }
    let chars = title.chars().count();
    if chars > MAX_TITLE_CHARS {
        return Err(Error::invalid(format!(
            "title: {chars} characters, CHIP allows at most {MAX_TITLE_CHARS}"
        )));
    }
    Ok(())
}

fn check_callback(callback: &str) -> Result<(), Error> {
    let chars = callback.chars().count();
    if chars > MAX_CALLBACK_CHARS {
        return Err(Error::invalid(format!(
            "callback: {chars} characters, CHIP allows at most {MAX_CALLBACK_CHARS}"
        )));
    }
    let url = url::Url::parse(callback)
        .map_err(|e| Error::invalid(format!("callback: not a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid(format!(
            "callback: must be an http:// or https:// URL, not {}://",
            url.scheme()
        )));
    }
    if url.host().is_none() {
        return Err(Error::invalid("callback: the URL has no host"));
    }
    Ok(())
}

fn check_events(events: &[EventName]) -> Result<(), Error> {
    if events.is_empty() {
        return Err(Error::invalid(
            "events: name at least one event, or use all_events",
        ));
    }
    let mut seen = HashSet::with_capacity(events.len());
    for event in events {
        if event.as_str().is_empty() {
            return Err(Error::invalid("events: an event name is empty"));
        }
        if !seen.insert(event.as_str()) {
            return Err(Error::invalid(format!(
                "events: {event} is listed more than once"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(result: Result<NewWebhook, Error>) -> String {
        match result {
            Err(Error::InvalidRequest { reason }) => reason,
            other => format!("unexpected: {other:?}"),
        }
    }

    #[test]
    fn limits_are_enforced_before_sending() {
        let ok = "https://example.com/hook";
        assert!(
            NewWebhook::builder("t".repeat(100), ok)
                .all_events()
                .is_ok()
        );
        assert!(reason(NewWebhook::builder("t".repeat(101), ok).all_events()).starts_with("title"));
        assert!(reason(NewWebhook::builder("  ", ok).all_events()).starts_with("title"));
        let long = format!("https://example.com/{}", "a".repeat(481));
        assert!(reason(NewWebhook::builder("t", long).all_events()).contains("at most 500"));
        assert!(
            reason(NewWebhook::builder("t", "ftp://example.com/").all_events()).contains("ftp")
        );
        assert!(reason(NewWebhook::builder("t", "/relative").all_events()).contains("valid URL"));
        assert!(reason(NewWebhook::builder("t", ok).events([])).contains("at least one"));
        let twice = [EventName::PurchasePaid, EventName::from("purchase.paid")];
        assert!(reason(NewWebhook::builder("t", ok).events(twice)).contains("more than once"));
        let future = EventName::from("purchase.teleported");
        assert!(NewWebhook::builder("t", ok).events([future]).is_ok());
    }

    #[test]
    fn bodies_carry_only_what_was_set() -> Result<(), Error> {
        let all = NewWebhook::builder("t", "https://example.com/").all_events()?;
        let body =
            serde_json::to_value(all.to_api()?).map_err(|e| Error::invalid(e.to_string()))?;
        let every: Vec<&str> = EventName::ALL.iter().map(EventName::as_str).collect();
        assert_eq!(
            body,
            serde_json::json!({
                "title": "t",
                "callback": "https://example.com/",
                "all_events": true,
                "events": every,
            })
        );
        let patch = WebhookChanges::new().title("new");
        let body =
            serde_json::to_value(patch.to_api()?).map_err(|e| Error::invalid(e.to_string()))?;
        assert_eq!(body, serde_json::json!({"title": "new"}));
        assert!(WebhookChanges::new().is_empty());
        assert!(WebhookChanges::new().events([]).validate().is_err());
        Ok(())
    }
}
