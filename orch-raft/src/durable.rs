//! What a node's log holds durably, and the rule that a node applies only that.
//!
//! openraft applies an entry once it is committed and submitted to the local log, not once the
//! local log flushed it: a leader can apply an entry two followers made durable before its own
//! sync, and a follower an entry whose sync is still queued. Such a node may serve a read or a
//! watch at an index it then loses in a power cut, and after it restarts its recovered log ends
//! before what it served. So each log store publishes a [`DurableIndex`] (every entry up to it
//! survives a crash) and the state machine applies an entry only once its index is durable
//! ([`crate::StateMachineStore`]; installed by [`crate::start_raft`]). The wait is at most one
//! group sync, which the node makes anyway.

use std::io;
use std::sync::Arc;

use tokio::sync::watch;

/// The highest log index up to which a log store's entries are durable. Clones share it.
#[derive(Clone, Debug)]
pub struct DurableIndex {
    tx: Arc<watch::Sender<u64>>,
}

impl DurableIndex {
    /// Starts at `index`.
    pub fn new(index: u64) -> Self {
        Self { tx: Arc::new(watch::Sender::new(index)) }
    }

    /// The current durable index.
    pub fn get(&self) -> u64 {
        *self.tx.borrow()
    }

    /// Raises the index to `index` (never lowers it).
    pub fn raise(&self, index: u64) {
        self.tx.send_if_modified(|d| {
            let raised = index > *d;
            if raised {
                *d = index;
            }
            raised
        });
    }

    /// Sets the index, also lower (after the log was truncated).
    pub fn set(&self, index: u64) {
        self.tx.send_replace(index);
    }

    /// Waits until `index` is durable.
    ///
    /// # Errors
    /// Never while a clone lives (the store holds one); an error if every other clone is gone.
    pub async fn wait_for(&self, index: u64) -> io::Result<()> {
        if self.get() >= index {
            return Ok(());
        }
        let mut rx = self.tx.subscribe();
        rx.wait_for(|d| *d >= index).await.map(drop).map_err(|_| io::Error::other("the log store is gone"))
    }
}

/// A log store that tells what it holds durably.
pub trait DurableLog {
    /// Its durable index, shared: the store raises it as it syncs.
    fn durable_index(&self) -> DurableIndex;
}
