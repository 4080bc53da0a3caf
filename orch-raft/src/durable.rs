//! What a node's log holds durably, and the rule that a node applies only that.
//!
//! openraft applies an entry once it is committed and submitted to the local log, not once the
//! local log flushed it: a leader can apply an entry two followers made durable before its own
//! sync, and a follower an entry whose sync is still queued. Such a node may serve a read or a
//! watch at an index it then loses in a power cut, and after it restarts its recovered log ends
//! before what it served. So each log store publishes a [`DurableIndex`] (every entry below it
//! survives a crash) and the state machine applies an entry only once it is durable
//! ([`crate::StateMachineStore`], given a [`DurableWatch`] by [`crate::start_raft`]). The wait
//! is at most one group sync, which the node makes anyway.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Durable {
    /// Every entry with a smaller index is durable.
    below: u64,
    /// The store stopped (closed, failed or crashed): nothing more becomes durable.
    closed: bool,
}

/// A log store's record of what it holds durably; the store keeps it, waiters get a
/// [`DurableWatch`]. Clones share it.
#[derive(Clone, Debug)]
pub struct DurableIndex {
    tx: Arc<watch::Sender<Durable>>,
    /// One more than the index a waiter waits for now; 0 when none waits.
    waiting: Arc<AtomicU64>,
}

/// Waits on a [`DurableIndex`]; it ends in an error once the store closed.
#[derive(Clone, Debug)]
pub struct DurableWatch {
    rx: watch::Receiver<Durable>,
    waiting: Arc<AtomicU64>,
}

impl DurableIndex {
    /// Every entry below `below` is durable.
    pub fn new(below: u64) -> Self {
        Self { tx: Arc::new(watch::Sender::new(Durable { below, closed: false })), waiting: Arc::default() }
    }

    /// A store whose log holds entries up to `last` durably (`None`: nothing).
    pub fn up_to(last: Option<u64>) -> Self {
        Self::new(last.map_or(0, |l| l.saturating_add(1)))
    }

    /// Every entry below this index is durable.
    pub fn below(&self) -> u64 {
        self.tx.borrow().below
    }

    /// Entries up to `last` are durable (never lowers the index).
    pub fn raise(&self, last: u64) {
        let below = last.saturating_add(1);
        self.tx.send_if_modified(|d| {
            let raised = below > d.below;
            if raised {
                d.below = below;
            }
            raised
        });
    }

    /// The log was cut after `last` (`None`: emptied): entries up to it are durable, none after.
    pub fn cut(&self, last: Option<u64>) {
        self.tx.send_modify(|d| d.below = last.map_or(0, |l| l.saturating_add(1)));
    }

    /// The store stopped: waiters get an error from now on.
    pub fn close(&self) {
        self.tx.send_modify(|d| d.closed = true);
    }

    /// A waiter.
    pub fn watch(&self) -> DurableWatch {
        DurableWatch { rx: self.tx.subscribe(), waiting: Arc::clone(&self.waiting) }
    }

    /// The index a waiter (the state machine, about to apply it) waits for now, not yet durable.
    /// Tests and the simulator see with it that apply is held back.
    pub fn waiting_for(&self) -> Option<u64> {
        self.waiting.load(Ordering::Acquire).checked_sub(1)
    }
}

impl DurableWatch {
    /// Waits until the entry at `index` is durable.
    ///
    /// # Errors
    /// When the store closed (stopped, failed to sync, or crashed) before it was.
    pub async fn wait_for(&mut self, index: u64) -> io::Result<()> {
        let gone = || io::Error::other(format!("the log store stopped before entry {index} was durable"));
        if self.rx.borrow().below > index {
            return Ok(());
        }
        self.waiting.store(index.saturating_add(1), Ordering::Release);
        let reached = self.rx.wait_for(|d| d.below > index || d.closed).await.map(|d| d.below > index);
        self.waiting.store(0, Ordering::Release);
        if reached.map_err(|_| gone())? { Ok(()) } else { Err(gone()) }
    }
}

/// A log store that tells what it holds durably.
pub trait DurableLog {
    /// A waiter on its durable index.
    fn durable_watch(&self) -> DurableWatch;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_end_when_the_entry_is_durable_or_the_store_stopped() {
        let durable = DurableIndex::up_to(None);
        let mut watch = durable.watch();
        durable.raise(3);
        assert!(watch.wait_for(3).await.is_ok());
        durable.cut(Some(1));
        assert_eq!(durable.below(), 2);
        assert_eq!(durable.waiting_for(), None);
        let waiter = tokio::spawn(async move { watch.wait_for(5).await });
        for _ in 0..100 {
            if durable.waiting_for().is_some() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(durable.waiting_for(), Some(5));
        durable.close();
        assert!(waiter.await.expect("joins").is_err(), "a stopped store ends the wait with an error");
        assert_eq!(durable.waiting_for(), None);
        let dropped = DurableIndex::up_to(Some(0));
        let mut watch = dropped.watch();
        drop(dropped);
        assert!(watch.wait_for(1).await.is_err(), "and so does a dropped one");
    }
}
