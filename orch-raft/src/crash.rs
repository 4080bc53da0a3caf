//! A log store on a disk that loses what it did not sync: the disk model of the crash tests
//! and of the simulator.
//!
//! A [`CrashDisk`] holds two copies of the log: what a reader sees now, and what a crash leaves
//! (the synced part). It behaves as the RocksDB store does: appends are visible at once and
//! durable at the next sync (their flush callbacks complete then); the vote, truncations and
//! purges are synced writes (durable at once, and like an `fsync` they make every earlier
//! write durable too); the committed hint is unsynced. While syncs run (the default) every
//! append is synced as it is written; [`CrashDisk::pause_syncs`] holds them, so that a test (or
//! the simulator) chooses when the disk syncs, and [`CrashDisk::crash`] throws away everything
//! since the last sync. After a crash, [`CrashDisk::store`] gives the log a restarted node
//! recovers.
//!
//! Nothing here reads a clock or draws a random number: the simulator drives it.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use openraft::OptionalSend;
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};

use crate::durable::{DurableIndex, DurableLog, DurableWatch};
use crate::lock;
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
}

struct Disk {
    /// What readers see.
    current: Contents,
    /// What a crash leaves.
    synced: Contents,
    /// Flush callbacks of appends not yet synced, in order.
    pending: Vec<IOFlushed<C>>,
    paused: bool,
    durable: DurableIndex,
    syncs: u64,
    crashes: u64,
}

impl Disk {
    fn sync(&mut self) {
        self.synced = self.current.clone();
        if let Some(last) = self.current.last() {
            self.durable.raise(last);
        }
        self.syncs += 1;
        for callback in self.pending.drain(..) {
            callback.io_completed(Ok(()));
        }
    }
}

/// A simulated disk holding one node's log. Clones share the disk.
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
            pending: Vec::new(),
            paused: false,
            durable: DurableIndex::up_to(None),
            syncs: 0,
            crashes: 0,
        };
        Self { disk: Arc::new(Mutex::new(disk)) }
    }

    /// The log store on this disk, as a node (re)starting now finds it. A store taken before
    /// a crash fails every call after it: the node that used it is gone.
    pub fn store(&self) -> CrashLogStore {
        let incarnation = lock(&self.disk).crashes;
        CrashLogStore { disk: self.clone(), incarnation }
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

    /// The power fails: everything written since the last sync is lost, and the callbacks that
    /// waited for it never complete. Syncs run again afterwards. Stop the node that used the
    /// disk first; a store taken afterwards sees what survived.
    pub fn crash(&self) {
        let mut disk = lock(&self.disk);
        disk.current = disk.synced.clone();
        disk.pending.clear();
        disk.paused = false;
        disk.crashes += 1;
        // The old node's waits end (with an error); its store's handles fail from now on; the
        // restarted node starts afresh.
        disk.durable.close();
        disk.durable = DurableIndex::up_to(disk.current.last());
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
        self.with(|d| {
            d.current.vote = Some(*vote);
            d.sync();
        })
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        // Unsynced: durable with the next sync.
        self.with(|d| d.current.committed = committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        self.with(|d| d.current.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.with(|d| {
            for entry in entries {
                d.current.log.insert(entry.index(), entry);
            }
            d.pending.push(callback);
            if !d.paused {
                d.sync();
            }
        })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let first_removed = last_log_id.map_or(0, |id| id.index() + 1);
        self.with(|d| {
            d.current.log.split_off(&first_removed);
            // A synced write: what was written before is durable too.
            d.sync();
            d.durable.cut(d.current.last());
        })
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        self.with(|d| {
            let kept = d.current.log.split_off(&(log_id.index() + 1));
            d.current.log = kept;
            d.current.last_purged = Some(log_id);
            d.sync();
        })
    }
}
