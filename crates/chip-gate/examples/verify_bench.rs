//! Verification throughput, in one run, on the same ~3 KB body and RSA-3072 key:
//!
//! - (a) chip-gate, key parsed once ([`Verifier`] built at start-up);
//! - (b) chip-gate, key parsed on every call ([`verify::verify_with_pem`]);
//! - (c) the common baseline of other Rust CHIP clients: parse the PEM on every call with the
//!   pure-Rust `rsa` crate and verify PKCS#1 v1.5 SHA-256.
//!
//! Every variant decodes the base64 `X-Signature` on every call, and every call must succeed.
//!
//! ```sh
//! cargo run --release -p chip-gate --example verify_bench            # 3 s per variant
//! BENCH_SECONDS=10 cargo run --release -p chip-gate --example verify_bench
//! openssl speed -seconds 3 rsa3072                                     # the practical limit
//! ```
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::Engine as _;
use chip_gate::verify::{self, Digest, Verifier};
use rsa::pkcs8::DecodePublicKey as _;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha2::Digest as _;

const PUBLIC_KEY_PEM: &str = include_str!("../tests/fixtures/kat/rsa3072-public-spki.pem");
const BODY: &[u8] = include_bytes!("../tests/fixtures/kat/body.json");
const X_SIGNATURE: &str = include_str!("../tests/fixtures/kat/rsa3072-sha256.sig.b64");

/// Nanoseconds of CPU time this thread has used (Linux `/proc/thread-self/schedstat`), if known.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Verifications per second of wall-clock time and, when known, per second of this thread's CPU
/// time (what `openssl speed` divides by unless given `-elapsed`).
struct Rate {
    wall: f64,
    cpu: Option<f64>,
}

/// Runs `verify` for about `seconds` (after a short warm-up) and measures its rate.
fn rate(seconds: f64, mut verify: impl FnMut() -> bool) -> Rate {
    let warm_up = Instant::now();
    while warm_up.elapsed() < Duration::from_millis(300) {
        assert!(verify(), "warm-up verification failed");
    }
    let budget = Duration::from_secs_f64(seconds);
    let cpu_start = thread_cpu_ns();
    let start = Instant::now();
    let mut count: u64 = 0;
    while start.elapsed() < budget {
        for _ in 0..16 {
            assert!(black_box(verify()), "verification failed");
        }
        count += 16;
    }
    let wall = count as f64 / start.elapsed().as_secs_f64();
    let cpu = match (cpu_start, thread_cpu_ns()) {
        (Some(begin), Some(end)) if end > begin => Some(count as f64 * 1e9 / (end - begin) as f64),
        _ => None,
    };
    Rate { wall, cpu }
}

fn show(name: &str, rate: &Rate) {
    match rate.cpu {
        Some(cpu) => println!(
            "{name} {:>9.0} /s wall-clock   {cpu:>9.0} /s of CPU time",
            rate.wall
        ),
        None => println!("{name} {:>9.0} /s wall-clock", rate.wall),
    }
}

fn ratio(name: &str, top: &Rate, bottom: &Rate) {
    match (top.cpu, bottom.cpu) {
        (Some(a), Some(b)) => println!(
            "{name} = {:.1}x wall-clock, {:.1}x CPU time",
            top.wall / bottom.wall,
            a / b
        ),
        _ => println!("{name} = {:.1}x wall-clock", top.wall / bottom.wall),
    }
}

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(3.0);
    let signature = X_SIGNATURE.trim();
    println!(
        "body: {} bytes, key: RSA-3072, digest: SHA-256, {seconds} s per variant",
        BODY.len()
    );

    let verifier = Verifier::from_pem(PUBLIC_KEY_PEM).unwrap();
    assert_eq!(verifier.keys()[0].bits(), 3072);
    let parsed_once = rate(seconds, || {
        verifier
            .verify(black_box(BODY), black_box(signature))
            .is_ok()
    });

    let parsed_each_call = rate(seconds, || {
        verify::verify_with_pem(
            black_box(PUBLIC_KEY_PEM),
            Digest::Sha256,
            black_box(BODY),
            black_box(signature),
        )
        .is_ok()
    });

    let baseline = rate(seconds, || {
        let key = RsaPublicKey::from_public_key_pem(black_box(PUBLIC_KEY_PEM)).unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(black_box(signature))
            .unwrap();
        let hash = sha2::Sha256::digest(black_box(BODY));
        key.verify(Pkcs1v15Sign::new::<sha2::Sha256>(), &hash, &raw)
            .is_ok()
    });

    show("(a) chip-gate, key parsed once     ", &parsed_once);
    show("(b) chip-gate, key parsed each call", &parsed_each_call);
    show("(c) rsa crate, PEM parsed each call", &baseline);
    ratio("(a)/(c)", &parsed_once, &baseline);
    ratio("(b)/(c)", &parsed_each_call, &baseline);
    ratio("(a)/(b)", &parsed_once, &parsed_each_call);
}
