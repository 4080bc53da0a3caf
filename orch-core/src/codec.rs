//! The storage encoding: bincode (varint integers) behind a one-byte format version tag.
//!
//! Every byte string that leaves orch-core for disk or the network (log entries, snapshots)
//! starts with [`FORMAT_VERSION`], so a future layout can be told apart and migrated.

use bincode::{Decode, Encode};

/// The version of the storage layout written by this build.
pub const FORMAT_VERSION: u8 = 1;
/// The largest encoded log entry accepted.
pub const ENTRY_BYTES_MAX: usize = 64 * 1024 * 1024;

type Config = bincode::config::Configuration;

pub(crate) const fn config() -> Config {
    bincode::config::standard()
}

/// How many bytes of claims (container lengths times element sizes, string lengths) a decode
/// may make per byte of input. A model object takes about four times its encoded size in
/// memory; the rest is margin.
pub const DECODE_CLAIMS_PER_INPUT_BYTE: usize = 16;

/// Decodes from a slice with an allocation budget proportional to its length (at least 1 MiB,
/// rounded up to a power of two): a crafted length prefix cannot make the decoder reserve more
/// than a small multiple of the bytes it was given.
pub(crate) fn decode_from_slice_bounded<T: Decode<()>>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    let budget = bytes.len().saturating_mul(DECODE_CLAIMS_PER_INPUT_BYTE).max(1 << 20).next_power_of_two();
    // bincode takes its limit as a const generic: one instantiation per power of two.
    macro_rules! by_power_of_two {
        ($($shift:literal)*) => {
            match budget.trailing_zeros() {
                $($shift => bincode::decode_from_slice(bytes, config().with_limit::<{ 1usize << $shift }>()),)*
                _ => bincode::decode_from_slice(bytes, config().with_limit::<{ 1usize << 40 }>()),
            }
        };
    }
    by_power_of_two!(20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39)
}

/// Bytes that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The bytes are empty.
    #[error("empty input")]
    Empty,
    /// Written by an unknown layout version.
    #[error("unsupported format version {found}; this build reads version {FORMAT_VERSION}")]
    Version {
        /// The version byte found.
        found: u8,
    },
    /// Longer than the limit.
    #[error("{len} bytes is more than the limit of {max}")]
    TooLarge {
        /// The input length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Trailing bytes after the value.
    #[error("{0} trailing bytes after the value")]
    Trailing(usize),
    /// Malformed content.
    #[error("malformed data: {0}")]
    Malformed(String),
}

/// Encodes `value` with the version tag.
pub fn encode<T: Encode>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    // Writing to a Vec cannot fail, and the model types encode infallibly.
    if let Err(e) = bincode::encode_into_std_write(value, &mut out, config()) {
        unreachable!("encoding into memory failed: {e}");
    }
    out
}

/// The number of bytes [`encode`] writes for `value`, without the version tag; computed without
/// writing them.
pub fn encoded_len<T: Encode>(value: &T) -> usize {
    let mut size = bincode::enc::write::SizeWriter::default();
    // Counting cannot fail, and the model types encode infallibly.
    match bincode::encode_into_writer(value, &mut size, config()) {
        Ok(()) => size.bytes_written,
        Err(e) => unreachable!("encoding into a size counter failed: {e}"),
    }
}

/// Decodes a value written by [`encode`], refusing inputs over `max` bytes.
pub fn decode<T: Decode<()>>(bytes: &[u8], max: usize) -> Result<T, CodecError> {
    if bytes.len() > max {
        return Err(CodecError::TooLarge { len: bytes.len(), max });
    }
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::Version { found: version });
    }
    let (value, used) = decode_from_slice_bounded(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(value)
}

/// Encodes a log entry.
pub fn encode_entry(entry: &crate::command::Entry) -> Vec<u8> {
    encode(entry)
}

/// Decodes a log entry.
pub fn decode_entry(bytes: &[u8]) -> Result<crate::command::Entry, CodecError> {
    decode(bytes, ENTRY_BYTES_MAX)
}
