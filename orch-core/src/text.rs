//! [`Text`]: the string type of the model. Strings of up to 24 bytes (names, namespaces,
//! label keys and values, condition types, IP addresses) are stored inline with no heap
//! allocation; longer ones on the heap as a `String` would be.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use bincode::de::Decoder;
use bincode::de::read::Reader;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use compact_str::CompactString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest start of `s` of at most `max` bytes that ends on a character boundary (`s`
/// itself when it is short enough).
pub fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An immutable-in-practice UTF-8 string, 24 bytes wide, inline up to 24 bytes.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(CompactString);

impl Text {
    /// The empty string.
    pub const fn new() -> Self {
        Self(CompactString::const_new(""))
    }

    /// The string slice.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Self(CompactString::from(s))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(CompactString::from(s))
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Self {
        Self(CompactString::from(s.as_str()))
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.0.into_string()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Text;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text::from(v))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text, E> {
                Ok(Text::from(v))
            }
        }
        d.deserialize_str(Visitor)
    }
}

impl Encode for Text {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.as_str().encode(encoder)
    }
}

/// Strings up to this long are decoded through a stack buffer, with no heap allocation.
const INLINE_BYTES_MAX: usize = 24;

impl<Context> Decode<Context> for Text {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        // The layout of a bincode `String`: a length, then the bytes.
        let len = u64::decode(decoder)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::OutsideUsizeRange(len))?;
        decoder.claim_container_read::<u8>(len)?;
        if len <= INLINE_BYTES_MAX {
            let mut buf = [0u8; INLINE_BYTES_MAX];
            decoder.reader().read(&mut buf[..len])?;
            let s = std::str::from_utf8(&buf[..len]).map_err(|inner| DecodeError::Utf8 { inner })?;
            return Ok(Self::from(s));
        }
        let mut bytes = vec![0u8; len];
        decoder.reader().read(&mut bytes)?;
        let s = String::from_utf8(bytes).map_err(|e| DecodeError::Utf8 { inner: e.utf8_error() })?;
        Ok(Self::from(s))
    }
}
bincode::impl_borrow_decode!(Text);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_ends_on_a_character_boundary() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abcdef", 3), "abc");
        assert_eq!(cut("aé", 2), "a");
        assert_eq!(cut("éé", 3), "é");
    }

    #[test]
    fn short_strings_are_inline_and_compare_with_str() {
        let t = Text::from("web-5d8f9c7b6-000001");
        assert!(!t.0.is_heap_allocated());
        assert_eq!(t, "web-5d8f9c7b6-000001");
        assert_eq!(std::mem::size_of::<Text>(), 24);
        assert_eq!(std::mem::size_of::<Option<Text>>(), 24);
        let json = serde_json::to_string(&t).unwrap_or_default();
        assert_eq!(json, "\"web-5d8f9c7b6-000001\"");
        let long = Text::from("registry.example.com/shop/web:1.27.3");
        assert_eq!(crate::codec::decode::<Text>(&crate::codec::encode(&long), 1024).ok(), Some(long));
    }
}
