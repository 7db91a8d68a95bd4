//! Signature verification for CHIP webhook deliveries.
//!
//! CHIP signs the exact bytes of every delivery body with RSA PKCS#1 v1.5 and sends the signature,
//! base64-encoded, in the `X-Signature` header. CHIP Collect hashes the body with SHA-256; CHIP Send
//! uses SHA-512. There is no timestamp and no key id in the scheme.
//!
//! Parse a key once into a [`VerificationKey`] (or straight into a [`Verifier`]) and reuse it for
//! every delivery: parsing costs more than the verification itself. All cryptography is done by
//! `aws-lc-rs`.
//!
//! ```
//! use chip_gate::verify::{Digest, Verifier};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pem = include_str!("../../tests/fixtures/chip-collect/signed-vector/public_key.pem");
//! let body = include_bytes!("../../tests/fixtures/chip-collect/signed-vector/body.json");
//! let signature = include_str!("../../tests/fixtures/chip-collect/signed-vector/x-signature.txt");
//!
//! // Parse once, at start-up.
//! let verifier = Verifier::from_pem(pem)?.with_digest(Digest::Sha256);
//!
//! // Then, for every delivery: verify the raw bytes before parsing anything.
//! verifier.verify(body, signature)?;
//! # Ok(())
//! # }
//! ```

use std::fmt;

use aws_lc_rs::signature::{self, RsaParameters};

// One job per file: `key` parses public keys (PEM, DER, certificates, bundles); `header` reads
// the `X-Signature` header; `verifier` checks a body's signature against the keys.
mod header;
mod key;
mod verifier;

pub use header::SIGNATURE_HEADER;
#[cfg(feature = "test-support")]
pub(crate) use key::pem_blocks;
pub use key::{KeyError, MAX_KEY_BITS, MIN_KEY_BITS, VerificationKey};
pub use verifier::{DEFAULT_MAX_BODY_BYTES, ReceiveError, Verifier, VerifyError, verify_with_pem};

/// The digest CHIP hashed the body with before signing.
///
/// Chosen explicitly: CHIP Collect (this API) uses SHA-256, CHIP Send uses SHA-512. A signature made
/// with one never verifies with the other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Digest {
    /// SHA-256: CHIP Collect webhooks and purchase callbacks. The default.
    #[default]
    Sha256,
    /// SHA-512: CHIP Send webhooks.
    Sha512,
}

impl Digest {
    /// The digest CHIP Collect uses.
    pub const CHIP_COLLECT: Digest = Digest::Sha256;
    /// The digest CHIP Send uses.
    pub const CHIP_SEND: Digest = Digest::Sha512;

    /// The name of the digest, as in `"SHA-256"`.
    pub fn name(self) -> &'static str {
        match self {
            Digest::Sha256 => "SHA-256",
            Digest::Sha512 => "SHA-512",
        }
    }

    fn parameters(self) -> &'static RsaParameters {
        match self {
            Digest::Sha256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Digest::Sha512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
