//! `chip verify`: check an X-Signature offline.

use std::io::Read;
use std::path::PathBuf;

use chip_gate::{Digest, Verifier, VerifyError};
use clap::{Args, ValueEnum};

use crate::{Failure, Outcome};

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
pub struct VerifyArgs {
    /// The public key file: PEM (SPKI, PKCS#1 or a certificate), PEM with escaped \n, or the JSON
    /// string that GET /public_key/ returns.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The X-Signature header value (base64).
    #[arg(long, value_name = "SIG", allow_hyphen_values = true)]
    signature: String,
    /// The digest: sha256 for CHIP Collect, sha512 for CHIP Send.
    #[arg(long, value_enum, default_value = "sha256")]
    digest: DigestArg,
    /// The exact body bytes; read from standard input when absent.
    #[arg(value_name = "BODY_FILE")]
    body: Option<PathBuf>,
}

/// Exit 0 and `valid`, exit 1 and `invalid: <reason>`, or exit 2 when the key or body is unusable.
pub fn run(args: &VerifyArgs) -> Outcome {
    let key_text = std::fs::read(&args.key).map_err(|e| {
        Failure::usage(format!(
            "cannot read the key file {}: {e}",
            args.key.display()
        ))
    })?;
    let key_text = String::from_utf8(key_text)
        .map_err(|_| Failure::usage(format!("the key file {} is not text", args.key.display())))?;
    let digest = match args.digest {
        DigestArg::Sha256 => Digest::Sha256,
        DigestArg::Sha512 => Digest::Sha512,
    };
    let verifier = Verifier::from_pem(&key_text)
        .map_err(|e| Failure::usage(format!("unusable key in {}: {e}", args.key.display())))?
        .with_digest(digest);
    let body = match &args.body {
        Some(path) => std::fs::read(path).map_err(|e| {
            Failure::usage(format!("cannot read the body file {}: {e}", path.display()))
        })?,
        None => {
            let mut body = Vec::new();
            std::io::stdin()
                .read_to_end(&mut body)
                .map_err(|e| Failure::usage(format!("cannot read the body from stdin: {e}")))?;
            body
        }
    };
    match verifier.verify(&body, args.signature.trim()) {
        Ok(()) => {
            println!("valid");
            Ok(0)
        }
        Err(VerifyError::KeyUnusable(e)) => Err(Failure::usage(format!("unusable key: {e}"))),
        Err(reason) => {
            println!("invalid: {reason}");
            Ok(1)
        }
    }
}
