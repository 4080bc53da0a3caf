//! The simulated cluster: control-plane nodes, each the production `ControlPlane` on the
//! in-process router and a simulated disk, with a clock of its own; and the world they share
//! (the run's random numbers, its history and its trace).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use orch_core::{Kind, ObjectKey};
use orch_raft::Member;
use orch_raft::clock::Clock;
use orch_raft::control_plane::{ControlPlane, SnapshotSettings};
use orch_raft::crash::CrashDisk;
use orch_raft::local::LocalRouter;

use crate::Config;
use crate::history::{Application, Change, Committed, History, Value};
use crate::rng::Rng;

/// The epoch of the simulated clocks: 2026-01-01T00:00:00Z.
pub(crate) const EPOCH_MS: i64 = 1_767_225_600_000;

/// The namespace of the simulated objects.
pub(crate) const NAMESPACE: &str = "default";

/// Locks a mutex of the simulation (one thread: a poisoned lock only follows a panic that
/// fails the run anyway).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What every part of a run shares.
pub(crate) struct World {
    /// The draws of the faults and the disks.
    pub(crate) rng: Mutex<Rng>,
    pub(crate) history: Mutex<History>,
    pub(crate) trace: Mutex<blake3::Hasher>,
    ticks: AtomicU64,
    start: tokio::time::Instant,
    /// The nodes up now: (which start of the node, its handle).
    pub(crate) live: Mutex<BTreeMap<u64, (u64, ControlPlane)>>,
    /// The nodes' API servers.
    pub(crate) api: crate::api::ApiNet,
    /// Snapshots installed by the nodes that stopped, and those of them under a live watch.
    pub(crate) installs: Mutex<orch_raft::control_plane::SnapshotInstalls>,
    /// Whether faults are printed as they happen (`ORCH_SIM_DEBUG`).
    debug: bool,
    /// The cluster's voters as last seen (clients start from their addresses).
    pub(crate) members: Mutex<Vec<u64>>,
    /// Set when the clients and watchers are to stop.
    pub(crate) stop: AtomicBool,
    /// What went wrong outside the checkers' view (a node whose Raft stopped on its own).
    pub(crate) unexpected: Mutex<Vec<String>>,
}

impl World {
    pub(crate) fn new(seed: u64, nodes: u64) -> Self {
        Self {
            rng: Mutex::new(Rng::new(seed).fork(1)),
            history: Mutex::default(),
            trace: Mutex::new(blake3::Hasher::new()),
            ticks: AtomicU64::new(0),
            start: tokio::time::Instant::now(),
            live: Mutex::default(),
            api: crate::api::ApiNet::default(),
            installs: Mutex::default(),
            members: Mutex::new((1..=nodes).collect()),
            debug: std::env::var_os("ORCH_SIM_DEBUG").is_some(),
            stop: AtomicBool::new(false),
            unexpected: Mutex::default(),
        }
    }

    /// Adds the snapshot installs of a node that stops.
    pub(crate) fn count_installs(&self, installs: orch_raft::control_plane::SnapshotInstalls) {
        let mut total = lock(&self.installs);
        total.all += installs.all;
        total.under_watch += installs.under_watch;
    }

    /// The next point in the run's order of events.
    pub(crate) fn tick(&self) -> u64 {
        self.ticks.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Simulated milliseconds since the run began.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records what the fault scheduler did (in the trace too).
    pub(crate) fn fault(&self, what: String) {
        self.trace(what.as_bytes());
        let at = self.now_ms();
        if self.debug {
            eprintln!("{at:>7} ms  {what}");
        }
        lock(&self.history).faults.push((at, what));
    }

    /// Adds `what` to the run's trace, stamped with the simulated time.
    pub(crate) fn trace(&self, what: &[u8]) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let mut trace = lock(&self.trace);
        trace.update(&nanos.to_le_bytes());
        trace.update(&(what.len() as u64).to_le_bytes());
        trace.update(what);
    }

    /// A draw from the world's generator.
    pub(crate) fn draw<T>(&self, f: impl FnOnce(&mut Rng) -> T) -> T {
        f(&mut lock(&self.rng))
    }

    /// The nodes up now.
    pub(crate) fn live(&self) -> Vec<(u64, u64, ControlPlane)> {
        lock(&self.live).iter().map(|(id, (inc, cp))| (*id, *inc, cp.clone())).collect()
    }
}

/// A node's clock: simulated time, running at its own rate and offset.
#[derive(Debug)]
pub struct SimClock {
    start: tokio::time::Instant,
    offset_ms: AtomicI64,
    rate_per_mille: AtomicI64,
}

impl SimClock {
    fn new() -> Self {
        Self { start: tokio::time::Instant::now(), offset_ms: AtomicI64::new(0), rate_per_mille: AtomicI64::new(1000) }
    }

    /// The clock runs at `rate_per_mille` / 1000 of simulated time, `offset_ms` off.
    pub fn set(&self, offset_ms: i64, rate_per_mille: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
        self.rate_per_mille.store(rate_per_mille, Ordering::Relaxed);
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        let elapsed = i64::try_from(self.start.elapsed().as_millis()).unwrap_or(i64::MAX / 2);
        let rate = self.rate_per_mille.load(Ordering::Relaxed);
        EPOCH_MS + elapsed.saturating_mul(rate) / 1000 + self.offset_ms.load(Ordering::Relaxed)
    }
}

/// One node's hardware: its disk and its clock, which outlive its crashes.
pub(crate) struct Slot {
    pub(crate) disk: CrashDisk,
    pub(crate) clock: Arc<SimClock>,
    /// How many times it started.
    pub(crate) starts: u64,
    pub(crate) cp: Option<ControlPlane>,
    syncer: Option<tokio::task::JoinHandle<()>>,
    /// The disk's sync latency range, in milliseconds (raised during a latency spike).
    pub(crate) sync_ms: Arc<Mutex<(u64, u64)>>,
    /// Whether the scheduler made the disk fail its writes.
    pub(crate) failing: bool,
    /// The leader-only loops of the node's current start.
    loops: Option<orch_raft::leader::Loops>,
}

impl Slot {
    fn new(config: &Config) -> Self {
        Self {
            disk: CrashDisk::new(),
            clock: Arc::new(SimClock::new()),
            starts: 0,
            cp: None,
            syncer: None,
            sync_ms: Arc::new(Mutex::new(config.faults.sync_ms)),
            failing: false,
            loops: None,
        }
    }
}

/// The simulated cluster.
pub(crate) struct Cluster {
    /// The leader-only loops every node runs (an embedding program's: `Simulation::leader_loop`).
    pub(crate) loops: Vec<orch_raft::leader::LoopFactory>,
    pub(crate) world: Arc<World>,
    pub(crate) router: LocalRouter,
    pub(crate) nodes: BTreeMap<u64, Slot>,
    /// A node started to replace a removed voter, not yet a voter itself.
    pub(crate) joining: Option<u64>,
    config: Config,
    seed: u64,
    /// The highest id of a node retired: ids are never reused.
    retired: u64,
}

impl Cluster {
    pub(crate) fn new(config: &Config, world: Arc<World>, router: LocalRouter) -> Self {
        let nodes = (1..=config.nodes as u64).map(|id| (id, Slot::new(config))).collect();
        Self {
            loops: Vec::new(),
            world,
            router,
            nodes,
            joining: None,
            config: config.clone(),
            seed: config.seed,
            retired: 0,
        }
    }

    /// How many voters the cluster is meant to have.
    pub(crate) fn size(&self) -> usize {
        self.config.nodes
    }

    /// A new machine with a fresh disk, under the next unused node id.
    pub(crate) fn add_slot(&mut self) -> u64 {
        let id = self.nodes.keys().next_back().copied().unwrap_or(0).max(self.retired) + 1;
        self.nodes.insert(id, Slot::new(&self.config));
        id
    }

    /// Node `id` leaves for good (it was removed from the cluster): it stops, and its disk
    /// goes with it.
    pub(crate) fn retire(&mut self, id: u64) {
        self.crash(id);
        self.nodes.remove(&id);
        self.retired = self.retired.max(id);
    }

    /// Retires the nodes that are no longer members as the leader sees them (a removal whose
    /// answer was lost, but which went through): the operator decommissions them. Nothing
    /// without a leader.
    pub(crate) fn retire_removed(&mut self) {
        let Some(cp) = self.leader_cp() else { return };
        let members = cp.members();
        let gone: Vec<u64> = self
            .nodes
            .keys()
            .copied()
            .filter(|id| {
                !members.voters.contains_key(id) && !members.learners.contains_key(id) && self.joining != Some(*id)
            })
            .collect();
        for id in gone {
            self.retire(id);
            self.world.fault(format!("retired node {id}, removed earlier"));
        }
    }

    /// The handle of the node that leads now ([`Cluster::leader`]).
    fn leader_cp(&self) -> Option<ControlPlane> {
        self.leader().and_then(|l| self.nodes.get(&l)).and_then(|s| s.cp.clone())
    }

    /// The voters, as the leader sees them (as last seen when no node leads).
    pub(crate) fn members(&self) -> Vec<u64> {
        if let Some(cp) = self.leader_cp() {
            let voters: Vec<u64> = cp.members().voters.keys().copied().collect();
            *lock(&self.world.members) = voters;
        }
        lock(&self.world.members).clone()
    }

    /// Starts node `id` on its disk (the first start of node 1 initializes the cluster).
    pub(crate) async fn start(&mut self, id: u64) -> Result<(), orch_raft::control_plane::Error> {
        let members: BTreeMap<u64, Member> =
            self.nodes.keys().map(|n| (*n, Member::new(format!("local-{n}"), crate::api::api_address(*n)))).collect();
        let world = Arc::clone(&self.world);
        let config = self.config.clone();
        let seed = self.seed;
        let slot = self.nodes.get_mut(&id).expect("a node of the cluster");
        // Each start its own seed: openraft's draws and the node's own client id.
        let start_seed = Rng::new(seed).fork(id << 16 | slot.starts).next_u64();
        slot.disk.pause_syncs(true);
        let incarnation = slot.starts;
        let hook_world = Arc::clone(&world);
        let hook: orch_raft::ApplyHook =
            Arc::new(move |applied: &orch_raft::AppliedEntry<'_>| record_application(&hook_world, id, applied));
        let builder = ControlPlane::builder(id, "/nonexistent/orch-sim")
            .local(self.router.clone())
            .crash_disk(slot.disk.clone())
            .seed(start_seed)
            .clock(Arc::clone(&slot.clock) as Arc<dyn Clock>)
            .apply_hook(hook)
            .timing(config.heartbeat, config.election_timeout)
            .snapshots(SnapshotSettings {
                every_entries: config.snapshot_every,
                keep_entries: config.snapshot_keep,
                chunk_bytes: 64 * 1024,
            })
            .progress_interval(Duration::from_millis(100));
        let builder = if id == 1 && slot.starts == 0 { builder.initial_members(members) } else { builder.join() };
        slot.starts += 1;
        let cp = builder.start().await?;
        let disk = slot.disk.clone();
        let sync_ms = Arc::clone(&slot.sync_ms);
        let syncer_world = Arc::clone(&world);
        slot.syncer = Some(tokio::spawn(async move {
            // A group-commit syncer: a sync begins when something was written, takes a drawn
            // time, and makes durable what was written before it began.
            loop {
                disk.written().await;
                let ticket = disk.begin_sync();
                let (lo, hi) = *lock(&sync_ms);
                let ms = syncer_world.draw(|r| r.between(lo, hi));
                if ms > 0 {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                disk.complete_sync(ticket);
            }
        }));
        if !self.loops.is_empty() {
            let events = Arc::new(orch_raft::leader::NoEvents);
            slot.loops = Some(orch_raft::leader::Loops::spawn(
                cp.clone(),
                self.loops.clone(),
                orch_raft::leader::LOOP_RESYNC,
                events,
            ));
        }
        slot.cp = Some(cp.clone());
        world.api.serve(id, cp.clone(), slot.loops.as_ref().map(orch_raft::leader::Loops::sender));
        lock(&world.live).insert(id, (incarnation, cp));
        world.fault(format!("start node {id} (start {incarnation})"));
        Ok(())
    }

    /// The power fails on node `id`: it stops at once, its disk keeps what it synced and
    /// maybe a prefix of the rest (drawn).
    pub(crate) fn crash(&mut self, id: u64) {
        let Some(slot) = self.nodes.get_mut(&id) else { return };
        let Some(cp) = slot.cp.take() else { return };
        self.world.count_installs(cp.snapshot_installs());
        slot.failing = false;
        lock(&self.world.live).remove(&id);
        // Unreachable at once, and nothing it sends is delivered any more; its clients'
        // connections break.
        self.router.unregister(id);
        self.world.api.stop(id);
        if let Some(syncer) = slot.syncer.take() {
            syncer.abort();
        }
        let loops = slot.loops.take();
        let (keep, torn) = self.world.draw(|r| {
            let keep = if r.chance(300) { r.between(1, 4) as usize } else { 0 };
            let torn = r.chance(300).then(|| r.below(3) as usize);
            (keep, torn)
        });
        let unsynced = slot.disk.crash_keeping(keep, torn);
        self.world.fault(format!("crash node {id}: {unsynced} unsynced writes, {keep} kept, torn {torn:?}"));
        // What is left of the node winds down in the background; its disk fails every call.
        tokio::spawn(async move {
            if let Some(loops) = loops {
                loops.stop().await;
            }
            let _ = tokio::time::timeout(Duration::from_secs(30), cp.shutdown()).await;
        });
    }

    /// Node ids that are down.
    pub(crate) fn down(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, s)| s.cp.is_none()).map(|(id, _)| *id).collect()
    }

    /// Node ids that are up.
    pub(crate) fn up(&self) -> Vec<u64> {
        self.nodes.iter().filter(|(_, s)| s.cp.is_some()).map(|(id, _)| *id).collect()
    }

    /// The node that leads now, as the nodes up see it.
    pub(crate) fn leader(&self) -> Option<u64> {
        // Of the nodes that believe they lead, the one of the highest term: a deposed leader
        // that has not heard of the new term yet believes it too.
        let up = self.up();
        self.nodes
            .values()
            .filter_map(|s| s.cp.as_ref())
            .map(orch_raft::ControlPlane::metrics)
            .filter(|m| m.leader == Some(m.id) && up.contains(&m.id))
            .max_by_key(|m| (m.term, std::cmp::Reverse(m.id)))
            .map(|m| m.id)
    }

    /// Waits `duration` of simulated time, sampling every 50 ms.
    pub(crate) async fn wait(&self, duration: Duration) {
        let end = tokio::time::Instant::now() + duration;
        while tokio::time::Instant::now() < end {
            tokio::time::sleep_until((tokio::time::Instant::now() + Duration::from_millis(50)).min(end)).await;
            self.sample();
        }
    }

    /// Entries a snapshot leaves in the log behind it.
    pub(crate) fn snapshot_keep(&self) -> u64 {
        self.config.snapshot_keep
    }

    /// Records every node's metrics and state digest.
    pub(crate) fn sample(&self) {
        let at_ms = self.world.now_ms();
        let mut samples = Vec::new();
        for (id, slot) in &self.nodes {
            let Some(cp) = &slot.cp else { continue };
            if let Err(why) = cp.health()
                && !slot.failing
            {
                let what =
                    format!("node {id} (start {})'s Raft stopped with no injected IO error: {why}", slot.starts - 1);
                let mut unexpected = lock(&self.world.unexpected);
                if !unexpected.contains(&what) {
                    unexpected.push(what.clone());
                    drop(unexpected);
                    self.world.fault(what);
                }
            }
            let m = cp.metrics();
            // The state as applied, whatever the recovery gate says (a stale read would wait).
            let state = cp.applied_state();
            let applied = (state.applied_index(), state.digest().0);
            samples.push(crate::history::Sample {
                node: *id,
                incarnation: slot.starts - 1,
                at_ms,
                term: m.term,
                leader: m.leader == Some(*id) && m.role == "Leader",
                commit: m.commit_index,
                applied,
            });
        }
        lock(&self.world.history).samples.extend(samples);
    }

    /// Stops every node.
    pub(crate) async fn shutdown(&mut self) {
        self.world.api.stop_all();
        for slot in self.nodes.values_mut() {
            if let Some(loops) = slot.loops.take() {
                loops.stop().await;
            }
            if let Some(syncer) = slot.syncer.take() {
                syncer.abort();
            }
            if let Some(cp) = slot.cp.take() {
                self.world.count_installs(cp.snapshot_installs());
                let _ = tokio::time::timeout(Duration::from_secs(30), cp.shutdown()).await;
            }
        }
        lock(&self.world.live).clear();
    }
}

/// The simulated object named `k<key>`.
pub(crate) fn object_key(key: u32) -> ObjectKey {
    ObjectKey::new(Kind::Pod, NAMESPACE, &format!("k{key}"))
}

/// The value a simulated object holds (its `v` label and its status message).
pub(crate) fn value_of(object: &orch_core::Object) -> Option<(u32, Value)> {
    let orch_core::Object::Pod(pod) = object else { return None };
    let key = pod.metadata.name.as_str().strip_prefix('k')?.parse().ok()?;
    let spec = pod.metadata.labels.get("v")?.parse().ok()?;
    let status = pod.status.message.as_ref().and_then(|m| m.as_str().parse().ok()).unwrap_or(0);
    Some((key, Value { spec, status }))
}

fn record_application(world: &World, node: u64, applied: &orch_raft::AppliedEntry<'_>) {
    let index = applied.index;
    let mut hasher = blake3::Hasher::new();
    hasher.update(&applied.term.to_le_bytes());
    hasher.update(&applied.leader.to_le_bytes());
    let mut fresh: Vec<(u128, u64)> = Vec::new();
    let mut requests = Vec::new();
    let mut changes = Vec::new();
    match &applied.payload {
        orch_raft::AppliedPayload::Blank => {
            hasher.update(b"blank");
        }
        orch_raft::AppliedPayload::Membership { voters, members } => {
            hasher.update(b"membership");
            for ids in voters.iter().chain([members]) {
                hasher.update(&(ids.len() as u64).to_le_bytes());
                for id in ids {
                    hasher.update(&id.to_le_bytes());
                }
            }
        }
        orch_raft::AppliedPayload::Normal(entry, output) => {
            hasher.update(b"normal");
            hasher.update(&orch_core::codec::encode(*entry));
            hasher.update(&orch_core::codec::encode(&output.outcomes));
            hasher.update(&orch_core::codec::encode(&output.events));
            // Applied afresh: a success of this entry's revision, the first time the request
            // appears in it (a retry batched into the same entry is answered from the table
            // with that outcome).
            for (r, o) in entry.requests.iter().zip(&output.outcomes) {
                let id = (r.client.0, r.serial);
                if matches!(o, Ok(s) if s.revision.0 == index) && !fresh.contains(&id) {
                    fresh.push(id);
                }
            }
            requests = entry.requests.iter().map(|r| (r.client.0, r.serial)).collect();
            changes = output
                .events
                .iter()
                .filter_map(|e| {
                    let (key, value) = value_of(&e.object)?;
                    Some(Change { event: e.event_type, key, value })
                })
                .collect();
        }
    }
    let digest = *hasher.finalize().as_bytes();
    world.trace(&[b"apply".as_slice(), &node.to_le_bytes(), &index.to_le_bytes(), &digest].concat());
    let mut history = lock(&world.history);
    // The first application of an index: first applications come in index order (a replica
    // applies an index only after applying the one before it, or installing a snapshot made
    // by one that did).
    if history.committed.last().is_none_or(|c| c.index < index) {
        let events = match &applied.payload {
            orch_raft::AppliedPayload::Normal(_, output) => {
                output.events.iter().filter(|e| e.object.kind() != Kind::Event).cloned().collect()
            }
            _ => Vec::new(),
        };
        history.committed.push(Committed { index, at_ms: world.now_ms(), events });
    }
    history.applications.push(Application { node, index, digest, fresh, requests, changes });
}

#[cfg(test)]
mod tests {
    use orch_raft::{AppliedEntry, AppliedPayload};

    use super::*;

    #[test]
    fn an_entry_s_digest_covers_its_term_its_leader_and_its_kind() {
        let world = World::new(1, 3);
        let membership = || AppliedPayload::Membership { voters: vec![vec![1, 2, 3]], members: vec![1, 2, 3] };
        let entries = [
            AppliedEntry { index: 5, term: 2, leader: 1, payload: AppliedPayload::Blank },
            AppliedEntry { index: 5, term: 2, leader: 1, payload: AppliedPayload::Blank },
            AppliedEntry { index: 5, term: 3, leader: 1, payload: AppliedPayload::Blank },
            AppliedEntry { index: 5, term: 2, leader: 2, payload: AppliedPayload::Blank },
            AppliedEntry { index: 5, term: 2, leader: 1, payload: membership() },
            AppliedEntry {
                index: 5,
                term: 2,
                leader: 1,
                payload: AppliedPayload::Membership { voters: vec![vec![1, 2]], members: vec![1, 2, 3] },
            },
        ];
        for (node, entry) in entries.iter().enumerate() {
            record_application(&world, node as u64, entry);
        }
        let digests: Vec<[u8; 32]> = lock(&world.history).applications.iter().map(|a| a.digest).collect();
        assert_eq!(digests[0], digests[1], "the same entry on two replicas");
        for (i, other) in digests.iter().enumerate().skip(2) {
            assert_ne!(digests[0], *other, "entry {i} differs from entry 0");
        }
        assert_ne!(digests[4], digests[5], "another configuration");
    }
}
