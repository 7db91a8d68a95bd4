//! A scripted HTTP/1.1 server on 127.0.0.1, and clients for it. Self-contained: the quickstart's
//! test (`chip-gate-quickstart`) includes it too.
//!
//! The server reads each request whole, records it, and then does what the test's script says for
//! that request: answer with a status, headers and body, wait first, or close the connection without
//! answering. Every answer carries `Connection: close`, so each request arrives on a new connection
//! and a dropped connection affects exactly one request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The key the tests authenticate with. Long and distinctive, so a leak cannot be a coincidence.
pub const KEY: &str = "sk_test_Zq8JtW4vXk2pR9mN7bL3cY6hD1fG5sA0";

/// A request as the server received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `POST`...
    pub method: String,
    /// The path and query, e.g. `/api/v1/webhooks/?page=2`.
    pub target: String,
    /// The header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Seen {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the server does with one request.
#[derive(Clone, Debug)]
pub enum Step {
    /// Answer with this status, extra headers and body.
    Reply(u16, Vec<(String, String)>, String),
    /// Close the connection without answering.
    Drop,
    /// Wait, then do the inner step.
    Slow(Duration, Box<Step>),
}

/// A JSON answer.
pub fn json(status: u16, body: serde_json::Value) -> Step {
    Step::Reply(
        status,
        vec![("content-type".into(), "application/json".into())],
        body.to_string(),
    )
}

/// A raw answer with a content type.
pub fn raw(status: u16, content_type: &str, body: &str) -> Step {
    Step::Reply(
        status,
        vec![("content-type".into(), content_type.into())],
        body.into(),
    )
}

type Script = dyn Fn(usize, &Seen) -> Step + Send + Sync;

/// A running scripted server.
pub struct ScriptServer {
    /// The base URL, `http://127.0.0.1:PORT/api/v1`.
    pub base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl ScriptServer {
    /// Start a server that answers request number `n` (0-based) with `script(n, &request)`.
    pub async fn start(script: impl Fn(usize, &Seen) -> Step + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let script = script.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, script, log).await;
                });
            }
        });
        ScriptServer {
            base_url: format!("http://127.0.0.1:{port}/api/v1"),
            seen,
        }
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn serve(
    mut stream: TcpStream,
    script: Arc<Script>,
    log: Arc<Mutex<Vec<Seen>>>,
) -> std::io::Result<()> {
    let Some(request) = read_request(&mut stream).await? else {
        return Ok(());
    };
    let n = {
        let mut log = log.lock().unwrap();
        log.push(request.clone());
        log.len() - 1
    };
    let mut step = script(n, &request);
    loop {
        match step {
            Step::Slow(delay, inner) => {
                tokio::time::sleep(delay).await;
                step = *inner;
            }
            Step::Drop => return Ok(()),
            Step::Reply(status, headers, body) => {
                let mut out = format!("HTTP/1.1 {status} X\r\nconnection: close\r\n");
                for (name, value) in headers {
                    out.push_str(&format!("{name}: {value}\r\n"));
                }
                out.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
                stream.write_all(out.as_bytes()).await?;
                stream.shutdown().await?;
                return Ok(());
            }
        }
    }
}

async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Seen>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(Seen {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&body).to_string(),
    }))
}

/// A webhook as CHIP returns it.
pub fn webhook_json(id: &str, title: &str, events: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "type": "webhook",
        "id": id,
        "created_on": 1_700_000_000,
        "updated_on": 1_700_000_000,
        "title": title,
        "all_events": false,
        "events": events,
        "callback": "https://shop.example.com/chip",
        "public_key": "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n",
    })
}

/// A client for `base_url` with fast retries and short timeouts.
pub fn client(base_url: &str) -> chip_gate::Client {
    client_with(base_url, chip_gate::RetryPolicy::default())
}

/// A client for `base_url` with short timeouts and the given policy (its backoff shortened).
pub fn client_with(base_url: &str, policy: chip_gate::RetryPolicy) -> chip_gate::Client {
    chip_gate::Client::builder(KEY)
        .base_url(base_url)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .retry_policy(
            policy
                .initial_backoff(Duration::from_millis(10))
                .max_backoff(Duration::from_millis(50)),
        )
        .build()
        .unwrap()
}
