//! `chip inbox init`: create or migrate the inbox, as a receiving app does when it starts.

use chip_gate_inbox::Inbox;

use crate::common::{Failure, Outcome};
use crate::outln;
use crate::term::clean;

use super::open::{cannot_open, cli_options, failed, version_before};
use super::url::{DatabaseUrl, sqlite_path};

/// `chip inbox init`: creates the database (a SQLite file) and the inbox's tables, or migrates an
/// older inbox, with [`Inbox::connect_with`], and says which of these it did. Anything already
/// there is kept; run again, it changes nothing.
pub(super) async fn init(url: &DatabaseUrl) -> Outcome {
    let scheme = url
        .url
        .split_once(':')
        .map(|(scheme, _)| scheme.to_ascii_lowercase());
    // What is there before: no file, or the schema version found (0: no inbox tables).
    let before: Option<i64> = match scheme.as_deref() {
        Some("sqlite") => {
            let Some(path) = sqlite_path(&url.url) else {
                return Err(Failure::usage(format!(
                    "{} is an in-memory database, gone when this command ends: give a file, \
                     e.g. sqlite://chip-inbox.db",
                    url.shown()
                )));
            };
            if path.exists() {
                Some(version_before(url).await?)
            } else {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
                    && !parent.is_dir()
                {
                    return Err(Failure::op(format!(
                        "cannot create the inbox at {}: the folder {} does not exist (create it \
                         first)",
                        url.shown(),
                        clean(&parent.display().to_string())
                    )));
                }
                None
            }
        }
        Some("postgres" | "postgresql") => {
            if let Err(e) = url::Url::parse(&url.url) {
                return Err(Failure::usage(format!(
                    "the database URL {} is not a valid URL: {e}",
                    url.shown()
                )));
            }
            Some(version_before(url).await?)
        }
        _ => {
            return Err(Failure::usage(format!(
                "unsupported database URL {}: use sqlite://PATH or postgres://USER@HOST/DB",
                url.shown()
            )));
        }
    };
    let inbox = Inbox::connect_with(&url.url, cli_options())
        .await
        .map_err(|e| cannot_open(url, "set up", &e))?;
    let after = inbox.schema_version().await.map_err(failed(url));
    inbox.close().await;
    let after = after?;
    let shown = url.shown();
    match before {
        None => outln!("Created the inbox at {shown} (schema version {after}).")?,
        Some(0) => outln!(
            "Created the inbox's tables in {shown} (schema version {after}); nothing else in \
             the database was changed."
        )?,
        Some(found) if found < after => outln!(
            "Migrated the inbox at {shown} from schema version {found} to {after}; its \
             deliveries are kept."
        )?,
        Some(_) => outln!(
            "The inbox at {shown} is already set up (schema version {after}): nothing to do."
        )?,
    }
    outln!(
        "Receivers store into it with chip_gate_inbox::Inbox::connect; look into it with `chip \
         inbox status`."
    )?;
    Ok(0)
}
