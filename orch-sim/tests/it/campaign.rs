//! The CI campaign: a fixed set of seeds, every fault, 3 and 5 nodes; and the determinism of a
//! run. A seed that found a bug stays here as a regression test (see the README's list).

use std::time::Duration;

use orch_sim::{Config, Report, Simulation};

/// The seeds of the CI campaign, 20 simulated seconds each: 0..CAMPAIGN_SEEDS, split over two
/// tests so that both cores work.
const CAMPAIGN_SEEDS: u64 = 100;

fn campaign(seeds: std::ops::Range<u64>, nodes: usize) {
    let mut failed = Vec::new();
    for seed in seeds {
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
    //
    // With the clients on the real API and membership changes among the faults (the draws of
    // then): seed 2 found a follower answering `RemoveMember` with NotFound from its stale view
    // of the members; seed 52 a leader that removed itself and panicked its core at the next
    // membership change (openraft); seed 10 two servers naming each other as the leader, which
    // bounced a client's call between them without pause (simulated time stood still). Those
    // three are among the campaign's seeds; each fix has a test of its own too (orch-raft's
    // `a_leader_asked_to_remove_itself_hands_over_first`, orch-api's
    // `servers_naming_each_other_as_leader_do_not_bounce_a_call_without_pause`; that a follower
    // redirects rather than answer "no such member", by the same orch-raft test). Seed 47 of
    // the campaign (20 s, with the lag fault) found a voter under removal elected while the
    // joint configuration was not finished, whose next membership change panicked its core; with
    // the fix taken out (`ControlPlane::leads_but_leaves`) it fails again.
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
    let report = Simulation::new(Config::new(1)).run();
    assert!(report.violations.is_empty(), "{report}");
    let s = &report.stats;
    assert!(s.ops > 200, "{report}");
    assert!(s.faults.crashes > 0 && s.faults.restarts > 0 && s.faults.partitions > 0, "{report}");
    assert!(s.messages.lost > 0 && s.messages.duplicated > 0, "{report}");
    // A voter replaced (removed, a new node added through the API), client connections
    // broken, snapshots installed on lagging nodes (one under a live watch), and a watcher
    // told to relist.
    assert!(s.faults.removals > 0 && s.faults.additions > 0 && s.faults.resets > 0, "{report}");
    assert!(s.snapshot_installs > 0 && s.installs_under_watch > 0 && s.watch_expiries > 0, "{report}");
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
