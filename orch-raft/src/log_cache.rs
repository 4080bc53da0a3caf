//! The newest log entries, kept decoded beside the RocksDB log.
//!
//! Every entry is read back from the log at least three times after it is written: once to be
//! applied and once per follower to be replicated, each read a RocksDB lookup and a decode.
//! The cache keeps the entries last appended, as openraft handed them to `append`, so those
//! reads clone them instead (9% of the three-node burst's CPU was decoding entries read back).
//!
//! The cache always ends where the log ends: `append` adds at its end what it wrote, under
//! the cache's lock together with its (unsynced) RocksDB write, so a reader sees the cache and
//! the log agree; `truncate_after` cuts the cache before its synced write and `purge` after
//! it, so that no lock is held across an fsync (nothing reads the entries they remove). An
//! entry appended at or below the cache's last (openraft truncates first, so none is) stops
//! the cache until the next truncation says where the log ends. It starts empty
//! when the log is opened and drops its oldest entries beyond [`LOG_CACHE_BYTES_MAX`]; a read
//! that starts before its first entry goes to RocksDB. A cached entry equals the one RocksDB
//! would return: encoding and decoding an entry is the identity (orch-core's property test
//! `entries_round_trip`), so a leader applying the entry it was given applies what its
//! followers decode.

use std::collections::VecDeque;
use std::ops::RangeBounds;

use openraft::alias::EntryOf;
use openraft::entry::RaftEntry;

use crate::grpc::{APPEND_BYTES_MAX, ENTRY_FRAMING_BYTES_MAX};
use crate::types::TypeConfig;

type C = TypeConfig;

/// The most bytes of encoded entries the cache keeps (decoded, they take a few times that).
pub const LOG_CACHE_BYTES_MAX: usize = 32 << 20;

/// The newest entries of the log, each with its encoded size.
#[derive(Debug)]
pub(crate) struct LogCache {
    entries: VecDeque<(EntryOf<C>, usize)>,
    bytes: usize,
    bytes_max: usize,
    /// An append went back over the log without a truncation: the log's end is not known
    /// until the next one.
    stopped: bool,
}

impl LogCache {
    pub(crate) fn new(bytes_max: usize) -> Self {
        Self { entries: VecDeque::new(), bytes: 0, bytes_max, stopped: false }
    }

    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.index())
    }

    fn last(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.index())
    }

    /// Notes an entry just written at the log's end, of `bytes` encoded.
    pub(crate) fn push(&mut self, entry: EntryOf<C>, bytes: usize) {
        if self.stopped {
            return;
        }
        match self.last() {
            // An append over entries the log still holds beyond it (openraft truncates first,
            // so none comes): the log's end is unknown until a truncation.
            Some(last) if entry.index() <= last => {
                self.clear();
                self.stopped = true;
                return;
            }
            // A hole (none comes either): the log ends at this entry; start over from it.
            Some(last) if entry.index() > last.saturating_add(1) => self.clear(),
            _ => {}
        }
        self.entries.push_back((entry, bytes));
        self.bytes += bytes;
        while self.bytes > self.bytes_max {
            match self.entries.pop_front() {
                Some((_, b)) => self.bytes -= b,
                None => break,
            }
        }
    }

    /// Forgets the entries from `first_removed` on (the log was truncated there: it ends
    /// before it, and an append after follows it).
    pub(crate) fn truncate(&mut self, first_removed: u64) {
        self.stopped = false;
        while self.last().is_some_and(|last| last >= first_removed) {
            if let Some((_, b)) = self.entries.pop_back() {
                self.bytes -= b;
            }
        }
    }

    /// Forgets the entries up to `last_purged` (the log was purged up to there).
    pub(crate) fn purge(&mut self, last_purged: u64) {
        while self.first().is_some_and(|first| first <= last_purged) {
            if let Some((_, b)) = self.entries.pop_front() {
                self.bytes -= b;
            }
        }
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries of the log from `start` on, when the cache holds all of them (it ends
    /// where the log ends); `None` when `start` lies before it.
    fn from(&self, start: u64) -> Option<impl Iterator<Item = &(EntryOf<C>, usize)>> {
        let first = self.first()?;
        let skip = usize::try_from(start.checked_sub(first)?).ok()?;
        Some(self.entries.iter().skip(skip))
    }

    /// The entries of `range`, or `None` when the cache does not reach back to its start.
    pub(crate) fn range(&self, start: u64, range: &impl RangeBounds<u64>) -> Option<Vec<EntryOf<C>>> {
        let entries = self.from(start)?;
        Some(entries.take_while(|(e, _)| range.contains(&e.index())).map(|(e, _)| e.clone()).collect())
    }

    /// What replication sends in one append (as `limited_get_log_entries` reads RocksDB): the
    /// entries from `start` below `end`, up to [`APPEND_BYTES_MAX`] bytes with their framing
    /// (at least one); `None` when the cache does not reach back to `start`.
    pub(crate) fn limited(&self, start: u64, end: u64) -> Option<Vec<EntryOf<C>>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        for (entry, size) in self.from(start)? {
            bytes += size + ENTRY_FRAMING_BYTES_MAX;
            if entry.index() >= end || (bytes > APPEND_BYTES_MAX && !out.is_empty()) {
                break;
            }
            out.push(entry.clone());
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> EntryOf<C> {
        openraft::testing::blank_ent::<C>(1, 1, index)
    }

    fn indexes(entries: Option<Vec<EntryOf<C>>>) -> Option<Vec<u64>> {
        entries.map(|e| e.iter().map(RaftEntry::index).collect())
    }

    #[test]
    fn the_cache_keeps_the_newest_entries_within_its_bytes() {
        let mut cache = LogCache::new(30);
        for i in 1..=5 {
            cache.push(entry(i), 10);
        }
        // 50 bytes pushed, 30 kept: the newest three.
        assert_eq!(indexes(cache.range(3, &(3..))), Some(vec![3, 4, 5]));
        assert_eq!(indexes(cache.range(2, &(2..))), None, "before the cache: read the log");
        assert_eq!(indexes(cache.range(4, &(4..5))), Some(vec![4]));
        assert_eq!(indexes(cache.range(6, &(6..))), Some(vec![]), "past the log's end: nothing, as the log");
        cache.truncate(5);
        assert_eq!(indexes(cache.range(3, &(3..))), Some(vec![3, 4]));
        cache.push(entry(5), 10);
        cache.purge(3);
        assert_eq!(indexes(cache.range(3, &(3..))), None);
        assert_eq!(indexes(cache.range(4, &(4..))), Some(vec![4, 5]));
        // A hole (none should come) starts the cache over from the entry after it.
        cache.push(entry(9), 10);
        assert_eq!(indexes(cache.range(4, &(4..))), None);
        assert_eq!(indexes(cache.range(9, &(9..))), Some(vec![9]));
        // An append back over the log without a truncation (none should come either): the
        // log's end is unknown, so nothing is served until a truncation says where it is.
        cache.push(entry(10), 10);
        cache.push(entry(8), 10);
        cache.push(entry(9), 10);
        assert_eq!(indexes(cache.range(8, &(8..))), None);
        assert_eq!(indexes(cache.range(9, &(9..))), None);
        cache.truncate(9);
        cache.push(entry(9), 10);
        assert_eq!(indexes(cache.range(9, &(9..))), Some(vec![9]));
        cache.truncate(0);
        assert_eq!((cache.entries.len(), cache.bytes), (0, 0));
    }

    #[test]
    fn a_limited_read_stops_at_the_append_size_but_takes_one() {
        let mut cache = LogCache::new(usize::MAX);
        let big = APPEND_BYTES_MAX / 2;
        for i in 1..=4 {
            cache.push(entry(i), big);
        }
        assert_eq!(indexes(cache.limited(1, 10)), Some(vec![1]), "two would exceed the append's bytes");
        assert_eq!(indexes(cache.limited(3, 4)), Some(vec![3]));
        assert_eq!(indexes(cache.limited(0, 10)), None);
        let mut small = LogCache::new(usize::MAX);
        small.push(entry(1), APPEND_BYTES_MAX * 2);
        assert_eq!(indexes(small.limited(1, 10)), Some(vec![1]), "at least one");
    }
}
