//! The `X-Signature` header: found once in the request, and decoded from base64 before the body is
//! read.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::HeaderMap;
use http::header::HeaderValue;

use super::VerifyError;

/// The name of the header that carries the signature (`X-Signature`, lower-cased as `http` stores it).
pub const SIGNATURE_HEADER: &str = "x-signature";

/// Standard base64 alphabet; padding optional on input (CHIP pads, some proxies strip it).
const SIGNATURE_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The decoded `X-Signature` of a request, checked before its body is read: exactly one header,
/// text, standard base64.
pub(super) fn signature_from_headers(headers: &HeaderMap) -> Result<Vec<u8>, VerifyError> {
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
pub(super) fn decode_signature(x_signature: &str) -> Result<Vec<u8>, VerifyError> {
    let text = x_signature.trim();
    if text.is_empty() {
        return Err(VerifyError::MissingSignature);
    }
    SIGNATURE_BASE64
        .decode(text)
        .map_err(|_| VerifyError::SignatureNotBase64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
