//! Times and durations as `chip inbox` reads and prints them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::output;

/// Parses `7d`, `48h`, `90m`, `30s`, `2w` or a sum such as `1d12h`.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    const HINT: &str = "expected a number and a unit (s, m, h, d, w), e.g. 7d, 48h or 1d12h";
    let text = text.trim();
    if text.is_empty() {
        return Err(HINT.to_owned());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(HINT.to_owned()),
        };
        let n: u64 = digits.parse().map_err(|_| HINT.to_owned())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(|| "the duration is too long".to_owned())?;
    }
    if !digits.is_empty() {
        return Err(HINT.to_owned());
    }
    Ok(Duration::from_secs(total))
}

/// A duration in at most two units, largest first: `7d`, `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub(super) fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    let parts = [
        (secs / 86_400, "d"),
        (secs % 86_400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
    ];
    let Some(first) = parts.iter().position(|&(n, _)| n > 0) else {
        return "0s".to_owned();
    };
    parts[first..]
        .iter()
        .take(2)
        .filter(|&&(n, _)| n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Unix milliseconds as RFC 3339 UTC to the second, as the rest of the CLI prints times.
pub(super) fn time_ms(ms: i64) -> String {
    output::rfc3339(ms.div_euclid(1000))
}

pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How long ago `ms` was (zero for a time in the future).
pub(super) fn age(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms().saturating_sub(ms)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1d12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in ["", "7", "d", "7x", "1.5h", "-1d", "99999999999999999999w"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(human(Duration::from_secs(12)), "12s");
        assert_eq!(human(Duration::from_secs(250)), "4m 10s");
        assert_eq!(human(Duration::from_secs(7500)), "2h 5m");
        assert_eq!(human(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(human(Duration::from_secs(3600 + 5)), "1h");
        assert_eq!(human(Duration::ZERO), "0s");
    }
}
