//! `chip relay`: a durable CHIP receiver in front of any app (chip-gate-relay). Settings come from
//! flags, then the environment, then a TOML file (`--config`), then the defaults; secrets only
//! from files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chip_gate::Verifier;
use chip_gate_inbox::{StalePolicy, WorkerOptions};
use chip_gate_relay::{Forwarder, RelayConfig, Secret};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::common::{Failure, Outcome};
use crate::inbox::{DATABASE_URL_ENV, DatabaseUrl, parse_duration};
use crate::input;
use crate::outln;

/// The most a key or secret file may hold.
const MAX_KEY_FILE: u64 = 256 * 1024;
/// The most a configuration file may hold.
const MAX_CONFIG_FILE: u64 = 64 * 1024;

/// `chip relay`.
#[derive(Args, Debug, Default)]
pub struct RelayArgs {
    /// The app's URL: every delivery is POSTed there, signed with Standard Webhooks
    /// [env: CHIP_RELAY_FORWARD_TO]
    #[arg(
        long,
        value_name = "URL",
        env = "CHIP_RELAY_FORWARD_TO",
        hide_env = true
    )]
    forward_to: Option<String>,
    /// A file holding the Standard Webhooks secret (`whsec_...`) the app verifies with; make one
    /// with --new-secret [env: CHIP_RELAY_SECRET_FILE]
    #[arg(
        long,
        value_name = "PATH",
        env = "CHIP_RELAY_SECRET_FILE",
        hide_env = true
    )]
    secret_file: Option<PathBuf>,
    /// A PEM file of keys CHIP's deliveries verify with: a webhook's public_key, a bundle
    /// (`chip webhooks apply --keys-out`), or the company key for purchase success callbacks.
    /// Repeat for several files [env: CHIP_RELAY_KEYS, paths separated by ':']
    #[arg(long = "keys", value_name = "PATH")]
    keys: Vec<PathBuf>,
    /// The inbox's database: `sqlite://PATH` (one relay) or `postgres://...` (replicas) [default:
    /// $CHIP_INBOX_DATABASE_URL, else sqlite://chip-relay.db]
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Where CHIP posts [default: 0.0.0.0:8080] [env: CHIP_RELAY_LISTEN]
    #[arg(long, value_name = "ADDR", env = "CHIP_RELAY_LISTEN", hide_env = true)]
    listen: Option<SocketAddr>,
    /// Where /livez, /readyz and /metrics are served (keep it private) [default: 127.0.0.1:9090]
    /// [env: CHIP_RELAY_ADMIN_LISTEN]
    #[arg(
        long,
        value_name = "ADDR",
        env = "CHIP_RELAY_ADMIN_LISTEN",
        hide_env = true
    )]
    admin_listen: Option<SocketAddr>,
    /// The path CHIP posts to [default: /chip/webhook]
    #[arg(long, value_name = "PATH")]
    path: Option<String>,
    /// Attempts before a delivery is dead (then `chip inbox retry` sends it again) [default: 10]
    #[arg(long, value_name = "N")]
    max_attempts: Option<u32>,
    /// What to do with a state older than one already forwarded for its object [default: skip]
    #[arg(long, value_enum)]
    stale: Option<StaleArg>,
    /// How many deliveries (of different objects) are sent to the app at once [default: 8]
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// How long to wait for the app's answer, e.g. 30s [default: 30s]
    #[arg(long, value_name = "DURATION")]
    forward_timeout: Option<String>,
    /// The first wait before sending a refused delivery again; it doubles each time [default: 5s]
    #[arg(long, value_name = "DURATION")]
    retry_initial: Option<String>,
    /// The longest wait between two attempts [default: 30m]
    #[arg(long, value_name = "DURATION")]
    retry_max: Option<String>,
    /// How long a relay's claim on a delivery lasts if the relay dies: another replica takes
    /// the delivery after this long (a running relay extends its claims) [default: 60s, at least
    /// twice --forward-timeout]
    #[arg(long, value_name = "DURATION")]
    lease: Option<String>,
    /// A TOML file with any of these settings (names with `_`: forward_to = "...", keys = [...])
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print a new random signing secret (`whsec_...`) and exit: save it to the file given to
    /// --secret-file, and give it to the app
    #[arg(long, exclusive = true)]
    new_secret: bool,
}

/// What to do with stale deliveries.
#[derive(Clone, Copy, Debug, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
enum StaleArg {
    /// Do not forward them (an older state never overwrites a newer one).
    Skip,
    /// Forward them with the header `chip-stale: true`.
    Deliver,
}

/// The settings a `--config` file may hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RelayFile {
    forward_to: Option<String>,
    secret_file: Option<PathBuf>,
    keys: Option<Vec<PathBuf>>,
    database_url: Option<String>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    path: Option<String>,
    max_attempts: Option<u32>,
    stale: Option<StaleArg>,
    concurrency: Option<usize>,
    forward_timeout: Option<String>,
    retry_initial: Option<String>,
    retry_max: Option<String>,
    lease: Option<String>,
}

/// Runs the relay until Ctrl-C or SIGTERM.
pub async fn run(args: RelayArgs) -> Outcome {
    if args.new_secret {
        let (_, text) =
            Secret::generate().map_err(|_| Failure::op("the system's random source failed"))?;
        outln!("{text}")?;
        return Ok(0);
    }
    let config = settings(args)?;
    init_logging();
    let stop = crate::listen::stop_signal();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| Failure::op(format!("cannot install the metrics recorder: {e}")))?;
    let mut config = config;
    config.metrics = Some(prometheus);
    let shown = config.database_url.clone();
    chip_gate_relay::run(config, |_| {}, stop)
        .await
        .map_err(|e| Failure::op(DatabaseUrl::new(shown).scrub(&e.to_string())))?;
    Ok(0)
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`: refusals, failures, start and stop).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Flags over the environment (clap reads both) over the file over the defaults.
fn settings(args: RelayArgs) -> Result<RelayConfig, Failure> {
    let file = match &args.config {
        Some(path) => {
            let text = input::read_text_capped(path, MAX_CONFIG_FILE, "the configuration file")?;
            toml::from_str::<RelayFile>(&text).map_err(|e| {
                Failure::usage(format!(
                    "{}: {}",
                    path.display(),
                    e.to_string().replace('\n', " ")
                ))
            })?
        }
        None => RelayFile::default(),
    };
    let forward_to = args.forward_to.or(file.forward_to).ok_or_else(|| {
        Failure::usage("--forward-to (or CHIP_RELAY_FORWARD_TO) is required: the app's URL")
    })?;
    let secret_file = args.secret_file.or(file.secret_file).ok_or_else(|| {
        Failure::usage(
            "--secret-file (or CHIP_RELAY_SECRET_FILE) is required: make a secret with \
             `chip relay --new-secret > relay.secret`",
        )
    })?;
    let mut keys = args.keys;
    if keys.is_empty()
        && let Some(list) = std::env::var_os("CHIP_RELAY_KEYS").filter(|v| !v.is_empty())
    {
        keys = std::env::split_paths(&list).collect();
    }
    if keys.is_empty() {
        keys = file.keys.unwrap_or_default();
    }
    if keys.is_empty() {
        return Err(Failure::usage(
            "--keys is required: the webhook's public_key as PEM (`chip webhooks get ID \
             --public-key > key.pem`), or a bundle from `chip webhooks apply --keys-out`",
        ));
    }
    let database_url = args
        .database_url
        .or_else(|| {
            std::env::var(DATABASE_URL_ENV)
                .ok()
                .filter(|v| !v.is_empty())
        })
        .or(file.database_url)
        .unwrap_or_else(|| "sqlite://chip-relay.db".to_owned());
    let duration = |value: Option<String>, flag: &str, default: Duration| match value {
        Some(text) => parse_duration(&text).map_err(|e| Failure::usage(format!("{flag}: {e}"))),
        None => Ok(default),
    };
    let timeout = duration(
        args.forward_timeout.or(file.forward_timeout),
        "--forward-timeout",
        Duration::from_secs(30),
    )?;
    let backoff = chip_gate_inbox::Backoff {
        initial: duration(
            args.retry_initial.or(file.retry_initial),
            "--retry-initial",
            Duration::from_secs(5),
        )?,
        max: duration(
            args.retry_max.or(file.retry_max),
            "--retry-max",
            Duration::from_secs(30 * 60),
        )?,
    };
    let lease = duration(
        args.lease.or(file.lease),
        "--lease",
        Duration::from_secs(60),
    )?
    .max(timeout.saturating_mul(2));
    if timeout.is_zero() {
        return Err(Failure::usage("--forward-timeout must be more than 0s"));
    }

    let secret_text = input::read_text_capped(&secret_file, MAX_KEY_FILE, "the secret file")?;
    let secret = Secret::parse(&secret_text)
        .map_err(|e| Failure::usage(format!("{}: {e}", secret_file.display())))?;
    let verifier = verifier(&keys)?;
    let forwarder = Forwarder::new(&forward_to, secret, timeout).map_err(Failure::usage)?;
    let stale = match args.stale.or(file.stale).unwrap_or(StaleArg::Skip) {
        StaleArg::Skip => StalePolicy::Skip,
        StaleArg::Deliver => StalePolicy::Deliver,
    };
    let mut config = RelayConfig::new(
        database_url,
        verifier,
        forwarder,
        args.listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080))),
    );
    config.admin_listen = Some(
        args.admin_listen
            .or(file.admin_listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9090))),
    );
    if let Some(path) = args.path.or(file.path) {
        if !path.starts_with('/') {
            return Err(Failure::usage(format!(
                "--path must start with /: {path:?}"
            )));
        }
        config.path = path;
    }
    config.worker = WorkerOptions::default()
        .max_attempts(args.max_attempts.or(file.max_attempts).unwrap_or(10))
        .stale(stale)
        .concurrency(args.concurrency.or(file.concurrency).unwrap_or(8))
        .backoff(backoff)
        .lease(lease);
    Ok(config)
}

/// Every key of every file, as one verifier.
fn verifier(files: &[PathBuf]) -> Result<Verifier, Failure> {
    let mut pem = String::new();
    for path in files {
        pem.push_str(&read_keys(path)?);
        pem.push('\n');
    }
    Verifier::from_pem_bundle(&pem).map_err(|e| Failure::usage(format!("--keys: {e}")))
}

fn read_keys(path: &Path) -> Result<String, Failure> {
    input::read_text_capped(path, MAX_KEY_FILE, "the key file")
}
