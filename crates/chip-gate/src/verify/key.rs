//! Public keys: parsed once from the forms CHIP and users hand them over in (PEM, PEM with escaped
//! newlines, the JSON string of `GET /public_key/`, DER, X.509 certificates, bundles of several).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::ParsedPublicKey;

use super::{Digest, VerifyError};

/// The smallest RSA key accepted, in bits.
pub const MIN_KEY_BITS: usize = 2048;
/// The largest RSA key accepted, in bits.
pub const MAX_KEY_BITS: usize = 8192;

/// Why a public key could not be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text holds no `PUBLIC KEY`, `RSA PUBLIC KEY` or `CERTIFICATE` PEM block.
    #[error(
        "no public key found: expected a PEM block `BEGIN PUBLIC KEY`, `BEGIN RSA PUBLIC KEY` or `BEGIN CERTIFICATE`"
    )]
    NoPublicKey,
    /// The text holds a private key. Give the public key (the webhook's `public_key`) instead.
    #[error("a private key was given where a public key belongs; pass the public key instead")]
    PrivateKeyGiven,
    /// A PEM block is malformed (no matching END line, or its body is not base64).
    #[error("malformed PEM: {0}")]
    MalformedPem(&'static str),
    /// The text starts with `"` but is not a valid JSON string (the form `GET /public_key/` returns).
    #[error("the key looks like a JSON string but does not decode as one")]
    InvalidJsonString,
    /// The certificate could not be parsed as X.509.
    #[error("the certificate could not be parsed as X.509 DER")]
    InvalidCertificate,
    /// The DER is not an RSA public key (SubjectPublicKeyInfo or PKCS#1 RSAPublicKey).
    #[error("not an RSA public key (SubjectPublicKeyInfo or PKCS#1 RSAPublicKey DER expected)")]
    NotRsaPublicKey,
    /// The RSA key is smaller than 2048 or larger than 8192 bits.
    #[error("RSA key of {bits} bits is not accepted; expected 2048 to 8192 bits")]
    UnsupportedKeySize {
        /// The key's modulus size in bits.
        bits: usize,
    },
    /// A verifier was built with no key at all.
    #[error("no verification key configured")]
    NoKeys,
}

/// An RSA public key, parsed once and ready for any number of verifications.
///
/// Cheap to clone (the parsed key is reference-counted inside `aws-lc`). Its `Debug` output shows the
/// size and a fingerprint, never the key.
#[derive(Clone)]
pub struct VerificationKey {
    sha256: ParsedPublicKey,
    sha512: ParsedPublicKey,
    bits: usize,
    signature_len: usize,
    spki_der: Arc<[u8]>,
}

impl VerificationKey {
    /// Parses a key from text: a PEM `PUBLIC KEY` (SPKI, what CHIP sends), `RSA PUBLIC KEY` (PKCS#1)
    /// or `CERTIFICATE` (X.509) block; the same PEM with its newlines still escaped as `\n`; or the
    /// JSON string that `GET /public_key/` returns, quotes included. The first usable block wins.
    ///
    /// # Errors
    /// A [`KeyError`] that says what is wrong with the text or the key.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let text = normalize_key_text(text)?;
        let blocks = pem_blocks(&text)?;
        let mut saw_private = false;
        for block in &blocks {
            match block.label.as_str() {
                "PUBLIC KEY" | "RSA PUBLIC KEY" => return Self::from_der(&block.der),
                "CERTIFICATE" => return Self::from_certificate_der(&block.der),
                label if label.ends_with("PRIVATE KEY") => saw_private = true,
                _ => {}
            }
        }
        Err(if saw_private {
            KeyError::PrivateKeyGiven
        } else {
            KeyError::NoPublicKey
        })
    }

    /// Parses every public key in a PEM bundle (several `PUBLIC KEY`, `RSA PUBLIC KEY` or
    /// `CERTIFICATE` blocks one after another, as `chip webhooks apply --keys-out` writes them), in
    /// order. Other blocks are skipped; a private key anywhere is refused.
    ///
    /// # Errors
    /// The first block's [`KeyError`] when a public block cannot be used,
    /// [`KeyError::PrivateKeyGiven`] for a private key, [`KeyError::NoPublicKey`] when there is none.
    pub fn all_from_pem(text: &str) -> Result<Vec<Self>, KeyError> {
        let text = normalize_key_text(text)?;
        let mut keys = Vec::new();
        for block in pem_blocks(&text)? {
            match block.label.as_str() {
                "PUBLIC KEY" | "RSA PUBLIC KEY" => keys.push(Self::from_der(&block.der)?),
                "CERTIFICATE" => keys.push(Self::from_certificate_der(&block.der)?),
                label if label.ends_with("PRIVATE KEY") => return Err(KeyError::PrivateKeyGiven),
                _ => {}
            }
        }
        if keys.is_empty() {
            return Err(KeyError::NoPublicKey);
        }
        Ok(keys)
    }

    /// Parses a DER public key: SubjectPublicKeyInfo or PKCS#1 `RSAPublicKey`.
    ///
    /// # Errors
    /// [`KeyError::NotRsaPublicKey`] or [`KeyError::UnsupportedKeySize`].
    pub fn from_der(der: &[u8]) -> Result<Self, KeyError> {
        // Validates the encoding and the key itself (RSA_check_key).
        let key =
            aws_lc_rs::rsa::PublicKey::from_der(der).map_err(|_| KeyError::NotRsaPublicKey)?;
        let modulus = key.modulus();
        let modulus = modulus.big_endian_without_leading_zero();
        let bits = match modulus.first() {
            Some(&top) => (modulus.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
            None => 0,
        };
        if !(MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
            return Err(KeyError::UnsupportedKeySize { bits });
        }
        let pkcs1 = key.as_ref();
        let sha256 = ParsedPublicKey::new(Digest::Sha256.parameters(), pkcs1)
            .map_err(|_| KeyError::NotRsaPublicKey)?;
        let sha512 = ParsedPublicKey::new(Digest::Sha512.parameters(), pkcs1)
            .map_err(|_| KeyError::NotRsaPublicKey)?;
        let spki = key.as_der().map_err(|_| KeyError::NotRsaPublicKey)?;
        Ok(Self {
            sha256,
            sha512,
            bits,
            signature_len: modulus.len(),
            spki_der: Arc::from(spki.as_ref()),
        })
    }

    /// Takes the public key out of an X.509 certificate (DER). The certificate's validity, issuer
    /// and signature are not checked: CHIP's scheme trusts the key, not a chain.
    ///
    /// # Errors
    /// [`KeyError::InvalidCertificate`], or any error of [`Self::from_der`] for the key inside.
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, KeyError> {
        let cert = rustls_pki_types::CertificateDer::from(der);
        let cert =
            webpki::EndEntityCert::try_from(&cert).map_err(|_| KeyError::InvalidCertificate)?;
        Self::from_der(cert.subject_public_key_info().as_ref())
    }

    /// The modulus size in bits (2048 to 8192).
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// The length of every signature this key makes, in bytes (the modulus length).
    pub fn signature_len(&self) -> usize {
        self.signature_len
    }

    /// The key as SubjectPublicKeyInfo DER (the canonical form, whatever form it was given in).
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// A short fingerprint to tell keys apart in logs: the first 8 bytes of the SHA-256 of the
    /// SubjectPublicKeyInfo DER, in hex.
    pub fn fingerprint(&self) -> String {
        let hash = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.spki_der);
        hash.as_ref()
            .iter()
            .take(8)
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }

    /// Verifies a decoded (raw bytes) signature of `body` made with `digest`.
    ///
    /// # Errors
    /// [`VerifyError::SignatureLength`] or [`VerifyError::SignatureMismatch`].
    pub fn verify_raw(
        &self,
        digest: Digest,
        body: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        if signature.len() != self.signature_len {
            return Err(VerifyError::SignatureLength {
                actual: signature.len(),
                expected: vec![self.signature_len],
            });
        }
        self.check(digest, body, signature)
    }

    pub(super) fn check(
        &self,
        digest: Digest,
        body: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        let key = match digest {
            Digest::Sha256 => &self.sha256,
            Digest::Sha512 => &self.sha512,
        };
        key.verify_sig(body, signature)
            .map_err(|_| VerifyError::SignatureMismatch { digest })
    }
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("bits", &self.bits)
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl FromStr for VerificationKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_pem(text)
    }
}

/// Undoes the wrappings keys arrive in: a JSON string (from `GET /public_key/`) and `\n` escapes.
pub(super) fn normalize_key_text(text: &str) -> Result<Cow<'_, str>, KeyError> {
    let trimmed = text.trim();
    let text: Cow<'_, str> = if trimmed.starts_with('"') {
        let decoded: String =
            serde_json::from_str(trimmed).map_err(|_| KeyError::InvalidJsonString)?;
        Cow::Owned(decoded)
    } else {
        Cow::Borrowed(trimmed)
    };
    if text.contains("\\n") || text.contains("\\r") {
        Ok(Cow::Owned(text.replace("\\r", "\r").replace("\\n", "\n")))
    } else {
        Ok(text)
    }
}

/// One PEM block: its label (e.g. `PUBLIC KEY`) and its decoded body.
pub(crate) struct PemBlock {
    pub(crate) label: String,
    pub(crate) der: Vec<u8>,
}

/// Splits text into its PEM blocks with the `pem` crate (text around the blocks is ignored).
pub(crate) fn pem_blocks(text: &str) -> Result<Vec<PemBlock>, KeyError> {
    let blocks = pem::parse_many(text).map_err(|error| {
        KeyError::MalformedPem(match error {
            pem::PemError::MismatchedTags(..) => "END label does not match BEGIN",
            pem::PemError::MissingEndTag | pem::PemError::MissingData => "no END line",
            pem::PemError::InvalidData(_) => "body is not base64",
            _ => "not a PEM block",
        })
    })?;
    // The `pem` crate skips a BEGIN line that never ends; say so rather than "no key found".
    if text.matches("-----BEGIN ").count() > blocks.len() {
        return Err(KeyError::MalformedPem("no END line"));
    }
    Ok(blocks
        .into_iter()
        .map(|block| PemBlock {
            label: block.tag().to_owned(),
            der: block.into_contents(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn pem_blocks_skips_text_around_blocks_and_headers() {
        let text =
            "hello\n-----BEGIN THING-----\nProc-Type: 4\n\nAAEC\nAw==\n-----END THING-----\nbye";
        let blocks = pem_blocks(text).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].label, "THING");
        assert_eq!(blocks[0].der, vec![0, 1, 2, 3]);
    }

    #[test]
    fn pem_blocks_rejects_unterminated_and_mismatched_blocks() {
        assert_eq!(
            pem_blocks("-----BEGIN A-----\nAAEC\n").err(),
            Some(KeyError::MalformedPem("no END line"))
        );
        assert_eq!(
            pem_blocks("-----BEGIN A-----\nAAEC\n-----END B-----").err(),
            Some(KeyError::MalformedPem("END label does not match BEGIN"))
        );
        assert_eq!(
            pem_blocks("-----BEGIN A-----\n!!!!\n-----END A-----").err(),
            Some(KeyError::MalformedPem("body is not base64"))
        );
    }

    #[test]
    fn normalize_undoes_json_and_escapes() {
        let json = r#""-----BEGIN X-----\nAA==\n-----END X-----\n""#;
        assert_eq!(
            normalize_key_text(json).unwrap(),
            "-----BEGIN X-----\nAA==\n-----END X-----\n"
        );
        let escaped = r"-----BEGIN X-----\nAA==\n-----END X-----";
        assert_eq!(
            normalize_key_text(escaped).unwrap(),
            "-----BEGIN X-----\nAA==\n-----END X-----"
        );
        assert_eq!(
            normalize_key_text("\"unterminated").err(),
            Some(KeyError::InvalidJsonString)
        );
    }
}
