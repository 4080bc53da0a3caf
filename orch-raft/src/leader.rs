//! Leader-only loops: the scheduler and the controllers run here, on the Raft leader only; orchd,
//! embedding programs and the simulator (orch-sim) run the same framework.
//!
//! When this node becomes leader, every loop is made afresh and reconciles from the full
//! current state; after that it reconciles again whenever committed changes of the kinds it
//! reads arrive ([`LeaderLoop::kinds`]; noted also while its last round's commands were being
//! proposed, so that its watch never waits unread), when an
//! outside input arrives ([`Loops::send`]), when the time it asked to be woken at comes
//! ([`LeaderLoop::wake_at_ms`]: a deadline of its own), and at least every resync interval. When the node
//! steps down (or the term changes) the loops are stopped. A loop's output is commands,
//! proposed through the log: a deposed leader's late proposal fails its preconditions or is
//! refused, so it cannot corrupt state.
//!
//! Each round a loop gets a [`Round`]: a consistent copy of the state (taken in constant time;
//! no lock is held while the loop reads it), the time by the node's clock (the `Clock` seam of
//! [`crate::control_plane::Builder::clock`], so a simulation drives it), the keys of the objects
//! changed since its last round (or `full`, after which it should look at everything), what
//! became of the commands it returned last round, and the outside inputs sent to it since. The
//! framework proposes a round's commands under a client id of the loop's own for the term
//! ([`crate::control_plane::Proposer`]); a
//! proposal whose outcome is unknown (openraft discarded the leader's entry, say) is retried
//! with the same serials, marked a retry, so that the state machine applies those serials at
//! most once, and the loop learns the outcome, or that none is known, in its next round (a loop
//! of a later term is a new client: it reconciles from the state, level-triggered).
//!
//! Committed changes of the kinds a loop reads wake it; changes of other kinds and a watch's
//! progress items do not. A loop that panics (or
//! returns) while this node leads is reported ([`LoopEvents::restarted`]) and started afresh
//! after [`LOOP_RESTART_DELAY`]; commands the state machine refuses and proposals that fail are
//! reported too, and a loop whose proposal failed gets its next round within
//! [`LOOP_RETRY_DELAY`], with the fates, though nothing else wakes it.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::FutureExt;
use orch_core::{Command, Kind, ObjectKey, Outcome, State, WatchFilter};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::ControlPlane;
use crate::control_plane::{Consistency, PROPOSAL_REQUESTS_MAX, Proposer, WatchItem};
use crate::lock;

/// The most watch items a loop takes in before it reconciles (the rest wait for the next
/// round); the most changed keys a round lists (beyond it, the round is `full`).
/// Room for several rounds' worth of changes of the kinds a loop reads, so that a busy
/// cluster does not turn every round into a full one (at 150,000 pods a full scheduler round
/// takes about a second, `--bench reconcile`): in the three-node deployment burst a scheduler
/// round (4,096 binds and their events, proposed in turn) saw more than 16,384 pods change
/// in half its rounds, each then a full one. A key takes about 200 bytes here.
pub const LOOP_EVENTS_PER_ROUND_MAX: usize = 65_536;

/// The most outside inputs waiting for one loop; more are refused ([`Loops::send`]).
pub const LOOP_INPUTS_PENDING_MAX: usize = 65_536;

/// How long a loop that stopped (panicked or returned) waits before it is started again, so
/// that one failing on every round does not spin.
pub const LOOP_RESTART_DELAY: Duration = Duration::from_millis(500);

/// How often the loops orch runs (orchd, orch-sim) reconcile from the full state at the
/// least: a safety net (each loop is driven by the committed changes, its own wake-ups and
/// its inputs), which at 150,000 pods costs each loop a second or more of CPU (BENCHMARKS.md,
/// the deployment burst), so it is rare. Kubernetes' controllers resync every 12-24 h and its
/// scheduler never.
pub const LOOP_RESYNC: Duration = Duration::from_secs(300);

/// How soon a loop whose last round's commands could not all be proposed gets its next round
/// (with their fates), if nothing wakes it earlier.
pub const LOOP_RETRY_DELAY: Duration = Duration::from_millis(500);

/// The most encoded bytes of commands one proposal of a round carries: half an entry's
/// bound, leaving room for the requests around them.
pub const PROPOSAL_BYTES_MAX: usize = orch_core::codec::ENTRY_BYTES_MAX / 2;

/// What a round's outcome says of a command the framework did not propose because an
/// earlier proposal of the round failed: it was not applied.
pub const NOT_PROPOSED: &str = "not proposed: an earlier part of the round's commands failed";

/// How many times a proposal whose outcome is unknown is retried (with the same serials) before
/// the loop is told that none is known.
pub const PROPOSAL_ATTEMPTS: usize = 3;

/// An outside input to a loop (a node heartbeat, say); the loop downcasts it.
pub type Input = Box<dyn Any + Send>;

/// What one round of a loop sees.
pub struct Round<'a> {
    /// A consistent copy of the cluster state.
    pub state: &'a State,
    /// Now, in milliseconds since the epoch: the node's clock as it read when this term's
    /// loops started, advanced by the monotonic clock since ([`TermClock`]), so that within a
    /// term time never goes back and a step of the node's clock does not move a wake-up.
    pub now_ms: i64,
    /// The first round of a term, a resync, or more changes than a round lists: look at
    /// everything (`changed` is then empty).
    pub full: bool,
    /// The objects changed since the last round, each once, in the order they first changed:
    /// those of the kinds the loop reads ([`LeaderLoop::kinds`]).
    pub changed: &'a [ObjectKey],
    /// What became of the commands the loop returned last round, in order: the outcome the
    /// state machine gave, or why none is known (the loop may see the effect in the state).
    pub outcomes: &'a [(Command, Result<Outcome, String>)],
    /// The outside inputs sent to this loop since its last round, in order.
    pub inputs: Vec<Input>,
}

/// A leader-only reconcile loop.
pub trait LeaderLoop: Send + 'static {
    /// Its name, for logs, counters and inputs.
    fn name(&self) -> &'static str;
    /// The kinds whose changes it reads in [`Round::changed`], or `None` for every kind: the
    /// framework lists only keys of these kinds, and changes of no other kind wake it.
    fn kinds(&self) -> Option<&'static [Kind]> {
        None
    }
    /// The commands that move the state towards what this loop wants.
    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command>;
    /// Whether work is left that the last round did not get to (a round decides a bounded
    /// share): the framework then runs the next round as soon as the last one's commands
    /// are proposed, without waiting for a change.
    fn more(&self) -> bool {
        false
    }
    /// When, by the node's clock (milliseconds since the epoch), the loop wants a round even if
    /// nothing changed: the framework then runs one with no changed keys.
    fn wake_at_ms(&self) -> Option<i64> {
        None
    }
    /// Inputs for other loops of this framework, taken after each round and delivered as
    /// [`LoopSender::send_latest`] would under its key, or [`Loops::send`] without one
    /// (dropped when no loop of that name has run, or too many wait for it).
    fn outbox(&mut self) -> Vec<Outgoing> {
        Vec::new()
    }
}

/// An input one loop sends another ([`LeaderLoop::outbox`]).
pub struct Outgoing {
    /// The name of the loop it is for.
    pub to: &'static str,
    /// Replaces the input waiting under the same key, if any ([`LoopSender::send_latest`]).
    pub key: Option<String>,
    /// The input.
    pub input: Input,
}

/// Makes a fresh loop for each term this node leads.
pub type LoopFactory = Arc<dyn Fn() -> Box<dyn LeaderLoop> + Send + Sync>;

/// Why a round looks at everything ([`Round::full`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FullRound {
    /// The first round of a loop (of a term, or after a restart).
    Start,
    /// The periodic resync.
    Resync,
    /// More changes arrived than a round lists ([`LOOP_EVENTS_PER_ROUND_MAX`]).
    TooManyChanges,
    /// The loop's watch ended or fell behind the history it reads from: it starts over.
    Behind,
}

impl FullRound {
    /// Its name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Resync => "resync",
            Self::TooManyChanges => "too_many_changes",
            Self::Behind => "behind",
        }
    }
}

/// Told what the loops do (orchd counts it in `/metrics`); every method defaults to nothing.
pub trait LoopEvents: Send + Sync + 'static {
    /// Loop `name` stopped (panicked or returned) while this node led, and is started again.
    fn restarted(&self, name: &'static str) {
        let _ = name;
    }
    /// A command of loop `name` was refused by the state machine.
    fn rejected(&self, name: &'static str, error: &orch_core::ApplyError) {
        let _ = (name, error);
    }
    /// A proposal of loop `name` failed (no leader, no quorum, shutting down).
    fn failed(&self, name: &'static str, error: &crate::control_plane::Error) {
        let _ = (name, error);
    }
    /// Loop `name` runs a full round, for `why`.
    fn full_round(&self, name: &'static str, why: FullRound) {
        let _ = (name, why);
    }
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoEvents;

impl LoopEvents for NoEvents {}

/// Inputs waiting for each loop, by name.
#[derive(Default)]
struct Inbox {
    /// The names of the loops made so far (a factory is not called just to learn its name).
    names: Mutex<BTreeSet<&'static str>>,
    pending: Mutex<BTreeMap<&'static str, Queue>>,
    /// Wakes every running loop when an input arrives.
    arrived: Notify,
}

/// The inputs waiting for one loop: in the order sent, then the latest under each key.
#[derive(Default)]
struct Queue {
    plain: Vec<Input>,
    latest: BTreeMap<String, Input>,
}

impl Queue {
    fn len(&self) -> usize {
        self.plain.len() + self.latest.len()
    }
}

impl Inbox {
    /// Queues `input` for loop `name` (under `key`: replacing the input waiting under it), and
    /// wakes the loops when `notify`.
    fn post(&self, name: &str, key: Option<String>, input: Input, notify: bool) -> Result<(), InputError> {
        let Some(name) = lock(&self.names).get(name).copied() else {
            return Err(InputError::NoSuchLoop(name.to_owned()));
        };
        {
            let mut pending = lock(&self.pending);
            let queue = pending.entry(name).or_default();
            let replaces = key.as_ref().is_some_and(|k| queue.latest.contains_key(k));
            if !replaces && queue.len() >= LOOP_INPUTS_PENDING_MAX {
                return Err(InputError::Full(name));
            }
            match key {
                Some(key) => {
                    queue.latest.insert(key, input);
                }
                None => queue.plain.push(input),
            }
        }
        if notify {
            self.arrived.notify_waiters();
        }
        Ok(())
    }

    /// Whether inputs wait for loop `name`.
    fn waiting(&self, name: &str) -> bool {
        lock(&self.pending).get(name).is_some_and(|q| q.len() > 0)
    }

    /// The inputs waiting for loop `name`, taken.
    fn take(&self, name: &str) -> Vec<Input> {
        let Some(queue) = lock(&self.pending).remove(name) else { return Vec::new() };
        let mut inputs = queue.plain;
        inputs.extend(queue.latest.into_values());
        inputs
    }
}

/// Sends inputs to the loops of one framework ([`Loops::sender`]); cheap to clone.
#[derive(Clone)]
pub struct LoopSender(Arc<Inbox>);

impl LoopSender {
    /// As [`Loops::send`].
    ///
    /// # Errors
    /// As [`Loops::send`].
    pub fn send(&self, name: &str, input: Input) -> Result<(), InputError> {
        self.0.post(name, None, input, true)
    }

    /// As [`LoopSender::send`], but an input still waiting under the same `key` is replaced
    /// (a node's heartbeat: only the latest matters), so a sender that repeats itself takes
    /// one place in the queue however often it sends.
    ///
    /// # Errors
    /// As [`Loops::send`].
    pub fn send_latest(&self, name: &str, key: &str, input: Input) -> Result<(), InputError> {
        self.0.post(name, Some(key.to_owned()), input, true)
    }
}

/// The running framework; [`Loops::stop`] stops it and waits (dropping it stops it too,
/// without waiting).
pub struct Loops {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    inbox: Arc<Inbox>,
}

/// Why an input was not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    /// No loop of that name has run in this framework (so far: a loop is known once this node
    /// first led).
    #[error("no leader loop is named {0:?}")]
    NoSuchLoop(String),
    /// [`LOOP_INPUTS_PENDING_MAX`] inputs wait for the loop already.
    #[error("loop {0:?} has {LOOP_INPUTS_PENDING_MAX} inputs waiting already")]
    Full(&'static str),
}

impl Loops {
    /// Starts watching for leadership on `cp`; `factories` make the loops, whose doings go to
    /// `events`.
    pub fn spawn(cp: ControlPlane, factories: Vec<LoopFactory>, resync: Duration, events: Arc<dyn LoopEvents>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let inbox = Arc::new(Inbox::default());
        let task = tokio::spawn(run(cp, factories, resync, events, Arc::clone(&inbox), stopped));
        Self { stop, task, inbox }
    }

    /// Sends an outside input to loop `name`: it gets it in its next round (and is woken for
    /// it). Inputs still waiting when a term begins are dropped: an input is for the loops
    /// of the term it was sent in (one sent while this node does not lead is lost).
    ///
    /// # Errors
    /// No loop of that name has run yet, or too many inputs wait for it.
    pub fn send(&self, name: &str, input: Input) -> Result<(), InputError> {
        self.inbox.post(name, None, input, true)
    }

    /// A handle that sends inputs to these loops ([`Loops::send`]) and can be kept apart from
    /// them (by the API service, say).
    pub fn sender(&self) -> LoopSender {
        LoopSender(Arc::clone(&self.inbox))
    }

    /// Stops the loops and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The time of one term's loops: the node's clock read when the term's loops started,
/// advanced by the monotonic clock since. A step of the node's clock (an NTP step, a VM
/// restored from a snapshot) does not move a deadline a loop set, and time never goes back
/// within a term, as Kubernetes' work queues time their delays on the monotonic clock. The
/// next term reads the node's clock again (its loops start afresh).
#[derive(Clone, Copy, Debug)]
pub struct TermClock {
    wall_ms: i64,
    at: tokio::time::Instant,
}

impl TermClock {
    /// Starts at the node's clock, now.
    pub fn start(cp: &ControlPlane) -> Self {
        Self { wall_ms: cp.clock().now_ms(), at: tokio::time::Instant::now() }
    }

    /// Now, in milliseconds since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.wall_ms.saturating_add(i64::try_from(self.at.elapsed().as_millis()).unwrap_or(i64::MAX))
    }
}

/// The term this node leads in, if it leads.
fn leading(cp: &ControlPlane) -> Option<u64> {
    let m = cp.metrics();
    (m.leader == Some(m.id)).then_some(m.term)
}

async fn run(
    cp: ControlPlane,
    factories: Vec<LoopFactory>,
    resync: Duration,
    events: Arc<dyn LoopEvents>,
    inbox: Arc<Inbox>,
    mut stopped: watch::Receiver<bool>,
) {
    // Leadership is polled at a fraction of the election timeout: cheap, and it cannot miss a
    // change the way a lost wake-up could.
    let poll = Duration::from_millis(50);
    loop {
        let Some(term) = leading(&cp) else {
            tokio::select! {
                biased;
                _ = stopped.changed() => return,
                () = tokio::time::sleep(poll) => continue,
            }
        };
        // Inputs sent before this term (while another node led, or to the loops of an earlier
        // term) are stale: a heartbeat that waited would vouch for a node nobody heard lately.
        lock(&inbox.pending).clear();
        let clock = TermClock::start(&cp);
        let mut running = JoinSet::new();
        // Which factory made each running task.
        let mut made_by = BTreeMap::new();
        // Each loop proposes as a client of its own for the term (a restart within it keeps
        // it), so that one loop's proposals do not wait for another's serials.
        let proposers: Vec<_> = factories.iter().map(|_| cp.proposer()).collect();
        for (i, factory) in factories.iter().enumerate() {
            let one = run_one(
                cp.clone(),
                proposers[i].clone(),
                clock,
                factory(),
                resync,
                Arc::clone(&events),
                Arc::clone(&inbox),
                Duration::ZERO,
            );
            let handle = running.spawn(one);
            made_by.insert(handle.id(), i);
        }
        loop {
            tokio::select! {
                biased;
                _ = stopped.changed() => {
                    running.shutdown().await;
                    return;
                }
                Some(ended) = running.join_next_with_id() => {
                    let id = match ended {
                        Ok((id, ())) => id,
                        Err(e) => e.id(),
                    };
                    let Some(i) = made_by.remove(&id) else { continue };
                    let lp = factories[i]();
                    events.restarted(lp.name());
                    let one = run_one(
                        cp.clone(),
                        proposers[i].clone(),
                        clock,
                        lp,
                        resync,
                        Arc::clone(&events),
                        Arc::clone(&inbox),
                        LOOP_RESTART_DELAY,
                    );
                    let handle = running.spawn(one);
                    made_by.insert(handle.id(), i);
                }
                () = tokio::time::sleep(poll) => {
                    if leading(&cp) != Some(term) {
                        break;
                    }
                }
            }
        }
        running.shutdown().await;
    }
}

/// What one running loop carries from round to round.
struct Carry {
    /// The kinds the loop reads ([`LeaderLoop::kinds`]; `None`: all).
    kinds: Option<&'static [Kind]>,
    /// A full round is due, and why (the first reason).
    full: Option<FullRound>,
    changed: Vec<ObjectKey>,
    seen: BTreeSet<ObjectKey>,
    outcomes: Vec<(Command, Result<Outcome, String>)>,
    /// The watch ended or fell behind while a round's commands were being proposed: it must
    /// start over.
    broken: bool,
}

impl Carry {
    fn new(kinds: Option<&'static [Kind]>) -> Self {
        Self {
            kinds,
            full: Some(FullRound::Start),
            changed: Vec::new(),
            seen: BTreeSet::new(),
            outcomes: Vec::new(),
            broken: false,
        }
    }

    fn full_for(&mut self, why: FullRound) {
        self.full.get_or_insert(why);
    }

    /// Whether a round is due for what arrived: a change of a kind the loop reads, or a full
    /// round.
    fn due(&self) -> bool {
        self.full.is_some() || !self.changed.is_empty()
    }

    fn note(&mut self, item: &WatchItem) {
        if let WatchItem::Events { events, .. } = item {
            for e in events {
                if self.kinds.is_some_and(|kinds| !kinds.contains(&e.object.kind())) {
                    continue;
                }
                let key = e.object.key();
                if self.changed.len() >= LOOP_EVENTS_PER_ROUND_MAX {
                    self.full_for(FullRound::TooManyChanges);
                } else if self.seen.insert(key.clone()) {
                    self.changed.push(key);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    cp: ControlPlane,
    proposer: Proposer,
    clock: TermClock,
    mut lp: Box<dyn LeaderLoop>,
    resync: Duration,
    events: Arc<dyn LoopEvents>,
    inbox: Arc<Inbox>,
    delay: Duration,
) {
    lock(&inbox.names).insert(lp.name());
    tokio::time::sleep(delay).await;
    let mut carry = Carry::new(lp.kinds());
    loop {
        // A full reconcile from the current state, then follow the committed changes.
        let Ok(from) = cp.read(Consistency::Linearizable, State::applied_index).await else {
            tokio::time::sleep(resync.min(Duration::from_secs(1))).await;
            continue;
        };
        let Ok(mut stream) = cp.watch(from, WatchFilter::all()) else {
            tokio::time::sleep(resync.min(Duration::from_secs(1))).await;
            continue;
        };
        // After the first round: the stream ended or fell behind.
        carry.full_for(FullRound::Behind);
        carry.broken = false;
        round(&cp, &proposer, clock, lp.as_mut(), &mut carry, &mut stream, &events, &inbox).await;
        if carry.broken {
            continue;
        }
        // The resync deadline: items that do not wake the loop (progress) do not push it back,
        // nor do incremental rounds.
        let mut resync_at = tokio::time::Instant::now() + resync;
        let mut retry_at = failed(&carry).then(|| tokio::time::Instant::now() + LOOP_RETRY_DELAY);
        loop {
            let arrived = inbox.arrived.notified();
            let waiting = inbox.waiting(lp.name());
            // A resync that is due is not put off by changes that keep arriving (a wait on the
            // stream returns them before its deadline).
            let due = tokio::time::Instant::now() >= resync_at;
            if due {
                carry.full_for(FullRound::Resync);
            }
            // A wake-up the loop asked for comes before the resync, or with it.
            // At least a millisecond: a loop that keeps asking for a time already past gets a
            // round per millisecond, never a spin.
            let wake_at = lp.wake_at_ms().map(|at| {
                let wait = u64::try_from(at.saturating_sub(clock.now_ms())).unwrap_or(0).max(1);
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            // A round whose commands were not all proposed gets the next one soon, with their
            // fates, though nothing else happens (the resync is a safety net, minutes away).
            let wake_at = wake_at.into_iter().chain(retry_at).min();
            let deadline = wake_at.map_or(resync_at, |w| w.min(resync_at));
            // Changes noted while the last round's commands were proposed are due at once.
            if !waiting && !lp.more() && !due && !carry.due() {
                tokio::select! {
                    biased;
                    next = tokio::time::timeout_at(deadline, stream.next()) => match next {
                        // The resync, or the loop's wake-up (an incremental round, nothing
                        // changed).
                        Err(_) => {
                            if deadline == resync_at {
                                carry.full_for(FullRound::Resync);
                            }
                        }
                        Ok(None | Some(Err(_))) => break,      // the stream ended or fell behind: start over
                        // Progress says nothing changed: no round for it.
                        Ok(Some(Ok(WatchItem::Progress { .. }))) => continue,
                        Ok(Some(Ok(item))) => {
                            carry.note(&item);
                            // Take what else is ready, then reconcile once for all of it; a
                            // stream that ended or fell behind starts over at once (one full
                            // round, not one on a dead stream and another after).
                            if !take_ready(&mut stream, &mut carry) {
                                break;
                            }
                            // Changes of kinds the loop does not read: no round for them.
                            if !carry.due() {
                                continue;
                            }
                        }
                    },
                    () = arrived => {
                        // Another loop's input: nothing for this one.
                        if !inbox.waiting(lp.name()) {
                            continue;
                        }
                    }
                }
            } else {
                // The loop has work left (or inputs wait, or changes were noted): the changes
                // already here go into this round, which runs without waiting for more; but it yields first, so
                // that a loop with work left never keeps its thread (nor the stop) waiting.
                tokio::task::yield_now().await;
                if !take_ready(&mut stream, &mut carry) {
                    // The stream ended or fell behind: start over with a full round.
                    break;
                }
            }
            let full = carry.full.is_some();
            round(&cp, &proposer, clock, lp.as_mut(), &mut carry, &mut stream, &events, &inbox).await;
            if carry.broken {
                break;
            }
            retry_at = failed(&carry).then(|| tokio::time::Instant::now() + LOOP_RETRY_DELAY);
            // The resync is periodic: only a full round puts it off, so a loop that changes
            // keep waking still gets one every `resync`.
            if full {
                resync_at = tokio::time::Instant::now() + resync;
            }
        }
    }
}

/// Whether some of the last round's commands were not proposed, or failed to be (their
/// fates wait for the next round).
fn failed(carry: &Carry) -> bool {
    carry.outcomes.iter().any(|(_, fate)| fate.is_err())
}

/// How many of `commands`, from the first, go in one proposal: at most
/// [`PROPOSAL_REQUESTS_MAX`] and [`PROPOSAL_BYTES_MAX`] encoded bytes (one command at least,
/// which the control plane refuses alone if it is too large for an entry).
fn chunk_len(commands: &[Command]) -> usize {
    let mut bytes = 0;
    for (i, command) in commands.iter().enumerate().take(PROPOSAL_REQUESTS_MAX) {
        bytes += orch_core::codec::encoded_len(command);
        if bytes > PROPOSAL_BYTES_MAX {
            return i.max(1);
        }
    }
    commands.len().min(PROPOSAL_REQUESTS_MAX)
}

/// Notes the watch items ready now, up to [`LOOP_EVENTS_PER_ROUND_MAX`] of them; false when
/// the stream ended or fell behind (the round then looks at everything, and the stream must
/// start over).
fn take_ready<S, E>(stream: &mut S, carry: &mut Carry) -> bool
where
    S: futures_util::Stream<Item = Result<WatchItem, E>> + Unpin,
{
    for _ in 0..LOOP_EVENTS_PER_ROUND_MAX {
        match stream.next().now_or_never() {
            Some(Some(Ok(item))) => carry.note(&item),
            Some(Some(Err(_)) | None) => {
                carry.full_for(FullRound::Behind);
                return false;
            }
            None => break,
        }
    }
    true
}

/// Runs `work` while noting what the watch brings meanwhile, so that a loop waiting for its
/// proposals to commit keeps up with the changes (a watch left unread falls behind the
/// history it reads from, and the loop must then start over with a full round). A watch that
/// ends or falls behind meanwhile is marked broken.
async fn noting<S, E, T>(stream: &mut S, carry: &mut Carry, work: impl std::future::Future<Output = T>) -> T
where
    S: futures_util::Stream<Item = Result<WatchItem, E>> + Unpin,
{
    let mut work = std::pin::pin!(work);
    loop {
        tokio::select! {
            biased;
            out = &mut work => return out,
            item = stream.next(), if !carry.broken => match item {
                Some(Ok(item)) => carry.note(&item),
                Some(Err(_)) | None => {
                    carry.full_for(FullRound::Behind);
                    carry.broken = true;
                }
            },
        }
    }
}

/// One round: reconcile on a copy of the state, then propose what it returned (noting the
/// changes that arrive meanwhile for the next round).
#[allow(clippy::too_many_arguments)]
async fn round<S, E>(
    cp: &ControlPlane,
    proposer: &Proposer,
    clock: TermClock,
    lp: &mut dyn LeaderLoop,
    carry: &mut Carry,
    stream: &mut S,
    events: &Arc<dyn LoopEvents>,
    inbox: &Inbox,
) where
    S: futures_util::Stream<Item = Result<WatchItem, E>> + Unpin,
{
    let name = lp.name();
    let Ok(state) = cp.state(Consistency::Stale).await else {
        // Not serving yet: wait a moment rather than spin on waiting inputs.
        tokio::time::sleep(Duration::from_millis(50)).await;
        return;
    };
    let inputs = inbox.take(name);
    let full = carry.full.take();
    if let Some(why) = full {
        events.full_round(name, why);
    }
    let full = full.is_some();
    let changed = if full { Vec::new() } else { std::mem::take(&mut carry.changed) };
    carry.changed.clear();
    carry.seen.clear();
    let outcomes = std::mem::take(&mut carry.outcomes);
    let now_ms = clock.now_ms();
    let mut commands =
        lp.reconcile(Round { state: &state, now_ms, full, changed: &changed, outcomes: &outcomes, inputs });
    drop(state);
    let outbox = lp.outbox();
    let posted = !outbox.is_empty();
    for out in outbox {
        // Dropped when the addressee is unknown or full, as documented.
        let _ = inbox.post(out.to, out.key, out.input, false);
    }
    if posted {
        inbox.arrived.notify_waiters();
    }
    while !commands.is_empty() {
        let rest = commands.split_off(chunk_len(&commands));
        match noting(stream, carry, proposer.propose_retrying(commands.clone(), PROPOSAL_ATTEMPTS)).await {
            Ok(answers) => {
                for (command, outcome) in commands.into_iter().zip(answers) {
                    if let Err(error) = &outcome {
                        events.rejected(name, error);
                    }
                    carry.outcomes.push((command, Ok(outcome)));
                }
            }
            Err(e) => {
                events.failed(name, &e);
                let why = e.to_string();
                carry.outcomes.extend(commands.into_iter().map(|c| (c, Err(why.clone()))));
                let skipped = NOT_PROPOSED.to_owned();
                carry.outcomes.extend(rest.into_iter().map(|c| (c, Err(skipped.clone()))));
                return;
            }
        }
        commands = rest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// More distinct changed keys than a round lists make the next round a full one, for
    /// that reason; a later reason does not replace the first.
    #[test]
    fn too_many_changes_make_a_full_round_and_say_so() {
        let mut carry = Carry::new(None);
        carry.full = None;
        let event = |i: usize| {
            let mut ns = orch_core::Namespace::default();
            ns.metadata.name = format!("ns-{i}").into();
            orch_core::WatchEvent {
                revision: orch_core::Revision(1),
                event_type: orch_core::EventType::Added,
                object: orch_core::Object::from(ns),
                prev: None,
            }
        };
        let events: Vec<_> = (0..LOOP_EVENTS_PER_ROUND_MAX).map(event).collect();
        carry.note(&WatchItem::Events { revision: 1, events });
        assert_eq!((carry.full, carry.changed.len()), (None, LOOP_EVENTS_PER_ROUND_MAX), "exactly the limit: listed");
        carry.note(&WatchItem::Events { revision: 2, events: vec![event(LOOP_EVENTS_PER_ROUND_MAX)] });
        assert_eq!(carry.full, Some(FullRound::TooManyChanges));
        carry.full_for(FullRound::Resync);
        assert_eq!(carry.full, Some(FullRound::TooManyChanges), "the first reason stays");
    }

    fn namespace(name: &str, bytes: usize) -> Command {
        let mut ns = orch_core::Namespace::default();
        ns.metadata.name = name.into();
        ns.metadata.annotations.insert("pad", "x".repeat(bytes));
        Command::Create(orch_core::Object::from(ns))
    }

    /// A round's commands go in proposals of at most `PROPOSAL_REQUESTS_MAX` requests and
    /// `PROPOSAL_BYTES_MAX` bytes; one command too large for a proposal still goes, alone.
    #[test]
    fn a_round_s_commands_are_split_by_count_and_by_bytes() {
        let small: Vec<Command> = (0..PROPOSAL_REQUESTS_MAX + 5).map(|i| namespace(&format!("n{i}"), 0)).collect();
        assert_eq!(chunk_len(&small), PROPOSAL_REQUESTS_MAX);
        assert_eq!(chunk_len(&small[..7]), 7);
        let big: Vec<Command> = (0..8).map(|i| namespace(&format!("b{i}"), PROPOSAL_BYTES_MAX / 3)).collect();
        assert_eq!(chunk_len(&big), 2, "two fit within the bytes, the third does not");
        let huge = vec![namespace("h", PROPOSAL_BYTES_MAX + 1), namespace("s", 0)];
        assert_eq!(chunk_len(&huge), 1);
    }
}
