//! Reading files and standard input with a size cap, so `/dev/zero` or an endless FIFO given as a
//! key or body cannot fill memory.

use std::io::Read;
use std::path::Path;

use crate::common::Failure;

/// The most bytes read from an API key file.
pub const API_KEY_FILE_MAX: u64 = 4 * 1024;
/// The most bytes read from a public key file (a PEM key or certificate is a few KiB).
pub const PUBLIC_KEY_FILE_MAX: u64 = 64 * 1024;
/// The most bytes read from a signature file (a base64 RSA-4096 signature is 684 bytes).
pub const SIGNATURE_FILE_MAX: u64 = 16 * 1024;
/// The default cap on a delivery body (`chip listen`, `chip verify`): far above any CHIP delivery.
pub const BODY_MAX: u64 = 1024 * 1024;

/// Formats a byte count as `N KiB` / `N MiB` when it is a whole number of them.
pub fn size(bytes: u64) -> String {
    if bytes >= 1024 * 1024 && bytes.is_multiple_of(1024 * 1024) {
        format!("{} MiB", bytes / (1024 * 1024))
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

/// Reads at most `max` bytes from `reader`; more than that is an error naming `what`.
pub fn read_capped(reader: impl Read, max: u64, what: &str) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::usage(format!("cannot read {what}: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(Failure::usage(format!(
            "{what} is larger than {}; refusing to read it",
            size(max)
        )));
    }
    Ok(bytes)
}

/// Reads the file at `path` (`-` is standard input), at most `max` bytes; `what` names it in errors
/// (e.g. "the key file").
pub fn read_file_capped(path: &Path, max: u64, what: &str) -> Result<Vec<u8>, Failure> {
    if path.as_os_str() == "-" {
        return read_capped(std::io::stdin().lock(), max, &format!("{what} from stdin"));
    }
    let named = format!("{what} {}", path.display());
    let file = std::fs::File::open(path)
        .map_err(|e| Failure::usage(format!("cannot read {named}: {e}")))?;
    read_capped(file, max, &named)
}

/// Like [`read_file_capped`], and the content must be UTF-8 text.
pub fn read_text_capped(path: &Path, max: u64, what: &str) -> Result<String, Failure> {
    let bytes = read_file_capped(path, max, what)?;
    String::from_utf8(bytes)
        .map_err(|_| Failure::usage(format!("{what} {} is not text", path.display())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_source_stops_at_the_cap() {
        let endless = std::io::repeat(0);
        let error = read_capped(endless, 4096, "the key").unwrap_err();
        assert_eq!(error.code, 2);
        assert!(
            error.message.contains("larger than 4 KiB"),
            "{}",
            error.message
        );
        assert_eq!(read_capped(&b"abc"[..], 3, "x").unwrap(), b"abc");
        assert_eq!(size(BODY_MAX), "1 MiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}
