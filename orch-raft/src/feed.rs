//! The feed of committed watch events that each replica keeps.
//!
//! Every applied log entry is published, in log order, to live subscribers, as one [`Applied`]
//! holding all of its events (an entry's changes share one revision, so they travel and are
//! delivered together). The entries with events are also kept in a history, so that a watch
//! can start from, or resume at, a past revision. Events at or below the *horizon* may have
//! been dropped: a watch from an older revision is refused with [`Expired`] and its client
//! relists. After a restart or an installed snapshot the horizon is the revision of the
//! snapshot's state (its last application entry: the revision a list of it reports), so a
//! watch from that list's revision is accepted.
//!
//! The history keeps the most recent [`HistoryLimits::events_min`] events and every event
//! younger than [`HistoryLimits::age_ms`] (by entry time), whichever reaches further back, but
//! never more than [`HistoryLimits::bytes_max`] bytes of events (events carry the object and
//! its previous state): the byte bound wins over the age and the count.
//!
//! A subscriber reads its backlog from the history a chunk at a time (at most
//! [`FEED_BACKLOG_CHUNK_MAX`] entries and, past the first, [`FEED_BACKLOG_CHUNK_BYTES_MAX`]
//! bytes, found by binary search under the feed's lock), so the lock is held briefly and a
//! subscriber holds no copy of the history: a stalled one keeps at most one chunk alive. The
//! live feed is a ring of the last [`FEED_SUBSCRIBER_BUFFER_MAX`] entries shared by all
//! subscribers (however many stall, they keep at most those alive); one that falls further
//! behind continues from the history. Entries the history drops and a history replaced by a snapshot
//! are freed after the lock is released.
//!
//! **Invariant:** the entries published are contiguous: each live item's index is one more
//! than the previous, or the item is a [`FeedItem::Reset`] (the state jumped); a watch checks
//! this and fails loudly rather than skip.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use orch_core::WatchEvent;
use tokio::sync::broadcast;

use crate::holds::{Held, LockHolds, LockSite};

/// The most events kept whatever their age (within the byte bound), by default.
pub const FEED_HISTORY_EVENTS_MIN: usize = 65_536;

/// Events younger than this, by entry time, are kept (within the byte bound), by default: five
/// minutes, the interval at which Kubernetes compacts etcd's history.
pub const FEED_HISTORY_AGE_MS: i64 = 5 * 60 * 1000;

/// The most bytes of events the history holds, by default (see [`Applied::bytes`]).
pub const FEED_HISTORY_BYTES_MAX: usize = 256 << 20;

/// The bytes counted for one event besides its objects' encodings (revision, type, pointers).
pub const EVENT_OVERHEAD_BYTES: usize = 64;

/// The most entries a subscriber takes from the history at a time.
pub const FEED_BACKLOG_CHUNK_MAX: usize = 64;

/// The most bytes ([`Applied::bytes`]) of entries a subscriber takes from the history at a
/// time, past the first entry: what a stalled subscriber keeps alive.
pub const FEED_BACKLOG_CHUNK_BYTES_MAX: usize = 64 * 1024;

/// The most applied entries the live feed buffers (one ring shared by every subscriber); a
/// subscriber that falls further behind continues from the history (or, if the history no
/// longer reaches back to it, expires). Small, because a stalled subscriber keeps them alive.
pub const FEED_SUBSCRIBER_BUFFER_MAX: usize = 128;

/// How much history a replica keeps for watches that start in the past or resume.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// The most recent events kept whatever their age, within `bytes_max`.
    pub events_min: usize,
    /// Events younger than this (milliseconds of entry time) are kept, within `bytes_max`.
    pub age_ms: i64,
    /// The most bytes of events kept ([`Applied::bytes`]); wins over `events_min` and `age_ms`.
    pub bytes_max: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self { events_min: FEED_HISTORY_EVENTS_MIN, age_ms: FEED_HISTORY_AGE_MS, bytes_max: FEED_HISTORY_BYTES_MAX }
    }
}

/// One applied log entry as watches see it.
#[derive(Debug)]
pub struct Applied {
    /// The entry's log index: the revision of its events.
    pub index: u64,
    /// The state machine's clock after the entry (entry time, milliseconds since the epoch).
    pub time_ms: i64,
    /// The changes it made, in order (none for rejected requests, blank and membership entries).
    pub events: Vec<WatchEvent>,
    /// What the events count against [`HistoryLimits::bytes_max`]: the encoded size of each
    /// event's object and previous object, plus [`EVENT_OVERHEAD_BYTES`] per event. Objects
    /// in memory take about four times their encoded size, and share it with the state
    /// while they are current.
    pub bytes: usize,
}

impl Applied {
    /// The entry at `index` with its events, sized.
    pub fn new(index: u64, time_ms: i64, events: Vec<WatchEvent>) -> Self {
        let bytes = events
            .iter()
            .map(|e| {
                EVENT_OVERHEAD_BYTES
                    + orch_core::codec::encoded_len(&e.object)
                    + e.prev.as_ref().map_or(0, orch_core::codec::encoded_len)
            })
            .sum();
        Self { index, time_ms, events, bytes }
    }
}

/// What the feed tells live subscribers.
#[derive(Clone, Debug)]
pub(crate) enum FeedItem {
    /// The next applied entry.
    Applied(Arc<Applied>),
    /// The state jumped to log index `index` (a snapshot was installed): the entries in
    /// between will never be published, so a live watch that has not seen every event up to
    /// `revision` cannot go on.
    Reset {
        /// The log index the state jumped to: the live feed continues after it.
        index: u64,
        /// The revision of the snapshot's state (its last application entry, at most
        /// `index`): the new horizon. The entries after it up to `index` have no events.
        revision: u64,
    },
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

/// A replica's feed behind a lock of its own (not the state's), shared by its state machine
/// and its watches; how long each site holds it is recorded.
pub(crate) struct SharedFeed {
    feed: Mutex<Feed>,
    holds: Arc<LockHolds>,
}

impl SharedFeed {
    pub(crate) fn new(feed: Feed, holds: Arc<LockHolds>) -> Arc<Self> {
        Arc::new(Self { feed: Mutex::new(feed), holds })
    }

    /// Takes the feed's lock for `site`.
    pub(crate) fn hold(&self, site: LockSite) -> Held<'_, Feed> {
        self.holds.hold(&self.feed, site)
    }
}

pub(crate) struct Feed {
    /// The entries with events, oldest first.
    history: VecDeque<Arc<Applied>>,
    /// The events and bytes in `history`.
    events: usize,
    bytes: usize,
    horizon: u64,
    applied: u64,
    limits: HistoryLimits,
    tx: broadcast::Sender<FeedItem>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new(HistoryLimits::default())
    }
}

/// What a new subscriber gets: the live feed after `applied`; the entries from `from` to
/// `applied` it reads from the history ([`Feed::backlog`]).
pub(crate) struct Subscription {
    /// The revision the watch starts after (`from`, or the applied index for "now").
    pub(crate) from: u64,
    /// The last index published before the subscription: the live feed continues after it.
    pub(crate) applied: u64,
    pub(crate) live: broadcast::Receiver<FeedItem>,
}

impl Feed {
    pub(crate) fn new(limits: HistoryLimits) -> Self {
        Self {
            history: VecDeque::new(),
            events: 0,
            bytes: 0,
            horizon: 0,
            applied: 0,
            limits,
            tx: broadcast::channel(FEED_SUBSCRIBER_BUFFER_MAX).0,
        }
    }

    /// Publishes the next applied entry, then drops what the limits no longer keep.
    /// Entries come in log order, one after another (openraft applies each once, in order);
    /// the watches check it. Returns the entries the history dropped, to be freed by the
    /// caller once the lock is released.
    #[must_use = "free the dropped entries after releasing the lock"]
    pub(crate) fn push(&mut self, applied: Arc<Applied>) -> Vec<Arc<Applied>> {
        self.applied = applied.index;
        let now_ms = applied.time_ms;
        if !applied.events.is_empty() {
            self.events += applied.events.len();
            self.bytes += applied.bytes;
            self.history.push_back(Arc::clone(&applied));
        }
        let dropped = self.trim(now_ms);
        // No live subscriber is not an error.
        let _ = self.tx.send(FeedItem::Applied(applied));
        dropped
    }

    fn trim(&mut self, now_ms: i64) -> Vec<Arc<Applied>> {
        let mut out = Vec::new();
        while let Some(oldest) = self.history.front() {
            let over_bytes = self.bytes > self.limits.bytes_max;
            let old =
                self.events > self.limits.events_min && now_ms.saturating_sub(oldest.time_ms) > self.limits.age_ms;
            if !over_bytes && !old {
                break;
            }
            if let Some(dropped) = self.history.pop_front() {
                self.events -= dropped.events.len();
                self.bytes -= dropped.bytes;
                self.horizon = self.horizon.max(dropped.index);
                out.push(dropped);
            }
        }
        out
    }

    /// Forgets the history: the state jumped to log index `index`, whose state's revision is
    /// `revision` (a snapshot was installed or loaded). Live subscribers are told; those that
    /// had not seen everything up to `revision` end. Returns the old history, to be freed by
    /// the caller once the lock is released.
    #[must_use = "free the old history after releasing the lock"]
    pub(crate) fn reset(&mut self, index: u64, revision: u64) -> VecDeque<Arc<Applied>> {
        let old = std::mem::take(&mut self.history);
        self.events = 0;
        self.bytes = 0;
        self.horizon = revision.min(index);
        self.applied = index;
        let _ = self.tx.send(FeedItem::Reset { index, revision: self.horizon });
        old
    }

    /// The live feed's sender, to publish what the feed itself would refuse.
    #[cfg(test)]
    pub(crate) fn sender(&self) -> &broadcast::Sender<FeedItem> {
        &self.tx
    }

    /// How many watches are subscribed to the live feed now.
    pub(crate) fn live_watches(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The oldest revision a watch may start from.
    pub(crate) fn horizon(&self) -> u64 {
        self.horizon
    }

    /// The events and bytes the history holds.
    pub(crate) fn held(&self) -> (usize, usize) {
        (self.events, self.bytes)
    }

    /// Subscribes after revision `from` (None: after the last entry published, "now").
    pub(crate) fn subscribe(&self, from: Option<u64>) -> Result<Subscription, Expired> {
        let from = from.unwrap_or(self.applied);
        if from < self.horizon {
            return Err(Expired { requested: from, horizon: self.horizon });
        }
        Ok(Subscription { from, applied: self.applied, live: self.tx.subscribe() })
    }

    /// The kept entries after revision `after` up to `until`, oldest first: at least one if
    /// there is any, at most [`FEED_BACKLOG_CHUNK_MAX`] and, past the first,
    /// [`FEED_BACKLOG_CHUNK_BYTES_MAX`] bytes.
    pub(crate) fn backlog(&self, after: u64, until: u64) -> Result<Vec<Arc<Applied>>, Expired> {
        if after < self.horizon {
            return Err(Expired { requested: after, horizon: self.horizon });
        }
        let start = self.history.partition_point(|a| a.index <= after);
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for applied in self.history.range(start..).take_while(|a| a.index <= until).take(FEED_BACKLOG_CHUNK_MAX) {
            bytes += applied.bytes;
            if !chunk.is_empty() && bytes > FEED_BACKLOG_CHUNK_BYTES_MAX {
                break;
            }
            chunk.push(Arc::clone(applied));
        }
        Ok(chunk)
    }
}

#[cfg(test)]
mod tests {
    use orch_core::{EventType, Object, Revision, WatchEvent};

    use super::*;

    fn event(index: u64, name: &str) -> WatchEvent {
        let mut ns = orch_core::core_v1::Namespace::default();
        ns.metadata.name = name.into();
        WatchEvent { revision: Revision(index), event_type: EventType::Added, object: Object::from(ns), prev: None }
    }

    fn entry(index: u64, time_ms: i64, n: usize) -> Arc<Applied> {
        Arc::new(Applied::new(index, time_ms, (0..n).map(|i| event(index, &format!("ns-{index:04}-{i}"))).collect()))
    }

    #[test]
    fn the_history_keeps_the_count_or_the_age_whichever_reaches_further() {
        let limits = HistoryLimits { events_min: 4, age_ms: 1_000, bytes_max: usize::MAX };
        let mut feed = Feed::new(limits);
        // Ten entries of one event each, 100 ms apart: all younger than the age.
        for i in 1..=10 {
            assert!(feed.push(entry(i, i as i64 * 100, 1)).is_empty());
        }
        assert_eq!(feed.held().0, 10, "all are younger than the age");
        assert_eq!(feed.horizon(), 0);
        // Much later: only the count keeps them now.
        let dropped = feed.push(entry(11, 10_000, 1));
        assert_eq!(dropped.iter().map(|a| a.index).collect::<Vec<_>>(), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(feed.held().0, 4, "the most recent events_min are kept whatever their age");
        assert_eq!(feed.horizon(), 7);
        assert!(matches!(feed.subscribe(Some(6)), Err(Expired { requested: 6, horizon: 7 })));
        feed.subscribe(Some(7)).expect("at the horizon");
        let backlog = feed.backlog(7, 11).expect("kept");
        assert_eq!(backlog.iter().map(|a| a.index).collect::<Vec<_>>(), [8, 9, 10, 11]);
        assert_eq!(feed.backlog(7, 9).expect("kept").len(), 2, "up to the index asked for");
    }

    #[test]
    fn the_byte_bound_wins_over_the_age_and_the_count() {
        let one = entry(1, 0, 1).bytes;
        let limits = HistoryLimits { events_min: 1_000, age_ms: i64::MAX, bytes_max: one * 3 };
        let mut feed = Feed::new(limits);
        for i in 1..=10 {
            let _ = feed.push(entry(i, 0, 1));
        }
        let (events, bytes) = feed.held();
        assert!(bytes <= one * 3, "{bytes} bytes held, bound {}", one * 3);
        assert_eq!(events, 3);
        assert_eq!(feed.horizon(), 7);
    }

    #[test]
    fn the_backlog_comes_a_chunk_at_a_time() {
        let mut feed = Feed::default();
        let n = FEED_BACKLOG_CHUNK_MAX as u64 * 2 + 3;
        for i in 1..=n {
            let _ = feed.push(entry(i, 0, 1));
        }
        let first = feed.backlog(0, n).expect("kept");
        assert_eq!(first.len(), FEED_BACKLOG_CHUNK_MAX);
        let last = first.last().map_or(0, |a| a.index);
        let next = feed.backlog(last, n).expect("kept");
        assert_eq!(next.first().map(|a| a.index), Some(last + 1), "no entry skipped or repeated");
        // Large entries come fewer at a time, but at least one.
        let mut big = Feed::default();
        for i in 1..=4 {
            let _ = big.push(entry(i, 0, 1000));
        }
        assert!(big.history[0].bytes > FEED_BACKLOG_CHUNK_BYTES_MAX);
        assert_eq!(big.backlog(0, 4).expect("kept").len(), 1);
        assert_eq!(big.backlog(3, 4).expect("kept").len(), 1);
    }

    #[test]
    fn entries_without_events_are_published_but_not_kept() {
        let mut feed = Feed::default();
        let mut sub = feed.subscribe(None).expect("subscribes");
        let _ = feed.push(entry(1, 0, 0));
        let _ = feed.push(entry(2, 0, 2));
        assert_eq!(feed.held().0, 2);
        assert_eq!(feed.history.len(), 1);
        for want in [1, 2] {
            match sub.live.try_recv() {
                Ok(FeedItem::Applied(a)) => assert_eq!(a.index, want),
                other => panic!("expected entry {want}, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_reset_reaches_live_subscribers_and_moves_the_horizon() {
        let mut feed = Feed::default();
        let _ = feed.push(entry(1, 0, 1));
        let mut sub = feed.subscribe(Some(1)).expect("subscribes");
        // The snapshot ends on a blank entry at 50; its state's last application entry is 48.
        let old = feed.reset(50, 48);
        assert_eq!(old.len(), 1, "the old history is handed back to be freed");
        assert!(matches!(sub.live.try_recv(), Ok(FeedItem::Reset { index: 50, revision: 48 })));
        assert!(feed.subscribe(Some(1)).is_err(), "history before the snapshot is gone");
        assert!(feed.subscribe(Some(48)).is_ok(), "a list of the snapshot's state reports 48: watch from it");
        let now = feed.subscribe(None).expect("from now");
        assert_eq!((now.from, now.applied), (50, 50));
    }

    #[test]
    fn subscribing_from_now_starts_after_the_last_entry() {
        let mut feed = Feed::default();
        for i in 1..=3 {
            let _ = feed.push(entry(i, 0, 1));
        }
        let sub = feed.subscribe(None).expect("subscribes");
        assert_eq!((sub.from, sub.applied), (3, 3));
        assert!(feed.backlog(3, 3).expect("kept").is_empty());
        assert_eq!(feed.backlog(1, 3).expect("kept").len(), 2);
    }
}
