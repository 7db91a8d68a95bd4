//! Prints one request as the relay signs it, as JSON (`secret`, `headers`, `body`), for the
//! Standard Webhooks libraries of other languages to verify (`contract/run.sh`). The secret is
//! made for the occasion and thrown away.

use std::time::{SystemTime, UNIX_EPOCH};

use chip_gate_relay::{Secret, WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (secret, text) = Secret::generate().map_err(|_| "no randomness")?;
    // CHIP's own signed test vector: a real delivery body.
    let body = include_str!("../../chip-gate/tests/fixtures/chip-collect/signed-vector/body.json");
    let id = "msg_chip_42";
    let timestamp = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let signature = secret.sign(id, timestamp, body.as_bytes());
    let sample = serde_json::json!({
        "secret": text,
        "headers": {
            WEBHOOK_ID: id,
            WEBHOOK_TIMESTAMP: timestamp.to_string(),
            WEBHOOK_SIGNATURE: signature,
        },
        "body": body,
    });
    println!("{sample}");
    Ok(())
}
