//! In-memory log and state-machine stores.
//!
//! They implement the same openraft traits as the RocksDB stores will, and run the same
//! orch-core state machine. They are for fast tests and for the deterministic simulator,
//! where the disk is simulated; nothing here is durable.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use futures_util::{Stream, StreamExt};
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{
    EntryResponder, IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine,
    Snapshot, SnapshotMeta,
};
use openraft::{EntryPayload, OptionalSend, StoredMembership};
use orch_core::State;

use crate::types::{Response, TypeConfig};

type C = TypeConfig;

/// Locks a mutex; a panic elsewhere while it was held does not make the data unusable here.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Default)]
struct LogInner {
    vote: Option<VoteOf<C>>,
    committed: Option<LogIdOf<C>>,
    last_purged: Option<LogIdOf<C>>,
    log: BTreeMap<u64, EntryOf<C>>,
}

/// An in-memory Raft log. Clones share the log.
#[derive(Clone, Default)]
pub struct MemLogStore {
    inner: Arc<Mutex<LogInner>>,
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

#[derive(Default)]
struct SmInner {
    state: State,
    last_applied: Option<LogIdOf<C>>,
    membership: StoredMembershipOf<C>,
    snapshot: Option<(SnapshotMetaOf<C>, Vec<u8>)>,
}

/// An in-memory state machine running orch-core's [`State`]. Clones share the state.
#[derive(Clone, Default)]
pub struct MemStateMachine {
    inner: Arc<Mutex<SmInner>>,
}

impl MemStateMachine {
    /// Runs `f` on the current cluster state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&lock(&self.inner).state)
    }
}

impl RaftSnapshotBuilder<C> for MemStateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<C, Vec<u8>>, io::Error> {
        // The view is consistent: it is taken under the lock that `apply` holds per entry.
        let mut inner = lock(&self.inner);
        let data = inner.state.to_snapshot();
        let meta = SnapshotMeta { last_log_id: inner.last_applied, last_membership: inner.membership.clone() };
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<C> for MemStateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogIdOf<C>>, StoredMembershipOf<C>), io::Error> {
        let inner = lock(&self.inner);
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<C>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let response = {
                let mut inner = lock(&self.inner);
                let log_id = entry.log_id();
                let response = match entry.payload {
                    EntryPayload::Blank => Response::default(),
                    EntryPayload::Normal(batch) => {
                        Response { outcomes: inner.state.apply(log_id.index(), batch).outcomes }
                    }
                    EntryPayload::Membership(membership) => {
                        inner.membership = StoredMembership::new(Some(log_id), membership);
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
        let state = State::from_snapshot(&snapshot).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut inner = lock(&self.inner);
        inner.state = state;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), snapshot));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<C, Vec<u8>>>, io::Error> {
        let inner = lock(&self.inner);
        Ok(inner.snapshot.as_ref().map(|(meta, data)| Snapshot { meta: meta.clone(), snapshot: data.clone() }))
    }
}
