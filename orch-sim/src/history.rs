//! What a run records: the clients' operations, each replica's applications, samples of each
//! node's Raft metrics and state digest, the watchers' streams, and the liveness probes. The
//! checkers ([`crate::check`]) read it; tests feed them histories of their own.

use std::collections::BTreeMap;

/// A point in the run's order of events: every call and return of an operation takes the next
/// one, so `a < b` means `a` happened before `b`.
pub type Tick = u64;

/// The value of one simulated object: the writes that set its spec (a label) and its status
/// (a status message). Every write writes a value of its own, so a value names its write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Value {
    /// The write id that set the spec.
    pub spec: u64,
    /// The write id that set the status (0: never set).
    pub status: u64,
}

/// What a client asked of one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Create it with this value.
    Create(Value),
    /// Set its spec to `spec` if its value is `expect` (a compare-and-set on the revision read
    /// with that value).
    Update {
        /// The new spec write id.
        spec: u64,
        /// The value read before.
        expect: Value,
    },
    /// Set its status to `status` if its value is `expect`.
    Status {
        /// The new status write id.
        status: u64,
        /// The value read before.
        expect: Value,
    },
    /// Delete it.
    Delete,
    /// Read it (linearizably).
    Get,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpResult {
    /// The write was applied.
    Ok,
    /// Create: it existed.
    AlreadyExists,
    /// Update, status or delete: it did not exist.
    NotFound,
    /// Update or status: its value was not the one expected.
    Conflict,
    /// Get: what was read.
    Read(Option<Value>),
    /// A write that failed, timed out or lost its session: it may or may not have been
    /// applied, at any time after its call.
    Unknown,
}

/// One client operation on one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// The client.
    pub client: u64,
    /// The object.
    pub key: u32,
    /// What was asked.
    pub kind: OpKind,
    /// When it was called.
    pub call: Tick,
    /// When it returned (None: never, for an unknown outcome).
    pub ret: Option<Tick>,
    /// How it ended.
    pub result: OpResult,
}

/// A change to one object, as the state machine emitted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Added, Modified or Deleted.
    pub event: orch_core::watch::EventType,
    /// The object.
    pub key: u32,
    /// Its value after the change (for a deletion, its last value).
    pub value: Value,
}

/// One entry as one replica applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Application {
    /// The replica.
    pub node: u64,
    /// The log index.
    pub index: u64,
    /// The BLAKE3 digest of the entry's term and leader, its kind (blank, membership with its
    /// voter configurations and members, or application), and for an application entry its
    /// requests, outcomes and events.
    pub digest: [u8; 32],
    /// The requests it applied afresh (not answered from the session table): (client, serial).
    pub fresh: Vec<(u128, u64)>,
    /// Every request of the entry: (client, serial).
    pub requests: Vec<(u128, u64)>,
    /// The changes to simulated objects, in order.
    pub changes: Vec<Change>,
}

/// One committed entry's changes to the cluster's objects, as the first replica to apply it
/// emitted them (every replica applies the same entry at an index: the raft checker), and
/// when: the controllers' checkers ([`crate::check::controllers`]) rebuild every committed
/// state from these. Events (the `Event` kind) are left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The log index (every index appears: blank and membership entries with no changes).
    pub index: u64,
    /// The simulated time it was first applied, in milliseconds since the run began.
    pub at_ms: u64,
    /// The changes, in order.
    pub events: Vec<orch_core::WatchEvent>,
}

/// A node's metrics at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// The node.
    pub node: u64,
    /// Which start of the node (0: the first).
    pub incarnation: u64,
    /// The simulated time, in milliseconds since the run began.
    pub at_ms: u64,
    /// Its term.
    pub term: u64,
    /// Whether it considered itself the leader.
    pub leader: bool,
    /// Its commit index.
    pub commit: u64,
    /// Its applied index, and the digest of its state there.
    pub applied: (u64, [u8; 32]),
}

/// What a watcher saw, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchLog {
    /// It (re)started a watch after this revision.
    Resume(u64),
    /// The changes of one revision.
    Events(u64, Vec<Change>),
    /// Every change up to this revision was delivered.
    Progress(u64),
    /// The watch was refused or ended: expired. A relist follows.
    Expired,
    /// It listed the state at this revision (after an expiry, or at its start).
    Relisted(u64),
    /// The stream reported a gap.
    Gap(String),
}

/// A liveness probe: after every fault healed, a write was tried from `healed_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// When the faults healed.
    pub healed_ms: u64,
    /// When the probe's write was acknowledged (None: never, within the run).
    pub done_ms: Option<u64>,
}

/// Everything a run recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The clients' operations, in call order.
    pub ops: Vec<Op>,
    /// Every application on every replica, in the order they happened.
    pub applications: Vec<Application>,
    /// Every committed entry once, in index order.
    pub committed: Vec<Committed>,
    /// Metrics samples, in order.
    pub samples: Vec<Sample>,
    /// Per watcher, what it saw.
    pub watches: BTreeMap<u64, Vec<WatchLog>>,
    /// The liveness probes.
    pub probes: Vec<Probe>,
    /// Stale reads: (node, the revision it served), in order.
    pub stale_reads: Vec<(u64, u64)>,
    /// What the fault scheduler did, with the simulated milliseconds: to read a failing run.
    pub faults: Vec<(u64, String)>,
}
