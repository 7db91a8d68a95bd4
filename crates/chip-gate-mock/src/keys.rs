//! RSA keys: a committed pool of pre-made RSA-2048 keys, the company key, signing, PEM encoding.
//!
//! Generating an RSA key takes tens to hundreds of milliseconds, so the mock never generates one
//! at startup. Each server hands out the 16 committed keys (`keys/key-00.pem` to `key-15.pem`,
//! PKCS#8 PEM, made once with `openssl genpkey`) to its first 16 webhooks, one key each. After
//! that it either generates a fresh RSA-2048 key with aws-lc-rs on a blocking thread (the default,
//! so every webhook of a server has its own key, like CHIP) or, with
//! [`MockConfig::generate_keys`](crate::MockConfig::generate_keys) off, reuses the pool round-robin
//! (fast; useful for load and contract runs that create hundreds of webhooks). `key-16.pem` is the
//! company key served at `GET /public_key/`.

use std::sync::{Arc, OnceLock};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::MockError;

/// The committed pool, in order.
const POOL_PEMS: [&str; 16] = [
    include_str!("../keys/key-00.pem"),
    include_str!("../keys/key-01.pem"),
    include_str!("../keys/key-02.pem"),
    include_str!("../keys/key-03.pem"),
    include_str!("../keys/key-04.pem"),
    include_str!("../keys/key-05.pem"),
    include_str!("../keys/key-06.pem"),
    include_str!("../keys/key-07.pem"),
    include_str!("../keys/key-08.pem"),
    include_str!("../keys/key-09.pem"),
    include_str!("../keys/key-10.pem"),
    include_str!("../keys/key-11.pem"),
    include_str!("../keys/key-12.pem"),
    include_str!("../keys/key-13.pem"),
    include_str!("../keys/key-14.pem"),
    include_str!("../keys/key-15.pem"),
];

/// The company key (`GET /public_key/`).
const COMPANY_PEM: &str = include_str!("../keys/key-16.pem");

/// An RSA key pair with its public half already encoded as SPKI PEM.
#[derive(Clone)]
pub(crate) struct SigningKey {
    pair: Arc<RsaKeyPair>,
    public_pem: Arc<str>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").finish_non_exhaustive()
    }
}

impl SigningKey {
    fn from_pair(pair: RsaKeyPair) -> Result<Self, MockError> {
        let der = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(pair.public_key())
            .map_err(|_| MockError::Key("could not encode an RSA public key".into()))?;
        let public_pem = pem_encode("PUBLIC KEY", der.as_ref());
        Ok(Self {
            pair: Arc::new(pair),
            public_pem: public_pem.into(),
        })
    }

    fn from_pkcs8_pem(pem: &str) -> Result<Self, MockError> {
        let der = pem_decode(pem)?;
        let pair = RsaKeyPair::from_pkcs8(&der)
            .map_err(|e| MockError::Key(format!("a pooled RSA key was rejected: {e}")))?;
        Self::from_pair(pair)
    }

    /// Generates a fresh RSA-2048 key (slow: call it on a blocking thread).
    pub(crate) fn generate() -> Result<Self, MockError> {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| MockError::Key("RSA key generation failed".into()))?;
        Self::from_pair(pair)
    }

    /// The SPKI PEM of the public key (`-----BEGIN PUBLIC KEY-----`, 64-column lines, final newline).
    pub(crate) fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// Signs `msg` as CHIP does: RSA PKCS#1 v1.5 with SHA-256, returned as standard padded base64.
    pub(crate) fn sign_base64(&self, msg: &[u8]) -> Result<String, MockError> {
        let rng = SystemRandom::new();
        let mut sig = vec![0u8; self.pair.public_modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &rng, msg, &mut sig)
            .map_err(|_| MockError::Key("RSA signing failed".into()))?;
        Ok(STANDARD.encode(sig))
    }
}

/// The parsed pool and company key, parsed once per process.
struct Parsed {
    pool: Vec<SigningKey>,
    company: SigningKey,
}

fn parsed() -> Result<&'static Parsed, MockError> {
    static PARSED: OnceLock<Result<Parsed, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            let pool = POOL_PEMS
                .iter()
                .map(|pem| SigningKey::from_pkcs8_pem(pem))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let company = SigningKey::from_pkcs8_pem(COMPANY_PEM).map_err(|e| e.to_string())?;
            Ok(Parsed { pool, company })
        })
        .as_ref()
        .map_err(|e| MockError::Key(e.clone()))
}

/// One server's source of webhook keys.
#[derive(Debug)]
pub(crate) struct KeyPool {
    pool: Vec<SigningKey>,
    company: SigningKey,
    next: std::sync::atomic::AtomicUsize,
    generate: bool,
}

impl KeyPool {
    /// The pool for a new server; `generate` decides what happens once the 16 pooled keys are used.
    pub(crate) fn new(generate: bool) -> Result<Self, MockError> {
        let parsed = parsed()?;
        Ok(Self {
            pool: parsed.pool.clone(),
            company: parsed.company.clone(),
            next: std::sync::atomic::AtomicUsize::new(0),
            generate,
        })
    }

    /// The company key.
    pub(crate) fn company(&self) -> &SigningKey {
        &self.company
    }

    /// A key for a new webhook: the next pooled key, then a generated or a reused one.
    pub(crate) async fn take(&self) -> Result<SigningKey, MockError> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(key) = self.pool.get(n) {
            return Ok(key.clone());
        }
        if self.generate {
            tokio::task::spawn_blocking(SigningKey::generate)
                .await
                .map_err(|e| MockError::Key(format!("key generation task failed: {e}")))?
        } else {
            let i = n % self.pool.len().max(1);
            self.pool
                .get(i)
                .cloned()
                .ok_or_else(|| MockError::Key("the key pool is empty".into()))
        }
    }
}

/// Wraps DER bytes in a PEM block with 64-column base64 lines and `\n` line ends, as CHIP sends.
pub(crate) fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// The DER bytes inside a PEM block.
pub(crate) fn pem_decode(text: &str) -> Result<Vec<u8>, MockError> {
    pem::parse(text)
        .map(pem::Pem::into_contents)
        .map_err(|e| MockError::Key(format!("bad PEM: {e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    #[test]
    fn pool_keys_sign_and_verify_with_their_spki() {
        let parsed = parsed().unwrap();
        assert_eq!(parsed.pool.len(), 16);
        for key in parsed.pool.iter().chain(std::iter::once(&parsed.company)) {
            assert!(key.public_pem().starts_with("-----BEGIN PUBLIC KEY-----\n"));
            let sig = STANDARD.decode(key.sign_base64(b"hello").unwrap()).unwrap();
            let der = pem_decode(key.public_pem()).unwrap();
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &der)
                .verify(b"hello", &sig)
                .unwrap();
            assert!(
                UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &der)
                    .verify(b"hellO", &sig)
                    .is_err()
            );
        }
        // Every key in the pool is distinct.
        let mut pems: Vec<&str> = parsed.pool.iter().map(SigningKey::public_pem).collect();
        pems.push(parsed.company.public_pem());
        pems.sort_unstable();
        pems.dedup();
        assert_eq!(pems.len(), 17);
    }
}
