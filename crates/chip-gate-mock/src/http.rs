//! The HTTP side: the API routes under `/api/v1`, the `/__mock` control routes, auth, faults,
//! and the accept loop (which can drop a connection on purpose).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chip_gate_api::types::{EventName, Webhook, WebhookList};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::delivery::unix_now;
use crate::faults::{Fault, FaultState, Faults};
use crate::store::{self, ErrorBody, Mode, Stored, error_body};
use crate::{Shared, lock, read, write};

/// Lets a handler close its own connection without answering.
#[derive(Clone)]
struct ConnKill(Arc<Notify>);

fn error(status: StatusCode, body: ErrorBody) -> Response {
    (status, Json(Value::Object(body))).into_response()
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        error_body("__all__", "Not found.", "not_found"),
    )
}

fn internal(e: &dyn std::fmt::Display) -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        error_body("__all__", &format!("Mock failure: {e}"), "server_error"),
    )
}

/// The whole application.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/webhooks/", get(list).post(create))
        .route(
            "/webhooks/{id}/",
            get(retrieve)
                .put(update)
                .patch(partial_update)
                .delete(delete),
        )
        .route("/public_key/", get(public_key))
        .fallback(|| async { not_found() })
        .layer(middleware::from_fn_with_state(shared.clone(), require_key))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            inject_faults,
        ));
    let control = Router::new()
        .route("/trigger", post(control_trigger))
        .route("/deliveries", get(control_deliveries))
        .route("/faults", get(control_get_faults).post(control_set_faults))
        .route("/reset", post(control_reset))
        .fallback(|| async { not_found() })
        .layer(middleware::from_fn_with_state(shared.clone(), require_key));
    Router::new()
        .nest("/api/v1", api)
        .nest("/__mock", control)
        .route(
            "/__mock/health",
            get(|| async { Json(json!({"ok": true})) }),
        )
        .fallback(|| async { not_found() })
        .with_state(shared)
}

fn key_matches(given: &str, expected: &str) -> bool {
    // Constant-time comparison: the mock's key is a secret like any other.
    aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), expected.as_bytes()).is_ok()
}

async fn require_key(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let problem = match header {
        None => Some((
            "Authentication credentials were not provided.",
            "not_authenticated",
        )),
        Some(value) => {
            let token = value
                .split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim());
            match token {
                Some(token) if key_matches(token, &shared.api_key) => None,
                _ => Some(("Invalid token.", "authentication_failed")),
            }
        }
    };
    match problem {
        None => next.run(req).await,
        Some((message, code)) => {
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                error_body("__all__", message, code),
            );
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

async fn inject_faults(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let decision = lock(&shared.faults).next();
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let kill = req.extensions().get::<ConnKill>().cloned();
    match decision.fault {
        None => next.run(req).await,
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(Fault::DelayMs(ms)) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            next.run(req).await
        }
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status.is_informational()
                || status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED
            {
                status.into_response()
            } else {
                error(
                    status,
                    error_body(
                        "__all__",
                        &format!("Injected fault: the mock answered {}.", status.as_u16()),
                        "injected_fault",
                    ),
                )
            }
        }
        Some(Fault::TooMany { retry_after }) => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                error_body(
                    "__all__",
                    &format!("Request was throttled. Expected available in {retry_after} seconds."),
                    "throttled",
                ),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            resp
        }
        Some(Fault::Drop) => drop_connection(kill).await,
        Some(Fault::DropAfterHandling) => {
            let _handled = next.run(req).await;
            drop_connection(kill).await
        }
    }
}

async fn drop_connection(kill: Option<ConnKill>) -> Response {
    match kill {
        Some(ConnKill(notify)) => {
            notify.notify_one();
            // The connection task drops this future together with the connection.
            std::future::pending::<Response>().await
        }
        None => internal(&"cannot drop this connection"),
    }
}

// ---------------------------------------------------------------- the API

fn parse_id(path: Result<Path<String>, PathRejection>) -> Option<Uuid> {
    let Path(raw) = path.ok()?;
    Uuid::parse_str(&raw).ok()
}

async fn create(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let settings =
        match store::parse_object(&body).and_then(|map| store::validate(&map, Mode::Whole, None)) {
            Ok(s) => s,
            Err(errors) => return error(StatusCode::BAD_REQUEST, errors),
        };
    let key = match shared.keys.take().await {
        Ok(k) => k,
        Err(e) => return internal(&e),
    };
    let now = unix_now();
    let webhook = Webhook {
        all_events: settings.all_events,
        callback: settings.callback,
        created_on: Some(now),
        events: Some(settings.events),
        id: Uuid::new_v4(),
        public_key: key.public_pem().to_owned(),
        title: settings.title,
        type_: Some("webhook".into()),
        updated_on: Some(now),
    };
    write(&shared.store).insert(Stored {
        webhook: webhook.clone(),
        key,
    });
    (StatusCode::CREATED, Json(webhook)).into_response()
}

async fn retrieve(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Some(id) = parse_id(path) else {
        return not_found();
    };
    match read(&shared.store).get(&id) {
        Some(stored) => Json(&stored.webhook).into_response(),
        None => not_found(),
    }
}

async fn change(shared: &Shared, id: Option<Uuid>, body: &[u8], mode: Mode) -> Response {
    let Some(id) = id else {
        return not_found();
    };
    let Some(existing) = read(&shared.store).get(&id).map(|s| s.webhook.clone()) else {
        return not_found();
    };
    let settings = match store::parse_object(body)
        .and_then(|map| store::validate(&map, mode, Some(&existing)))
    {
        Ok(s) => s,
        Err(errors) => return error(StatusCode::BAD_REQUEST, errors),
    };
    let mut store = write(&shared.store);
    let Some(stored) = store.get_mut(&id) else {
        return not_found();
    };
    let w = &mut stored.webhook;
    w.title = settings.title;
    w.all_events = settings.all_events;
    w.events = Some(settings.events);
    w.callback = settings.callback;
    // Strictly later than before, so a change is always visible even within one second.
    w.updated_on = Some(unix_now().max(w.updated_on.unwrap_or(0).saturating_add(1)));
    Json(&*w).into_response()
}

async fn update(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    change(&shared, parse_id(path), &body, Mode::Whole).await
}

async fn partial_update(
    State(shared): State<Arc<Shared>>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    change(&shared, parse_id(path), &body, Mode::Partial).await
}

async fn delete(
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

async fn list(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let mut page: u64 = 1;
    let requested = query.as_deref().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "page")
            .map(|(_, v)| v.into_owned())
    });
    if let Some(v) = requested {
        match v.trim().parse::<u64>() {
            Ok(n) if n >= 1 => page = n,
            _ => {
                return error(
                    StatusCode::NOT_FOUND,
                    error_body("__all__", "Invalid page.", "not_found"),
                );
            }
        }
    }
    let size = shared.page_size.max(1);
    let store = read(&shared.store);
    let total = store.len();
    let pages = total.div_ceil(size).max(1) as u64;
    if page > pages {
        return error(
            StatusCode::NOT_FOUND,
            error_body("__all__", "Invalid page.", "not_found"),
        );
    }
    let skip = usize::try_from(page - 1)
        .unwrap_or(usize::MAX)
        .saturating_mul(size);
    let results: Vec<Webhook> = store
        .iter()
        .skip(skip)
        .take(size)
        .map(|s| s.webhook.clone())
        .collect();
    drop(store);
    let link = |n: u64| format!("{}/webhooks/?page={n}", shared.base_url);
    let body = WebhookList {
        next: (page < pages).then(|| link(page + 1)),
        previous: (page > 1).then(|| link(page - 1)),
        results,
    };
    Json(body).into_response()
}

async fn public_key(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.keys.company().public_pem()).into_response()
}

// ---------------------------------------------------------------- /__mock

async fn control_trigger(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let map: Map<String, Value> = match store::parse_object(&body) {
        Ok(m) => m,
        Err(errors) => return error(StatusCode::BAD_REQUEST, errors),
    };
    let event = match map.get("event") {
        Some(Value::String(s)) if !s.trim().is_empty() => EventName::from(s.trim()),
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                error_body("event", "Must be a non-empty event name.", "invalid"),
            );
        }
        None => {
            return error(
                StatusCode::BAD_REQUEST,
                error_body("event", "This field is required.", "required"),
            );
        }
    };
    let object_id = match map.get("object_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match Uuid::parse_str(s) {
            Ok(id) => Some(id),
            Err(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    error_body("object_id", "Must be a valid UUID.", "invalid"),
                );
            }
        },
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                error_body("object_id", "Must be a valid UUID.", "invalid"),
            );
        }
    };
    match crate::delivery::trigger(&shared, event, object_id).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => internal(&e),
    }
}

async fn control_deliveries(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.engine.records()).into_response()
}

async fn control_get_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(lock(&shared.faults).faults()).into_response()
}

async fn control_set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                error_body("__all__", &format!("Invalid faults: {e}"), "invalid"),
            );
        }
    };
    if let Err(message) = faults.validate() {
        return error(
            StatusCode::BAD_REQUEST,
            error_body("__all__", &message, "invalid"),
        );
    }
    let mut state = lock(&shared.faults);
    *state = FaultState::new(faults);
    Json(state.faults()).into_response()
}

async fn control_reset(State(shared): State<Arc<Shared>>) -> Response {
    write(&shared.store).clear();
    shared.engine.clear();
    StatusCode::NO_CONTENT.into_response()
}

// ---------------------------------------------------------------- serving

/// Accepts connections until `shutdown` flips, serving each with HTTP/1.1.
pub(crate) async fn serve(listener: TcpListener, app: Router, shutdown: watch::Receiver<bool>) {
    use hyper_util::rt::TokioIo;
    use tower::ServiceExt as _;

    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            res = listener.accept() => res,
            _ = stop.changed() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let mut conn_stop = shutdown.clone();
        tokio::spawn(async move {
            let notify = Arc::new(Notify::new());
            let kill = ConnKill(notify.clone());
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(kill.clone());
                    app.clone().oneshot(req.map(axum::body::Body::new))
                },
            );
            // The timer makes hyper's 30 s header-read timeout apply to idle, silent clients.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = notify.notified() => {}
                _ = conn_stop.changed() => {}
            }
        });
    }
}
