//! The set-up the test binaries of this crate share: a scripted HTTP/1.1 server and clients for it
//! ([`script`]), the local CHIP Gate mock and clients for it ([`mock`]), a receiver served with
//! `chip_gate::serve` and what sends to it ([`receiver`]), the key fixtures, and a log capture.
//!
//! Each test binary includes it with `mod common;` and uses what it needs.

#![allow(dead_code, clippy::unwrap_used)]

pub mod mock;
pub mod receiver;
pub mod script;

use std::io::Write;
use std::sync::{Arc, Mutex};

pub use script::KEY;

/// A fixed webhook id for tests.
pub const ID: &str = "6f1a4e2c-3b5d-4c7e-9a8f-0b1c2d3e4f50";

/// [`ID`] as a UUID.
pub fn id() -> uuid::Uuid {
    ID.parse().unwrap()
}

/// Fails when `text` holds the API key, or a recognisable piece of it.
pub fn assert_no_key(text: &str) {
    assert!(!text.contains(KEY), "the API key leaked into:\n{text}");
    // Not even a recognisable piece of it.
    assert!(
        !text.contains(&KEY[8..24]),
        "part of the API key leaked into:\n{text}"
    );
}

/// The public key of CHIP's signed delivery (a real one, from CHIP's documentation).
pub const CHIP_PEM: &str = include_str!("../fixtures/chip-collect/signed-vector/public_key.pem");
/// The body of CHIP's signed delivery.
pub const CHIP_BODY: &[u8] = include_bytes!("../fixtures/chip-collect/signed-vector/body.json");
/// The `X-Signature` of CHIP's signed delivery.
pub const CHIP_SIGNATURE: &str =
    include_str!("../fixtures/chip-collect/signed-vector/x-signature.txt");

/// The 2048-bit test key pair (known-answer fixtures): the public key, as SPKI PEM.
pub const RSA2048_PUBLIC: &str = include_str!("../fixtures/kat/rsa2048-public-spki.pem");
/// The 2048-bit test key pair: the private key, as PKCS #8 PEM.
pub const RSA2048_PRIVATE_PKCS8: &str = include_str!("../fixtures/kat/rsa2048-private-pkcs8.pem");
/// The 3072-bit test key pair: the public key, as SPKI PEM.
pub const RSA3072_PUBLIC: &str = include_str!("../fixtures/kat/rsa3072-public-spki.pem");
/// The 3072-bit test key pair: the private key, as PKCS #8 PEM.
pub const RSA3072_PRIVATE_PKCS8: &str = include_str!("../fixtures/kat/rsa3072-private-pkcs8.pem");

/// The body of one of CHIP's delivery samples (`chip-collect/deliveries/FILE`), which live once
/// in the workspace, in the mock crate.
pub fn sample(file: &str) -> Vec<u8> {
    let sample = chip_gate_mock::SAMPLES
        .iter()
        .find(|s| s.file == file)
        .unwrap_or_else(|| panic!("no delivery sample {file}"));
    sample.body.as_bytes().to_vec()
}

/// A fixture file of this crate (`tests/fixtures/NAME`), or one of CHIP's delivery samples
/// (`chip-collect/deliveries/FILE`, see [`sample`]).
pub fn fixture(name: &str) -> Vec<u8> {
    if let Some(file) = name.strip_prefix("chip-collect/deliveries/") {
        return sample(file);
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// A signer with the 2048-bit test key ([`RSA2048_PRIVATE_PKCS8`]), for signing deliveries.
pub fn signer() -> chip_gate::testing::TestSigner {
    chip_gate::testing::TestSigner::from_pem(RSA2048_PRIVATE_PKCS8).unwrap()
}

/// This test binary, set to run only the test `name` (exactly, its output shown, on one thread):
/// how a test runs itself again in a child process with another environment.
pub fn this_test(name: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"]);
    cmd
}

/// A `tracing` writer that appends everything to a shared buffer.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Capture {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).to_string()
    }

    /// Forgets everything written so far.
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    /// Everything written so far, by line.
    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }
}
