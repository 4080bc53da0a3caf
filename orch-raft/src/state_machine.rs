//! The state-machine store: orch-core's [`State`] in memory, with snapshots that are optionally
//! kept on disk.
//!
//! Recovery design: the state lives in memory. A snapshot (built by openraft's policy, or
//! installed from the leader) is written to `DIR/snapshot.bin` atomically (temporary file,
//! fsync, rename, fsync of the directory) before openraft may purge the log it covers. On
//! restart the store loads that snapshot, and openraft re-applies the log from the snapshot's
//! last log id up to the committed id the log store saved, before the node serves.
//!
//! A snapshot file: `ORCHRSNP`, format version (u8), BLAKE3 digest of the rest (32 bytes),
//! meta length (u32 LE), meta ([`crate::codec::encode_snapshot_meta`]), then the state as
//! `State::to_snapshot` bytes (which carry their own digest).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, OptionalSend, StoredMembership};
use orch_core::State;

use crate::codec;
use crate::feed::{Expired, Feed, Subscription};
use crate::lock;
use crate::types::{Response, TypeConfig};

type C = TypeConfig;

const SNAPSHOT_MAGIC: &[u8; 8] = b"ORCHRSNP";
const SNAPSHOT_FILE: &str = "snapshot.bin";
const SNAPSHOT_HEADER_BYTES: usize = 8 + 1 + 32 + 4;

/// Called with each application entry before it is applied: `(log index, entry)`. The
/// simulator records the sequence of applications with it.
pub type ApplyHook = Arc<dyn Fn(u64, &orch_core::Entry) + Send + Sync>;

#[derive(Default)]
struct Inner {
    state: State,
    last_applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    snapshot: Option<(SnapshotMetaOf<C>, Vec<u8>)>,
    feed: Feed,
    hook: Option<ApplyHook>,
}

/// Who held the state machine's lock, for [`LockHolds`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockSite {
    /// Applying one log entry.
    Apply,
    /// A read of the state ([`StateMachineStore::read`]).
    Read,
    /// A watch subscribing to the feed.
    Subscribe,
    /// Building a snapshot.
    BuildSnapshot,
    /// Installing a snapshot received from the leader.
    InstallSnapshot,
    /// Handing the current snapshot to openraft (to send it to a follower).
    CurrentSnapshot,
    /// Anything else (metadata, hooks).
    Other,
}

impl LockSite {
    /// Every site, in the order [`LockHolds::report`] lists them.
    pub const ALL: [LockSite; 7] = [
        LockSite::Apply,
        LockSite::Read,
        LockSite::Subscribe,
        LockSite::BuildSnapshot,
        LockSite::InstallSnapshot,
        LockSite::CurrentSnapshot,
        LockSite::Other,
    ];

    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            LockSite::Apply => "apply",
            LockSite::Read => "read",
            LockSite::Subscribe => "subscribe",
            LockSite::BuildSnapshot => "build_snapshot",
            LockSite::InstallSnapshot => "install_snapshot",
            LockSite::CurrentSnapshot => "current_snapshot",
            LockSite::Other => "other",
        }
    }
}

/// The longest time each site held the state machine's lock, and how often it took it: what
/// apply, reads and watches may have to wait for. Measured, never used for decisions.
#[derive(Debug, Default)]
pub struct LockHolds {
    longest_ns: [AtomicU64; LockSite::ALL.len()],
    count: [AtomicU64; LockSite::ALL.len()],
}

impl LockHolds {
    fn record(&self, site: LockSite, held: Duration) {
        let i = site as usize;
        self.longest_ns[i].fetch_max(u64::try_from(held.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.count[i].fetch_add(1, Ordering::Relaxed);
    }

    /// (site, longest hold, number of holds) for every site, since the last reset.
    pub fn report(&self) -> Vec<(LockSite, Duration, u64)> {
        LockSite::ALL
            .iter()
            .map(|&site| {
                let i = site as usize;
                (
                    site,
                    Duration::from_nanos(self.longest_ns[i].load(Ordering::Relaxed)),
                    self.count[i].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// The longest hold of any site.
    pub fn longest(&self) -> Duration {
        self.report().into_iter().map(|(_, d, _)| d).max().unwrap_or_default()
    }

    /// Starts counting afresh.
    pub fn reset(&self) {
        for (longest, count) in self.longest_ns.iter().zip(&self.count) {
            longest.store(0, Ordering::Relaxed);
            count.store(0, Ordering::Relaxed);
        }
    }
}

/// The state machine's lock, held by one site; the hold is recorded when it is released.
struct Held<'a, T> {
    guard: MutexGuard<'a, T>,
    site: LockSite,
    since: Instant,
    holds: &'a LockHolds,
}

impl<T> std::ops::Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for Held<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for Held<'_, T> {
    fn drop(&mut self) {
        self.holds.record(self.site, self.since.elapsed());
    }
}

/// openraft's state machine over orch-core's [`State`]. Clones share the state.
#[derive(Clone, Default)]
pub struct StateMachineStore {
    inner: Arc<Mutex<Inner>>,
    holds: Arc<LockHolds>,
    /// Where snapshots are kept; None keeps them in memory only (tests, simulation).
    dir: Option<Arc<PathBuf>>,
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn encode_snapshot_file(meta: &SnapshotMetaOf<C>, state: &[u8]) -> Vec<u8> {
    let meta = codec::encode_snapshot_meta(meta);
    let mut body = Vec::with_capacity(4 + meta.len() + state.len());
    body.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    body.extend_from_slice(&meta);
    body.extend_from_slice(state);
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + body.len());
    out.extend_from_slice(SNAPSHOT_MAGIC);
    out.push(codec::FORMAT_VERSION);
    out.extend_from_slice(blake3::hash(&body).as_bytes());
    out.extend_from_slice(&body);
    out
}

fn decode_snapshot_file(bytes: &[u8]) -> Result<(SnapshotMetaOf<C>, &[u8]), io::Error> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES || &bytes[..8] != SNAPSHOT_MAGIC {
        return Err(invalid("snapshot file: bad magic or short header"));
    }
    if bytes[8] != codec::FORMAT_VERSION {
        return Err(invalid(format!("snapshot file: unknown format version {}", bytes[8])));
    }
    let body = &bytes[41..];
    if blake3::hash(body).as_bytes() != &bytes[9..41] {
        return Err(invalid("snapshot file: digest mismatch"));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&body[..4]);
    let meta_len = u32::from_le_bytes(len) as usize;
    let meta_bytes = body.get(4..4 + meta_len).ok_or_else(|| invalid("snapshot file: meta cut short"))?;
    Ok((codec::decode_snapshot_meta(meta_bytes)?, &body[4 + meta_len..]))
}

/// Writes `bytes` to `dir/name` atomically and durably.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Writes a state snapshot (`State::to_snapshot` bytes) into `dir` as the snapshot a node
/// starts from, covering log id `last_log_id` with `membership`. For restoring a backup into
/// a fresh data directory.
pub(crate) fn write_start_snapshot(
    dir: &Path,
    last_log_id: LogIdOf<C>,
    membership: StoredMembershipOf<C>,
    state: &[u8],
) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let meta = SnapshotMeta { last_log_id: Some(last_log_id), last_membership: membership };
    write_atomically(dir, SNAPSHOT_FILE, &encode_snapshot_file(&meta, state))
}

impl StateMachineStore {
    /// A state machine whose snapshots stay in memory.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A state machine that keeps its snapshots in `dir`, starting from the snapshot found
    /// there, if any.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut inner = Inner::default();
        match std::fs::read(dir.join(SNAPSHOT_FILE)) {
            Ok(bytes) => {
                let (meta, state_bytes) = decode_snapshot_file(&bytes)?;
                inner.state = State::from_snapshot(state_bytes).map_err(invalid_snapshot)?;
                inner.feed.reset(meta.last_log_id.map_or(0, |id| id.index));
                inner.last_applied = meta.last_log_id;
                inner.membership = meta.last_membership.clone();
                inner.snapshot = Some((meta, state_bytes.to_vec()));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(Self { inner: Arc::new(Mutex::new(inner)), holds: Arc::default(), dir: Some(Arc::new(dir.to_path_buf())) })
    }

    /// Takes the state machine's lock for `site`.
    fn hold(&self, site: LockSite) -> Held<'_, Inner> {
        let guard = lock(&self.inner);
        Held { guard, site, since: Instant::now(), holds: &self.holds }
    }

    /// How long each site held the state machine's lock.
    pub fn lock_holds(&self) -> &LockHolds {
        &self.holds
    }

    /// Runs `f` on the current cluster state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.hold(LockSite::Read).state)
    }

    /// The index of the last applied log entry (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.hold(LockSite::Other).last_applied.map_or(0, |id| id.index)
    }

    /// The oldest revision a watch may start from on this replica.
    pub fn watch_horizon(&self) -> u64 {
        self.hold(LockSite::Other).feed.horizon()
    }

    /// Calls `hook` with every application entry from now on, before it is applied.
    pub fn set_apply_hook(&self, hook: ApplyHook) {
        self.hold(LockSite::Other).hook = Some(hook);
    }

    /// Subscribes to the committed events after revision `from`.
    pub(crate) fn subscribe(&self, from: u64) -> Result<Subscription, Expired> {
        self.hold(LockSite::Subscribe).feed.subscribe(from)
    }

    /// Persists a snapshot (when this store has a directory), off the async runtime's threads.
    async fn persist(&self, meta: &SnapshotMetaOf<C>, state: &[u8]) -> io::Result<()> {
        let Some(dir) = self.dir.clone() else { return Ok(()) };
        let file = encode_snapshot_file(meta, state);
        tokio::task::spawn_blocking(move || write_atomically(&dir, SNAPSHOT_FILE, &file))
            .await
            .map_err(io::Error::other)?
    }
}

fn invalid_snapshot(e: orch_core::SnapshotError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl RaftSnapshotBuilder<C> for StateMachineStore {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Vec<u8>>, io::Error> {
        // A consistent view: taken under the lock that `apply` holds for each entry.
        let (meta, data) = {
            let inner = self.hold(LockSite::BuildSnapshot);
            let meta = SnapshotMeta { last_log_id: inner.last_applied, last_membership: inner.membership.clone() };
            (meta, inner.state.to_snapshot())
        };
        self.persist(&meta, &data).await?;
        self.hold(LockSite::BuildSnapshot).snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<C> for StateMachineStore {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let inner = self.hold(LockSite::Other);
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let response = {
                let mut inner = self.hold(LockSite::Apply);
                let log_id = entry.log_id();
                let response = match entry.payload {
                    EntryPayload::Blank => {
                        inner.feed.push(log_id.index(), Vec::new());
                        Response::default()
                    }
                    // Only application entries reach orch-core, so revisions are the indexes
                    // of the entries that changed the state.
                    EntryPayload::Normal(batch) => {
                        if let Some(hook) = &inner.hook {
                            hook(log_id.index(), &batch);
                        }
                        let output = inner.state.apply(log_id.index(), batch);
                        inner.feed.push(log_id.index(), output.events);
                        Response { outcomes: output.outcomes }
                    }
                    EntryPayload::Membership(membership) => {
                        inner.membership = StoredMembership::new(Some(log_id), membership);
                        inner.feed.push(log_id.index(), Vec::new());
                        Response::default()
                    }
                };
                inner.last_applied = Some(log_id);
                response
            };
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<C>, snapshot: Vec<u8>) -> Result<(), io::Error> {
        let state = State::from_snapshot(&snapshot).map_err(invalid_snapshot)?;
        // On disk first: once installed, openraft may purge the log this snapshot replaces.
        self.persist(meta, &snapshot).await?;
        let mut inner = self.hold(LockSite::InstallSnapshot);
        inner.state = state;
        inner.feed.reset(meta.last_log_id.map_or(0, |id| id.index));
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), snapshot));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<C, Vec<u8>>>, io::Error> {
        let inner = self.hold(LockSite::CurrentSnapshot);
        Ok(inner.snapshot.as_ref().map(|(meta, data)| Snapshot { meta: meta.clone(), snapshot: data.clone() }))
    }
}
