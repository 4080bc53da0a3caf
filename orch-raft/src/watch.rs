//! Watch streams over a replica's [`Feed`](crate::feed): what [`ControlPlane::watch`] returns.
//!
//! A stream first replays the kept history after its revision, then follows the live feed.
//! Each item is either all the matching events of one revision (one log entry: they are never
//! split, so a consumer that resumes after the revision it last saw loses nothing) or a
//! progress notification. Progress comes right after the backlog (so a watch from "now"
//! learns the revision it started at) and then at least every interval, whatever the load:
//! a narrow watch whose filter matches nothing still learns how far the feed has come, so its
//! resume point stays within the history.
//!
//! A consumer slower than the live feed falls behind by at most
//! [`FEED_SUBSCRIBER_BUFFER_MAX`](crate::feed::FEED_SUBSCRIBER_BUFFER_MAX) entries; the stream
//! then continues from the history, and expires only when the history no longer reaches back
//! to it. When a snapshot is installed under a live stream it ends with
//! [`Error::Expired`](crate::control_plane::Error::Expired): the entries the snapshot covers
//! were never seen. A stream checks that the entries it receives are contiguous and fails
//! loudly ([`Error::Gap`](crate::control_plane::Error::Gap)) rather than skip any.
//!
//! [`ControlPlane::watch`]: crate::control_plane::ControlPlane::watch

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use orch_core::{WatchEvent, WatchFilter};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::control_plane::{Error, WatchItem, WatchStream};
use crate::feed::{Applied, Expired, FeedItem, SharedFeed};
use crate::holds::LockSite;

/// A stream of the events after revision `from` (None: from now) that match `filter`.
pub(crate) fn stream(
    feed: &Arc<SharedFeed>,
    from: Option<u64>,
    filter: WatchFilter,
    interval: Duration,
) -> Result<WatchStream, Expired> {
    let sub = feed.hold(LockSite::Subscribe).subscribe(from)?;
    let state = WatchState {
        feed: Arc::clone(feed),
        filter,
        interval,
        backlog: VecDeque::new(),
        fed: sub.applied,
        live: sub.live,
        revision: sub.from,
        caught_up: false,
        next_progress: Instant::now() + interval,
        done: false,
    };
    Ok(Box::pin(futures_util::stream::unfold(state, WatchState::next)))
}

struct WatchState {
    feed: Arc<SharedFeed>,
    filter: WatchFilter,
    interval: Duration,
    /// The next entries of the history to replay (a chunk at a time).
    backlog: VecDeque<Arc<Applied>>,
    /// The last index of the feed this stream has accounted for: the history covers the
    /// entries up to it, the live feed those after it.
    fed: u64,
    live: broadcast::Receiver<FeedItem>,
    /// The stream's revision: every matching event up to it has been delivered.
    revision: u64,
    /// Whether the history up to `fed` was replayed and the progress after it sent.
    caught_up: bool,
    next_progress: Instant,
    done: bool,
}

impl WatchState {
    /// The entry's events as this watch sees them; advances the stream's revision past it.
    fn take(&mut self, applied: &Applied) -> Option<WatchItem> {
        if applied.index <= self.revision {
            return None;
        }
        self.revision = applied.index;
        let events: Vec<WatchEvent> = applied.events.iter().filter_map(|e| self.filter.view(e)).collect();
        (!events.is_empty()).then_some(WatchItem::Events { revision: applied.index, events })
    }

    fn progress(&mut self) -> WatchItem {
        self.next_progress = Instant::now() + self.interval;
        WatchItem::Progress { revision: self.revision }
    }

    fn fail(mut self, error: Error) -> Option<(Result<WatchItem, Error>, Self)> {
        self.done = true;
        Some((Err(error), self))
    }

    /// The next chunk of history up to `fed`; false when there is none left.
    fn refill(&mut self) -> Result<bool, Expired> {
        if self.revision >= self.fed {
            return Ok(false);
        }
        let chunk = self.feed.hold(LockSite::Backlog).backlog(self.revision, self.fed)?;
        self.backlog.extend(chunk);
        Ok(!self.backlog.is_empty())
    }

    /// Continues from the history after falling behind the live feed.
    fn catch_up(&mut self) -> Result<(), Expired> {
        let sub = self.feed.hold(LockSite::Subscribe).subscribe(Some(self.revision))?;
        self.fed = sub.applied;
        self.live = sub.live;
        self.caught_up = false;
        Ok(())
    }

    async fn next(mut self) -> Option<(Result<WatchItem, Error>, Self)> {
        if self.done {
            return None;
        }
        loop {
            if !self.caught_up {
                // Replay the history up to `fed`, then say how far the stream has come; a long
                // replay reports its progress too (between entries, a whole revision's bound).
                if Instant::now() >= self.next_progress {
                    let item = self.progress();
                    return Some((Ok(item), self));
                }
                while let Some(applied) = self.backlog.pop_front() {
                    if let Some(item) = self.take(&applied) {
                        return Some((Ok(item), self));
                    }
                }
                match self.refill() {
                    Ok(true) => {
                        // A narrow filter may match nothing in a long history: let other
                        // tasks run between chunks.
                        tokio::task::yield_now().await;
                        continue;
                    }
                    Ok(false) => {}
                    Err(expired) => return self.fail(Error::Expired(expired)),
                }
                self.caught_up = true;
                self.revision = self.revision.max(self.fed);
                let item = self.progress();
                return Some((Ok(item), self));
            }
            if Instant::now() >= self.next_progress {
                let item = self.progress();
                return Some((Ok(item), self));
            }
            let received = tokio::select! {
                biased;
                received = self.live.recv() => received,
                () = tokio::time::sleep_until(self.next_progress) => {
                    let item = self.progress();
                    return Some((Ok(item), self));
                }
            };
            match received {
                Ok(FeedItem::Applied(applied)) => {
                    if applied.index != self.fed + 1 {
                        let error = Error::Gap { after: self.fed, next: applied.index };
                        return self.fail(error);
                    }
                    self.fed = applied.index;
                    if let Some(item) = self.take(&applied) {
                        return Some((Ok(item), self));
                    }
                }
                Ok(FeedItem::Reset { index, revision }) => {
                    if self.revision < revision {
                        let error = Error::Expired(Expired { requested: self.revision, horizon: revision });
                        return self.fail(error);
                    }
                    // This stream had seen every event the snapshot covers (the entries after
                    // its state's revision have none): it goes on after the snapshot.
                    self.fed = index;
                    self.revision = self.revision.max(index);
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if let Err(expired) = self.catch_up() {
                        return self.fail(Error::Expired(expired));
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use orch_core::{EventType, Object, Revision, WatchEvent};

    use super::*;
    use crate::feed::{FEED_SUBSCRIBER_BUFFER_MAX, Feed, HistoryLimits};

    fn namespace(index: u64, name: &str) -> WatchEvent {
        let mut ns = orch_core::core_v1::Namespace::default();
        ns.metadata.name = name.into();
        ns.metadata.labels = [("entry", format!("{}", index % 2))].into_iter().collect();
        WatchEvent { revision: Revision(index), event_type: EventType::Added, object: Object::from(ns), prev: None }
    }

    fn entry(index: u64, n: usize) -> Arc<Applied> {
        Arc::new(Applied::new(index, 0, (0..n).map(|i| namespace(index, &format!("ns-{index:04}-{i}"))).collect()))
    }

    fn feed() -> Arc<SharedFeed> {
        SharedFeed::new(Feed::new(HistoryLimits::default()), Arc::default())
    }

    fn push(feed: &SharedFeed, applied: Arc<Applied>) {
        let _ = feed.hold(LockSite::FeedPush).push(applied);
    }

    const SECOND: Duration = Duration::from_secs(1);

    async fn next(s: &mut WatchStream) -> WatchItem {
        s.next().await.expect("open").expect("no error")
    }

    #[tokio::test(start_paused = true)]
    async fn all_events_of_an_entry_come_in_one_item_after_the_backlog_progress() {
        let feed = feed();
        push(&feed, entry(1, 3));
        let mut s = stream(&feed, None, WatchFilter::all(), SECOND).expect("watch");
        assert_eq!(next(&mut s).await, WatchItem::Progress { revision: 1 }, "from now: the revision it starts at");
        push(&feed, entry(2, 50));
        match next(&mut s).await {
            WatchItem::Events { revision: 2, events } => assert_eq!(events.len(), 50),
            other => panic!("expected the 50 events of entry 2, got {other:?}"),
        }
        let mut from_start = stream(&feed, Some(1), WatchFilter::all(), SECOND).expect("watch");
        assert!(
            matches!(next(&mut from_start).await, WatchItem::Events { revision: 2, ref events } if events.len() == 50)
        );
        assert_eq!(
            next(&mut from_start).await,
            WatchItem::Progress { revision: 2 },
            "progress right after the backlog"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_narrow_watch_gets_progress_every_interval_under_steady_load() {
        let feed = feed();
        let filter = WatchFilter { namespace: Some("nothing-matches".to_owned()), ..WatchFilter::all() };
        let mut s = stream(&feed, None, filter, Duration::from_millis(100)).expect("watch");
        assert_eq!(next(&mut s).await, WatchItem::Progress { revision: 0 });
        // An entry every millisecond, none of them matching: the live feed is never idle.
        let writer = {
            let feed = Arc::clone(&feed);
            tokio::spawn(async move {
                for i in 1..=1_000 {
                    push(&feed, entry(i, 1));
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
        };
        let started = Instant::now();
        let mut last = 0;
        for _ in 0..5 {
            let WatchItem::Progress { revision } = next(&mut s).await else { panic!("nothing matches") };
            assert!(revision > last, "progress advances: {revision} after {last}");
            last = revision;
        }
        // Five intervals of virtual time, not five idle periods (there are none).
        assert!(started.elapsed() <= Duration::from_millis(600), "{:?}", started.elapsed());
        writer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_snapshot_installed_under_a_live_watch_ends_it_with_expired() {
        let feed = feed();
        push(&feed, entry(1, 1));
        let mut s = stream(&feed, None, WatchFilter::all(), SECOND).expect("watch");
        assert_eq!(next(&mut s).await, WatchItem::Progress { revision: 1 });
        push(&feed, entry(2, 1));
        let _ = feed.hold(LockSite::FeedPush).reset(40, 40);
        push(&feed, entry(41, 1));
        assert!(matches!(next(&mut s).await, WatchItem::Events { revision: 2, .. }));
        match s.next().await {
            Some(Err(Error::Expired(Expired { requested: 2, horizon: 40 }))) => {}
            other => panic!("expected the watch to expire at the snapshot, got {other:?}"),
        }
        assert!(s.next().await.is_none(), "the stream ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_watch_that_saw_everything_a_snapshot_covers_goes_on() {
        let feed = feed();
        push(&feed, entry(1, 1));
        // A client that read revision 5 elsewhere watches from it on this lagging replica.
        let mut s = stream(&feed, Some(5), WatchFilter::all(), SECOND).expect("watch");
        assert_eq!(next(&mut s).await, WatchItem::Progress { revision: 5 });
        // The replica installs a snapshot at log index 7 whose state is at revision 5 (6 and 7
        // were blank or membership entries): nothing after 5 was missed.
        let _ = feed.hold(LockSite::FeedPush).reset(7, 5);
        push(&feed, entry(8, 1));
        assert!(matches!(next(&mut s).await, WatchItem::Events { revision: 8, .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_gap_in_the_feed_fails_loudly() {
        let feed = feed();
        push(&feed, entry(1, 1));
        let mut s = stream(&feed, None, WatchFilter::all(), SECOND).expect("watch");
        assert_eq!(next(&mut s).await, WatchItem::Progress { revision: 1 });
        // Bypass the feed's own check: publish entry 3 after 1.
        let _ = feed.hold(LockSite::FeedPush).sender().send(FeedItem::Applied(entry(3, 1)));
        match s.next().await {
            Some(Err(Error::Gap { after: 1, next: 3 })) => {}
            other => panic!("expected a gap error, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_consumer_continues_from_the_history() {
        let feed = feed();
        let mut s = stream(&feed, None, WatchFilter::all(), SECOND).expect("watch");
        assert_eq!(next(&mut s).await, WatchItem::Progress { revision: 0 });
        let entries = FEED_SUBSCRIBER_BUFFER_MAX as u64 * 2;
        for i in 1..=entries {
            push(&feed, entry(i, 1));
        }
        let mut want = 1;
        while want <= entries {
            if let WatchItem::Events { revision, .. } = next(&mut s).await {
                assert_eq!(revision, want, "every entry, in order");
                want += 1;
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_consumer_beyond_the_history_expires() {
        let limits = HistoryLimits { events_min: 10, age_ms: 0, bytes_max: entry(1, 1).bytes * 10 };
        let feed = SharedFeed::new(Feed::new(limits), Arc::default());
        let mut s = stream(&feed, None, WatchFilter::all(), SECOND).expect("watch");
        assert_eq!(next(&mut s).await, WatchItem::Progress { revision: 0 });
        for i in 1..=FEED_SUBSCRIBER_BUFFER_MAX as u64 * 2 {
            push(&feed, entry(i, 1));
        }
        match s.next().await {
            Some(Err(Error::Expired(e))) => assert_eq!(e.requested, 0),
            other => panic!("expected the watch to expire, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_filter_sees_only_its_events_of_an_entry() {
        let feed = feed();
        let filter = WatchFilter { labels: "entry=1".parse().expect("selector"), ..WatchFilter::all() };
        let mut s = stream(&feed, None, filter, SECOND).expect("watch");
        assert_eq!(next(&mut s).await, WatchItem::Progress { revision: 0 });
        for i in 1..=4 {
            push(&feed, entry(i, 2));
        }
        for want in [1, 3] {
            assert!(
                matches!(next(&mut s).await, WatchItem::Events { revision, ref events } if revision == want && events.len() == 2)
            );
        }
    }
}
