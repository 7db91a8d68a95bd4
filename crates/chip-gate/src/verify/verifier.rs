//! Verifying deliveries: a body's signature checked against one or more keys with one digest, and
//! the errors that say why a delivery is refused.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use super::Digest;
use super::header::{decode_signature, signature_from_headers};
use super::key::{KeyError, VerificationKey};
use crate::delivery::{Delivery, DeliveryError};

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
            .any(|key| key.signature_len() == signature.len())
        {
            return Ok(());
        }
        let mut expected: Vec<usize> = self.keys.iter().map(|key| key.signature_len()).collect();
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
            .filter(|key| key.signature_len() == signature.len())
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
