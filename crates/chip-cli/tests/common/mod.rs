//! Helpers shared by the CLI test files: run `chip` against an in-process mock on 127.0.0.1.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chip_gate_mock::{MockConfig, MockServer};

#[path = "../../../chip-gate-inbox/tests/common/drop_database.rs"]
mod drop_database;
#[allow(unused_imports, reason = "not every test file drops a database")]
pub use drop_database::drop_test_database;

/// The `chip` binary under test.
pub const CHIP: &str = env!("CARGO_BIN_EXE_chip");

/// A finished `chip` run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts exit 0 and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Asserts exit 0 with nothing on stderr, and returns stdout.
    pub fn ok_silent(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert_eq!(self.stderr, "");
        &self.stdout
    }

    /// Asserts the exit code and a single error line on stderr, and returns that line.
    pub fn failed(&self, code: i32) -> &str {
        assert_eq!(
            self.code,
            Some(code),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert_eq!(self.stdout, "");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {}", self.stderr);
        assert!(lines[0].starts_with("error: "), "{}", self.stderr);
        lines[0]
    }
}

/// A mock on a free port of 127.0.0.1 with pre-made keys (fast).
pub async fn mock() -> MockServer {
    MockServer::start(MockConfig {
        page_size: 2,
        generate_keys: false,
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

/// A `chip` command with the mock's URL and key in a clean environment (no proxies, no
/// backtraces).
pub fn command(mock: &MockServer, args: &[&str]) -> Command {
    let mut command = Command::new(CHIP);
    command.args(args);
    connect(&mut command, mock);
    command
}

/// Points `command` (`chip`, or a shell or terminal running it) at the mock: its URL and key in
/// the environment, and no proxies or backtraces from ours.
pub fn connect<'a>(command: &'a mut Command, mock: &MockServer) -> &'a mut Command {
    command
        .env("CHIP_BASE_URL", mock.base_url())
        .env("CHIP_API_KEY", mock.api_key())
        .env_remove("RUST_BACKTRACE");
    for proxy in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ] {
        command.env_remove(proxy);
    }
    command
}

/// A `chip` command that takes none of its settings from our environment: no API key, base URL
/// or inbox database, and no backtraces.
pub fn bare(args: &[&str]) -> Command {
    let mut command = Command::new(CHIP);
    command.args(args);
    for name in [
        "CHIP_API_KEY",
        "CHIP_BASE_URL",
        "CHIP_INBOX_DATABASE_URL",
        "RUST_BACKTRACE",
    ] {
        command.env_remove(name);
    }
    command
}

/// Runs `command` to the end on a blocking thread.
pub async fn run(mut command: Command) -> Run {
    command.stdin(Stdio::null());
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `command` with stdout a pipe whose read end is closed before `chip` starts, so that its
/// first write fails whatever the timing. (Closing it after the spawn raced with that write: a
/// `chip listen` that wrote its first line first kept serving, and the test never ended.)
pub async fn with_closed_stdout(mut command: Command) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped());
    let out =
        tokio::task::spawn_blocking(move || command.spawn().unwrap().wait_with_output().unwrap())
            .await
            .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes `text` to `dir/name` and returns the path as text.
pub fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs `command` to the end and checks that the mock's API key is in neither of its outputs.
pub async fn run_hiding_key(mock: &MockServer, command: Command) -> Run {
    let out = run(command).await;
    assert!(!out.stdout.contains(mock.api_key()) && !out.stderr.contains(mock.api_key()));
    out
}

/// Runs `chip args...` against the mock.
pub async fn chip(mock: &MockServer, args: &[&str]) -> Run {
    run(command(mock, args)).await
}

/// Creates a webhook for `purchase.paid` calling `callback` and returns its id.
pub async fn create(mock: &MockServer, callback: &str) -> String {
    let run = chip(
        mock,
        &[
            "webhooks",
            "create",
            "--title",
            "Test",
            "--callback",
            callback,
            "--event",
            "purchase.paid",
            "--id-only",
        ],
    )
    .await;
    run.ok().trim().to_owned()
}

/// A running `chip listen`, its stdout read line by line.
pub struct Listening {
    pub child: Child,
    pub url: String,
    pub lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Listening {
    /// The next stdout line, within 20 s.
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(20), self.lines.recv())
            .await
            .expect("a line within 20 s")
            .expect("the listener is still printing")
    }

    /// Waits for the listener to exit and returns its run (stdout is the lines not read yet).
    pub async fn finish(mut self) -> Run {
        let child = self.child;
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
        )
        .await
        .expect("the listener exits within 20 s")
        .unwrap();
        let mut stdout = String::new();
        while let Ok(line) = self.lines.try_recv() {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        Run {
            code: out.status.code(),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Starts `chip listen --port 0 args...` and waits for its first line.
pub async fn listen(mock: &MockServer, args: &[&str]) -> Listening {
    let mut command = command(mock, &["listen", "--port", "0"]);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut listening = Listening {
        child,
        url: String::new(),
        lines,
    };
    let first = listening.line().await;
    listening.url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:"))
        .unwrap()
        .to_owned();
    listening
}

/// A `chip mock` running in the foreground, and what it printed up to its `export CHIP_API_KEY=`
/// line.
pub struct ChipMock {
    pub child: Child,
    pub printed: Vec<String>,
}

impl ChipMock {
    /// The value of its `export NAME=` line.
    pub fn export(&self, name: &str) -> String {
        let prefix = format!("export {name}=");
        self.printed
            .iter()
            .find_map(|l| l.trim().strip_prefix(prefix.as_str()))
            .unwrap()
            .to_owned()
    }

    /// Kills it and waits for it.
    pub fn stop(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Starts `chip mock --port 0 args...` and reads its lines up to the `export CHIP_API_KEY=` one
/// (each within 30 s). Its stdout is read until it ends: a closed stdout would stop it.
pub async fn chip_mock(args: &[&str]) -> ChipMock {
    let mut child = bare(&["mock", "--port", "0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let mut printed: Vec<String> = Vec::new();
    while !printed.iter().any(|l| l.contains("export CHIP_API_KEY=")) {
        let line = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap();
        printed.push(line);
    }
    ChipMock { child, printed }
}

/// A file of the signed test vector in chip-gate's fixtures.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../chip-gate/tests/fixtures/chip-collect/signed-vector")
        .join(name)
}

/// The body of the signed test vector (a `purchase.created`).
pub fn vector_body() -> Vec<u8> {
    std::fs::read(fixture("body.json")).unwrap()
}

/// The X-Signature of the signed test vector, without surrounding whitespace.
pub fn vector_signature() -> String {
    std::fs::read_to_string(fixture("x-signature.txt"))
        .unwrap()
        .trim()
        .to_owned()
}

/// An HTTP client for the listener under test that never goes through a proxy from the
/// environment.
pub fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Posts the signed test vector to `url` (a listener) and returns the answer's status.
pub async fn deliver_vector(url: &str) -> u16 {
    http()
        .post(url)
        .header("X-Signature", vector_signature())
        .body(vector_body())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Two webhooks (`paid` for `purchase.paid`, `all` for every event) calling a local sink that
/// answers 200, applied with `chip webhooks apply --yes --keys-out DIR/keys.pem`.
pub struct AppliedBundle {
    /// The folder holding the webhook file and the bundle.
    pub dir: tempfile::TempDir,
    /// The webhook file.
    pub file: String,
    /// The key bundle `--keys-out` wrote.
    pub keys: String,
    /// The `apply` run.
    pub applied: Run,
}

/// Applies [`AppliedBundle`]'s two webhooks against `mock`.
pub async fn apply_with_keys_out(mock: &MockServer) -> AppliedBundle {
    use axum::{Router, routing::post};

    let sink = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = sink.local_addr().unwrap().port();
    tokio::spawn(async move {
        let app = Router::new().route("/{*path}", post(|| async { "ok" }));
        axum::serve(sink, app).await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[webhook]]\ntitle = \"paid\"\ncallback = \"http://127.0.0.1:{port}/paid\"\nevents = [\"purchase.paid\"]\n\n[[webhook]]\ntitle = \"all\"\ncallback = \"http://127.0.0.1:{port}/all\"\nall_events = true\n"
    );
    let file = write(dir.path(), "f.toml", &text);
    let keys = dir.path().join("keys.pem").to_str().unwrap().to_owned();
    let applied = run_hiding_key(
        mock,
        command(
            mock,
            &[
                "webhooks",
                "apply",
                "-f",
                &file,
                "--yes",
                "--keys-out",
                &keys,
            ],
        ),
    )
    .await;
    AppliedBundle {
        dir,
        file,
        keys,
        applied,
    }
}

/// Fires `purchase.paid` and returns the mock's delivery log once both webhooks of an
/// [`AppliedBundle`] have accepted one, with the ids of the two webhooks.
pub async fn one_delivery_to_each(
    mock: &MockServer,
) -> (Vec<chip_gate_mock::DeliveryRecord>, Vec<uuid::Uuid>) {
    mock.trigger(chip_gate::EventName::PurchasePaid, None)
        .await
        .unwrap();
    let log = mock
        .wait_for_deliveries(Duration::from_secs(10), |log| {
            log.iter().filter(|d| d.accepted).count() >= 2
        })
        .await
        .unwrap();
    let mut hooks: Vec<_> = log.iter().map(|d| d.webhook_id).collect();
    hooks.sort();
    hooks.dedup();
    assert_eq!(hooks.len(), 2, "one delivery to each webhook");
    (log, hooks)
}
