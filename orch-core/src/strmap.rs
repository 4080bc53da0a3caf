//! A small sorted string map for labels, annotations and selectors.
//!
//! Most objects carry a handful of labels; a `BTreeMap` spends a 500-byte node on each of
//! them. `StrMap` keeps the pairs in one sorted `Vec`, which is what makes a stored pod small.

use std::fmt;

use bincode::de::Decoder;
use bincode::error::DecodeError;
use bincode::{Decode, Encode};
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::text::Text;

/// A map from string to string, sorted by key, without duplicate keys.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Encode)]
pub struct StrMap(Vec<(Text, Text)>);

impl StrMap {
    /// An empty map.
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.find(key).ok().map(|i| self.0[i].1.as_str())
    }

    /// True when `key` is present.
    pub fn contains_key(&self, key: &str) -> bool {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, key: impl Into<Text>, value: impl Into<Text>) -> Option<Text> {
        let key = key.into();
        match self.find(&key) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value.into())),
            Err(i) => {
                self.0.insert(i, (key, value.into()));
                None
            }
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Text> {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    /// The pairs in key order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no pair.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when every pair of `subset` is in this map.
    pub fn contains_all(&self, subset: &StrMap) -> bool {
        subset.iter().all(|(k, v)| self.get(k) == Some(v))
    }

    /// The total bytes of keys and values.
    pub fn total_bytes(&self) -> usize {
        self.0.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }
}

impl<K: Into<Text>, V: Into<Text>> FromIterator<(K, V)> for StrMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = Self::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl fmt::Display for StrMap {
    /// `k1=v1,k2=v2`, the form kubectl prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

impl Serialize for StrMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for StrMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor;
        impl<'de> Visitor<'de> for MapVisitor {
            type Value = StrMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of strings to strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrMap, A::Error> {
                let mut map = StrMap::new();
                while let Some((k, v)) = access.next_entry::<Text, Text>()? {
                    if map.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("Duplicate value: {k:?}")));
                    }
                    map.insert(k, v);
                }
                Ok(map)
            }
        }
        d.deserialize_map(MapVisitor)
    }
}

impl<Context> Decode<Context> for StrMap {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let pairs: Vec<(Text, Text)> = Decode::decode(decoder)?;
        if pairs.windows(2).any(|w| w[0].0 >= w[1].0) {
            return Err(DecodeError::Other("map keys are not strictly sorted"));
        }
        Ok(Self(pairs))
    }
}
bincode::impl_borrow_decode!(StrMap);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_keys_sorted_and_unique() {
        let mut m: StrMap = [("b", "2"), ("a", "1")].into_iter().collect();
        assert_eq!(m.insert("a", "3"), Some("1".into()));
        assert_eq!(m.to_string(), "a=3,b=2");
        assert_eq!(m.remove("b"), Some("2".into()));
        assert_eq!(m.get("b"), None);
        assert!(serde_json::from_str::<StrMap>(r#"{"a":"1","a":"2"}"#).is_err());
    }
}
