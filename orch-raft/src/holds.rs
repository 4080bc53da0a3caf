//! How long the state machine's lock and the feed's lock are held, by whom: what apply, reads
//! and watches may have to wait for. Measured (the `state_lock` bench prints it), never used
//! for decisions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Who held a lock, for [`LockHolds`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockSite {
    /// Applying one log entry (the state's lock).
    Apply,
    /// Taking a copy of the state for a read (the state's lock).
    Read,
    /// Taking the state to build a snapshot, and recording the snapshot built (the state's lock).
    BuildSnapshot,
    /// Swapping in a snapshot received from the leader (the state's lock).
    InstallSnapshot,
    /// Taking the current snapshot to send it to a follower (the state's lock).
    CurrentSnapshot,
    /// Anything else on the state's lock (applied log id, membership, hooks).
    Other,
    /// Publishing an applied entry or a snapshot's reset to the feed (the feed's lock).
    FeedPush,
    /// A watch subscribing to the feed, or catching up after falling behind (the feed's lock).
    Subscribe,
    /// A watch taking a chunk of history (the feed's lock).
    Backlog,
}

impl LockSite {
    /// Every site, in the order [`LockHolds::report`] lists them.
    pub const ALL: [LockSite; 9] = [
        LockSite::Apply,
        LockSite::Read,
        LockSite::BuildSnapshot,
        LockSite::InstallSnapshot,
        LockSite::CurrentSnapshot,
        LockSite::Other,
        LockSite::FeedPush,
        LockSite::Subscribe,
        LockSite::Backlog,
    ];

    /// Its name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            LockSite::Apply => "apply",
            LockSite::Read => "read",
            LockSite::BuildSnapshot => "build_snapshot",
            LockSite::InstallSnapshot => "install_snapshot",
            LockSite::CurrentSnapshot => "current_snapshot",
            LockSite::Other => "other",
            LockSite::FeedPush => "feed: push",
            LockSite::Subscribe => "feed: subscribe",
            LockSite::Backlog => "feed: backlog",
        }
    }
}

/// The longest time each site held its lock, and how often it took it.
#[derive(Debug, Default)]
pub struct LockHolds {
    longest_ns: [AtomicU64; LockSite::ALL.len()],
    count: [AtomicU64; LockSite::ALL.len()],
}

impl LockHolds {
    fn record(&self, site: LockSite, held: Duration) {
        let i = site as usize;
        self.longest_ns[i].fetch_max(u64::try_from(held.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.count[i].fetch_add(1, Ordering::Relaxed);
    }

    /// (site, longest hold, number of holds) for every site, since the last reset.
    pub fn report(&self) -> Vec<(LockSite, Duration, u64)> {
        LockSite::ALL
            .iter()
            .map(|&site| {
                let i = site as usize;
                (
                    site,
                    Duration::from_nanos(self.longest_ns[i].load(Ordering::Relaxed)),
                    self.count[i].load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    /// The longest hold of any site.
    pub fn longest(&self) -> Duration {
        self.report().into_iter().map(|(_, d, _)| d).max().unwrap_or_default()
    }

    /// Starts counting afresh.
    pub fn reset(&self) {
        for (longest, count) in self.longest_ns.iter().zip(&self.count) {
            longest.store(0, Ordering::Relaxed);
            count.store(0, Ordering::Relaxed);
        }
    }

    /// Takes `mutex` for `site`; the hold is recorded when the guard is dropped.
    pub(crate) fn hold<'a, T>(&'a self, mutex: &'a Mutex<T>, site: LockSite) -> Held<'a, T> {
        let guard = crate::lock(mutex);
        Held { guard, site, since: Instant::now(), holds: self }
    }
}

/// A lock held by one site.
pub(crate) struct Held<'a, T> {
    guard: MutexGuard<'a, T>,
    site: LockSite,
    since: Instant,
    holds: &'a LockHolds,
}

impl<T> std::ops::Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for Held<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for Held<'_, T> {
    fn drop(&mut self) {
        self.holds.record(self.site, self.since.elapsed());
    }
}
