//! Flipping any bit of the body or the signature always gives a rejection, and damaged or arbitrary key
//! text gives a typed error: never a panic.
#![allow(clippy::unwrap_used)]

mod common;

use base64::Engine as _;
use chip_gate::verify::{Verifier, VerifyError};
use common::{CHIP_BODY, CHIP_PEM, CHIP_SIGNATURE};
use proptest::prelude::*;

fn verifier() -> Verifier {
    Verifier::from_pem(CHIP_PEM).unwrap()
}

fn signature_bytes() -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(CHIP_SIGNATURE.trim())
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn flipping_body_bits_is_always_rejected(flips in prop::collection::vec((0..CHIP_BODY.len(), 0u8..8), 1..4)) {
        let mut body = CHIP_BODY.to_vec();
        for (index, bit) in &flips {
            body[*index] ^= 1 << bit;
        }
        prop_assume!(body != CHIP_BODY);
        let result = verifier().verify(&body, CHIP_SIGNATURE);
        prop_assert!(matches!(result, Err(VerifyError::SignatureMismatch { .. })), "{result:?}");
        prop_assert!(verifier().verify_and_parse(body, CHIP_SIGNATURE).is_err());
    }

    #[test]
    fn flipping_signature_bits_is_always_rejected(flips in prop::collection::vec((0usize..256, 0u8..8), 1..4)) {
        let mut signature = signature_bytes();
        for (index, bit) in &flips {
            signature[*index] ^= 1 << bit;
        }
        prop_assume!(signature != signature_bytes());
        let encoded = base64::engine::general_purpose::STANDARD.encode(&signature);
        let result = verifier().verify(CHIP_BODY, &encoded);
        prop_assert!(matches!(result, Err(VerifyError::SignatureMismatch { .. })), "{result:?}");
    }

    #[test]
    fn flipping_bits_of_the_header_text_is_always_rejected(flips in prop::collection::vec((0usize..344, 0u8..8), 1..4)) {
        let mut header = CHIP_SIGNATURE.trim().as_bytes().to_vec();
        for (index, bit) in &flips {
            header[*index] ^= 1 << bit;
        }
        let header = String::from_utf8_lossy(&header).into_owned();
        prop_assume!(header != CHIP_SIGNATURE.trim());
        prop_assert!(verifier().verify(CHIP_BODY, &header).is_err());
    }

    #[test]
    fn arbitrary_bodies_and_signatures_never_panic(body in prop::collection::vec(any::<u8>(), 0..512), header in ".{0,400}") {
        prop_assert!(verifier().verify_and_parse(body, &header).is_err());
    }

    /// Key text from a file or the network: any change to CHIP's key (a flipped character, a cut)
    /// gives a key that parses or a typed error, never a panic.
    #[test]
    fn damaged_key_text_never_panics(at in 0usize..451, with in any::<char>(), cut in 0usize..451) {
        let mut text: Vec<char> = CHIP_PEM.chars().collect();
        let at = at.min(text.len() - 1);
        text[at] = with;
        text.truncate(cut.max(at + 1));
        let text: String = text.into_iter().collect();
        let _ = chip_gate::VerificationKey::from_pem(&text);
    }

    #[test]
    fn arbitrary_key_text_never_panics(text in ".{0,600}") {
        prop_assert!(chip_gate::VerificationKey::from_pem(&text).is_err());
    }
}
