//! orch-sim: a whole orch cluster in one thread under simulated time, replayed from a seed.
//!
//! Each node is the production [`ControlPlane`](orch_raft::ControlPlane) (batcher, watch feed,
//! recovery gate, the orch-core state machine, openraft with its seeded runtime) on the
//! in-process router ([`orch_raft::local`]) and a simulated disk ([`orch_raft::crash`]) that
//! loses what it did not sync. Nothing here replaces production logic: where production reads a
//! clock, sends a message or writes to disk, the simulation drives a seam (`Builder::clock`,
//! `Builder::local`, `Builder::crash_disk`).
//!
//! A run starts the nodes, lets simulated clients and watchers work while the fault scheduler
//! injects faults drawn from the seed (message loss, delay, duplication and reordering;
//! symmetric and asymmetric partitions; crashes that lose unsynced writes, some torn; clocks
//! running fast or slow; forced snapshots; disk latency spikes; disks failing their writes),
//! then heals everything, probes liveness, reads every object a last time, waits until the
//! replicas agree, and runs the checkers ([`check`]) on the history it recorded. The same seed
//! gives the same trace hash: every delivered message, every applied entry, every client
//! outcome, in order. Simulated node agents ([`Simulation::agents`]) run orch-node's agent
//! loop with a simulated runtime against the cluster's API.
//!
//! ```
//! let report = orch_sim::Simulation::new(orch_sim::Config::quick(7)).run();
//! assert!(report.violations.is_empty(), "{report}");
//! ```

mod agents;
mod api;
pub mod check;
mod cluster;
mod faults;
pub mod history;
pub mod rng;
mod workload;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

pub use agents::AgentSettings;
pub use check::{Checker, Violation};
pub use cluster::SimClock;
pub use faults::FaultCounts;
pub use history::History;

use cluster::{Cluster, World, lock};

/// Which faults a run injects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultMix {
    /// Of every 1,000 messages (and replies), how many are lost.
    pub loss_per_mille: u32,
    /// Of every 1,000 messages, how many are delivered twice.
    pub duplicate_per_mille: u32,
    /// The latency of a message, drawn from this range of milliseconds (so messages overtake
    /// each other).
    pub latency_ms: (u64, u64),
    /// The time a disk sync takes, drawn from this range of milliseconds.
    pub sync_ms: (u64, u64),
    /// Crash and restart nodes (losing unsynced writes).
    pub crashes: bool,
    /// Cut links: isolate the leader, one-way cuts, random splits; and heal them.
    pub partitions: bool,
    /// Make nodes' clocks run fast or slow, or jump.
    pub clocks: bool,
    /// Force snapshots (and so log compaction and snapshot installs), and let a follower fall
    /// behind a compacted log (cut off from every node meanwhile) so that it installs one.
    pub compaction: bool,
    /// Disk latency spikes.
    pub disk_spikes: bool,
    /// Disks that fail every write (the node stops; it is restarted).
    pub io_errors: bool,
    /// Membership changes: a voter (a crashed one when there is one) is removed and a new
    /// node with a fresh disk joins as a learner, catches up, and is promoted.
    pub membership: bool,
}

impl FaultMix {
    /// No faults at all: a perfect network and disks.
    pub fn none() -> Self {
        Self {
            loss_per_mille: 0,
            duplicate_per_mille: 0,
            latency_ms: (1, 1),
            sync_ms: (0, 0),
            crashes: false,
            partitions: false,
            clocks: false,
            compaction: false,
            disk_spikes: false,
            io_errors: false,
            membership: false,
        }
    }

    /// Every fault.
    pub fn all() -> Self {
        Self {
            loss_per_mille: 30,
            duplicate_per_mille: 20,
            latency_ms: (1, 10),
            sync_ms: (0, 3),
            crashes: true,
            partitions: true,
            clocks: true,
            compaction: true,
            disk_spikes: true,
            io_errors: true,
            membership: true,
        }
    }

    /// Parses a comma-separated list of `loss`, `dup`, `delay`, `crash`, `partition`, `clock`,
    /// `compaction`, `disk`, `io`, or `all` / `none`.
    ///
    /// # Errors
    /// An unknown name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut mix = Self::none();
        let all = Self::all();
        for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "all" => mix = Self::all(),
                "none" => mix = Self::none(),
                "loss" => mix.loss_per_mille = all.loss_per_mille,
                "dup" => mix.duplicate_per_mille = all.duplicate_per_mille,
                "delay" => mix.latency_ms = all.latency_ms,
                "crash" => mix.crashes = true,
                "partition" => mix.partitions = true,
                "clock" => mix.clocks = true,
                "compaction" => mix.compaction = true,
                "disk" => {
                    mix.disk_spikes = true;
                    mix.sync_ms = all.sync_ms;
                }
                "io" => mix.io_errors = true,
                "membership" => mix.membership = true,
                other => {
                    return Err(format!(
                        "faults: Unsupported value: {other:?}: supported values: all, none, loss, dup, delay, crash, \
                         partition, clock, compaction, disk, io, membership"
                    ));
                }
            }
        }
        Ok(mix)
    }
}

/// The settings of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The seed everything is drawn from.
    pub seed: u64,
    /// Control-plane nodes: 3 or 5.
    pub nodes: usize,
    /// How long the faulty phase lasts, in simulated time.
    pub duration: Duration,
    /// The faults.
    pub faults: FaultMix,
    /// Simulated clients.
    pub clients: u64,
    /// Simulated watchers.
    pub watchers: u64,
    /// Simulated objects.
    pub keys: u32,
    /// The longest pause of a client between two operations, in milliseconds.
    pub think_ms: u64,
    /// The mean time between two faults.
    pub fault_every: Duration,
    /// After the faults heal, a write must complete within this simulated time.
    pub liveness_bound: Duration,
    /// The nodes' Raft heartbeat interval.
    pub heartbeat: Duration,
    /// The nodes' election timeout range.
    pub election_timeout: (Duration, Duration),
    /// Snapshot after this many entries.
    pub snapshot_every: u64,
    /// Keep this many entries behind a snapshot.
    pub snapshot_keep: u64,
}

impl Config {
    /// Every fault, 3 nodes, 20 simulated seconds.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            nodes: 3,
            duration: Duration::from_secs(20),
            faults: FaultMix::all(),
            clients: 4,
            watchers: 2,
            keys: 4,
            think_ms: 40,
            fault_every: Duration::from_millis(400),
            liveness_bound: Duration::from_secs(15),
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
            snapshot_every: 40,
            snapshot_keep: 10,
        }
    }

    /// As [`Config::new`], with 5 simulated seconds: the CI campaign's runs.
    pub fn quick(seed: u64) -> Self {
        Self { duration: Duration::from_secs(5), ..Self::new(seed) }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        let mut command = format!("cargo run -p orch-sim -- --seed {}", self.seed);
        let default = Self::new(self.seed);
        if self.nodes != default.nodes {
            command.push_str(&format!(" --nodes {}", self.nodes));
        }
        if self.duration != default.duration {
            command.push_str(&format!(" --duration-ms {}", self.duration.as_millis()));
        }
        if self.faults != default.faults {
            command.push_str(&format!(" --faults {}", describe(&self.faults)));
        }
        if self.clients != default.clients {
            command.push_str(&format!(" --clients {}", self.clients));
        }
        if self.watchers != default.watchers {
            command.push_str(&format!(" --watchers {}", self.watchers));
        }
        if self.keys != default.keys {
            command.push_str(&format!(" --keys {}", self.keys));
        }
        command
    }
}

fn describe(mix: &FaultMix) -> String {
    let mut names = Vec::new();
    let flags = [
        (mix.loss_per_mille > 0, "loss"),
        (mix.duplicate_per_mille > 0, "dup"),
        (mix.latency_ms != (1, 1), "delay"),
        (mix.crashes, "crash"),
        (mix.partitions, "partition"),
        (mix.clocks, "clock"),
        (mix.compaction, "compaction"),
        (mix.disk_spikes, "disk"),
        (mix.io_errors, "io"),
        (mix.membership, "membership"),
    ];
    for (on, name) in flags {
        if on {
            names.push(name);
        }
    }
    if names.is_empty() { "none".to_owned() } else { names.join(",") }
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct Report {
    /// The run's settings.
    pub config: Config,
    /// The trace hash: equal for equal seeds and settings.
    pub trace: String,
    /// What the checkers found wrong (empty: nothing).
    pub violations: Vec<Violation>,
    /// What happened.
    pub stats: Stats,
    /// The history the checkers read.
    pub history: History,
    /// The state the replicas agreed on at the end (the first node's).
    pub final_state: orch_core::State,
}

/// Counts of a run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Simulated milliseconds the run lasted.
    pub simulated_ms: u64,
    /// Client operations, and how many of them ended unknown.
    pub ops: usize,
    /// Writes whose outcome stayed unknown.
    pub unknown: usize,
    /// Entries applied, over all replicas.
    pub applications: usize,
    /// The highest log index applied.
    pub last_index: u64,
    /// The faults injected.
    pub faults: FaultCounts,
    /// Messages delivered, lost, duplicated.
    pub messages: orch_raft::local::Counts,
    /// Snapshots the nodes installed from a leader.
    pub snapshot_installs: u64,
    /// Of those, the ones installed while a watch was live on the node.
    pub installs_under_watch: u64,
    /// Times a watcher was told its revision expired (a snapshot installed under its watch,
    /// or history compacted past it) and relisted.
    pub watch_expiries: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "seed {}: {} ({} simulated ms, {} ops, {} unknown, last index {}, {} applications, {} snapshot \
             installs ({} under a watch), {} watch expiries, {:?}, {:?})",
            self.config.seed,
            if self.violations.is_empty() { "ok" } else { "FAILED" },
            s.simulated_ms,
            s.ops,
            s.unknown,
            s.last_index,
            s.applications,
            s.snapshot_installs,
            s.installs_under_watch,
            s.watch_expiries,
            s.faults,
            s.messages,
        )?;
        writeln!(f, "trace {}", self.trace)?;
        for v in &self.violations {
            writeln!(f, "  {v}")?;
        }
        if !self.violations.is_empty() {
            writeln!(f, "replay: {}", self.config.replay_command())?;
        }
        Ok(())
    }
}

/// A simulation to run: its settings, and the checkers and leader-only loops an embedding
/// program adds.
pub struct Simulation {
    config: Config,
    checkers: Vec<Box<dyn Checker>>,
    loops: Vec<orch_raft::leader::LoopFactory>,
    settle: Duration,
    agents: Option<AgentSettings>,
}

impl Simulation {
    /// A simulation with `config` and the standard checkers.
    pub fn new(config: Config) -> Self {
        let checkers = check::standard(u64::try_from(config.liveness_bound.as_millis()).unwrap_or(u64::MAX));
        Self { config, checkers, loops: Vec::new(), settle: Duration::ZERO, agents: None }
    }

    /// Adds a leader-only loop (orch-raft's framework, as orchd runs it): every node runs it
    /// while it leads, through the faults.
    pub fn leader_loop(mut self, factory: orch_raft::leader::LoopFactory) -> Self {
        self.loops.push(factory);
        self
    }

    /// Runs simulated node agents: orch-node's agent loop and the pure core it steps, with a
    /// simulated runtime, against the cluster's API through the faults (see
    /// [`AgentSettings`]).
    pub fn agents(mut self, settings: AgentSettings) -> Self {
        self.agents = Some(settings);
        self
    }

    /// Keeps the cluster running at least `settle` of simulated time after the faults heal,
    /// so that a checker can look at the state a bounded time after the heal
    /// ([`check::controllers::Converged`]).
    pub fn settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// Adds a checker of the whole history.
    pub fn checker(mut self, checker: Box<dyn Checker>) -> Self {
        self.checkers.push(checker);
        self
    }

    /// Runs the simulation on a single-threaded runtime with paused time.
    ///
    /// # Panics
    /// When the runtime cannot be built, or a node of a fresh cluster cannot start.
    pub fn run(self) -> Report {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("a single-threaded runtime");
        let seed = self.config.seed;
        runtime.block_on(orch_raft::with_seed(seed, self.simulate()))
    }

    async fn simulate(self) -> Report {
        // Align the simulated clock with the timer wheel's millisecond ticks (see the note in
        // orch-raft's determinism test).
        tokio::time::sleep(Duration::from_millis(1)).await;
        let config = self.config;
        let rng = rng::Rng::new(config.seed);
        let world = Arc::new(World::new(config.seed, config.nodes as u64));
        let router =
            orch_raft::local::LocalRouter::with_faults(faults::link_faults(&config.faults, rng.fork(2).next_u64()));
        let trace_world = Arc::clone(&world);
        router.set_tracer(Arc::new(move |from, to, what| {
            trace_world.trace(&[&from.to_le_bytes()[..], &to.to_le_bytes(), what.as_bytes()].concat());
        }));
        let mut cluster = Cluster::new(&config, Arc::clone(&world), router.clone());
        cluster.loops = self.loops.clone();
        for id in 1..=config.nodes as u64 {
            cluster.start(id).await.expect("a fresh node starts");
        }

        let agents = self.agents.as_ref().map(|a| agents::start(&world, a, &rng));
        let mut tasks = Vec::new();
        for i in 0..config.clients {
            let client = workload::Client::new(Arc::clone(&world), i, rng.fork(100 + i), config.keys, config.think_ms);
            tasks.push(tokio::spawn(client.run()));
        }
        for i in 0..config.watchers {
            tasks.push(tokio::spawn(workload::watcher(Arc::clone(&world), i, rng.fork(200 + i))));
        }

        // The faulty phase.
        let mut counts = FaultCounts::default();
        let end = tokio::time::Instant::now() + config.duration;
        let mut sample_at = tokio::time::Instant::now();
        let mean = u64::try_from(config.fault_every.as_millis()).unwrap_or(400).max(2);
        while tokio::time::Instant::now() < end {
            let wait = world.draw(|r| r.between(1, 2 * mean));
            let next = (tokio::time::Instant::now() + Duration::from_millis(wait)).min(end);
            while tokio::time::Instant::now() < next {
                tokio::time::sleep_until(sample_at.min(next)).await;
                if tokio::time::Instant::now() >= sample_at {
                    cluster.sample();
                    // From now: a fault step that waited (and sampled) meanwhile leaves no
                    // backlog of samples to take at one instant.
                    sample_at = tokio::time::Instant::now() + Duration::from_millis(50);
                }
            }
            faults::step(&mut cluster, &config.faults, &mut counts).await;
        }

        // Heal, and probe liveness.
        faults::heal(&mut cluster, &config.faults, &mut counts).await;
        let healed_ms = world.now_ms();
        let healed = tokio::time::Instant::now();
        let done_ms = workload::probe(Arc::clone(&world), config.liveness_bound * 2).await;
        lock(&world.history).probes.push(history::Probe { healed_ms, done_ms });
        cluster.wait((healed + self.settle).saturating_duration_since(tokio::time::Instant::now())).await;

        // The clients finish (the agents stop), and a last read of every object joins the
        // history.
        world.stop.store(true, Ordering::Relaxed);
        if let Some(agents) = agents {
            agents.stop().await;
        }
        let mut broken = Vec::new();
        for task in tasks {
            if let Err(e) = task.await {
                broken.push(format!("a client or watcher task failed: {e}"));
            }
        }
        let mut reader = workload::Client::new(Arc::clone(&world), config.clients, rng.fork(99), config.keys, 1);
        for key in 0..config.keys {
            reader.get(key).await;
        }

        // Every replica catches up; their states are compared.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            cluster.sample();
            let applied: Vec<u64> =
                cluster.nodes.values().filter_map(|s| s.cp.as_ref()).map(|cp| cp.metrics().applied_index).collect();
            let commit = cluster.nodes.values().filter_map(|s| s.cp.as_ref()).map(|cp| cp.metrics().commit_index).max();
            let caught_up = applied.len() == config.nodes && applied.iter().all(|a| Some(*a) >= commit);
            if caught_up && applied.windows(2).all(|w| w[0] == w[1]) || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster.sample();
        if std::env::var_os("ORCH_SIM_DEBUG").is_some() {
            for (id, slot) in &cluster.nodes {
                if let Some(cp) = &slot.cp {
                    eprintln!("node {id}: {:?} members {:?} health {:?}", cp.metrics(), cp.members(), cp.health());
                }
            }
        }
        let finals: Vec<(u64, u64)> =
            cluster.nodes.iter().filter_map(|(id, s)| Some((*id, s.cp.as_ref()?.metrics().applied_index))).collect();
        let final_state = cluster
            .nodes
            .values()
            .find_map(|s| s.cp.as_ref())
            .map(orch_raft::ControlPlane::applied_state)
            .unwrap_or_default();
        let messages = router.counts();
        cluster.shutdown().await;

        let history = std::mem::take(&mut *lock(&world.history));
        let mut violations = check::run(&self.checkers, &history);
        broken.extend(std::mem::take(&mut *lock(&world.unexpected)));
        violations.extend(broken.into_iter().map(|what| Violation { checker: "run", what }));
        if finals.len() < config.nodes || finals.windows(2).any(|w| w[0].1 != w[1].1) {
            violations.push(Violation {
                checker: "catch-up",
                what: format!(
                    "the replicas did not reach the same applied index after healing: (node, applied) {finals:?}"
                ),
            });
        }
        let installs = *lock(&world.installs);
        let stats = Stats {
            simulated_ms: world.now_ms(),
            ops: history.ops.len(),
            unknown: history.ops.iter().filter(|o| o.result == history::OpResult::Unknown).count(),
            applications: history.applications.len(),
            last_index: history.applications.iter().map(|a| a.index).max().unwrap_or(0),
            faults: counts,
            messages,
            snapshot_installs: installs.all,
            installs_under_watch: installs.under_watch,
            watch_expiries: history
                .watches
                .values()
                .flatten()
                .filter(|item| matches!(item, history::WatchLog::Expired))
                .count(),
        };
        let trace = lock(&world.trace).finalize().to_hex().to_string();
        Report { config, trace, violations, stats, history, final_state }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_command_names_every_setting_that_differs_from_the_default() {
        assert_eq!(Config::new(7).replay_command(), "cargo run -p orch-sim -- --seed 7");
        let config = Config {
            nodes: 5,
            duration: Duration::from_millis(1234),
            faults: FaultMix::parse("loss,crash").expect("a valid mix"),
            clients: 9,
            watchers: 0,
            keys: 100,
            ..Config::new(7)
        };
        assert_eq!(
            config.replay_command(),
            "cargo run -p orch-sim -- --seed 7 --nodes 5 --duration-ms 1234 --faults loss,crash --clients 9 \
             --watchers 0 --keys 100"
        );
    }
}
