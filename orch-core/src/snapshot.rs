//! State snapshots: the whole state (objects, clock, deduplication table) as bytes, with a
//! digest that is checked on restore.
//!
//! Layout: `ORCHSNAP` magic, format version (u8), payload length (u64 LE), BLAKE3 digest of
//! the payload (32 bytes), payload (bincode). Equal states give equal bytes.

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};

use crate::codec::{FORMAT_VERSION, FORMAT_VERSION_MIN, Format, config, decode_from_slice_bounded};
use crate::ids::Revision;
use crate::object::{Object, ObjectKey};
use crate::sessions::Sessions;
use crate::state::{Objects as ObjectMap, State};

const MAGIC: &[u8; 8] = b"ORCHSNAP";
const HEADER_BYTES: usize = 8 + 1 + 8 + 32;
/// The first format whose snapshots carry the sessions' openings after the table.
const OPENINGS_SINCE: u8 = 5;
/// The first format whose snapshots' openings are kept (format 5's are read and dropped).
const OPENINGS_HONOURED_SINCE: u8 = 6;
/// The largest snapshot accepted.
pub const SNAPSHOT_BYTES_MAX: usize = 8 * 1024 * 1024 * 1024;

/// A 32-byte BLAKE3 digest of a state's encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(pub [u8; 32]);

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A snapshot that could not be restored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Not a snapshot, or cut short.
    #[error("not an orch snapshot or truncated: {0}")]
    Format(&'static str),
    /// Written by an unknown layout version.
    #[error(
        "unsupported snapshot format version {0}; this build reads versions {FORMAT_VERSION_MIN} to {FORMAT_VERSION}"
    )]
    Version(u8),
    /// The payload does not match its digest.
    #[error("snapshot digest mismatch: the data is corrupt")]
    Digest,
    /// The payload does not decode.
    #[error("malformed snapshot: {0}")]
    Malformed(String),
    /// The decoded state breaks an invariant.
    #[error("inconsistent snapshot: {0}")]
    Inconsistent(String),
}

/// The objects of a state, encoded as a length and the objects in key order.
struct Objects<'a>(&'a ObjectMap);

impl Encode for Objects<'_> {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        (self.0.len() as u64).encode(encoder)?;
        for obj in self.0.values() {
            obj.encode(encoder)?;
        }
        Ok(())
    }
}

struct Body<'a> {
    applied: Revision,
    clock_ms: i64,
    bootstrapped: bool,
    objects: Objects<'a>,
    sessions: &'a Sessions,
}

impl Encode for Body<'_> {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.applied.encode(encoder)?;
        self.clock_ms.encode(encoder)?;
        self.bootstrapped.encode(encoder)?;
        self.objects.encode(encoder)?;
        self.sessions.encode(encoder)?;
        // Since format 5, after the table whose layout it keeps.
        self.sessions.openings().encode(encoder)
    }
}

struct DecodedBody {
    applied: Revision,
    clock_ms: i64,
    bootstrapped: bool,
    objects: Vec<Object>,
    sessions: Sessions,
}

impl Decode<Format> for DecodedBody {
    fn decode<D: Decoder<Context = Format>>(decoder: &mut D) -> Result<Self, DecodeError> {
        Ok(Self {
            applied: Decode::decode(decoder)?,
            clock_ms: Decode::decode(decoder)?,
            bootstrapped: Decode::decode(decoder)?,
            objects: Decode::decode(decoder)?,
            sessions: Decode::decode(decoder)?,
        })
    }
}

impl State {
    fn body(&self) -> Body<'_> {
        Body {
            applied: self.applied,
            clock_ms: self.clock_ms,
            bootstrapped: self.bootstrapped,
            objects: Objects(&self.objects),
            sessions: &self.sessions,
        }
    }

    /// Appends the encoded state to `out`.
    fn encode_into(&self, out: &mut Vec<u8>) {
        if let Err(e) = bincode::encode_into_std_write(self.body(), out, config()) {
            unreachable!("encoding into memory failed: {e}");
        }
    }

    /// The BLAKE3 digest of the state's encoding: equal on every replica at the same index.
    pub fn digest(&self) -> Digest {
        let mut payload = Vec::new();
        self.encode_into(&mut payload);
        Digest(*blake3::hash(&payload).as_bytes())
    }

    /// The state as snapshot bytes.
    pub fn to_snapshot(&self) -> Vec<u8> {
        // Room for the header, then the payload encoded in place: one pass, no copy.
        let mut out = vec![0; HEADER_BYTES];
        self.encode_into(&mut out);
        let payload_len = (out.len() - HEADER_BYTES) as u64;
        let digest = blake3::hash(&out[HEADER_BYTES..]);
        out[..8].copy_from_slice(MAGIC);
        out[8] = FORMAT_VERSION;
        out[9..17].copy_from_slice(&payload_len.to_le_bytes());
        out[17..HEADER_BYTES].copy_from_slice(digest.as_bytes());
        out
    }

    /// Restores a state from [`State::to_snapshot`] bytes, checking the digest and the
    /// state's invariants. Never panics on bad bytes.
    pub fn from_snapshot(bytes: &[u8]) -> Result<State, SnapshotError> {
        if bytes.len() > SNAPSHOT_BYTES_MAX {
            return Err(SnapshotError::Format("larger than SNAPSHOT_BYTES_MAX"));
        }
        if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
            return Err(SnapshotError::Format("bad magic or short header"));
        }
        // Formats 2 to 4 changed only entries, format 5 appended the sessions' openings: a
        // snapshot of formats 1 to 4 reads as it is.
        if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&bytes[8]) {
            return Err(SnapshotError::Version(bytes[8]));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[9..17]);
        let payload = &bytes[HEADER_BYTES..];
        if u64::from_le_bytes(len) != payload.len() as u64 {
            return Err(SnapshotError::Format("payload length disagrees with the header"));
        }
        if blake3::hash(payload).as_bytes() != &bytes[17..HEADER_BYTES] {
            return Err(SnapshotError::Digest);
        }
        let (mut body, mut used): (DecodedBody, usize) = decode_from_slice_bounded(payload, Format(bytes[8]))
            .map_err(|e| SnapshotError::Malformed(e.to_string()))?;
        // Format 5 appended the sessions' opening serials; earlier formats end with the table.
        if bytes[8] >= OPENINGS_SINCE {
            let (openings, more): (crate::sessions::Openings, usize) =
                decode_from_slice_bounded(&payload[used..], Format(bytes[8]))
                    .map_err(|e| SnapshotError::Malformed(format!("session openings: {e}")))?;
            // Format 5's build recorded openings for rules 1 entries, which rules 1 does not:
            // a replica replaying those entries has none, so a restored one must not either.
            if bytes[8] >= OPENINGS_HONOURED_SINCE {
                body.sessions.set_openings(openings).map_err(|e| SnapshotError::Inconsistent(e.to_owned()))?;
            }
            used += more;
        }
        if used != payload.len() {
            return Err(SnapshotError::Malformed(format!("{} trailing bytes", payload.len() - used)));
        }
        let mut pairs: Vec<(ObjectKey, Object)> = Vec::with_capacity(body.objects.len());
        for obj in body.objects {
            let key = obj.key();
            if pairs.last().is_some_and(|(last, _)| *last >= key) {
                return Err(SnapshotError::Inconsistent(format!("objects out of order at {key}")));
            }
            pairs.push((key, obj));
        }
        // The input is sorted. Inserting it in order would split every leaf of the B+tree in
        // half and leave it half empty; every other object first, then the rest in between,
        // fills the leaves (about 90 bytes less per object).
        let (evens, odds): (Vec<_>, Vec<_>) = pairs.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
        let mut objects = ObjectMap::new();
        for (_, (key, obj)) in evens.into_iter().chain(odds) {
            objects.insert(key, obj);
        }
        let indexes = crate::index::Indexes::build(&objects);
        let state = State {
            objects,
            applied: body.applied,
            clock_ms: body.clock_ms,
            bootstrapped: body.bootstrapped,
            sessions: body.sessions,
            indexes,
        };
        // The indexes were just built from the objects: checking them would build them again.
        state.check_invariants_but_indexes().map_err(SnapshotError::Inconsistent)?;
        Ok(state)
    }
}
