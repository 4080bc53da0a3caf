//! Timestamps as integers: milliseconds since the Unix epoch, printed as RFC 3339.
//!
//! orch-core never reads a clock. Every time it stores comes from a committed entry's
//! timestamp, stamped by the proposer.

use std::fmt;
use std::num::NonZeroI64;
use std::str::FromStr;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The earliest representable time, 0001-01-01T00:00:00Z.
pub const TIME_MIN_MS: i64 = -62_135_596_800_000;
/// The latest representable time, 9999-12-31T23:59:59.999Z.
pub const TIME_MAX_MS: i64 = 253_402_300_799_999;

/// A point in time, in milliseconds since 1970-01-01T00:00:00Z, between [`TIME_MIN_MS`] and
/// [`TIME_MAX_MS`].
///
/// Held as a non-zero offset from [`TIME_MIN_MS`] so that `Option<Time>`, which every
/// timestamp field is, takes 8 bytes rather than 16.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(NonZeroI64);

impl Default for Time {
    /// The epoch.
    fn default() -> Self {
        Self::from_millis(0)
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Time({self})")
    }
}

/// Why a timestamp string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("must be an RFC 3339 time such as \"2026-01-02T15:04:05Z\" between years 1 and 9999")]
pub struct TimeError;

impl Time {
    /// The time `ms` milliseconds after the epoch, clamped to the representable range.
    pub const fn from_millis(ms: i64) -> Self {
        let ms = if ms < TIME_MIN_MS {
            TIME_MIN_MS
        } else if ms > TIME_MAX_MS {
            TIME_MAX_MS
        } else {
            ms
        };
        match NonZeroI64::new(ms - TIME_MIN_MS + 1) {
            Some(offset) => Self(offset),
            None => unreachable!(),
        }
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0.get() - 1 + TIME_MIN_MS
    }

    /// This time plus `seconds`, saturating at the representable range.
    pub fn plus_seconds(self, seconds: i64) -> Self {
        Self::from_millis(self.as_millis().saturating_add(seconds.saturating_mul(1000)))
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.as_millis();
        let days = ms.div_euclid(86_400_000);
        let in_day = ms.rem_euclid(86_400_000);
        let (year, month, day) = civil_from_days(days);
        let (h, m, s, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
        write!(f, "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}")?;
        if milli != 0 {
            write!(f, ".{milli:03}")?;
        }
        f.write_str("Z")
    }
}

fn digits(text: &str, range: std::ops::Range<usize>) -> Result<i64, TimeError> {
    let part = text.get(range).ok_or(TimeError)?;
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TimeError);
    }
    part.parse().map_err(|_| TimeError)
}

impl FromStr for Time {
    type Err = TimeError;

    /// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`; the fraction is truncated
    /// to milliseconds.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let b = text.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
            return Err(TimeError);
        }
        if b[13] != b':' || b[16] != b':' {
            return Err(TimeError);
        }
        let (year, month, day) = (digits(text, 0..4)?, digits(text, 5..7)?, digits(text, 8..10)?);
        let (hour, minute, second) = (digits(text, 11..13)?, digits(text, 14..16)?, digits(text, 17..19)?);
        if year < 1
            || !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 60
        {
            return Err(TimeError);
        }
        let mut pos = 19;
        let mut milli = 0;
        if b[pos] == b'.' {
            let start = pos + 1;
            pos = start;
            while pos < b.len() && b[pos].is_ascii_digit() {
                pos += 1;
            }
            if pos == start {
                return Err(TimeError);
            }
            let frac = &text[start..pos.min(start + 3)];
            milli = frac.parse::<i64>().map_err(|_| TimeError)? * 10_i64.pow(3 - frac.len() as u32);
        }
        let offset_minutes = match &text[pos..] {
            "Z" | "z" => 0,
            zone if zone.len() == 6 && (zone.starts_with('+') || zone.starts_with('-')) => {
                if zone.as_bytes()[3] != b':' {
                    return Err(TimeError);
                }
                let (h, m) = (digits(zone, 1..3)?, digits(zone, 4..6)?);
                if h > 23 || m > 59 {
                    return Err(TimeError);
                }
                let sign = if zone.starts_with('-') { -1 } else { 1 };
                sign * (h * 60 + m)
            }
            _ => return Err(TimeError),
        };
        let seconds =
            days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
        let ms = seconds * 1000 + milli;
        if !(TIME_MIN_MS..=TIME_MAX_MS).contains(&ms) {
            return Err(TimeError);
        }
        Ok(Self::from_millis(ms))
    }
}

impl Encode for Time {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.as_millis().encode(encoder)
    }
}

impl<Context> Decode<Context> for Time {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let ms = i64::decode(decoder)?;
        if !(TIME_MIN_MS..=TIME_MAX_MS).contains(&ms) {
            return Err(DecodeError::Other("time outside years 1 to 9999"));
        }
        Ok(Self::from_millis(ms))
    }
}
bincode::impl_borrow_decode!(Time);

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e: TimeError| serde::de::Error::custom(format!("Invalid value: {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        assert_eq!(Time::from_millis(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Time::from_millis(1_795_824_000_123).to_string(), "2026-11-28T00:00:00.123Z");
        for text in ["2026-11-27T23:59:43Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "2024-02-29T12:00:00Z"]
        {
            let t: Time = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(t.to_string(), text);
        }
        let t: Time = "2026-11-27T23:59:43+01:00".parse().unwrap_or_default();
        assert_eq!(t.to_string(), "2026-11-27T22:59:43Z");
        let t: Time = "1969-12-31T23:59:59.5Z".parse().unwrap_or_default();
        assert_eq!(t.as_millis(), -500);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+0100",
            "x026-01-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
        ] {
            assert!(bad.parse::<Time>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn every_day_round_trips() {
        for days in (-719_162..2_932_896).step_by(97) {
            let t = Time::from_millis(days * 86_400_000);
            assert_eq!(t.to_string().parse::<Time>(), Ok(t));
        }
    }
}
