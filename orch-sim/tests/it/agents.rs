//! Simulated node agents (orch-node's agent loop and the pure core it steps, with a simulated
//! runtime) run a Deployment's pods through every fault: the scheduler never binds beyond a
//! node's allocatable, the rollouts keep their bounds, and after the heal the Deployment and
//! its Endpoints converge on pods the agents report Running and Ready.

use std::sync::Arc;
use std::time::Duration;

use orch_core::{Command, Deployment, Kind, Object, ObjectKey};
use orch_raft::leader::{LeaderLoop, LoopFactory, Round};
use orch_sim::check::controllers;
use orch_sim::{AgentSettings, Config, Simulation};

use crate::controllers::complete;

/// Creates the Deployment `web` (4 replicas of 3 cores each, a tcpSocket readiness probe, a
/// command: what an agent runs) and its Service; once the rollout is complete, changes the
/// template's `VERSION` once (a second rollout through the agents).
struct Workload;

impl LeaderLoop for Workload {
    fn name(&self) -> &'static str {
        "workload"
    }

    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
        let key = ObjectKey::new(Kind::Deployment, "default", "web");
        let Some(Object::Deployment(d)) = round.state.get(&key) else {
            let manifest = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 4\n  \
                 selector: {matchLabels: {app: web}}\n  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}\n  \
                 template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - name: c\n        \
                 command: [orch-hello]\n        env: [{name: VERSION, value: '1'}]\n        ports: [{containerPort: 8080}]\n        \
                 resources: {requests: {cpu: '3'}}\n        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}\n\
                 ---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n";
            return orch_core::parse_manifests(manifest).expect("valid").into_iter().map(Command::Create).collect();
        };
        let version = d.spec.template.spec.containers[0].env[0].value.as_deref().unwrap_or_default().to_owned();
        if !complete(d) || version != "1" {
            return Vec::new();
        }
        let mut changed = Deployment::clone(d);
        changed.spec.template.spec.containers[0].env[0].value = Some("2".into());
        vec![Command::Update(Object::from(changed))]
    }
}

const CONVERGED_WITHIN: Duration = Duration::from_secs(30);

fn run(seed: u64) -> orch_sim::Report {
    run_with(Config { clients: 0, watchers: 0, ..Config::new(seed) })
}

fn run_with(config: Config) -> orch_sim::Report {
    let workload: LoopFactory = Arc::new(|| Box::new(Workload) as Box<dyn LeaderLoop>);
    let mut sim = Simulation::new(config)
        .agents(AgentSettings::new(3))
        .settle(CONVERGED_WITHIN)
        .checker(Box::new(controllers::Allocatable))
        .checker(Box::new(controllers::RolloutBounds))
        .checker(Box::new(controllers::Converged { bound_ms: CONVERGED_WITHIN.as_millis() as u64 }));
    for factory in
        std::iter::once(workload).chain(orch_raft::controllers::standard(Default::default(), Default::default()))
    {
        sim = sim.leader_loop(factory);
    }
    sim.run()
}

#[test]
fn agents_run_a_deployment_through_the_faults_and_converge() {
    let mut restarted = 0;
    for seed in 31..=34 {
        let report = run(seed);
        assert!(report.violations.is_empty(), "{report}");
        let f = &report.stats.faults;
        assert!(f.crashes + f.partitions > 0, "faults were injected: {report}");
        let state = &report.final_state;
        let Some(Object::Deployment(d)) = state.get(&ObjectKey::new(Kind::Deployment, "default", "web")) else {
            panic!("seed {seed}: no deployment at the end")
        };
        assert_eq!(
            d.spec.template.spec.containers[0].env[0].value.as_deref(),
            Some("2"),
            "seed {seed}: both rollouts ran"
        );
        // The agents registered their nodes, and run the pods: Running and Ready as they say.
        let nodes: Vec<_> = state.list(Kind::Node, None).collect();
        assert_eq!(nodes.len(), 3, "seed {seed}");
        for n in nodes {
            let Object::Node(n) = n else { unreachable!() };
            assert_eq!(n.status.node_info.as_ref().map(|i| i.os_image.as_str()), Some("orch-sim"), "seed {seed}");
            assert!(orch_core::fit::ready(n), "seed {seed}: {} Ready", n.metadata.name);
        }
        let pods: Vec<_> = state.list(Kind::Pod, Some("default")).filter_map(Object::as_pod).collect();
        assert_eq!(pods.len(), 4, "seed {seed}: {pods:#?}");
        for p in pods {
            assert_eq!(p.status.phase, Some(orch_core::core_v1::PodPhase::Running), "seed {seed}");
            assert!(p.status.pod_ip.as_deref().is_some_and(|ip| ip.starts_with("10.")), "seed {seed}");
            assert!(p.status.container_statuses.iter().all(|c| c.ready), "seed {seed}: {:?}", p.status);
        }
        // The simulated runtime's crashes happened, and the agents restarted the runs.
        restarted += report
            .history
            .committed
            .iter()
            .flat_map(|c| &c.events)
            .filter(|e| matches!(&e.object, Object::Pod(p) if p.status.container_statuses.iter().any(|c| c.restart_count > 0)))
            .count();
    }
    assert!(restarted > 0, "no container was restarted in any run");
}

/// The agents' heartbeats reach the node lifecycle controller on the leader: in a run with no
/// fault, one leader for 50 simulated seconds (longer than the 40 s grace period), no Node's
/// `Ready` ever leaves `True`.
#[test]
fn heartbeats_keep_the_nodes_ready() {
    let report = run_with(Config { clients: 0, watchers: 0, faults: orch_sim::FaultMix::none(), ..Config::new(36) });
    assert!(report.violations.is_empty(), "{report}");
    assert!(report.stats.simulated_ms > 45_000, "the run outlasts the grace period: {report}");
    let nodes = report.final_state.list(Kind::Node, None).count();
    assert_eq!(nodes, 3);
    for c in &report.history.committed {
        for e in &c.events {
            if let Object::Node(n) = &e.object {
                assert!(orch_core::fit::ready(n), "entry {}: {} ({} ms)", c.index, n.metadata.name, c.at_ms);
            }
        }
    }
}

/// A run with agents replays from its seed: the same trace, message for message.
#[test]
fn a_run_with_agents_replays_from_its_seed() {
    assert_eq!(run(35).trace, run(35).trace);
}
