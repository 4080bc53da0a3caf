//! The scheduler's decision, a pure function: for a pod not yet bound, the node to bind it to,
//! or why no node fits.
//!
//! As Kubernetes' default profile: filter with [`crate::fit::fits`]; among the feasible nodes,
//! score by least allocated cpu and memory (a container without a request counts as 100m and
//! 200Mi, Kubernetes' non-zero defaults) plus the spread of the pod's controller's pods across
//! nodes and across zones (the `topology.kubernetes.io/zone` label, weighted two thirds as
//! Kubernetes' selector spreading does); the highest total wins, ties broken by a hash of the
//! pod's uid and the node's name (deterministic, and different pods prefer different nodes).
//! In a large cluster only a sample of the feasible nodes is scored, as
//! `percentageOfNodesToScore` does: the search starts at a node derived from the pod's uid and
//! stops once it has found enough feasible nodes.
//!
//! A [`Snapshot`] is the scheduler's view of the nodes and what their bound pods take; a batch
//! of decisions is made on one snapshot, each [`Snapshot::assume`]d before the next, so that the
//! batch never over-commits a node. The `Bind` that carries a decision is checked again when
//! applied, against the state then.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::core_v1::{Node, Pod, PodPhase};
use crate::fit::{NodeUsage, Requests, Unfit, fits};
use crate::ids::Uid;
use crate::object::{Kind, Object};
use crate::state::State;
use crate::text::Text;

/// The node label that names a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Below this many feasible nodes, every node is looked at (Kubernetes' `minFeasibleNodesToFind`).
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The smallest share of the nodes an adaptive search looks for (Kubernetes' 5%).
pub const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;
/// The cpu a container without a cpu request counts as when scoring, in millicores.
pub const NON_ZERO_CPU_MILLI: i64 = 100;
/// The memory a container without a memory request counts as when scoring, in bytes.
pub const NON_ZERO_MEMORY_BYTES: i64 = 200 * 1024 * 1024;

/// How the scheduler searches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// The share of the nodes, in percent, to find feasible before scoring (1 to 100); 0 for
    /// Kubernetes' adaptive default (50% less 1% per 125 nodes, at least 5%).
    pub percentage_of_nodes_to_score: u32,
}

/// How many feasible nodes to find among `all` before scoring.
pub fn feasible_nodes_to_find(all: usize, settings: &Settings) -> usize {
    if all < MIN_FEASIBLE_NODES_TO_FIND || settings.percentage_of_nodes_to_score >= 100 {
        return all;
    }
    let percentage = match settings.percentage_of_nodes_to_score {
        0 => 50usize.saturating_sub(all / 125).max(MIN_FEASIBLE_NODES_PERCENTAGE),
        p => p as usize,
    };
    (all * percentage / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// Why no node fits a pod: `0/5 nodes are available: 3 Insufficient cpu, 2 node(s) had
/// untolerated taint {key: value}.` (Kubernetes' `FitError`; a node short of two resources
/// counts under both).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitError {
    /// How many nodes there are.
    pub nodes: usize,
    /// How many nodes failed for each reason.
    pub reasons: BTreeMap<Unfit, usize>,
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        // Sorted as text, as Kubernetes sorts them.
        let mut counted: Vec<String> = self.reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        counted.sort();
        write!(f, "0/{} nodes are available: {}.", self.nodes, counted.join(", "))
    }
}

impl std::error::Error for FitError {}

/// One node as the scheduler sees it.
#[derive(Clone, Debug)]
struct NodeEntry {
    node: Arc<Node>,
    allocatable: Requests,
    usage: NodeUsage,
    /// What its pods take for scoring (non-zero defaults for requests left out).
    scored: Requests,
    /// Its zone's index in [`Snapshot::zones`].
    zone: Option<usize>,
    name_hash: u64,
    /// How many of each controller's pods it runs.
    owners: BTreeMap<Uid, u32>,
}

/// The scheduler's view: every node, what its bound pods take, and where each controller's
/// pods run.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// In name order.
    nodes: Vec<NodeEntry>,
    by_name: BTreeMap<Text, usize>,
    /// An index per zone name.
    zones: BTreeMap<Text, usize>,
    /// Per controller, how many of its pods each zone runs (indexed by zone).
    per_zone: BTreeMap<Uid, Vec<u32>>,
}

/// Whether `pod` takes a share of its node: bound and not finished.
pub fn occupies(pod: &Pod) -> bool {
    pod.spec.node_name.is_some() && !matches!(pod.status.phase, Some(PodPhase::Succeeded | PodPhase::Failed))
}

/// The uid of the controller that owns `pod`, if one does.
fn controller(pod: &Pod) -> Option<Uid> {
    pod.metadata.owner_references.iter().find(|o| o.controller == Some(true)).map(|o| o.uid)
}

/// What `pod` counts as when scoring.
fn scored_request(pod: &Pod) -> Requests {
    let mut sum = Requests { pods: 1, ..Requests::default() };
    for c in &pod.spec.containers {
        let (req, lim) = (&c.resources.requests, &c.resources.limits);
        let cpu = req.cpu.or(lim.cpu).map_or(NON_ZERO_CPU_MILLI, |q| q.milli_value().max(0));
        let memory = req.memory.or(lim.memory).map_or(NON_ZERO_MEMORY_BYTES * 1000, |q| q.milli_value().max(0));
        sum.cpu = sum.cpu.saturating_add(cpu);
        sum.memory = sum.memory.saturating_add(memory);
    }
    sum
}

/// A 64-bit mix (splitmix64's finalizer): a fixed function, the same on every build.
const fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// FNV-1a of `text`, mixed.
fn hash_text(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn uid_hash(pod: &Pod) -> u64 {
    let uid = pod.metadata.uid.unwrap_or_default().as_u128();
    // Truncations on purpose: both halves go into the hash.
    #[allow(clippy::cast_possible_truncation)]
    mix((uid as u64) ^ mix((uid >> 64) as u64))
}

/// Least allocated: the share of `allocatable` left free after `after`, 0 to 100.
fn free_share(allocatable: i64, after: i64) -> i64 {
    if allocatable <= 0 || after > allocatable {
        return 0;
    }
    (allocatable - after).saturating_mul(100) / allocatable
}

/// 100 for the fewest, 0 for the most: `100 * (max - count) / max`.
fn spread_score(count: u32, max: u32) -> i64 {
    if max == 0 { 100 } else { i64::from(max - count.min(max)) * 100 / i64::from(max) }
}

impl Snapshot {
    /// The view of `state`: its nodes (those being deleted take no pods) and the pods bound to
    /// them.
    pub fn of_state(state: &State) -> Self {
        let nodes = state.list(Kind::Node, None).filter_map(|o| match o {
            Object::Node(n) if n.metadata.deletion_timestamp.is_none() => Some(Arc::clone(n)),
            _ => None,
        });
        let pods: Vec<&Pod> = state
            .list(Kind::Pod, None)
            .filter_map(|o| match o {
                Object::Pod(p) => Some(p.as_ref()),
                _ => None,
            })
            .collect();
        Self::new(nodes, pods)
    }

    /// The view of `nodes` with `pods` (those that [`occupies`] a node are counted on it).
    pub fn new<'a>(nodes: impl IntoIterator<Item = Arc<Node>>, pods: impl IntoIterator<Item = &'a Pod>) -> Self {
        let mut sorted: Vec<Arc<Node>> = nodes.into_iter().collect();
        sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        sorted.dedup_by(|a, b| a.metadata.name == b.metadata.name);
        let mut snapshot = Self::default();
        for node in sorted {
            let name = node.metadata.name.clone();
            snapshot.by_name.insert(name.clone(), snapshot.nodes.len());
            let zone = node.metadata.labels.get(ZONE_LABEL).map(|z| {
                let next = snapshot.zones.len();
                *snapshot.zones.entry(Text::from(z)).or_insert(next)
            });
            snapshot.nodes.push(NodeEntry {
                allocatable: Requests::allocatable(&node),
                usage: NodeUsage::default(),
                scored: Requests::default(),
                zone,
                name_hash: hash_text(&name),
                owners: BTreeMap::new(),
                node,
            });
        }
        for pod in pods {
            if occupies(pod) {
                let node = pod.spec.node_name.clone().unwrap_or_default();
                snapshot.assume(pod, &node);
            }
        }
        snapshot
    }

    /// How many nodes it holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it holds no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// What the pods bound to node `name` take of it.
    pub fn usage(&self, name: &str) -> Option<&NodeUsage> {
        self.by_name.get(name).map(|i| &self.nodes[*i].usage)
    }

    /// Counts `pod` as bound to node `name` (a decision made, not yet applied; or a bound pod
    /// the view learns of). False, and nothing counted, for a node it does not hold.
    pub fn assume(&mut self, pod: &Pod, name: &str) -> bool {
        let Some(&i) = self.by_name.get(name) else { return false };
        let entry = &mut self.nodes[i];
        entry.usage.add(pod);
        entry.scored = entry.scored.plus(scored_request(pod));
        if let Some(owner) = controller(pod) {
            *entry.owners.entry(owner).or_default() += 1;
            if let Some(zone) = entry.zone {
                let zones = self.zones.len();
                self.per_zone.entry(owner).or_insert_with(|| vec![0; zones])[zone] += 1;
            }
        }
        true
    }

    /// Undoes [`Snapshot::assume`] (the pod was deleted, or its bind refused).
    pub fn forget(&mut self, pod: &Pod, name: &str) {
        let Some(&i) = self.by_name.get(name) else { return };
        let entry = &mut self.nodes[i];
        entry.usage.remove(pod);
        entry.scored = entry.scored.minus(scored_request(pod));
        if let Some(owner) = controller(pod) {
            if let Some(n) = entry.owners.get_mut(&owner) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    entry.owners.remove(&owner);
                }
            }
            if let (Some(zone), Some(counts)) = (entry.zone, self.per_zone.get_mut(&owner)) {
                counts[zone] = counts[zone].saturating_sub(1);
            }
        }
    }

    /// The node to bind `pod` to.
    ///
    /// # Errors
    /// [`FitError`] when no node fits, with each node's reasons.
    pub fn schedule(&self, pod: &Pod, settings: &Settings) -> Result<&str, FitError> {
        let all = self.nodes.len();
        if all == 0 {
            return Err(FitError { nodes: 0, reasons: BTreeMap::new() });
        }
        let request = Requests::of(pod);
        let to_find = feasible_nodes_to_find(all, settings);
        let uid = uid_hash(pod);
        let start = usize::try_from(uid % all as u64).unwrap_or(0);
        let mut feasible = Vec::with_capacity(to_find.min(all));
        let mut reasons: BTreeMap<Unfit, usize> = BTreeMap::new();
        for k in 0..all {
            let i = (start + k) % all;
            let entry = &self.nodes[i];
            match fits(pod, request, &entry.node, entry.allocatable, &entry.usage) {
                Ok(()) => {
                    feasible.push(i);
                    if feasible.len() >= to_find {
                        break;
                    }
                }
                Err(unfit) => {
                    for reason in unfit {
                        *reasons.entry(reason).or_default() += 1;
                    }
                }
            }
        }
        if feasible.is_empty() {
            return Err(FitError { nodes: all, reasons });
        }
        let best = self.best(pod, &feasible, uid);
        Ok(&self.nodes[best].node.metadata.name)
    }

    /// The highest-scoring of the `feasible` nodes for `pod`.
    fn best(&self, pod: &Pod, feasible: &[usize], uid: u64) -> usize {
        let wants = scored_request(pod);
        let owner = controller(pod);
        let zone_counts = owner.and_then(|o| self.per_zone.get(&o));
        // Per feasible node: its count of the controller's pods, and its zone's.
        let counts: Vec<(u32, Option<u32>)> = feasible
            .iter()
            .map(|i| {
                let entry = &self.nodes[*i];
                let on_node = owner.and_then(|o| entry.owners.get(&o).copied()).unwrap_or(0);
                let in_zone = entry.zone.map(|z| zone_counts.map_or(0, |c| c[z]));
                (on_node, in_zone)
            })
            .collect();
        let max_node = counts.iter().map(|c| c.0).max().unwrap_or(0);
        let max_zone = counts.iter().filter_map(|c| c.1).max().unwrap_or(0);
        let score = |k: usize| {
            let entry = &self.nodes[feasible[k]];
            let after = entry.scored.plus(wants);
            let least =
                (free_share(entry.allocatable.cpu, after.cpu) + free_share(entry.allocatable.memory, after.memory)) / 2;
            let spreading = match (owner, counts[k]) {
                (None, _) => 100,
                (Some(_), (on_node, None)) => spread_score(on_node, max_node),
                (Some(_), (on_node, Some(in_zone))) => {
                    (spread_score(on_node, max_node) + 2 * spread_score(in_zone, max_zone)) / 3
                }
            };
            least + spreading
        };
        // Highest score; among equals the lowest hash of (pod, node).
        let best = (0..feasible.len())
            .max_by_key(|k| (score(*k), std::cmp::Reverse(mix(uid ^ self.nodes[feasible[*k]].name_hash))))
            .unwrap_or(0);
        feasible[best]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifests;

    fn node(name: &str, cpu: &str, pods: u32, zone: Option<&str>) -> Arc<Node> {
        let labels = zone.map(|z| format!("labels: {{{ZONE_LABEL}: {z}}}")).unwrap_or_default();
        let manifest = format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, {labels}}}\nstatus: {{allocatable: {{cpu: '{cpu}', \
             memory: 8Gi, pods: '{pods}'}}, conditions: [{{type: Ready, status: 'True'}}]}}"
        );
        match parse_manifests(&manifest).expect("a valid node").remove(0) {
            Object::Node(n) => n,
            other => panic!("not a node: {other:?}"),
        }
    }

    fn pod(name: &str, uid: u128, cpu: &str, owner: Option<u128>) -> Pod {
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: x, \
             resources: {{requests: {{cpu: '{cpu}'}}}}}}]}}"
        );
        let Object::Pod(p) = parse_manifests(&manifest).expect("a valid pod").remove(0) else { panic!("a pod") };
        let mut p = (*p).clone();
        p.metadata.uid = Some(Uid::from_u128(uid));
        if let Some(owner) = owner {
            p.metadata.owner_references.push(crate::meta::OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "rs".into(),
                uid: Uid::from_u128(owner),
                controller: Some(true),
                block_owner_deletion: None,
            });
        }
        p
    }

    #[test]
    fn the_sample_follows_kubernetes_percentage_of_nodes_to_score() {
        let adaptive = Settings::default();
        assert_eq!(feasible_nodes_to_find(50, &adaptive), 50, "a small cluster: every node");
        assert_eq!(feasible_nodes_to_find(1_000, &adaptive), 420, "50% - 8%");
        assert_eq!(feasible_nodes_to_find(5_000, &adaptive), 500, "50% - 40% = 10%");
        assert_eq!(feasible_nodes_to_find(100_000, &adaptive), 5_000, "at least 5%");
        assert_eq!(feasible_nodes_to_find(150, &adaptive), 100, "at least 100");
        let all = Settings { percentage_of_nodes_to_score: 100 };
        assert_eq!(feasible_nodes_to_find(5_000, &all), 5_000);
    }

    #[test]
    fn the_least_allocated_node_wins_and_a_batch_never_overcommits() {
        let nodes = vec![node("a", "4", 110, None), node("b", "2", 110, None)];
        let mut snapshot = Snapshot::new(nodes, []);
        let settings = Settings::default();
        let mut placed = BTreeMap::<String, u32>::new();
        for i in 0..6u128 {
            let p = pod(&format!("p{i}"), i + 1, "1", None);
            let name = snapshot.schedule(&p, &settings).expect("fits").to_owned();
            assert!(snapshot.assume(&p, &name));
            *placed.entry(name).or_default() += 1;
        }
        assert_eq!(placed, BTreeMap::from([("a".to_owned(), 4), ("b".to_owned(), 2)]), "filled, never beyond");
        let err = snapshot.schedule(&pod("late", 99, "1", None), &settings).expect_err("full");
        assert_eq!(err.to_string(), "0/2 nodes are available: 2 Insufficient cpu.");
        // The first pod goes to the emptier node: a (4 cpus) is less allocated than b after it.
        let fresh = Snapshot::new(vec![node("a", "4", 110, None), node("b", "2", 110, None)], []);
        assert_eq!(fresh.schedule(&pod("p", 7, "1", None), &settings), Ok("a"));
    }

    #[test]
    fn one_controller_s_pods_spread_across_zones_and_nodes() {
        let nodes = vec![
            node("a1", "64", 110, Some("a")),
            node("a2", "64", 110, Some("a")),
            node("b1", "64", 110, Some("b")),
            node("c1", "64", 110, Some("c")),
        ];
        let mut snapshot = Snapshot::new(nodes, []);
        let mut zones = BTreeMap::<String, u32>::new();
        let mut per_node = BTreeMap::<String, u32>::new();
        for i in 0..12u128 {
            let p = pod(&format!("p{i}"), 1000 + i, "100m", Some(7));
            let name = snapshot.schedule(&p, &Settings::default()).expect("fits").to_owned();
            snapshot.assume(&p, &name);
            *zones.entry(name[..1].to_owned()).or_default() += 1;
            *per_node.entry(name).or_default() += 1;
        }
        assert_eq!(zones.values().copied().collect::<Vec<_>>(), vec![4, 4, 4], "even across zones: {zones:?}");
        assert_eq!(per_node["a1"], 2);
        assert_eq!(per_node["a2"], 2);
    }

    #[test]
    fn the_decision_is_a_function_of_the_pod_and_the_view() {
        let nodes: Vec<Arc<Node>> = (0..300).map(|i| node(&format!("n{i:03}"), "8", 110, None)).collect();
        let snapshot = Snapshot::new(nodes.clone(), []);
        let reversed = Snapshot::new(nodes.into_iter().rev(), []);
        let mut chosen = std::collections::BTreeSet::new();
        for uid in 1..50u128 {
            let p = pod("p", uid, "1", None);
            let first = snapshot.schedule(&p, &Settings::default()).expect("fits");
            assert_eq!(Ok(first), reversed.schedule(&p, &Settings::default()), "the nodes' order does not matter");
            chosen.insert(first.to_owned());
        }
        assert!(chosen.len() > 25, "equal nodes: different pods prefer different ones ({})", chosen.len());
    }

    #[test]
    fn a_finished_pod_frees_its_share_and_a_forgotten_decision_too() {
        let mut done = pod("done", 1, "2", None);
        done.spec.node_name = Some("a".into());
        done.status.phase = Some(PodPhase::Succeeded);
        let mut running = pod("running", 2, "1", None);
        running.spec.node_name = Some("a".into());
        let mut snapshot = Snapshot::new(vec![node("a", "2", 110, None)], [&done, &running]);
        assert_eq!(snapshot.usage("a").map(|u| u.requested.cpu), Some(1000));
        let p = pod("p", 3, "1", None);
        assert_eq!(snapshot.schedule(&p, &Settings::default()), Ok("a"));
        snapshot.assume(&p, "a");
        assert!(snapshot.schedule(&pod("q", 4, "1", None), &Settings::default()).is_err());
        snapshot.forget(&p, "a");
        assert_eq!(snapshot.usage("a").map(|u| u.requested.cpu), Some(1000));
        assert!(!snapshot.assume(&p, "nowhere"), "a node it does not hold");
        assert_eq!(
            Snapshot::default().schedule(&p, &Settings::default()).expect_err("none").to_string(),
            "no nodes available to schedule pods"
        );
    }

    proptest::proptest! {
        /// However pods and nodes come, a batch placed on one snapshot never takes more of a
        /// node than its allocatable, and a pod is refused only when no node fits it.
        #[test]
        fn no_batch_binds_beyond_allocatable(
            shapes in proptest::collection::vec((1u32..8_000, 1u32..6, 0u8..3), 1..12),
            pods in proptest::collection::vec((0u32..3_000, proptest::option::of(0u128..4)), 1..80),
        ) {
            let nodes: Vec<Arc<Node>> = shapes
                .iter()
                .enumerate()
                .map(|(i, (milli, pods, zone))| {
                    node(&format!("n{i}"), &format!("{milli}m"), *pods, Some(&format!("z{zone}")))
                })
                .collect();
            let mut snapshot = Snapshot::new(nodes, []);
            for (i, (milli, owner)) in pods.iter().enumerate() {
                let p = pod(&format!("p{i}"), 1 + i as u128, &format!("{milli}m"), owner.map(|o| o + 100));
                match snapshot.schedule(&p, &Settings::default()) {
                    Ok(name) => {
                        let name = name.to_owned();
                        proptest::prop_assert!(snapshot.assume(&p, &name));
                    }
                    Err(err) => {
                        let request = Requests::of(&p);
                        for e in &snapshot.nodes {
                            proptest::prop_assert!(fits(&p, request, &e.node, e.allocatable, &e.usage).is_err());
                        }
                        proptest::prop_assert_eq!(err.nodes, snapshot.len());
                    }
                }
            }
            for e in &snapshot.nodes {
                proptest::prop_assert!(e.usage.requested.cpu <= e.allocatable.cpu, "{:?}", e.usage);
                proptest::prop_assert!(e.usage.requested.pods <= e.allocatable.pods, "{:?}", e.usage);
            }
        }
    }
}
