//! The RocksDB log store, with group commit.
//!
//! Layout: one RocksDB per node, column family `log` (big-endian index -> entry) and `meta`
//! (`vote`, `committed`, `purged`).
//!
//! Group commit: `append` writes the entries to RocksDB at once without syncing (so they are
//! readable when it returns, as openraft requires) and queues the flush callback. A syncer
//! thread takes every callback queued so far, makes all of them durable with one
//! `FlushWAL(sync)` (an fsync of the write-ahead log, which holds every earlier write), then
//! completes the callbacks in append order. Appends that arrive while a sync is in flight
//! wait for the next one, together. The vote is written with a synced write before
//! `save_vote` returns.
//!
//! To ensure correctness:
//! - a callback completes only after a sync that began after its entries were written;
//! - callbacks complete in the order of their appends (one FIFO queue, one syncer);
//! - `purge` records the purged log id and deletes the entries in one atomic batch;
//! - `truncate_after` deletes a suffix, so no hole can appear.
//!
//! Reads of the newest entries (to apply them, to replicate them) are served from a cache of
//! the entries last appended ([`crate::log_cache`]).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use openraft::OptionalSend;
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use tokio::sync::mpsc;

use crate::codec;
use crate::durable::{DurableIndex, DurableLog, DurableWatch};
use crate::grpc::{APPEND_BYTES_MAX, ENTRY_FRAMING_BYTES_MAX};
use crate::log_cache::{LOG_CACHE_BYTES_MAX, LogCache};
use crate::types::TypeConfig;

type C = TypeConfig;

/// The most appends whose flush callbacks may wait for a sync; `append` waits beyond it.
pub const SYNC_QUEUE_MAX: usize = 4096;
/// The most appends one sync completes (the rest wait for the next).
pub const SYNC_GROUP_MAX: usize = 1024;

const CF_LOG: &str = "log";
const CF_META: &str = "meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";

fn io_err(e: rocksdb::Error) -> io::Error {
    io::Error::other(e)
}

/// Counters of the group commit, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Syncs performed.
    pub syncs: AtomicU64,
    /// Appends made durable.
    pub appends: AtomicU64,
}

/// A reader of the RocksDB log; cheap to clone.
#[derive(Clone)]
pub struct RocksLogReader {
    db: Arc<OwnedDb>,
    /// Held across every write to the log, so that it and the log agree for a reader.
    cache: Arc<std::sync::Mutex<LogCache>>,
}

/// Tells whether a log store's database was closed (see [`RocksLogStore::closed_probe`]).
#[derive(Clone, Debug)]
pub struct ClosedProbe(Arc<AtomicBool>);

impl ClosedProbe {
    /// A probe of a store with no database to close (a simulated disk).
    pub(crate) fn closed() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }

    /// True once the store and all its readers are dropped and the database closed.
    pub fn is_closed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Raises its flag when dropped.
struct CloseFlag(Arc<AtomicBool>);

impl Drop for CloseFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The database and its close flag: fields drop in order, so the flag rises only after the
/// database closed (its lock file released).
struct OwnedDb {
    db: DB,
    _closed: CloseFlag,
}

impl std::ops::Deref for OwnedDb {
    type Target = DB;

    fn deref(&self) -> &DB {
        &self.db
    }
}

/// The last index written to the log (durable or not) and the number of truncations so far:
/// the syncer makes durable what was written before it syncs, unless a truncation intervened.
#[derive(Debug, Default)]
struct Written {
    last: u64,
    truncations: u64,
}

/// The RocksDB log store.
pub struct RocksLogStore {
    reader: RocksLogReader,
    /// None only while dropping.
    syncer: Option<mpsc::Sender<IOFlushed<C>>>,
    syncer_thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<SyncStats>,
    written: Arc<std::sync::Mutex<Written>>,
    durable: DurableIndex,
}

impl DurableLog for RocksLogStore {
    fn durable_watch(&self) -> DurableWatch {
        self.durable.watch()
    }
}

impl RocksLogStore {
    /// What the log holds durably.
    pub fn durable_index(&self) -> DurableIndex {
        self.durable.clone()
    }
}

impl Drop for RocksLogStore {
    /// Stops the syncer after it completes what is queued, so that when the store is gone its
    /// database is closed (its files can be reopened at once).
    fn drop(&mut self) {
        drop(self.syncer.take());
        if let Some(thread) = self.syncer_thread.take() {
            let _ = thread.join();
        }
        self.durable.close();
    }
}

impl RocksLogStore {
    /// Opens (or creates) the log in `dir` and starts its syncer thread, which ends when the
    /// store is dropped.
    pub fn open(dir: &Path) -> Result<Self, io::Error> {
        Self::open_with_cache(dir, LOG_CACHE_BYTES_MAX)
    }

    /// As [`RocksLogStore::open`], with a cache of the newest entries of at most `cache_bytes`
    /// encoded bytes (0: none).
    pub fn open_with_cache(dir: &Path, cache_bytes: usize) -> Result<Self, io::Error> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        let cfs = [CF_LOG, CF_META].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let closed = Arc::new(AtomicBool::new(false));
        let db = DB::open_cf_descriptors(&opts, dir, cfs).map_err(io_err)?;
        let db = Arc::new(OwnedDb { db, _closed: CloseFlag(Arc::clone(&closed)) });
        // What the log holds now is made durable before anything is applied from it (after a
        // kill, unsynced writes may still be in the page cache only). RocksDB's recovery
        // flushed the replayed WAL to synced table files (`avoid_flush_during_recovery` is off
        // by default); this syncs the live WAL.
        db.flush_wal(true).map_err(io_err)?;
        let cache = Arc::new(std::sync::Mutex::new(LogCache::new(cache_bytes)));
        let reader = RocksLogReader { db: Arc::clone(&db), cache };
        let purged = reader.get_meta(KEY_PURGED)?.map(|v| codec::decode_log_id(&v)).transpose()?;
        let last = reader.last_entry()?.map(|e| e.index()).or(purged.map(|id| id.index));
        let written = Arc::new(std::sync::Mutex::new(Written { last: last.unwrap_or(0), truncations: 0 }));
        let durable = DurableIndex::up_to(last);
        let (tx, mut rx) = mpsc::channel::<IOFlushed<C>>(SYNC_QUEUE_MAX);
        let stats = Arc::new(SyncStats::default());
        let (sync_db, sync_stats) = (Arc::clone(&db), Arc::clone(&stats));
        let (sync_written, sync_durable) = (Arc::clone(&written), durable.clone());
        let syncer_thread = std::thread::Builder::new().name("orch-raft-log-sync".into()).spawn(move || {
            let mut group = Vec::with_capacity(SYNC_GROUP_MAX);
            while let Some(first) = rx.blocking_recv() {
                group.push(first);
                while group.len() < SYNC_GROUP_MAX {
                    match rx.try_recv() {
                        Ok(more) => group.push(more),
                        Err(_) => break,
                    }
                }
                // Everything written before this point is in the WAL this sync makes durable.
                let (last, truncations) = {
                    let w = crate::lock(&sync_written);
                    (w.last, w.truncations)
                };
                let result = sync_db.flush_wal(true);
                if result.is_ok() {
                    let w = crate::lock(&sync_written);
                    // A truncation since then set the index itself (its write was synced).
                    if w.truncations == truncations {
                        sync_durable.raise(last);
                    }
                } else {
                    // Nothing more becomes durable: waiters end with an error.
                    sync_durable.close();
                }
                sync_stats.syncs.fetch_add(1, Ordering::Relaxed);
                sync_stats.appends.fetch_add(group.len() as u64, Ordering::Relaxed);
                for callback in group.drain(..) {
                    callback.io_completed(result.as_ref().map(|_| ()).map_err(|e| io::Error::other(e.clone())));
                }
            }
        })?;
        Ok(Self { reader, syncer: Some(tx), syncer_thread: Some(syncer_thread), stats, written, durable })
    }

    /// Tells, later, whether the database was closed: every store and reader of it dropped.
    pub fn closed_probe(&self) -> ClosedProbe {
        ClosedProbe(Arc::clone(&self.reader.db._closed.0))
    }

    /// The group commit counters.
    pub fn stats(&self) -> Arc<SyncStats> {
        Arc::clone(&self.stats)
    }

    fn db(&self) -> &DB {
        &self.reader.db
    }

    fn put_meta(&self, key: &[u8], value: &[u8], sync: bool) -> Result<(), io::Error> {
        let cf = self.db().cf_handle(CF_META).ok_or_else(|| io::Error::other("missing column family meta"))?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db().put_cf_opt(&cf, key, value, &opts).map_err(io_err)
    }

    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, io::Error> {
        self.reader.get_meta(key)
    }
}

impl RocksLogReader {
    fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, io::Error> {
        let cf = self.db.cf_handle(CF_META).ok_or_else(|| io::Error::other("missing column family meta"))?;
        self.db.get_cf(&cf, key).map_err(io_err)
    }

    fn last_entry(&self) -> Result<Option<EntryOf<C>>, io::Error> {
        let cf = self.db.cf_handle(CF_LOG).ok_or_else(|| io::Error::other("missing column family log"))?;
        match self.db.iterator_cf(&cf, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (_, value) = item.map_err(io_err)?;
                codec::decode_entry(&value).map(Some)
            }
        }
    }
}

impl RaftLogReader<C> for RocksLogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        if let Some(entries) = crate::lock(&self.cache).range(start, &range) {
            return Ok(entries);
        }
        let cf = self.db.cf_handle(CF_LOG).ok_or_else(|| io::Error::other("missing column family log"))?;
        let mut entries = Vec::new();
        let key = codec::index_key(start);
        for item in self.db.iterator_cf(&cf, IteratorMode::From(&key, Direction::Forward)) {
            let (key, value) = item.map_err(io_err)?;
            let index = codec::key_index(&key)?;
            if !range.contains(&index) {
                break;
            }
            entries.push(codec::decode_entry(&value)?);
        }
        Ok(entries)
    }

    /// What replication sends in one append: the entries from `start`, up to `end` or
    /// [`APPEND_BYTES_MAX`] bytes with their framing, whichever comes first (at least one).
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> Result<Vec<EntryOf<C>>, io::Error> {
        if let Some(entries) = crate::lock(&self.cache).limited(start, end) {
            return Ok(entries);
        }
        let cf = self.db.cf_handle(CF_LOG).ok_or_else(|| io::Error::other("missing column family log"))?;
        let mut entries = Vec::new();
        let mut bytes = 0;
        let key = codec::index_key(start);
        for item in self.db.iterator_cf(&cf, IteratorMode::From(&key, Direction::Forward)) {
            let (key, value) = item.map_err(io_err)?;
            let index = codec::key_index(&key)?;
            bytes += value.len() + ENTRY_FRAMING_BYTES_MAX;
            if index >= end || (bytes > APPEND_BYTES_MAX && !entries.is_empty()) {
                break;
            }
            entries.push(codec::decode_entry(&value)?);
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        self.get_meta(KEY_VOTE)?.map(|v| codec::decode_vote(&v)).transpose()
    }
}

impl RaftLogStorage<C> for RocksLogStore {
    type LogReader = RocksLogReader;

    async fn get_log_state(&mut self) -> Result<openraft::storage::LogState<C>, io::Error> {
        let last_purged = self.get_meta(KEY_PURGED)?.map(|v| codec::decode_log_id(&v)).transpose()?;
        let last = self.reader.last_entry()?.map(|e| e.log_id()).or(last_purged);
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        // Durable before returning: a vote forgotten in a crash could be cast twice.
        self.put_meta(KEY_VOTE, &codec::encode_vote(vote), true)
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        // A hint for re-applying after a restart; it becomes durable with the next sync.
        match committed {
            Some(id) => self.put_meta(KEY_COMMITTED, &codec::encode_log_id(&id), false),
            None => Ok(()),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        self.get_meta(KEY_COMMITTED)?.map(|v| codec::decode_log_id(&v)).transpose()
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let cf = self.db().cf_handle(CF_LOG).ok_or_else(|| io::Error::other("missing column family log"))?;
        let mut batch = WriteBatch::default();
        let mut written = Vec::new();
        for entry in entries {
            let bytes = codec::encode_entry(&entry);
            batch.put_cf(&cf, codec::index_key(entry.index()), &bytes);
            written.push((entry, bytes.len()));
        }
        // Written now (readable at once), made durable by the syncer with the next group.
        let mut opts = WriteOptions::default();
        opts.set_sync(false);
        {
            let mut cache = crate::lock(&self.reader.cache);
            if let Err(e) = self.db().write_opt(batch, &opts) {
                // What the log holds now is not known: the cache no longer says.
                cache.clear();
                return Err(io_err(e));
            }
            if let Some((entry, _)) = written.last() {
                crate::lock(&self.written).last = entry.index();
            }
            for (entry, bytes) in written {
                cache.push(entry, bytes);
            }
        }
        let syncer = self.syncer.as_ref().ok_or_else(|| io::Error::other("the log store is closing"))?;
        syncer.send(callback).await.map_err(|_| io::Error::other("the log syncer thread has stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let first_removed = last_log_id.map_or(0, |id| id.index + 1);
        let cf = self.db().cf_handle(CF_LOG).ok_or_else(|| io::Error::other("missing column family log"))?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(&cf, codec::index_key(first_removed), codec::index_key(u64::MAX));
        batch.delete_cf(&cf, codec::index_key(u64::MAX));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        // The cache first, so that no lock is held across the fsync: a read meanwhile finds
        // the cut suffix in RocksDB only (nothing reads entries being truncated: they are not
        // committed), and none of the rest changes.
        crate::lock(&self.reader.cache).truncate(first_removed);
        if let Err(e) = self.db().write_opt(batch, &opts) {
            crate::lock(&self.reader.cache).clear();
            return Err(io_err(e));
        }
        // The synced write made everything before it durable: the log up to the cut.
        let kept = first_removed.checked_sub(1);
        let mut w = crate::lock(&self.written);
        w.last = kept.unwrap_or(0);
        w.truncations += 1;
        self.durable.cut(kept);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        let cf_log = self.db().cf_handle(CF_LOG).ok_or_else(|| io::Error::other("missing column family log"))?;
        let cf_meta = self.db().cf_handle(CF_META).ok_or_else(|| io::Error::other("missing column family meta"))?;
        // One atomic batch: the purged id is recorded with the deletion, never after it.
        let mut batch = WriteBatch::default();
        batch.put_cf(&cf_meta, KEY_PURGED, codec::encode_log_id(&log_id));
        batch.delete_range_cf(&cf_log, codec::index_key(0), codec::index_key(log_id.index.saturating_add(1)));
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        // Purged entries are never read again: the cache follows the write, with no lock held
        // across its fsync.
        let written = self.db().write_opt(batch, &opts);
        let mut cache = crate::lock(&self.reader.cache);
        match written {
            Ok(()) => {
                cache.purge(log_id.index);
                Ok(())
            }
            Err(e) => {
                cache.clear();
                Err(io_err(e))
            }
        }
    }
}
