//! Resource quantities (`250m`, `2`, `128Mi`, `1Gi`, `1e3`), held as integers.
//!
//! A [`Quantity`] keeps its value in milli-units in an `i64`: millicores for `cpu`, and
//! thousandths of a byte for `memory` (read with [`Quantity::value`], rounded up). No floats
//! are ever stored, so every replica computes the same bits.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use std::num::NonZeroI64;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The largest number of digits accepted in a quantity's number part.
pub const QUANTITY_DIGITS_MAX: usize = 30;

/// The largest magnitude of a quantity, in milli-units (about 2.3 million TiB of memory).
pub const QUANTITY_MILLI_MAX: i64 = i64::MAX >> 2;

/// A Kubernetes-style resource quantity.
///
/// Equality and ordering compare the value only: `1Ki` equals `1024`.
///
/// Held in one non-zero `i64`: the milli-value shifted left by two, a bit that says to print
/// with binary suffixes (`Ki`, `Mi`, ...) as the user wrote it, and a low bit always set. So a
/// `Quantity` and an `Option<Quantity>` are both 8 bytes, which halves every resource list.
#[derive(Clone, Copy)]
pub struct Quantity(NonZeroI64);

impl Default for Quantity {
    fn default() -> Self {
        Self::pack(0, false)
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Quantity({self})")
    }
}

impl Encode for Quantity {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.0.get().encode(encoder)
    }
}

impl<Context> Decode<Context> for Quantity {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let raw = i64::decode(decoder)?;
        match NonZeroI64::new(raw) {
            Some(packed) if raw & 1 == 1 => Ok(Self(packed)),
            _ => Err(DecodeError::Other("malformed quantity")),
        }
    }
}
bincode::impl_borrow_decode!(Quantity);

/// Why a quantity string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The text does not have the shape of a quantity.
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Syntax,
    /// The value does not fit the integer representation.
    #[error("quantity is too large: must be at most {} units", QUANTITY_MILLI_MAX / 1000)]
    TooLarge,
}

impl Quantity {
    /// Packs a milli-value (clamped to ±[`QUANTITY_MILLI_MAX`]) and the print format.
    const fn pack(milli: i64, binary: bool) -> Self {
        let milli = if milli > QUANTITY_MILLI_MAX {
            QUANTITY_MILLI_MAX
        } else if milli < -QUANTITY_MILLI_MAX {
            -QUANTITY_MILLI_MAX
        } else {
            milli
        };
        let raw = (milli << 2) | ((binary as i64) << 1) | 1;
        match NonZeroI64::new(raw) {
            Some(packed) => Self(packed),
            None => unreachable!(),
        }
    }

    /// A quantity of `milli` thousandths of a unit (millicores for cpu), clamped to
    /// ±[`QUANTITY_MILLI_MAX`].
    pub const fn from_milli(milli: i64) -> Self {
        Self::pack(milli, false)
    }

    /// A quantity of whole units, printed with decimal suffixes.
    pub const fn from_units(units: i64) -> Self {
        Self::pack(units.saturating_mul(1000), false)
    }

    /// A byte count, printed with binary suffixes when exact (`128Mi`).
    pub const fn from_bytes(bytes: i64) -> Self {
        Self::pack(bytes.saturating_mul(1000), true)
    }

    /// The value in thousandths of a unit (millicores for cpu).
    pub const fn milli_value(&self) -> i64 {
        self.0.get() >> 2
    }

    const fn binary(&self) -> bool {
        self.0.get() & 2 != 0
    }

    /// The value in whole units (bytes for memory), rounded up as Kubernetes does.
    pub const fn value(&self) -> i64 {
        let milli = self.milli_value();
        let whole = milli / 1000;
        if milli % 1000 > 0 { whole + 1 } else { whole }
    }

    /// True when the value is below zero.
    pub const fn is_negative(&self) -> bool {
        self.milli_value() < 0
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.milli_value() == other.milli_value()
    }
}
impl Eq for Quantity {}
impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.milli_value().cmp(&other.milli_value())
    }
}

fn pow_i128(base: i128, exp: u32) -> Option<i128> {
    base.checked_pow(exp)
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = text.as_bytes();
        let mut pos = 0;
        let mut negative = false;
        if let Some(&sign) = bytes.first()
            && (sign == b'+' || sign == b'-')
        {
            negative = sign == b'-';
            pos = 1;
        }
        // The number: digits with at most one decimal point.
        let number_start = pos;
        while pos < bytes.len() && (bytes[pos].is_ascii_digit() || bytes[pos] == b'.') {
            pos += 1;
        }
        let number = &text[number_start..pos];
        let suffix = &text[pos..];
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if frac_part.contains('.')
            || (int_part.is_empty() && frac_part.is_empty())
            || int_part.len() + frac_part.len() > QUANTITY_DIGITS_MAX
        {
            return Err(QuantityError::Syntax);
        }
        let mut mantissa: i128 = 0;
        for digit in int_part.bytes().chain(frac_part.bytes()) {
            mantissa = mantissa * 10 + i128::from(digit - b'0');
        }
        // The multiplier as 2^(10k) or 10^e.
        let (binary, binary_pow, decimal_exp): (bool, u32, i32) = match suffix {
            "Ki" => (true, 1, 0),
            "Mi" => (true, 2, 0),
            "Gi" => (true, 3, 0),
            "Ti" => (true, 4, 0),
            "Pi" => (true, 5, 0),
            "Ei" => (true, 6, 0),
            "n" => (false, 0, -9),
            "u" => (false, 0, -6),
            "m" => (false, 0, -3),
            "" => (false, 0, 0),
            "k" => (false, 0, 3),
            "M" => (false, 0, 6),
            "G" => (false, 0, 9),
            "T" => (false, 0, 12),
            "P" => (false, 0, 15),
            "E" => (false, 0, 18),
            _ => {
                let exp = suffix.strip_prefix('e').or_else(|| suffix.strip_prefix('E')).ok_or(QuantityError::Syntax)?;
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(QuantityError::Syntax);
                }
                let exp: i32 = exp.parse().map_err(|_| QuantityError::Syntax)?;
                (false, 0, exp)
            }
        };
        // milli = mantissa * multiplier * 1000 / 10^frac_digits, rounded up.
        let frac_digits = i32::try_from(frac_part.len()).map_err(|_| QuantityError::Syntax)?;
        let ten_exp = decimal_exp + 3 - frac_digits;
        let mut numerator = mantissa;
        if binary {
            numerator = numerator
                .checked_mul(pow_i128(1024, binary_pow).ok_or(QuantityError::TooLarge)?)
                .ok_or(QuantityError::TooLarge)?;
        }
        let mut denominator: i128 = 1;
        if ten_exp >= 0 {
            if numerator != 0 {
                let scale = pow_i128(10, ten_exp.unsigned_abs()).ok_or(QuantityError::TooLarge)?;
                numerator = numerator.checked_mul(scale).ok_or(QuantityError::TooLarge)?;
            }
        } else {
            match pow_i128(10, ten_exp.unsigned_abs()) {
                Some(d) => denominator = d,
                // The value is far below one milli-unit; it rounds up to one.
                None => {
                    numerator = i128::from(numerator != 0);
                }
            }
        }
        let mut milli = numerator / denominator;
        if numerator % denominator != 0 {
            milli += 1;
        }
        if negative {
            milli = -milli;
        }
        let milli = i64::try_from(milli).map_err(|_| QuantityError::TooLarge)?;
        if milli.checked_abs().is_none_or(|m| m > QUANTITY_MILLI_MAX) {
            return Err(QuantityError::TooLarge);
        }
        Ok(Self::pack(milli, binary))
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let milli = self.milli_value();
        if milli % 1000 != 0 {
            return write!(f, "{milli}m");
        }
        let units = milli / 1000;
        if units == 0 {
            return f.write_str("0");
        }
        if self.binary() {
            const SUFFIXES: [(&str, u32); 6] = [("Ei", 6), ("Pi", 5), ("Ti", 4), ("Gi", 3), ("Mi", 2), ("Ki", 1)];
            for (suffix, pow) in SUFFIXES {
                let scale = 1024_i64.pow(pow);
                if units % scale == 0 {
                    return write!(f, "{}{suffix}", units / scale);
                }
            }
            return write!(f, "{units}");
        }
        const SUFFIXES: [(&str, u32); 6] = [("E", 6), ("P", 5), ("T", 4), ("G", 3), ("M", 2), ("k", 1)];
        for (suffix, pow) in SUFFIXES {
            let scale = 1000_i64.pow(pow);
            if units % scale == 0 {
                return write!(f, "{}{suffix}", units / scale);
            }
        }
        write!(f, "{units}")
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity such as \"250m\", \"2\" or \"128Mi\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Quantity, E> {
                v.parse().map_err(|e: QuantityError| E::custom(format!("Invalid value: {v:?}: {e}")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Quantity, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Quantity, E> {
                // YAML reads `0.5` as a float; its shortest decimal form is what the user wrote.
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_kubernetes_forms() {
        assert_eq!(q("250m").milli_value(), 250);
        assert_eq!(q("2").milli_value(), 2000);
        assert_eq!(q("0.5").milli_value(), 500);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("128Mi").value(), 128 * 1024 * 1024);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E3").value(), 1000);
        assert_eq!(q("1.5k").value(), 1500);
        assert_eq!(q("2M").value(), 2_000_000);
        assert_eq!(q("-1").milli_value(), -1000);
        assert_eq!(q("+3").milli_value(), 3000);
        assert_eq!(q("100n").milli_value(), 1, "sub-milli values round up");
        assert_eq!(q("0.0001").milli_value(), 1);
        assert_eq!(q("1e-3").milli_value(), 1);
        assert_eq!(q("0").milli_value(), 0);
        assert_eq!(q("100m").value(), 1, "fractional bytes round up");
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "abc", "1.2.3", "12Q", "1Mib", "m", "1e", "e3", ".", "1 Gi", "--1", "1e1000"] {
            assert!(bad.parse::<Quantity>().is_err(), "{bad:?} should be refused");
        }
        assert_eq!("100Ei".parse::<Quantity>(), Err(QuantityError::TooLarge));
        assert_eq!("2Ei".parse::<Quantity>(), Err(QuantityError::TooLarge));
        assert!("2Pi".parse::<Quantity>().is_ok());
        assert_eq!("99999999999999999999999999999".parse::<Quantity>(), Err(QuantityError::TooLarge));
    }

    #[test]
    fn prints_canonically() {
        for (input, shown) in [
            ("250m", "250m"),
            ("2", "2"),
            ("0.5", "500m"),
            ("128Mi", "128Mi"),
            ("1024Mi", "1Gi"),
            ("1e3", "1k"),
            ("1500", "1500"),
            ("0", "0"),
            ("1536Ki", "1536Ki"),
            ("1000Ki", "1000Ki"),
            ("-2k", "-2k"),
        ] {
            assert_eq!(q(input).to_string(), shown, "{input}");
        }
    }

    #[test]
    fn option_of_a_quantity_is_one_word() {
        assert_eq!(std::mem::size_of::<Option<Quantity>>(), 8);
        assert_eq!(Quantity::from_milli(-5).milli_value(), -5);
        assert_eq!(Quantity::from_bytes(1 << 20).to_string(), "1Mi");
        assert_eq!(Quantity::from_milli(i64::MAX).milli_value(), QUANTITY_MILLI_MAX);
    }

    #[test]
    fn equality_is_by_value() {
        assert_eq!(q("1Ki"), q("1024"));
        assert!(q("1") > q("999m"));
    }
}
