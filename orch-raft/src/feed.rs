//! The feed of committed watch events that each replica's state machine keeps.
//!
//! Every applied entry is published, in log order, to live subscribers; the events of the
//! most recent entries are kept so that a watch can resume from a past revision. Events at or
//! below the *horizon* may have been dropped: a watch from an older revision is refused with
//! [`Expired`] and its client relists. After a restart or an installed snapshot the horizon is
//! the snapshot's index (re-applied entries then refill the history).

use std::collections::VecDeque;
use std::sync::Arc;

use orch_core::WatchEvent;
use tokio::sync::broadcast;

/// The most events kept for watches that resume from a past revision.
pub const FEED_HISTORY_MAX: usize = 65_536;

/// The most applied entries buffered for one live subscriber; one that falls further behind
/// is told its watch expired.
pub const FEED_SUBSCRIBER_BUFFER_MAX: usize = 4_096;

/// One applied log entry as watches see it.
#[derive(Debug)]
pub struct Applied {
    /// The entry's log index (the revision of its events).
    pub index: u64,
    /// The changes it made, in order (none for rejected requests, blank and membership entries).
    pub events: Vec<WatchEvent>,
}

/// A watch asked for a revision whose events are no longer kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("revision {requested} is older than the watch horizon {horizon}: expired, relist")]
pub struct Expired {
    /// The revision asked for.
    pub requested: u64,
    /// The oldest revision a watch may start from.
    pub horizon: u64,
}

pub(crate) struct Feed {
    history: VecDeque<WatchEvent>,
    horizon: u64,
    applied: u64,
    tx: broadcast::Sender<Arc<Applied>>,
}

impl Default for Feed {
    fn default() -> Self {
        Self { history: VecDeque::new(), horizon: 0, applied: 0, tx: broadcast::channel(FEED_SUBSCRIBER_BUFFER_MAX).0 }
    }
}

/// What a new subscriber gets: the kept events after its revision, then the live feed.
pub(crate) struct Subscription {
    pub(crate) backlog: Vec<WatchEvent>,
    pub(crate) applied: u64,
    pub(crate) live: broadcast::Receiver<Arc<Applied>>,
}

impl Feed {
    /// Publishes an applied entry.
    pub(crate) fn push(&mut self, index: u64, events: Vec<WatchEvent>) {
        self.applied = index;
        self.history.extend(events.iter().cloned());
        while self.history.len() > FEED_HISTORY_MAX {
            if let Some(dropped) = self.history.pop_front() {
                self.horizon = self.horizon.max(dropped.revision.0);
            }
        }
        // No live subscriber is not an error.
        let _ = self.tx.send(Arc::new(Applied { index, events }));
    }

    /// Forgets the history: the state jumped to `index` (a snapshot was installed or loaded).
    pub(crate) fn reset(&mut self, index: u64) {
        self.history.clear();
        self.horizon = index;
        self.applied = index;
    }

    /// The oldest revision a watch may start from.
    pub(crate) fn horizon(&self) -> u64 {
        self.horizon
    }

    /// Subscribes from revision `from` (exclusive): the caller holds the state machine's lock,
    /// so the backlog and the live feed neither overlap nor leave a gap.
    pub(crate) fn subscribe(&self, from: u64) -> Result<Subscription, Expired> {
        if from < self.horizon {
            return Err(Expired { requested: from, horizon: self.horizon });
        }
        let start = self.history.partition_point(|e| e.revision.0 <= from);
        Ok(Subscription {
            backlog: self.history.range(start..).cloned().collect(),
            applied: self.applied,
            live: self.tx.subscribe(),
        })
    }
}
