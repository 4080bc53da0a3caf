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
//! idle ones after [`SESSION_IDLE_MS_MAX`]) and in the bytes of its outcomes
//! ([`SESSION_OUTCOME_BYTES_MAX`]): over that, the least recently seen clients lose their
//! outcomes but keep their sessions, whose floor then says which serials were forgotten, so
//! that a retry of one is refused as stale (outcome unknown) instead of applied again. A
//! forgotten session is not a fresh one: a request that is a retry (`Request::retry`) from a
//! client the table does not know, or (rules 2) of a serial below the one that opened its
//! session and not held by it, is refused as expired (outcome unknown, recorded under rules 2);
//! a first attempt is applied and starts a new session.
//!
//! Outcomes are kept compact: as their encoded bytes (what a snapshot carries, one shared
//! allocation each), decoded only when a retry asks for one, in a short vector per session
//! sorted by serial (a session usually holds one or two), not a persistent map per session. The
//! sessions are in persistent maps ([`imbl::OrdMap`]) and a session's vector is shared too: a
//! copy of the state shares them, so that readers can hold a copy while entries go on being
//! applied.

use std::sync::Arc;

use imbl::{OrdMap, OrdSet};

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::enc::write::Writer;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};

use crate::command::Outcome;
use crate::ids::ClientId;

/// The most clients remembered; the least recently seen is forgotten first. Sized well above
/// the clients of a large cluster (5,000 node agents, the controllers, users' commands): a
/// session costs a few hundred bytes of heap (`benches/benches/memory.rs`). (4,096 in early
/// format 2 builds.)
pub const SESSIONS_MAX: usize = 65_536;
/// The most bytes of outcomes the table keeps, each counted as its encoding (what a snapshot
/// carries) and [`OUTCOME_OVERHEAD_BYTES`], about what it takes in memory. Over it, the least
/// recently seen clients' outcomes go first;
/// their sessions stay, so a retry of a forgotten serial is answered "outcome unknown"
/// ([`crate::ApplyError::StaleRequest`]), never applied again. Since late format 2 builds.
pub const SESSION_OUTCOME_BYTES_MAX: usize = 16 << 20;
/// What an outcome costs in memory besides its encoding, counted in
/// [`SESSION_OUTCOME_BYTES_MAX`]: its slot in its session's vector (24 bytes) and its own
/// allocation's header and rounding (about 24).
pub const OUTCOME_OVERHEAD_BYTES: usize = 48;
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
pub(crate) enum Seen {
    /// Never applied: apply it.
    New,
    /// Applied before, with this outcome.
    Applied(Outcome),
    /// Older than the window: unknown.
    Stale,
    /// A retry from a client the table does not know: it may have been applied, and its
    /// session (and outcome) forgotten since.
    Expired,
}

/// One client's session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Session {
    last_seen_ms: i64,
    /// Every serial at or below this that the session does not hold has been forgotten (one it
    /// holds can be at or below it: the latest outcome of a client over the byte bound).
    floor: u64,
    /// The outcomes kept, compact, by serial (ascending, each once). Shared by the copies of the
    /// state until one of them changes it. At most [`SESSION_PENDING_MAX`] (or
    /// [`SESSION_OUTCOMES_MAX`]) long, and usually one or two.
    outcomes: Arc<Vec<(u64, Compact)>>,
    /// Where this session opened (rules 2): a retry of a serial below it that the session does
    /// not hold may have been applied under an earlier session of the client, since forgotten,
    /// and is answered "expired", not applied. The opening serial for a session opened by the
    /// client's first serials; `u64::MAX` (every such retry) for one opened by any other
    /// request or by an "expired" answer; 0 under rules 1 or when restored from a snapshot of
    /// formats 1 to 5. Encoded after the table (snapshots of format 5 on; format 5's dropped).
    opened: u64,
    /// Derived (not encoded): what `outcomes` count for in the byte bound.
    bytes: usize,
}

/// An outcome as the bytes bincode encodes it to, shared by the copies of a session's vector.
type Compact = Arc<[u8]>;

fn compact(outcome: &Outcome) -> Compact {
    let mut bytes = Vec::with_capacity(crate::codec::encoded_len(outcome));
    match bincode::encode_into_std_write(outcome, &mut bytes, crate::codec::config()) {
        Ok(_) => bytes.into(),
        Err(e) => unreachable!("encoding an outcome into memory failed: {e}"),
    }
}

/// What an outcome counts for in [`SESSION_OUTCOME_BYTES_MAX`]: its encoded bytes and
/// [`OUTCOME_OVERHEAD_BYTES`].
fn cost(outcome: &Compact) -> usize {
    outcome.len() + OUTCOME_OVERHEAD_BYTES
}

fn expand(bytes: &[u8]) -> Outcome {
    // The bytes were encoded by `compact`, from this build's own types (a snapshot's outcomes
    // are decoded and re-encoded when it is read): they decode.
    match bincode::decode_from_slice(bytes, crate::codec::config()) {
        Ok((outcome, _)) => outcome,
        Err(e) => unreachable!("an outcome the table encoded does not decode: {e}"),
    }
}

impl Session {
    fn get(&self, serial: u64) -> Option<&Compact> {
        let at = self.outcomes.binary_search_by_key(&serial, |(s, _)| *s).ok()?;
        Some(&self.outcomes[at].1)
    }

    fn insert(&mut self, serial: u64, outcome: Compact) {
        self.bytes += cost(&outcome);
        let outcomes = Arc::make_mut(&mut self.outcomes);
        match outcomes.binary_search_by_key(&serial, |(s, _)| *s) {
            Ok(at) => self.bytes -= cost(&std::mem::replace(&mut outcomes[at].1, outcome)),
            Err(at) => outcomes.insert(at, (serial, outcome)),
        }
    }

    /// Forgets the outcomes of serials below `serial` (the floor is the caller's business).
    fn forget_below(&mut self, serial: u64) {
        let n = self.outcomes.partition_point(|(s, _)| *s < serial);
        if n > 0 {
            let gone = Arc::make_mut(&mut self.outcomes).drain(..n);
            self.bytes -= gone.map(|(_, o)| cost(&o)).sum::<usize>();
        }
    }

    /// Forgets the lowest outcomes down to `cap`; the floor rises over them.
    fn trim(&mut self, cap: usize) {
        if self.outcomes.len() > cap {
            let n = self.outcomes.len() - cap;
            let last = self.outcomes[n - 1].0;
            self.forget_below(last + 1);
            self.floor = self.floor.max(last);
        }
    }

    /// Forgets every outcome; the floor rises over them.
    fn clear(&mut self) {
        if let Some(&(highest, _)) = self.outcomes.last() {
            self.floor = self.floor.max(highest);
        }
        self.outcomes = Arc::default();
        self.bytes = 0;
    }
}

/// Per-client recent outcomes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sessions {
    by_client: OrdMap<ClientId, Session>,
    /// (last seen, client): derived from `by_client`, for expiry in time order.
    by_last_seen: OrdSet<(i64, ClientId)>,
    /// (last seen, client) of the sessions holding outcomes: derived, for the byte bound.
    holding: OrdSet<(i64, ClientId)>,
    /// Derived: what every outcome kept counts for in the byte bound.
    bytes: usize,
    /// Derived: how many outcomes are kept.
    count: usize,
}

impl Sessions {
    /// What the table knows of `client`'s `serial`, for an entry of rules version `rules`;
    /// `retry`: the client sent it before, and that attempt may have been proposed.
    pub(crate) fn lookup(&self, client: ClientId, serial: u64, retry: bool, rules: u16) -> Seen {
        if serial == 0 {
            return Seen::New;
        }
        match self.by_client.get(&client) {
            // No session: the first attempt may have been applied under one since forgotten (a
            // session is forgotten only when its client is idle or the least recently seen, so
            // rarely with writes in flight; but a client whose first write never reached the
            // log cannot be told apart). Unknown is the safe answer; a second apply is not.
            None if retry => Seen::Expired,
            None => Seen::New,
            Some(s) => match s.get(serial) {
                Some(o) => Seen::Applied(expand(o)),
                None if serial <= s.floor => Seen::Stale,
                None if retry && rules >= 2 && serial < s.opened => Seen::Expired,
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

    /// Records `outcome` for `id` (client, serial, `acked_below`), applied by an entry of rules
    /// version `rules` ([`crate::rules`]).
    pub(crate) fn record(&mut self, id: (ClientId, u64, u64), outcome: &Outcome, now_ms: i64, rules: u16) {
        self.record_within(id, outcome, now_ms, rules, SESSION_OUTCOME_BYTES_MAX);
    }

    /// [`Sessions::record`] with the byte bound as a parameter (tests use a small one).
    fn record_within(
        &mut self,
        id: (ClientId, u64, u64),
        outcome: &Outcome,
        now_ms: i64,
        rules: u16,
        bytes_max: usize,
    ) {
        let (client, serial, acked_below) = id;
        if serial == 0 {
            return;
        }
        let mut session = match self.take(client) {
            Some(session) => session,
            // A new session (rules 2). A client's first serials (`acked_below` 1, nothing heard
            // yet) open it at this serial: one below it that it does not hold may have been
            // applied under an earlier session, since forgotten, so a retry of one is answered
            // "expired". A client that has had replies, or does not tell, or whose retry was
            // just answered "expired", may have had any of its writes in flight applied under
            // a forgotten session: every retry it holds no record of is "expired". Rules 1 did
            // not remember where a session opened.
            None => {
                let expired = matches!(outcome, Err(crate::ApplyError::SessionExpired { .. }));
                let opened = match rules {
                    0 | 1 => 0,
                    _ if acked_below == 1 && !expired => serial,
                    _ => u64::MAX,
                };
                Session { opened, ..Session::default() }
            }
        };
        session.last_seen_ms = now_ms;
        session.insert(serial, compact(outcome));
        if acked_below > 0 {
            // The client has every reply below `acked_below`: those outcomes go, and a request
            // below it that was never applied is stale from now on.
            session.forget_below(acked_below);
            session.floor = session.floor.max(acked_below - 1);
        }
        // A client that tells keeps at most SESSION_PENDING_MAX (its window: a well-behaved
        // client never needs more); a request that does not tell trims its client to format 1's
        // SESSION_OUTCOMES_MAX, as format 1 did.
        session.trim(if acked_below == 0 { SESSION_OUTCOMES_MAX } else { SESSION_PENDING_MAX as usize });
        self.put(client, session);
        // Never the client just recorded, even when every session was last seen at this same
        // time and its id is the lowest: its reply is on its way.
        while self.by_client.len() > SESSIONS_MAX {
            let Some(&(_, oldest)) = self.by_last_seen.iter().find(|(_, c)| *c != client) else { break };
            if self.take(oldest).is_none() {
                break;
            }
        }
        // Over the byte bound: the least recently seen clients lose their outcomes, not their
        // sessions, so their forgotten serials stay known as forgotten; the client just recorded
        // goes last, and keeps the outcome it was just given. Rules 1 counted the encodings
        // alone, and never the client just recorded.
        while if rules >= 2 { self.bytes } else { self.bytes - OUTCOME_OVERHEAD_BYTES * self.count } > bytes_max {
            match self.holding.iter().find(|(_, c)| *c != client).map(|(_, c)| *c) {
                Some(oldest) => {
                    let Some(mut session) = self.take(oldest) else { break };
                    session.clear();
                    self.put(oldest, session);
                }
                None if rules < 2 => break,
                None => {
                    let Some(mut session) = self.take(client) else { break };
                    let kept = session.get(serial).cloned();
                    session.clear();
                    if let Some(kept) = kept {
                        session.insert(serial, kept);
                    }
                    self.put(client, session);
                    break;
                }
            }
        }
    }

    /// Removes `client`'s session and its index entries.
    fn take(&mut self, client: ClientId) -> Option<Session> {
        let session = self.by_client.remove(&client)?;
        self.by_last_seen.remove(&(session.last_seen_ms, client));
        self.holding.remove(&(session.last_seen_ms, client));
        self.bytes -= session.bytes;
        self.count -= session.outcomes.len();
        Some(session)
    }

    /// Stores `client`'s session with its index entries.
    fn put(&mut self, client: ClientId, session: Session) {
        self.by_last_seen.insert((session.last_seen_ms, client));
        if !session.outcomes.is_empty() {
            self.holding.insert((session.last_seen_ms, client));
        }
        self.bytes += session.bytes;
        self.count += session.outcomes.len();
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

    /// Every outcome kept, by client and serial in order, decoded: what a retry would get.
    pub fn outcomes(&self) -> impl Iterator<Item = (ClientId, u64, Outcome)> + '_ {
        self.by_client
            .iter()
            .flat_map(|(client, s)| s.outcomes.iter().map(move |(serial, o)| (*client, *serial, expand(o))))
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
        if self.by_client.values().any(|s| !s.outcomes.windows(2).all(|w| w[0].0 < w[1].0)) {
            return Err("a session's outcomes are not in serial order");
        }
        if self.by_client.values().any(|s| s.bytes != s.outcomes.iter().map(|(_, o)| cost(o)).sum::<usize>())
            || self.bytes != self.by_client.values().map(|s| s.bytes).sum::<usize>()
            || self.count != self.by_client.values().map(|s| s.outcomes.len()).sum::<usize>()
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
/// dropped (reply received, or the caller gave up or was cancelled). Callers are served in the
/// order they began to wait: one that asks for many serials is not overtaken for ever by
/// callers asking for few (the window is counted from the lowest serial awaiting a reply, so
/// while small requests keep overlapping, a large one would otherwise never find room: the
/// scheduler's 1,024 binds waited 8 s behind the ReplicaSet controller's creates in the
/// deployment burst). Runtime-agnostic (a lock and wakers, no clock): the same under tokio
/// and the simulator.
#[derive(Clone, Debug, Default)]
pub struct SharedSerials {
    inner: std::sync::Arc<std::sync::Mutex<Queued>>,
}

/// The serials and the callers waiting for room, first come first served.
#[derive(Debug, Default)]
struct Queued {
    serials: ClientSerials,
    /// Each waiting caller's ticket and the waker of its last poll.
    waiting: std::collections::VecDeque<(u64, Option<std::task::Waker>)>,
    next_ticket: u64,
}

impl Queued {
    /// The waker of the first caller waiting, taken: the only one that may go next.
    fn first_waker(&mut self) -> Option<std::task::Waker> {
        self.waiting.front_mut().and_then(|(_, w)| w.take())
    }
}

/// Serials handed out by [`SharedSerials::begin`], awaiting their replies until dropped.
#[derive(Debug)]
pub struct Awaiting {
    shared: SharedSerials,
    first: u64,
    n: u64,
    acked_below: u64,
}

/// A caller's wait for serials ([`SharedSerials::begin`]); dropped while waiting, it leaves
/// its place in the queue.
#[derive(Debug)]
#[must_use = "a future does nothing unless awaited"]
pub struct Begin<'a> {
    shared: &'a SharedSerials,
    n: u64,
    /// Its place in the queue, once it had to wait.
    ticket: Option<u64>,
}

impl SharedSerials {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `n` consecutive serials (1 to [`SESSION_PENDING_MAX`]), once the window has room and
    /// every caller that began to wait earlier has had its serials.
    pub fn begin(&self, n: u64) -> Begin<'_> {
        Begin { shared: self, n: n.clamp(1, SESSION_PENDING_MAX), ticket: None }
    }
}

impl std::future::Future for Begin<'_> {
    type Output = Awaiting;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Awaiting> {
        let this = &mut *self;
        let mut guard = this.shared.lock();
        let first_in_line = match this.ticket {
            None => guard.waiting.is_empty(),
            Some(ticket) => guard.waiting.front().is_some_and(|(t, _)| *t == ticket),
        };
        if first_in_line && let Some((first, acked_below)) = guard.serials.begin(this.n) {
            // Out of the queue; the next caller in it may find room too.
            let next = if this.ticket.take().is_some() {
                guard.waiting.pop_front();
                guard.first_waker()
            } else {
                None
            };
            drop(guard);
            if let Some(waker) = next {
                waker.wake();
            }
            return std::task::Poll::Ready(Awaiting { shared: this.shared.clone(), first, n: this.n, acked_below });
        }
        let ticket = match this.ticket {
            Some(ticket) => ticket,
            None => {
                let ticket = guard.next_ticket;
                guard.next_ticket += 1;
                guard.waiting.push_back((ticket, None));
                this.ticket = Some(ticket);
                ticket
            }
        };
        if let Some((_, waker)) = guard.waiting.iter_mut().find(|(t, _)| *t == ticket) {
            *waker = Some(cx.waker().clone());
        }
        std::task::Poll::Pending
    }
}

impl Drop for Begin<'_> {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket else { return };
        let next = {
            let mut guard = self.shared.lock();
            let was_first = guard.waiting.front().is_some_and(|(t, _)| *t == ticket);
            guard.waiting.retain(|(t, _)| *t != ticket);
            if was_first { guard.first_waker() } else { None }
        };
        if let Some(waker) = next {
            waker.wake();
        }
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
        let next = {
            let mut guard = self.shared.lock();
            for serial in self.serials() {
                guard.serials.end(serial);
            }
            guard.first_waker()
        };
        if let Some(waker) = next {
            waker.wake();
        }
    }
}

// Encoded as the maps it replaced (`BTreeMap<ClientId, (last seen, floor, BTreeMap<serial,
// Outcome>)>`): the same bytes, so snapshots did not change. An outcome's compact form is its
// encoding, written as it is.
impl Encode for Sessions {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        (self.by_client.len() as u64).encode(encoder)?;
        for (client, session) in &self.by_client {
            client.encode(encoder)?;
            session.last_seen_ms.encode(encoder)?;
            session.floor.encode(encoder)?;
            (session.outcomes.len() as u64).encode(encoder)?;
            for (serial, outcome) in session.outcomes.iter() {
                serial.encode(encoder)?;
                encoder.writer().write(outcome)?;
            }
        }
        Ok(())
    }
}

/// The serials that opened the sessions ([`Session::opened`], where not 0), by client: what
/// snapshots carry after the table from format 5 on (format 5's are dropped on read).
#[derive(Debug, Default, PartialEq, Eq, Encode, Decode)]
pub(crate) struct Openings(Vec<(ClientId, u64)>);

impl Sessions {
    pub(crate) fn openings(&self) -> Openings {
        Openings(self.by_client.iter().filter(|(_, s)| s.opened > 0).map(|(c, s)| (*c, s.opened)).collect())
    }

    /// Sets the sessions' opening serials from a snapshot's [`Openings`].
    ///
    /// # Errors
    /// Clients out of order, or one without a session.
    pub(crate) fn set_openings(&mut self, openings: Openings) -> Result<(), &'static str> {
        let mut previous = None;
        for (client, opened) in openings.0 {
            if previous.is_some_and(|p| p >= client) {
                return Err("session openings out of client order");
            }
            previous = Some(client);
            if opened == 0 {
                return Err("a session opening of serial 0");
            }
            let session = self.by_client.get_mut(&client).ok_or("a session opening names no session")?;
            session.opened = opened;
        }
        Ok(())
    }
}

// Each outcome is compacted as it is decoded (a snapshot's table never exists as values), and
// the lengths are checked before anything is reserved.
impl<Context> Decode<Context> for Sessions {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        fn len<C, D: Decoder<Context = C>>(
            decoder: &mut D,
            max: usize,
            what: &'static str,
        ) -> Result<usize, DecodeError> {
            match usize::try_from(u64::decode(decoder)?) {
                Ok(n) if n <= max => Ok(n),
                _ => Err(DecodeError::Other(what)),
            }
        }
        let mut sessions = Self::default();
        let clients = len(decoder, SESSIONS_MAX, "more sessions than SESSIONS_MAX")?;
        let most = SESSION_OUTCOMES_MAX.max(SESSION_PENDING_MAX as usize);
        let mut previous = None;
        for _ in 0..clients {
            let client = ClientId::decode(decoder)?;
            if previous.is_some_and(|p| p >= client) {
                return Err(DecodeError::Other("sessions out of client order"));
            }
            previous = Some(client);
            let last_seen_ms = i64::decode(decoder)?;
            let floor = u64::decode(decoder)?;
            let n = len(decoder, most, "more outcomes in a session than SESSION_PENDING_MAX")?;
            decoder.claim_container_read::<(u64, Compact)>(n)?;
            let mut outcomes: Vec<(u64, Compact)> = Vec::with_capacity(n);
            for _ in 0..n {
                let serial = u64::decode(decoder)?;
                if outcomes.last().is_some_and(|(p, _)| *p >= serial) {
                    return Err(DecodeError::Other("a session's outcomes out of serial order"));
                }
                outcomes.push((serial, compact(&Outcome::decode(decoder)?)));
            }
            let bytes = outcomes.iter().map(|(_, o)| cost(o)).sum();
            sessions.put(client, Session { last_seen_ms, floor, outcomes: Arc::new(outcomes), opened: 0, bytes });
        }
        sessions.check_invariants().map_err(DecodeError::Other)?;
        Ok(sessions)
    }
}
bincode::impl_borrow_decode!(Sessions);

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::command::{ApplyError, Success};
    use crate::ids::Revision;

    /// `sessions` through a snapshot's encoding: the table, then the openings.
    fn round_trip(sessions: &Sessions) -> Sessions {
        let mut decoded: Sessions = crate::codec::decode(&crate::codec::encode(sessions), 1 << 20).expect("decodes");
        decoded.set_openings(sessions.openings()).expect("valid openings");
        decoded
    }

    #[test]
    fn the_table_encodes_as_the_btree_maps_it_replaced() {
        let mut sessions = Sessions::default();
        let ok: Outcome = Ok(Success { revision: Revision(3), changes: Vec::new() });
        let stale: Outcome = Err(ApplyError::StaleRequest { client: ClientId(9), serial: 1 });
        sessions.record((ClientId(9), 2, 0), &ok, 1_000, crate::rules::RULES_VERSION);
        sessions.record((ClientId(9), 5, 0), &stale, 1_500, crate::rules::RULES_VERSION);
        sessions.record((ClientId(4), 1, 0), &ok, 2_000, crate::rules::RULES_VERSION);
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
        let decoded = round_trip(&sessions);
        assert_eq!(decoded, sessions);
    }

    /// Outcomes are kept as their encoding, shared by copies of the state, and a retry gets the
    /// first outcome back whole.
    #[test]
    fn outcomes_are_kept_compact_and_a_retry_gets_the_first_outcome_back() {
        use crate::command::{Action, Change};
        use crate::object::{Kind, ObjectKey};
        let change = |name: &str| Change {
            key: ObjectKey::new(Kind::Pod, "team", name),
            uid: crate::ids::Uid::derive(12, 1),
            revision: Revision(12),
            action: Action::Created,
        };
        let batch: Outcome = Ok(Success { revision: Revision(12), changes: vec![change("a"), change("b")] });
        let refused: Outcome = Err(ApplyError::Conflict {
            key: ObjectKey::new(Kind::Pod, "team", "a"),
            reason: "the object has been modified".into(),
        });
        let mut sessions = Sessions::default();
        sessions.record((ClientId(1), 1, 1), &batch, 1_000, crate::rules::RULES_VERSION);
        sessions.record((ClientId(2), 1, 1), &refused, 1_000, crate::rules::RULES_VERSION);
        sessions.record((ClientId(1), 2, 1), &refused, 1_001, crate::rules::RULES_VERSION);
        assert_eq!(sessions.check_invariants(), Ok(()));
        for (client, serial, outcome) in [(1, 1, &batch), (2, 1, &refused), (1, 2, &refused)] {
            let stored = sessions.by_client[&ClientId(client)].get(serial).expect("kept");
            assert_eq!(stored[..], crate::codec::encode(outcome)[1..], "its encoding, nothing else");
            match sessions.lookup(ClientId(client), serial, true, crate::rules::RULES_VERSION) {
                Seen::Applied(first) => assert_eq!(&first, outcome),
                other => panic!("client {client} serial {serial}: {other:?}"),
            }
        }
        let counted: usize = sessions.by_client.values().flat_map(|s| s.outcomes.iter()).map(|(_, o)| cost(o)).sum();
        assert_eq!(sessions.outcome_bytes(), counted);
        // Copies share a session's outcomes until one of them changes them.
        let copy = sessions.clone();
        assert!(Arc::ptr_eq(&copy.by_client[&ClientId(2)].outcomes, &sessions.by_client[&ClientId(2)].outcomes));
        let mut changed = copy.clone();
        changed.record((ClientId(2), 2, 1), &batch, 1_002, crate::rules::RULES_VERSION);
        assert!(!Arc::ptr_eq(&changed.by_client[&ClientId(2)].outcomes, &sessions.by_client[&ClientId(2)].outcomes));
        assert_eq!(sessions, copy, "the original is unchanged");
        // The invariant check sees a count that disagrees.
        let mut miscounted = sessions.clone();
        if let Some(s) = miscounted.by_client.get_mut(&ClientId(1)) {
            s.bytes += 1;
        }
        miscounted.bytes += 1;
        assert_eq!(miscounted.check_invariants(), Err("the counted outcome bytes disagree with the outcomes"));
    }

    /// Over the byte bound, the least recently seen clients lose their outcomes but keep their
    /// sessions: a retry of a forgotten serial is stale (outcome unknown), a new serial is new.
    #[test]
    fn over_the_byte_bound_old_outcomes_go_and_their_serials_stay_known_as_forgotten() {
        let mut sessions = Sessions::default();
        let big = |n: usize| -> Outcome { Err(ApplyError::BadRequest { reason: "x".repeat(n) }) };
        let size = cost(&compact(&big(1_000)));
        let bound = 3 * size;
        for (i, client) in [1u128, 2, 3].into_iter().enumerate() {
            sessions.record_within(
                (ClientId(client), 1, 1),
                &big(1_000),
                1_000 + i as i64,
                crate::rules::RULES_VERSION,
                bound,
            );
        }
        assert_eq!(sessions.outcome_bytes(), bound);
        // Client 1, seen first, is touched again: client 2 is now the least recently seen.
        sessions.record_within((ClientId(1), 2, 1), &big(1_000), 2_000, crate::rules::RULES_VERSION, bound);
        assert_eq!(sessions.check_invariants(), Ok(()));
        assert!(sessions.outcome_bytes() <= bound, "{} > {bound}", sessions.outcome_bytes());
        assert!(
            matches!(sessions.lookup(ClientId(2), 1, true, crate::rules::RULES_VERSION), Seen::Stale),
            "forgotten, and known to be"
        );
        assert!(
            matches!(sessions.lookup(ClientId(2), 2, true, crate::rules::RULES_VERSION), Seen::New),
            "its next request is applied"
        );
        assert!(matches!(sessions.lookup(ClientId(1), 1, true, crate::rules::RULES_VERSION), Seen::Applied(_)));
        assert!(matches!(sessions.lookup(ClientId(3), 1, true, crate::rules::RULES_VERSION), Seen::Applied(_)));
        assert_eq!(sessions.len(), 3, "every session stays");
        // A snapshot carries the result and the decoder derives the same counts.
        let decoded = round_trip(&sessions);
        assert_eq!(decoded, sessions);
        // Acknowledged outcomes leave the count too.
        sessions.record_within((ClientId(1), 3, 3), &big(10), 3_000, crate::rules::RULES_VERSION, bound);
        assert_eq!(sessions.check_invariants(), Ok(()));
        assert_eq!(sessions.outcome_bytes(), size + cost(&compact(&big(10))), "client 3's and client 1's last");
    }

    /// A table over the byte bound (an older format's snapshot, or a build with a larger bound)
    /// comes under it at its next recorded outcome, whichever client records it.
    #[test]
    fn a_table_over_the_byte_bound_comes_under_it_at_the_next_outcome() {
        let mut sessions = Sessions::default();
        let big: Outcome = Err(ApplyError::BadRequest { reason: "x".repeat(1_000) });
        for client in 1..=10u128 {
            sessions.record_within(
                (ClientId(client), 1, 1),
                &big,
                client as i64,
                crate::rules::RULES_VERSION,
                usize::MAX,
            );
        }
        let decoded = round_trip(&sessions);
        let bound = 3 * cost(&compact(&big));
        assert!(decoded.outcome_bytes() > bound);
        let mut sessions = decoded;
        let small: Outcome = Err(ApplyError::BadRequest { reason: "y".into() });
        sessions.record_within((ClientId(11), 1, 1), &small, 11, crate::rules::RULES_VERSION, bound);
        assert!(sessions.outcome_bytes() <= bound, "{} > {bound}", sessions.outcome_bytes());
        assert_eq!(sessions.check_invariants(), Ok(()));
        assert!(
            matches!(sessions.lookup(ClientId(1), 1, true, crate::rules::RULES_VERSION), Seen::Stale),
            "the least recently seen went first"
        );
        assert!(
            matches!(sessions.lookup(ClientId(10), 1, true, crate::rules::RULES_VERSION), Seen::Applied(_)),
            "the most recently seen stayed"
        );
        assert_eq!(sessions.len(), 11);
    }

    /// A client the table does not know: its retry is "expired" (an earlier attempt may have
    /// been applied and forgotten), its first attempt new; a retry of a serial below the one
    /// that opened the client's session, and not held by it, is "expired" too.
    #[test]
    fn a_retry_from_an_unknown_client_is_expired_and_a_first_attempt_new() {
        let mut sessions = Sessions::default();
        assert!(matches!(sessions.lookup(ClientId(5), 3, true, crate::rules::RULES_VERSION), Seen::Expired));
        assert!(matches!(sessions.lookup(ClientId(5), 3, false, crate::rules::RULES_VERSION), Seen::New));
        assert!(
            matches!(sessions.lookup(ClientId(5), 0, true, crate::rules::RULES_VERSION), Seen::New),
            "serial 0 opts out"
        );
        let ok: Outcome = Ok(Success { revision: Revision(3), changes: Vec::new() });
        // A client's first serials (nothing heard yet) open its session where they start.
        sessions.record((ClientId(5), 3, 1), &ok, 1_000, crate::rules::RULES_VERSION);
        assert!(matches!(sessions.lookup(ClientId(5), 3, true, crate::rules::RULES_VERSION), Seen::Applied(_)));
        assert!(
            matches!(sessions.lookup(ClientId(5), 4, true, crate::rules::RULES_VERSION), Seen::New),
            "a known client's retry of a new serial"
        );
        sessions.expire(1_000 + SESSION_IDLE_MS_MAX + 1);
        assert!(
            matches!(sessions.lookup(ClientId(5), 3, true, crate::rules::RULES_VERSION), Seen::Expired),
            "forgotten"
        );
        // Serial 4 (a first attempt, while 3's reply is still awaited) opens a new session. The
        // client has had replies: any of its writes in flight may have been applied under the
        // forgotten session, so every retry the new one holds no record of is unknown; first
        // attempts are new.
        sessions.record((ClientId(5), 4, 3), &ok, 1_000 + SESSION_IDLE_MS_MAX + 2, crate::rules::RULES_VERSION);
        assert!(matches!(sessions.lookup(ClientId(5), 3, true, crate::rules::RULES_VERSION), Seen::Expired));
        assert!(matches!(sessions.lookup(ClientId(5), 5, true, crate::rules::RULES_VERSION), Seen::Expired));
        assert!(matches!(sessions.lookup(ClientId(5), 3, false, crate::rules::RULES_VERSION), Seen::New));
        assert!(matches!(sessions.lookup(ClientId(5), 3, true, 1), Seen::New), "rules 1 has no such check");
        // A client still awaiting its first reply (serial 1 applied, reply lost, session
        // forgotten, serial 2 opens a new one at 2): a retry of 1 is never applied again.
        sessions.record((ClientId(6), 1, 1), &ok, 1_000 + SESSION_IDLE_MS_MAX + 3, crate::rules::RULES_VERSION);
        sessions.expire(1_000 + 2 * SESSION_IDLE_MS_MAX + 10);
        sessions.record((ClientId(6), 2, 1), &ok, 1_000 + 2 * SESSION_IDLE_MS_MAX + 10, crate::rules::RULES_VERSION);
        assert!(matches!(sessions.lookup(ClientId(6), 1, true, crate::rules::RULES_VERSION), Seen::Expired));
        // A snapshot carries where sessions opened (client 5 has idled out since).
        let table: Sessions = crate::codec::decode(&crate::codec::encode(&sessions), 1 << 20).expect("decodes");
        assert!(table != sessions, "the table alone does not hold the openings");
        assert!(round_trip(&sessions) == sessions);
        assert_eq!(sessions.openings(), Openings(vec![(ClientId(6), 2)]));
        let mut unknown = sessions.clone();
        assert_eq!(unknown.set_openings(Openings(vec![(ClientId(9), 2)])), Err("a session opening names no session"));
    }

    /// Over SESSIONS_MAX the least recently seen session goes, with its outcomes, and never the
    /// one just recorded: here every session is seen at the same time and the last one recorded
    /// has the lowest id.
    #[test]
    fn over_the_session_bound_the_oldest_goes_never_the_one_just_recorded() {
        let mut sessions = Sessions::default();
        let ok: Outcome = Ok(Success { revision: Revision(3), changes: Vec::new() });
        let last = SESSIONS_MAX as u128 + 1;
        for id in (1..=last).rev() {
            sessions.record((ClientId(id), 1, 1), &ok, 1_000, crate::rules::RULES_VERSION);
        }
        assert_eq!(sessions.len(), SESSIONS_MAX);
        assert_eq!(sessions.check_invariants(), Ok(()));
        assert!(
            matches!(sessions.lookup(ClientId(1), 1, true, crate::rules::RULES_VERSION), Seen::Applied(_)),
            "the one just recorded stays"
        );
        assert!(
            matches!(sessions.lookup(ClientId(2), 1, true, crate::rules::RULES_VERSION), Seen::Expired),
            "the oldest went"
        );
        assert_eq!(sessions.outcome_bytes(), SESSIONS_MAX * cost(&compact(&ok)), "and its outcome with it");
    }

    /// When only the client just recorded holds outcomes over the byte bound, it loses all but
    /// the one it was just given, and their serials stay known as forgotten.
    #[test]
    fn one_client_over_the_byte_bound_keeps_only_its_latest_outcome() {
        let mut sessions = Sessions::default();
        let big: Outcome = Err(ApplyError::BadRequest { reason: "x".repeat(1_000) });
        let bound = 3 * cost(&compact(&big));
        for serial in 1..=4 {
            sessions.record_within((ClientId(1), serial, 1), &big, 1_000, crate::rules::RULES_VERSION, bound);
        }
        assert!(sessions.outcome_bytes() <= bound, "{} > {bound}", sessions.outcome_bytes());
        assert_eq!(sessions.check_invariants(), Ok(()));
        assert!(
            matches!(sessions.lookup(ClientId(1), 4, true, crate::rules::RULES_VERSION), Seen::Applied(_)),
            "the latest stays"
        );
        for serial in 1..=3 {
            assert!(
                matches!(sessions.lookup(ClientId(1), serial, true, crate::rules::RULES_VERSION), Seen::Stale),
                "serial {serial}"
            );
        }
        // Rules 1 (format 4 entries) never touched the client just recorded, and counted the
        // encodings alone.
        let mut sessions = Sessions::default();
        for serial in 1..=4 {
            sessions.record_within((ClientId(1), serial, 1), &big, 1_000, 1, bound);
        }
        assert_eq!(sessions.count, 4, "all kept");
        assert_eq!(sessions.check_invariants(), Ok(()));
    }

    /// A snapshot's table is refused, not trusted, when its clients or serials are out of order,
    /// repeated, or too many.
    #[test]
    fn a_table_out_of_order_or_over_its_bounds_is_refused() {
        let ok: Outcome = Ok(Success { revision: Revision(3), changes: Vec::new() });
        type Layout = Vec<(ClientId, (i64, u64, Vec<(u64, Outcome)>))>;
        let decode = |layout: &Layout| crate::codec::decode::<Sessions>(&crate::codec::encode(layout), 1 << 24);
        let session = |serials: &[u64]| (1_000i64, 0u64, serials.iter().map(|s| (*s, ok.clone())).collect::<Vec<_>>());
        assert!(decode(&vec![(ClientId(1), session(&[1, 2])), (ClientId(2), session(&[1]))]).is_ok());
        for (layout, why) in [
            (vec![(ClientId(2), session(&[1])), (ClientId(1), session(&[1]))], "sessions out of client order"),
            (vec![(ClientId(1), session(&[1])), (ClientId(1), session(&[2]))], "sessions out of client order"),
            (vec![(ClientId(1), session(&[2, 1]))], "a session's outcomes out of serial order"),
            (vec![(ClientId(1), session(&[1, 1]))], "a session's outcomes out of serial order"),
            (
                vec![(ClientId(1), session(&(1..=SESSION_PENDING_MAX + 1).collect::<Vec<_>>()))],
                "more outcomes in a session than SESSION_PENDING_MAX",
            ),
        ] {
            let error = decode(&layout).expect_err(why);
            assert!(error.to_string().contains(why), "{error}");
        }
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

    /// A caller asking for the whole window is not overtaken by later callers asking for
    /// little, though the window has room for them: served in the order they began to wait,
    /// each woken in turn; one that gives up while waiting leaves the queue.
    #[test]
    fn callers_get_their_serials_in_the_order_they_asked() {
        use std::future::Future;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Context, Poll, Wake, Waker};

        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let wakes = |count: &std::sync::Arc<Count>| count.0.load(Ordering::SeqCst);
        let shared = SharedSerials::default();
        let (big_woken, small_woken) =
            (std::sync::Arc::new(Count(AtomicUsize::new(0))), std::sync::Arc::new(Count(AtomicUsize::new(0))));
        let (big_waker, small_waker) = (Waker::from(big_woken.clone()), Waker::from(small_woken.clone()));
        let held = std::pin::pin!(shared.begin(10)).as_mut().poll(&mut Context::from_waker(Waker::noop()));
        let Poll::Ready(held) = held else { panic!("room for the first") };
        let mut big = std::pin::pin!(shared.begin(SESSION_PENDING_MAX));
        assert!(big.as_mut().poll(&mut Context::from_waker(&big_waker)).is_pending(), "10 serials await: no room");
        let mut small = std::pin::pin!(shared.begin(1));
        assert!(
            small.as_mut().poll(&mut Context::from_waker(&small_waker)).is_pending(),
            "room for one, but an earlier caller waits: no overtaking"
        );
        drop(held);
        assert_eq!((wakes(&big_woken), wakes(&small_woken)), (1, 0), "the first in line is woken");
        assert!(small.as_mut().poll(&mut Context::from_waker(&small_waker)).is_pending(), "still second");
        let Poll::Ready(whole) = big.as_mut().poll(&mut Context::from_waker(&big_waker)) else {
            panic!("the window is empty: the whole of it")
        };
        assert_eq!(whole.serials(), 11..11 + SESSION_PENDING_MAX);
        assert_eq!(wakes(&small_woken), 1, "the next in line is woken");
        assert!(small.as_mut().poll(&mut Context::from_waker(&small_waker)).is_pending(), "the window is full");
        drop(whole);
        let Poll::Ready(one) = small.as_mut().poll(&mut Context::from_waker(&small_waker)) else { panic!("room") };
        assert_eq!(one.serials(), 11 + SESSION_PENDING_MAX..12 + SESSION_PENDING_MAX);

        // A waiting caller that gives up: the one behind it goes next.
        let mut big = Box::pin(shared.begin(SESSION_PENDING_MAX));
        assert!(big.as_mut().poll(&mut Context::from_waker(&big_waker)).is_pending());
        let mut small = std::pin::pin!(shared.begin(1));
        assert!(small.as_mut().poll(&mut Context::from_waker(&small_waker)).is_pending());
        let before = wakes(&small_woken);
        drop(big);
        assert_eq!(wakes(&small_woken), before + 1, "woken: first in line now");
        assert!(small.as_mut().poll(&mut Context::from_waker(&small_waker)).is_ready());
        drop(one);
    }
}
