//! The deduplication table: the outcomes of recent requests by client id and serial.
//!
//! A proposer may retry a request whose first attempt committed (the reply was lost, the
//! leader changed). The table returns the first outcome instead of applying it twice.
//! It is part of the replicated state and of snapshots, so every replica agrees.
//!
//! The table is made of persistent maps ([`imbl::OrdMap`]): a copy of the state shares them, so
//! that readers can hold a copy while entries go on being applied.

use std::collections::BTreeMap;

use imbl::{OrdMap, OrdSet};

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};

use crate::command::Outcome;
use crate::ids::ClientId;

/// The most clients remembered; the least recently seen is forgotten first.
pub const SESSIONS_MAX: usize = 4096;
/// The most outcomes remembered per client; the lowest serial is forgotten first.
pub const SESSION_OUTCOMES_MAX: usize = 256;
/// A client not seen for this long (by entry timestamps) is forgotten.
pub const SESSION_IDLE_MS_MAX: i64 = 30 * 60 * 1000;

/// What the table knows of a (client, serial).
#[derive(Debug)]
pub(crate) enum Seen<'a> {
    /// Never applied: apply it.
    New,
    /// Applied before, with this outcome.
    Applied(&'a Outcome),
    /// Older than the window: unknown.
    Stale,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Session {
    last_seen_ms: i64,
    /// Every serial at or below this has been forgotten.
    floor: u64,
    outcomes: OrdMap<u64, Outcome>,
}

// Encoded as the `BTreeMap` it replaced: the same bytes.
impl Encode for Session {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.last_seen_ms.encode(encoder)?;
        self.floor.encode(encoder)?;
        encode_map(&self.outcomes, encoder)
    }
}

impl<Context> Decode<Context> for Session {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let last_seen_ms = Decode::decode(decoder)?;
        let floor = Decode::decode(decoder)?;
        let outcomes: BTreeMap<u64, Outcome> = Decode::decode(decoder)?;
        Ok(Self { last_seen_ms, floor, outcomes: outcomes.into_iter().collect() })
    }
}
bincode::impl_borrow_decode!(Session);

/// A map as bincode encodes a `BTreeMap`: the length, then the pairs in key order.
fn encode_map<K: Encode + Ord + Clone, V: Encode + Clone, E: Encoder>(
    map: &OrdMap<K, V>,
    encoder: &mut E,
) -> Result<(), EncodeError> {
    (map.len() as u64).encode(encoder)?;
    for (k, v) in map {
        k.encode(encoder)?;
        v.encode(encoder)?;
    }
    Ok(())
}

/// Per-client recent outcomes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sessions {
    by_client: OrdMap<ClientId, Session>,
    /// (last seen, client): derived from `by_client`, for expiry in time order.
    by_last_seen: OrdSet<(i64, ClientId)>,
}

impl Sessions {
    pub(crate) fn lookup(&self, client: ClientId, serial: u64) -> Seen<'_> {
        if serial == 0 {
            return Seen::New;
        }
        match self.by_client.get(&client) {
            None => Seen::New,
            Some(s) => match s.outcomes.get(&serial) {
                Some(o) => Seen::Applied(o),
                None if serial <= s.floor => Seen::Stale,
                None => Seen::New,
            },
        }
    }

    pub(crate) fn record(&mut self, client: ClientId, serial: u64, outcome: &Outcome, now_ms: i64) {
        if serial == 0 {
            return;
        }
        let session = self.by_client.entry(client).or_default();
        if session.last_seen_ms != now_ms || session.outcomes.is_empty() {
            self.by_last_seen.remove(&(session.last_seen_ms, client));
            session.last_seen_ms = now_ms;
            self.by_last_seen.insert((now_ms, client));
        }
        session.outcomes.insert(serial, outcome.clone());
        while session.outcomes.len() > SESSION_OUTCOMES_MAX {
            let Some(&evicted) = session.outcomes.get_min().map(|(serial, _)| serial) else { break };
            session.outcomes.remove(&evicted);
            session.floor = session.floor.max(evicted);
        }
        while self.by_client.len() > SESSIONS_MAX {
            self.forget_oldest();
        }
    }

    /// Forgets clients idle for longer than [`SESSION_IDLE_MS_MAX`].
    pub(crate) fn expire(&mut self, now_ms: i64) {
        while let Some(&(seen, _)) = self.by_last_seen.get_min() {
            if seen >= now_ms.saturating_sub(SESSION_IDLE_MS_MAX) {
                break;
            }
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        if let Some((_, client)) = self.by_last_seen.remove_min() {
            self.by_client.remove(&client);
        }
    }

    /// The number of clients remembered.
    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    /// True when no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }

    /// Checks that the derived index agrees with the table.
    pub(crate) fn check_invariants(&self) -> Result<(), &'static str> {
        if self.by_client.len() > SESSIONS_MAX {
            return Err("more sessions than SESSIONS_MAX");
        }
        let derived: OrdSet<_> = self.by_client.iter().map(|(c, s)| (s.last_seen_ms, *c)).collect();
        if derived != self.by_last_seen {
            return Err("session time index disagrees with the sessions");
        }
        if self.by_client.values().any(|s| s.outcomes.len() > SESSION_OUTCOMES_MAX) {
            return Err("more outcomes than SESSION_OUTCOMES_MAX in a session");
        }
        Ok(())
    }
}

impl Encode for Sessions {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        encode_map(&self.by_client, encoder)
    }
}

impl<Context> Decode<Context> for Sessions {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let by_client: BTreeMap<ClientId, Session> = Decode::decode(decoder)?;
        let by_last_seen = by_client.iter().map(|(c, s)| (s.last_seen_ms, *c)).collect();
        let by_client = by_client.into_iter().collect();
        let sessions = Self { by_client, by_last_seen };
        sessions.check_invariants().map_err(DecodeError::Other)?;
        Ok(sessions)
    }
}
bincode::impl_borrow_decode!(Sessions);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ApplyError, Success};
    use crate::ids::Revision;

    #[test]
    fn the_table_encodes_as_the_btree_maps_it_replaced() {
        let mut sessions = Sessions::default();
        let ok: Outcome = Ok(Success { revision: Revision(3), changes: Vec::new() });
        let stale: Outcome = Err(ApplyError::StaleRequest { client: ClientId(9), serial: 1 });
        sessions.record(ClientId(9), 2, &ok, 1_000);
        sessions.record(ClientId(9), 5, &stale, 1_500);
        sessions.record(ClientId(4), 1, &ok, 2_000);
        // The same content as the maps and struct the snapshot format was defined with.
        let mut nine = BTreeMap::new();
        nine.insert(2u64, ok.clone());
        nine.insert(5u64, stale);
        let mut four = BTreeMap::new();
        four.insert(1u64, ok);
        let mut before: BTreeMap<ClientId, (i64, u64, BTreeMap<u64, Outcome>)> = BTreeMap::new();
        before.insert(ClientId(9), (1_500, 0, nine));
        before.insert(ClientId(4), (2_000, 0, four));
        assert_eq!(crate::codec::encode(&sessions), crate::codec::encode(&before), "snapshots keep their bytes");
        let decoded: Sessions = crate::codec::decode(&crate::codec::encode(&sessions), 1 << 20).expect("decodes");
        assert_eq!(decoded, sessions);
    }
}
