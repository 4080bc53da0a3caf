//! The in-memory log store.
//!
//! It implements the same openraft traits as the RocksDB log store, for fast tests and for the
//! deterministic simulator, where the disk is simulated; nothing here is durable. Its partner is
//! [`crate::StateMachineStore::in_memory`].

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

#[derive(Default)]
struct LogInner {
    vote: Option<VoteOf<C>>,
    committed: Option<LogIdOf<C>>,
    last_purged: Option<LogIdOf<C>>,
    log: BTreeMap<u64, EntryOf<C>>,
}

/// An in-memory Raft log. Clones share the log. It completes every write at once and counts
/// it durable at once (see [`crate::crash::CrashLogStore`] for a log that can lose writes).
#[derive(Clone, Default)]
pub struct MemLogStore {
    inner: Arc<Mutex<LogInner>>,
}

impl DurableLog for MemLogStore {
    fn durable_watch(&self) -> DurableWatch {
        // Nothing to wait for: every write counts as durable when it returns. (The index is
        // dropped at once; a wait below u64::MAX returns before it looks at the sender.)
        DurableIndex::new(u64::MAX).watch()
    }
}

impl RaftLogReader<C> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<EntryOf<C>>, io::Error> {
        Ok(lock(&self.inner).log.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<VoteOf<C>>, io::Error> {
        Ok(lock(&self.inner).vote)
    }
}

impl RaftLogStorage<C> for MemLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<C>, io::Error> {
        let inner = lock(&self.inner);
        let last = inner.log.values().next_back().map(|e| e.log_id()).or_else(|| inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &VoteOf<C>) -> Result<(), io::Error> {
        lock(&self.inner).vote = Some(*vote);
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        lock(&self.inner).committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogIdOf<C>>, io::Error> {
        Ok(lock(&self.inner).committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<C>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = EntryOf<C>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut inner = lock(&self.inner);
            for entry in entries {
                inner.log.insert(entry.index(), entry);
            }
        }
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogIdOf<C>>) -> Result<(), io::Error> {
        let first_removed = last_log_id.map_or(0, |id| id.index() + 1);
        lock(&self.inner).log.split_off(&first_removed);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogIdOf<C>) -> Result<(), io::Error> {
        let mut inner = lock(&self.inner);
        let kept = inner.log.split_off(&(log_id.index() + 1));
        inner.log = kept;
        inner.last_purged = Some(log_id);
        Ok(())
    }
}
