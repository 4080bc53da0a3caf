//! A log store on a disk that loses what it did not sync: the disk model of the crash tests
//! and of the simulator.
//!
//! A [`CrashDisk`] holds what a reader sees now and what a crash leaves (the durable part),
//! and between them the writes not yet durable, in the order they were made. It behaves as the
//! RocksDB store does: appends are visible at once and durable once a sync that started after
//! them completes (their flush callbacks complete then); the vote, truncations and purges are
//! synced writes (durable at once, and like an `fsync` they make every earlier write durable
//! too); the committed hint is unsynced. While syncs run (the default) every append is synced
//! as it is written. [`CrashDisk::pause_syncs`] holds them, so that a test (or the simulator)
//! chooses when the disk syncs: at once ([`CrashDisk::sync`]), or a sync that takes time
//! ([`CrashDisk::begin_sync`], then [`CrashDisk::complete_sync`], which makes durable only
//! what was written before it began). [`CrashDisk::crash`] throws away everything not durable;
//! [`CrashDisk::crash_keeping`] keeps a prefix of it (what the page cache happened to write
//! back before the power failed), optionally with the last write of the prefix torn (a prefix
//! of its entries). [`CrashDisk::fail_writes`] makes every write fail with an IO error. After a
//! crash, [`CrashDisk::store`] gives the log a restarted node recovers.
//!
//! The disk also holds the node's latest state-machine snapshot ([`SnapshotSlot`]): a file
//! written, synced and renamed into place, so durable as soon as it is written.
//!
//! Nothing here reads a clock or draws a random number: the simulator drives it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use openraft::OptionalSend;
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};

use crate::durable::{DurableIndex, DurableLog, DurableWatch};
use crate::lock;
use crate::snapshot_file::SnapshotBytes;
use crate::types::TypeConfig;

type C = TypeConfig;

/// The contents of a log: what a store reads, or what survives a crash.
#[derive(Clone, Default)]
struct Contents {
    vote: Option<VoteOf<C>>,
    committed: Option<LogIdOf<C>>,
    last_purged: Option<LogIdOf<C>>,
    log: BTreeMap<u64, EntryOf<C>>,
}

impl Contents {
    fn last(&self) -> Option<u64> {
        self.log.keys().next_back().copied().or(self.last_purged.map(|id| id.index()))
    }

    fn last_index(&self) -> u64 {
        self.last().unwrap_or(0)
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append(entries) => {
                for entry in entries {
                    self.log.insert(entry.index(), entry.clone());
                }
            }
            Op::Committed(committed) => self.committed = *committed,
        }
    }
}

/// A write that is not durable until a sync.
enum Op {
    Append(Vec<EntryOf<C>>),
    Committed(Option<LogIdOf<C>>),
}

struct Disk {
    /// What readers see.
    current: Contents,
    /// What a crash leaves.
    synced: Contents,
    /// The writes made since the last sync, by sequence number, in order.
    unsynced: VecDeque<(u64, Op)>,
    /// The sequence number of the next write.
    next_seq: u64,
    /// Flush callbacks of appends not yet durable, with their write's sequence number.
    pending: VecDeque<(u64, IOFlushed<C>)>,
    paused: bool,
    failing: bool,
    durable: DurableIndex,
    /// The latest state-machine snapshot.
    snapshot: Option<(SnapshotMetaOf<C>, SnapshotBytes)>,
    syncs: u64,
    crashes: u64,
    /// Woken by every unsynced write: what a syncer waits on.
    written: Arc<tokio::sync::Notify>,
}

impl Disk {
    /// Makes every write up to sequence number `seq` durable and completes its callbacks.
    fn sync_through(&mut self, seq: u64) {
        while self.unsynced.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((_, op)) = self.unsynced.pop_front() {
                self.synced.apply(&op);
            }
        }
        if let Some(last) = self.synced.last() {
            self.durable.raise(last);
        }
        self.syncs += 1;
        while self.pending.front().is_some_and(|(s, _)| *s <= seq) {
            if let Some((_, callback)) = self.pending.pop_front() {
                callback.io_completed(Ok(()));
            }
        }
    }

    /// Makes every write so far durable.
    fn sync(&mut self) {
        self.sync_through(self.next_seq.saturating_sub(1));
    }

    /// Records an unsynced write (visible at once).
    fn write(&mut self, op: Op) -> u64 {
        self.current.apply(&op);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unsynced.push_back((seq, op));
        self.written.notify_one();
        seq
    }
}

/// A sync that has begun and not completed: [`CrashDisk::begin_sync`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncTicket {
    /// The last write it covers.
    through: u64,
    /// The disk's crash count when it began: a crash in between voids it.
    crashes: u64,
}

/// A simulated disk holding one node's log and latest snapshot. Clones share the disk.
#[derive(Clone)]
pub struct CrashDisk {
    disk: Arc<Mutex<Disk>>,
}

impl std::fmt::Debug for CrashDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (readable, durable) = self.last_index();
        let (syncs, crashes) = self.counts();
        f.debug_struct("CrashDisk")
            .field("readable", &readable)
            .field("durable", &durable)
            .field("syncs", &syncs)
            .field("crashes", &crashes)
            .finish()
    }
}

impl Default for CrashDisk {
    fn default() -> Self {
        Self::new()
    }
}

impl CrashDisk {
    /// An empty disk whose syncs run.
    pub fn new() -> Self {
        let disk = Disk {
            current: Contents::default(),
            synced: Contents::default(),
            unsynced: VecDeque::new(),
            next_seq: 1,
            pending: VecDeque::new(),
            paused: false,
            failing: false,
            durable: DurableIndex::up_to(None),
            snapshot: None,
            syncs: 0,
            crashes: 0,
            written: Arc::default(),
        };
        Self { disk: Arc::new(Mutex::new(disk)) }
    }

    /// The log store on this disk, as a node (re)starting now finds it. A store taken before
    /// a crash fails every call after it: the node that used it is gone.
    pub fn store(&self) -> CrashLogStore {
        let incarnation = lock(&self.disk).crashes;
        CrashLogStore { disk: self.clone(), incarnation }
    }

    /// The snapshot slot on this disk, for the state machine of a node (re)starting now; like
    /// [`CrashDisk::store`], one taken before a crash fails every call after it.
    pub fn snapshot_slot(&self) -> SnapshotSlot {
        let incarnation = lock(&self.disk).crashes;
        SnapshotSlot { disk: self.clone(), incarnation }
    }

    /// Holds syncs (appends stay unsynced, their callbacks wait) or lets them run again (and
    /// syncs what waits).
    pub fn pause_syncs(&self, paused: bool) {
        let mut disk = lock(&self.disk);
        disk.paused = paused;
        if !paused {
            disk.sync();
        }
    }

    /// Syncs now: everything written becomes durable and its callbacks complete.
    pub fn sync(&self) {
        lock(&self.disk).sync();
    }

    /// Whether writes wait for a sync (syncs are paused and something was written since the
    /// last one).
    pub fn sync_due(&self) -> bool {
        let disk = lock(&self.disk);
        disk.paused && !disk.unsynced.is_empty()
    }

    /// Waits until something is written that a sync would make durable (at once if something
    /// was written since the last wait).
    pub async fn written(&self) {
        let written = Arc::clone(&lock(&self.disk).written);
        written.notified().await;
    }

    /// A sync begins: it will make durable what was written until now, and nothing written
    /// later.
    pub fn begin_sync(&self) -> SyncTicket {
        let disk = lock(&self.disk);
        SyncTicket { through: disk.next_seq.saturating_sub(1), crashes: disk.crashes }
    }

    /// The sync `ticket` completes (nothing, if the disk crashed since it began).
    pub fn complete_sync(&self, ticket: SyncTicket) {
        let mut disk = lock(&self.disk);
        if disk.crashes == ticket.crashes {
            disk.sync_through(ticket.through);
        }
    }

    /// From now on (`true`) every write fails with an IO error, until `false`.
    pub fn fail_writes(&self, failing: bool) {
        lock(&self.disk).failing = failing;
    }

    /// The power fails: everything written since the last sync is lost, and the callbacks that
    /// waited for it never complete. Syncs run again afterwards. Stop the node that used the
    /// disk first; a store taken afterwards sees what survived.
    pub fn crash(&self) {
        self.crash_keeping(0, None);
    }

    /// The power fails after the first `kept` unsynced writes reached the disk anyway; with
    /// `torn` = `Some(n)`, only the first `n` entries of the last of them (an append) did. The
    /// rest is lost as in [`CrashDisk::crash`]. Returns how many unsynced writes there were.
    pub fn crash_keeping(&self, kept: usize, torn: Option<usize>) -> usize {
        let mut disk = lock(&self.disk);
        let unsynced = std::mem::take(&mut disk.unsynced);
        let count = unsynced.len();
        let kept = kept.min(count);
        for (i, (_, op)) in unsynced.into_iter().take(kept).enumerate() {
            match (op, torn) {
                (Op::Append(mut entries), Some(n)) if i + 1 == kept => {
                    entries.truncate(n);
                    disk.synced.apply(&Op::Append(entries));
                }
                (op, _) => disk.synced.apply(&op),
            }
        }
        disk.current = disk.synced.clone();
        disk.pending.clear();
        disk.paused = false;
        disk.failing = false;
        disk.crashes += 1;
        // The old node's waits end (with an error); its store's handles fail from now on; the
        // restarted node starts afresh.
        disk.durable.close();
        disk.durable = DurableIndex::up_to(disk.current.last());
        count
    }

    /// The last index of the log as a reader sees it, and as a crash would leave it.
    pub fn last_index(&self) -> (u64, u64) {
        let disk = lock(&self.disk);
        (disk.current.last_index(), disk.synced.last_index())
    }

    /// Every entry below this index is durable (as the waiting state machine sees it).
    pub fn durable_below(&self) -> u64 {
        lock(&self.disk).durable.below()
    }

    /// The index the state machine waits for before it applies it, not yet durable (see
    /// [`DurableIndex::waiting_for`]).
    pub fn apply_waits_for(&self) -> Option<u64> {
        lock(&self.disk).durable.waiting_for()
    }

    /// How many syncs and crashes the disk has seen.
    pub fn counts(&self) -> (u64, u64) {
        let disk = lock(&self.disk);
        (disk.syncs, disk.crashes)
    }
}

/// The state machine's latest snapshot on a [`CrashDisk`].
#[derive(Clone)]
pub struct SnapshotSlot {
    disk: CrashDisk,
    /// The disk's crash count when the slot was taken.
    incarnation: u64,
}

impl SnapshotSlot {
    fn with<T>(&self, f: impl FnOnce(&mut Disk) -> T) -> Result<T, io::Error> {
        let mut disk = lock(&self.disk.disk);
        if disk.crashes != self.incarnation {
            return Err(io::Error::other("the disk crashed under this snapshot slot; restart on a new one"));
        }
        if disk.failing {
            return Err(io::Error::other("injected IO error: the disk fails every write"));
        }
        Ok(f(&mut disk))
    }

    /// The snapshot kept, if any.
    pub fn read(&self) -> Option<(SnapshotMetaOf<C>, SnapshotBytes)> {
        lock(&self.disk.disk).snapshot.clone()
    }

    /// Keeps `snapshot` (durable at once: written, synced and renamed into place).
    ///
    /// # Errors
    /// After a crash of the disk, or while it fails writes.
    pub fn write(&self, meta: &SnapshotMetaOf<C>, snapshot: SnapshotBytes) -> io::Result<()> {
        self.with(|d| d.snapshot = Some((meta.clone(), snapshot)))
    }
}

/// A log store on a [`CrashDisk`]. Clones share the disk.
#[derive(Clone)]
pub struct CrashLogStore {
    disk: CrashDisk,
    /// The disk's crash count when the store was taken.
    incarnation: u64,
}

impl CrashLogStore {
    fn with<T>(&self, f: impl FnOnce(&mut Disk) -> T) -> Result<T, io::Error> {
        let mut disk = lock(&self.disk.disk);
        if disk.crashes != self.incarnation {
            return Err(io::Error::other("the disk crashed under this store; restart on a new one"));
        }
        Ok(f(&mut disk))
    }

    /// As [`CrashLogStore::with`], for a write: fails while the disk fails writes.
    fn write<T>(&self, f: impl FnOnce(&mut Disk) -> T) -> Result<T, io::Error> {
        self.with(|d| {
            if d.failing { Err(io::Error::other("injected IO error: the disk fails every write")) } else { Ok(f(d)) }
        })?
    }
}

impl DurableLog for CrashLogStore {
    fn durable_watch(&self) -> DurableWatch {
        lock(&self.disk.disk).durable.watch()
    }
}

impl RaftLogReader<C> for CrashLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        self.with(|d| d.current.log.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.with(|d| d.current.vote)
    }
}

impl RaftLogStorage<C> for CrashLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        self.with(|d| {
            let c = &d.current;
            let last = c.log.values().next_back().map(|e| e.log_id()).or(c.last_purged);
            LogState { last_purged_log_id: c.last_purged, last_log_id: last }
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        // A synced write.
        self.write(|d| {
            d.sync();
            d.current.vote = Some(*vote);
            d.synced.vote = Some(*vote);
        })
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        // Unsynced: durable with the next sync.
        self.write(|d| {
            d.write(Op::Committed(committed));
        })
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        self.with(|d| d.current.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<EntryOf<C>> = entries.into_iter().collect();
        self.write(|d| {
            let seq = d.write(Op::Append(entries));
            d.pending.push_back((seq, callback));
            if !d.paused {
                d.sync();
            }
        })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let first_removed = last_log_id.map_or(0, |id| id.index() + 1);
        self.write(|d| {
            // A synced write: what was written before is durable too.
            d.sync();
            d.current.log.split_off(&first_removed);
            d.synced.log.split_off(&first_removed);
            d.durable.cut(d.current.last());
        })
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.write(|d| {
            d.sync();
            for contents in [&mut d.current, &mut d.synced] {
                let kept = contents.log.split_off(&(log_id.index() + 1));
                contents.log = kept;
                contents.last_purged = Some(log_id);
            }
        })
    }
}
