//! `IntOrString`: a field that holds a number or a string (`maxSurge: 25%`, `targetPort: http`).

use std::fmt;

use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An integer or a string, as Kubernetes' `intstr.IntOrString`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum IntOrString {
    /// A number, such as a port or a count of pods.
    Int(i32),
    /// A string, such as a port name or a percentage (`25%`).
    Str(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        Self::Int(0)
    }
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::Str(s) => f.write_str(s),
        }
    }
}

impl IntOrString {
    /// The percentage of a `N%` string, or None for anything else.
    pub fn percent(&self) -> Option<i64> {
        match self {
            Self::Str(s) => {
                let digits = s.strip_suffix('%')?;
                if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                digits.parse().ok()
            }
            Self::Int(_) => None,
        }
    }

    /// Resolves a count against `total`: an integer as is, a percentage of `total` rounded up
    /// or down. None for a string that is not a percentage.
    pub fn scaled_value(&self, total: i64, round_up: bool) -> Option<i64> {
        match self {
            Self::Int(i) => Some(i64::from(*i)),
            Self::Str(_) => {
                let pct = self.percent()?;
                let product = pct.checked_mul(total)?;
                Some(if round_up { (product + 99) / 100 } else { product / 100 })
            }
        }
    }
}

impl Serialize for IntOrString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Int(i) => s.serialize_i32(*i),
            Self::Str(v) => s.serialize_str(v),
        }
    }
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IntOrString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("Invalid value: {v}: must fit in 32 bits")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i32::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom(format!("Invalid value: {v}: must fit in 32 bits")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::Str(v.to_owned()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_scaling_rounds_as_asked() {
        let p = IntOrString::Str("25%".into());
        assert_eq!(p.scaled_value(10, true), Some(3));
        assert_eq!(p.scaled_value(10, false), Some(2));
        assert_eq!(IntOrString::Int(4).scaled_value(10, true), Some(4));
        assert_eq!(IntOrString::Str("http".into()).scaled_value(10, true), None);
        assert_eq!(IntOrString::Str("%".into()).percent(), None);
    }

    #[test]
    fn serde_reads_both_forms() {
        assert_eq!(serde_json::from_str::<IntOrString>("8080").ok(), Some(IntOrString::Int(8080)));
        assert_eq!(serde_json::from_str::<IntOrString>("\"http\"").ok(), Some(IntOrString::Str("http".into())));
        assert!(serde_json::from_str::<IntOrString>("true").is_err());
    }
}
