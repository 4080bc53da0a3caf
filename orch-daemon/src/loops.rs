//! Leader-only loops: the scheduler and the controllers run here, on the Raft leader only.
//!
//! When this node becomes leader, every loop is made afresh and reconciles from the full
//! current state; after that it reconciles again whenever committed changes arrive, and at
//! least every resync interval. When the node steps down (or the term changes) the loops are
//! stopped. A loop's output is commands, proposed through the log: a deposed leader's late
//! proposal fails its preconditions or is refused, so it cannot corrupt state.
//!
//! Loops are level-triggered: [`LeaderLoop::reconcile`] gets the whole state and the time,
//! never the reason it was woken. Committed changes wake it; a watch's progress items do not.
//! A loop that panics (or returns) while this node leads is logged and started afresh after
//! [`LOOP_RESTART_DELAY`]; commands the state machine refuses and proposals that fail are
//! logged at warn and counted ([`LoopCounters`], in `/metrics`).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::FutureExt;
use orch_core::{Command, State, WatchFilter};
use orch_raft::ControlPlane;
use orch_raft::control_plane::{Consistency, PROPOSAL_REQUESTS_MAX, WatchItem};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use crate::metrics::LoopCounters;

/// The most watch items a loop takes in before it reconciles (the rest wait for the next
/// round).
pub const LOOP_EVENTS_PER_ROUND_MAX: usize = 4096;

/// How long a loop that stopped (panicked or returned) waits before it is started again, so
/// that one failing on every round does not spin.
pub const LOOP_RESTART_DELAY: Duration = Duration::from_millis(500);

/// A leader-only reconcile loop.
pub trait LeaderLoop: Send + 'static {
    /// Its name, for logs.
    fn name(&self) -> &'static str;
    /// The commands that move `state` towards what this loop wants, at `now_ms` (milliseconds
    /// since the epoch, read by the daemon).
    fn reconcile(&mut self, state: &State, now_ms: i64) -> Vec<Command>;
}

/// Makes a fresh loop for each term this node leads.
pub type LoopFactory = Arc<dyn Fn() -> Box<dyn LeaderLoop> + Send + Sync>;

/// The running framework; dropping it does not stop it, [`Loops::stop`] does.
pub struct Loops {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Loops {
    /// Starts watching for leadership on `cp`; `factories` make the loops, which count into
    /// `counters`.
    pub fn spawn(cp: ControlPlane, factories: Vec<LoopFactory>, resync: Duration, counters: LoopCounters) -> Self {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(cp, factories, resync, counters, stopped));
        Self { stop, task }
    }

    /// Stops the loops and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// The term this node leads in, if it leads.
fn leading(cp: &ControlPlane) -> Option<u64> {
    let m = cp.metrics();
    (m.leader == Some(m.id)).then_some(m.term)
}

async fn run(
    cp: ControlPlane,
    factories: Vec<LoopFactory>,
    resync: Duration,
    counters: LoopCounters,
    mut stopped: watch::Receiver<bool>,
) {
    // Leadership is polled at a fraction of the election timeout: cheap, and it cannot miss a
    // change the way a lost wake-up could.
    let poll = Duration::from_millis(50);
    loop {
        let Some(term) = leading(&cp) else {
            tokio::select! {
                _ = stopped.changed() => return,
                () = tokio::time::sleep(poll) => continue,
            }
        };
        tracing::info!(term, loops = factories.len(), "leading: starting the leader-only loops");
        let mut running = JoinSet::new();
        // Which factory made each running task.
        let mut made_by = std::collections::BTreeMap::new();
        for (i, factory) in factories.iter().enumerate() {
            let handle = running.spawn(run_one(cp.clone(), factory(), resync, counters.clone(), Duration::ZERO));
            made_by.insert(handle.id(), i);
        }
        loop {
            tokio::select! {
                _ = stopped.changed() => {
                    running.shutdown().await;
                    return;
                }
                Some(ended) = running.join_next_with_id() => {
                    let (id, panicked) = match ended {
                        Ok((id, ())) => (id, false),
                        Err(e) => (e.id(), e.is_panic()),
                    };
                    let Some(i) = made_by.remove(&id) else { continue };
                    let lp = factories[i]();
                    let name = lp.name();
                    tracing::error!(name, panicked, "leader loop stopped; starting it again");
                    counters.restarted(name);
                    let handle = running.spawn(run_one(cp.clone(), lp, resync, counters.clone(), LOOP_RESTART_DELAY));
                    made_by.insert(handle.id(), i);
                }
                () = tokio::time::sleep(poll) => {
                    if leading(&cp) != Some(term) {
                        break;
                    }
                }
            }
        }
        tracing::info!(term, "no longer leading: stopping the leader-only loops");
        running.shutdown().await;
    }
}

async fn run_one(
    cp: ControlPlane,
    mut lp: Box<dyn LeaderLoop>,
    resync: Duration,
    counters: LoopCounters,
    delay: Duration,
) {
    tokio::time::sleep(delay).await;
    loop {
        // A full reconcile from the current state, then follow the committed changes.
        let Ok(from) = cp.read(Consistency::Linearizable, State::applied_index).await else {
            tokio::time::sleep(resync.min(Duration::from_secs(1))).await;
            continue;
        };
        let mut events = match cp.watch(from, WatchFilter::all()) {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(name = lp.name(), error = %e, "leader loop: cannot watch; retrying");
                tokio::time::sleep(resync.min(Duration::from_secs(1))).await;
                continue;
            }
        };
        reconcile_and_propose(&cp, lp.as_mut(), &counters).await;
        // One resync deadline per round: items that do not wake the loop (progress) do not
        // push it back.
        let mut resync_at = tokio::time::Instant::now() + resync;
        loop {
            let first = tokio::time::timeout_at(resync_at, events.next()).await;
            match first {
                Err(_) => {}                          // resync
                Ok(None) | Ok(Some(Err(_))) => break, // the stream ended or fell behind: start over
                // Progress says nothing changed: no reconcile for it.
                Ok(Some(Ok(WatchItem::Progress { .. }))) => continue,
                Ok(Some(Ok(WatchItem::Events { .. }))) => {
                    // Take what else is ready, then reconcile once for all of it.
                    for _ in 0..LOOP_EVENTS_PER_ROUND_MAX {
                        match events.next().now_or_never() {
                            Some(Some(Ok(_))) => {}
                            Some(Some(Err(_)) | None) => break,
                            None => break,
                        }
                    }
                }
            }
            reconcile_and_propose(&cp, lp.as_mut(), &counters).await;
            resync_at = tokio::time::Instant::now() + resync;
        }
    }
}

async fn reconcile_and_propose(cp: &ControlPlane, lp: &mut dyn LeaderLoop, counters: &LoopCounters) {
    let now = orch_api::now_ms();
    let name = lp.name();
    let Ok(commands) = cp.read(Consistency::Stale, |s| lp.reconcile(s, now)).await else { return };
    let mut commands = commands;
    while !commands.is_empty() {
        let rest = commands.split_off(commands.len().min(PROPOSAL_REQUESTS_MAX));
        match cp.propose(commands).await {
            Ok(outcomes) => {
                for error in outcomes.iter().filter_map(|o| o.as_ref().err()) {
                    tracing::warn!(name, %error, "leader loop: a command was refused");
                    counters.rejected(name);
                }
            }
            Err(e) => {
                tracing::warn!(name, error = %e, "leader loop: proposal failed; the next round retries");
                counters.failed(name);
                return;
            }
        }
        commands = rest;
    }
}
