//! orchd's scheduler and controllers run on the simulated cluster's leader through every
//! fault, with three simulated node agents (orch-node's agent loop and core, on a simulated
//! runtime whose runs crash now and then) running the pods, under the controllers' checkers
//! ([`orch_sim::check::controllers`]).

use std::sync::Arc;
use std::time::Duration;

use orch_core::{Command, Deployment, Kind, Object, ObjectKey};
use orch_raft::leader::{LeaderLoop, LoopFactory, Round};
use orch_sim::check::controllers;
use orch_sim::{Config, Simulation};

const IMAGES: [&str; 3] = ["nginx:1", "nginx:2", "nginx:3"];

/// The workload, as a leader-only loop (so it goes on through leader changes): creates the
/// Deployment `web` (4 replicas, maxSurge 1, maxUnavailable 1, each pod 3 of a node's 8
/// cores: two pods fit a node, six the cluster, and a rollout needs five) and its Service;
/// each time a rollout is complete, changes the image (nginx:1, then 2, then 3), then rolls
/// back (`rollout undo --to-revision 2`: nginx:2 again, as revision 4), then stops.
struct Rollouts;

/// Whether the Deployment's rollout is complete (shared with the agents' tests).
pub(crate) fn complete(d: &Deployment) -> bool {
    let s = &d.status;
    let want = d.spec.replicas;
    s.observed_generation == d.metadata.generation
        && (s.replicas, s.updated_replicas, s.available_replicas) == (want, want, want)
}

fn revision(d: &Deployment) -> Option<&str> {
    d.metadata.annotations.get("deployment.kubernetes.io/revision")
}

impl LeaderLoop for Rollouts {
    fn name(&self) -> &'static str {
        "rollouts"
    }

    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
        let key = ObjectKey::new(Kind::Deployment, "default", "web");
        let Some(Object::Deployment(d)) = round.state.get(&key) else {
            let manifest = format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 4\n  \
                 selector: {{matchLabels: {{app: web}}}}\n  strategy: {{rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}}}\n  \
                 template:\n    metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: c, image: '{}', command: [web], \
                 resources: {{requests: {{cpu: '3'}}}}}}]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\n\
                 spec: {{selector: {{app: web}}, ports: [{{port: 80}}]}}\n",
                IMAGES[0]
            );
            return orch_core::parse_manifests(&manifest).expect("valid").into_iter().map(Command::Create).collect();
        };
        if !complete(d) {
            return Vec::new();
        }
        let image = d.spec.template.spec.containers[0].image.to_string();
        match (image.as_str(), revision(d)) {
            ("nginx:3", Some("3")) => {
                vec![Command::RolloutUndo { namespace: "default".into(), name: "web".into(), to_revision: 2 }]
            }
            (current, _) if current != "nginx:3" && revision(d) != Some("4") => {
                let next = IMAGES.iter().position(|i| *i == current).map_or(IMAGES[0], |i| IMAGES[(i + 1).min(2)]);
                let mut changed = Deployment::clone(d);
                changed.spec.template.spec.containers[0].image = next.into();
                vec![Command::Update(Object::from(changed))]
            }
            _ => Vec::new(),
        }
    }
}

fn loops() -> Vec<LoopFactory> {
    let rollouts: LoopFactory = Arc::new(|| Box::new(Rollouts) as Box<dyn LeaderLoop>);
    let mut loops = vec![rollouts];
    loops.extend(orch_raft::controllers::standard(Default::default(), Default::default()));
    loops
}

/// How long after the faults heal every Deployment and Endpoints must have converged.
const CONVERGED_WITHIN: Duration = Duration::from_secs(30);

/// A run with the controllers and their checkers: no workload clients (their pods would be
/// scheduled and started too, which the workload's checkers do not expect); the raft, state
/// and catch-up checks still run.
fn run(seed: u64) -> orch_sim::Report {
    run_with(Config { clients: 0, watchers: 0, ..Config::new(seed) }, Vec::new())
}

fn run_with(config: Config, extra: Vec<LoopFactory>) -> orch_sim::Report {
    let mut sim = Simulation::new(config)
        .agents(orch_sim::AgentSettings::new(3))
        .settle(CONVERGED_WITHIN)
        .checker(Box::new(controllers::Allocatable))
        .checker(Box::new(controllers::RolloutBounds))
        .checker(Box::new(controllers::Converged { bound_ms: CONVERGED_WITHIN.as_millis() as u64 }));
    for factory in loops().into_iter().chain(extra) {
        sim = sim.leader_loop(factory);
    }
    sim.run()
}

/// Breaks what the checkers guard, once the first rollout is complete: scales the
/// Deployment's set down to one pod behind the Deployment controller's back (so the
/// ReplicaSet controller deletes three Ready pods at once), and creates a pod already bound
/// to `agent-1` that asks for 9 of its 8 cores.
struct Saboteur;

impl LeaderLoop for Saboteur {
    fn name(&self) -> &'static str {
        "saboteur"
    }

    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
        let squatter = ObjectKey::new(Kind::Pod, "default", "squatter");
        let Some(Object::Deployment(d)) = round.state.get(&ObjectKey::new(Kind::Deployment, "default", "web")) else {
            return Vec::new();
        };
        if round.state.get(&squatter).is_some() || !complete(d) {
            return Vec::new();
        }
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: squatter}\nspec: {nodeName: agent-1, containers: \
                   [{name: c, image: x, resources: {requests: {cpu: '9'}}}]}\n";
        let mut commands: Vec<Command> =
            orch_core::parse_manifests(pod).expect("valid").into_iter().map(Command::Create).collect();
        for set in round.state.list(Kind::ReplicaSet, Some("default")) {
            if let Object::ReplicaSet(rs) = set
                && rs.spec.replicas.unwrap_or(1) > 1
            {
                let mut smaller = orch_core::ReplicaSet::clone(rs);
                smaller.spec.replicas = Some(1);
                commands.push(Command::Update(Object::from(smaller)));
            }
        }
        commands
    }
}

/// The checkers see a controller that breaks the bounds, and a pod bound beyond its node's
/// allocatable: a run with the saboteur above fails both, with no fault injected.
#[test]
fn the_checkers_catch_a_controller_that_breaks_the_rules() {
    let saboteur: LoopFactory = Arc::new(|| Box::new(Saboteur) as Box<dyn LeaderLoop>);
    let config = Config { clients: 0, watchers: 0, faults: orch_sim::FaultMix::none(), ..Config::quick(5) };
    let report = run_with(config, vec![saboteur]);
    let by = |checker: &str| report.violations.iter().filter(|v| v.checker == checker).count();
    assert!(by("rollout-bounds") > 0, "{report}");
    assert!(by("allocatable") > 0, "{report}");
}

/// Issue 13's simulation, on simulated agents: under every fault the scheduler never binds
/// beyond a node's allocatable, every rollout keeps its surge and availability bounds, and
/// within 30 simulated seconds of the heal the Deployment has its replicas on its last
/// template and the Endpoints list exactly its Ready pods.
#[test]
fn rollouts_keep_their_bounds_and_converge_through_the_faults() {
    for seed in 11..=20 {
        let report = run(seed);
        assert!(report.violations.is_empty(), "{report}");
        let f = &report.stats.faults;
        assert!(f.crashes + f.partitions > 0 && report.stats.messages.lost > 0, "faults were injected: {report}");
        let Some(Object::Deployment(d)) = report.final_state.get(&ObjectKey::new(Kind::Deployment, "default", "web"))
        else {
            panic!("seed {seed}: no deployment at the end")
        };
        // Every step ran: three images, and the rollback to the second as revision 4.
        assert_eq!(
            (d.spec.template.spec.containers[0].image.as_str(), revision(d)),
            ("nginx:2", Some("4")),
            "seed {seed}"
        );
        // Some of it under the faults: the first image change was committed before the heal.
        let healed = report.history.probes[0].healed_ms;
        let changed_at = report.history.committed.iter().find(|c| {
            c.events.iter().any(|e| match &e.object {
                Object::Deployment(d) => d.spec.template.spec.containers[0].image.as_str() == "nginx:2",
                _ => false,
            })
        });
        assert!(changed_at.is_some_and(|c| c.at_ms < healed), "seed {seed}: the first rollout began before the heal");
    }
}

/// The controllers' decisions replay from the seed: the same run, message for message.
#[test]
fn a_run_with_the_controllers_replays_from_its_seed() {
    assert_eq!(run(21).trace, run(21).trace);
}
