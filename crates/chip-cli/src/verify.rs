//! `chip verify`: check an X-Signature offline.

use std::path::PathBuf;

use chip_gate::{Digest, Verifier, VerifyError};
use clap::{Args, ValueEnum};

use crate::common::{Failure, Outcome};
use crate::input::{self, BODY_MAX, PUBLIC_KEY_FILE_MAX, SIGNATURE_FILE_MAX};
use crate::outln;

/// The digest a signature was made with.
#[derive(Clone, Copy, ValueEnum)]
pub enum DigestArg {
    /// SHA-256: CHIP Collect.
    Sha256,
    /// SHA-512: CHIP Send.
    Sha512,
}

/// Arguments of `chip verify`.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("sig").required(true).args(["signature", "signature_file"]))]
pub struct VerifyArgs {
    /// The public key file: PEM (SPKI, PKCS#1 or a certificate), PEM with escaped \n, the JSON
    /// string that GET /public_key/ returns, or a bundle of several keys (`webhooks apply
    /// --keys-out`), any of which may match (at most 64 KiB).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The value of the delivery's X-Signature header (base64).
    #[arg(long, value_name = "SIG", allow_hyphen_values = true)]
    signature: Option<String>,
    /// A file holding the value of the X-Signature header, e.g. the `.sig` file `chip listen
    /// --save` writes (`-` reads standard input).
    #[arg(long, value_name = "FILE")]
    signature_file: Option<PathBuf>,
    /// The digest: sha256 for CHIP Collect, sha512 for CHIP Send.
    #[arg(long, value_enum, default_value = "sha256")]
    digest: DigestArg,
    /// The largest body accepted, in bytes (a larger one is an error, exit 2).
    #[arg(long, value_name = "BYTES", default_value_t = BODY_MAX)]
    max_body_bytes: u64,
    /// The exact body bytes; read from standard input when absent.
    #[arg(value_name = "BODY_FILE")]
    body: Option<PathBuf>,
}

/// Which key verifies what: said (on stderr) when a signature matches no key.
const WHICH_KEY: &str = "a webhook's deliveries verify with that webhook's own public_key \
     (`chip webhooks get ID --public-key > key.pem`), not the company key `chip public-key` \
     prints (GET /public_key/, for purchase success callbacks); with --key, check it is the key \
     of the webhook that sent this delivery";

/// A verifier with every public key of `text`: one key in any form [`Verifier::from_pem`] reads,
/// or a bundle of several (`chip webhooks apply --keys-out`), each of which is tried.
pub(crate) fn load_keys(text: &str) -> Result<Verifier, chip_gate::KeyError> {
    // Several blocks: every one must be usable (a bad one is an error, not silently skipped).
    if text.matches("-----BEGIN").count() > 1 {
        Verifier::from_pem_bundle(text)
    } else {
        Verifier::from_pem(text)
    }
}

/// Exit 0 and `valid`, exit 1 and `invalid: <reason>`, or exit 2 when the key, signature or body
/// is unusable (unreadable, or larger than its cap).
pub fn run(args: &VerifyArgs) -> Outcome {
    let key_text = input::read_text_capped(&args.key, PUBLIC_KEY_FILE_MAX, "the key file")?;
    let digest = match args.digest {
        DigestArg::Sha256 => Digest::Sha256,
        DigestArg::Sha512 => Digest::Sha512,
    };
    let verifier = load_keys(&key_text)
        .map_err(|e| Failure::usage(format!("unusable key in {}: {e}", args.key.display())))?
        .with_digest(digest);
    let signature = match (&args.signature, &args.signature_file) {
        (Some(signature), _) => signature.clone(),
        (None, Some(path)) => {
            if path.as_os_str() == "-" && args.body.is_none() {
                return Err(Failure::usage(
                    "the signature and the body cannot both come from standard input",
                ));
            }
            input::read_text_capped(path, SIGNATURE_FILE_MAX, "the signature file")?
        }
        (None, None) => return Err(Failure::usage("give --signature or --signature-file")),
    };
    let body = match &args.body {
        Some(path) => input::read_file_capped(path, args.max_body_bytes, "the body file")?,
        None => input::read_capped(
            std::io::stdin().lock(),
            args.max_body_bytes,
            "the body from stdin",
        )?,
    };
    match verifier.verify(&body, signature.trim()) {
        Ok(()) => {
            outln!("valid")?;
            Ok(0)
        }
        Err(VerifyError::KeyUnusable(e)) => Err(Failure::usage(format!("unusable key: {e}"))),
        Err(reason) => {
            outln!("invalid: {}", crate::term::clean(&reason.to_string()))?;
            if matches!(
                reason,
                VerifyError::SignatureMismatch { .. } | VerifyError::SignatureLength { .. }
            ) {
                // The usual cause: the company key instead of the webhook's own.
                crate::term::warn_line(format_args!("hint: {WHICH_KEY}"));
            }
            Ok(1)
        }
    }
}
