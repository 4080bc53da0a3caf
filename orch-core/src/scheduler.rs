//! The scheduler's decision, a pure function: for a pod not yet bound, the node to bind it to,
//! or why no node fits.
//!
//! As Kubernetes' default profile: filter with [`crate::fit::fits`]; among the feasible nodes,
//! score by least allocated cpu and memory (a container without a request counts as 100m and
//! 200Mi, Kubernetes' non-zero defaults) plus the spread of the pod's controller's pods across
//! nodes and across zones (the `topology.kubernetes.io/zone` label, weighted two thirds as
//! Kubernetes' selector spreading does), PreferNoSchedule taints tolerated, and the weights of
//! the preferred node affinity terms a node matches; the highest total wins, ties broken by a hash of the
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

use crate::core_v1::{Node, Pod, TaintEffect};
use crate::fit::{HostPort, NodeUsage, Requests, Unfit, fits, preferred_affinity_weight, tolerates};
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
    /// How many `PreferNoSchedule` taints it has (scored against the pod's tolerations).
    soft_taints: usize,
}

/// A zone's nodes in name order, as the view takes them in turn.
type ZoneQueue = std::collections::btree_map::IntoValues<Text, Arc<Node>>;

/// The scheduler's view: every node, what its bound pods take, and where each controller's
/// pods run.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Zone by zone in turn (zones in name order, each zone's nodes in name order, nodes
    /// without a zone as one more), as Kubernetes' node tree: a sample of consecutive nodes
    /// covers every zone.
    nodes: Vec<NodeEntry>,
    by_name: BTreeMap<Text, usize>,
    /// An index per zone name.
    zones: BTreeMap<Text, usize>,
    /// Per controller, how many of its pods each zone runs (indexed by zone).
    per_zone: BTreeMap<Uid, Vec<u32>>,
    /// The pods counted, by namespace and name, with what each was counted as.
    counted: BTreeMap<(Text, Text), Counted>,
}

/// What a pod was counted as, so that forgetting it needs only its name.
#[derive(Clone, Debug)]
struct Counted {
    node: usize,
    request: Requests,
    scored: Requests,
    ports: Vec<HostPort>,
    owner: Option<Uid>,
}

pub use crate::fit::occupies;

/// The uid of the controller that owns `pod`, if one does.
fn controller(pod: &Pod) -> Option<Uid> {
    pod.metadata.owner_references.iter().find(|o| o.controller == Some(true)).map(|o| o.uid)
}

/// What `pod` counts as when scoring: Kubernetes' non-zero defaults for a container that names
/// no cpu or memory request (ephemeral storage is not scored).
fn scored_request(pod: &Pod) -> Requests {
    let defaults = Requests {
        cpu: i128::from(NON_ZERO_CPU_MILLI),
        memory: i128::from(NON_ZERO_MEMORY_BYTES) * 1000,
        ..Requests::default()
    };
    Requests::with_defaults(pod, defaults)
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
fn free_share(allocatable: i128, after: i128) -> i128 {
    if allocatable <= 0 || after > allocatable || after < 0 {
        return 0;
    }
    let free = (allocatable - after) * 100;
    // The same quotient in 64 bits when both fit (always, in practice): an `i128` division
    // is a library call, and this runs twice per node scored.
    match (i64::try_from(free), i64::try_from(allocatable)) {
        (Ok(free), Ok(allocatable)) => i128::from(free / allocatable),
        _ => free / allocatable,
    }
}

/// 100 for the fewest, 0 for the most: `100 * (max - count) / max`.
fn spread_score(count: usize, max: usize) -> i128 {
    ((max - count.min(max)) * 100).checked_div(max).map_or(100, |share| share as i128)
}

/// The weights of the scores, Kubernetes' default profile's: least allocated 1, topology
/// spread 2, taint toleration 3, node affinity 2.
const WEIGHTS: (i128, i128, i128, i128) = (1, 2, 3, 2);

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
        let mut snapshot = Self::default();
        // Zone by zone: the nodes of each zone in name order, nodes without a zone last.
        let mut by_zone: BTreeMap<Option<Text>, BTreeMap<Text, Arc<Node>>> = BTreeMap::new();
        for node in nodes {
            let zone = node.metadata.labels.get(ZONE_LABEL).map(Text::from);
            by_zone.entry(zone).or_default().insert(node.metadata.name.clone(), node);
        }
        for zone in by_zone.keys().flatten() {
            let next = snapshot.zones.len();
            snapshot.zones.insert(zone.clone(), next);
        }
        let mut queues: Vec<(Option<usize>, ZoneQueue)> = by_zone
            .into_iter()
            .map(|(zone, nodes)| (zone.and_then(|z| snapshot.zones.get(&z).copied()), nodes.into_values()))
            .collect();
        // Zones first, then the nodes without one (None sorts first in the map).
        let zoneless_first = queues.first().is_some_and(|q| q.0.is_none());
        queues.rotate_left(usize::from(zoneless_first));
        loop {
            let mut took = false;
            for (zone, queue) in &mut queues {
                let Some(node) = queue.next() else { continue };
                took = true;
                let name = node.metadata.name.clone();
                if snapshot.by_name.contains_key(&name) {
                    continue;
                }
                snapshot.by_name.insert(name.clone(), snapshot.nodes.len());
                snapshot.nodes.push(NodeEntry {
                    allocatable: Requests::allocatable(&node),
                    usage: NodeUsage::default(),
                    scored: Requests::default(),
                    zone: *zone,
                    name_hash: hash_text(&name),
                    owners: BTreeMap::new(),
                    soft_taints: node
                        .spec
                        .taints
                        .iter()
                        .filter(|t| t.effect == Some(TaintEffect::PreferNoSchedule))
                        .count(),
                    node,
                });
            }
            if !took {
                break;
            }
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
    /// the view learns of). Pods are told apart by namespace and name. False, and nothing
    /// counted, for a node it does not hold or a pod counted already.
    pub fn assume(&mut self, pod: &Pod, name: &str) -> bool {
        let Some(&i) = self.by_name.get(name) else { return false };
        let key = (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone());
        if self.counted.contains_key(&key) {
            return false;
        }
        let counted = Counted {
            node: i,
            request: Requests::of(pod),
            scored: scored_request(pod),
            ports: HostPort::of(pod).collect(),
            owner: controller(pod),
        };
        let entry = &mut self.nodes[i];
        entry.usage.add_parts(counted.request, &counted.ports);
        entry.scored = entry.scored.plus(counted.scored);
        if let Some(owner) = counted.owner {
            *entry.owners.entry(owner).or_default() += 1;
            if let Some(zone) = entry.zone {
                let counts = self.per_zone.entry(owner).or_default();
                if counts.len() <= zone {
                    counts.resize(zone + 1, 0);
                }
                counts[zone] += 1;
            }
        }
        self.counted.insert(key, counted);
        true
    }

    /// Whether pod `namespace/name` is counted, and on which node.
    pub fn counted_on(&self, namespace: &str, name: &str) -> Option<&str> {
        let i = self.counted.get(&(Text::from(namespace), Text::from(name)))?.node;
        Some(&self.nodes[i].node.metadata.name)
    }

    /// Undoes [`Snapshot::assume`] of `pod` (it was deleted, or its bind refused); nothing for
    /// a pod not counted.
    pub fn forget(&mut self, pod: &Pod) {
        self.forget_key(pod.metadata.namespace.as_deref().unwrap_or(""), &pod.metadata.name);
    }

    /// [`Snapshot::forget`] by namespace and name: what the pod was counted as is undone.
    pub fn forget_key(&mut self, namespace: &str, name: &str) {
        let Some(counted) = self.counted.remove(&(Text::from(namespace), Text::from(name))) else { return };
        let entry = &mut self.nodes[counted.node];
        entry.usage.remove_parts(counted.request, &counted.ports);
        entry.scored = entry.scored.minus(counted.scored);
        if let Some(owner) = counted.owner {
            if let Some(n) = entry.owners.get_mut(&owner) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    entry.owners.remove(&owner);
                }
            }
            if let Some(n) = entry.zone.and_then(|z| self.per_zone.get_mut(&owner)?.get_mut(z)) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// Takes a changed node in place of the one of its name: true when done, false when the
    /// view must be built again instead (a node it does not hold, or one that moved zone).
    pub fn replace_node(&mut self, node: Arc<Node>) -> bool {
        let Some(&i) = self.by_name.get(&node.metadata.name) else { return false };
        let zone = node.metadata.labels.get(ZONE_LABEL).and_then(|z| self.zones.get(z).copied());
        let entry = &mut self.nodes[i];
        if zone != entry.zone || (zone.is_none() && node.metadata.labels.get(ZONE_LABEL).is_some()) {
            return false;
        }
        entry.allocatable = Requests::allocatable(&node);
        entry.soft_taints = node.spec.taints.iter().filter(|t| t.effect == Some(TaintEffect::PreferNoSchedule)).count();
        entry.node = node;
        true
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
        // Per feasible node: its count of the controller's pods, its zone's, the
        // PreferNoSchedule taints the pod does not tolerate, and the weight of the preferred
        // node affinity terms it matches.
        let prefers = pod
            .spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .is_some_and(|n| !n.preferred_during_scheduling_ignored_during_execution.is_empty());
        let counts: Vec<(usize, Option<usize>, usize, i64)> = feasible
            .iter()
            .map(|i| {
                let entry = &self.nodes[*i];
                let on_node = owner.and_then(|o| entry.owners.get(&o).copied()).unwrap_or(0) as usize;
                let in_zone = entry.zone.map(|z| zone_counts.and_then(|c| c.get(z).copied()).unwrap_or(0) as usize);
                let untolerated = if entry.soft_taints == 0 { 0 } else { untolerated_soft_taints(pod, &entry.node) };
                let preferred = if prefers { preferred_affinity_weight(pod, &entry.node) } else { 0 };
                (on_node, in_zone, untolerated, preferred)
            })
            .collect();
        let max_node = counts.iter().map(|c| c.0).max().unwrap_or(0);
        let max_zone = counts.iter().filter_map(|c| c.1).max().unwrap_or(0);
        let max_taints = counts.iter().map(|c| c.2).max().unwrap_or(0);
        let max_preferred = counts.iter().map(|c| c.3).max().unwrap_or(0);
        let score = |k: usize| {
            let entry = &self.nodes[feasible[k]];
            let (on_node, in_zone, untolerated, preferred) = counts[k];
            // Kubernetes normalizes the summed weights to 0-100 by the highest among the nodes.
            let affinity = if max_preferred > 0 { i128::from(preferred) * 100 / i128::from(max_preferred) } else { 0 };
            let after = entry.scored.plus(wants);
            let least =
                (free_share(entry.allocatable.cpu, after.cpu) + free_share(entry.allocatable.memory, after.memory)) / 2;
            let spreading = match (owner, in_zone) {
                (None, _) => 100,
                (Some(_), None) => spread_score(on_node, max_node),
                (Some(_), Some(in_zone)) => (spread_score(on_node, max_node) + 2 * spread_score(in_zone, max_zone)) / 3,
            };
            WEIGHTS.0 * least
                + WEIGHTS.1 * spreading
                + WEIGHTS.2 * spread_score(untolerated, max_taints)
                + WEIGHTS.3 * affinity
        };
        // Highest score; among equals the lowest hash of (pod, node).
        let best = (0..feasible.len())
            .max_by_key(|k| (score(*k), std::cmp::Reverse(mix(uid ^ self.nodes[feasible[*k]].name_hash))))
            .unwrap_or(0);
        feasible[best]
    }
}

/// How many of `node`'s `PreferNoSchedule` taints `pod` does not tolerate.
fn untolerated_soft_taints(pod: &Pod, node: &Node) -> usize {
    node.spec
        .taints
        .iter()
        .filter(|t| t.effect == Some(TaintEffect::PreferNoSchedule))
        .filter(|t| {
            let value = t.value.as_deref().unwrap_or("");
            !pod.spec.tolerations.iter().any(|tol| tolerates(tol, &t.key, value, t.effect))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core_v1::PodPhase;
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

    /// Required node affinity leaves out the nodes that match none of its terms (reported
    /// as Kubernetes does); preferred terms draw the pod to the nodes matching the most
    /// weight, ahead of the least allocated one.
    #[test]
    fn node_affinity_filters_and_scores() {
        let nodes =
            vec![node("a1", "64", 110, Some("a")), node("b1", "4", 110, Some("b")), node("c1", "4", 110, Some("c"))];
        let snapshot = Snapshot::new(nodes, []);
        let with_affinity = |affinity: &str| {
            let mut p = pod("p", 42, "100m", None);
            let yaml = format!("{{nodeAffinity: {affinity}}}");
            p.spec.affinity = Some(Box::new(serde_yaml_ng::from_str(&yaml).expect("an affinity")));
            p
        };
        let zone = ZONE_LABEL;
        let required = with_affinity(&format!(
            "{{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [\
             {{matchExpressions: [{{key: {zone}, operator: In, values: [b, c]}}]}}]}}}}"
        ));
        let placed = snapshot.schedule(&required, &Settings::default()).expect("fits");
        assert!(placed == "b1" || placed == "c1", "{placed}");
        let nowhere = with_affinity(&format!(
            "{{requiredDuringSchedulingIgnoredDuringExecution: {{nodeSelectorTerms: [\
             {{matchExpressions: [{{key: {zone}, operator: In, values: [d]}}]}}]}}}}"
        ));
        let err = snapshot.schedule(&nowhere, &Settings::default()).expect_err("no node matches");
        assert_eq!(err.to_string(), "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.");
        // a1 is the least allocated by far; a preference of weight 1 for c still wins.
        assert_eq!(snapshot.schedule(&pod("q", 42, "100m", None), &Settings::default()).expect("fits"), "a1");
        let prefers_c = with_affinity(&format!(
            "{{preferredDuringSchedulingIgnoredDuringExecution: [{{weight: 1, preference: \
             {{matchExpressions: [{{key: {zone}, operator: In, values: [c]}}]}}}}]}}"
        ));
        assert_eq!(snapshot.schedule(&prefers_c, &Settings::default()).expect("fits"), "c1");
    }

    #[test]
    fn a_sample_covers_every_zone_and_different_pods_prefer_different_nodes() {
        // 1,500 nodes whose names group them by zone: a sample of consecutive names would lie
        // in one zone. The view interleaves the zones, so the sample (at 1,500 nodes, 38%)
        // spans all three and one controller's pods spread evenly across them.
        let zone_of = |i: usize| ["a", "b", "c"][i / 500];
        let nodes: Vec<Arc<Node>> =
            (0..1_500).map(|i| node(&format!("{}-{i:04}", zone_of(i)), "8", 110, Some(zone_of(i)))).collect();
        let mut snapshot = Snapshot::new(nodes, []);
        let mut zones = BTreeMap::<String, u32>::new();
        let mut chosen = std::collections::BTreeSet::new();
        for uid in 1..=30u128 {
            let p = pod(&format!("p{uid}"), uid, "1", Some(9));
            let name = snapshot.schedule(&p, &Settings::default()).expect("fits").to_owned();
            snapshot.assume(&p, &name);
            *zones.entry(name[..1].to_owned()).or_default() += 1;
            chosen.insert(name);
        }
        assert_eq!(zones.values().copied().collect::<Vec<_>>(), vec![10, 10, 10], "{zones:?}");
        assert_eq!(chosen.len(), 30, "equal nodes: different pods go to different nodes");
    }

    #[test]
    fn the_fit_error_counts_each_reason_and_sorts_them_as_text() {
        let mut nodes: Vec<Arc<Node>> = (0..11).map(|i| node(&format!("small-{i:02}"), "1", 110, None)).collect();
        for i in 0..2 {
            let mut tainted = (*node(&format!("tainted-{i}"), "8", 110, None)).clone();
            tainted.spec.taints.push(crate::core_v1::Taint {
                key: "k".into(),
                value: Some("v".into()),
                effect: Some(TaintEffect::NoSchedule),
                time_added: None,
            });
            nodes.push(Arc::new(tainted));
        }
        let mut tiny = (*node("tiny", "1", 110, None)).clone();
        tiny.status.allocatable.memory = Some(crate::Quantity::from_bytes(1));
        nodes.push(Arc::new(tiny));
        let snapshot = Snapshot::new(nodes, []);
        let mut p = pod("p", 1, "2", None);
        p.spec.containers[0].resources.requests.memory = Some(crate::Quantity::from_bytes(1 << 20));
        let err = snapshot.schedule(&p, &Settings::default()).expect_err("nothing fits");
        assert_eq!(
            err.to_string(),
            "0/14 nodes are available: 1 Insufficient memory, 12 Insufficient cpu, 2 node(s) had untolerated taint {k: v}."
        );
    }

    #[test]
    fn a_prefer_no_schedule_taint_is_avoided_unless_tolerated() {
        let mut soft = (*node("a", "8", 110, None)).clone();
        soft.spec.taints.push(crate::core_v1::Taint {
            key: "spot".into(),
            value: None,
            effect: Some(TaintEffect::PreferNoSchedule),
            time_added: None,
        });
        // The tainted node is the emptier one: without the taint it would win.
        let snapshot = Snapshot::new(vec![Arc::new(soft), node("b", "4", 110, None)], []);
        assert_eq!(snapshot.schedule(&pod("p", 1, "1", None), &Settings::default()), Ok("b"));
        let mut tolerant = pod("p", 1, "1", None);
        tolerant.spec.tolerations.push(crate::core_v1::Toleration {
            key: Some("spot".into()),
            operator: Some(crate::core_v1::TolerationOperator::Exists),
            ..crate::core_v1::Toleration::default()
        });
        assert_eq!(snapshot.schedule(&tolerant, &Settings::default()), Ok("a"));
    }

    #[test]
    fn a_finished_pod_frees_its_share_and_a_forgotten_decision_too() {
        let mut done = pod("done", 1, "2", None);
        done.spec.node_name = Some("a".into());
        done.status.phase = Some(PodPhase::Succeeded);
        let mut running = pod("running", 2, "1", Some(7));
        running.spec.node_name = Some("a".into());
        let mut snapshot = Snapshot::new(vec![node("a", "2", 110, Some("z"))], [&done, &running]);
        assert_eq!(snapshot.usage("a").map(|u| u.requested.cpu), Some(1000));
        let p = pod("p", 3, "1", Some(7));
        assert_eq!(snapshot.schedule(&p, &Settings::default()), Ok("a"));
        assert!(snapshot.assume(&p, "a"));
        assert!(!snapshot.assume(&p, "a"), "a pod is counted once");
        assert_eq!(snapshot.nodes[0].owners[&Uid::from_u128(7)], 2);
        assert_eq!(snapshot.per_zone[&Uid::from_u128(7)], vec![2]);
        assert!(snapshot.schedule(&pod("q", 4, "1", None), &Settings::default()).is_err());
        snapshot.forget(&p);
        snapshot.forget(&p);
        snapshot.forget(&pod("never", 5, "1", Some(7)));
        assert_eq!(snapshot.usage("a").map(|u| u.requested.cpu), Some(1000), "forgotten once, others kept");
        assert_eq!(snapshot.nodes[0].owners[&Uid::from_u128(7)], 1);
        assert_eq!(snapshot.per_zone[&Uid::from_u128(7)], vec![1]);
        assert!(!snapshot.assume(&pod("x", 6, "1", None), "nowhere"), "a node it does not hold");
        assert_eq!(
            Snapshot::default().schedule(&p, &Settings::default()).expect_err("none").to_string(),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn the_view_of_a_state_counts_its_bound_pods() {
        use crate::command::{Command, Entry, Preconditions, Request};
        let mut state = State::new();
        let manifests = "apiVersion: v1\nkind: Node\nmetadata: {name: a}\nstatus: {allocatable: {cpu: '2', pods: '5'}, \
                         conditions: [{type: Ready, status: 'True'}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\n\
                         spec: {containers: [{name: c, image: x, resources: {requests: {cpu: '1'}}}]}";
        let mut commands: Vec<Command> =
            parse_manifests(manifests).expect("valid").into_iter().map(Command::Create).collect();
        commands.push(Command::Bind {
            namespace: "default".into(),
            name: "p".into(),
            node: "a".into(),
            preconditions: Preconditions::default(),
        });
        for (serial, command) in (1..).zip(commands) {
            let request = Request { client: crate::ClientId(1), serial, acked_below: 0, retry: false, command };
            let out = state.apply(serial, Entry::new(1_000, vec![request]));
            assert!(out.outcomes.iter().all(Result::is_ok), "{:?}", out.outcomes);
        }
        let snapshot = Snapshot::of_state(&state);
        assert_eq!(snapshot.len(), 1);
        assert_eq!(snapshot.usage("a").map(|u| (u.requested.cpu, u.requested.pods)), Some((1000, 1)));
    }

    proptest::proptest! {
        /// However nodes and pods come (some bound already, some decisions forgotten again),
        /// every decision leaves its node within its cpu and pod count, and a pod is refused
        /// only when no node has room: checked against sums kept here, apart from the view's.
        #[test]
        fn no_decision_goes_beyond_allocatable(
            shapes in proptest::collection::vec((1i64..8_000, 1i64..6, 0u8..3), 1..250),
            pods in proptest::collection::vec((0i64..3_000, proptest::option::of(0u128..4), 0u8..10), 1..80),
        ) {
            let nodes: Vec<Arc<Node>> = shapes
                .iter()
                .enumerate()
                .map(|(i, (milli, pods, zone))| {
                    node(&format!("n{i}"), &format!("{milli}m"), u32::try_from(*pods).unwrap_or(1), Some(&format!("z{zone}")))
                })
                .collect();
            // The oracle: (cpu used, pods) per node, from the placements alone.
            let mut used: BTreeMap<String, (i64, i64)> = BTreeMap::new();
            let mut snapshot = Snapshot::new(nodes, []);
            let mut placed: Vec<(Pod, String)> = Vec::new();
            for (i, (milli, owner, action)) in pods.iter().enumerate() {
                if *action == 0 && !placed.is_empty() {
                    // Forget an earlier decision.
                    let (p, name) = placed.remove(i % placed.len());
                    snapshot.forget(&p);
                    let u = used.get_mut(&name).expect("placed there");
                    u.0 -= Requests::of(&p).cpu as i64;
                    u.1 -= 1;
                    continue;
                }
                let p = pod(&format!("p{i}"), 1 + i as u128, &format!("{milli}m"), owner.map(|o| o + 100));
                let room = |name: &str, used: &BTreeMap<String, (i64, i64)>| {
                    let (cpu, count) = used.get(name).copied().unwrap_or((0, 0));
                    let (total, max, _) = shapes[name[1..].parse::<usize>().expect("a node's index")];
                    (*milli == 0 || cpu + milli <= total) && count < max
                };
                match snapshot.schedule(&p, &Settings::default()) {
                    Ok(name) => {
                        let name = name.to_owned();
                        proptest::prop_assert!(room(&name, &used), "{} placed on {} without room", p.metadata.name, name);
                        proptest::prop_assert!(snapshot.assume(&p, &name));
                        let u = used.entry(name.clone()).or_default();
                        u.0 += milli;
                        u.1 += 1;
                        placed.push((p, name));
                    }
                    Err(err) => {
                        for n in 0..shapes.len() {
                            proptest::prop_assert!(!room(&format!("n{n}"), &used), "refused ({err}) with room on n{n}");
                        }
                    }
                }
            }
        }
    }
}
