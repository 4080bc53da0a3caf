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
        if acked_below > 0 {
            // The client has every reply below `acked_below`: those outcomes go, and a request
            // below it that was never applied is stale from now on.
            // One removal per forgotten outcome, each forgotten once (imbl's `split` rebuilds
            // the map: quadratic over a batch).
            while let Some(&lowest) = session.outcomes.get_min().map(|(serial, _)| serial) {
                if lowest >= acked_below {
                    break;
                }
                session.outcomes.remove(&lowest);
            }
            session.floor = session.floor.max(acked_below - 1);
        }
        // A client that tells keeps at most SESSION_PENDING_MAX (its window: a well-behaved
        // client never needs more); a request that does not tell trims its client to format 1's
        // SESSION_OUTCOMES_MAX, as format 1 did.
        let cap = if acked_below == 0 { SESSION_OUTCOMES_MAX } else { SESSION_PENDING_MAX as usize };
        while session.outcomes.len() > cap {
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
