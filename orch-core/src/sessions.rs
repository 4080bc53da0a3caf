//! The deduplication table: the outcomes of recent requests by client id and serial.
//!
//! A proposer may retry a request whose first attempt committed (the reply was lost, the
//! leader changed). The table returns the first outcome instead of applying it twice.
//! It is part of the replicated state and of snapshots, so every replica agrees.
//!
//! Client sessions as in the Raft dissertation (6.3): each request carries the client's lowest
//! serial still awaiting a reply (`acked_below`, kept by [`ClientSerials`]), and the table forgets
//! only outcomes below it, so a request that reaches the log after many later ones (concurrent
//! callers sharing a client) is still applied, once. A client may have at most
//! [`SESSION_PENDING_MAX`] serials awaiting replies; a request beyond is refused unapplied. A
//! request that does not tell (`acked_below` 0: format 1 logs) keeps format 1's rule: the
//! client's last [`SESSION_OUTCOMES_MAX`] outcomes.
//!
//! The table is bounded in sessions ([`SESSIONS_MAX`], least recently seen forgotten first, and
//! idle ones after [`SESSION_IDLE_MS_MAX`]) and in the encoded bytes of its outcomes
//! ([`SESSION_OUTCOME_BYTES_MAX`]): over that, the least recently seen clients lose their
//! outcomes but keep their sessions, whose floor then says which serials were forgotten, so
//! that a retry of one is refused as stale (outcome unknown) instead of applied again.
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

/// The most clients remembered; the least recently seen is forgotten first. Sized well above
/// the clients of a large cluster (5,000 node agents, the controllers, users' commands): a
/// session without outcomes costs about 100 bytes. (4,096 before format 3.)
pub const SESSIONS_MAX: usize = 65_536;
/// The most bytes of outcomes the table keeps, counted as encoded (what a snapshot carries).
/// Over it, the least recently seen clients' outcomes go first; their sessions stay, so a
/// retry of a forgotten serial is answered "outcome unknown" ([`crate::ApplyError::StaleRequest`]),
/// never applied again. Since format 3.
pub const SESSION_OUTCOME_BYTES_MAX: usize = 16 << 20;
/// The most outcomes remembered per client whose requests do not tell what it has heard
/// (`acked_below` 0); the lowest serial is forgotten first.
pub const SESSION_OUTCOMES_MAX: usize = 256;
/// The most serials a client may have awaiting replies: a request with `serial >= acked_below +
/// SESSION_PENDING_MAX` is refused. The table keeps at most this many outcomes of a client whose
/// requests tell (it then never needs more), forgetting the lowest first.
pub const SESSION_PENDING_MAX: u64 = 1024;
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
    /// Derived (not encoded): the encoded bytes of `outcomes`.
    bytes: usize,
}

/// The bytes an outcome counts for in [`SESSION_OUTCOME_BYTES_MAX`].
fn outcome_bytes(outcome: &Outcome) -> usize {
    crate::codec::encoded_len(outcome)
}

impl Session {
    fn insert(&mut self, serial: u64, outcome: Outcome) {
        self.bytes += outcome_bytes(&outcome);
        if let Some(old) = self.outcomes.insert(serial, outcome) {
            self.bytes -= outcome_bytes(&old);
        }
    }

    fn remove(&mut self, serial: u64) {
        if let Some(old) = self.outcomes.remove(&serial) {
            self.bytes -= outcome_bytes(&old);
        }
    }
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
        let bytes = outcomes.values().map(outcome_bytes).sum();
        Ok(Self { last_seen_ms, floor, outcomes: outcomes.into_iter().collect(), bytes })
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
    /// (last seen, client) of the sessions holding outcomes: derived, for the byte bound.
    holding: OrdSet<(i64, ClientId)>,
    /// Derived: the bytes of every outcome kept.
    bytes: usize,
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

    /// Why a new request (`serial`, `acked_below`) cannot be applied, if it cannot: a client
    /// that claims replies it cannot have, or has too many awaiting.
    pub fn refuse(serial: u64, acked_below: u64) -> Option<String> {
        if serial == 0 || acked_below == 0 {
            return None;
        }
        if acked_below > serial {
            return Some(format!("ackedBelow {acked_below} is above the request's own serial {serial}"));
        }
        (serial - acked_below >= SESSION_PENDING_MAX).then(|| {
            format!(
                "serial {serial} is {} past the lowest awaiting a reply ({acked_below}); at most \
                 {SESSION_PENDING_MAX} may await replies",
                serial - acked_below
            )
        })
    }

    pub(crate) fn record(&mut self, client: ClientId, serial: u64, acked_below: u64, outcome: &Outcome, now_ms: i64) {
        self.record_within(client, serial, acked_below, outcome, now_ms, SESSION_OUTCOME_BYTES_MAX);
    }

    /// [`Sessions::record`] with the byte bound as a parameter (tests use a small one).
    fn record_within(
        &mut self,
        client: ClientId,
        serial: u64,
        acked_below: u64,
        outcome: &Outcome,
        now_ms: i64,
        bytes_max: usize,
    ) {
        if serial == 0 {
            return;
        }
        let mut session = self.take(client).unwrap_or_default();
        session.last_seen_ms = now_ms;
        session.insert(serial, outcome.clone());
        if acked_below > 0 {
            // The client has every reply below `acked_below`: those outcomes go, and a request
            // below it that was never applied is stale from now on.
            // One removal per forgotten outcome, each forgotten once (imbl's `split` rebuilds
            // the map: quadratic over a batch).
            while let Some(&lowest) = session.outcomes.get_min().map(|(serial, _)| serial) {
                if lowest >= acked_below {
                    break;
                }
                session.remove(lowest);
            }
            session.floor = session.floor.max(acked_below - 1);
        }
        // A client that tells keeps at most SESSION_PENDING_MAX (its window: a well-behaved
        // client never needs more); a request that does not tell trims its client to format 1's
        // SESSION_OUTCOMES_MAX, as format 1 did.
        let cap = if acked_below == 0 { SESSION_OUTCOMES_MAX } else { SESSION_PENDING_MAX as usize };
        while session.outcomes.len() > cap {
            let Some(&evicted) = session.outcomes.get_min().map(|(serial, _)| serial) else { break };
            session.remove(evicted);
            session.floor = session.floor.max(evicted);
        }
        self.put(client, session);
        while self.by_client.len() > SESSIONS_MAX {
            self.forget_oldest();
        }
        // Over the byte bound: the least recently seen clients lose their outcomes, not their
        // sessions, so their forgotten serials stay known as forgotten.
        while self.bytes > bytes_max {
            let Some(&(_, oldest)) = self.holding.get_min() else { break };
            let Some(mut session) = self.take(oldest) else { break };
            if let Some(&(highest, _)) = session.outcomes.get_max() {
                session.floor = session.floor.max(highest);
            }
            session.outcomes = OrdMap::new();
            session.bytes = 0;
            self.put(oldest, session);
        }
    }

    /// Removes `client`'s session and its index entries.
    fn take(&mut self, client: ClientId) -> Option<Session> {
        let session = self.by_client.remove(&client)?;
        self.by_last_seen.remove(&(session.last_seen_ms, client));
        self.holding.remove(&(session.last_seen_ms, client));
        self.bytes -= session.bytes;
        Some(session)
    }

    /// Stores `client`'s session with its index entries.
    fn put(&mut self, client: ClientId, session: Session) {
        self.by_last_seen.insert((session.last_seen_ms, client));
        if !session.outcomes.is_empty() {
            self.holding.insert((session.last_seen_ms, client));
        }
        self.bytes += session.bytes;
        self.by_client.insert(client, session);
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
        if let Some(&(_, client)) = self.by_last_seen.get_min() {
            self.take(client);
        }
    }

    /// The bytes of outcomes kept (bounded by [`SESSION_OUTCOME_BYTES_MAX`]).
    pub fn outcome_bytes(&self) -> usize {
        self.bytes
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
        let holding: OrdSet<_> =
            self.by_client.iter().filter(|(_, s)| !s.outcomes.is_empty()).map(|(c, s)| (s.last_seen_ms, *c)).collect();
        if holding != self.holding {
            return Err("the index of sessions holding outcomes disagrees with the sessions");
        }
        if self.by_client.values().any(|s| s.bytes != s.outcomes.values().map(outcome_bytes).sum::<usize>())
            || self.bytes != self.by_client.values().map(|s| s.bytes).sum::<usize>()
        {
            return Err("the counted outcome bytes disagree with the outcomes");
        }
        let most = SESSION_OUTCOMES_MAX.max(SESSION_PENDING_MAX as usize);
        if self.by_client.values().any(|s| s.outcomes.len() > most) {
            return Err("more outcomes than SESSION_OUTCOMES_MAX and SESSION_PENDING_MAX allow in a session");
        }
        Ok(())
    }
}

/// A client's side of its session: the serials it has sent that await replies, and so the
/// `acked_below` its next request carries. Share one per client id among concurrent callers
/// (behind a lock); each caller takes a serial with [`ClientSerials::begin`] and gives it back with
/// [`ClientSerials::end`] once it has the reply or gives up. Pure: no clock, no IO.
#[derive(Clone, Debug)]
pub struct ClientSerials {
    next: u64,
    awaiting: std::collections::BTreeSet<u64>,
}

impl Default for ClientSerials {
    fn default() -> Self {
        Self { next: 1, awaiting: std::collections::BTreeSet::new() }
    }
}

impl ClientSerials {
    /// The next `n` serials (consecutive, from the first returned) and the `acked_below` to send
    /// with them, or None while that would put a serial [`SESSION_PENDING_MAX`] or more past
    /// the lowest awaiting a reply (the caller waits for it to end). `n` is at least 1 and at
    /// most [`SESSION_PENDING_MAX`].
    pub fn begin(&mut self, n: u64) -> Option<(u64, u64)> {
        let n = n.clamp(1, SESSION_PENDING_MAX);
        let first = self.next;
        let acked_below = self.acked_below();
        if first + n - 1 - acked_below >= SESSION_PENDING_MAX {
            return None;
        }
        self.next += n;
        self.awaiting.extend(first..first + n);
        Some((first, acked_below))
    }

    /// The caller of `serial` has its reply, or gave up on it (a late apply of it is then
    /// refused as stale once a later request says so).
    pub fn end(&mut self, serial: u64) {
        self.awaiting.remove(&serial);
    }

    /// The lowest serial awaiting a reply, or the next one when none does.
    pub fn acked_below(&self) -> u64 {
        self.awaiting.first().copied().unwrap_or(self.next)
    }

    /// How many serials await replies.
    pub fn awaiting(&self) -> usize {
        self.awaiting.len()
    }
}

/// [`ClientSerials`] shared by a client's concurrent callers: [`SharedSerials::begin`] waits
/// while the window is full, and the serials it hands out end when their [`Awaiting`] is
/// dropped (reply received, or the caller gave up or was cancelled). Runtime-agnostic (a
/// lock and wakers, no clock): the same under tokio and the simulator.
#[derive(Clone, Debug, Default)]
pub struct SharedSerials {
    inner: std::sync::Arc<std::sync::Mutex<(ClientSerials, Vec<std::task::Waker>)>>,
}

/// Serials handed out by [`SharedSerials::begin`], awaiting their replies until dropped.
#[derive(Debug)]
pub struct Awaiting {
    shared: SharedSerials,
    first: u64,
    n: u64,
    acked_below: u64,
}

impl SharedSerials {
    fn lock(&self) -> std::sync::MutexGuard<'_, (ClientSerials, Vec<std::task::Waker>)> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `n` consecutive serials (1 to [`SESSION_PENDING_MAX`]), once the window has room.
    pub fn begin(&self, n: u64) -> impl std::future::Future<Output = Awaiting> + Send + '_ {
        let n = n.clamp(1, SESSION_PENDING_MAX);
        std::future::poll_fn(move |cx| {
            let mut guard = self.lock();
            match guard.0.begin(n) {
                Some((first, acked_below)) => {
                    std::task::Poll::Ready(Awaiting { shared: self.clone(), first, n, acked_below })
                }
                None => {
                    if !guard.1.iter().any(|w| w.will_wake(cx.waker())) {
                        guard.1.push(cx.waker().clone());
                    }
                    std::task::Poll::Pending
                }
            }
        })
    }
}

impl Awaiting {
    /// The serials, in order.
    pub fn serials(&self) -> std::ops::Range<u64> {
        self.first..self.first + self.n
    }

    /// The `acked_below` to send with them.
    pub fn acked_below(&self) -> u64 {
        self.acked_below
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        let wakers = {
            let mut guard = self.shared.lock();
            for serial in self.serials() {
                guard.0.end(serial);
            }
            std::mem::take(&mut guard.1)
        };
        for waker in wakers {
            waker.wake();
        }
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
        let holding =
            by_client.iter().filter(|(_, s)| !s.outcomes.is_empty()).map(|(c, s)| (s.last_seen_ms, *c)).collect();
        let bytes = by_client.values().map(|s| s.bytes).sum();
        let by_client = by_client.into_iter().collect();
        let sessions = Self { by_client, by_last_seen, holding, bytes };
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
        sessions.record(ClientId(9), 2, 0, &ok, 1_000);
        sessions.record(ClientId(9), 5, 0, &stale, 1_500);
        sessions.record(ClientId(4), 1, 0, &ok, 2_000);
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

    /// Over the byte bound, the least recently seen clients lose their outcomes but keep their
    /// sessions: a retry of a forgotten serial is stale (outcome unknown), a new serial is new.
    #[test]
    fn over_the_byte_bound_old_outcomes_go_and_their_serials_stay_known_as_forgotten() {
        let mut sessions = Sessions::default();
        let big = |n: usize| -> Outcome { Err(ApplyError::BadRequest { reason: "x".repeat(n) }) };
        let size = outcome_bytes(&big(1_000));
        let bound = 3 * size;
        for (i, client) in [1u128, 2, 3].into_iter().enumerate() {
            sessions.record_within(ClientId(client), 1, 1, &big(1_000), 1_000 + i as i64, bound);
        }
        assert_eq!(sessions.outcome_bytes(), bound);
        // Client 1, seen first, is touched again: client 2 is now the least recently seen.
        sessions.record_within(ClientId(1), 2, 1, &big(1_000), 2_000, bound);
        assert_eq!(sessions.check_invariants(), Ok(()));
        assert!(sessions.outcome_bytes() <= bound, "{} > {bound}", sessions.outcome_bytes());
        assert!(matches!(sessions.lookup(ClientId(2), 1), Seen::Stale), "forgotten, and known to be");
        assert!(matches!(sessions.lookup(ClientId(2), 2), Seen::New), "its next request is applied");
        assert!(matches!(sessions.lookup(ClientId(1), 1), Seen::Applied(_)));
        assert!(matches!(sessions.lookup(ClientId(3), 1), Seen::Applied(_)));
        assert_eq!(sessions.len(), 3, "every session stays");
        // A snapshot carries the result and the decoder derives the same counts.
        let decoded: Sessions = crate::codec::decode(&crate::codec::encode(&sessions), 1 << 20).expect("decodes");
        assert_eq!(decoded, sessions);
        // Acknowledged outcomes leave the count too.
        sessions.record_within(ClientId(1), 3, 3, &big(10), 3_000, bound);
        assert_eq!(sessions.check_invariants(), Ok(()));
        assert_eq!(sessions.outcome_bytes(), size + outcome_bytes(&big(10)), "client 3's and client 1's last");
    }

    #[test]
    fn a_client_s_acked_below_is_its_lowest_serial_awaiting_a_reply() {
        let mut serials = ClientSerials::default();
        assert_eq!(serials.begin(1), Some((1, 1)));
        assert_eq!(serials.begin(3), Some((2, 1)), "serials 2, 3, 4 while 1 awaits");
        serials.end(2);
        assert_eq!(serials.acked_below(), 1);
        serials.end(1);
        assert_eq!(serials.acked_below(), 3);
        serials.end(3);
        serials.end(4);
        assert_eq!((serials.acked_below(), serials.awaiting()), (5, 0), "none awaits: the next");
        // The window: at most SESSION_PENDING_MAX serials past the lowest awaiting.
        assert_eq!(serials.begin(1), Some((5, 5)));
        assert_eq!(serials.begin(SESSION_PENDING_MAX - 1), Some((6, 5)));
        assert_eq!(serials.begin(1), None, "full while 5 awaits");
        serials.end(5);
        assert_eq!(serials.begin(1), Some((SESSION_PENDING_MAX + 5, 6)));
    }

    #[test]
    fn a_caller_waits_for_room_and_a_dropped_caller_frees_its_serials() {
        use std::future::Future;
        use std::task::{Context, Poll, Waker};

        let shared = SharedSerials::default();
        let mut cx = Context::from_waker(Waker::noop());
        let poll = |shared: &SharedSerials, n: u64, cx: &mut Context<'_>| {
            let mut begin = std::pin::pin!(shared.begin(n));
            match begin.as_mut().poll(cx) {
                Poll::Ready(awaiting) => Some(awaiting),
                Poll::Pending => None,
            }
        };
        let oldest = poll(&shared, 1, &mut cx).expect("room");
        let rest = poll(&shared, SESSION_PENDING_MAX - 1, &mut cx).expect("room");
        assert_eq!((oldest.serials(), rest.acked_below()), (1..2, 1));
        assert!(poll(&shared, 1, &mut cx).is_none(), "the window is full: it waits");
        drop(rest);
        assert!(poll(&shared, 1, &mut cx).is_none(), "still full: serial 1 awaits");
        // The oldest caller is cancelled (its future dropped): its serial ends with it.
        drop(oldest);
        let next = poll(&shared, 1, &mut cx).expect("room");
        assert_eq!(
            (next.serials(), next.acked_below()),
            (SESSION_PENDING_MAX + 1..SESSION_PENDING_MAX + 2, SESSION_PENDING_MAX + 1)
        );
    }
}
