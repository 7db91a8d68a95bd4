//! What every subcommand shares: the failure type and exit codes, the connection options, how the
//! API key and base URL are found (flags, files, environment), and building the API client.

use std::fmt;
use std::path::PathBuf;

use crate::{http, input, term};

/// The heading of the connection options in `--help`, on the commands that talk to CHIP.
const CONNECTION: &str = "Connection (CHIP, or a local mock)";

/// The environment variable holding the API key.
pub const API_KEY_ENV: &str = "CHIP_API_KEY";
/// The environment variable holding the API base URL.
pub const BASE_URL_ENV: &str = "CHIP_BASE_URL";

/// How to reach CHIP (or the mock): on the commands that talk to it, under their own heading.
///
/// The environment is read by [`api_key`] and [`base_url`], not by clap, so that `--help` never
/// shows a value and an empty variable means unset.
#[derive(clap::Args, Clone, Default)]
pub struct ApiArgs {
    /// The secret API key [default: $CHIP_API_KEY]. Visible to every user in `ps` and kept in
    /// shell history: prefer CHIP_API_KEY or --api-key-file
    #[arg(
        long,
        global = true,
        value_name = "KEY",
        conflicts_with = "api_key_file",
        help_heading = CONNECTION
    )]
    pub api_key: Option<String>,
    /// Read the API key from this file (`-` reads standard input); at most 4 KiB, surrounding
    /// whitespace ignored
    #[arg(long, global = true, value_name = "PATH", help_heading = CONNECTION)]
    pub api_key_file: Option<PathBuf>,
    /// The API base URL, ending in /api/v1 [default: $CHIP_BASE_URL, else CHIP's; a local mock
    /// prints its own]
    #[arg(long, global = true, value_name = "URL", help_heading = CONNECTION)]
    pub base_url: Option<String>,
}

impl fmt::Debug for ApiArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiArgs")
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("api_key_file", &self.api_key_file)
            .field("base_url", &self.base_url)
            .finish()
    }
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit code: 1 for a failed operation, 2 for bad usage or an unusable input.
    pub code: u8,
    /// One line, printed after `error: `.
    pub message: String,
    /// Nothing to print: stdout was closed by the reader (`| head -1`), a normal way to stop.
    pub quiet: bool,
}

impl Failure {
    /// A failed operation (exit 1).
    pub fn op(message: impl fmt::Display) -> Self {
        Failure {
            code: 1,
            message: message.to_string(),
            quiet: false,
        }
    }

    /// Bad usage or unusable input (exit 2).
    pub fn usage(message: impl fmt::Display) -> Self {
        Failure {
            code: 2,
            message: message.to_string(),
            quiet: false,
        }
    }

    /// Stdout was closed by whoever reads it: stop quietly with exit 0, as Unix tools do.
    pub fn closed() -> Self {
        Failure {
            code: 0,
            message: String::new(),
            quiet: true,
        }
    }
}

impl From<chip_gate::Error> for Failure {
    fn from(error: chip_gate::Error) -> Self {
        Failure::op(error)
    }
}

/// What a command does when it succeeds: the exit code (0, or 1 for `verify` saying invalid).
pub type Outcome = Result<u8, Failure>;

/// A non-empty, non-blank value of the environment variable `name`, as text.
pub fn env_value(name: &str) -> Result<Option<String>, Failure> {
    match std::env::var(name) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Failure::usage(format!("{name} is not valid UTF-8")))
        }
    }
}

/// The API key: `--api-key`, else `--api-key-file`, else `CHIP_API_KEY`.
///
/// A key from `--api-key` is accepted with a one-line warning on stderr: any user can read it in
/// `ps`, and the shell keeps it in its history. The key itself is never printed.
pub fn api_key(api: &ApiArgs) -> Result<String, Failure> {
    const MISSING: &str = "no API key: pass --api-key or set CHIP_API_KEY (or give --api-key-file; \
                           `chip mock` prints one)";
    if let Some(key) = &api.api_key {
        term::warn_line(format_args!(
            "warning: a key given with --api-key is visible to other users in `ps` and kept in \
             shell history; prefer CHIP_API_KEY or --api-key-file"
        ));
        let key = key.trim();
        if key.is_empty() {
            return Err(Failure::usage(MISSING));
        }
        return Ok(key.to_owned());
    }
    if let Some(path) = &api.api_key_file {
        let text = input::read_text_capped(path, input::API_KEY_FILE_MAX, "the API key file")?;
        let key = text.trim();
        if key.is_empty() {
            return Err(Failure::usage(format!(
                "the API key file {} is empty",
                path.display()
            )));
        }
        return Ok(key.to_owned());
    }
    env_value(API_KEY_ENV)?
        .map(|key| key.trim().to_owned())
        .ok_or_else(|| Failure::usage(MISSING))
}

/// The base URL from `--base-url` or `CHIP_BASE_URL`; an empty or blank value means unset (the
/// library's rule), and `None` means CHIP's own.
pub fn base_url(api: &ApiArgs) -> Result<Option<String>, Failure> {
    match api.base_url.as_deref().map(str::trim) {
        Some("") => env_value(BASE_URL_ENV),
        Some(url) => Ok(Some(url.to_owned())),
        None => env_value(BASE_URL_ENV),
    }
    .map(|url| url.map(|u| u.trim().to_owned()))
}

/// Builds the API client from the flags or the environment.
///
/// For plain http to a loopback address (the mock) it never uses a proxy from the environment,
/// whatever the library's default: the key would cross the proxy in clear text.
pub fn client(api: &ApiArgs) -> Result<chip_gate::Client, Failure> {
    client_with_key(api, api_key(api)?)
}

/// [`client`] with a key already read by [`api_key`] (read once: `--api-key` warns each time it is
/// read, and `--api-key-file -` can be read only once).
pub fn client_with_key(api: &ApiArgs, key: String) -> Result<chip_gate::Client, Failure> {
    let mut builder = chip_gate::Client::builder(key);
    if let Some(url) = base_url(api)? {
        if let Ok(parsed) = url::Url::parse(&url) {
            builder = builder.http_client_builder(http::builder_for(&parsed));
        }
        builder = builder.base_url(url);
    }
    builder.build().map_err(Failure::usage)
}
