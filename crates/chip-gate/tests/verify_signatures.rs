//! Signature verification against CHIP's real vector and OpenSSL-made known answers.
#![allow(clippy::unwrap_used)]

mod common;

use chip_gate::testing::TestSigner;
use chip_gate::verify::{self, Digest, KeyError, VerificationKey, Verifier, VerifyError};
use common::{
    CHIP_BODY, CHIP_PEM, CHIP_SIGNATURE, RSA2048_PRIVATE_PKCS8, RSA2048_PUBLIC,
    RSA3072_PRIVATE_PKCS8, RSA3072_PUBLIC,
};
use http::{HeaderMap, HeaderValue};

const KAT_BODY: &[u8] = include_bytes!("fixtures/kat/body.json");
const RSA2048_PUBLIC_PKCS1: &str = include_str!("fixtures/kat/rsa2048-public-pkcs1.pem");
const RSA2048_CERT: &str = include_str!("fixtures/kat/rsa2048-cert.pem");
const RSA2048_PRIVATE_PKCS1: &str = include_str!("fixtures/kat/rsa2048-private-pkcs1.pem");
const RSA2048_SHA256: &str = include_str!("fixtures/kat/rsa2048-sha256.sig.b64");
const RSA2048_SHA512: &str = include_str!("fixtures/kat/rsa2048-sha512.sig.b64");
const RSA3072_SHA256: &str = include_str!("fixtures/kat/rsa3072-sha256.sig.b64");
const RSA3072_SHA512: &str = include_str!("fixtures/kat/rsa3072-sha512.sig.b64");
const RSA1024_PUBLIC: &str = include_str!("fixtures/kat/rsa1024-public-spki.pem");
const EC_PUBLIC: &str = include_str!("fixtures/kat/ec-p256-public-spki.pem");

fn headers_with(signature: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "X-Signature",
        HeaderValue::from_str(signature.trim()).unwrap(),
    );
    headers
}

/// The PEM with its newlines escaped, as some CHIP clients store it.
fn escaped(pem: &str) -> String {
    pem.replace('\n', "\\n")
}

/// The JSON string `GET /public_key/` returns, quotes included.
fn json_string(pem: &str) -> String {
    serde_json::to_string(pem).unwrap()
}

#[test]
fn chip_vector_verifies_with_sha256_and_not_sha512() {
    let verifier = Verifier::from_pem(CHIP_PEM).unwrap();
    assert_eq!(verifier.digest(), Digest::Sha256);
    assert_eq!(verifier.verify(CHIP_BODY, CHIP_SIGNATURE), Ok(()));
    assert_eq!(
        verifier
            .clone()
            .with_digest(Digest::Sha512)
            .verify(CHIP_BODY, CHIP_SIGNATURE),
        Err(VerifyError::SignatureMismatch {
            digest: Digest::Sha512
        })
    );
    assert_eq!(CHIP_BODY.len(), 2209);
}

#[test]
fn chip_vector_verifies_from_the_header_map() {
    let verifier = Verifier::from_pem(CHIP_PEM).unwrap();
    assert_eq!(
        verifier.verify_headers(CHIP_BODY, &headers_with(CHIP_SIGNATURE)),
        Ok(())
    );
}

#[test]
fn chip_vector_key_in_every_text_form() {
    let escaped_pem = escaped(CHIP_PEM);
    assert!(escaped_pem.contains("\\n") && !escaped_pem.contains('\n'));
    let json = json_string(CHIP_PEM);
    assert!(json.starts_with('"') && json.contains("\\n"));
    for form in [
        CHIP_PEM.to_owned(),
        escaped_pem,
        json,
        format!("  {CHIP_PEM}  \n"),
    ] {
        let key: VerificationKey = form.parse().unwrap();
        assert_eq!(key.bits(), 2048);
        assert_eq!(key.signature_len(), 256);
        let verifier = Verifier::new(key);
        assert_eq!(
            verifier.verify(CHIP_BODY, CHIP_SIGNATURE),
            Ok(()),
            "form: {form:?}"
        );
    }
}

#[test]
fn chip_vector_rejects_a_changed_body() {
    let verifier = Verifier::from_pem(CHIP_PEM).unwrap();
    let mut body = CHIP_BODY.to_vec();
    body.push(b'\n'); // re-serialised or pretty-printed JSON never verifies
    assert_eq!(
        verifier.verify(&body, CHIP_SIGNATURE),
        Err(VerifyError::SignatureMismatch {
            digest: Digest::Sha256
        })
    );
}

#[test]
fn openssl_known_answers_verify_with_their_digest_only() {
    let cases = [
        (RSA2048_PUBLIC, 2048, RSA2048_SHA256, RSA2048_SHA512),
        (RSA3072_PUBLIC, 3072, RSA3072_SHA256, RSA3072_SHA512),
    ];
    for (pem, bits, sha256, sha512) in cases {
        let key = VerificationKey::from_pem(pem).unwrap();
        assert_eq!(key.bits(), bits);
        assert_eq!(key.signature_len(), bits / 8);
        let sha256_verifier = Verifier::new(key.clone());
        let sha512_verifier = Verifier::new(key).with_digest(Digest::Sha512);
        assert_eq!(sha256_verifier.verify(KAT_BODY, sha256), Ok(()));
        assert_eq!(sha512_verifier.verify(KAT_BODY, sha512), Ok(()));
        assert_eq!(
            sha256_verifier.verify(KAT_BODY, sha512),
            Err(VerifyError::SignatureMismatch {
                digest: Digest::Sha256
            })
        );
        assert_eq!(
            sha512_verifier.verify(KAT_BODY, sha256),
            Err(VerifyError::SignatureMismatch {
                digest: Digest::Sha512
            })
        );
    }
}

#[test]
fn pkcs1_public_pem_and_certificate_give_the_same_key() {
    let spki = VerificationKey::from_pem(RSA2048_PUBLIC).unwrap();
    let pkcs1 = VerificationKey::from_pem(RSA2048_PUBLIC_PKCS1).unwrap();
    let cert = VerificationKey::from_pem(RSA2048_CERT).unwrap();
    assert_eq!(pkcs1.spki_der(), spki.spki_der());
    assert_eq!(cert.spki_der(), spki.spki_der());
    assert_eq!(cert.fingerprint(), spki.fingerprint());
    for key in [pkcs1, cert] {
        assert_eq!(Verifier::new(key).verify(KAT_BODY, RSA2048_SHA256), Ok(()));
    }
    // A certificate given as escaped PEM works too.
    let cert = VerificationKey::from_pem(&escaped(RSA2048_CERT)).unwrap();
    assert_eq!(cert.bits(), 2048);
}

#[test]
fn a_verifier_with_several_keys_accepts_any_of_them() {
    let verifier = Verifier::with_keys([
        VerificationKey::from_pem(CHIP_PEM).unwrap(),
        VerificationKey::from_pem(RSA2048_PUBLIC).unwrap(),
        VerificationKey::from_pem(RSA3072_PUBLIC).unwrap(),
    ])
    .unwrap();
    assert_eq!(verifier.keys().len(), 3);
    assert_eq!(verifier.verify(CHIP_BODY, CHIP_SIGNATURE), Ok(()));
    assert_eq!(verifier.verify(KAT_BODY, RSA2048_SHA256), Ok(()));
    assert_eq!(verifier.verify(KAT_BODY, RSA3072_SHA256), Ok(()));
    assert_eq!(
        verifier.verify(CHIP_BODY, RSA2048_SHA256),
        Err(VerifyError::SignatureMismatch {
            digest: Digest::Sha256
        })
    );
    // Only the old key: a delivery signed by the new one is refused.
    let old_only = Verifier::from_pem(CHIP_PEM).unwrap();
    assert!(old_only.verify(KAT_BODY, RSA2048_SHA256).is_err());
}

#[test]
fn rejects_a_missing_header() {
    let verifier = Verifier::from_pem(CHIP_PEM).unwrap();
    assert_eq!(
        verifier.verify_headers(CHIP_BODY, &HeaderMap::new()),
        Err(VerifyError::MissingSignature)
    );
    assert_eq!(
        verifier.verify(CHIP_BODY, "  "),
        Err(VerifyError::MissingSignature)
    );
}

#[test]
fn rejects_a_header_that_is_not_base64() {
    let verifier = Verifier::from_pem(CHIP_PEM).unwrap();
    assert_eq!(
        verifier.verify(CHIP_BODY, "not base64 at all!"),
        Err(VerifyError::SignatureNotBase64)
    );
    // URL-safe alphabet is not what CHIP sends.
    let url_safe = CHIP_SIGNATURE.replace('+', "-").replace('/', "_");
    assert_eq!(
        verifier.verify(CHIP_BODY, &url_safe),
        Err(VerifyError::SignatureNotBase64)
    );
    // A header value that is not even text.
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-signature",
        HeaderValue::from_bytes(&[0xff, 0xfe]).unwrap(),
    );
    assert_eq!(
        verifier.verify_headers(CHIP_BODY, &headers),
        Err(VerifyError::SignatureNotBase64)
    );
}

#[test]
fn rejects_a_signature_of_the_wrong_length() {
    let verifier = Verifier::from_pem(CHIP_PEM).unwrap();
    // A 3072-bit signature against a 2048-bit key.
    assert_eq!(
        verifier.verify(KAT_BODY, RSA3072_SHA256),
        Err(VerifyError::SignatureLength {
            actual: 384,
            expected: vec![256]
        })
    );
    let two_sizes = Verifier::with_keys([
        VerificationKey::from_pem(RSA3072_PUBLIC).unwrap(),
        VerificationKey::from_pem(CHIP_PEM).unwrap(),
    ])
    .unwrap();
    assert_eq!(
        two_sizes.verify(CHIP_BODY, "AAECAw=="),
        Err(VerifyError::SignatureLength {
            actual: 4,
            expected: vec![256, 384]
        })
    );
}

#[test]
fn rejects_a_signature_that_does_not_match() {
    let verifier = Verifier::from_pem(RSA2048_PUBLIC).unwrap();
    assert_eq!(
        verifier.verify(CHIP_BODY, CHIP_SIGNATURE),
        Err(VerifyError::SignatureMismatch {
            digest: Digest::Sha256
        })
    );
}

#[test]
fn rejects_an_unusable_key() {
    assert_eq!(
        verify::verify_with_pem("not a key", Digest::Sha256, CHIP_BODY, CHIP_SIGNATURE),
        Err(VerifyError::KeyUnusable(KeyError::NoPublicKey))
    );
    assert_eq!(
        verify::verify_with_pem(RSA1024_PUBLIC, Digest::Sha256, CHIP_BODY, CHIP_SIGNATURE),
        Err(VerifyError::KeyUnusable(KeyError::UnsupportedKeySize {
            bits: 1024
        }))
    );
    assert_eq!(
        verify::verify_with_pem(CHIP_PEM, Digest::Sha256, CHIP_BODY, CHIP_SIGNATURE),
        Ok(())
    );
    assert_eq!(Verifier::with_keys([]).err(), Some(KeyError::NoKeys));
}

#[test]
fn key_parsing_errors_are_specific() {
    assert_eq!(
        VerificationKey::from_pem(RSA1024_PUBLIC).err(),
        Some(KeyError::UnsupportedKeySize { bits: 1024 })
    );
    assert_eq!(
        VerificationKey::from_pem(EC_PUBLIC).err(),
        Some(KeyError::NotRsaPublicKey)
    );
    assert_eq!(
        VerificationKey::from_pem(RSA2048_PRIVATE_PKCS8).err(),
        Some(KeyError::PrivateKeyGiven)
    );
    assert_eq!(
        VerificationKey::from_pem("").err(),
        Some(KeyError::NoPublicKey)
    );
    assert_eq!(
        VerificationKey::from_pem("\"-----BEGIN PUBLIC KEY-----\\n").err(),
        Some(KeyError::InvalidJsonString)
    );
    let truncated = &CHIP_PEM[..CHIP_PEM.len() - 30];
    assert!(matches!(
        VerificationKey::from_pem(truncated).err(),
        Some(KeyError::MalformedPem(_))
    ));
    let garbage_der = "-----BEGIN PUBLIC KEY-----\nAAECAwQF\n-----END PUBLIC KEY-----\n";
    assert_eq!(
        VerificationKey::from_pem(garbage_der).err(),
        Some(KeyError::NotRsaPublicKey)
    );
    let garbage_cert = "-----BEGIN CERTIFICATE-----\nAAECAwQF\n-----END CERTIFICATE-----\n";
    assert_eq!(
        VerificationKey::from_pem(garbage_cert).err(),
        Some(KeyError::InvalidCertificate)
    );
}

#[test]
fn errors_and_debug_output_stay_small_and_leak_nothing() {
    let verifier = Verifier::from_pem(CHIP_PEM).unwrap();
    let debug = format!("{verifier:?}");
    assert!(debug.contains("bits: 2048"), "{debug}");
    assert!(!debug.contains("MIIB"), "{debug}");
    assert!(debug.len() < 200, "{debug}");
    let errors = [
        verifier.verify(CHIP_BODY, "###").unwrap_err(),
        verifier.verify(KAT_BODY, CHIP_SIGNATURE).unwrap_err(),
        verifier.verify(CHIP_BODY, RSA3072_SHA256).unwrap_err(),
    ];
    for error in errors {
        let text = format!("{error} {error:?}");
        assert!(text.len() < 200, "{text}");
        assert!(!text.contains("purchase"), "{text}");
        assert!(!text.contains(&CHIP_SIGNATURE[..20]), "{text}");
    }
    let signer = TestSigner::from_pem(RSA2048_PRIVATE_PKCS8).unwrap();
    let debug = format!("{signer:?}");
    assert!(!debug.contains("MII") && debug.len() < 60, "{debug}");
}

#[test]
fn the_test_signer_reproduces_openssl_signatures_exactly() {
    // PKCS#1 v1.5 signatures are deterministic: same key, digest and body give the same bytes.
    let cases = [
        (RSA2048_PRIVATE_PKCS8, Digest::Sha256, RSA2048_SHA256),
        (RSA2048_PRIVATE_PKCS8, Digest::Sha512, RSA2048_SHA512),
        (RSA2048_PRIVATE_PKCS1, Digest::Sha256, RSA2048_SHA256),
        (RSA3072_PRIVATE_PKCS8, Digest::Sha256, RSA3072_SHA256),
        (RSA3072_PRIVATE_PKCS8, Digest::Sha512, RSA3072_SHA512),
    ];
    for (private, digest, expected) in cases {
        let signer = TestSigner::from_pem(private).unwrap();
        assert_eq!(signer.sign(KAT_BODY, digest).unwrap(), expected.trim());
    }
}

#[test]
fn the_test_signer_round_trips_through_its_public_key() {
    let signer = TestSigner::from_pem(RSA2048_PRIVATE_PKCS1).unwrap();
    let pem = signer.public_key_pem().unwrap();
    assert_eq!(pem, RSA2048_PUBLIC);
    let verifier = Verifier::from_pem(&pem).unwrap();
    let body = br#"{"id":"x","event_type":"purchase.paid"}"#;
    let headers = signer.signed_headers(body, Digest::Sha256).unwrap();
    assert_eq!(verifier.verify_headers(body, &headers), Ok(()));
    assert_eq!(
        Verifier::new(signer.verification_key().unwrap()).verify_headers(body, &headers),
        Ok(())
    );
    assert!(TestSigner::from_pem(RSA2048_PUBLIC).is_err());
}

#[test]
fn a_pem_bundle_verifies_deliveries_of_each_of_its_keys() {
    let bundle = format!("{}\n{}", CHIP_PEM, RSA3072_PUBLIC);
    let verifier = chip_gate::Verifier::from_pem_bundle(&bundle).unwrap();
    assert_eq!(verifier.keys().len(), 2);
    verifier.verify(CHIP_BODY, CHIP_SIGNATURE).unwrap();
    assert_eq!(
        chip_gate::Verifier::from_pem_bundle(&format!("{bundle}\n{RSA2048_PRIVATE_PKCS8}")).err(),
        Some(chip_gate::KeyError::PrivateKeyGiven)
    );
}
