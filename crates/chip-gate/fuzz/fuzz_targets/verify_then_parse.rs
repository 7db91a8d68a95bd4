//! Fuzz target: verify-then-parse never panics, never accepts a forged delivery, and a delivery
//! that parses re-serializes to the same JSON.
//!
//! Input layout: the first byte picks a mode, the rest is split at the first `\n` into an
//! `X-Signature` value and a body.
//! - mode 0: verify the (header, body) pair against CHIP's real key, then parse if it verifies;
//! - mode 1: sign the body with a test key, so the parser always runs after a real verification;
//! - mode 2: sign the body, flip one bit of the signature chosen by the header bytes: must be refused.
#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chip_gate::testing::TestSigner;
use chip_gate::{Delivery, Digest, Verifier};
use libfuzzer_sys::fuzz_target;

static CHIP: LazyLock<Verifier> = LazyLock::new(|| {
    Verifier::from_pem(include_str!(
        "../../tests/fixtures/chip-collect/signed-vector/public_key.pem"
    ))
    .expect("CHIP's key parses")
});

static SIGNER: LazyLock<TestSigner> = LazyLock::new(|| {
    TestSigner::from_pem(include_str!(
        "../../tests/fixtures/kat/rsa2048-private-pkcs8.pem"
    ))
    .expect("the test key parses")
});

static TEST: LazyLock<Verifier> =
    LazyLock::new(|| Verifier::new(SIGNER.verification_key().expect("the public half works")));

fn check_round_trip(body: &[u8], delivery: &Delivery) {
    let original: serde_json::Value = serde_json::from_slice(body).expect("it parsed once");
    let again = serde_json::to_value(delivery).expect("a delivery serializes");
    assert_eq!(again, original, "re-serialization changed the JSON");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let split = rest
        .iter()
        .position(|&byte| byte == b'\n')
        .unwrap_or(rest.len());
    let header = String::from_utf8_lossy(&rest[..split]);
    let body = rest.get(split + 1..).unwrap_or_default();

    match mode % 3 {
        0 => {
            if let Ok(delivery) = CHIP.verify_and_parse(body.to_vec(), &header) {
                check_round_trip(body, &delivery);
            }
        }
        1 => {
            let signature = SIGNER.sign(body, Digest::Sha256).expect("signing works");
            match TEST.verify_and_parse(body.to_vec(), &signature) {
                Ok(delivery) => check_round_trip(body, &delivery),
                Err(chip_gate::ReceiveError::Delivery(_)) => {}
                Err(other) => panic!("a genuine signature was refused: {other}"),
            }
        }
        _ => {
            let signature = SIGNER.sign(body, Digest::Sha256).expect("signing works");
            let mut raw = STANDARD
                .decode(signature)
                .expect("the signer writes base64");
            let position = header
                .bytes()
                .fold(0usize, |acc, byte| acc.wrapping_add(byte as usize));
            let index = position % (raw.len() * 8);
            raw[index / 8] ^= 1 << (index % 8);
            assert!(
                TEST.verify_decoded(body, &raw).is_err(),
                "a forged signature was accepted"
            );
        }
    }
});
