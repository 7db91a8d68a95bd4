//! Standard Webhooks signing: the `whsec_` secret and the `v1` signature (HMAC-SHA256 over
//! `<webhook-id>.<webhook-timestamp>.<body>`).

use aws_lc_rs::hmac;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The shortest secret accepted, in bytes (Standard Webhooks asks for 24 to 64).
pub const MIN_SECRET_BYTES: usize = 24;
/// The longest secret accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 64;
/// The prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a secret's text was refused. Never holds the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The text does not start with `whsec_`.
    #[error("a signing secret starts with `whsec_` (make one with `chip relay --new-secret`)")]
    MissingPrefix,
    /// What follows `whsec_` is not base64.
    #[error("the signing secret after `whsec_` is not base64")]
    NotBase64,
    /// The decoded secret is too short or too long.
    #[error(
        "the signing secret is {0} bytes long; it must be {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes"
    )]
    Length(usize),
}

/// A Standard Webhooks signing secret (`whsec_<base64>`): the relay signs with it, the app
/// verifies with it. Its `Debug` shows nothing of it.
#[derive(Clone)]
pub struct Secret {
    key: hmac::Key,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Secret {
    /// Reads a secret from its text form, `whsec_<base64>` (surrounding whitespace ignored, as
    /// in a file with a trailing newline).
    ///
    /// # Errors
    /// A [`SecretError`] saying what is wrong, never the secret.
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(SecretError::MissingPrefix)?;
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| SecretError::NotBase64)?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&bytes.len()) {
            return Err(SecretError::Length(bytes.len()));
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        })
    }

    /// A new random secret of 32 bytes, and its text form to give the app.
    ///
    /// # Errors
    /// When the system's random source fails (never in practice).
    pub fn generate() -> Result<(Self, String), aws_lc_rs::error::Unspecified> {
        let mut bytes = [0_u8; 32];
        aws_lc_rs::rand::fill(&mut bytes)?;
        let text = format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes));
        let secret = Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
        };
        Ok((secret, text))
    }

    /// The `webhook-signature` header's value for a message: `v1,<base64 HMAC-SHA256>` over
    /// `<id>.<timestamp>.<body>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut context = hmac::Context::with_key(&self.key);
        context.update(id.as_bytes());
        context.update(b".");
        context.update(timestamp.to_string().as_bytes());
        context.update(b".");
        context.update(body);
        format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_specifications_example_signs_as_published() {
        // The example of the Standard Webhooks specification.
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn bad_secrets_are_refused_without_showing_them() {
        assert_eq!(
            Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap_err(),
            SecretError::MissingPrefix
        );
        assert_eq!(
            Secret::parse("whsec_not base64!").unwrap_err(),
            SecretError::NotBase64
        );
        assert_eq!(
            Secret::parse("whsec_c2hvcnQ=").unwrap_err(),
            SecretError::Length(5)
        );
        let (secret, text) = Secret::generate().unwrap();
        assert!(text.starts_with("whsec_"));
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        let again = Secret::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(again.sign("a", 1, b"x"), secret.sign("a", 1, b"x"));
    }
}
