//! The API routes under `/api/v1`: the seven operations, answered as CHIP documents them (or with
//! its variations, see [`Variant`]), plus the response helpers they share.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::delivery::unix_now;
use crate::store::Webhook;
use crate::validate::{self, ErrorBody, Mode, error_body};
use crate::{Shared, Variant, read, write};

/// A JSON error answer.
pub(crate) fn error(status: StatusCode, body: ErrorBody) -> Response {
    (status, Json(Value::Object(body))).into_response()
}

/// CHIP's 404: declared with no content, so no body at all.
pub(crate) fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

/// A 500 that names what failed (never a secret).
pub(crate) fn internal(e: &dyn std::fmt::Display) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        error_body("__all__", &format!("Mock failure: {e}"), "server_error"),
    )
}

fn parse_id(path: Result<Path<String>, PathRejection>) -> Option<Uuid> {
    let Path(raw) = path.ok()?;
    Uuid::parse_str(&raw).ok()
}

fn answer(status: StatusCode, webhook: &Webhook, variant: Variant) -> Response {
    (status, Json(webhook.to_json(variant))).into_response()
}

fn limit_reached(max: usize) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        error_body(
            "__all__",
            &format!("This mock holds at most {max} webhooks; delete some first."),
            "limit",
        ),
    )
}

pub(crate) async fn create(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let settings = match validate::parse_object(&body)
        .and_then(|map| validate::validate(&map, Mode::Whole, None))
    {
        Ok(s) => s,
        Err(errors) => return error(StatusCode::BAD_REQUEST, errors),
    };
    let max = shared.limits.max_webhooks;
    if read(&shared.store).len() >= max {
        return limit_reached(max);
    }
    let key = match shared.keys.take().await {
        Ok(k) => k,
        Err(e) => return internal(&e),
    };
    let now = unix_now();
    let webhook = Webhook {
        id: Uuid::new_v4(),
        title: settings.title,
        all_events: settings.all_events,
        events: settings.events,
        callback: settings.callback,
        created_on: now,
        updated_on: now,
        key,
    };
    let mut store = write(&shared.store);
    // Checked again: other creates may have finished while the key was being made.
    if store.len() >= max {
        return limit_reached(max);
    }
    let resp = answer(StatusCode::CREATED, &webhook, shared.variant);
    store.insert(webhook);
    resp
}

pub(crate) async fn retrieve(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Some(id) = parse_id(path) else {
        return not_found();
    };
    match read(&shared.store).get(&id) {
        Some(w) => answer(StatusCode::OK, w, shared.variant),
        None => not_found(),
    }
}

/// PUT and PATCH. The webhook is looked up, the body validated and merged, and the change stored
/// under one write lock, so concurrent changes never undo each other.
fn change(shared: &Shared, id: Option<Uuid>, body: &[u8], mode: Mode) -> Response {
    let Some(id) = id else {
        return not_found();
    };
    let parsed = validate::parse_object(body);
    let mut store = write(&shared.store);
    let Some(w) = store.get_mut(&id) else {
        return not_found();
    };
    let settings = match parsed.and_then(|map| validate::validate(&map, mode, Some(w))) {
        Ok(s) => s,
        Err(errors) => return error(StatusCode::BAD_REQUEST, errors),
    };
    settings.apply(w, unix_now());
    answer(StatusCode::OK, w, shared.variant)
}

pub(crate) async fn update(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    change(&shared, parse_id(path), &body, Mode::Whole)
}

pub(crate) async fn partial_update(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    change(&shared, parse_id(path), &body, Mode::Partial)
}

pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Some(id) = parse_id(path) else {
        return not_found();
    };
    match write(&shared.store).remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(),
    }
}

/// Where page links point: the host the client used (as Django REST Framework builds them from
/// the request), or the mock's own address when the `Host` header is missing or not an authority.
fn link_root(shared: &Shared, headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
        .map_or_else(|| shared.root_url.clone(), |a| format!("http://{a}"))
}

pub(crate) async fn list(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut page: u64 = 1;
    let requested = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "page")
            .map(|(_, v)| v.into_owned())
    });
    if let Some(v) = requested {
        match v.trim().parse::<u64>() {
            Ok(n) if n >= 1 => page = n,
            // DRF's "Invalid page.": a 404, bodiless as CHIP documents its 404.
            _ => return not_found(),
        }
    }
    let size = shared.page_size.max(1);
    let store = read(&shared.store);
    let total = store.len();
    let pages = total.div_ceil(size).max(1) as u64;
    if page > pages {
        return not_found();
    }
    let skip = usize::try_from(page - 1)
        .unwrap_or(usize::MAX)
        .saturating_mul(size);
    let results: Vec<Value> = store
        .iter()
        .skip(skip)
        .take(size)
        .map(|w| w.to_json(shared.variant))
        .collect();
    drop(store);
    let root = match shared.variant {
        Variant::Documented => link_root(&shared, &headers),
        Variant::Variations => String::new(),
    };
    let link = |n: u64| json!(format!("{root}/api/v1/webhooks/?page={n}"));
    let next = (page < pages).then(|| link(page + 1));
    let previous = (page > 1).then(|| link(page - 1));
    let mut body = Map::new();
    body.insert("results".into(), Value::Array(results));
    match shared.variant {
        Variant::Documented => {
            body.insert("next".into(), next.unwrap_or(Value::Null));
            body.insert("previous".into(), previous.unwrap_or(Value::Null));
        }
        Variant::Variations => {
            if let Some(next) = next {
                body.insert("next".into(), next);
            }
        }
    }
    Json(Value::Object(body)).into_response()
}

pub(crate) async fn public_key(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.keys.company().public_pem()).into_response()
}
