//! When a restarted node may serve stale reads and watches.
//!
//! A node that restarts re-applies its log up to the committed id it saved, which (written
//! without its own sync) may be older than what it applied before the crash. A node applies only
//! what its own log holds durably ([`crate::durable`]), so everything it applied, and so served,
//! before a crash is in the log it recovers. After a restart it serves stale reads and watches
//! once it has caught up: once it applied an entry of a term newer than the vote it restarted
//! with (a later leader's log holds every earlier committed entry before its own), or applied its
//! whole recovered log. Either way it never serves an older state than it served before.
//!
//! Tests: `a_restarted_node_serves_once_it_caught_up` here; `orch-raft/tests/it/crash.rs` runs
//! a node on a disk that loses unsynced writes ([`crate::crash::CrashDisk`]).

use openraft::async_runtime::WatchReceiver;
use openraft::storage::{RaftLogReader, RaftLogStorage};

use crate::RaftNode;
use crate::types::TypeConfig;

/// Read from a node's log as it starts (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryGate {
    /// The term of the vote the node restarted with.
    pub vote_term: u64,
    /// The last index of its recovered log.
    pub last_log_index: u64,
}

impl RecoveryGate {
    /// Reads the gate from a log store before the node starts on it.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn read<L: RaftLogStorage<TypeConfig>>(log: &mut L) -> Result<Self, std::io::Error> {
        let state = log.get_log_state().await?;
        let vote = log.get_log_reader().await.read_vote().await?;
        Ok(Self {
            vote_term: vote.map_or(0, |v| v.leader_id().term),
            last_log_index: state.last_log_id.map_or(0, |id| id.index),
        })
    }

    /// Whether `raft` (started on the log the gate was read from) has caught up.
    pub fn open(&self, raft: &RaftNode) -> bool {
        let applied = raft.metrics().borrow_watched().last_applied;
        self.caught_up(applied.map(|id| (id.leader_id.term, id.index)))
    }

    /// Whether a node that applied up to `(term, index)` has caught up.
    pub fn caught_up(&self, applied: Option<(u64, u64)>) -> bool {
        self.last_log_index == 0
            || applied.is_some_and(|(term, index)| term > self.vote_term || index >= self.last_log_index)
    }
}

#[cfg(test)]
mod tests {
    use super::RecoveryGate;

    #[test]
    fn a_restarted_node_serves_once_it_caught_up() {
        let fresh = RecoveryGate { vote_term: 0, last_log_index: 0 };
        assert!(fresh.caught_up(None), "a fresh node has nothing to catch up");
        let restarted = RecoveryGate { vote_term: 4, last_log_index: 120 };
        assert!(!restarted.caught_up(None));
        assert!(!restarted.caught_up(Some((4, 100))), "behind its own log, in the same term");
        assert!(restarted.caught_up(Some((4, 120))), "applied its whole recovered log");
        assert!(restarted.caught_up(Some((5, 90))), "applied an entry of a later leader");
    }
}
