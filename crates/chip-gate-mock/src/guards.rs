//! The checks every request passes before a route sees it: a loopback `Host` (against DNS
//! rebinding), the bearer key, and, on API paths, injected faults.

use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Notify;

use crate::api::{error, internal};
use crate::faults::Fault;
use crate::validate::error_body;
use crate::{Shared, Variant, lock};

/// Lets a handler close its own connection without answering.
#[derive(Clone)]
pub(crate) struct ConnKill(pub(crate) Arc<Notify>);

/// Whether `host` (a `Host` header value: a name or address with an optional port) names this
/// machine's loopback: `localhost` (without a trailing dot), an address in 127.0.0.0/8, or `[::1]`.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let (name, port) = if let Some(rest) = host.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return false;
        };
        let Ok(ip) = inside.parse::<Ipv6Addr>() else {
            return false;
        };
        if !ip.is_loopback() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("localhost", port),
                None => return false,
            },
        }
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, port),
            None => (host, ""),
        }
    };
    if !port.is_empty() && (port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit())) {
        return false;
    }
    chip_gate_api::is_loopback_host(name)
}

/// Whether a mock listening on `bind` checks the `Host` of every request: yes on a loopback
/// address (a developer's machine, where a web page may rebind its name to 127.0.0.1), no when the
/// user binds another address on purpose (then other names legitimately reach it).
pub(crate) fn host_check_applies(bind: std::net::IpAddr) -> bool {
    bind.is_loopback()
}

/// Refuses (403) a request whose `Host` (or absolute-form authority) is not a loopback name or
/// address, while the mock listens on loopback.
pub(crate) async fn require_loopback_host(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    if !shared.check_host {
        return next.run(req).await;
    }
    let header_ok = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_loopback_host);
    let authority_ok = req
        .uri()
        .authority()
        .is_none_or(|a| is_loopback_host(a.as_str()));
    if header_ok && authority_ok {
        return next.run(req).await;
    }
    error(
        StatusCode::FORBIDDEN,
        error_body(
            "__all__",
            "This mock only answers requests addressed to a loopback host (localhost, 127.0.0.1, [::1]).",
            "invalid_host",
        ),
    )
}

fn key_matches(given: &str, expected: &str) -> bool {
    // Constant-time comparison: the mock's key is a secret like any other.
    aws_lc_rs::constant_time::verify_slices_are_equal(given.as_bytes(), expected.as_bytes()).is_ok()
}

/// Refuses (401) a request without `Authorization: Bearer <the key>`.
pub(crate) async fn require_key(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
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
    let Some((message, code)) = problem else {
        return next.run(req).await;
    };
    let mut resp = match shared.variant {
        Variant::Documented => error(
            StatusCode::UNAUTHORIZED,
            error_body("__all__", message, code),
        ),
        // CHIP declares no 401: one may come with no body at all.
        Variant::Variations => StatusCode::UNAUTHORIZED.into_response(),
    };
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Applies the configured faults to an API request.
pub(crate) async fn inject_faults(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::is_loopback_host;

    #[test]
    fn the_host_check_follows_the_bind_address() {
        use super::host_check_applies;
        for on in ["127.0.0.1", "127.0.0.2", "::1"] {
            assert!(host_check_applies(on.parse().unwrap()), "{on}");
        }
        for off in ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1"] {
            assert!(!host_check_applies(off.parse().unwrap()), "{off}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "LOCALHOST:8080",
            "127.0.0.1",
            "127.0.0.1:41234",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:41234",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:41234",
            "localhost.evil.example",
            // A trailing dot makes a DNS name: not the pinned loopback name.
            "localhost.:1",
            "localhost.",
            "127.0.0.1.nip.io",
            "10.0.0.1:80",
            "0.0.0.0:80",
            "[::2]:80",
            "[::1",
            "[::1]x",
            "localhost:80:80",
            "localhost:abc",
            "127.0.0.1:999999",
            "::1",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
