//! The key bundle: the public keys of the webhooks a plan manages, as one PEM text.

use uuid::Uuid;

use super::compute::Plan;
use crate::Webhook;
use crate::verify::{KeyError, VerificationKey};

impl Plan {
    /// The public keys of the [`managed`](Self::managed) webhooks as one PEM bundle: a comment line
    /// naming each webhook, then its key as SPKI PEM. [`Verifier::from_pem_bundle`] reads it.
    ///
    /// [`Verifier::from_pem_bundle`]: crate::Verifier::from_pem_bundle
    ///
    /// # Errors
    ///
    /// The [`KeyError`] of the first key that cannot be used, with the webhook's id.
    pub fn key_bundle(&self) -> Result<String, (Uuid, KeyError)> {
        key_bundle(self.managed())
    }
}

/// The public keys of `webhooks` as one PEM bundle (see [`Plan::key_bundle`]).
///
/// # Errors
///
/// The webhook's id and the [`KeyError`] of the first key that cannot be used.
pub fn key_bundle(webhooks: &[Webhook]) -> Result<String, (Uuid, KeyError)> {
    let mut out = String::new();
    for webhook in webhooks {
        let key = VerificationKey::from_pem(&webhook.public_key).map_err(|e| (webhook.id, e))?;
        let title: String = webhook
            .title
            .chars()
            .map(|c| if c.is_control() || c == '-' { ' ' } else { c })
            .collect();
        out.push_str(&format!("# webhook {} {:?}\n", webhook.id, title.trim()));
        out.push_str(&pem::encode(&pem::Pem::new(
            "PUBLIC KEY",
            key.spki_der().to_vec(),
        )));
    }
    Ok(out)
}
