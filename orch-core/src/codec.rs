//! The storage encoding: bincode (varint integers) behind a one-byte format version tag.
//!
//! Every byte string that leaves orch-core for disk or the network (log entries, snapshots)
//! starts with [`FORMAT_VERSION`], so a future layout can be told apart and migrated.

use bincode::{Decode, Encode};

/// The version of the storage layout written by this build.
///
/// - 1: the first.
/// - 2: a request carries `acked_below` ([`crate::command::Request`]). Only the entry layout
///   changed: [`decode_entry`] reads format 1 entries through their frozen layout, and
///   [`crate::State::from_snapshot`] reads format 1 snapshots as they are.
/// - 3: two commands, [`crate::Command::Scale`] and [`crate::Command::RolloutUndo`], so that
///   every write of the API is one command applied under its caller's write id. Variants were
///   only added: a format 2 entry reads as it is, and snapshots did not change. A build of
///   format 2 refuses a format 3 entry by its version (it could not apply the new commands),
///   so a cluster is upgraded by stopping it, not one node at a time.
/// - 4: an entry carries the version of the rules it is applied under ([`crate::Entry::rules`],
///   [`crate::rules`]), a request whether it is a retry ([`crate::Request::retry`]), and an
///   outcome may be [`crate::ApplyError::SessionExpired`] (variant 8). Only the entry layout
///   changed: [`decode_entry`] reads format 2 and 3 entries through their frozen layout
///   (`command::v3`) as entries of [`crate::rules::RULES_UNSTAMPED`] whose requests are first
///   attempts, and snapshots did not change.
/// - 5: a snapshot carries, after the deduplication table, the serial that opened each session
///   (so that a retry of a serial below it is answered "session expired"); a format 4 snapshot
///   ends with the table. Entries did not change: a format 4 entry reads as it is. (Its one
///   build recorded openings for rules 1 entries; this build reads a format 5 snapshot's
///   openings and drops them, `snapshot::OPENINGS_HONOURED_SINCE`.)
/// - 6: rules version 2 ([`crate::rules::RULES_VERSION`]); no layout changed: format 4 and 5
///   entries read as they are, format 5 snapshots without their openings. A later format that keeps the entry
///   layout (a new rules version) extends that arm of [`decode_entry`] the same way.
/// - 7: rules version 3 (`Bind` checks that the pod fits the node); no layout changed: format
///   4 to 6 entries and snapshots read as they are.
/// - 8: rules version 4 (apply keeps the deployment controller's annotations and omitted
///   replicas; undo restores the revision's annotations); no layout changed: format 4 to 7
///   entries and snapshots read as they are.
/// - 9: rules version 5 (pods created or updated get the default tolerations of the
///   not-ready and unreachable taints); no layout changed: format 4 to 8 entries and
///   snapshots read as they are.
/// - 10: a delete may carry a `propagationPolicy` ([`crate::Command::Delete`]), encoded as a
///   new variant of [`crate::Command`] (9); a delete without one keeps the old layout. Only a
///   variant was added: format 4 to 9 entries and snapshots read as they are. A build of
///   format 9 refuses a format 10 entry by its version.
/// - 11: model fields added, a pod's `spec.affinity` (node affinity) and `status.podIPs`,
///   marked `[since 11]` in `model!`: bytes of an earlier format are decoded with their
///   [`Format`], without them (their defaults). Entries and snapshots of formats 1 to 10 read
///   that way; no rules changed (no earlier entry can carry the new fields).
/// - 12: rules version 6 (apply merges): a new command, [`crate::Command::ApplyManifest`]
///   (variant 10), carries a manifest as submitted. Only a variant was added: entries and
///   snapshots of formats 4 to 11 read as they are. A build of format 11 refuses a format 12
///   entry by its version.
/// - 13: rules version 7 (a node's `spec.podCIDR`); no layout changed.
/// - 14: two kinds, ConfigMap and Secret (variants 8 and 9 of [`crate::Kind`] and
///   [`crate::Object`]), and model fields marked `[since 14]`: a pod's `spec.volumes` and
///   `spec.hostNetwork`, a container's `envFrom` and `volumeMounts`, a variable's
///   `valueFrom`, a node's `status.nodeInfo` and `status.daemonEndpoints`. Bytes of earlier
///   formats decode without them. With rules version 8 (a container's `image` is optional).
///   Entries and snapshots of formats 4 to 13 read as they are; a build of format 13 refuses
///   a format 14 entry by its version.
pub const FORMAT_VERSION: u8 = 14;

/// The decoding context of the storage encoding: the format version of the bytes. A model field
/// added in format `N` (`[since N]` in `model!`) is read only from bytes of format `N` on, and
/// is its default in older ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Format(pub u8);

impl Format {
    /// This build's format.
    pub const CURRENT: Format = Format(FORMAT_VERSION);
}

/// The oldest format this build reads.
pub const FORMAT_VERSION_MIN: u8 = 1;
/// The most bytes of a log entry this build writes ([`encode_entry`] refuses more): room for any
/// object Kubernetes would store (etcd takes 1.5 MiB), and well within one Raft append (see
/// orch-raft's `APPEND_BYTES_MAX`).
pub const ENTRY_BYTES_MAX: usize = 2 * 1024 * 1024;
/// The most bytes of a log entry [`decode_entry`] reads: earlier builds wrote entries of up to
/// this size, and a node must restart on its old log. Everything [`encode_entry`] writes is
/// within it.
pub const ENTRY_READ_BYTES_MAX: usize = 64 * 1024 * 1024;

const _: () = assert!(ENTRY_BYTES_MAX <= ENTRY_READ_BYTES_MAX);

type Config = bincode::config::Configuration;

pub(crate) const fn config() -> Config {
    bincode::config::standard()
}

/// How many bytes of claims (container lengths times element sizes, string lengths) a decode
/// may make per byte of input. A model object takes about four times its encoded size in
/// memory; the rest is margin.
pub const DECODE_CLAIMS_PER_INPUT_BYTE: usize = 16;

/// The least budget of claims a decode gets, whatever its length. A list reserves its length
/// times its element's size before its items arrive, so a short input can claim much: the
/// 5,000 addresses an Endpoints may hold (`ENDPOINT_ADDRESSES_MAX`) take 60 KB encoded and
/// claim 1.16 MB (232 bytes each), and an entry's 4,096 requests 590 KB more. With a budget of
/// 1 MiB such a valid object was refused by every replica's decoder once it was in the log.
/// 8 MiB covers the largest valid entry with room; a crafted input still cannot claim more.
pub const DECODE_CLAIMS_MIN: usize = 8 << 20;

/// Decodes from a slice with an allocation budget proportional to its length (at least
/// [`DECODE_CLAIMS_MIN`], rounded up to a power of two): a crafted length prefix cannot make
/// the decoder reserve more than a small multiple of the bytes it was given.
pub(crate) fn decode_from_slice_bounded<T: Decode<Format>>(
    bytes: &[u8],
    format: Format,
) -> Result<(T, usize), bincode::error::DecodeError> {
    let budget = bytes.len().saturating_mul(DECODE_CLAIMS_PER_INPUT_BYTE).max(DECODE_CLAIMS_MIN).next_power_of_two();
    // bincode takes its limit as a const generic: one instantiation per power of two.
    macro_rules! by_power_of_two {
        ($($shift:literal)*) => {
            match budget.trailing_zeros() {
                $($shift => bincode::decode_from_slice_with_context(bytes, config().with_limit::<{ 1usize << $shift }>(), format),)*
                _ => bincode::decode_from_slice_with_context(bytes, config().with_limit::<{ 1usize << 40 }>(), format),
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
    #[error("unsupported format version {found}; this build writes version {FORMAT_VERSION}")]
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
    /// An entry whose rules version this build does not apply.
    #[error(
        "entry field rules: version {found} is not one this build applies ({} to {}); run a build that does",
        crate::rules::RULES_VERSION_MIN,
        crate::rules::RULES_VERSION
    )]
    Rules {
        /// The entry's `rules`.
        found: u16,
    },
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

/// Decodes a value written by [`encode`] of this build's format, refusing inputs over `max`
/// bytes.
pub fn decode<T: Decode<Format>>(bytes: &[u8], max: usize) -> Result<T, CodecError> {
    let (version, body) = versioned(bytes, max)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::Version { found: version });
    }
    decode_body(body, Format::CURRENT)
}

/// The version byte and the body after it, within `max` bytes.
fn versioned(bytes: &[u8], max: usize) -> Result<(u8, &[u8]), CodecError> {
    if bytes.len() > max {
        return Err(CodecError::TooLarge { len: bytes.len(), max });
    }
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    Ok((version, body))
}

fn decode_body<T: Decode<Format>>(body: &[u8], format: Format) -> Result<T, CodecError> {
    let (value, used) = decode_from_slice_bounded(body, format).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(value)
}

/// Encodes a log entry, refusing one that [`decode_entry`] would refuse: rules this build does
/// not apply, more than [`ENTRY_BYTES_MAX`] bytes, or contents whose decoding claims more memory
/// than its budget
/// ([`DECODE_CLAIMS_PER_INPUT_BYTE`] per byte). The second is checked by decoding the bytes
/// with the decoder's own budget, so the two cannot drift apart. A proposer calls this once per
/// entry; storage and transport re-encode an entry that passed (or was decoded) with
/// [`encode`].
///
/// # Errors
/// [`CodecError::Rules`], [`CodecError::TooLarge`] or [`CodecError::Malformed`] (the decoder's
/// refusal).
pub fn encode_entry(entry: &crate::command::Entry) -> Result<Vec<u8>, CodecError> {
    check_rules(entry)?;
    let len = 1 + encoded_len(entry);
    if len > ENTRY_BYTES_MAX {
        return Err(CodecError::TooLarge { len, max: ENTRY_BYTES_MAX });
    }
    let bytes = encode(entry);
    decode_from_slice_bounded::<crate::command::Entry>(&bytes[1..], Format::CURRENT)
        .map_err(|e| CodecError::Malformed(format!("the entry would not decode: {e}")))?;
    Ok(bytes)
}

/// Decodes a log entry of up to [`ENTRY_READ_BYTES_MAX`] bytes, of this build's format or an
/// earlier one (a node restarts on the log an earlier build wrote), refusing one whose rules
/// this build does not apply ([`crate::rules`]).
pub fn decode_entry(bytes: &[u8]) -> Result<crate::command::Entry, CodecError> {
    let entry = match versioned(bytes, ENTRY_READ_BYTES_MAX)? {
        // Format 5 changed only snapshots, formats 6 to 9, 12 and 13 only the rules (12 with
        // a command variant), format 10 only added a command variant, and formats 11 and 14
        // model fields and kinds (read by the entry's format): format 4 to 13 entries read as
        // they are (their stamps say which rules they are applied under).
        (version @ (FORMAT_VERSION | 4..=13), body) => decode_body(body, Format(version))?,
        // Format 3 only added commands: a format 2 entry is a format 3 entry.
        (version @ (2 | 3), body) => decode_body::<crate::command::v3::Entry>(body, Format(version))?.into(),
        (1, body) => decode_body::<crate::command::v1::Entry>(body, Format(1))?.into(),
        (found, _) => return Err(CodecError::Version { found }),
    };
    check_rules(&entry)?;
    Ok(entry)
}

fn check_rules(entry: &crate::command::Entry) -> Result<(), CodecError> {
    if crate::rules::known(entry.rules) { Ok(()) } else { Err(CodecError::Rules { found: entry.rules }) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(unreachable_pub)] // model! makes every struct and field public
    mod models {
        model! {
            /// A model as an older format wrote it.
            pub struct Before {
                pub a: crate::text::Text,
            }
        }

        model! {
            /// The same model once a field was added in format 11.
            pub struct After {
                pub a: crate::text::Text,
                [since 11] pub b: Vec<crate::text::Text>,
            }
        }
    }
    use models::{After, Before};

    /// A field marked `[since N]` is read from bytes of format N on; bytes of an earlier
    /// format, written before it existed, decode with its default (and reading them as
    /// format N would run out of input: the version is what tells them apart).
    #[test]
    fn a_model_field_added_later_reads_as_its_default_from_older_bytes() {
        let old = encode(&Before { a: "x".into() });
        let (after, used): (After, usize) = decode_from_slice_bounded(&old[1..], Format(10)).expect("decodes");
        assert_eq!((after, used), (After { a: "x".into(), b: Vec::new() }, old.len() - 1));
        assert!(decode_from_slice_bounded::<After>(&old[1..], Format(11)).is_err());
        let new = encode(&After { a: "x".into(), b: vec!["y".into()] });
        let (after, _): (After, usize) = decode_from_slice_bounded(&new[1..], Format(11)).expect("decodes");
        assert_eq!(after.b, ["y"]);
    }
    use crate::command::{Command, Entry, Request, v1, v3};
    use crate::ids::ClientId;

    fn entry() -> Entry {
        let ns = crate::parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}").expect("valid");
        Entry::new(1_700_000_000_000, vec![Request::new(ClientId(3), 9, Command::Create(ns[0].clone()))])
    }

    /// Logs written by formats 1 (requests without `acked_below`) and 2 and 3 (entries without
    /// `rules`) read through their frozen layouts: requests that tell nothing (`acked_below` 0),
    /// which the table treats as format 1 did, in entries of the rules before stamps.
    #[test]
    fn entries_of_older_formats_read_through_their_frozen_layouts() {
        let entry = entry();
        let unstamped = Entry { rules: crate::rules::RULES_UNSTAMPED, ..entry.clone() };
        let mut one = vec![1u8];
        bincode::encode_into_std_write(v1::Entry::from(&entry), &mut one, config()).expect("encodes");
        assert_ne!(one[1..], encode(&entry)[1..], "the layouts differ");
        assert_eq!(decode_entry(&one).expect("reads format 1"), unstamped);
        for old in [2u8, 3] {
            let mut bytes = vec![old];
            bincode::encode_into_std_write(v3::Entry::from(&entry), &mut bytes, config()).expect("encodes");
            assert_ne!(bytes[1..], encode(&entry)[1..], "the layouts differ");
            assert_eq!(decode_entry(&bytes).expect("reads formats 2 and 3"), unstamped, "format {old}");
        }
        let current = encode_entry(&entry).expect("encodes");
        assert_eq!(current[0], FORMAT_VERSION);
        assert_eq!(decode_entry(&current).expect("reads this format"), entry);
        for same in [4, 5] {
            let mut older = current.clone();
            older[0] = same;
            assert_eq!(decode_entry(&older).expect("formats 5 and 6 changed no entry"), entry);
        }
        let mut future = current.clone();
        future[0] = FORMAT_VERSION + 1;
        assert_eq!(decode_entry(&future), Err(CodecError::Version { found: FORMAT_VERSION + 1 }));
        assert_eq!(
            decode::<Entry>(&one, usize::MAX),
            Err(CodecError::Version { found: 1 }),
            "only decode_entry migrates"
        );
    }

    /// An entry keeps its rules version through decoding and re-encoding (storage and transport
    /// re-encode what they decoded), and one of rules this build does not apply is refused by the
    /// encoder and the decoder alike, naming the field.
    #[test]
    fn an_entry_keeps_its_rules_version_and_unknown_rules_are_refused() {
        let mut unstamped = vec![3u8];
        bincode::encode_into_std_write(v3::Entry::from(&entry()), &mut unstamped, config()).expect("encodes");
        let read = decode_entry(&unstamped).expect("reads format 3");
        let again = decode_entry(&encode(&read)).expect("reads its re-encoding");
        assert_eq!(again.rules, crate::rules::RULES_UNSTAMPED, "the stamp survives the current layout");
        for rules in [0, crate::rules::RULES_VERSION + 1, u16::MAX] {
            let entry = Entry { rules, ..entry() };
            assert_eq!(encode_entry(&entry), Err(CodecError::Rules { found: rules }));
            let error = decode_entry(&encode(&entry)).expect_err("refused");
            assert_eq!(error, CodecError::Rules { found: rules });
            assert!(error.to_string().starts_with("entry field rules: version"), "{error}");
        }
    }

    /// Formats 2 to 4 changed only entries and format 5 appended the sessions' openings: a
    /// snapshot of formats 1 to 4 (the table last) reads as it is.
    #[test]
    fn older_snapshots_read_as_they_are() {
        // Under rules 1 a session keeps no opening serial, as in older snapshots.
        let mut state = crate::State::new();
        state.apply(1, Entry { rules: 1, ..entry() });
        let bytes = state.to_snapshot();
        assert_eq!(bytes[8], FORMAT_VERSION);
        // The same state as an older format wrote it: no openings section (here empty, one byte).
        let old = |version: u8| {
            let payload = &bytes[49..bytes.len() - 1];
            let mut out = bytes[..8].to_vec();
            out.push(version);
            out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            out.extend_from_slice(blake3::hash(payload).as_bytes());
            out.extend_from_slice(payload);
            out
        };
        assert_eq!(bytes.last(), Some(&0), "no opening serial");
        for version in [1, 2, 3, 4] {
            assert_eq!(crate::State::from_snapshot(&old(version)).expect("reads an older format"), state);
        }
        assert!(crate::State::from_snapshot(&old(5)).is_err(), "format 5 has the openings");
        let mut five = bytes.clone();
        five[8] = 5;
        assert_eq!(crate::State::from_snapshot(&five).expect("format 6 changed no snapshot"), state);
        let mut future = bytes.clone();
        future[8] = FORMAT_VERSION + 1;
        assert!(crate::State::from_snapshot(&future).is_err());
    }
}
