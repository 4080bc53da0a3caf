//! [`ControlPlane`]: the embeddable handle on one control-plane node.
//!
//! It owns the node's RocksDB log, its state machine (snapshots in the data directory), its
//! Raft transport server, and a batcher that packs concurrent proposals into one log entry.
//!
//! **Serving after a restart.** Stale reads and watches wait for [`RecoveryGate`]: see
//! [`crate::gate`]. Linearizable reads always confirm leadership and wait for the commit index,
//! so they never need it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{
    ClientWriteError, ForwardReason, ForwardToLeader, InitializeError, LinearizableReadError, RaftError,
};
use openraft::raft::ReadPolicy;
use openraft::storage::RaftLogStorage;
use openraft::{ChangeMembers, SnapshotPolicy};
use orch_core::sessions::SharedSerials;
use orch_core::{ClientId, Command, Outcome, Request, State, WatchEvent, WatchFilter};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::clock::{Clock, SystemClock};
use crate::feed::{Expired, HistoryLimits};
use crate::gate::RecoveryGate;
use crate::grpc::{GrpcNetwork, RaftService, SNAPSHOT_CHUNK_BYTES_DEFAULT};
use crate::local::LocalRouter;
use crate::rocks::{ClosedProbe, RocksLogStore, SyncStats};
use crate::{Member, RaftNode, StateMachineStore, TypeConfig, entropy_seed, start_raft};
use orch_core::codec::ENTRY_BYTES_MAX;

/// The most requests packed into one log entry.
pub const BATCH_REQUESTS_MAX: usize = 1024;

// An entry the batcher packs must be one orch-core accepts whole.
const _: () = assert!(BATCH_REQUESTS_MAX <= orch_core::command::ENTRY_REQUESTS_MAX);

/// The most proposals waiting for the batcher; callers wait when it is full.
pub const PROPOSALS_PENDING_MAX: usize = 4096;

/// The most log entries a node has proposed and not yet seen committed.
pub const ENTRIES_IN_FLIGHT_MAX: usize = 8;

/// The most requests one call may propose.
pub const PROPOSAL_REQUESTS_MAX: usize = BATCH_REQUESTS_MAX;

/// The shortest interval between progress events of an idle watch.
pub const PROGRESS_INTERVAL_MIN: Duration = Duration::from_millis(10);

/// The leader's heartbeat interval by default (see [`Builder::timing`]).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(100);
/// The election timeout range by default (see [`Builder::timing`]): the failover time against
/// elections under load, measured in BENCHMARKS.md.
pub const DEFAULT_ELECTION_TIMEOUT: (Duration, Duration) = (Duration::from_millis(400), Duration::from_millis(800));

/// How long [`ControlPlane::transfer_leadership`] keeps trying.
pub const TRANSFER_WAIT: Duration = Duration::from_secs(10);

/// How long [`ControlPlane::shutdown`] waits for the log's database to close.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// How long a call waits for an election to produce a leader, or for a fresh leader's first
/// quorum acknowledgement.
pub const LEASE_WAIT: Duration = Duration::from_secs(5);

/// What went wrong, for a caller of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writes and linearizable reads go to the leader.
    #[error("not the leader; the leader is {}", match (leader, address) {
        (Some(id), Some(addr)) => format!("node {id} at {addr}"),
        (Some(id), None) => format!("node {id}"),
        _ => "unknown (an election is under way)".to_owned(),
    })]
    NotLeader {
        /// The leader's node id, if known.
        leader: Option<u64>,
        /// The leader's Raft address, if known.
        address: Option<String>,
        /// The leader's client API address, if known and it serves one.
        api_address: Option<String>,
    },
    /// The watch asked for events no longer kept.
    #[error(transparent)]
    Expired(#[from] Expired),
    /// A watch received entries that are not contiguous: a broken invariant of the feed,
    /// reported rather than skipped. Relist, then watch again.
    #[error("watch feed gap: entry {next} came after entry {after}; relist")]
    Gap {
        /// The last entry the watch had accounted for.
        after: u64,
        /// The entry that came next.
        next: u64,
    },
    /// The node restarted and has not caught up with the cluster yet.
    #[error("the node is catching up after a restart; it serves reads and watches once it has")]
    CatchingUp,
    /// A request broke a rule; the message names the field and the rule.
    #[error("{0}")]
    Invalid(String),
    /// The node's storage failed.
    #[error("storage: {0}")]
    Storage(#[from] std::io::Error),
    /// Raft failed (no quorum, a fatal error).
    #[error("raft: {0}")]
    Raft(String),
    /// The control plane was shut down.
    #[error("the control plane is shut down")]
    Shutdown,
}

fn not_leader(f: &ForwardToLeader<TypeConfig>) -> Error {
    not_leader_at(f.leader_id, f.leader_node.as_ref())
}

/// Prepares a fresh data directory to start from a backup: the state of `snapshot`
/// (`orch_core::State::to_snapshot` bytes, as `orchctl snapshot save` writes them) with
/// `members` as the voters. Give every member of the new cluster the same snapshot and
/// members, then start each with [`ControlPlane::builder`] on its directory (no
/// `initial_members` needed: the restored membership is the first configuration). Objects
/// keep their revisions; the log continues after the snapshot's revision.
///
/// # Errors
/// [`Error::Invalid`] when the directory holds data already, the members are empty, or the
/// snapshot does not verify; [`Error::Storage`] when writing fails.
pub async fn restore(
    data_dir: impl AsRef<Path>,
    snapshot: &[u8],
    members: BTreeMap<u64, Member>,
) -> Result<u64, Error> {
    let dir = data_dir.as_ref();
    for sub in ["log", "state"] {
        let path = dir.join(sub);
        if path.exists() && std::fs::read_dir(&path)?.next().is_some() {
            return Err(Error::Invalid(format!(
                "dataDir: Invalid value: {:?}: holds data already; restore into a fresh directory",
                dir.display()
            )));
        }
    }
    if members.is_empty() {
        return Err(Error::Invalid("members: Required value".to_owned()));
    }
    let state = State::from_snapshot(snapshot).map_err(|e| Error::Invalid(format!("snapshot: {e}")))?;
    let index = state.applied_index();
    // Every member computes the same log id from the same file: term 0, as before any leader.
    let log_id = openraft::LogId::new(openraft::impls::leader_id_adv::LeaderId { term: 0, node_id: 0 }, index);
    let voters = BTreeSet::from_iter(members.keys().copied());
    let membership =
        openraft::Membership::new(vec![voters], members).map_err(|e| Error::Invalid(format!("members: {e}")))?;
    let stored = openraft::StoredMembership::new(Some(log_id), membership);
    crate::state_machine::write_start_snapshot(&dir.join("state"), log_id, stored, snapshot)?;
    let mut log = RocksLogStore::open(&dir.join("log"))?;
    // The log starts after the snapshot: its entries count as purged.
    log.purge(log_id).await?;
    drop(log);
    Ok(index)
}

/// The voters of the configuration the cluster moves to (the newer half of a joint one).
fn staying_voters(m: &openraft::RaftMetrics<TypeConfig>) -> BTreeSet<u64> {
    m.membership_config.membership().get_joint_config().last().cloned().unwrap_or_default()
}

fn not_leader_at(leader: Option<u64>, member: Option<&Member>) -> Error {
    Error::NotLeader {
        leader,
        address: member.map(|m| m.addr.clone()),
        api_address: member.map(|m| m.api_addr.clone()).filter(|a| !a.is_empty()),
    }
}

/// How a node joins the cluster when its data directory is fresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Start a new cluster with these members, this node among them. Give the same members to
    /// every initial node (or to one, and let the others [`Bootstrap::Join`]).
    Initialize(BTreeMap<u64, Member>),
    /// Wait to be added by a member of an existing cluster ([`ControlPlane::add_member`]).
    Join,
    /// Start a new cluster of this node alone (others may be added later).
    Single,
}

/// When to snapshot and how much log to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotSettings {
    /// Build a snapshot after this many log entries since the last one.
    pub every_entries: u64,
    /// Keep this many entries behind a snapshot, for followers that lag a little.
    pub keep_entries: u64,
    /// The size of one chunk when a snapshot is sent to a follower.
    pub chunk_bytes: usize,
}

impl Default for SnapshotSettings {
    fn default() -> Self {
        Self { every_entries: 10_000, keep_entries: 1_000, chunk_bytes: SNAPSHOT_CHUNK_BYTES_DEFAULT }
    }
}

/// The settings of a control-plane node; build it with [`ControlPlane::builder`].
#[derive(Debug)]
pub struct Builder {
    id: u64,
    data_dir: PathBuf,
    listen: SocketAddr,
    listener: Option<std::net::TcpListener>,
    advertise: Option<String>,
    api_address: String,
    bootstrap: Option<Bootstrap>,
    heartbeat: Duration,
    election_timeout: (Duration, Duration),
    snapshot: SnapshotSettings,
    progress_interval: Duration,
    history: HistoryLimits,
    seed: Option<u64>,
    disk: Option<crate::crash::CrashDisk>,
    local: Option<LocalRouter>,
    apply_hook: Option<Hook>,
    clock: Arc<dyn Clock>,
}

/// An apply hook in the builder's settings.
struct Hook(crate::ApplyHook);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApplyHook")
    }
}

impl Builder {
    /// The address the Raft transport listens on (default `127.0.0.1:0`, any free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Serve the Raft transport on a socket bound beforehand (for example to learn every
    /// node's address before any starts, or from a service manager); overrides
    /// [`Builder::listen`].
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The address peers reach this node at (default: the bound listen address).
    pub fn advertise(mut self, addr: impl Into<String>) -> Self {
        self.advertise = Some(addr.into());
        self
    }

    /// The address this node's client API is served at, recorded in the membership so that
    /// a follower can point clients at the leader's API (default: none).
    pub fn api_address(mut self, addr: impl Into<String>) -> Self {
        self.api_address = addr.into();
        self
    }

    /// Start a new cluster of these members (ids to Raft addresses, or to [`Member`]s) if the
    /// data directory is fresh.
    pub fn initial_members<M: Into<Member>>(mut self, members: impl IntoIterator<Item = (u64, M)>) -> Self {
        self.bootstrap = Some(Bootstrap::Initialize(members.into_iter().map(|(id, m)| (id, m.into())).collect()));
        self
    }

    /// Wait to be added to an existing cluster if the data directory is fresh.
    pub fn join(mut self) -> Self {
        self.bootstrap = Some(Bootstrap::Join);
        self
    }

    /// Start a cluster of this node alone if the data directory is fresh. A fresh directory needs
    /// one of `single_node`, [`Builder::initial_members`] or [`Builder::join`]; a directory
    /// that holds a node already restarts without any.
    pub fn single_node(mut self) -> Self {
        self.bootstrap = Some(Bootstrap::Single);
        self
    }

    /// The leader's heartbeat interval and the election timeout range (default
    /// [`DEFAULT_HEARTBEAT`], 100 ms, and [`DEFAULT_ELECTION_TIMEOUT`], 400-800 ms). openraft's
    /// leader lease equals the maximum, so a crashed leader is replaced after 1.6-1.8 times it:
    /// measured on a 2-core machine (`benches/benches/failover.rs`, kill -9 of the leader, 8
    /// kills), a median of 1.32 s at 400-800 ms against 3.22 s at 1-2 s (the earlier
    /// default), with no election at 256 proposers (`control_plane` bench) down to 250-500 ms
    /// (BENCHMARKS.md). The heartbeat is also the deadline of an append without its bytes.
    pub fn timing(mut self, heartbeat: Duration, election_timeout: (Duration, Duration)) -> Self {
        self.heartbeat = heartbeat;
        self.election_timeout = election_timeout;
        self
    }

    /// When to snapshot and how much log to keep.
    pub fn snapshots(mut self, settings: SnapshotSettings) -> Self {
        self.snapshot = settings;
        self
    }

    /// How often a watch receives a progress event at the least, busy or idle (default 1 s).
    pub fn progress_interval(mut self, interval: Duration) -> Self {
        self.progress_interval = interval;
        self
    }

    /// How much history of watch events this node keeps for watches that start in the past
    /// or resume (default: [`HistoryLimits::default`]).
    pub fn watch_history(mut self, limits: HistoryLimits) -> Self {
        self.history = limits;
        self
    }

    /// The seed of the node's random numbers (default: from the operating system): openraft's
    /// and the node's own client id. Give each start of a node its own seed: a restart with the
    /// same one reuses the client id, whose serials start again at 1 and would be answered the
    /// outcomes the table kept for the earlier start's.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The clock entries are stamped with (default: the system clock); a simulation gives
    /// each node its own.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Keep the Raft log and the state machine's latest snapshot on a simulated disk that
    /// loses what it did not sync, instead of RocksDB and a file in the data directory (crash
    /// tests and the simulator; the data directory is not used). Start a restarted node on the
    /// same disk after [`crate::crash::CrashDisk::crash`].
    pub fn crash_disk(mut self, disk: crate::crash::CrashDisk) -> Self {
        self.disk = Some(disk);
        self
    }

    /// Calls `hook` with every entry the node applies (the simulator's record of what each
    /// replica applied); see [`crate::ApplyHook`].
    pub fn apply_hook(mut self, hook: crate::ApplyHook) -> Self {
        self.apply_hook = Some(Hook(hook));
        self
    }

    /// Reach the other nodes through an in-process router instead of gRPC over TCP (the
    /// simulator, tests of many nodes in one process): no socket is bound and no server
    /// runs. The node registers itself on the router when it starts (its address, unless
    /// [`Builder::advertise`] names one, is `local-<id>`) and unregisters when it shuts down.
    pub fn local(mut self, router: LocalRouter) -> Self {
        self.local = Some(router);
        self
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |field: &str, value: String, rule: &str| {
            Err(Error::Invalid(format!("{field}: Invalid value: {value}: {rule}")))
        };
        if self.id == 0 {
            return invalid("id", "0".to_owned(), "must be >= 1");
        }
        if self.progress_interval < PROGRESS_INTERVAL_MIN {
            return invalid("progressInterval", format!("{:?}", self.progress_interval), "must be at least 10ms");
        }
        if self.snapshot.every_entries == 0 {
            return invalid("snapshots.everyEntries", "0".to_owned(), "must be >= 1");
        }
        if self.snapshot.chunk_bytes == 0 {
            return invalid("snapshots.chunkBytes", "0".to_owned(), "must be >= 1");
        }
        if self.history.bytes_max == 0 {
            return invalid("watchHistory.bytesMax", "0".to_owned(), "must be >= 1");
        }
        if self.history.age_ms < 0 {
            return invalid("watchHistory.ageMs", self.history.age_ms.to_string(), "must be >= 0");
        }
        Ok(())
    }

    fn raft_config(&self) -> Result<openraft::Config, Error> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = openraft::Config {
            cluster_name: "orch".to_owned(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_timeout.0),
            election_timeout_max: ms(self.election_timeout.1),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot.every_entries),
            max_in_snapshot_log_to_keep: self.snapshot.keep_entries,
            // A node cut off from the others does not disrupt the leader when it returns.
            enable_pre_vote: Some(true),
            // A restarted leader holds an election like any node, never resumes its old term:
            // its log syncs in groups, so a power cut can take back entries of its own term
            // that followers already hold (and applied); resumed, it would issue other entries
            // under the same log ids, and the replicas would diverge (found by orch-sim, seeds
            // 68 and 78; openraft restores leadership by default).
            enable_leader_restore: Some(false),
            ..openraft::Config::default()
        };
        config.validate().map_err(|e| Error::Invalid(format!("raft timing: {e}")))
    }

    /// Initializes a fresh node's cluster as configured (nothing for a node that joins, or one
    /// initialized before).
    async fn bootstrap(&self, raft: &RaftNode, address: &str) -> Result<(), Error> {
        if raft.is_initialized().await.map_err(|e| Error::Raft(e.to_string()))? {
            return Ok(());
        }
        let members = match &self.bootstrap {
            // A fresh directory does not silently become a cluster of one.
            None => {
                return Err(Error::Invalid(
                    "bootstrap: Required value: a fresh data directory starts a cluster (single_node() or \
                     initial_members(..)) or joins one (join())"
                        .to_owned(),
                ));
            }
            Some(Bootstrap::Single) => {
                BTreeMap::from([(self.id, Member::new(address.to_owned(), self.api_address.clone()))])
            }
            Some(Bootstrap::Initialize(members)) => members.clone(),
            Some(Bootstrap::Join) => return Ok(()),
        };
        match raft.initialize(members).await {
            // Another initial member initialized first and this node heard from it: the cluster
            // is forming, which is what initializing is for.
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(Error::Raft(e.to_string())),
        }
    }

    /// Opens the data directory, starts the node and its transport server, and (for a fresh
    /// directory) bootstraps as configured. A start that fails leaves nothing running.
    ///
    /// # Errors
    /// When the settings are invalid, the storage cannot be opened, or the address not bound.
    pub async fn start(mut self) -> Result<ControlPlane, Error> {
        self.validate()?;
        let raft_config = Arc::new(self.raft_config()?);
        let sm = match &self.disk {
            Some(disk) => StateMachineStore::on_crash_disk(disk, self.history)?,
            None => StateMachineStore::open_with(&self.data_dir.join("state"), self.history)?,
        };
        if let Some(Hook(hook)) = self.apply_hook.take() {
            sm.set_apply_hook(hook);
        }
        let seed = self.seed.unwrap_or_else(entropy_seed);
        let (raft, gate, closed, sync_stats, transport) = match self.local.take() {
            Some(router) => {
                let address = self.advertise.clone().unwrap_or_else(|| format!("local-{}", self.id));
                let handle = router.for_node(self.id);
                let (raft, gate, closed, stats) = self.launch(handle.clone(), &raft_config, &sm, seed).await?;
                let registration = router.register_handle(&handle, raft.clone());
                (raft, gate, closed, stats, Transport::Local { router, registration, address })
            }
            None => {
                let listener = match self.listener.take() {
                    Some(listener) => {
                        listener.set_nonblocking(true)?;
                        tokio::net::TcpListener::from_std(listener)?
                    }
                    None => tokio::net::TcpListener::bind(self.listen).await?,
                };
                let local = listener.local_addr()?;
                let address = self.advertise.clone().unwrap_or_else(|| local.to_string());
                let network = GrpcNetwork::new(self.id, self.snapshot.chunk_bytes);
                let (raft, gate, closed, stats) = self.launch(network, &raft_config, &sm, seed).await?;
                let (stop, stop_rx) = oneshot::channel::<()>();
                let router =
                    tonic::transport::Server::builder().add_service(RaftService::server(raft.clone(), sm.clone()));
                let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
                let server = tokio::spawn(async move {
                    let _ = router.serve_with_incoming_shutdown(incoming, async { drop(stop_rx.await) }).await;
                });
                (raft, gate, closed, stats, Transport::Grpc { stop, server, address })
            }
        };
        let address = transport.address().to_owned();

        if let Err(e) = self.bootstrap(&raft, &address).await {
            // Nothing of a failed start keeps running: Raft and the server stop, and the log is
            // closed before the error returns (dropped handles would stop them too, but later,
            // racing a caller that starts again on the same directory).
            let _ = raft.shutdown().await;
            transport.stop(self.id).await;
            log_closed(&closed).await;
            return Err(e);
        }

        let (proposals, rx) = mpsc::channel(PROPOSALS_PENDING_MAX);
        let batcher = tokio::spawn(batch(self.id, raft.clone(), rx, Arc::clone(&self.clock)));
        // Seeded, the node's own client id follows from the seed, so a run replays exactly.
        let client_low = self.seed.map_or_else(entropy_seed, |s| crate::local::mix(s ^ CLIENT_ID_SALT));
        let client = ClientId((u128::from(self.id) << 64) | u128::from(client_low));
        Ok(ControlPlane {
            inner: Arc::new(Inner {
                id: self.id,
                address,
                raft,
                sm,
                proposals,
                client,
                serials: SharedSerials::default(),
                proposers: std::sync::atomic::AtomicU64::new(0),
                clock: Arc::clone(&self.clock),
                gate,
                closed,
                sync_stats,
                progress_interval: self.progress_interval,
                tasks: std::sync::Mutex::new(Some((transport, batcher))),
            }),
        })
    }
}

impl Builder {
    /// Opens the log (RocksDB in the data directory, or the crash disk) and starts Raft on it
    /// with `network`.
    async fn launch<N>(
        &mut self,
        network: N,
        config: &Arc<openraft::Config>,
        sm: &StateMachineStore,
        seed: u64,
    ) -> Result<(RaftNode, RecoveryGate, ClosedProbe, Arc<SyncStats>), Error>
    where
        N: openraft::network::RaftNetworkFactory<TypeConfig>,
        N::Network: openraft::network::NetSnapshot<TypeConfig, SnapshotData = crate::SnapshotBytes>,
    {
        let config = Arc::clone(config);
        let started = match self.disk.clone() {
            None => {
                let mut log = RocksLogStore::open(&self.data_dir.join("log"))?;
                let gate = RecoveryGate::read(&mut log).await?;
                let (closed, sync_stats) = (log.closed_probe(), log.stats());
                let raft = start_raft(self.id, config, network, log, sm.clone(), seed).await;
                (raft, gate, closed, sync_stats)
            }
            Some(disk) => {
                let mut log = disk.store();
                let gate = RecoveryGate::read(&mut log).await?;
                let raft = start_raft(self.id, config, network, log, sm.clone(), seed).await;
                (raft, gate, ClosedProbe::closed(), Arc::default())
            }
        };
        let (raft, gate, closed, sync_stats) = started;
        Ok((raft.map_err(|e| Error::Raft(e.to_string()))?, gate, closed, sync_stats))
    }
}

/// How a node reaches its peers, and what stops it.
enum Transport {
    /// gRPC over TCP: the server task and what stops it.
    Grpc { stop: oneshot::Sender<()>, server: tokio::task::JoinHandle<()>, address: String },
    /// An in-process router, and this node's registration on it.
    Local { router: LocalRouter, registration: u64, address: String },
}

impl Transport {
    fn address(&self) -> &str {
        match self {
            Self::Grpc { address, .. } | Self::Local { address, .. } => address,
        }
    }

    /// Stops serving peers.
    async fn stop(self, id: u64) {
        match self {
            Self::Grpc { stop, server, .. } => {
                let _ = stop.send(());
                let _ = server.await;
            }
            Self::Local { router, registration, .. } => {
                router.unregister_if(id, registration);
            }
        }
    }
}

struct Proposal {
    /// Moved into the entry by [`join`].
    requests: Vec<Request>,
    /// How many requests the proposal holds: its share of the entry's outcomes.
    count: usize,
    /// The encoded size of `requests` as an entry of their own (an upper bound of what they
    /// add to a shared entry).
    bytes: usize,
    reply: oneshot::Sender<Result<Vec<Outcome>, Error>>,
}

/// Packs waiting proposals into entries; at most [`ENTRIES_IN_FLIGHT_MAX`] entries in flight,
/// so that under load proposals gather while earlier entries commit.
async fn batch(id: u64, raft: RaftNode, mut rx: mpsc::Receiver<Proposal>, clock: Arc<dyn Clock>) {
    let in_flight = Arc::new(Semaphore::new(ENTRIES_IN_FLIGHT_MAX));
    let mut carry: Option<Proposal> = None;
    loop {
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else { return };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut total = first.requests.len();
        let mut bytes = first.bytes;
        let mut group = vec![first];
        while let Ok(next) = rx.try_recv() {
            if total + next.requests.len() > BATCH_REQUESTS_MAX || bytes + next.bytes > ENTRY_BYTES_MAX {
                carry = Some(next);
                break;
            }
            total += next.requests.len();
            bytes += next.bytes;
            group.push(next);
        }
        let (raft, clock) = (raft.clone(), Arc::clone(&clock));
        tokio::spawn(async move {
            let timestamp_ms = clock.now_ms();
            let entry = join(timestamp_ms, &mut group);
            // Each proposal passed the encoder's checks alone; together they may still claim
            // more decoding memory than the entry's length allows. Then each goes alone.
            if group.len() == 1 || orch_core::codec::encode_entry(&entry).is_ok() {
                let result = write(id, &raft, entry).await;
                drop(permit);
                reply(group, result);
            } else {
                let mut requests = entry.requests.into_iter();
                for mut p in group {
                    p.requests = requests.by_ref().take(p.count).collect();
                    let mut one = vec![p];
                    let entry = join(timestamp_ms, &mut one);
                    let result = write(id, &raft, entry).await;
                    reply(one, result);
                }
                drop(permit);
            }
        });
    }
}

/// One entry of the proposals' requests, in order (moving them out of the proposals).
fn join(timestamp_ms: i64, group: &mut [Proposal]) -> orch_core::Entry {
    let mut requests = Vec::with_capacity(group.iter().map(|p| p.requests.len()).sum());
    for p in group.iter_mut() {
        requests.append(&mut p.requests);
    }
    orch_core::Entry::new(timestamp_ms, requests)
}

/// Answers each proposal of an entry with its share of the outcomes.
fn reply(group: Vec<Proposal>, result: Result<Vec<Outcome>, Error>) {
    match result {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for p in group {
                let _ = p.reply.send(Ok(outcomes.by_ref().take(p.count).collect()));
            }
        }
        Err(e) => {
            for p in group {
                let _ = p.reply.send(Err(clone_error(&e)));
            }
        }
    }
}

fn clone_error(e: &Error) -> Error {
    match e {
        Error::NotLeader { leader, address, api_address } => {
            Error::NotLeader { leader: *leader, address: address.clone(), api_address: api_address.clone() }
        }
        Error::Shutdown => Error::Shutdown,
        other => Error::Raft(other.to_string()),
    }
}

/// Writes one entry; a fresh leader refuses writes until a quorum acknowledged its lease, so
/// that refusal is waited out (briefly) rather than reported.
async fn write(id: u64, raft: &RaftNode, entry: orch_core::Entry) -> Result<Vec<Outcome>, Error> {
    let deadline = tokio::time::Instant::now() + LEASE_WAIT;
    loop {
        let acked = raft.metrics().borrow_watched().last_quorum_acked;
        match raft.client_write(entry.clone()).await {
            Ok(response) => return Ok(response.data.outcomes),
            // A leader whose lease is not valid yet (fresh, or not heard from a quorum lately)
            // answers LeaseExpired with no leader id; older openraft named itself.
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                if (f.leader_id == Some(id) || f.reason == ForwardReason::LeaseExpired)
                    && tokio::time::Instant::now() < deadline =>
            {
                let wait = raft.wait(Some(deadline - tokio::time::Instant::now()));
                let _ = wait
                    .metrics(
                        |m| m.last_quorum_acked != acked || m.current_leader != Some(id),
                        "a quorum acknowledgement, or another leader",
                    )
                    .await;
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => return Err(not_leader(&f)),
            Err(e) => return Err(Error::Raft(e.to_string())),
        }
    }
}

/// Refuses a call of more than [`PROPOSAL_REQUESTS_MAX`] requests.
fn check_request_count(n: usize) -> Result<(), Error> {
    if n > PROPOSAL_REQUESTS_MAX {
        return Err(Error::Invalid(format!(
            "requests: Too many: {n}: must have at most {PROPOSAL_REQUESTS_MAX} items"
        )));
    }
    Ok(())
}

/// Waits (up to [`SHUTDOWN_WAIT`]) until the log database is closed: openraft's tasks drop their
/// handles on it as they wind down after a shutdown. False when it is still open.
async fn log_closed(closed: &ClosedProbe) -> bool {
    let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
    while !closed.is_closed() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Mixed into the seed for the node's own client id, so that it differs from openraft's draws.
const CLIENT_ID_SALT: u64 = 0x6f72_6368_636c_6964;

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Consistency {
    /// Reflects every write acknowledged before the read began (the leader confirms it still
    /// leads with a quorum, ReadIndex, and waits until it applied that far).
    #[default]
    Linearizable,
    /// This replica's current state, which may lag the leader; any node serves it.
    Stale,
}

/// One item of a watch stream.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchItem {
    /// The committed changes of one revision (one log entry) that match the filter, in order:
    /// never split, so a consumer that resumes after `revision` misses nothing of it.
    Events {
        /// The revision (log index) they share.
        revision: u64,
        /// The changes, at least one.
        events: Vec<WatchEvent>,
    },
    /// Every matching change up to this revision has been delivered (a bookmark to resume
    /// from).
    Progress {
        /// The revision the stream has reached.
        revision: u64,
    },
}

/// A stream of committed events; see [`ControlPlane::watch`].
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchItem, Error>> + Send>>;

/// The snapshots a node installed from the leader since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotInstalls {
    /// All of them.
    pub all: u64,
    /// Those installed while a watch was live on the node (it ended with `Expired` unless it
    /// had seen everything the snapshot covers).
    pub under_watch: u64,
}

/// The members of the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    /// Voters by node id.
    pub voters: BTreeMap<u64, Member>,
    /// Learners (replicas that do not vote yet) by node id.
    pub learners: BTreeMap<u64, Member>,
}

/// What a node reports about itself and the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metrics {
    /// This node.
    pub id: u64,
    /// The current term.
    pub term: u64,
    /// The leader, if known.
    pub leader: Option<u64>,
    /// Leader, Follower, Candidate or Learner.
    pub role: String,
    /// The index of the last committed entry this node knows of and holds in its log
    /// (openraft's local committed index: it never goes back while the node runs; the
    /// leader's view of the cluster's commit, which openraft forgets at a change of leader,
    /// would drop to 0 there).
    pub commit_index: u64,
    /// The index of the last entry applied to this node's state.
    pub applied_index: u64,
    /// The index of the last entry in this node's log.
    pub last_log_index: u64,
    /// The index covered by this node's latest snapshot.
    pub snapshot_index: u64,
    /// The index up to which this node's log was purged (compacted into a snapshot).
    pub purged_index: u64,
}

struct Inner {
    id: u64,
    address: String,
    raft: RaftNode,
    sm: StateMachineStore,
    proposals: mpsc::Sender<Proposal>,
    client: ClientId,
    /// This node's own client's serials awaiting outcomes ([`ControlPlane::propose`]).
    serials: SharedSerials,
    /// The proposers made so far ([`ControlPlane::proposer`]).
    proposers: std::sync::atomic::AtomicU64,
    clock: Arc<dyn Clock>,
    gate: RecoveryGate,
    closed: ClosedProbe,
    sync_stats: Arc<SyncStats>,
    progress_interval: Duration,
    /// The transport and the batcher, until shutdown.
    tasks: std::sync::Mutex<Option<(Transport, tokio::task::JoinHandle<()>)>>,
}

/// A proposer of its own on a control plane ([`ControlPlane::proposer`]): a client id and a
/// window of serials ([`orch_core::sessions::SESSION_PENDING_MAX`] awaiting outcomes) that
/// no other proposer shares, so that its proposals neither wait for those of the node's other
/// proposers nor hold them back, as each Kubernetes controller is a client of its own. Each
/// leader loop proposes through one for the term. Clones share the client.
#[derive(Clone)]
pub struct Proposer {
    cp: ControlPlane,
    client: ClientId,
    serials: SharedSerials,
}

impl Proposer {
    /// Its client id.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// As [`ControlPlane::propose_retrying`], under this proposer's client id and serials.
    ///
    /// # Errors
    /// As [`ControlPlane::propose_retrying`].
    pub async fn propose_retrying(&self, commands: Vec<Command>, attempts: usize) -> Result<Vec<Outcome>, Error> {
        self.cp.propose_as(self.client, &self.serials, commands, attempts).await
    }
}

/// A handle on one control-plane node. Clones share the node.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

impl ControlPlane {
    /// The settings of node `id` keeping its data in `data_dir`: a single-node cluster on
    /// `127.0.0.1` (any free port) unless told otherwise.
    pub fn builder(id: u64, data_dir: impl AsRef<Path>) -> Builder {
        Builder {
            id,
            data_dir: data_dir.as_ref().to_path_buf(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            listener: None,
            advertise: None,
            api_address: String::new(),
            bootstrap: None,
            heartbeat: DEFAULT_HEARTBEAT,
            election_timeout: DEFAULT_ELECTION_TIMEOUT,
            snapshot: SnapshotSettings::default(),
            progress_interval: Duration::from_secs(1),
            history: HistoryLimits::default(),
            seed: None,
            disk: None,
            local: None,
            apply_hook: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// The embedded default: a single-node control plane keeping its data in `data_dir`.
    ///
    /// # Errors
    /// When the storage cannot be opened.
    pub async fn open(data_dir: impl AsRef<Path>) -> Result<Self, Error> {
        Self::builder(1, data_dir).single_node().start().await
    }

    /// The clock this node stamps its entries with (and its leader-only loops read).
    pub fn clock(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.inner.clock)
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The address peers reach this node's Raft transport at.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// Proposes commands as this control plane's own client, with fresh serials; the outcomes
    /// come back in order.
    ///
    /// # Errors
    /// [`Error::NotLeader`] on a follower; [`Error::Raft`] when the entry could not commit (it may
    /// still commit later: a caller that retries should use [`ControlPlane::propose_retrying`],
    /// or [`ControlPlane::submit`] with its own client id and serials, which the state machine
    /// deduplicates).
    pub async fn propose(&self, commands: Vec<Command>) -> Result<Vec<Outcome>, Error> {
        self.propose_retrying(commands, 1).await
    }

    /// As [`ControlPlane::propose`], retrying up to `attempts` times in all while the outcome
    /// is unknown ([`Error::Raft`]: the entry may or may not commit), with the same serials
    /// marked a retry, so the commands are applied at most once and their outcomes come back
    /// when an attempt gets them. Any other error ends it.
    ///
    /// # Errors
    /// As [`ControlPlane::propose`]: the first attempt's error that left the outcome unknown,
    /// if one did (then a later attempt's refusal, [`Error::NotLeader`] say, does not mean
    /// nothing was proposed), else the last attempt's.
    pub async fn propose_retrying(&self, commands: Vec<Command>, attempts: usize) -> Result<Vec<Outcome>, Error> {
        self.propose_as(self.inner.client, &self.inner.serials, commands, attempts).await
    }

    /// A proposer with a client id of its own ([`Proposer`]); each call makes another.
    pub fn proposer(&self) -> Proposer {
        let n = self.inner.proposers.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        // Beside the node's own client: the same node id, its low half mixed with the count
        // (so seeded runs replay the same ids).
        let own = self.inner.client.0;
        let low = crate::local::mix((own as u64) ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let client = ClientId((own >> 64 << 64) | u128::from(low));
        Proposer { cp: self.clone(), client, serials: SharedSerials::default() }
    }

    async fn propose_as(
        &self,
        client: ClientId,
        serials: &SharedSerials,
        commands: Vec<Command>,
        attempts: usize,
    ) -> Result<Vec<Outcome>, Error> {
        check_request_count(commands.len())?;
        // Serials awaiting their outcomes until this call returns (or is cancelled): the
        // table keeps every outcome from the lowest of them on, however the entries of
        // concurrent callers are ordered in the log.
        let awaiting = serials.begin(commands.len() as u64).await;
        let mut requests: Vec<Request> = commands
            .into_iter()
            .zip(awaiting.serials())
            .map(|(command, serial)| Request {
                client,
                serial,
                acked_below: awaiting.acked_below(),
                retry: false,
                command,
            })
            .collect();
        let mut attempt = 1;
        // The first error that left the outcome unknown: reported over a later attempt's
        // refusal, which says nothing of the earlier attempts.
        let mut unknown: Option<Error> = None;
        let outcomes = loop {
            match self.submit(requests.clone()).await {
                Err(e @ Error::Raft(_)) if attempt < attempts => {
                    unknown.get_or_insert(e);
                    attempt += 1;
                    for request in &mut requests {
                        request.retry = true;
                    }
                }
                Ok(outcomes) => break Ok(outcomes),
                Err(e) => break Err(unknown.take().unwrap_or(e)),
            }
        };
        drop(awaiting);
        outcomes
    }

    /// Proposes requests that carry their own client id and serial: a retried request (same
    /// client, same serial) is applied at most once and answers the first outcome.
    ///
    /// # Errors
    /// As [`ControlPlane::propose`], and [`Error::Invalid`] for more than
    /// [`PROPOSAL_REQUESTS_MAX`] requests.
    pub async fn submit(&self, requests: Vec<Request>) -> Result<Vec<Outcome>, Error> {
        check_request_count(requests.len())?;
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        self.await_leader().await;
        self.check_leader()?;
        // Admission: what apply would refuse without the state, and what would not decode, is
        // answered here and never becomes an entry.
        let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(requests.len());
        let mut admitted = Vec::with_capacity(requests.len());
        for request in requests {
            match orch_core::admit::check_request(&request) {
                Ok(()) => {
                    outcomes.push(None);
                    admitted.push(request);
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        if !admitted.is_empty() {
            // The largest timestamp, so that the size is an upper bound.
            let alone = orch_core::Entry::new(i64::MAX, admitted);
            let bytes = match orch_core::codec::encode_entry(&alone) {
                Ok(bytes) => bytes.len(),
                Err(orch_core::codec::CodecError::TooLarge { len, max }) => {
                    return Err(Error::Invalid(format!(
                        "requests: Too long: {len} bytes: must have at most {max} bytes (one log entry); \
                         propose fewer or smaller objects at once"
                    )));
                }
                Err(e) => return Err(Error::Invalid(format!("requests: Invalid value: {e}"))),
            };
            let (reply, rx) = oneshot::channel();
            let count = alone.requests.len();
            let proposal = Proposal { requests: alone.requests, count, bytes, reply };
            self.inner.proposals.send(proposal).await.map_err(|_| Error::Shutdown)?;
            let mut applied = rx.await.map_err(|_| Error::Shutdown)??.into_iter();
            for slot in outcomes.iter_mut().filter(|o| o.is_none()) {
                *slot = applied.next();
            }
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| Error::Raft("the entry answered fewer outcomes than it had requests".into())))
            .collect()
    }

    /// Waits for a leader ([`ControlPlane::await_leader`]), then confirms this node leads
    /// (ReadIndex).
    async fn await_leader_then_read_index(
        &self,
    ) -> Result<(), RaftError<TypeConfig, LinearizableReadError<TypeConfig>>> {
        self.await_leader().await;
        self.inner.raft.ensure_linearizable(ReadPolicy::ReadIndex).await.map(drop)
    }

    /// Waits (up to [`LEASE_WAIT`]) while an election is under way and no leader is known, so
    /// that a node that just started answers its first calls rather than "no leader".
    async fn await_leader(&self) {
        let wait = self.inner.raft.wait(Some(LEASE_WAIT));
        let _ = wait.metrics(|m| m.current_leader.is_some(), "a leader").await;
    }

    /// Runs `f` on the cluster state at the chosen consistency. `f` runs on a copy of the
    /// state (taken in constant time), so a long read does not hold up apply; it runs on the
    /// caller's task, so a read of seconds belongs on a blocking thread with
    /// [`ControlPlane::state`].
    ///
    /// # Errors
    /// [`Error::NotLeader`] for a linearizable read on a follower; [`Error::CatchingUp`] for a
    /// stale read on a node that restarted and has not caught up yet.
    pub async fn read<T>(&self, consistency: Consistency, f: impl FnOnce(&State) -> T) -> Result<T, Error> {
        Ok(f(&self.state(consistency).await?))
    }

    /// Whether this node leads, by its own view (which a deposed leader may hold for a moment):
    /// the check [`ControlPlane::submit`] makes before proposing.
    ///
    /// # Errors
    /// [`Error::NotLeader`], naming the leader and its addresses when known.
    pub fn check_leader(&self) -> Result<(), Error> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        if m.current_leader == Some(self.inner.id) {
            return Ok(());
        }
        let member = m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l));
        Err(not_leader_at(m.current_leader, member))
    }

    /// Whether this node leads and a quorum acknowledged it within the shortest election
    /// timeout: for what the leader decides without the log (node heartbeats), which a leader
    /// cut off from its peers must not take while another is elected.
    ///
    /// # Errors
    /// [`Error::NotLeader`]: naming the leader when another leads; naming none when this node
    /// believes it leads but its lease is not fresh (the caller tries the other servers).
    pub fn check_lease(&self) -> Result<(), Error> {
        self.check_leader()?;
        let lease = Duration::from_millis(self.inner.raft.config().election_timeout_min);
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        // A lone voter is its own quorum (openraft notes no acknowledgement while it is idle).
        let alone = m.membership_config.membership().voter_ids().eq([self.inner.id]);
        if alone || m.last_quorum_acked.is_some_and(|at| openraft::Instant::elapsed(&at.into_inner()) < lease) {
            return Ok(());
        }
        Err(Error::NotLeader { leader: None, address: None, api_address: None })
    }

    /// A copy of the cluster state at the chosen consistency, taken in constant time (the
    /// state's maps are persistent: the copy shares them, and apply copies only what it
    /// changes while the copy lives).
    ///
    /// # Errors
    /// As [`ControlPlane::read`].
    pub async fn state(&self, consistency: Consistency) -> Result<State, Error> {
        match consistency {
            // A node that just (re)started holds an election first (a restarted leader never
            // resumes its term): its first reads wait for it, as writes do.
            Consistency::Linearizable => match self.await_leader_then_read_index().await {
                Ok(_) => {}
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => return Err(not_leader(&f)),
                Err(e) => return Err(Error::Raft(e.to_string())),
            },
            Consistency::Stale => {
                if !self.inner.gate.open(&self.inner.raft) {
                    return Err(Error::CatchingUp);
                }
            }
        }
        Ok(self.inner.sm.state())
    }

    /// A stream of the committed events after `from_revision` (0: from now) that match
    /// `filter`, in revision order, with no gap and no duplicate, on any replica. Each item
    /// holds all the matching events of one revision ([`WatchItem::Events`]), or is a
    /// [`WatchItem::Progress`]: one right after the backlog (the revision the stream has
    /// reached; for a watch from now, the revision it started at), then at least every
    /// progress interval, busy or idle. A revision older than this replica's horizon is
    /// refused with [`Error::Expired`] (relist, then watch from the list's revision); a
    /// stream whose replica installs a snapshot ends with [`Error::Expired`]. A consumer that
    /// reads slowly continues from the history, which keeps memory bounded, and expires only
    /// if the history no longer reaches back to it.
    ///
    /// # Errors
    /// [`Error::Expired`], or [`Error::CatchingUp`] right after a restart.
    pub fn watch(&self, from_revision: u64, filter: WatchFilter) -> Result<WatchStream, Error> {
        if !self.inner.gate.open(&self.inner.raft) {
            return Err(Error::CatchingUp);
        }
        let from = (from_revision > 0).then_some(from_revision);
        Ok(crate::watch::stream(self.inner.sm.feed(), from, filter, self.inner.progress_interval)?)
    }

    /// A copy of the state as this replica applied it, whether or not it serves reads yet
    /// (after a restart it may not: [`Error::CatchingUp`]). For tests and the simulator's
    /// checkers; clients read with [`ControlPlane::state`].
    pub fn applied_state(&self) -> State {
        self.inner.sm.state()
    }

    /// The oldest revision a watch may start from on this node, and the events and bytes its
    /// watch history holds.
    pub fn watch_history(&self) -> (u64, usize, usize) {
        let (events, bytes) = self.inner.sm.watch_history_held();
        (self.inner.sm.watch_horizon(), events, bytes)
    }

    /// How many snapshots this node installed from the leader since it started (each ends
    /// the watches that had not reached the snapshot's index: they relist), and how many of
    /// them found a watch live on this node.
    pub fn snapshot_installs(&self) -> SnapshotInstalls {
        let (all, under_watch) = self.inner.sm.snapshot_installs();
        SnapshotInstalls { all, under_watch }
    }

    /// The cluster's members as this node knows them.
    pub fn members(&self) -> Members {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let mut members = Members::default();
        for (id, node) in membership.nodes() {
            let map = if voters.contains(id) { &mut members.voters } else { &mut members.learners };
            map.insert(*id, node.clone());
        }
        members
    }

    /// Adds node `id` (its Raft address, or a [`Member`]): first as a learner that catches up,
    /// then as a voter. A leader that a membership change under way leaves out hands
    /// leadership to a voter that stays first and answers [`Error::NotLeader`] naming it.
    ///
    /// # Errors
    /// [`Error::NotLeader`] on a follower, and on a leader the change under way leaves out;
    /// [`Error::Raft`] when the change fails, or leadership could not be handed over.
    pub async fn add_member(&self, id: u64, member: impl Into<Member>) -> Result<(), Error> {
        let node = member.into();
        if self.leads_but_leaves() {
            return Err(self.hand_over().await);
        }
        self.change(self.inner.raft.add_learner(id, node, true).await)?;
        // The learner's catch-up takes a while: leadership may have moved and come back.
        if self.leads_but_leaves() {
            return Err(self.hand_over().await);
        }
        self.change(self.inner.raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await)
    }

    /// Removes node `id` from the cluster, a voter or a learner (one that never finished
    /// catching up, say). The leader removing itself, or a leader that a membership change
    /// under way leaves out, hands leadership to a voter that stays first and answers
    /// [`Error::NotLeader`] naming it: ask that one.
    ///
    /// # Errors
    /// [`Error::NotLeader`] on a follower, on the leader asked to remove itself, and on a
    /// leader the change under way leaves out;
    /// [`Error::Invalid`] when `id` is no member (the leader's view, confirmed by a quorum), or
    /// the only voter; [`Error::Raft`] when the change fails, or leadership could not be
    /// handed over.
    pub async fn remove_member(&self, id: u64) -> Result<(), Error> {
        if (id == self.inner.id && self.metrics().leader == Some(self.inner.id)) || self.leads_but_leaves() {
            return Err(self.hand_over().await);
        }
        let mut members = self.members();
        if !members.voters.contains_key(&id)
            && !members.learners.contains_key(&id)
            && self.metrics().leader == Some(self.inner.id)
        {
            // "No such member" is a definite answer: only from a leader that a quorum confirms
            // (a deposed one that has not heard of the new term may miss a member added since),
            // and from its view once it applied what it committed.
            match self.await_leader_then_read_index().await {
                Ok(()) => members = self.members(),
                Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => return Err(not_leader(&f)),
                Err(e) => return Err(Error::Raft(e.to_string())),
            }
        }
        // The read above waited on a quorum: leadership may have moved and come back.
        if self.leads_but_leaves() {
            return Err(self.hand_over().await);
        }
        let ids = BTreeSet::from([id]);
        let change = if members.voters.contains_key(&id) {
            // Not kept as a learner: gone from the membership altogether.
            ChangeMembers::RemoveVoters(ids)
        } else if members.learners.contains_key(&id) {
            // RemoveVoters of a learner changes nothing (and succeeds).
            ChangeMembers::RemoveNodes(ids)
        } else if self.metrics().leader == Some(self.inner.id) {
            return Err(Error::Invalid(format!("id: Not found: {id}: not a member of the cluster")));
        } else {
            // Not the leader, whose view is the one that counts: openraft answers NotLeader.
            ChangeMembers::RemoveVoters(ids)
        };
        self.change(self.inner.raft.change_membership(change, false).await)
    }

    fn change<T>(&self, result: Result<T, RaftError<TypeConfig, ClientWriteError<TypeConfig>>>) -> Result<(), Error> {
        match result {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(not_leader(&f)),
            Err(e) => Err(Error::Raft(e.to_string())),
        }
    }

    /// Hands leadership from this node (the leader) to node `to`, and waits until `to` leads.
    /// An attempt that does not complete (the target lagged, a message was lost) is repeated
    /// until [`TRANSFER_WAIT`] has passed.
    ///
    /// # Errors
    /// [`Error::NotLeader`] when another node leads; [`Error::Raft`] when the transfer did not
    /// complete in time.
    pub async fn transfer_leadership(&self, to: u64) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + TRANSFER_WAIT;
        let mut first = true;
        loop {
            let leader = self.inner.raft.metrics().borrow_watched().current_leader;
            if leader == Some(to) {
                return Ok(());
            }
            if leader == Some(self.inner.id) {
                self.inner.raft.trigger().transfer_leader(to).await.map_err(|e| Error::Raft(e.to_string()))?;
            } else if first || leader.is_some() {
                return Err(Error::NotLeader { leader, address: None, api_address: None });
            }
            first = false;
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Raft(format!("leadership did not move to node {to} within {TRANSFER_WAIT:?}")));
            }
            let wait = self.inner.raft.wait(Some((deadline - now).min(Duration::from_secs(1))));
            let _ = wait.metrics(|m| m.current_leader == Some(to), "the new leader").await;
        }
    }

    /// Whether this node leads while a membership change under way removes it: a joint
    /// configuration whose newer half leaves it out (the leader that appended it lost its
    /// leadership before the change finished, and this node, a voter of the older half, won
    /// the election with majorities of both halves). Read from the published metrics, which
    /// trail the core a little: a check narrows openraft's window, it cannot close it.
    fn leads_but_leaves(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        m.current_leader == Some(self.inner.id) && !staying_voters(&m).contains(&self.inner.id)
    }

    /// The leader hands leadership to another voter and answers "not the leader" naming it:
    /// asked to remove itself, or to change the membership while a change under way removes
    /// it. openraft 0.10.0-alpha.37 can leave such a leader believing it leads after the
    /// change, and its next membership change then panics its core (orch-sim found both;
    /// README, "Bugs the simulator found"). The new leader makes the change as for any other.
    async fn hand_over(&self) -> Error {
        let to = match self.step_down(TRANSFER_WAIT).await {
            Ok(Some(to)) => to,
            // No voter answered a heartbeat lately (or none was recorded yet, just after an
            // election): try the lowest other voter that stays; the transfer fails if it is down.
            Ok(None) => {
                let staying = staying_voters(&self.inner.raft.metrics().borrow_watched());
                let Some(to) = staying.into_iter().find(|v| *v != self.inner.id) else {
                    return Error::Invalid(format!(
                        "id: Invalid value: {}: the only voter cannot be removed",
                        self.inner.id
                    ));
                };
                if let Err(e) = self.transfer_leadership(to).await {
                    return e;
                }
                to
            }
            Err(e) => return e,
        };
        not_leader_at(Some(to), self.members().voters.get(&to))
    }

    /// Before a planned stop (SIGTERM of `orchd`, a rolling restart): when this node leads and
    /// another voter that stays is alive (during a joint configuration, one of its newer half),
    /// hands leadership to the live one whose log is furthest along (ties: the lowest id) and
    /// waits, at most `within`, until it leads. The others then need not wait out an election
    /// timeout: a restart of the leader costs a transfer (an election the target starts at
    /// once), not a timeout. Returns the new leader, or None when nothing was handed over (not
    /// the leader, or no other staying voter that answered a heartbeat within an election
    /// timeout).
    ///
    /// # Errors
    /// [`Error::Raft`] when the transfer did not complete within `within` (the caller stops
    /// anyway; the others then elect a leader as after a crash).
    pub async fn step_down(&self, within: Duration) -> Result<Option<u64>, Error> {
        use openraft::async_runtime::instant::Instant as _;
        let to = {
            let metrics = self.inner.raft.metrics();
            let m = metrics.borrow_watched();
            if m.current_leader != Some(self.inner.id) {
                return Ok(None);
            }
            // Only a voter that answered a heartbeat within an election timeout: a transfer to a
            // dead one would only delay the election the others then hold.
            let alive_within = Duration::from_millis(self.inner.raft.config().election_timeout_min);
            let heard = |v: &u64| m.heartbeat.as_ref().and_then(|h| h.get(v)).and_then(Option::as_ref);
            let matched = |v: &u64| m.replication.as_ref().and_then(|r| r.get(v)).and_then(Option::as_ref);
            // A voter that stays: in a joint configuration, one of its newer half.
            let furthest = staying_voters(&m)
                .into_iter()
                .filter(|v| *v != self.inner.id)
                .filter(|v| heard(v).is_some_and(|t| t.elapsed() < alive_within))
                .max_by_key(|v| (matched(v).map(|l| l.index()), std::cmp::Reverse(*v)));
            match furthest {
                Some(to) => to,
                None => return Ok(None),
            }
        };
        let moved = tokio::time::timeout(within, self.transfer_leadership(to)).await;
        // Another voter may have won instead (an election raced the transfer): handed over too.
        let leader = self.inner.raft.metrics().borrow_watched().current_leader;
        match moved {
            Ok(Ok(())) => Ok(Some(to)),
            _ if leader.is_some_and(|l| l != self.inner.id) => Ok(leader),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Raft(format!("leadership did not move to node {to} within {within:?}"))),
        }
    }

    /// Whether Raft still runs: the fatal error (a storage failure, a panic in openraft) that
    /// stopped it, if one did. A node that is not healthy serves nothing until it is restarted.
    ///
    /// # Errors
    /// The fatal error, as text.
    pub fn health(&self) -> Result<(), String> {
        use futures_util::FutureExt;
        if let Err(fatal) = &self.inner.raft.metrics().borrow_watched().running_state {
            return Err(format!("raft stopped: {fatal}"));
        }
        // A core task that panicked never reports it in its metrics: its metrics channel closes.
        // (The first poll may only consume a change this copy of the receiver had not seen.)
        let mut metrics = self.inner.raft.metrics();
        for _ in 0..2 {
            if let Some(Err(_)) = metrics.changed().now_or_never() {
                return Err("raft stopped: its core task ended".to_owned());
            }
        }
        Ok(())
    }

    /// Term, leader, role, and how far the log, the commit and the state have come.
    pub fn metrics(&self) -> Metrics {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow_watched();
        Metrics {
            id: m.id,
            term: m.current_term,
            leader: m.current_leader,
            role: format!("{:?}", m.state),
            commit_index: m.local_committed.map_or(0, |id| id.index),
            applied_index: m.last_applied.map_or(0, |id| id.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            snapshot_index: m.snapshot.map_or(0, |id| id.index),
            purged_index: m.purged.map_or(0, |id| id.index),
        }
    }

    /// How long each site held the state machine's lock: what apply, reads and watches may have
    /// had to wait for.
    pub fn lock_holds(&self) -> &crate::LockHolds {
        self.inner.sm.lock_holds()
    }

    /// The group commit counters of this node's log (appends and syncs so far).
    pub fn log_sync_stats(&self) -> Arc<SyncStats> {
        Arc::clone(&self.inner.sync_stats)
    }

    /// The underlying Raft node, for tests and tools inside this crate's users that need more.
    pub fn raft(&self) -> &RaftNode {
        &self.inner.raft
    }

    /// Stops the node: Raft, the transport server and the batcher, and waits (up to
    /// [`SHUTDOWN_WAIT`]) until the log's database is closed, so the data directory can be opened
    /// again at once. Other clones then fail with [`Error::Shutdown`] or [`Error::NotLeader`].
    ///
    /// # Errors
    /// When Raft's task ended in a panic, or the database stayed open.
    pub async fn shutdown(&self) -> Result<(), Error> {
        let tasks = crate::lock(&self.inner.tasks).take();
        let Some((transport, batcher)) = tasks else { return Ok(()) };
        batcher.abort();
        let result = self.inner.raft.shutdown().await.map_err(|e| Error::Raft(e.to_string()));
        transport.stop(self.inner.id).await;
        let _ = batcher.await;
        result?;
        if log_closed(&self.inner.closed).await {
            Ok(())
        } else {
            Err(Error::Raft("the log database is still open after shutdown".to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restarted leader must win an election like any node: resuming its old term after a
    /// power cut that took back entries of that term would reissue their log ids with other
    /// entries (orch-sim seeds 68 and 78 diverged so, before this setting).
    #[test]
    fn a_restarted_leader_never_resumes_its_term_without_an_election() {
        let config = ControlPlane::builder(1, "/unused").raft_config().expect("valid settings");
        assert_eq!(config.enable_leader_restore, Some(false));
    }
}
