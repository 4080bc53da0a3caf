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
}

/// Waits on a [`DurableIndex`]; it ends in an error once the store closed.
#[derive(Clone, Debug)]
pub struct DurableWatch {
    rx: watch::Receiver<Durable>,
}

impl DurableIndex {
    /// Every entry below `below` is durable.
    pub fn new(below: u64) -> Self {
        Self { tx: Arc::new(watch::Sender::new(Durable { below, closed: false })) }
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
        DurableWatch { rx: self.tx.subscribe() }
    }
}

impl DurableWatch {
    /// Waits until the entry at `index` is durable.
    ///
    /// # Errors
    /// When the store closed (stopped, failed to sync, or crashed) before it was.
    pub async fn wait_for(&mut self, index: u64) -> io::Result<()> {
        let gone = || io::Error::other(format!("the log store stopped before entry {index} was durable"));
        let reached = self.rx.wait_for(|d| d.below > index || d.closed).await.map_err(|_| gone())?;
        if reached.below > index { Ok(()) } else { Err(gone()) }
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
        let waiter = tokio::spawn(async move { watch.wait_for(5).await });
        durable.close();
        assert!(waiter.await.expect("joins").is_err(), "a stopped store ends the wait with an error");
        let dropped = DurableIndex::up_to(Some(0));
        let mut watch = dropped.watch();
        drop(dropped);
        assert!(watch.wait_for(1).await.is_err(), "and so does a dropped one");
    }
}
