//! `chip listen`: a local receiver that verifies each delivery, prints one line for it, and can
//! save it to a folder.

use std::collections::HashSet;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use chip_gate::serve::ServeOptions;
use chip_gate::{DedupKey, Delivery, Verifier};
use clap::Args;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use crate::common::{ApiArgs, Failure, Outcome, client};
use crate::files;
use crate::input::{self, BODY_MAX, PUBLIC_KEY_FILE_MAX};
use crate::outln;
use crate::term::clean;

/// How long requests in progress may take to finish once the listener stops.
const DRAIN: Duration = Duration::from_secs(1);

/// Arguments of `chip listen`.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["key", "webhook"]))]
pub struct ListenArgs {
    /// The port to listen on, on 127.0.0.1 (0 picks a free one).
    #[arg(long)]
    port: u16,
    /// Verify with the public key in this file (any form `chip verify` takes).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Verify with this webhook's public key, fetched from the API.
    #[arg(long, value_name = "ID")]
    webhook: Option<Uuid>,
    /// Exit after this many verified deliveries (unsigned or wrongly signed ones do not count).
    #[arg(long, value_name = "N")]
    max: Option<usize>,
    /// Save each delivery into this folder (created, open only to you, if missing):
    /// N-EVENT.body.json holds the exact body bytes, N-EVENT.sig the X-Signature value and
    /// N-EVENT.headers the request headers, with N counting from 0001 past the names already
    /// taken. Deliveries that fail verification are saved as N-invalid.*. Files are readable only
    /// by you; a folder another user owns or can write to is refused
    #[arg(long, value_name = "DIR")]
    save: Option<PathBuf>,
    /// The largest body accepted, in bytes; a larger delivery is refused (413) and counts as failed.
    #[arg(long, value_name = "BYTES", default_value_t = BODY_MAX)]
    max_body_bytes: u64,
}

/// What the listener has seen so far.
#[derive(Default)]
struct Tally {
    /// Deliveries whose signature verified (duplicates included).
    verified: usize,
    /// Deliveries refused: no, several or a wrong signature, or a body over the cap.
    failed: usize,
    /// The dedup keys of verified deliveries, to mark redeliveries.
    seen: HashSet<DedupKey>,
    /// A reason to stop with an error (a delivery that could not be saved).
    fatal: Option<String>,
    /// Stdout was closed by its reader: stop quietly.
    closed: bool,
}

struct Listener {
    verifier: Verifier,
    tally: Mutex<Tally>,
    max: Option<usize>,
    max_body: usize,
    save: Option<Saver>,
    done: Notify,
}

/// Writes deliveries into a folder, numbering them.
struct Saver {
    dir: PathBuf,
    next: Mutex<u32>,
}

/// `text` made safe for a file name: letters, digits, `.`, `_` and `-`, at most 64 characters.
fn file_part(text: &str) -> String {
    let part: String = text
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if part.is_empty() || part.starts_with('.') {
        format!("_{part}")
    } else {
        part
    }
}

impl Saver {
    /// A saver into `dir`, checked first: created (0700) when missing, refused when another user
    /// owns it or could write to it (see [`files::private_dir`]).
    fn new(dir: &Path) -> Result<Saver, String> {
        files::private_dir(dir)?;
        Ok(Saver {
            dir: dir.to_owned(),
            next: Mutex::new(1),
        })
    }

    /// Saves one delivery; returns the common prefix of the three files (`DIR/0001-purchase.paid`).
    ///
    /// Each file is created exclusively and owner-only (0600): when any of the three names is
    /// already taken (by an earlier run, or by a file or link put there), the files of this
    /// attempt are removed and the next number is tried, so nothing already there is followed,
    /// overwritten or appended to.
    fn save(
        &self,
        label: &str,
        body: &[u8],
        signature: &[u8],
        headers: &HeaderMap,
    ) -> Result<PathBuf, String> {
        let mut next = self
            .next
            .lock()
            .map_err(|_| "the save counter is poisoned")?;
        let label = file_part(label);
        let mut text = Vec::new();
        for (name, value) in headers {
            text.extend_from_slice(name.as_str().as_bytes());
            text.extend_from_slice(b": ");
            text.extend_from_slice(value.as_bytes());
            text.push(b'\n');
        }
        let parts: [(&str, &[u8]); 3] = [
            (".body.json", body),
            (".sig", signature),
            (".headers", &text),
        ];
        loop {
            let n = *next;
            *next = next.checked_add(1).ok_or("too many saved deliveries")?;
            let stem = self.dir.join(format!("{n:04}-{label}"));
            let mut created: Vec<PathBuf> = Vec::with_capacity(parts.len());
            let mut taken = false;
            for (suffix, bytes) in parts {
                let path = with_suffix(&stem, suffix);
                let written = files::create_private(&path).and_then(|mut file| {
                    created.push(path.clone());
                    file.write_all(bytes)
                });
                match written {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        taken = true;
                        break;
                    }
                    Err(e) => {
                        remove_all(&created);
                        return Err(format!("cannot write {}: {e}", path.display()));
                    }
                }
            }
            if taken {
                remove_all(&created);
                continue;
            }
            return Ok(stem);
        }
    }
}

/// Removes the files of an attempt that did not complete (best effort: they are ours, just made).
fn remove_all(paths: &[PathBuf]) {
    for path in paths {
        let _ = std::fs::remove_file(path);
    }
}

fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The object id and status a delivery reports, cleaned for printing.
fn describe(delivery: &Delivery) -> (String, String) {
    let id = clean(delivery.object().id().unwrap_or("-"));
    let status = delivery
        .raw_json()
        .ok()
        .and_then(|v| v.get("status").and_then(|s| s.as_str().map(clean)))
        .unwrap_or_else(|| "-".to_owned());
    (id, status)
}

/// Why a request was refused before its signature could be checked.
fn precheck(headers: &HeaderMap, max_body: usize) -> Result<Vec<u8>, (String, StatusCode)> {
    let mut signatures = headers.get_all("x-signature").iter();
    let signature = match (signatures.next(), signatures.next()) {
        (None, _) => {
            return Err((
                "invalid: no X-Signature header".to_owned(),
                StatusCode::UNAUTHORIZED,
            ));
        }
        (Some(_), Some(_)) => {
            return Err((
                "invalid: several X-Signature headers".to_owned(),
                StatusCode::UNAUTHORIZED,
            ));
        }
        (Some(one), None) => one.as_bytes().to_vec(),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_body as u64) {
        return Err(too_large(max_body));
    }
    Ok(signature)
}

fn too_large(max_body: usize) -> (String, StatusCode) {
    (
        format!(
            "rejected: body larger than {}",
            input::size(max_body as u64)
        ),
        StatusCode::PAYLOAD_TOO_LARGE,
    )
}

/// Checks one request and returns the line to print, the answer, whether it verified, and the
/// body and signature to save (when they were read).
async fn check(
    listener: &Listener,
    headers: &HeaderMap,
    body: Body,
) -> (String, StatusCode, bool, Option<(Bytes, Vec<u8>, String)>) {
    let signature = match precheck(headers, listener.max_body) {
        Ok(signature) => signature,
        Err((line, status)) => return (format!("-  -  -  {line}"), status, false, None),
    };
    // A value no configured key can produce is refused before the body is read.
    if let Err(reason) = listener.verifier.decode_signature_header(headers) {
        return (
            format!("-  -  -  invalid: {}", clean(&reason.to_string())),
            StatusCode::UNAUTHORIZED,
            false,
            None,
        );
    }
    let body = match chip_gate::serve::read_body(body, listener.max_body).await {
        Ok(body) => body,
        Err(error) if error.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let (line, status) = too_large(listener.max_body);
            return (format!("-  -  -  {line}"), status, false, None);
        }
        Err(error) => {
            return (
                format!("-  -  -  rejected: {}", clean(&error.to_string())),
                error.status(),
                false,
                None,
            );
        }
    };
    let text = String::from_utf8_lossy(&signature);
    match listener
        .verifier
        .verify_and_parse(body.clone(), text.trim())
    {
        Ok(delivery) => {
            let (id, object_status) = describe(&delivery);
            let fresh = match delivery.dedup_key() {
                Some(key) => listener
                    .tally
                    .lock()
                    .map(|mut tally| tally.seen.insert(key))
                    .unwrap_or(true),
                None => true,
            };
            let verdict = if fresh { "valid" } else { "valid (duplicate)" };
            let event = delivery.event().to_string();
            (
                format!("{}  {id}  {object_status}  {verdict}", clean(&event)),
                StatusCode::OK,
                true,
                Some((body, signature, event)),
            )
        }
        Err(reason) => (
            format!("-  -  -  invalid: {}", clean(&reason.to_string())),
            StatusCode::UNAUTHORIZED,
            false,
            Some((body, signature, "invalid".to_owned())),
        ),
    }
}

async fn receive(
    State(listener): State<Arc<Listener>>,
    headers: HeaderMap,
    body: Body,
) -> StatusCode {
    let (mut line, mut status, verified, saved) = check(&listener, &headers, body).await;
    if let (Some(saver), Some((body, signature, label))) = (&listener.save, saved) {
        match saver.save(&label, &body, &signature, &headers) {
            Ok(stem) => line = format!("{line}  saved {}.*", stem.display()),
            Err(e) => {
                if let Ok(mut tally) = listener.tally.lock() {
                    tally.fatal.get_or_insert(e);
                }
                listener.done.notify_one();
                // Not kept: let CHIP deliver it again.
                return StatusCode::INTERNAL_SERVER_ERROR;
            }
        }
    }
    let printed = outln!("{line}");
    let stop = listener.tally.lock().is_ok_and(|mut tally| {
        if verified {
            tally.verified += 1;
        } else {
            tally.failed += 1;
        }
        if printed.is_err() {
            tally.closed = true;
        }
        tally.closed || listener.max.is_some_and(|max| tally.verified >= max)
    });
    if printed.is_err() && status == StatusCode::OK {
        // Nobody can see it any more; the sender will retry later.
        status = StatusCode::SERVICE_UNAVAILABLE;
    }
    if stop {
        listener.done.notify_one();
    }
    status
}

async fn load_verifier(api: &ApiArgs, args: &ListenArgs) -> Result<Verifier, Failure> {
    let pem = match (&args.key, args.webhook) {
        (Some(path), _) => input::read_text_capped(path, PUBLIC_KEY_FILE_MAX, "the key file")?,
        (None, Some(id)) => client(api)?.webhooks().retrieve(id).await?.public_key,
        (None, None) => return Err(Failure::usage("give --key FILE or --webhook ID")),
    };
    // Every key of a `--keys-out` bundle, not only the first.
    crate::verify::load_keys(&pem).map_err(|e| Failure::usage(format!("unusable key: {e}")))
}

/// Ctrl-C or SIGTERM. On Unix both handlers are installed when this is called, not when the future
/// is first polled, so a signal sent right after the "Listening on" line is never missed (and never
/// kills the process with the default action).
pub(crate) fn stop_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = wait(interrupt) => {}
                () = wait(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the receiver until Ctrl-C or SIGTERM, or until `--max` deliveries verified.
///
/// Exits 1 when any delivery failed verification (the line for each says why).
pub async fn run(api: &ApiArgs, args: ListenArgs) -> Outcome {
    // The save folder is checked before anything else: a refused folder fails at once (exit 2).
    let save = match &args.save {
        Some(dir) => Some(Saver::new(dir).map_err(Failure::usage)?),
        None => None,
    };
    let verifier = load_verifier(api, &args).await?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let socket = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::op(format!("cannot listen on {addr}: {e}")))?;
    let local = socket
        .local_addr()
        .map_err(|e| Failure::op(format!("cannot read the listening address: {e}")))?;
    let state = Arc::new(Listener {
        verifier,
        tally: Mutex::new(Tally::default()),
        max: args.max,
        max_body: usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX),
        save,
        done: Notify::new(),
    });
    let stop = stop_signal();
    let app = axum::Router::new()
        .fallback(axum::routing::post(receive))
        .with_state(state.clone());
    outln!(
        "Listening on http://{local}/ (any path); one line per delivery: event, object id, status, verdict"
    )?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    // The same bounded server as a production receiver: a slow or hostile client cannot stall it.
    let options = ServeOptions::default()
        .max_body_bytes(usize::try_from(args.max_body_bytes).unwrap_or(usize::MAX))
        .drain(DRAIN);
    let server = tokio::spawn(chip_gate::serve::serve_with_shutdown(
        socket,
        app,
        options,
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        },
    ));
    tokio::select! {
        () = state.done.notified() => {}
        () = stop => {}
    }
    let _ = stop_tx.send(true);
    // Let the request that reached --max get its answer; never linger on idle connections.
    let _ = tokio::time::timeout(DRAIN, server).await;

    let tally = state
        .tally
        .lock()
        .map_err(|_| Failure::op("the listener's state is poisoned"))?;
    if let Some(fatal) = &tally.fatal {
        return Err(Failure::op(fatal));
    }
    if tally.failed > 0 {
        return Err(Failure::op(format!(
            "{} of {} deliveries failed verification",
            tally.failed,
            tally.failed + tally.verified
        )));
    }
    if tally.closed {
        return Err(Failure::closed());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape_the_folder() {
        assert_eq!(file_part("purchase.paid"), "purchase.paid");
        assert_eq!(file_part("../../etc/passwd"), "_.._.._etc_passwd");
        assert_eq!(file_part(""), "_");
        assert_eq!(file_part("a/b\u{1b}c"), "a_b_c");
    }
}
