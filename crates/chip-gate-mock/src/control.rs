//! The `/__mock` control routes: fire an event, read the delivery log, change faults, reset.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chip_gate_api::types::EventName;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::api::{error, internal};
use crate::faults::{DeliveryFaults, FaultState, Faults};
use crate::validate::{self, error_body};
use crate::{MockError, Shared, lock, write};

pub(crate) async fn trigger(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let map: Map<String, Value> = match validate::parse_object(&body) {
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
        Err(MockError::Busy(why)) => {
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                error_body(
                    "__all__",
                    &format!("Too many deliveries waiting: {why}."),
                    "throttled",
                ),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            resp
        }
        Err(e) => internal(&e),
    }
}

pub(crate) async fn deliveries(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.engine.records()).into_response()
}

pub(crate) async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(lock(&shared.faults).faults()).into_response()
}

pub(crate) async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let faults = match read_settings(&body, "faults", Faults::validate) {
        Ok(faults) => faults,
        Err(message) => return invalid(&message),
    };
    let mut state = lock(&shared.faults);
    *state = FaultState::new(faults);
    Json(state.faults()).into_response()
}

pub(crate) async fn get_delivery_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.engine.delivery_faults()).into_response()
}

pub(crate) async fn set_delivery_faults(
    State(shared): State<Arc<Shared>>,
    body: Bytes,
) -> Response {
    let faults = match read_settings(&body, "delivery faults", DeliveryFaults::validate) {
        Ok(faults) => faults,
        Err(message) => return invalid(&message),
    };
    shared.engine.set_delivery_faults(faults);
    Json(shared.engine.delivery_faults()).into_response()
}

/// Settings from a control route's JSON body, checked by `validate`; otherwise why not.
fn read_settings<T: serde::de::DeserializeOwned>(
    body: &[u8],
    what: &str,
    validate: fn(&T) -> Result<(), String>,
) -> Result<T, String> {
    let settings: T = serde_json::from_slice(body).map_err(|e| format!("Invalid {what}: {e}"))?;
    validate(&settings)?;
    Ok(settings)
}

/// The 400 for settings that do not parse or do not hold (`invalid`, under `__all__`).
fn invalid(message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        error_body("__all__", message, "invalid"),
    )
}

pub(crate) async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    write(&shared.store).clear();
    shared.engine.clear();
    StatusCode::NO_CONTENT.into_response()
}
