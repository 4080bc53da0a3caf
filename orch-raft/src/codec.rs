//! The on-disk encoding of openraft's log entries, log ids and votes.
//!
//! Every value starts with [`FORMAT_VERSION`]; integers in keys are big-endian so that
//! RocksDB's byte order is index order. Application data is encoded by orch-core's codec.

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, VoteOf};
use openraft::impls::leader_id_adv::LeaderId;
use openraft::storage::SnapshotMeta;
use openraft::{EntryPayload, LogId, Membership, StoredMembership};

use crate::types::{Member, TypeConfig};

type C = TypeConfig;

/// The version of this layout.
pub const FORMAT_VERSION: u8 = 1;

const PAYLOAD_BLANK: u8 = 0;
const PAYLOAD_NORMAL: u8 = 1;
const PAYLOAD_MEMBERSHIP: u8 = 2;

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("corrupt raft storage: {what}"))
}

/// The big-endian key of a log index.
pub fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Reads a big-endian index key.
pub fn key_index(key: &[u8]) -> Result<u64, io::Error> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| invalid("log key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], what: &str) -> Result<Self, io::Error> {
        match bytes.split_first() {
            Some((&FORMAT_VERSION, rest)) => Ok(Self { bytes: rest }),
            Some((v, _)) => Err(invalid(&format!("{what} has unknown format version {v}"))),
            None => Err(invalid(&format!("{what} is empty"))),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], io::Error> {
        if self.bytes.len() < n {
            return Err(invalid("value cut short"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u64(&mut self) -> Result<u64, io::Error> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    fn u8(&mut self) -> Result<u8, io::Error> {
        Ok(self.take(1)?[0])
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    fn finish(&self) -> Result<(), io::Error> {
        if self.bytes.is_empty() { Ok(()) } else { Err(invalid("trailing bytes")) }
    }
}

fn put_log_id(out: &mut Vec<u8>, id: &LogIdOf<C>) {
    out.extend_from_slice(&id.leader_id.term.to_le_bytes());
    out.extend_from_slice(&id.leader_id.node_id.to_le_bytes());
    out.extend_from_slice(&id.index.to_le_bytes());
}

fn read_log_id(r: &mut Reader<'_>) -> Result<LogIdOf<C>, io::Error> {
    let (term, node_id, index) = (r.u64()?, r.u64()?, r.u64()?);
    Ok(LogId::new(LeaderId { term, node_id }, index))
}

/// Encodes a log id.
pub fn encode_log_id(id: &LogIdOf<C>) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    put_log_id(&mut out, id);
    out
}

/// Decodes a log id.
pub fn decode_log_id(bytes: &[u8]) -> Result<LogIdOf<C>, io::Error> {
    let mut r = Reader::new(bytes, "log id")?;
    let id = read_log_id(&mut r)?;
    r.finish()?;
    Ok(id)
}

/// Encodes a vote.
pub fn encode_vote(vote: &VoteOf<C>) -> Vec<u8> {
    let leader = vote.leader_id();
    let mut out = vec![FORMAT_VERSION];
    out.extend_from_slice(&leader.term.to_le_bytes());
    out.extend_from_slice(&leader.node_id.to_le_bytes());
    out.push(u8::from(vote.is_committed()));
    out
}

/// Decodes a vote.
pub fn decode_vote(bytes: &[u8]) -> Result<VoteOf<C>, io::Error> {
    let mut r = Reader::new(bytes, "vote")?;
    let (term, node_id, committed) = (r.u64()?, r.u64()?, r.u8()?);
    r.finish()?;
    match committed {
        0 => Ok(VoteOf::<C>::new(term, node_id)),
        1 => Ok(VoteOf::<C>::new_committed(term, node_id)),
        _ => Err(invalid("vote committed flag")),
    }
}

type MembershipWire = (Vec<Vec<u64>>, Vec<(u64, String, String)>);

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// The most bytes an encoded membership may take.
const MEMBERSHIP_BYTES_MAX: usize = 1 << 20;

fn put_membership(out: &mut Vec<u8>, m: &Membership<u64, Member>) {
    let configs: Vec<Vec<u64>> = m.get_joint_config().iter().map(|c| c.iter().copied().collect()).collect();
    let nodes: Vec<(u64, String, String)> =
        m.nodes().map(|(id, n)| (*id, n.addr.clone(), n.api_addr.clone())).collect();
    let wire: MembershipWire = (configs, nodes);
    if let Err(e) = bincode::encode_into_std_write(&wire, out, bincode_config()) {
        unreachable!("encoding into memory failed: {e}");
    }
}

/// Reads a membership that takes all of `bytes`.
fn read_membership(bytes: &[u8]) -> Result<Membership<u64, Member>, io::Error> {
    let ((configs, nodes), used): (MembershipWire, usize) =
        bincode::decode_from_slice(bytes, bincode_config().with_limit::<MEMBERSHIP_BYTES_MAX>())
            .map_err(|e| invalid(&format!("membership: {e}")))?;
    if used != bytes.len() {
        return Err(invalid("membership: trailing bytes"));
    }
    let configs: Vec<BTreeSet<u64>> = configs.into_iter().map(|c| c.into_iter().collect()).collect();
    let nodes: BTreeMap<u64, Member> =
        nodes.into_iter().map(|(id, addr, api_addr)| (id, Member { addr, api_addr })).collect();
    Membership::new(configs, nodes).map_err(|e| invalid(&format!("membership: {e}")))
}

fn put_opt_log_id(out: &mut Vec<u8>, id: Option<&LogIdOf<C>>) {
    match id {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            put_log_id(out, id);
        }
    }
}

fn read_opt_log_id(r: &mut Reader<'_>) -> Result<Option<LogIdOf<C>>, io::Error> {
    match r.u8()? {
        0 => Ok(None),
        1 => read_log_id(r).map(Some),
        _ => Err(invalid("optional log id flag")),
    }
}

/// Encodes a snapshot's meta: the last applied log id and the membership.
pub fn encode_snapshot_meta(meta: &SnapshotMetaOf<C>) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    put_opt_log_id(&mut out, meta.last_log_id.as_ref());
    put_opt_log_id(&mut out, meta.last_membership.log_id().as_ref());
    put_membership(&mut out, meta.last_membership.membership());
    out
}

/// Decodes a snapshot's meta.
pub fn decode_snapshot_meta(bytes: &[u8]) -> Result<SnapshotMetaOf<C>, io::Error> {
    let mut r = Reader::new(bytes, "snapshot meta")?;
    let last_log_id = read_opt_log_id(&mut r)?;
    let membership_log_id = read_opt_log_id(&mut r)?;
    let membership = read_membership(r.rest())?;
    Ok(SnapshotMeta { last_log_id, last_membership: StoredMembership::new(membership_log_id, membership) })
}

/// Encodes a log entry.
pub fn encode_entry(entry: &EntryOf<C>) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION];
    put_log_id(&mut out, &entry.log_id);
    match &entry.payload {
        EntryPayload::Blank => out.push(PAYLOAD_BLANK),
        EntryPayload::Normal(batch) => {
            out.push(PAYLOAD_NORMAL);
            // Admitted by the proposer (`orch_core::codec::encode_entry`), or decoded from a peer.
            out.extend_from_slice(&orch_core::codec::encode(batch));
        }
        EntryPayload::Membership(m) => {
            out.push(PAYLOAD_MEMBERSHIP);
            put_membership(&mut out, m);
        }
    }
    out
}

/// Decodes a log entry.
pub fn decode_entry(bytes: &[u8]) -> Result<EntryOf<C>, io::Error> {
    let mut r = Reader::new(bytes, "log entry")?;
    let log_id = read_log_id(&mut r)?;
    let payload = match r.u8()? {
        PAYLOAD_BLANK => EntryPayload::Blank,
        PAYLOAD_NORMAL => {
            let batch = orch_core::codec::decode_entry(r.rest()).map_err(|e| invalid(&e.to_string()))?;
            EntryPayload::Normal(batch)
        }
        PAYLOAD_MEMBERSHIP => EntryPayload::Membership(read_membership(r.rest())?),
        tag => return Err(invalid(&format!("unknown payload tag {tag}"))),
    };
    r.finish()?;
    Ok(openraft::Entry { log_id, payload })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::testing::{blank_ent, log_id, membership_ent};
    use orch_core::{ClientId, Command, Request};

    use super::*;

    #[test]
    fn entries_votes_and_log_ids_round_trip() {
        let batch = orch_core::Entry {
            timestamp_ms: 7,
            rules: orch_core::rules::RULES_VERSION,
            requests: vec![Request::new(
                ClientId(1),
                2,
                Command::Delete {
                    key: orch_core::ObjectKey::new(orch_core::Kind::Pod, "default", "p"),
                    grace_period_seconds: Some(0),
                    preconditions: Default::default(),
                    propagation_policy: None,
                },
            )],
        };
        let mut membership = membership_ent::<C>(2, 1, 5, vec![[1, 2, 3].into()]);
        if let EntryPayload::Membership(m) = &mut membership.payload {
            let nodes: BTreeMap<u64, Member> = (1..=3)
                .map(|i| (i, Member::new(format!("127.0.0.1:{}", 7000 + i), format!("127.0.0.1:{}", 8000 + i))))
                .collect();
            *m = Membership::new(vec![[1, 2, 3].into()], nodes).expect("valid membership");
        }
        let entries = [
            blank_ent::<C>(1, 1, 1),
            openraft::Entry { log_id: log_id::<C>(2, 1, 4), payload: EntryPayload::Normal(batch) },
            membership,
        ];
        for entry in entries {
            assert_eq!(decode_entry(&encode_entry(&entry)).expect("decodes"), entry);
        }
        let vote = VoteOf::<C>::new_committed(9, 2);
        assert_eq!(decode_vote(&encode_vote(&vote)).expect("decodes"), vote);
        let id = log_id::<C>(3, 1, 77);
        assert_eq!(decode_log_id(&encode_log_id(&id)).expect("decodes"), id);
    }

    #[test]
    fn snapshot_meta_round_trips() {
        let nodes: BTreeMap<u64, Member> = [(1, Member::from("127.0.0.1:7001"))].into();
        let membership = Membership::new(vec![[1].into()], nodes).expect("valid membership");
        for meta in [
            SnapshotMeta { last_log_id: None, last_membership: StoredMembership::default() },
            SnapshotMeta {
                last_log_id: Some(log_id::<C>(4, 1, 90)),
                last_membership: StoredMembership::new(Some(log_id::<C>(2, 1, 3)), membership),
            },
        ] {
            assert_eq!(decode_snapshot_meta(&encode_snapshot_meta(&meta)).expect("decodes"), meta);
        }
        assert!(decode_snapshot_meta(&[FORMAT_VERSION, 2]).is_err());
    }

    #[test]
    fn damaged_bytes_are_errors() {
        let bytes = encode_entry(&blank_ent::<C>(1, 1, 1));
        assert!(decode_entry(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_entry(&[]).is_err());
        assert!(decode_entry(&[9, 0, 0]).is_err());
        let mut tagged = bytes.clone();
        let last = tagged.len() - 1;
        tagged[last] = 99;
        assert!(decode_entry(&tagged).is_err());
        assert!(decode_vote(&[FORMAT_VERSION, 1]).is_err());
        assert!(key_index(&[1, 2, 3]).is_err());
    }
}
