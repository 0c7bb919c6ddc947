//! Event-time parsing and formatting. Event time is kept as milliseconds since
//! the Unix epoch (UTC); the wire form is RFC 3339.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Parses an RFC 3339 timestamp (with offset) to epoch milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).ok()
}

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            millis
        ),
        Err(_) => format!("{ms}ms"),
    }
}

/// Writes a duration in the largest unit that divides it (`24h`, `30d`, `90s`).
pub fn format_duration_ms(ms: i64) -> String {
    for (unit, size) in [("w", 7 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        // Days and weeks only from two of them: "24h" reads better than "1d".
        if ms != 0 && ms % size == 0 && (size < 86_400_000 || ms >= 2 * size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// Parses a duration such as `10m`, `1h`, `24h`, `7d`, `30d`, `500ms`, `90s`.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = text.split_at(split);
    let n: i64 = num.parse().ok()?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult).filter(|v| *v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let ms = parse_rfc3339_ms("2026-11-01T08:00:00.123Z").unwrap();
        assert_eq!(format_ms(ms), "2026-11-01T08:00:00.123Z");
        assert_eq!(parse_rfc3339_ms("2026-11-01T10:00:00.123+02:00"), Some(ms));
        assert_eq!(parse_rfc3339_ms("2026-11-01 08:00"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("10m"), Some(600_000));
        assert_eq!(parse_duration_ms("24h"), Some(86_400_000));
        assert_eq!(parse_duration_ms("0h"), None);
        assert_eq!(parse_duration_ms("5 parsecs"), None);
        assert_eq!(parse_duration_ms("h"), None);
    }
}
