//! Errors.

use std::fmt;

use http::StatusCode;

/// What went wrong with the inbox's database or its configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InboxError {
    /// The database URL names no supported database: use `sqlite://PATH` or `postgres://...`.
    #[error(
        "unsupported database URL (scheme `{scheme}`): use `sqlite://chip-inbox.db` or `postgres://user@host/db`"
    )]
    UnsupportedUrl {
        /// The scheme found, or an empty string.
        scheme: String,
    },
    /// The database refused or failed an operation. The message never holds a delivery body.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database holds a newer inbox schema than this version knows: upgrade chip-gate-inbox.
    #[error(
        "the database's inbox schema is version {found}, newer than this chip-gate-inbox knows ({known}): upgrade the crate"
    )]
    SchemaTooNew {
        /// The version in the database.
        found: i64,
        /// The newest version this crate knows.
        known: i64,
    },
    /// Opened without migrating ([`InboxOptions::migrate`](crate::InboxOptions::migrate)), the
    /// database holds an older inbox schema than this version, or none at all (`found` 0).
    #[error("{}", schema_too_old(*found, *known))]
    SchemaTooOld {
        /// The version in the database (0: no inbox schema).
        found: i64,
        /// The version this crate uses.
        known: i64,
    },
    /// [`TxJob::sqlite`](crate::TxJob::sqlite) or [`TxJob::postgres`](crate::TxJob::postgres) was
    /// called on the other backend.
    #[error("this inbox runs on {actual}, not {requested}")]
    WrongBackend {
        /// The backend asked for.
        requested: &'static str,
        /// The backend in use.
        actual: &'static str,
    },
    /// Another worker took this delivery over (this worker's lease expired), so this worker's
    /// result was not recorded. With [`TxJob`](crate::TxJob) the handler's writes were rolled back.
    #[error("the lease on delivery {delivery_id} was lost to another worker; nothing was recorded")]
    LeaseLost {
        /// The delivery.
        delivery_id: i64,
    },
    /// No such delivery.
    #[error("no delivery with id {0}")]
    NotFound(i64),
    /// The delivery is not in a state that allows this operation.
    #[error("delivery {id} is {state}; {wanted}")]
    InvalidState {
        /// The delivery.
        id: i64,
        /// Its state.
        state: String,
        /// What the operation needs.
        wanted: &'static str,
    },
    /// The SQLite database file could not be created (owner-only, mode 0600) before opening it:
    /// its directory is missing or not writable.
    #[error("could not create the inbox database file {}: {source}", path.display())]
    CreateFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An intake or worker was started outside a Tokio runtime.
    #[error("chip-gate-inbox needs a Tokio runtime: call this from within one")]
    NoRuntime,
}

/// Why [`Intake::receive`](crate::Intake::receive) did not store a delivery. Each variant maps to
/// the HTTP status to answer with ([`status`](Self::status)); the reason is for logs and tests.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntakeError {
    /// The signature is missing, repeated or wrong: answer `401` (CHIP never sends these; someone
    /// else does). Nothing was stored.
    #[error(transparent)]
    Signature(#[from] chip_gate::VerifyError),
    /// The body is larger than the verifier's cap: answer `413`. Nothing was stored.
    #[error("the body is larger than {max} bytes")]
    TooLarge {
        /// The cap ([`chip_gate::Verifier::max_body_bytes`]).
        max: usize,
    },
    /// The request body could not be read: answer `400`. Nothing was stored.
    #[error("the request body could not be read")]
    UnreadableBody,
    /// The body took longer than the server allows (`408`), or the server had no room to read
    /// it yet (`503`, CHIP delivers it again): see [`chip_gate::serve`]. Nothing was stored.
    #[cfg(feature = "axum")]
    #[error(transparent)]
    Bounded(chip_gate::serve::BodyError),
    /// The delivery verified but could not be stored (database down, disk full, intake shut
    /// down): answer `503` so that CHIP delivers it again. Nothing was acknowledged.
    #[error("the delivery could not be stored: {0}")]
    Storage(String),
}

impl IntakeError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> StatusCode {
        match self {
            IntakeError::Signature(_) => StatusCode::UNAUTHORIZED,
            IntakeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IntakeError::UnreadableBody => StatusCode::BAD_REQUEST,
            #[cfg(feature = "axum")]
            IntakeError::Bounded(error) => error.status(),
            IntakeError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short, stable name for the reason (metrics labels, log fields): that of the
    /// [`chip_gate::VerifyError`], or `too_large`, `unreadable_body`, `body_timeout`, `busy`,
    /// `storage`.
    pub fn reason(&self) -> &'static str {
        match self {
            IntakeError::Signature(error) => error.reason(),
            IntakeError::TooLarge { .. } => "too_large",
            IntakeError::UnreadableBody => "unreadable_body",
            #[cfg(feature = "axum")]
            IntakeError::Bounded(error) => error.reason(),
            IntakeError::Storage(_) => "storage",
        }
    }

    /// The short text to answer with: no more than the status says.
    pub fn public_text(&self) -> &'static str {
        match self {
            IntakeError::Signature(_) => "invalid signature",
            IntakeError::TooLarge { .. } => "body too large",
            IntakeError::UnreadableBody => "unreadable body",
            #[cfg(feature = "axum")]
            IntakeError::Bounded(chip_gate::serve::BodyError::Timeout) => "body too slow",
            #[cfg(feature = "axum")]
            IntakeError::Bounded(_) => "busy, deliver again later",
            IntakeError::Storage(_) => "not stored, deliver again later",
        }
    }
}

/// A short, single-line rendering of an error for the `last_error` column: at most 1,000
/// characters.
pub(crate) fn error_text(error: &dyn fmt::Display) -> String {
    // One line; no NUL, which PostgreSQL's text cannot hold.
    let text = error
        .to_string()
        .replace(['\n', '\r'], " ")
        .replace('\0', "\u{fffd}");
    match text.char_indices().nth(1000) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

fn schema_too_old(found: i64, known: i64) -> String {
    if found == 0 {
        "the database holds no chip-gate-inbox tables: is it the right database? An app using \
         chip-gate-inbox makes them when it connects"
            .to_owned()
    } else {
        format!(
            "the database's inbox schema is version {found}, older than this chip-gate-inbox's \
             ({known}): connect an app built with this version (it migrates), or call Inbox::migrate"
        )
    }
}
