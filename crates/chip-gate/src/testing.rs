//! Sign your own test deliveries (feature `test-support`).
//!
//! [`TestSigner`] signs bodies the way CHIP does (RSA PKCS#1 v1.5, SHA-256 or SHA-512, base64), so a
//! receiver can be tested end to end without CHIP. Bring a key made once with openssl, e.g.
//! `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out test-key.pem`.
//!
//! ```
//! use chip_gate::testing::TestSigner;
//! use chip_gate::{Digest, Verifier};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let signer = TestSigner::from_pem(include_str!("../tests/fixtures/kat/rsa2048-private-pkcs8.pem"))?;
//! let body = br#"{"id":"1","type":"purchase","event_type":"purchase.paid"}"#;
//! let x_signature = signer.sign(body, Digest::Sha256)?;
//!
//! let verifier = Verifier::new(signer.verification_key()?);
//! verifier.verify(body, &x_signature)?;
//! # Ok(())
//! # }
//! ```

use std::fmt;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair;
use aws_lc_rs::signature::{self, KeyPair as _};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue};

use crate::verify::{Digest, KeyError, SIGNATURE_HEADER, VerificationKey, pem_blocks};

/// Why a [`TestSigner`] could not be built or could not sign.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignerError {
    /// The text holds no `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY` (PKCS#1) PEM block.
    #[error("no RSA private key found: expected `BEGIN PRIVATE KEY` or `BEGIN RSA PRIVATE KEY`")]
    NoPrivateKey,
    /// The PEM is malformed.
    #[error("malformed private key PEM: {0}")]
    Pem(#[from] KeyError),
    /// The key is not an acceptable RSA private key (2048 to 8192 bits).
    #[error("not an acceptable RSA private key ({0})")]
    InvalidKey(&'static str),
    /// Signing failed.
    #[error("signing failed")]
    Signing,
}

/// Signs bodies like CHIP does. Its `Debug` output never shows the key.
pub struct TestSigner {
    key: KeyPair,
}

impl TestSigner {
    /// Reads an RSA private key PEM: PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    ///
    /// # Errors
    /// A [`SignerError`] when there is no usable RSA private key.
    pub fn from_pem(pem: &str) -> Result<Self, SignerError> {
        for block in pem_blocks(pem)? {
            let key = match block.label.as_str() {
                "PRIVATE KEY" => KeyPair::from_pkcs8(&block.der),
                "RSA PRIVATE KEY" => KeyPair::from_der(&block.der),
                _ => continue,
            };
            return key
                .map(|key| Self { key })
                .map_err(|rejected| SignerError::InvalidKey(rejected.description_()));
        }
        Err(SignerError::NoPrivateKey)
    }

    /// Signs `body` and returns the `X-Signature` value (standard base64).
    ///
    /// # Errors
    /// [`SignerError::Signing`] if the crypto library fails.
    pub fn sign(&self, body: &[u8], digest: Digest) -> Result<String, SignerError> {
        let encoding = match digest {
            Digest::Sha256 => &signature::RSA_PKCS1_SHA256,
            Digest::Sha512 => &signature::RSA_PKCS1_SHA512,
        };
        let mut signature = vec![0; self.key.public_modulus_len()];
        self.key
            .sign(encoding, &SystemRandom::new(), body, &mut signature)
            .map_err(|_| SignerError::Signing)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(signature))
    }

    /// Headers for a signed delivery: `X-Signature` and `Content-Type: application/json`.
    ///
    /// # Errors
    /// As [`Self::sign`].
    pub fn signed_headers(&self, body: &[u8], digest: Digest) -> Result<HeaderMap, SignerError> {
        let signature = self.sign(body, digest)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            SIGNATURE_HEADER,
            HeaderValue::from_str(&signature).map_err(|_| SignerError::Signing)?,
        );
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        Ok(headers)
    }

    /// The matching public key, ready to verify.
    ///
    /// # Errors
    /// A [`KeyError`] if the public half cannot be used (it always can for a key that loaded).
    pub fn verification_key(&self) -> Result<VerificationKey, KeyError> {
        VerificationKey::from_der(self.key.public_key().as_ref())
    }

    /// The matching public key as SPKI PEM (`BEGIN PUBLIC KEY`), the form CHIP gives a webhook.
    ///
    /// # Errors
    /// A [`KeyError`] if the public key cannot be encoded.
    pub fn public_key_pem(&self) -> Result<String, KeyError> {
        let der = self
            .key
            .public_key()
            .as_der()
            .map_err(|_| KeyError::NotRsaPublicKey)?;
        let block = pem::Pem::new("PUBLIC KEY", der.as_ref().to_vec());
        Ok(pem::encode_config(
            &block,
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        ))
    }
}

impl fmt::Debug for TestSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestSigner")
            .field("bits", &(self.key.public_modulus_len() * 8))
            .finish_non_exhaustive()
    }
}
