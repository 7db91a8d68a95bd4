//! Times and durations as `chip inbox` reads and prints them.

use std::time::Duration;

use crate::output;

/// Parses an age as `jiff` reads a span: `7d`, `48h`, `90m`, `30s`, `2w`, a sum such as `1d12h` or
/// `1d 12h`, units spelled out (`36 hours`), or ISO 8601 (`P7D`). Whole, positive units only, and
/// nothing longer than weeks (a month or a year has no fixed length); a day is 24 hours.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    const HINT: &str =
        "expected numbers with units (s, m, h, d, w), e.g. 7d, 48h, 1d12h or 36 hours";
    let text = text.trim();
    // `1.5h` would read as 1h 30m: refused, as an age is given in whole units.
    if text.contains(['.', ',']) {
        return Err(HINT.to_owned());
    }
    let span: jiff::Span = text.parse().map_err(|_| HINT.to_owned())?;
    if span.is_negative() {
        return Err(HINT.to_owned());
    }
    let duration = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|_| HINT.to_owned())?;
    Duration::try_from(duration).map_err(|_| HINT.to_owned())
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

/// Now, in Unix milliseconds.
pub(super) fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
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
        assert_eq!(parse_duration("48h"), Ok(Duration::from_secs(48 * 3600)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1d 12h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(
            parse_duration("36 hours"),
            Ok(Duration::from_secs(36 * 3600))
        );
        for bad in [
            "",
            "7",
            "d",
            "7x",
            "1.5h",
            "-1d",
            "1d ago",
            "1y",
            "2mo",
            "soon",
            "99999999999999999999w",
        ] {
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
