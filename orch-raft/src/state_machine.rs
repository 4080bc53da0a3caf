//! The state-machine store: orch-core's [`State`] in memory, with snapshots that are optionally
//! kept on disk.
//!
//! Recovery design: the state lives in memory. A snapshot (built by openraft's policy, or
//! installed from the leader) is written to `DIR/snapshot.bin` atomically (temporary file,
//! fsync, rename, fsync of the directory) before openraft may purge the log it covers. On
//! restart the store loads that snapshot, and openraft re-applies the log from the snapshot's
//! last log id up to the committed id the log store saved, before the node serves.
//!
//! A snapshot never replaces a newer one: snapshots are written and recorded one at a time, and
//! one whose log id is not newer than the recorded one is dropped (a build that finishes after
//! an install of a later snapshot). Each write goes through a temporary file of its own. The
//! file format, and how a snapshot is received into a file and renamed into place, are in
//! [`crate::snapshot_file`].

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::{Stream, StreamExt};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{EntryPayload, OptionalSend, StoredMembership};
use orch_core::State;

use crate::crash::{CrashDisk, SnapshotSlot};
use crate::durable::DurableWatch;
use crate::feed::{Applied, Feed, HistoryLimits, SharedFeed};
use crate::holds::{Held, LockHolds, LockSite};
use crate::snapshot_file::{self, SnapshotBytes, SnapshotSink};
use crate::types::{Response, TypeConfig};

type C = TypeConfig;

/// Called with every log entry once it is applied (blank and membership entries too), under
/// the state's lock. The simulator records the applications with it.
pub type ApplyHook = Arc<dyn Fn(&AppliedEntry<'_>) + Send + Sync>;

/// One applied log entry, as the [`ApplyHook`] sees it.
#[derive(Debug)]
pub struct AppliedEntry<'a> {
    /// The log index.
    pub index: u64,
    /// The term of the leader that appended the entry.
    pub term: u64,
    /// The node that led that term and appended the entry.
    pub leader: u64,
    /// What the entry held.
    pub payload: AppliedPayload<'a>,
}

/// Tells `hook`, if any, that the entry `log_id` was applied.
fn notify(hook: Option<&ApplyHook>, log_id: &LogIdOf<C>, payload: AppliedPayload<'_>) {
    if let Some(hook) = hook {
        let (index, term, leader) = (log_id.index, log_id.leader_id.term, log_id.leader_id.node_id);
        hook(&AppliedEntry { index, term, leader, payload });
    }
}

/// What an applied log entry held.
#[derive(Debug)]
pub enum AppliedPayload<'a> {
    /// A new leader's blank entry.
    Blank,
    /// An application entry, its outcomes and its events.
    Normal(&'a orch_core::Entry, &'a orch_core::state::ApplyOutput),
    /// A membership change: its voter configurations (two in a joint one) and every member
    /// (voters and learners), by node id in order.
    Membership {
        /// The voter configurations.
        voters: Vec<Vec<u64>>,
        /// Every member.
        members: Vec<u64>,
    },
}

#[derive(Default)]
struct Inner {
    state: State,
    last_applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    snapshot: Option<(SnapshotMetaOf<C>, SnapshotBytes)>,
    hook: Option<ApplyHook>,
}

/// openraft's state machine over orch-core's [`State`]. Clones share the state.
///
/// **Invariant:** nothing long runs under the state's lock. Apply holds it for one entry;
/// readers take a copy of the state under it (constant time: the state's maps are
/// persistent) and read the copy without it; snapshots are encoded, written, decoded and
/// freed outside it. The feed of watch events has a lock of its own.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Mutex<Inner>>,
    feed: Arc<SharedFeed>,
    holds: Arc<LockHolds>,
    /// Held while a snapshot is written and recorded: one at a time, newest wins.
    snapshots: Arc<tokio::sync::Mutex<()>>,
    /// Where snapshots are kept; None keeps them in memory only (tests), or in `slot`.
    dir: Option<Arc<PathBuf>>,
    /// The snapshot slot of a simulated disk (crash tests, simulation).
    slot: Option<SnapshotSlot>,
    /// The log's durable index: an entry is applied only once it is durable in this node's
    /// own log (see [`crate::durable`]). Set by [`crate::start_raft`].
    durable: Arc<Mutex<Option<DurableWatch>>>,
    /// Snapshots installed (sent by the leader) since this store was made, and how many of
    /// them found a watch live on this replica.
    installs: Arc<[std::sync::atomic::AtomicU64; 2]>,
}

impl Default for StateMachineStore {
    fn default() -> Self {
        Self::with(Inner::default(), Feed::default(), None, None)
    }
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
    snapshot_file::write_file(dir, &meta, state).map(drop)
}

impl StateMachineStore {
    fn with(inner: Inner, feed: Feed, dir: Option<PathBuf>, slot: Option<SnapshotSlot>) -> Self {
        let holds = Arc::new(LockHolds::default());
        Self {
            inner: Arc::new(Mutex::new(inner)),
            feed: SharedFeed::new(feed, Arc::clone(&holds)),
            holds,
            snapshots: Arc::default(),
            dir: dir.map(Arc::new),
            slot,
            durable: Arc::default(),
            installs: Arc::default(),
        }
    }

    /// How many snapshots this node installed (from the leader) since it started, and how
    /// many of them were installed under a live watch.
    pub fn snapshot_installs(&self) -> (u64, u64) {
        let [all, watched] = &*self.installs;
        (all.load(std::sync::atomic::Ordering::Relaxed), watched.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Applies entries only once `durable` reaches them (see [`crate::durable`]).
    pub fn follow_durable(&self, durable: DurableWatch) {
        *crate::lock(&self.durable) = Some(durable);
    }

    /// A state machine whose snapshots stay in memory.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// A state machine that keeps its snapshots in `dir`, starting from the snapshot found
    /// there, if any.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_with(dir, HistoryLimits::default())
    }

    /// As [`StateMachineStore::open`], keeping the watch history within `limits`.
    pub fn open_with(dir: &Path, limits: HistoryLimits) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        snapshot_file::remove_temporary_files(dir)?;
        let mut inner = Inner::default();
        let mut feed = Feed::new(limits);
        if let Some(loaded) = snapshot_file::read_file(dir)? {
            let state = State::from_snapshot(loaded.state()).map_err(invalid_snapshot)?;
            // Kept as the open file: the bytes read to decode it are freed.
            start_from(&mut inner, &mut feed, state, loaded.meta, loaded.kept);
        }
        Ok(Self::with(inner, feed, Some(dir.to_path_buf()), None))
    }

    /// A state machine that keeps its snapshots in the slot of a simulated disk, starting from
    /// the snapshot found there, if any.
    ///
    /// # Errors
    /// When the snapshot there does not decode.
    pub fn on_crash_disk(disk: &CrashDisk, limits: HistoryLimits) -> io::Result<Self> {
        let slot = disk.snapshot_slot();
        let mut inner = Inner::default();
        let mut feed = Feed::new(limits);
        if let Some((meta, bytes)) = slot.read() {
            let state = bytes.with_all(State::from_snapshot)?.map_err(invalid_snapshot)?;
            start_from(&mut inner, &mut feed, state, meta, bytes);
        }
        Ok(Self::with(inner, feed, None, Some(slot)))
    }

    /// Takes the state machine's lock for `site`.
    fn hold(&self, site: LockSite) -> Held<'_, Inner> {
        self.holds.hold(&self.inner, site)
    }

    /// How long each site held the state machine's lock, or the feed's.
    pub fn lock_holds(&self) -> &LockHolds {
        &self.holds
    }

    /// A copy of the current cluster state, taken in constant time; entries go on being
    /// applied to the original while the copy is read.
    pub fn state(&self) -> State {
        self.hold(LockSite::Read).state.clone()
    }

    /// Runs `f` on a copy of the current cluster state, without holding the state's lock.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state())
    }

    /// The index of the last applied log entry (0 before any).
    pub fn applied_index(&self) -> u64 {
        self.hold(LockSite::Other).last_applied.map_or(0, |id| id.index)
    }

    /// The oldest revision a watch may start from on this replica.
    pub fn watch_horizon(&self) -> u64 {
        self.feed.hold(LockSite::Subscribe).horizon()
    }

    /// The events and bytes the watch history holds on this replica.
    pub fn watch_history_held(&self) -> (usize, usize) {
        self.feed.hold(LockSite::Subscribe).held()
    }

    /// Calls `hook` with every log entry (blank, application, membership) from now on, once it
    /// is applied.
    pub fn set_apply_hook(&self, hook: ApplyHook) {
        self.hold(LockSite::Other).hook = Some(hook);
    }

    /// The feed of committed watch events.
    pub(crate) fn feed(&self) -> &Arc<SharedFeed> {
        &self.feed
    }

    /// A sink for a snapshot with `meta` of `total` bytes that this node receives: into a
    /// temporary file in the snapshot directory (memory without one).
    ///
    /// # Errors
    /// When the file cannot be created.
    pub async fn snapshot_sink(&self, meta: &SnapshotMetaOf<C>, total: u64) -> io::Result<SnapshotSink> {
        let dir = self.dir.clone();
        let meta = meta.clone();
        self.off_runtime(move || SnapshotSink::new(dir.as_deref().map(PathBuf::as_path), &meta, total)).await?
    }

    /// Makes `data` the current snapshot unless one at least as new is: persisted first
    /// (when this store has a directory: a received file is renamed into place, other bytes
    /// written), then recorded. Returns the bytes kept (a file's, with a directory), or None
    /// when it was dropped.
    async fn keep_snapshot(&self, meta: &SnapshotMetaOf<C>, data: SnapshotBytes) -> io::Result<Option<SnapshotBytes>> {
        let _one_at_a_time = self.snapshots.lock().await;
        let current = self.hold(LockSite::Other).snapshot.as_ref().and_then(|(m, _)| m.last_log_id);
        if current.is_some() && current >= meta.last_log_id {
            return Ok(None);
        }
        let kept = match self.dir.clone() {
            Some(dir) => {
                let file_meta = meta.clone();
                tokio::task::spawn_blocking(move || {
                    if snapshot_file::rename_into_place(&dir, &file_meta, &data)? {
                        Ok(data)
                    } else {
                        data.with_all(|bytes| snapshot_file::write_file(&dir, &file_meta, bytes))?
                    }
                })
                .await
                .map_err(io::Error::other)??
            }
            None => {
                if let Some(slot) = &self.slot {
                    slot.write(meta, data.clone())?;
                }
                data
            }
        };
        // The snapshot replaced is freed after the lock is released.
        let replaced = self.hold(LockSite::BuildSnapshot).snapshot.replace((meta.clone(), kept.clone()));
        drop(replaced);
        Ok(Some(kept))
    }

    /// Runs `f` off the async runtime's threads when this store keeps its snapshots on disk
    /// (a daemon), or in place (tests and the simulation, whose runtime is one thread).
    async fn off_runtime<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        if self.dir.is_none() {
            return Ok(f());
        }
        tokio::task::spawn_blocking(f).await.map_err(io::Error::other)
    }
}

/// A store (re)starting from a snapshot it kept.
fn start_from(inner: &mut Inner, feed: &mut Feed, state: State, meta: SnapshotMetaOf<C>, kept: SnapshotBytes) {
    let _ = feed.reset(meta.last_log_id.map_or(0, |id| id.index), state.applied_index());
    inner.state = state;
    inner.last_applied = meta.last_log_id;
    inner.membership = meta.last_membership.clone();
    inner.snapshot = Some((meta, kept));
}

fn invalid_snapshot(e: orch_core::SnapshotError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl RaftSnapshotBuilder<C> for StateMachineStore {
    type SnapshotData = SnapshotBytes;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, SnapshotBytes>, io::Error> {
        // A consistent view: a copy taken under the lock that `apply` holds for each entry,
        // encoded without it.
        let (meta, state) = {
            let inner = self.hold(LockSite::BuildSnapshot);
            let meta = SnapshotMeta { last_log_id: inner.last_applied, last_membership: inner.membership.clone() };
            (meta, inner.state.clone())
        };
        let data = SnapshotBytes::from_vec(self.off_runtime(move || state.to_snapshot()).await?);
        // An install of a later snapshot may have finished meanwhile: then this one is dropped
        // (openraft ignores a built snapshot older than its current one). Kept, it is the file
        // just written, and the encoded bytes are freed.
        let kept = self.keep_snapshot(&meta, data.clone()).await?.unwrap_or(data);
        Ok(Snapshot { meta, snapshot: kept })
    }
}

impl RaftStateMachine<C> for StateMachineStore {
    type SnapshotData = SnapshotBytes;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let inner = self.hold(LockSite::Other);
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        let mut durable = crate::lock(&self.durable).clone();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let log_id = entry.log_id();
            let index = log_id.index();
            // Never apply (and so never serve) what a crash of this node could take back.
            if let Some(durable) = &mut durable {
                durable.wait_for(index).await?;
            }
            let (response, events, time_ms) = {
                let mut inner = self.hold(LockSite::Apply);
                let hook = inner.hook.clone();
                let seen = |payload: AppliedPayload<'_>| notify(hook.as_ref(), &log_id, payload);
                let (response, events) = match entry.payload {
                    EntryPayload::Blank => {
                        seen(AppliedPayload::Blank);
                        (Response::default(), Vec::new())
                    }
                    // Only application entries reach orch-core, so revisions are the indexes
                    // of the entries that changed the state.
                    EntryPayload::Normal(batch) => {
                        let output = if hook.is_some() {
                            let output = inner.state.apply(index, batch.clone());
                            seen(AppliedPayload::Normal(&batch, &output));
                            output
                        } else {
                            inner.state.apply(index, batch)
                        };
                        (Response { outcomes: output.outcomes }, output.events)
                    }
                    EntryPayload::Membership(membership) => {
                        if hook.is_some() {
                            let voters =
                                membership.get_joint_config().iter().map(|c| c.iter().copied().collect()).collect();
                            let members = membership.nodes().map(|(id, _)| *id).collect();
                            seen(AppliedPayload::Membership { voters, members });
                        }
                        inner.membership = StoredMembership::new(Some(log_id), membership);
                        (Response::default(), Vec::new())
                    }
                };
                inner.last_applied = Some(log_id);
                (response, events, inner.state.clock().as_millis())
            };
            // Index 0 is the first membership entry; revisions start at 1.
            if index > 0 {
                let applied = Arc::new(Applied::new(index, time_ms, events));
                let dropped = self.feed.hold(LockSite::FeedPush).push(applied);
                drop(dropped);
            }
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<C>, snapshot: SnapshotBytes) -> Result<(), io::Error> {
        // Decoded already when it was received (a peer's bad bytes are refused there).
        let state = match snapshot.take_decoded() {
            Some(state) => state,
            None => {
                let bytes = snapshot.clone();
                self.off_runtime(move || bytes.with_all(State::from_snapshot)).await??.map_err(invalid_snapshot)?
            }
        };
        // On disk first: once installed, openraft may purge the log this snapshot replaces. (If
        // a snapshot at least as new were current, this one is not kept but still installed, as
        // openraft asked: it installs only beyond the committed index, which no snapshot here
        // passes, so that does not happen.)
        self.keep_snapshot(meta, snapshot).await?;
        let index = meta.last_log_id.map_or(0, |id| id.index);
        let revision = state.applied_index();
        let old = {
            let mut inner = self.hold(LockSite::InstallSnapshot);
            let old = std::mem::replace(&mut inner.state, state);
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            old
        };
        // Watches that had not seen everything the snapshot covers end: they never will.
        let (old_history, watched) = {
            let mut feed = self.feed.hold(LockSite::FeedPush);
            let watched = feed.live_watches() > 0;
            (feed.reset(index, revision), watched)
        };
        // Freeing the old state and history takes a while at scale: not under a lock.
        drop(old_history);
        let [all, under_watch] = &*self.installs;
        all.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if watched {
            under_watch.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = self.off_runtime(move || drop(old)).await;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<C, SnapshotBytes>>, io::Error> {
        // A handle: sending reads the file (or the bytes in memory) chunk by chunk.
        let current = self.hold(LockSite::CurrentSnapshot).snapshot.clone();
        Ok(current.map(|(meta, snapshot)| Snapshot { meta, snapshot }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use openraft::LogId;
    use openraft::impls::leader_id_adv::LeaderId;

    use super::*;
    use crate::lock;

    /// A state after `n` entries (each creating a namespace), with its snapshot meta at index `n`.
    fn state_at(n: u64) -> (SnapshotMetaOf<C>, State) {
        let mut state = State::new();
        for i in 1..=n {
            let ns =
                orch_core::parse_manifests(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{i}}}"))
                    .expect("valid")
                    .remove(0);
            let request = orch_core::Request::new(orch_core::ClientId(1), i, orch_core::Command::Create(ns));
            state.apply(i, orch_core::Entry::new(1_000, vec![request]));
        }
        let log_id = LogId::new(LeaderId { term: 1, node_id: 1 }, n);
        (SnapshotMeta { last_log_id: Some(log_id), last_membership: StoredMembership::default() }, state)
    }

    fn on_disk(dir: &Path) -> u64 {
        let loaded = snapshot_file::read_file(dir).expect("reads").expect("a snapshot file");
        loaded.meta.last_log_id.map_or(0, |id| id.index)
    }

    fn current(store: &StateMachineStore) -> u64 {
        lock(&store.inner).snapshot.as_ref().and_then(|(m, _)| m.last_log_id).map_or(0, |id| id.index)
    }

    #[tokio::test]
    async fn a_build_that_finishes_after_a_newer_install_is_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let mut store = StateMachineStore::open(dir.path()).expect("opens");
        let (meta_a, state_a) = state_at(3);
        let (meta_b, state_b) = state_at(5);
        // A build copies the state at 3 and encodes it ...
        lock(&store.inner).state = state_a.clone();
        let built = SnapshotBytes::from_vec(state_a.to_snapshot());
        // ... while the leader's snapshot at 5 is installed and purges the log up to 5 ...
        store.install_snapshot(&meta_b, SnapshotBytes::from_vec(state_b.to_snapshot())).await.expect("installs");
        assert_eq!((current(&store), on_disk(dir.path())), (5, 5));
        // ... then the build finishes: it must not replace the newer snapshot.
        assert!(store.keep_snapshot(&meta_a, built).await.expect("no error").is_none(), "the older one is dropped");
        assert_eq!((current(&store), on_disk(dir.path())), (5, 5));
        // A restart starts from 5, which the purged log continues.
        drop(store);
        let reopened = StateMachineStore::open(dir.path()).expect("reopens");
        assert_eq!(reopened.applied_index(), 5);
        assert_eq!(reopened.state(), state_b);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("lists").filter_map(Result::ok).collect();
        assert_eq!(leftovers.len(), 1, "only snapshot.bin: {leftovers:?}");
    }

    #[tokio::test]
    async fn the_apply_hook_sees_every_entry_with_its_log_id() {
        let mut store = StateMachineStore::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        store.set_apply_hook(Arc::new(move |a: &AppliedEntry<'_>| {
            let what = match &a.payload {
                AppliedPayload::Blank => "blank".to_owned(),
                AppliedPayload::Normal(entry, output) => {
                    format!("{} requests, {} outcomes", entry.requests.len(), output.outcomes.len())
                }
                AppliedPayload::Membership { voters, members } => format!("voters {voters:?}, members {members:?}"),
            };
            lock(&record).push((a.index, a.term, a.leader, what));
        }));
        let id = |term, node_id, index| LogId::new(LeaderId { term, node_id }, index);
        let membership = openraft::Membership::new(
            vec![BTreeSet::from([1, 2]), BTreeSet::from([2, 3])],
            BTreeMap::from([
                (1, crate::Member::default()),
                (2, crate::Member::default()),
                (3, crate::Member::default()),
            ]),
        )
        .expect("a valid membership");
        let ns = orch_core::parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}").expect("valid");
        let request = orch_core::Request::new(orch_core::ClientId(1), 1, orch_core::Command::Create(ns[0].clone()));
        let entries: Vec<Result<EntryResponder<C>, io::Error>> = vec![
            Ok((RaftEntry::new_blank(id(2, 1, 1)), None)),
            Ok((RaftEntry::new_normal(id(2, 1, 2), orch_core::Entry::new(1_000, vec![request])), None)),
            Ok((RaftEntry::new_membership(id(3, 2, 3), membership), None)),
        ];
        store.apply(futures_util::stream::iter(entries)).await.expect("applies");
        assert_eq!(
            *lock(&seen),
            [
                (1, 2, 1, "blank".to_owned()),
                (2, 2, 1, "1 requests, 1 outcomes".to_owned()),
                (3, 3, 2, "voters [[1, 2], [2, 3]], members [1, 2, 3]".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn installs_are_counted_and_those_under_a_live_watch_apart() {
        let mut store = StateMachineStore::default();
        let (meta, state) = state_at(3);
        store.install_snapshot(&meta, SnapshotBytes::from_vec(state.to_snapshot())).await.expect("installs");
        assert_eq!(store.snapshot_installs(), (1, 0), "no watch was live");
        let watch = store.feed().hold(LockSite::Subscribe).subscribe(None).expect("subscribes");
        let (meta, state) = state_at(5);
        store.install_snapshot(&meta, SnapshotBytes::from_vec(state.to_snapshot())).await.expect("installs");
        assert_eq!(store.snapshot_installs(), (2, 1), "one watch was live");
        drop(watch);
        let (meta, state) = state_at(7);
        store.install_snapshot(&meta, SnapshotBytes::from_vec(state.to_snapshot())).await.expect("installs");
        assert_eq!(store.snapshot_installs(), (3, 1), "the watch ended before");
    }

    #[tokio::test]
    async fn a_snapshot_from_another_store_s_file_is_copied_and_crash_leftovers_are_removed() {
        let (a, b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
        let mut leader = StateMachineStore::open(a.path()).expect("opens");
        let (meta, state) = state_at(4);
        {
            let mut inner = lock(&leader.inner);
            inner.state = state.clone();
            inner.last_applied = meta.last_log_id;
        }
        leader.build_snapshot().await.expect("builds");
        let current = leader.get_current_snapshot().await.expect("reads").expect("a snapshot");
        assert!(!current.snapshot.in_memory(), "kept as its file");
        // In process (the local transport), another store gets the leader's file handle: it
        // writes a copy of its own and leaves the leader's file alone.
        let mut follower = StateMachineStore::open(b.path()).expect("opens");
        follower.install_snapshot(&current.meta, current.snapshot).await.expect("installs");
        assert_eq!((on_disk(a.path()), on_disk(b.path())), (4, 4));
        assert_eq!(follower.state(), state);
        // A crash left a partial write or receive behind: the next open removes it.
        drop(follower);
        std::fs::write(b.path().join("snapshot.bin.123.4.tmp"), b"partial").expect("writes");
        let reopened = StateMachineStore::open(b.path()).expect("reopens");
        assert_eq!(reopened.state(), state);
        let names: Vec<_> = std::fs::read_dir(b.path())
            .expect("lists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["snapshot.bin"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn builds_and_installs_racing_keep_the_newest_snapshot() {
        let (meta_b, state_b) = state_at(5);
        let bytes_b = SnapshotBytes::from_vec(state_b.to_snapshot());
        for round in 0..20 {
            let dir = tempfile::tempdir().expect("dir");
            let store = StateMachineStore::open(dir.path()).expect("opens");
            let (_, state_a) = state_at(3);
            {
                let mut inner = lock(&store.inner);
                inner.state = state_a;
                inner.last_applied = Some(LogId::new(LeaderId { term: 1, node_id: 1 }, 3));
            }
            let mut builder = store.clone();
            let mut installer = store.clone();
            let (meta, bytes) = (meta_b.clone(), bytes_b.clone());
            let build = async move { builder.build_snapshot().await.map(|_| ()) };
            let install = async move { installer.install_snapshot(&meta, bytes).await };
            // Both orders of starting, each on its own task.
            let (a, b) = if round % 2 == 0 {
                let b = tokio::spawn(build);
                (tokio::spawn(install), b)
            } else {
                let i = tokio::spawn(install);
                (i, tokio::spawn(build))
            };
            a.await.expect("joins").expect("no error");
            b.await.expect("joins").expect("no error");
            assert_eq!((current(&store), on_disk(dir.path())), (5, 5), "round {round}");
        }
    }
}
