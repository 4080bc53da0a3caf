//! The CI campaign: a fixed set of seeds, every fault, 3 and 5 nodes; and the determinism of a
//! run. A seed that found a bug stays here as a regression test (see the README's list).

use std::time::Duration;

use orch_sim::{Config, Report, Simulation};

/// The seeds of the CI campaign, 20 simulated seconds each: 0..CAMPAIGN_SEEDS, split over two
/// tests so that both cores work.
const CAMPAIGN_SEEDS: u64 = 100;

/// Seeds of the campaign that fail on an open bug, with the bug (README, "Bugs the simulator
/// found"). They are not run here; `cargo run -p orch-sim -- --seed N` shows each.
const KNOWN_OPEN: &[(u64, &str)] = &[(
    33,
    "openraft 0.10.0-alpha.37: a follower that installs a snapshot older than the log it already \
     flushed moves its log IO cursor back, and a debug assertion stops its Raft core",
)];

fn campaign(seeds: std::ops::Range<u64>, nodes: usize) {
    let mut failed = Vec::new();
    for seed in seeds.filter(|s| nodes != 3 || !KNOWN_OPEN.iter().any(|(k, _)| k == s)) {
        let report = Simulation::new(Config { nodes, ..Config::new(seed) }).run();
        if !report.violations.is_empty() {
            failed.push(report.to_string());
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn campaign_first_half_finds_nothing() {
    campaign(0..CAMPAIGN_SEEDS / 2, 3);
}

#[test]
fn campaign_second_half_finds_nothing() {
    campaign(CAMPAIGN_SEEDS / 2..CAMPAIGN_SEEDS, 3);
}

#[test]
fn five_nodes_find_nothing() {
    campaign(1000..1010, 5);
}

/// Seeds that found bugs (README, "Bugs the simulator found"): each failed before its fix.
#[test]
fn seeds_that_found_bugs_pass() {
    // A restarted leader resumed its term and reissued log ids (openraft's leader restore);
    // replicas diverged. Found with seeds 68 and 78 of 5 s; with the draws of today, seed 68
    // of 5 s and seeds 0 and 11 of 20 s fail with the fix taken out.
    let runs = [Config::quick(68), Config::new(0), Config::new(11)];
    for config in runs {
        let report = Simulation::new(config).run();
        assert!(report.violations.is_empty(), "{report}");
    }
}

fn short(seed: u64) -> Report {
    Simulation::new(Config { duration: Duration::from_secs(3), ..Config::new(seed) }).run()
}

#[test]
fn the_same_seed_gives_the_same_trace_and_other_seeds_differ() {
    for seed in [11, 12, 13] {
        let first = short(seed);
        assert!(first.violations.is_empty(), "{first}");
        let again = short(seed);
        assert_eq!(first.trace, again.trace, "seed {seed} replays exactly");
        assert_eq!(first.history, again.history);
    }
    let traces: std::collections::BTreeSet<String> = [21, 22, 23].into_iter().map(|s| short(s).trace).collect();
    assert_eq!(traces.len(), 3, "other seeds take other paths");
}

#[test]
fn a_run_exercises_the_faults_it_was_given() {
    let report = Simulation::new(Config::new(5)).run();
    assert!(report.violations.is_empty(), "{report}");
    let s = &report.stats;
    assert!(s.ops > 200, "{report}");
    assert!(s.faults.crashes > 0 && s.faults.restarts > 0 && s.faults.partitions > 0, "{report}");
    assert!(s.messages.lost > 0 && s.messages.duplicated > 0, "{report}");
    assert!(report.history.watches.values().all(|w| w.len() > 10), "{report}");
}

/// Creates namespace `managed` whenever it is missing.
struct EnsureNamespace;

impl orch_raft::leader::LeaderLoop for EnsureNamespace {
    fn name(&self) -> &'static str {
        "ensure-namespace"
    }

    fn reconcile(&mut self, round: orch_raft::leader::Round<'_>) -> Vec<orch_core::Command> {
        let key = orch_core::ObjectKey::new(orch_core::Kind::Namespace, "", "managed");
        if round.state.get(&key).is_some() {
            return Vec::new();
        }
        let manifest = "apiVersion: v1\nkind: Namespace\nmetadata: {name: managed}\n";
        orch_core::parse_manifests(manifest).expect("valid").into_iter().map(orch_core::Command::Create).collect()
    }
}

#[test]
fn an_embedding_program_s_loop_runs_on_the_leader_through_the_faults() {
    for seed in [3, 4] {
        let factory: orch_raft::leader::LoopFactory =
            std::sync::Arc::new(|| Box::new(EnsureNamespace) as Box<dyn orch_raft::leader::LeaderLoop>);
        let report = Simulation::new(Config::new(seed)).leader_loop(factory).run();
        assert!(report.violations.is_empty(), "{report}");
        let key = orch_core::ObjectKey::new(orch_core::Kind::Namespace, "", "managed");
        assert!(report.final_state.get(&key).is_some(), "the loop's namespace exists at the end");
    }
}
