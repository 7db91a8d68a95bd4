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
//! let pem = include_str!("../tests/fixtures/chip-collect/signed-vector/public_key.pem");
//! let body = include_bytes!("../tests/fixtures/chip-collect/signed-vector/body.json");
//! let signature = include_str!("../tests/fixtures/chip-collect/signed-vector/x-signature.txt");
//!
//! // Parse once, at start-up.
//! let verifier = Verifier::from_pem(pem)?.with_digest(Digest::Sha256);
//!
//! // Then, for every delivery: verify the raw bytes before parsing anything.
//! verifier.verify(body, signature)?;
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{self, ParsedPublicKey, RsaParameters};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::HeaderMap;
use http::header::HeaderValue;

use bytes::Bytes;

use crate::delivery::{Delivery, DeliveryError};

/// The name of the header that carries the signature (`X-Signature`, lower-cased as `http` stores it).
pub const SIGNATURE_HEADER: &str = "x-signature";

/// The smallest RSA key accepted, in bits.
pub const MIN_KEY_BITS: usize = 2048;
/// The largest RSA key accepted, in bits.
pub const MAX_KEY_BITS: usize = 8192;

/// Standard base64 alphabet; padding optional on input (CHIP pads, some proxies strip it).
const SIGNATURE_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

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

/// Why a delivery's signature was rejected.
///
/// Every variant means "do not trust this delivery". None of them carries the body, the signature
/// or any key material.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// There is no `X-Signature` header (or it is empty).
    #[error("the X-Signature header is missing")]
    MissingSignature,
    /// The request carries more than one `X-Signature` header. CHIP sends one; a second one is
    /// refused rather than guessing which to check.
    #[error("the request carries several X-Signature headers")]
    SeveralSignatures,
    /// The `X-Signature` value is not standard base64.
    #[error("the X-Signature header is not valid base64")]
    SignatureNotBase64,
    /// The decoded signature has a length that no configured key can produce.
    #[error(
        "the signature is {actual} bytes long; the configured key(s) produce {expected:?} bytes"
    )]
    SignatureLength {
        /// Length of the decoded signature, in bytes.
        actual: usize,
        /// Signature lengths of the configured keys (one per distinct key size), in bytes.
        expected: Vec<usize>,
    },
    /// The signature is well formed but no configured key signed this body with this digest.
    #[error("the signature does not match the body for any configured key (digest {digest})")]
    SignatureMismatch {
        /// The digest that was tried.
        digest: Digest,
    },
    /// The key could not be used.
    #[error("the verification key is unusable: {0}")]
    KeyUnusable(#[from] KeyError),
}

impl VerifyError {
    /// A short, stable name for the reason, for metrics labels and log fields:
    /// `missing_signature`, `several_signatures`, `signature_not_base64`, `signature_length`,
    /// `signature_mismatch` or `key_unusable`.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingSignature => "missing_signature",
            VerifyError::SeveralSignatures => "several_signatures",
            VerifyError::SignatureNotBase64 => "signature_not_base64",
            VerifyError::SignatureLength { .. } => "signature_length",
            VerifyError::SignatureMismatch { .. } => "signature_mismatch",
            VerifyError::KeyUnusable(_) => "key_unusable",
        }
    }
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

    fn check(&self, digest: Digest, body: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
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

/// Verifies deliveries against one or more keys with one digest.
///
/// Holds several keys when several webhooks post to the same endpoint, or during a key rotation
/// (old and new): a delivery is accepted when any key verifies it. Cheap to clone; share one per
/// endpoint (for example in axum state).
#[derive(Clone)]
pub struct Verifier {
    keys: Arc<[VerificationKey]>,
    digest: Digest,
    max_body_bytes: usize,
}

/// The default for [`Verifier::with_max_body_bytes`]: 1 MiB, far above any CHIP delivery (a few KiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

impl Verifier {
    /// A verifier with one key and the default digest (SHA-256, CHIP Collect).
    pub fn new(key: VerificationKey) -> Self {
        Self {
            keys: Arc::from(vec![key]),
            digest: Digest::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// A verifier with several keys and the default digest (SHA-256, CHIP Collect).
    ///
    /// # Errors
    /// [`KeyError::NoKeys`] when `keys` is empty.
    pub fn with_keys(keys: impl IntoIterator<Item = VerificationKey>) -> Result<Self, KeyError> {
        let keys: Vec<VerificationKey> = keys.into_iter().collect();
        if keys.is_empty() {
            return Err(KeyError::NoKeys);
        }
        Ok(Self {
            keys: Arc::from(keys),
            digest: Digest::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        })
    }

    /// Parses one key (any form [`VerificationKey::from_pem`] accepts) into a SHA-256 verifier.
    ///
    /// # Errors
    /// A [`KeyError`] when the key cannot be used.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        VerificationKey::from_pem(text).map(Self::new)
    }

    /// A verifier with every key of a PEM bundle (see [`VerificationKey::all_from_pem`]): one
    /// receiver for the deliveries of several webhooks, or across a key rotation.
    ///
    /// # Errors
    /// As [`VerificationKey::all_from_pem`].
    pub fn from_pem_bundle(text: &str) -> Result<Self, KeyError> {
        Self::with_keys(VerificationKey::all_from_pem(text)?)
    }

    /// The same verifier using `digest` (SHA-512 for CHIP Send).
    #[must_use]
    pub fn with_digest(mut self, digest: Digest) -> Self {
        self.digest = digest;
        self
    }

    /// The same verifier with another cap on the body size a receiver reads before verifying
    /// ([`DEFAULT_MAX_BODY_BYTES`] unless set). The axum extractor answers `413 Payload Too Large`
    /// past it, whatever the router's own body limit is.
    #[must_use]
    pub fn with_max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }

    /// The body size cap; see [`with_max_body_bytes`](Self::with_max_body_bytes).
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The digest this verifier checks.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The keys this verifier accepts.
    pub fn keys(&self) -> &[VerificationKey] {
        &self.keys
    }

    /// Verifies the raw body bytes against an `X-Signature` value (base64; surrounding whitespace is
    /// ignored). Never parse the body before this returns `Ok`.
    ///
    /// # Errors
    /// A [`VerifyError`] saying what was wrong.
    pub fn verify(&self, body: &[u8], x_signature: &str) -> Result<(), VerifyError> {
        let signature = decode_signature(x_signature)?;
        self.verify_decoded(body, &signature)
    }

    /// Verifies the raw body bytes against the `X-Signature` header found in `headers`.
    ///
    /// # Errors
    /// A [`VerifyError`] saying what was wrong; [`VerifyError::MissingSignature`] without the header,
    /// [`VerifyError::SeveralSignatures`] when there is more than one.
    pub fn verify_headers(&self, body: &[u8], headers: &HeaderMap) -> Result<(), VerifyError> {
        let signature = signature_from_headers(headers)?;
        self.verify_decoded(body, &signature)
    }

    /// Reads the `X-Signature` header and checks, without the body, that it could be a signature
    /// of a configured key: exactly one header, standard base64, decoding to a length one of the
    /// keys produces. Returns the decoded signature for [`verify_decoded`](Self::verify_decoded).
    ///
    /// Call it before reading a request's body: a caller without the key is refused for the
    /// price of a header (the extractor and `chip-gate-inbox`'s handler do).
    ///
    /// # Errors
    /// [`VerifyError::MissingSignature`], [`VerifyError::SeveralSignatures`],
    /// [`VerifyError::SignatureNotBase64`] or [`VerifyError::SignatureLength`].
    pub fn decode_signature_header(&self, headers: &HeaderMap) -> Result<Vec<u8>, VerifyError> {
        let signature = signature_from_headers(headers)?;
        self.check_signature_len(&signature)?;
        Ok(signature)
    }

    /// As [`decode_signature_header`](Self::decode_signature_header), for an `X-Signature` value.
    ///
    /// # Errors
    /// As [`decode_signature_header`](Self::decode_signature_header).
    pub fn decode_signature(&self, x_signature: &str) -> Result<Vec<u8>, VerifyError> {
        let signature = decode_signature(x_signature)?;
        self.check_signature_len(&signature)?;
        Ok(signature)
    }

    /// Whether some configured key produces signatures of this length.
    fn check_signature_len(&self, signature: &[u8]) -> Result<(), VerifyError> {
        if self.keys.is_empty() {
            return Err(VerifyError::KeyUnusable(KeyError::NoKeys));
        }
        if self
            .keys
            .iter()
            .any(|key| key.signature_len == signature.len())
        {
            return Ok(());
        }
        let mut expected: Vec<usize> = self.keys.iter().map(|key| key.signature_len).collect();
        expected.sort_unstable();
        expected.dedup();
        Err(VerifyError::SignatureLength {
            actual: signature.len(),
            expected,
        })
    }

    /// Verifies an already decoded signature against every key of the right length.
    ///
    /// # Errors
    /// [`VerifyError::SignatureLength`] when no key has this signature length,
    /// [`VerifyError::SignatureMismatch`] when none of them verifies it.
    pub fn verify_decoded(&self, body: &[u8], signature: &[u8]) -> Result<(), VerifyError> {
        self.check_signature_len(signature)?;
        let matches = self
            .keys
            .iter()
            .filter(|key| key.signature_len == signature.len())
            .any(|key| key.check(self.digest, body, signature).is_ok());
        if matches {
            Ok(())
        } else {
            Err(VerifyError::SignatureMismatch {
                digest: self.digest,
            })
        }
    }
}

/// Either step of receiving a delivery failed: the signature, or (after it verified) the body.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The signature was rejected: answer 401 and do not look at the body.
    #[error(transparent)]
    Signature(#[from] VerifyError),
    /// The body is not a delivery. Only strict parsing of an unverified body gives this: the
    /// verifying calls return a verified body whatever it holds (see [`Delivery::typing_problem`]).
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
}

impl Verifier {
    /// Verifies the body against an `X-Signature` value, then reads it.
    ///
    /// A verified body is always returned, even one these types cannot read: see
    /// [`Delivery::typing_problem`].
    ///
    /// # Errors
    /// [`ReceiveError::Signature`] (answer 401) when the signature is missing or wrong; never
    /// [`ReceiveError::Delivery`].
    pub fn verify_and_parse(
        &self,
        body: impl Into<Bytes>,
        x_signature: &str,
    ) -> Result<Delivery, ReceiveError> {
        let body: Bytes = body.into();
        self.verify(&body, x_signature)?;
        Ok(Delivery::from_verified(body))
    }

    /// Verifies the body against the `X-Signature` header in `headers`, then reads it, as
    /// [`verify_and_parse`](Self::verify_and_parse) does.
    ///
    /// # Errors
    /// [`ReceiveError::Signature`] (answer 401) when the header is missing, repeated or wrong.
    pub fn verify_headers_and_parse(
        &self,
        body: impl Into<Bytes>,
        headers: &http::HeaderMap,
    ) -> Result<Delivery, ReceiveError> {
        let body: Bytes = body.into();
        self.verify_headers(&body, headers)?;
        Ok(Delivery::from_verified(body))
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("digest", &self.digest)
            .field("keys", &self.keys)
            .finish()
    }
}

/// Verifies once with a key given as text, parsing the key on this call.
///
/// Convenient for a one-off check (a CLI, a test); a server should build a [`Verifier`] once
/// instead, which skips the parsing on every delivery.
///
/// # Errors
/// [`VerifyError::KeyUnusable`] when the key cannot be parsed, otherwise as [`Verifier::verify`].
pub fn verify_with_pem(
    key_text: &str,
    digest: Digest,
    body: &[u8],
    x_signature: &str,
) -> Result<(), VerifyError> {
    Verifier::from_pem(key_text)?
        .with_digest(digest)
        .verify(body, x_signature)
}

/// The decoded `X-Signature` of a request, checked before its body is read: exactly one header,
/// text, standard base64.
pub(crate) fn signature_from_headers(headers: &HeaderMap) -> Result<Vec<u8>, VerifyError> {
    let mut values = headers.get_all(SIGNATURE_HEADER).iter();
    let value: &HeaderValue = values.next().ok_or(VerifyError::MissingSignature)?;
    if values.next().is_some() {
        return Err(VerifyError::SeveralSignatures);
    }
    let text = value
        .to_str()
        .map_err(|_| VerifyError::SignatureNotBase64)?;
    decode_signature(text)
}

/// Decodes an `X-Signature` value. Whitespace around it is ignored; an empty value counts as missing.
pub(crate) fn decode_signature(x_signature: &str) -> Result<Vec<u8>, VerifyError> {
    let text = x_signature.trim();
    if text.is_empty() {
        return Err(VerifyError::MissingSignature);
    }
    SIGNATURE_BASE64
        .decode(text)
        .map_err(|_| VerifyError::SignatureNotBase64)
}

/// Undoes the wrappings keys arrive in: a JSON string (from `GET /public_key/`) and `\n` escapes.
fn normalize_key_text(text: &str) -> Result<Cow<'_, str>, KeyError> {
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

    #[test]
    fn decode_signature_accepts_padded_unpadded_and_whitespace() {
        assert_eq!(
            decode_signature(" AAEC Aw== ").err(),
            Some(VerifyError::SignatureNotBase64)
        );
        assert_eq!(decode_signature("AAECAw==").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(decode_signature("AAECAw\r\n").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(
            decode_signature("   ").err(),
            Some(VerifyError::MissingSignature)
        );
        assert_eq!(
            decode_signature("AAE-").err(),
            Some(VerifyError::SignatureNotBase64)
        );
    }
}
