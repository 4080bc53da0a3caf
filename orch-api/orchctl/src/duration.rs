//! Durations as kubectl's flags take them (`--timeout=30s`, `5m`, `1h30m`): Go's
//! `time.ParseDuration`, and for orchctl's older flags a bare number of seconds.

use std::time::Duration;

/// The longest duration taken: a year (a deadline past it is as good as none).
pub const DURATION_MAX: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses `text`: a sequence of decimal numbers, each with an optional fraction and a unit
/// (`ns`, `us` or `µs`, `ms`, `s`, `m`, `h`), as Go's `time.ParseDuration` (`300ms`, `1.5h`,
/// `2h45m`, `0`), or a bare number of seconds (`30`).
///
/// # Errors
/// A message naming the value and the forms taken, for anything else (a sign, an unknown
/// unit, more than [`DURATION_MAX`], a positive duration under a nanosecond).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?}: use seconds (30) or a duration such as 30s, 5m, 1h30m");
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = text.parse::<u64>().map_err(|_| bad())?;
        return Some(Duration::from_secs(seconds)).filter(|d| *d <= DURATION_MAX).ok_or_else(bad);
    }
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        // Digits with at most one point, and at least one digit.
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_end = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3_600.0,
            _ => return Err(bad()),
        };
        total += value * scale;
        rest = tail;
    }
    // A positive duration too short to count would read as 0, "no limit": refused.
    let duration = Duration::try_from_secs_f64(total).ok().filter(|d| *d <= DURATION_MAX).ok_or_else(bad)?;
    if duration.is_zero() && total > 0.0 {
        return Err(bad());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_and_bare_seconds_are_taken() {
        let ok = |text: &str| parse_duration(text).expect(text);
        assert_eq!(ok("30"), Duration::from_secs(30));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("1h30m"), Duration::from_secs(5_400));
        assert_eq!(ok("1.5h"), Duration::from_secs(5_400));
        assert_eq!(ok("2m3.5s"), Duration::from_millis(123_500));
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("10us"), Duration::from_micros(10));
        assert_eq!(ok("10µs"), Duration::from_micros(10));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
    }

    #[test]
    fn anything_else_is_refused_naming_the_value() {
        for text in
            ["", "s", "5d", "-5s", "+5s", "+5", "5x", "5 s", "1..5s", ".s", "5m-", "9999999h", "31622401", "0.1ns"]
        {
            let err = parse_duration(text).expect_err(text);
            assert!(err.starts_with(&format!("invalid duration {text:?}")), "{err}");
        }
    }
}
