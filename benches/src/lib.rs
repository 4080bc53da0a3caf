//! Benchmarks for orch. `benches/` holds the criterion benches (`cargo bench -p orch-benches`)
//! and measurement binaries; results are recorded in `BENCHMARKS.md` at the repository root.
//! This library holds the fixtures they share.

use std::sync::Arc;

use orch_core::core_v1::{
    Container, ContainerPort, ContainerState, ContainerStateRunning, ContainerStatus, HttpGetAction, Pod, PodCondition,
    PodPhase, PodSpec, PodStatus, Probe, ResourceList, ResourceRequirements,
};
use orch_core::meta::{ConditionStatus, OwnerReference};
use orch_core::{
    ClientId, Command, Entry, IntOrString, Node, Object, ObjectMeta, Quantity, Request, State, StrMap, Time, Uid,
};

/// Pods in the scale envelope the benches use (Kubernetes' 150,000).
pub const PODS: usize = 150_000;
/// Nodes in the scale envelope (Kubernetes' 5,000).
pub const NODES: usize = 5_000;
/// Requests per entry when building a large state.
const BUILD_BATCH: usize = 1_000;

/// Node `i`, as its agent registers it: 4 cores, 16 GiB, 110 pods.
pub fn node(i: usize) -> Object {
    let mut node = Node::default();
    node.metadata.name = format!("node-{i:05}").into();
    node.metadata.labels =
        [("kubernetes.io/hostname", node.metadata.name.as_str()), ("zone", "a")].into_iter().collect();
    node.status.capacity = ResourceList {
        cpu: Some(Quantity::from_units(4)),
        memory: Some(Quantity::from_bytes(16 << 30)),
        pods: Some(Quantity::from_units(110)),
        ephemeral_storage: None,
    };
    Object::from(node)
}

/// A typical pod of a deployment, as the replica set controller creates it: one container
/// with a port, requests and a readiness probe, two labels, an owner reference, bound to a
/// node.
pub fn typical_pod(i: usize) -> Object {
    let metadata = ObjectMeta {
        name: format!("web-5d8f9c7b6-{i:06}").into(),
        namespace: Some("default".into()),
        labels: StrMap::from_iter([("app", "web"), ("pod-template-hash", "5d8f9c7b6")]),
        owner_references: vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "web-5d8f9c7b6".into(),
            uid: Uid::from_u128(7),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }],
        ..ObjectMeta::default()
    };
    let container = Container {
        name: "web".into(),
        image: "registry.example.com/shop/web:1.27.3".into(),
        ports: vec![ContainerPort { name: Some("http".into()), container_port: 8080, ..ContainerPort::default() }],
        resources: ResourceRequirements {
            requests: ResourceList {
                cpu: Some(Quantity::from_milli(250)),
                memory: Some(Quantity::from_bytes(128 << 20)),
                ..ResourceList::default()
            },
            limits: ResourceList { memory: Some(Quantity::from_bytes(256 << 20)), ..ResourceList::default() },
        },
        readiness_probe: Some(Box::new(Probe {
            http_get: Some(HttpGetAction {
                path: Some("/healthz".into()),
                port: IntOrString::Str("http".into()),
                ..HttpGetAction::default()
            }),
            ..Probe::default()
        })),
        ..Container::default()
    };
    let spec = PodSpec {
        containers: vec![container],
        node_name: Some(format!("node-{:05}", i % NODES).into()),
        ..PodSpec::default()
    };
    Object::from(Pod { metadata, spec, status: PodStatus::default() })
}

/// The status a node agent reports for a running, ready pod.
pub fn running_status(pod: &Object, now: Time) -> Object {
    let mut pod = pod.clone();
    if let Object::Pod(p) = &mut pod {
        let p = Arc::make_mut(p);
        let condition = |type_: &str| PodCondition::new(type_, ConditionStatus::True, now);
        p.status = PodStatus {
            phase: Some(PodPhase::Running),
            conditions: ["PodScheduled", "Initialized", "ContainersReady", "Ready"].map(condition).into(),
            container_statuses: vec![ContainerStatus {
                name: "web".into(),
                state: ContainerState {
                    running: Some(ContainerStateRunning { started_at: Some(now) }),
                    ..ContainerState::default()
                },
                ready: true,
                image: p.spec.containers[0].image.clone(),
                container_id: Some("orch://3f2a9c1e5b7d".into()),
                started: Some(true),
                ..ContainerStatus::default()
            }],
            pod_ip: Some("10.244.3.17".into()),
            host_ip: Some("192.0.2.10".into()),
            start_time: Some(now),
            ..PodStatus::default()
        };
    }
    pod
}

/// Applies commands in entries of [`BUILD_BATCH`] requests from one client.
pub fn apply_all(state: &mut State, commands: impl IntoIterator<Item = Command>, now_ms: i64, serial: &mut u64) {
    let mut requests = Vec::with_capacity(BUILD_BATCH);
    let flush = |state: &mut State, requests: &mut Vec<Request>| {
        if requests.is_empty() {
            return;
        }
        let entry = Entry::new(now_ms, std::mem::take(requests));
        let out = state.apply(state.applied_index() + 1, entry);
        assert!(
            out.outcomes.iter().all(Result::is_ok),
            "fixture command failed: {:?}",
            out.outcomes.iter().find(|o| o.is_err())
        );
    };
    for command in commands {
        *serial += 1;
        requests.push(Request { client: ClientId(1), serial: *serial, acked_below: 0, retry: false, command });
        if requests.len() == BUILD_BATCH {
            flush(state, &mut requests);
        }
    }
    flush(state, &mut requests);
}

/// A state holding `nodes` nodes and `pods` running pods.
pub fn build_state(nodes: usize, pods: usize) -> State {
    build_state_of(node, nodes, pods)
}

/// Node `i` as an agent registers it on a roomy machine: 16 cores, 64 GiB, 110 pods, Ready,
/// in one of 3 zones.
pub fn ready_node(i: usize) -> Object {
    let mut obj = node(i);
    if let Object::Node(n) = &mut obj {
        let n = Arc::make_mut(n);
        n.status.capacity.cpu = Some(Quantity::from_units(16));
        n.status.capacity.memory = Some(Quantity::from_bytes(64 << 30));
        n.metadata.labels.insert(orch_core::scheduler::ZONE_LABEL, format!("zone-{}", i % 3));
        n.status.conditions.push(orch_core::core_v1::NodeCondition {
            type_: "Ready".into(),
            status: ConditionStatus::True,
            last_heartbeat_time: Some(Time::from_millis(0)),
            last_transition_time: Some(Time::from_millis(0)),
            ..orch_core::core_v1::NodeCondition::default()
        });
    }
    obj
}

/// A state holding `nodes` nodes made by `node` and `pods` running pods.
pub fn build_state_of(node: fn(usize) -> Object, nodes: usize, pods: usize) -> State {
    let now_ms = 1_800_000_000_000;
    let mut state = State::new();
    let mut serial = 0;
    apply_all(&mut state, (0..nodes).map(|i| Command::Create(node(i))), now_ms, &mut serial);
    apply_all(&mut state, (0..pods).map(|i| Command::Create(typical_pod(i))), now_ms, &mut serial);
    let now = Time::from_millis(now_ms);
    apply_all(
        &mut state,
        (0..pods).map(|i| Command::UpdateStatus(running_status(&typical_pod(i), now))),
        now_ms,
        &mut serial,
    );
    state
}

/// A single-node `ControlPlane` in `dir`, restored from `state` and leading, that never builds
/// a snapshot of its own (so a measurement is not one): what the benches at scale start from.
///
/// # Errors
/// The restore or the start failed.
pub async fn serve_restored(
    dir: &std::path::Path,
    state: State,
) -> Result<orch_raft::ControlPlane, Box<dyn std::error::Error>> {
    let snapshot = state.to_snapshot();
    drop(state);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let members = std::collections::BTreeMap::from([(1, orch_raft::Member::from(addr))]);
    orch_raft::control_plane::restore(dir, &snapshot, members).await?;
    drop(snapshot);
    let settings = orch_raft::control_plane::SnapshotSettings { every_entries: 1_000_000_000, ..Default::default() };
    let node =
        orch_raft::ControlPlane::builder(1, dir).single_node().listener(listener).snapshots(settings).start().await?;
    while node.metrics().leader != Some(1) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    Ok(node)
}

/// Timing of the leader-only loops' rounds, for the benches that run them.
pub mod timed {
    use std::collections::BTreeMap;
    use std::fmt::Write as _;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use orch_core::Command;
    use orch_raft::leader::{LeaderLoop, LoopFactory, Outgoing, Round};

    /// One loop's rounds so far.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Stats {
        /// Rounds run.
        pub rounds: usize,
        /// Of them, full ones (the first of a term, a resync, or too many changes).
        pub full: usize,
        /// The time of the first round.
        pub first: Duration,
        /// The longest round.
        pub longest: Duration,
        /// All rounds together.
        pub total: Duration,
        /// Commands returned.
        pub commands: usize,
    }

    /// Per loop, by name.
    pub type Rounds = Arc<Mutex<BTreeMap<&'static str, Stats>>>;

    /// Times each round of the loop it wraps.
    struct Timed {
        inner: Box<dyn LeaderLoop>,
        rounds: Rounds,
    }

    impl LeaderLoop for Timed {
        fn name(&self) -> &'static str {
            self.inner.name()
        }

        fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
            let full = round.full;
            let t = Instant::now();
            let commands = self.inner.reconcile(round);
            let took = t.elapsed();
            let mut rounds = self.rounds.lock().expect("lock");
            let s = rounds.entry(self.inner.name()).or_insert(Stats { first: took, ..Stats::default() });
            s.rounds += 1;
            s.full += usize::from(full);
            s.longest = s.longest.max(took);
            s.total += took;
            s.commands += commands.len();
            commands
        }

        fn more(&self) -> bool {
            self.inner.more()
        }

        fn wake_at_ms(&self) -> Option<i64> {
            self.inner.wake_at_ms()
        }

        fn outbox(&mut self) -> Vec<Outgoing> {
            self.inner.outbox()
        }
    }

    /// `factories`, each loop's rounds timed into `rounds`.
    pub fn timed(factories: Vec<LoopFactory>, rounds: &Rounds) -> Vec<LoopFactory> {
        factories
            .into_iter()
            .map(|make| {
                let rounds = Arc::clone(rounds);
                let timed: LoopFactory = Arc::new(move || {
                    Box::new(Timed { inner: make(), rounds: Arc::clone(&rounds) }) as Box<dyn LeaderLoop>
                });
                timed
            })
            .collect()
    }

    /// A table of the rounds: count, full ones, first, longest and total time, commands.
    pub fn report(rounds: &Rounds) -> String {
        let mut out = format!(
            "{:<18} {:>7} {:>6} {:>15} {:>17} {:>10} {:>9}\n",
            "loop", "rounds", "full", "first round ms", "longest round ms", "total s", "commands"
        );
        for (name, s) in rounds.lock().expect("lock").iter() {
            let _ = writeln!(
                out,
                "{name:<18} {:>7} {:>6} {:>15.1} {:>17.1} {:>10.2} {:>9}",
                s.rounds,
                s.full,
                s.first.as_secs_f64() * 1e3,
                s.longest.as_secs_f64() * 1e3,
                s.total.as_secs_f64(),
                s.commands
            );
        }
        out
    }
}
