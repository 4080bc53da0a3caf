//! Identifier newtypes: object uids, revisions and proposer client ids.

use std::fmt;
use std::str::FromStr;

use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A revision: the Raft log index of the entry that last changed an object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct Revision(pub u64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Kubernetes writes `resourceVersion` as a string; we accept a string or a number.
impl Serialize for Revision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Revision {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Revision;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a resource version: a non-negative integer, as a string or a number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Revision, E> {
                v.parse()
                    .map(Revision)
                    .map_err(|_| E::custom(format!("Invalid value: {v:?}: must be a non-negative integer")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Revision, E> {
                Ok(Revision(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Revision, E> {
                u64::try_from(v)
                    .map(Revision)
                    .map_err(|_| E::custom(format!("Invalid value: {v}: must be a non-negative integer")))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// An object's unique id, derived from the log index that created it; printed as a UUID.
///
/// Held as two `u64`s (high, low) rather than a `u128`, whose 16-byte alignment would pad
/// every `Option<Uid>` in the model to 32 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct Uid([u64; 2]);

impl Uid {
    /// The uid of the `seq`-th object created by the entry at `index`.
    ///
    /// Distinct (index, seq) pairs give distinct uids, so no two objects ever share one.
    pub const fn derive(index: u64, seq: u32) -> Self {
        Self([index, seq as u64])
    }

    /// The uid with this 128-bit value.
    pub const fn from_u128(value: u128) -> Self {
        Self([(value >> 64) as u64, value as u64])
    }

    /// The 128-bit value.
    pub const fn as_u128(self) -> u128 {
        ((self.0[0] as u128) << 64) | self.0[1] as u128
    }

    /// True for the all-zero uid, which no object has.
    pub const fn is_nil(self) -> bool {
        self.0[0] == 0 && self.0[1] == 0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = format!("{:032x}", self.as_u128());
        write!(f, "{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
    }
}

/// Why a uid string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("must be a UUID: 32 hexadecimal digits, optionally grouped 8-4-4-4-12 by dashes")]
pub struct UidError;

impl FromStr for Uid {
    type Err = UidError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(UidError);
        }
        u128::from_str_radix(&hex, 16).map(Uid::from_u128).map_err(|_| UidError)
    }
}

impl Serialize for Uid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Uid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e: UidError| serde::de::Error::custom(format!("Invalid value: {text:?}: {e}")))
    }
}

/// The id of a proposer (an API server, a controller, a client), used to deduplicate retries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize)]
pub struct ClientId(pub u128);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_prints_as_uuid_and_parses_back() {
        let uid = Uid::derive(42, 3);
        assert_eq!(uid.to_string(), "00000000-0000-002a-0000-000000000003");
        assert_eq!(uid.to_string().parse::<Uid>(), Ok(uid));
        assert!("not-a-uid".parse::<Uid>().is_err());
        assert_ne!(Uid::derive(1, 0), Uid::derive(0, 1));
    }

    #[test]
    fn revision_accepts_string_or_number() {
        assert_eq!(serde_json::from_str::<Revision>("\"17\"").ok(), Some(Revision(17)));
        assert_eq!(serde_json::from_str::<Revision>("17").ok(), Some(Revision(17)));
        assert!(serde_json::from_str::<Revision>("-1").is_err());
        assert_eq!(serde_json::to_string(&Revision(5)).ok().as_deref(), Some("\"5\""));
    }
}
