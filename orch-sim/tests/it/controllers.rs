//! orchd's scheduler and controllers, with simulated nodes, run on the simulated cluster's
//! leader through every fault: a Deployment ends rolled out, replica for replica.

use std::sync::Arc;

use orch_core::{Kind, Object, ObjectKey};
use orch_raft::leader::{LeaderLoop, LoopFactory, Round};
use orch_sim::{Config, Simulation};

/// Creates the Deployment `web` (3 replicas) once, when it is missing.
struct Submit;

impl LeaderLoop for Submit {
    fn name(&self) -> &'static str {
        "submit"
    }

    fn reconcile(&mut self, round: Round<'_>) -> Vec<orch_core::Command> {
        let key = ObjectKey::new(Kind::Deployment, "default", "web");
        if round.state.get(&key).is_some() {
            return Vec::new();
        }
        let manifest = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n  \
                        selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    \
                        spec: {containers: [{name: c, image: 'nginx:1', resources: {requests: {cpu: 100m}}}]}\n---\n\
                        apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n";
        orch_core::parse_manifests(manifest).expect("valid").into_iter().map(orch_core::Command::Create).collect()
    }
}

fn loops() -> Vec<LoopFactory> {
    let submit: LoopFactory = Arc::new(|| Box::new(Submit) as Box<dyn LeaderLoop>);
    let mut loops = vec![submit];
    loops.extend(orch_raft::controllers::standard(Default::default(), Default::default()));
    loops.push(orch_raft::controllers::simulated_nodes(orch_core::simnodes::Settings::named(3)));
    loops
}

/// A run with the controllers: no workload clients (their pods would be scheduled and
/// started too, which the workload's checkers do not expect); the raft, state and catch-up
/// checks still run.
fn run(seed: u64) -> orch_sim::Report {
    let mut sim = Simulation::new(Config { clients: 0, watchers: 0, ..Config::new(seed) });
    for factory in loops() {
        sim = sim.leader_loop(factory);
    }
    sim.run()
}

#[test]
fn a_deployment_rolls_out_on_simulated_nodes_through_the_faults() {
    for seed in [11, 12, 13] {
        let report = run(seed);
        assert!(report.violations.is_empty(), "{report}");
        let f = &report.stats.faults;
        assert!(f.crashes + f.partitions > 0 && report.stats.messages.lost > 0, "faults were injected: {report}");
        let state = &report.final_state;
        let Some(Object::Deployment(d)) = state.get(&ObjectKey::new(Kind::Deployment, "default", "web")) else {
            panic!("seed {seed}: no deployment at the end")
        };
        let s = &d.status;
        assert_eq!(
            (s.replicas, s.updated_replicas, s.available_replicas, s.observed_generation),
            (Some(3), Some(3), Some(3), d.metadata.generation),
            "seed {seed}: {s:?}"
        );
        let pods: Vec<_> = state
            .list(Kind::Pod, Some("default"))
            .filter_map(Object::as_pod)
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        assert_eq!(pods.len(), 3, "seed {seed}: exactly the replicas, no duplicate");
        assert!(pods.iter().all(|p| p.spec.node_name.is_some() && p.status.pod_ip.is_some()), "seed {seed}");
        let Some(Object::Endpoints(e)) = state.get(&ObjectKey::new(Kind::Endpoints, "default", "web")) else {
            panic!("seed {seed}: no endpoints")
        };
        // The endpoints are the pods' addresses, each once, all distinct.
        let mut listed: Vec<String> =
            e.subsets.iter().flat_map(|s| s.addresses.iter().map(|a| a.ip.to_string())).collect();
        let mut ips: Vec<String> =
            pods.iter().filter_map(|p| p.status.pod_ip.as_ref().map(ToString::to_string)).collect();
        listed.sort();
        ips.sort();
        ips.dedup();
        assert_eq!((listed, ips.len()), (ips.clone(), 3), "seed {seed}");
    }
}

/// The controllers' decisions replay from the seed: the same run, message for message.
#[test]
fn a_run_with_the_controllers_replays_from_its_seed() {
    assert_eq!(run(21).trace, run(21).trace);
}
