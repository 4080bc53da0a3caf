//! Simulated nodes: a light stand-in for node agents (orchd's `--simulated-nodes`, for the
//! benchmarks' thousands of nodes; orch-sim runs real agent loops instead), as a pure reconciler
//! (stepped like the controllers, so orchd, the tests, the benchmarks and orch-sim run the
//! same code). It registers its nodes (Ready, with the capacity of its settings), and for
//! each pod bound to one of them: a pod not yet Running and Ready becomes so after a delay
//! drawn from the pod's uid and the seed; a pod being deleted is deleted for good (the
//! grace-0 delete a real agent sends once the pod stopped) after another such delay. Each
//! step is written from the pod as the state has it when it is due, under its uid (a status
//! write also under its resourceVersion); a write that did not land (not proposed, or its
//! fate unknown) is planned again, and so is a registration. Each node has a pod subnet (its `spec.podCIDR`) and a pod gets the lowest
//! free address of its node's. Nothing runs: no process. Every [`Settings::heartbeat_ms`]
//! each node heartbeats ([`Message::Heartbeat`], sent to the node lifecycle controller of the
//! same owner, [`crate::nodelifecycle`]), as an agent does over the API.

use std::collections::{BTreeMap, BTreeSet};

use crate::command::{Command, Preconditions};
use crate::core_v1::{ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodCondition, PodPhase};
use crate::meta::ConditionStatus;
use crate::nodelifecycle::NodeLifecycle;
use crate::object::{Kind, Object, ObjectKey};
use crate::reconcile::{Fate, Message, Reconciler};
use crate::state::State;
use crate::time::Time;

/// The label that marks a simulated node.
pub const SIMULATED_LABEL: &str = "orch.dev/simulated";

/// The most simulated nodes one loop serves.
pub const SIMULATED_NODES_MAX: usize = 10_000;

/// What the simulated nodes are and how fast they act.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The nodes' names.
    pub names: Vec<String>,
    /// Each node's capacity: cores, memory and pods, as quantities (`8`, `32Gi`, `110`).
    pub cpu: String,
    /// See `cpu`.
    pub memory: String,
    /// See `cpu`.
    pub pods: String,
    /// The seed of the delays.
    pub seed: u64,
    /// The range of the delay before a bound pod is Running and Ready, in ms.
    pub start_ms: (i64, i64),
    /// The range of the delay before a deleted pod is gone, in ms.
    pub stop_ms: (i64, i64),
    /// How often each node heartbeats, in ms (at least 1).
    pub heartbeat_ms: i64,
}

impl Settings {
    /// `count` nodes named `sim-1`, `sim-2`, ... (at most [`SIMULATED_NODES_MAX`]), each of
    /// 8 cores, 32 GiB and 110 pods; pods start within 0.2-1 s and stop within 0.1-0.5 s;
    /// nodes heartbeat every 10 s (the kubelet's `nodeStatusUpdateFrequency`).
    pub fn named(count: usize) -> Self {
        Self {
            names: (1..=count.min(SIMULATED_NODES_MAX)).map(|i| format!("sim-{i}")).collect(),
            cpu: "8".into(),
            memory: "32Gi".into(),
            pods: "110".into(),
            seed: 1,
            start_ms: (200, 1_000),
            stop_ms: (100, 500),
            heartbeat_ms: 10_000,
        }
    }
}

/// The simulated nodes of one term.
#[derive(Debug)]
pub struct SimulatedNodes {
    settings: Settings,
    /// Each node's index (its pod subnet), by name.
    nodes: BTreeMap<String, usize>,
    /// When each planned pod is looked at next.
    planned: BTreeMap<ObjectKey, i64>,
    /// The host numbers taken in each node's subnet, and each pod's.
    hosts: BTreeMap<String, BTreeSet<u8>>,
    host_of: BTreeMap<ObjectKey, (String, u8)>,
    /// Pods whose start waits for their node to be Ready again, by node.
    blocked: BTreeMap<String, BTreeSet<ObjectKey>>,
    /// When the nodes heartbeat next (ms), and the heartbeats not yet taken.
    heartbeat_at: Option<i64>,
    outbox: Vec<(&'static str, Message)>,
}

/// Node `index`'s pod subnet: `10.(200 + index / 256).(index % 256).0/24`, hosts 2 to 254.
fn pod_ip(index: usize, host: u8) -> String {
    format!("{}{host}", subnet_prefix(index))
}

/// Node `index`'s pod subnet up to the host number: `10.a.b.`.
fn subnet_prefix(index: usize) -> String {
    format!("10.{}.{}.", 200 + index / 256, index % 256)
}

/// SplitMix64: a well-mixed 64-bit value from `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Whether `pod` is Running with `Ready=True`.
fn running_and_ready(pod: &Pod) -> bool {
    pod.status.phase == Some(PodPhase::Running)
        && pod.status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
}

impl SimulatedNodes {
    /// Nodes as `settings` say.
    pub fn new(settings: Settings) -> Self {
        // At most SIMULATED_NODES_MAX: the subnets are numbered up to it.
        let nodes = settings.names.iter().take(SIMULATED_NODES_MAX).enumerate().map(|(i, n)| (n.clone(), i)).collect();
        Self {
            settings,
            nodes,
            planned: BTreeMap::new(),
            hosts: BTreeMap::new(),
            host_of: BTreeMap::new(),
            blocked: BTreeMap::new(),
            heartbeat_at: None,
            outbox: Vec::new(),
        }
    }

    /// Frees the address of the pod at `key`, if it holds one.
    fn free(&mut self, key: &ObjectKey) {
        if let Some((node, host)) = self.host_of.remove(key)
            && let Some(taken) = self.hosts.get_mut(&node)
        {
            taken.remove(&host);
        }
    }

    /// Notes the address `pod` holds on one of the nodes, if it is one of theirs.
    fn note_address(&mut self, key: &ObjectKey, pod: &Pod) {
        let (Some(node), Some(ip)) = (pod.spec.node_name.as_deref(), pod.status.pod_ip.as_deref()) else { return };
        let Some(index) = self.nodes.get(node) else { return };
        let Some(host) = ip.strip_prefix(&subnet_prefix(*index)) else { return };
        if let Ok(host) = host.parse::<u8>() {
            self.hosts.entry(node.to_owned()).or_default().insert(host);
            self.host_of.insert(key.clone(), (node.to_owned(), host));
        }
    }

    /// An address for the pod at `key` on `node`: the lowest free one of its subnet.
    fn address(&mut self, key: &ObjectKey, node: &str) -> Option<String> {
        let index = *self.nodes.get(node)?;
        if let Some((n, host)) = self.host_of.get(key) {
            if n == node {
                return Some(pod_ip(index, *host));
            }
            // The key's pod was on another node before: that address is free again.
            self.free(key);
        }
        let taken = self.hosts.entry(node.to_owned()).or_default();
        let host = (2..=254u8).find(|h| !taken.contains(h))?;
        taken.insert(host);
        self.host_of.insert(key.clone(), (node.to_owned(), host));
        Some(pod_ip(index, host))
    }

    /// A delay in `range` for `pod`, from its uid and the seed.
    fn delay(&self, pod: &Pod, range: (i64, i64), salt: u64) -> i64 {
        let uid = pod.metadata.uid.map_or(0, |u| u.as_u128());
        let (high, low) =
            (u64::try_from(uid >> 64).unwrap_or(0), u64::try_from(uid & u128::from(u64::MAX)).unwrap_or(0));
        let x = mix(self.settings.seed ^ mix(low ^ mix(high ^ salt)));
        let (low, high) = (range.0.max(0), range.1.max(range.0.max(0)));
        let span = u64::try_from(high - low).unwrap_or(0).saturating_add(1);
        low + i64::try_from(x % span).unwrap_or(0)
    }

    /// Plans what to do with the pod at `key`, as the state has it.
    fn plan(&mut self, state: &State, key: &ObjectKey, now_ms: i64) {
        let Some(Object::Pod(pod)) = state.get(key) else {
            self.planned.remove(key);
            self.free(key);
            return;
        };
        if !pod.spec.node_name.as_deref().is_some_and(|n| self.nodes.contains_key(n)) {
            self.planned.remove(key);
            return;
        }
        // An address someone else wrote (or a write of ours that committed late) is taken.
        if !self.host_of.contains_key(key) {
            self.note_address(key, pod);
        }
        let at = if pod.metadata.deletion_timestamp.is_some() {
            now_ms + self.delay(pod, self.settings.stop_ms, 2)
        } else if !running_and_ready(pod) {
            now_ms + self.delay(pod, self.settings.start_ms, 1)
        } else {
            self.planned.remove(key);
            return;
        };
        // An earlier plan stands (a status write of its own must not put it off), but a pod
        // being deleted is stopped no later than planned now.
        let planned = self.planned.entry(key.clone()).or_insert(at);
        if pod.metadata.deletion_timestamp.is_some() {
            *planned = (*planned).min(at);
        }
    }

    /// What to write for the pod at `key` now.
    fn act(&mut self, state: &State, key: &ObjectKey, now_ms: i64) -> Option<Command> {
        let Some(Object::Pod(pod)) = state.get(key) else { return None };
        if pod.metadata.deletion_timestamp.is_some() {
            return Some(Command::Delete {
                key: key.clone(),
                grace_period_seconds: Some(0),
                preconditions: Preconditions { uid: pod.metadata.uid, resource_version: None },
                propagation_policy: None,
            });
        }
        if running_and_ready(pod) {
            return None;
        }
        // A node that is not Ready (marked so by hand, or by the node lifecycle controller)
        // starts nothing: the pod is looked at again when its node changes.
        let name = pod.spec.node_name.as_deref().unwrap_or_default();
        let node = state.get(&ObjectKey::new(Kind::Node, "", name));
        if !node.is_some_and(|n| matches!(n, Object::Node(n) if crate::fit::ready(n))) {
            self.blocked.entry(name.to_owned()).or_default().insert(key.clone());
            return None;
        }
        let now = Time::from_millis(now_ms);
        let mut p = (**pod).clone();
        if p.status.pod_ip.as_deref().is_none_or(str::is_empty) {
            let node = p.spec.node_name.clone().unwrap_or_default();
            // No free address in the node's subnet: the pod does not start.
            p.status.pod_ip = Some(self.address(key, &node)?.into());
        }
        if let Some(ip) = &p.status.pod_ip {
            p.status.pod_ips = vec![crate::core_v1::PodIp { ip: ip.clone() }];
        }
        p.status.phase = Some(PodPhase::Running);
        p.status.start_time.get_or_insert(now);
        for type_ in ["Initialized", "ContainersReady", "Ready"] {
            p.status.conditions.retain(|c| c.type_ != type_);
            p.status.conditions.push(PodCondition::new(type_, ConditionStatus::True, now));
        }
        p.status.container_statuses = p
            .spec
            .containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                state: ContainerState {
                    running: Some(ContainerStateRunning { started_at: Some(now) }),
                    ..ContainerState::default()
                },
                ready: true,
                image: c.image.clone(),
                started: Some(true),
                ..ContainerStatus::default()
            })
            .collect();
        Some(Command::UpdateStatus(Object::from(p)))
    }

    /// A node object for `name`.
    fn node(&self, name: &str) -> Option<Object> {
        let s = &self.settings;
        let subnet = subnet_prefix(*self.nodes.get(name)?);
        let yaml = format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{kubernetes.io/hostname: {name}, \
             {SIMULATED_LABEL}: 'true'}}}}\nspec: {{podCIDR: '{subnet}0/24'}}\nstatus:\n  \
             capacity: {{cpu: '{cpu}', memory: '{memory}', pods: '{pods}'}}\n  \
             conditions: [{{type: Ready, status: 'True', reason: KubeletReady, message: simulated}}]\n",
            cpu = s.cpu,
            memory = s.memory,
            pods = s.pods
        );
        crate::manifest::parse_manifests(&yaml).ok()?.pop()
    }
}

impl Reconciler for SimulatedNodes {
    const NAME: &'static str = "simulated-nodes";
    // The pods bound to its nodes, and its nodes.
    const KINDS: Option<&'static [Kind]> = Some(&[Kind::Pod, Kind::Node]);

    fn reconcile(
        &mut self,
        state: &State,
        now_ms: i64,
        full: bool,
        changed: &[ObjectKey],
        outcomes: &[(Command, Fate)],
    ) -> Vec<Command> {
        let mut commands = Vec::new();
        let missing = |name: &String| state.get(&ObjectKey::new(Kind::Node, "", name)).is_none();
        // A write that did not land (not proposed, or its fate unknown) is made again: a
        // pod's is planned anew (the state says what is left to do), a node's registration
        // repeated. One whose entry may still commit is harmless to repeat: a status write
        // names the resourceVersion, a delete the uid, and a second registration finds the
        // node there. A refused one is not: the pod changed (and is planned for that) or is
        // gone, and a write refused for good must not be retried for ever.
        let mut register = full;
        for (command, fate) in outcomes {
            if matches!(fate, Fate::Applied(_)) {
                continue;
            }
            match command {
                Command::UpdateStatus(Object::Pod(p)) => {
                    self.plan(state, &ObjectKey::new(Kind::Pod, p.metadata.namespace_str(), &p.metadata.name), now_ms);
                }
                Command::Delete { key, .. } if key.kind == Kind::Pod => self.plan(state, key, now_ms),
                Command::Create(Object::Node(_)) => register = true,
                _ => {}
            }
        }
        if register {
            commands.extend(
                self.settings.names.iter().filter(|n| missing(n)).filter_map(|n| self.node(n)).map(Command::Create),
            );
        }
        if full {
            self.planned.retain(|key, _| state.get(key).is_some());
            let pods: Vec<(ObjectKey, &Pod)> = state
                .list(Kind::Pod, None)
                .filter_map(|o| o.as_pod().map(|p| (o.key(), p)))
                .filter(|(_, p)| p.spec.node_name.as_deref().is_some_and(|n| self.nodes.contains_key(n)))
                .collect();
            self.hosts.clear();
            self.host_of.clear();
            self.blocked.clear();
            for (key, pod) in &pods {
                self.note_address(key, pod);
            }
            let keys: Vec<ObjectKey> = pods.into_iter().map(|(k, _)| k).collect();
            for key in keys {
                self.plan(state, &key, now_ms);
            }
        } else {
            for key in changed {
                match key.kind {
                    Kind::Pod => self.plan(state, key, now_ms),
                    // A node of ours deleted: registered again, as an agent would.
                    Kind::Node if self.nodes.contains_key(key.name.as_str()) && missing(&key.name.to_string()) => {
                        commands.extend(self.node(&key.name).map(Command::Create));
                    }
                    // A node of ours changed (Ready again, say): the pods it held back.
                    Kind::Node => {
                        for pod in self.blocked.remove(key.name.as_str()).unwrap_or_default() {
                            self.plan(state, &pod, now_ms);
                        }
                    }
                    _ => {}
                }
            }
        }
        let due: Vec<ObjectKey> =
            self.planned.iter().filter(|(_, at)| **at <= now_ms).map(|(k, _)| k.clone()).collect();
        for key in due {
            self.planned.remove(&key);
            commands.extend(self.act(state, &key, now_ms));
        }
        if self.heartbeat_at.is_none_or(|at| at <= now_ms) {
            // Those registered only: a node is heard once it exists, as an agent's would be.
            let beats = self.nodes.keys().filter(|n| state.get(&ObjectKey::new(Kind::Node, "", n)).is_some());
            let beats: Vec<_> = beats.map(|n| (NodeLifecycle::NAME, Message::Heartbeat { node: n.clone() })).collect();
            // Heartbeats not taken (no lifecycle controller runs) are replaced, never piled up.
            self.outbox = beats;
            self.heartbeat_at = Some(now_ms.saturating_add(self.settings.heartbeat_ms.max(1)));
        }
        commands
    }

    fn wake_at_ms(&self) -> Option<i64> {
        let planned = self.planned.values().min().copied();
        match (planned, self.heartbeat_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn outbox(&mut self) -> Vec<(&'static str, Message)> {
        std::mem::take(&mut self.outbox)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::world::World;

    /// Registered nodes heartbeat every `heartbeat_ms` to the node lifecycle controller,
    /// which keeps them Ready past its grace period; without the heartbeats they are lost.
    #[test]
    fn simulated_nodes_heartbeat_to_the_lifecycle_controller() {
        use crate::nodelifecycle::{self, NodeLifecycle};
        let mut w = World::new();
        let mut sim = SimulatedNodes::new(Settings { heartbeat_ms: 3_000, ..Settings::named(2) });
        let commands = sim.reconcile(&w.state, w.now_ms, true, &[], &[]);
        assert!(sim.outbox().is_empty(), "no node is registered yet");
        w.run(commands);
        let mut lifecycle = NodeLifecycle::new(nodelifecycle::Settings { grace_ms: 5_000, writes_per_round: 10 });
        let start = w.now_ms;
        assert!(lifecycle.reconcile(&w.state, start, true, &[], &[]).is_empty());
        for now in (start..start + 60_000).step_by(500) {
            // The heartbeats of a round that came due stand in for the first.
            let _ = sim.reconcile(&w.state, now, false, &[], &[]);
            let sent = sim.outbox();
            if !sent.is_empty() {
                assert_eq!(sent.len(), 2);
                assert!(sent.iter().all(|(to, _)| *to == NodeLifecycle::NAME));
                assert_eq!(sim.wake_at_ms(), Some(now + 3_000), "the next heartbeat");
            }
            for (_, message) in sent {
                lifecycle.receive(now, message);
            }
            assert!(lifecycle.reconcile(&w.state, now, false, &[], &[]).is_empty(), "kept Ready at {now}");
        }
        let later = start + 60_000 + 5_001;
        assert_eq!(lifecycle.reconcile(&w.state, later, false, &[], &[]).len(), 2, "lost without heartbeats");
    }

    /// A node that is not Ready starts nothing (the node lifecycle controller would otherwise
    /// mark its pods not Ready and the simulated node start them again, round after round).
    #[test]
    fn a_node_that_is_not_ready_starts_nothing() {
        let mut w = World::new();
        let mut sim = SimulatedNodes::new(Settings { start_ms: (0, 0), ..Settings::named(1) });
        let commands = sim.reconcile(&w.state, w.now_ms, true, &[], &[]);
        w.run(commands);
        let mut node = match w.state.get(&ObjectKey::new(Kind::Node, "", "sim-1")) {
            Some(Object::Node(n)) => (**n).clone(),
            other => panic!("registered: {other:?}"),
        };
        node.status.conditions[0].status = ConditionStatus::Unknown;
        w.run(vec![Command::UpdateStatus(Object::from(node))]);
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: sim-1, containers: [{name: c, image: x}]}\n";
        let changed = w.create(pod);
        assert!(sim.reconcile(&w.state, w.now_ms, false, &changed, &[]).is_empty());
        assert!(!running_and_ready(&w.pod("p")));
        // Ready again: the pod starts, from the node's change alone (no full round).
        let mut node = match w.state.get(&ObjectKey::new(Kind::Node, "", "sim-1")) {
            Some(Object::Node(n)) => (**n).clone(),
            other => panic!("registered: {other:?}"),
        };
        node.status.conditions[0].status = ConditionStatus::True;
        let (_, changed) = w.run(vec![Command::UpdateStatus(Object::from(node))]);
        let commands = sim.reconcile(&w.state, w.now_ms, false, &changed, &[]);
        w.run(commands);
        assert!(running_and_ready(&w.pod("p")), "{:?}", w.pod("p").status);
    }

    /// The nodes register; a pod bound to one becomes Running and Ready within the start
    /// range, and once deleted is gone within the stop range; the same seed, the same times.
    #[test]
    fn bound_pods_start_and_stop_after_seeded_delays() {
        let mut w = World::new();
        let settings = Settings::named(2);
        let mut sim = SimulatedNodes::new(settings.clone());
        let commands = sim.reconcile(&w.state, w.now_ms, true, &[], &[]);
        assert_eq!(commands.len(), 2);
        w.run(commands);
        assert!(w.has(Kind::Node, "", "sim-2"));
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: sim-1, containers: [{name: c, image: x}]}\n";
        let changed = w.create(pod);
        let bound_at = w.now_ms;
        assert!(sim.reconcile(&w.state, bound_at, false, &changed, &[]).is_empty(), "not yet");
        let at = sim.wake_at_ms().expect("a start planned");
        assert!((bound_at + 200..=bound_at + 1_000).contains(&at), "{at}");
        assert_eq!(SimulatedNodes::new(settings).delay(&w.pod("p"), (200, 1_000), 1), at - bound_at, "seeded");
        let commands = sim.reconcile(&w.state, at, false, &[], &[]);
        let (_, changed) = w.run(commands);
        let p = w.pod("p");
        assert!(running_and_ready(&p), "{:?}", p.status);
        assert_eq!(p.status.pod_ip.as_deref(), Some("10.200.0.2"), "the first address of sim-1's subnet");
        let Some(Object::Node(n)) = w.state.get(&ObjectKey::new(Kind::Node, "", "sim-2")) else { panic!("sim-2") };
        assert_eq!(n.spec.pod_cidr.as_deref(), Some("10.200.1.0/24"), "each node's subnet is its podCIDR");
        assert_eq!(p.status.pod_ips.iter().map(|i| i.ip.as_str()).collect::<Vec<_>>(), ["10.200.0.2"], "podIPs too");
        assert!(p.status.container_statuses[0].ready);
        assert!(sim.reconcile(&w.state, w.now_ms, false, &changed, &[]).is_empty());
        assert!(sim.planned.is_empty(), "nothing planned (but the heartbeat)");
        let delete = Command::Delete {
            key: ObjectKey::new(Kind::Pod, "default", "p"),
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
            propagation_policy: None,
        };
        let (_, changed) = w.run(vec![delete]);
        assert!(w.has(Kind::Pod, "default", "p"), "terminating, held for its node");
        sim.reconcile(&w.state, w.now_ms, false, &changed, &[]);
        let at = sim.wake_at_ms().expect("a stop planned");
        let commands = sim.reconcile(&w.state, at, false, &[], &[]);
        w.run(commands);
        assert!(!w.has(Kind::Pod, "default", "p"), "gone");
        // A node of theirs deleted is registered again, as an agent would.
        let (_, changed) = w.run(vec![Command::Delete {
            key: ObjectKey::new(Kind::Node, "", "sim-2"),
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
            propagation_policy: None,
        }]);
        let commands = sim.reconcile(&w.state, w.now_ms, false, &changed, &[]);
        w.run(commands);
        assert!(w.has(Kind::Node, "", "sim-2"));
    }

    /// A write that did not land (never proposed, or its entry's fate unknown) is made again
    /// after another delay, and a node whose registration did not land is
    /// registered again: not left until a full round, minutes later.
    #[test]
    fn a_write_that_did_not_land_is_made_again() {
        let mut w = World::new();
        let mut sim = SimulatedNodes::new(Settings { start_ms: (0, 0), stop_ms: (0, 0), ..Settings::named(2) });
        let registered = sim.reconcile(&w.state, w.now_ms, true, &[], &[]);
        assert_eq!(registered.len(), 2);
        // sim-1's registration lands; sim-2's is never proposed.
        w.run(registered[..1].to_vec());
        let outcomes: Vec<(Command, Fate)> = vec![
            (
                registered[0].clone(),
                Fate::Applied(Ok(crate::command::Success { revision: crate::ids::Revision(1), changes: Vec::new() })),
            ),
            (registered[1].clone(), Fate::NotProposed),
        ];
        let again = sim.reconcile(&w.state, w.now_ms, false, &[], &outcomes);
        assert_eq!(again, registered[1..].to_vec(), "sim-2 registered again");
        w.run(again);
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: sim-1, containers: [{name: c, image: x}]}\n";
        let changed = w.create(pod);
        let start = sim.reconcile(&w.state, w.now_ms, false, &changed, &[]);
        assert!(matches!(&start[..], [Command::UpdateStatus(_)]), "{start:?}");
        for fate in [Fate::Unknown, Fate::NotProposed] {
            let outcomes = vec![(start[0].clone(), fate)];
            let retried = sim.reconcile(&w.state, w.now_ms, false, &[], &outcomes);
            assert_eq!(retried, start, "the start written again");
        }
        w.run(start);
        assert!(running_and_ready(&w.pod("p")));
    }

    /// Pods bound elsewhere are none of its business.
    #[test]
    fn pods_on_other_nodes_are_left_alone() {
        let mut w = World::new();
        let mut sim = SimulatedNodes::new(Settings::named(1));
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: elsewhere, containers: [{name: c, image: x}]}\n";
        let changed = w.create(pod);
        sim.reconcile(&w.state, w.now_ms, false, &changed, &[]);
        assert!(sim.planned.is_empty());
    }

    /// Addresses are the lowest free of the node's subnet, and freed when the pod goes.
    #[test]
    fn addresses_are_distinct_and_reused_after_the_pod_goes() {
        let mut w = World::new();
        let mut sim = SimulatedNodes::new(Settings { start_ms: (0, 0), stop_ms: (0, 0), ..Settings::named(2) });
        let commands = sim.reconcile(&w.state, w.now_ms, true, &[], &[]);
        w.run(commands);
        let pod = |name: &str, node: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{nodeName: {node}, containers: [{{name: c, image: x}}]}}\n"
            )
        };
        let mut step = |w: &mut World, changed: Vec<ObjectKey>| {
            let commands = sim.reconcile(&w.state, w.now_ms, false, &changed, &[]);
            w.run(commands).1
        };
        let changed = w.create(&(pod("a", "sim-1") + "---\n" + &pod("b", "sim-1") + "---\n" + &pod("c", "sim-2")));
        step(&mut w, changed);
        let ip = |w: &World, name: &str| w.pod(name).status.pod_ip.map(|t| t.to_string()).unwrap_or_default();
        assert_eq!(
            (ip(&w, "a"), ip(&w, "b"), ip(&w, "c")),
            ("10.200.0.2".into(), "10.200.0.3".into(), "10.200.1.2".into())
        );
        let (_, changed) = w.run(vec![Command::Delete {
            key: ObjectKey::new(Kind::Pod, "default", "a"),
            grace_period_seconds: Some(0),
            preconditions: Preconditions::default(),
            propagation_policy: None,
        }]);
        step(&mut w, changed);
        let changed = w.create(&pod("d", "sim-1"));
        step(&mut w, changed);
        assert_eq!(ip(&w, "d"), "10.200.0.2", "a's address, free again");
    }
}
