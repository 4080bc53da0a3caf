//! The controllers' checkers: they rebuild every committed state from the entries' changes
//! ([`History::committed`]) and check what the scheduler and the controllers promise at each:
//!
//! - [`Allocatable`]: no entry binds a pod to a node whose bound pods then request more than
//!   its allocatable (cpu, memory, ephemeral storage, pods).
//! - [`RolloutBounds`]: under a RollingUpdate Deployment, no entry creates a pod that makes
//!   more than `replicas + maxSurge` of its pods active (not being deleted), and no entry
//!   deletes a Ready pod of it so that fewer than `replicas - maxUnavailable` active pods are
//!   Ready by scaling its set down. (A pod that stops being Ready on its own, or is evicted,
//!   is no controller's decision; a Deployment being deleted, or a Recreate one, is not held
//!   to the bounds.) A decision and its commit are not one step, in orch as in Kubernetes:
//!   the ReplicaSet controller picks the pods to delete from the state it read, at least the
//!   entry that last changed the set's `replicas` (which the Deployment controller sized
//!   from its sets' status as last written before it), and a pod may crash before its delete
//!   commits. So a deletion breaks the bound only if, in every committed state from that
//!   status write to the one before the delete, fewer of the pods it left were Ready than
//!   the bound: no single state the controllers could have read justified it. Simulated agents
//!   make this happen (seed 11 of orch-sim's controllers test: a pod of the old set crashed
//!   one entry before the delete of another one, which the controller, had it seen the crash,
//!   would have spared for the crashed one).
//! - [`Converged`]: a bounded time after the faults healed, and at the end, every Deployment
//!   has exactly its replicas, all of its current template and Ready, and says so in its
//!   status; and every Service's Endpoints list exactly the Ready pods it selects (and the
//!   others that have an IP under `notReadyAddresses`).
//!
//! Pods are tied to their Deployment through the owner references (pod → ReplicaSet →
//! Deployment), and the surge and unavailability resolved from the spec as Kubernetes
//! documents it, apart from the controllers' code. Shared with it: what a pod requests and a
//! node offers ([`orch_core::fit`]'s accounting) and whether a set's template is the
//! Deployment's ([`orch_core::deployment::same_template`]), each with tests of its own.
//!
//! Limits: the availability bound counts Ready pods (`minReadySeconds` 0) and holds the
//! controllers to it only for deletions by a scale-down of the pod's set; Endpoints are
//! checked (each address with the pod it names) for Services with numbered target ports and
//! at most `ENDPOINTS_ADDRESSES_MAX` pods.

use std::collections::{BTreeMap, BTreeSet};

use orch_core::apps_v1::{Deployment, DeploymentStrategyType, ReplicaSet};
use orch_core::core_v1::{Node, Pod, PodPhase};
use orch_core::fit::Requests;
use orch_core::ids::Uid;
use orch_core::intstr::IntOrString;
use orch_core::meta::ConditionStatus;
use orch_core::{EventType, Kind, Object, ObjectKey};

use super::Checker;
use crate::history::{Committed, History};

/// The cluster's objects at one committed index. A persistent map: the checkers keep the
/// state before each entry beside the state after it, and a copy costs O(1).
#[derive(Clone, Debug, Default)]
pub struct Replay {
    objects: imbl::OrdMap<ObjectKey, Object>,
    /// The index applied last.
    pub index: u64,
}

impl Replay {
    /// Applies one entry's changes.
    pub fn apply(&mut self, entry: &Committed) {
        for e in &entry.events {
            let key = e.object.key();
            if e.event_type == EventType::Deleted {
                self.objects.remove(&key);
            } else {
                self.objects.insert(key, e.object.clone());
            }
        }
        self.index = entry.index;
    }

    fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        self.objects.range(ObjectKey::new(kind, "", "")..).take_while(move |(k, _)| k.kind == kind).map(|(_, o)| o)
    }

    fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.of_kind(Kind::Pod).filter_map(Object::as_pod)
    }

    fn deployments(&self) -> impl Iterator<Item = &Deployment> {
        self.of_kind(Kind::Deployment).filter_map(|o| match o {
            Object::Deployment(d) => Some(d.as_ref()),
            _ => None,
        })
    }

    fn sets(&self) -> BTreeMap<Uid, &ReplicaSet> {
        self.of_kind(Kind::ReplicaSet)
            .filter_map(|o| match o {
                Object::ReplicaSet(rs) => Some((rs.metadata.uid?, rs.as_ref())),
                _ => None,
            })
            .collect()
    }

    /// Each Deployment's pods (by the Deployment's uid), through their ReplicaSets.
    fn pods_by_deployment(&self) -> BTreeMap<Uid, Vec<&Pod>> {
        let sets = self.sets();
        let mut by = BTreeMap::new();
        for pod in self.pods() {
            let Some(rs) = pod.metadata.controller_ref().and_then(|r| sets.get(&r.uid)) else { continue };
            let Some(owner) = rs.metadata.controller_ref().filter(|r| r.kind == "Deployment") else { continue };
            by.entry(owner.uid).or_insert_with(Vec::new).push(pod);
        }
        by
    }
}

fn ready(pod: &Pod) -> bool {
    pod.status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
}

fn active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod.status.phase, Some(PodPhase::Succeeded | PodPhase::Failed))
}

fn owned_by(pod: &Pod, uid: Uid) -> bool {
    pod.metadata.controller_ref().is_some_and(|r| r.uid == uid)
}

fn name(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace_str(), pod.metadata.name)
}

/// Checks every committed state in order: `check(before, entry, after)`; what it found
/// wrong with the history itself (an index missing), and the last state.
fn each_entry(history: &History, check: impl FnMut(&Replay, &Committed, &Replay)) -> Vec<String> {
    replay(history, check).0
}

fn replay(history: &History, mut check: impl FnMut(&Replay, &Committed, &Replay)) -> (Vec<String>, Replay) {
    let mut found = Vec::new();
    let mut state = Replay::default();
    for (i, entry) in history.committed.iter().enumerate() {
        // The log starts at index 0 (openraft's first membership) or 1.
        let next = if i == 0 { entry.index <= 1 } else { entry.index == state.index + 1 };
        if !next {
            found
                .push(format!("index {} follows {}: the committed states cannot be rebuilt", entry.index, state.index));
            return (found, state);
        }
        let before = state.clone();
        state.apply(entry);
        check(&before, entry, &state);
    }
    (found, state)
}

/// No entry binds a pod to a node beyond the node's allocatable.
pub struct Allocatable;

impl Checker for Allocatable {
    fn name(&self) -> &'static str {
        "allocatable"
    }

    fn check(&self, history: &History) -> Vec<String> {
        let mut found = Vec::new();
        let mut broken = each_entry(history, |before, entry, after| {
            // The nodes this entry bound a pod to.
            let bound: BTreeSet<&str> = entry
                .events
                .iter()
                .filter_map(|e| e.object.as_pod())
                .filter_map(|p| {
                    let node = p.spec.node_name.as_deref()?;
                    let was = match before.objects.get(&ObjectKey::new(
                        Kind::Pod,
                        p.metadata.namespace_str(),
                        &p.metadata.name,
                    )) {
                        Some(Object::Pod(old)) => old.spec.node_name.is_some(),
                        _ => false,
                    };
                    (!was).then_some(node)
                })
                .collect();
            for node_name in bound {
                let Some(Object::Node(node)) = after.objects.get(&ObjectKey::new(Kind::Node, "", node_name)) else {
                    found.push(format!("entry {} bound a pod to node {node_name}, which does not exist", entry.index));
                    continue;
                };
                if let Some(what) = over(after, node) {
                    found.push(format!(
                        "entry {} bound a pod to node {node_name}, which is then over: {what}",
                        entry.index
                    ));
                }
            }
        });
        broken.append(&mut found);
        broken
    }
}

/// What `node`'s bound pods request beyond its allocatable, if anything.
fn over(state: &Replay, node: &Node) -> Option<String> {
    let pods: Vec<&Pod> = state
        .pods()
        .filter(|p| p.spec.node_name.as_deref() == Some(node.metadata.name.as_str()) && orch_core::fit::occupies(p))
        .collect();
    let used = pods.iter().fold(Requests::default(), |sum, p| sum.plus(Requests::of(p)));
    let has = Requests::allocatable(node);
    let short = used.cpu > has.cpu
        || used.memory > has.memory
        || used.ephemeral_storage > has.ephemeral_storage
        || used.pods > has.pods;
    short.then(|| {
        let names: Vec<String> = pods.iter().map(|p| name(p)).collect();
        format!("requested {used:?} of allocatable {has:?} by {names:?}")
    })
}

/// `replicas`, `maxSurge` and `maxUnavailable` of a RollingUpdate Deployment, resolved as
/// Kubernetes documents them (a percentage of the replicas: the surge rounded up, the
/// unavailability down; when both come to 0, one pod may be unavailable); none for Recreate.
fn bounds(d: &Deployment) -> Option<(i64, i64, i64)> {
    if d.spec.strategy.type_ == Some(DeploymentStrategyType::Recreate) {
        return None;
    }
    let replicas = i64::from(d.spec.replicas.unwrap_or(1).max(0));
    let ru = d.spec.strategy.rolling_update.as_ref();
    let quarter = IntOrString::Str("25%".into());
    let resolve =
        |v: Option<&IntOrString>, up: bool| v.unwrap_or(&quarter).scaled_value(replicas, up).unwrap_or(0).max(0);
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), true);
    let mut unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Some((replicas, surge, unavailable.min(replicas)))
}

/// A RollingUpdate Deployment's surge and availability bounds hold at every entry that
/// creates or deletes one of its pods.
pub struct RolloutBounds;

impl Checker for RolloutBounds {
    fn name(&self) -> &'static str {
        "rollout-bounds"
    }

    fn check(&self, history: &History) -> Vec<String> {
        let mut found = Vec::new();
        // The entry that last set each ReplicaSet's `replicas`, and the entries that wrote its
        // status (by the set's uid); the Ready pods after each entry that changed them (a
        // persistent set: a copy shares it).
        let mut scaled_at: BTreeMap<Uid, u64> = BTreeMap::new();
        let mut status_at: BTreeMap<Uid, BTreeSet<u64>> = BTreeMap::new();
        let mut ready_pods: imbl::OrdSet<ObjectKey> = imbl::OrdSet::new();
        let mut ready_at: BTreeMap<u64, imbl::OrdSet<ObjectKey>> = BTreeMap::from([(0, imbl::OrdSet::new())]);
        let mut broken = each_entry(history, |before, entry, after| {
            let mut ready_changed = false;
            for e in &entry.events {
                match &e.object {
                    Object::ReplicaSet(rs) => {
                        let Some(uid) = rs.metadata.uid else { continue };
                        let old = match before.objects.get(&e.object.key()) {
                            Some(Object::ReplicaSet(old)) => Some(old),
                            _ => None,
                        };
                        if e.event_type == EventType::Deleted {
                            scaled_at.remove(&uid);
                            continue;
                        }
                        if old.is_none_or(|o| o.spec.replicas != rs.spec.replicas) {
                            scaled_at.insert(uid, entry.index);
                        }
                        if old.is_none_or(|o| o.status != rs.status) {
                            status_at.entry(uid).or_default().insert(entry.index);
                        }
                    }
                    Object::Pod(_) => {
                        let key = e.object.key();
                        ready_changed |= if after.objects.get(&key).and_then(Object::as_pod).is_some_and(ready) {
                            ready_pods.insert(key).is_none()
                        } else {
                            ready_pods.remove(&key).is_some()
                        };
                    }
                    _ => {}
                }
            }
            if ready_changed {
                ready_at.insert(entry.index, ready_pods.clone());
            }
            let created: BTreeSet<ObjectKey> = entry
                .events
                .iter()
                .filter(|e| e.event_type == EventType::Added && e.object.kind() == Kind::Pod)
                .map(|e| e.object.key())
                .collect();
            // The Ready active pods this entry deleted (or marked for deletion) that their set
            // had more of than it wants: a scale-down, the controllers' decision (an eviction
            // or a pod lost with its node is not).
            let sets = after.sets();
            let active_of = |uid: Uid| before.pods().filter(|p| active(p) && owned_by(p, uid)).count();
            let gone: BTreeSet<ObjectKey> = entry
                .events
                .iter()
                .filter_map(|e| {
                    let key = e.object.key();
                    let Some(Object::Pod(old)) = before.objects.get(&key) else { return None };
                    let now_active = after.objects.get(&key).and_then(Object::as_pod).is_some_and(active);
                    let set = old.metadata.controller_ref().and_then(|r| sets.get(&r.uid))?;
                    let wants = usize::try_from(set.spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
                    let scaled_down = set.metadata.uid.is_some_and(|uid| active_of(uid) > wants);
                    (active(old) && ready(old) && !now_active && scaled_down).then_some(key)
                })
                .collect();
            if created.is_empty() && gone.is_empty() {
                return;
            }
            let before_pods = before.pods_by_deployment();
            let after_pods = after.pods_by_deployment();
            for d in after.deployments() {
                let (Some(uid), Some((replicas, surge, unavailable))) = (d.metadata.uid, bounds(d)) else { continue };
                if d.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let pods = after_pods.get(&uid).map(Vec::as_slice).unwrap_or_default();
                let key = |p: &Pod| orch_core::agent::pod_key(p);
                let live: Vec<&&Pod> = pods.iter().filter(|p| active(p)).collect();
                let id = format!("{}/{}", d.metadata.namespace_str(), d.metadata.name);
                if pods.iter().any(|p| created.contains(&key(p))) && live.len() as i64 > replicas + surge {
                    found.push(format!(
                        "entry {} created a pod of deployment {id}: {} active, more than {replicas} + maxSurge {surge}",
                        entry.index,
                        live.len()
                    ));
                }
                let ours: Vec<&&Pod> = before_pods
                    .get(&uid)
                    .map(|ps| ps.iter().filter(|p| gone.contains(&key(p))).collect())
                    .unwrap_or_default();
                let ready_now = live.iter().filter(|p| ready(p)).count() as i64;
                if ours.is_empty() || ready_now >= replicas - unavailable {
                    continue;
                }
                // The delete follows from the entry that last scaled the sets it deleted from
                // (the earliest of them), which the Deployment controller sized from its sets'
                // status as last written before it: what the deciding controllers read is a
                // state from that write up to the one before this entry, and a pod that
                // stopped being Ready since may be unseen. Broken only if in each of those
                // states fewer of the pods this entry left were Ready than the bound.
                let scaled = ours
                    .iter()
                    .filter_map(|p| p.metadata.controller_ref().and_then(|r| scaled_at.get(&r.uid)))
                    .min()
                    .copied()
                    .unwrap_or(before.index);
                // The sets that count: those that want pods (a set at 0 counts no availability
                // whatever its status says, and its status stops changing) and those deleted from.
                let deleting: BTreeSet<Uid> =
                    ours.iter().filter_map(|p| p.metadata.controller_ref().map(|r| r.uid)).collect();
                let from = before
                    .sets()
                    .into_iter()
                    .filter(|(set, rs)| {
                        rs.metadata.controller_ref().is_some_and(|r| r.uid == uid)
                            && (rs.spec.replicas.unwrap_or(1) > 0 || deleting.contains(set))
                    })
                    .filter_map(|(set, _)| status_at.get(&set)?.range(..=scaled).next_back().copied())
                    .min()
                    .unwrap_or(scaled);
                // The Ready sets in force over `from..entry`: the one at `from`, then each change.
                let first = ready_at.range(..=from).next_back().map(|(_, r)| r);
                let later = ready_at.range(from + 1..entry.index.max(from + 1)).map(|(_, r)| r);
                let best = first
                    .into_iter()
                    .chain(later)
                    .map(|ready_then| live.iter().filter(|p| ready_then.contains(&key(p))).count() as i64)
                    .max()
                    .unwrap_or(ready_now);
                if best < replicas - unavailable {
                    found.push(format!(
                        "entry {} deleted a Ready pod of deployment {id}: {ready_now} Ready left, and at most {best} \
                         in any state its controllers could have read (from entry {from} on), fewer than {replicas} \
                         - maxUnavailable {unavailable}",
                        entry.index
                    ));
                }
            }
        });
        broken.append(&mut found);
        broken
    }
}

/// Every Deployment and every Endpoints converged within `bound_ms` after the faults healed
/// (the state at that time), and still at the end of the run. The run must last that long.
pub struct Converged {
    /// Simulated milliseconds after the heal.
    pub bound_ms: u64,
}

impl Checker for Converged {
    fn name(&self) -> &'static str {
        "converged"
    }

    fn check(&self, history: &History) -> Vec<String> {
        let Some(healed) = history.probes.first().map(|p| p.healed_ms) else {
            return vec!["the run recorded no heal".to_owned()];
        };
        let due = healed.saturating_add(self.bound_ms);
        let end = history.samples.iter().map(|s| s.at_ms).max().unwrap_or(0);
        if end < due {
            return vec![format!(
                "the run ended at {end} ms, before the bound ({healed} ms healed + {} ms)",
                self.bound_ms
            )];
        }
        if history.committed.is_empty() {
            return vec!["no entry was committed".to_owned()];
        }
        let mut found = Vec::new();
        let mut checked_due = false;
        let at_due = |state: &Replay| {
            unconverged(state)
                .into_iter()
                .map(|w| format!("{} ms after the heal: {w}", self.bound_ms))
                .collect::<Vec<_>>()
        };
        // The state at the bound: the one before the first entry applied after it.
        let (mut broken, last) = replay(history, |before, entry, _| {
            if entry.at_ms > due && !checked_due {
                found.extend(at_due(before));
                checked_due = true;
            }
        });
        if !checked_due {
            found.extend(at_due(&last));
        }
        found.extend(unconverged(&last).into_iter().map(|w| format!("at the end: {w}")));
        broken.append(&mut found);
        broken
    }
}

/// What has not converged in `state`.
pub fn unconverged(state: &Replay) -> Vec<String> {
    let mut found = Vec::new();
    let by = state.pods_by_deployment();
    let sets = state.sets();
    for d in state.deployments() {
        if d.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let id = format!("deployment {}/{} (at index {})", d.metadata.namespace_str(), d.metadata.name, state.index);
        let want = usize::try_from(d.spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
        let pods: Vec<&Pod> =
            d.metadata.uid.and_then(|u| by.get(&u)).into_iter().flatten().copied().filter(|p| active(p)).collect();
        let current = |p: &Pod| {
            let set = p.metadata.controller_ref().and_then(|r| sets.get(&r.uid));
            set.is_some_and(|rs| orch_core::deployment::same_template(&rs.spec.template, &d.spec.template))
        };
        let fine = pods.iter().filter(|p| ready(p) && current(p)).count();
        if pods.len() != want || fine != want {
            found.push(format!(
                "{id}: {} active pods, {fine} of them Ready on the current template, want {want}",
                pods.len()
            ));
        }
        let s = &d.status;
        let n = i32::try_from(want).unwrap_or(i32::MAX);
        let counts = [s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas];
        if counts.iter().any(|c| c.unwrap_or(0) != n) || s.observed_generation != d.metadata.generation {
            found.push(format!("{id}: status {s:?}, generation {:?}", d.metadata.generation));
        }
    }
    for service in state.of_kind(Kind::Service).filter_map(|o| match o {
        Object::Service(s) => Some(s.as_ref()),
        _ => None,
    }) {
        // Services whose every pod resolves every port (numbered target ports): the others
        // leave pods out of some ports, which this check does not model.
        let numbered = |p: &orch_core::core_v1::ServicePort| !matches!(p.target_port, Some(IntOrString::Str(_)));
        if service.spec.selector.is_empty() || service.spec.ports.is_empty() || !service.spec.ports.iter().all(numbered)
        {
            continue;
        }
        let ns = service.metadata.namespace_str();
        let id = format!("endpoints {ns}/{} (at index {})", service.metadata.name, state.index);
        let selected: Vec<&Pod> = state
            .pods()
            .filter(|p| p.metadata.namespace_str() == ns && p.metadata.labels.contains_all(&service.spec.selector))
            .filter(|p| active(p) && p.status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty()))
            .collect();
        if selected.len() > orch_core::endpoints::ENDPOINTS_ADDRESSES_MAX {
            continue;
        }
        // Each address with the pod it names.
        let ips = |ready_ones: bool| -> BTreeSet<(String, String)> {
            selected
                .iter()
                .filter(|p| ready(p) == ready_ones)
                .map(|p| (p.status.pod_ip.as_deref().unwrap_or("").to_owned(), p.metadata.name.to_string()))
                .collect()
        };
        let (want_ready, want_not_ready) = (ips(true), ips(false));
        let Some(Object::Endpoints(e)) =
            state.objects.get(&ObjectKey::new(Kind::Endpoints, ns, &service.metadata.name))
        else {
            found.push(format!("{id}: missing"));
            continue;
        };
        let listed = |f: fn(&orch_core::core_v1::EndpointSubset) -> &Vec<orch_core::core_v1::EndpointAddress>| {
            e.subsets
                .iter()
                .flat_map(|s| {
                    f(s).iter().map(|a| {
                        let pod = a.target_ref.as_ref().and_then(|r| r.name.as_deref()).unwrap_or("");
                        (a.ip.to_string(), pod.to_owned())
                    })
                })
                .collect::<Vec<(String, String)>>()
        };
        let (ready_listed, not_ready_listed) = (listed(|s| &s.addresses), listed(|s| &s.not_ready_addresses));
        let distinct = |v: &Vec<(String, String)>| v.iter().cloned().collect::<BTreeSet<(String, String)>>();
        if distinct(&ready_listed) != want_ready
            || distinct(&not_ready_listed) != want_not_ready
            || ready_listed.len() != want_ready.len()
            || not_ready_listed.len() != want_not_ready.len()
        {
            found.push(format!(
                "{id}: lists {ready_listed:?} Ready and {not_ready_listed:?} not, want {want_ready:?} and {want_not_ready:?}"
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use orch_core::{Revision, WatchEvent};

    use super::*;
    use crate::history::Probe;

    fn objects(yaml: &str) -> Vec<Object> {
        orch_core::parse_manifests(yaml).expect("valid")
    }

    fn uid(n: u8) -> Uid {
        Uid::from_u128(u128::from(n))
    }

    /// A Deployment `web` (uid 1) with 4 replicas, maxSurge 1, maxUnavailable 1, and its set
    /// `web-a` (uid 2).
    fn deployment_and_set() -> Vec<Object> {
        let mut out = objects(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default, generation: 1}\nspec:\n  replicas: 4\n  \
             selector: {matchLabels: {app: web}}\n  strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 1}}\n  \
             template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: a}]}\n---\n\
             apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web-a, namespace: default}\nspec:\n  replicas: 4\n  \
             selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: c, image: a}]}\n",
        );
        let Object::Deployment(d) = &mut out[0] else { unreachable!() };
        std::sync::Arc::make_mut(d).metadata.uid = Some(uid(1));
        let Object::ReplicaSet(rs) = &mut out[1] else { unreachable!() };
        let rs = std::sync::Arc::make_mut(rs);
        rs.metadata.uid = Some(uid(2));
        rs.metadata.owner_references = vec![owner("Deployment", "web", uid(1))];
        out
    }

    fn owner(kind: &str, name: &str, uid: Uid) -> orch_core::meta::OwnerReference {
        orch_core::meta::OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid,
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// Pod `name` of set `web-a`, on `node` (when some), Ready or not, with `ip`.
    fn pod(name: &str, node: Option<&str>, is_ready: bool, ip: &str, cpu: &str) -> Object {
        let status = if is_ready { "'True'" } else { "'False'" };
        let node = node.map(|n| format!(", nodeName: {n}")).unwrap_or_default();
        let mut p = objects(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default, labels: {{app: web}}}}\n\
             spec: {{containers: [{{name: c, image: a, resources: {{requests: {{cpu: {cpu}}}}}}}]{node}}}\n\
             status: {{phase: Running, podIP: '{ip}', conditions: [{{type: Ready, status: {status}}}]}}\n"
        ));
        let Object::Pod(pod) = &mut p[0] else { unreachable!() };
        std::sync::Arc::make_mut(pod).metadata.owner_references = vec![owner("ReplicaSet", "web-a", uid(2))];
        p.remove(0)
    }

    fn deleting(object: Object) -> Object {
        let Object::Pod(mut p) = object else { unreachable!() };
        std::sync::Arc::make_mut(&mut p).metadata.deletion_timestamp = Some(orch_core::time::Time::from_millis(1));
        Object::Pod(p)
    }

    fn node(name: &str, cpu: &str) -> Object {
        objects(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus: {{allocatable: {{cpu: '{cpu}', pods: '10'}}}}\n"
        ))
        .remove(0)
    }

    /// A history whose entries (1, 2, ...) write these objects, 10 ms apart.
    fn history(entries: Vec<Vec<Object>>) -> History {
        let committed = entries
            .into_iter()
            .enumerate()
            .map(|(i, objects)| {
                let index = i as u64 + 1;
                let events = objects
                    .into_iter()
                    .map(|object| WatchEvent {
                        revision: Revision(index),
                        event_type: EventType::Modified,
                        object,
                        prev: None,
                    })
                    .collect();
                Committed { index, at_ms: index * 10, events }
            })
            .collect();
        History { committed, ..History::default() }
    }

    #[test]
    fn a_bind_beyond_a_node_s_allocatable_is_found() {
        let base =
            vec![node("n1", "2"), pod("a", Some("n1"), true, "10.0.0.1", "1500m"), pod("b", None, false, "", "1")];
        assert!(Allocatable.check(&history(vec![base.clone()])).is_empty());
        let bad = history(vec![base.clone(), vec![pod("b", Some("n1"), false, "", "1")]]);
        let found = Allocatable.check(&bad);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("entry 2 bound a pod to node n1"), "{found:?}");
        // Within the allocatable: fine.
        let fine = history(vec![base, vec![pod("b", Some("n1"), false, "", "500m")]]);
        assert!(Allocatable.check(&fine).is_empty());
    }

    #[test]
    fn a_pod_created_beyond_the_surge_is_found() {
        let mut first = deployment_and_set();
        first.extend((0..5).map(|i| pod(&format!("p{i}"), None, true, "", "1")));
        assert!(RolloutBounds.check(&history(vec![first.clone()])).is_empty(), "5 = 4 + maxSurge 1");
        let mut sixth = pod("p5", None, false, "", "1");
        let entries = |sixth: Object| {
            let mut h = history(vec![first.clone(), vec![sixth]]);
            h.committed[1].events[0].event_type = EventType::Added;
            h
        };
        let found = RolloutBounds.check(&entries(sixth.clone()));
        assert!(found.len() == 1 && found[0].contains("6 active, more than 4 + maxSurge 1"), "{found:?}");
        // One being deleted does not count.
        sixth = deleting(sixth);
        assert!(RolloutBounds.check(&entries(sixth)).is_empty());
    }

    #[test]
    fn a_ready_pod_deleted_below_the_availability_is_found() {
        let mut first = deployment_and_set();
        first.extend((0..4).map(|i| pod(&format!("p{i}"), None, i < 3, "", "1")));
        // The set scaled down to 3, and one of its pods deleted in the same entry: 3 Ready
        // left when it is the not-Ready one (fine), 2 when it is a Ready one.
        let set_of = |replicas: i32| {
            let mut rs = deployment_and_set().remove(1);
            let Object::ReplicaSet(r) = &mut rs else { unreachable!() };
            std::sync::Arc::make_mut(r).spec.replicas = Some(replicas);
            rs
        };
        let fine = history(vec![first.clone(), vec![set_of(3), deleting(pod("p3", None, false, "", "1"))]]);
        assert!(RolloutBounds.check(&fine).is_empty());
        let bad = history(vec![first.clone(), vec![set_of(3), deleting(pod("p0", None, true, "", "1"))]]);
        let found = RolloutBounds.check(&bad);
        assert!(
            found.len() == 1
                && found[0].contains("2 Ready left,")
                && found[0].contains("fewer than 4 - maxUnavailable 1"),
            "{found:?}"
        );
        // A Ready pod deleted while its set still wants it (evicted, or lost with its node), or
        // one that stops being Ready on its own: no controller's decision.
        let evicted = history(vec![first.clone(), vec![deleting(pod("p0", None, true, "", "1"))]]);
        assert!(RolloutBounds.check(&evicted).is_empty());
        let unready = history(vec![first, vec![pod("p0", None, false, "", "1")]]);
        assert!(RolloutBounds.check(&unready).is_empty());
    }

    #[test]
    fn a_pod_that_crashed_after_the_scale_down_counts_as_ready_for_the_delete() {
        let mut first = deployment_and_set();
        first.extend((0..4).map(|i| pod(&format!("p{i}"), None, true, "", "1")));
        let set = |replicas: i32, ready: Option<i32>| {
            let mut rs = deployment_and_set().remove(1);
            let Object::ReplicaSet(r) = &mut rs else { unreachable!() };
            let r = std::sync::Arc::make_mut(r);
            r.spec.replicas = Some(replicas);
            r.status.ready_replicas = ready;
            rs
        };
        let crash = vec![pod("p1", None, false, "", "1")];
        let delete = vec![deleting(pod("p0", None, true, "", "1"))];
        // Scaled to 3 (entry 2), p1 crashes (entry 3), p0 deleted (entry 4): the controller
        // read a state from entry 2 on, maybe without the crash; fine.
        let unseen = history(vec![first.clone(), vec![set(3, None)], crash.clone(), delete.clone()]);
        assert_eq!(RolloutBounds.check(&unseen), Vec::<String>::new());
        // p1 crashed (entry 2) before the scale-down (entry 3), but after the set's status was
        // last written (entry 1), which the Deployment controller sized the scale-down from:
        // fine too.
        let stale_status = history(vec![first.clone(), crash.clone(), vec![set(3, None)], delete.clone()]);
        assert_eq!(RolloutBounds.check(&stale_status), Vec::<String>::new());
        // p1 crashed (entry 2), the set's status said so (entry 3), then the scale-down (entry
        // 4): every state the controllers could have read had p1 down.
        let seen = history(vec![first.clone(), crash, vec![set(4, Some(3))], vec![set(3, Some(3))], delete.clone()]);
        let found = RolloutBounds.check(&seen);
        assert!(
            found.len() == 1 && found[0].contains("entry 5 deleted a Ready pod") && found[0].contains("from entry 3"),
            "{found:?}"
        );
        // One state at a time: p0, p1 and p3 Ready, p2 not (entry 1); scaled (entry 2); p1
        // crashes (entry 3); p2 becomes Ready (entry 4); p3 deleted (entry 5). p0, p1 and p2
        // are left, and no single state had three of them Ready (p1 and p2 never at once).
        let mut mixed = deployment_and_set();
        mixed.extend((0..4).map(|i| pod(&format!("p{i}"), None, i != 2, "", "1")));
        let h = history(vec![
            mixed,
            vec![set(3, None)],
            vec![pod("p1", None, false, "", "1")],
            vec![pod("p2", None, true, "", "1")],
            vec![deleting(pod("p3", None, true, "", "1"))],
        ]);
        let found = RolloutBounds.check(&h);
        assert!(found.len() == 1 && found[0].contains("at most 2 in any state"), "{found:?}");
        // The scale, a status write and the delete in one entry (a batch): no earlier state
        // to excuse it.
        let mut one_down = deployment_and_set();
        one_down.extend((0..4).map(|i| pod(&format!("p{i}"), None, i != 1, "", "1")));
        let h = history(vec![one_down, vec![set(3, Some(3)), deleting(pod("p0", None, true, "", "1"))]]);
        let found = RolloutBounds.check(&h);
        assert!(found.len() == 1 && found[0].contains("entry 2 deleted a Ready pod"), "{found:?}");
    }

    #[test]
    fn a_deployment_or_endpoints_not_converged_by_the_bound_is_found() {
        let service = objects(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n",
        );
        let endpoints = |ready: &[&str], not_ready: &[&str]| {
            // Pod p<n> has address 10.0.0.<n>.
            let list = |ips: &[&str]| {
                ips.iter()
                    .map(|ip| {
                        format!(
                            "{{ip: '{ip}', targetRef: {{kind: Pod, name: p{}}}}}",
                            ip.rsplit('.').next().unwrap_or("")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            objects(&format!(
                "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: web, namespace: default}}\nsubsets: [{{addresses: [{}], notReadyAddresses: [{}], ports: [{{port: 80}}]}}]\n",
                list(ready),
                list(not_ready)
            ))
        };
        let mut state = deployment_and_set();
        let Object::Deployment(d) = &mut state[0] else { unreachable!() };
        let d = std::sync::Arc::make_mut(d);
        d.status.observed_generation = Some(1);
        (d.status.replicas, d.status.updated_replicas, d.status.ready_replicas, d.status.available_replicas) =
            (Some(4), Some(4), Some(4), Some(4));
        let pods: Vec<Object> =
            (1..=4).map(|i| pod(&format!("p{i}"), None, true, &format!("10.0.0.{i}"), "1")).collect();
        state.extend(pods.clone());
        state.extend(service);
        let good = endpoints(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"], &[]);
        let with = |mut h: History, healed_ms: u64, end_ms: u64| {
            h.probes.push(Probe { healed_ms, done_ms: Some(healed_ms) });
            h.samples.push(crate::history::Sample {
                node: 1,
                incarnation: 0,
                at_ms: end_ms,
                term: 1,
                leader: true,
                commit: 0,
                applied: (0, [0; 32]),
            });
            h
        };
        let checker = Converged { bound_ms: 100 };
        let mut all = state.clone();
        all.extend(good.clone());
        assert_eq!(checker.check(&with(history(vec![all.clone()]), 0, 200)), Vec::<String>::new());
        // The run must last until the bound.
        assert!(checker.check(&with(history(vec![all.clone()]), 0, 50))[0].contains("before the bound"));
        // An address missing; one pod not Ready.
        // The right addresses, one of them naming another pod.
        let mut renamed = state.clone();
        let mut wrong = endpoints(&["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"], &[]);
        let Object::Endpoints(e) = &mut wrong[0] else { unreachable!() };
        let e = std::sync::Arc::make_mut(e);
        e.subsets[0].addresses[3].target_ref.as_mut().expect("a reference").name = Some("gone".into());
        renamed.extend(wrong);
        assert!(
            checker.check(&with(history(vec![renamed]), 0, 200)).iter().any(|w| w.contains("endpoints default/web"))
        );
        let mut missing = state.clone();
        missing.extend(endpoints(&["10.0.0.1", "10.0.0.2", "10.0.0.3"], &[]));
        assert!(
            checker
                .check(&with(history(vec![missing.clone()]), 0, 200))
                .iter()
                .any(|w| w.contains("endpoints default/web"))
        );
        let found =
            checker.check(&with(history(vec![all.clone(), vec![pod("p4", None, false, "10.0.0.4", "1")]]), 0, 200));
        assert!(
            found.iter().any(|w| w.contains("100 ms after the heal") && w.contains("3 of them Ready")),
            "{found:?}"
        );
        assert!(found.iter().any(|w| w.starts_with("at the end") && w.contains("endpoints")), "{found:?}");
        // Broken at the bound, mended later: only the bound's check fails.
        let mut late = history(vec![missing, all]);
        late.committed[1].at_ms = 150;
        let found = checker.check(&with(late, 0, 200));
        assert!(!found.is_empty() && found.iter().all(|w| w.starts_with("100 ms after the heal")), "{found:?}");
    }

    #[test]
    fn a_gap_in_the_committed_entries_is_reported() {
        let mut h = history(vec![vec![], vec![]]);
        h.committed[1].index = 5;
        assert!(Allocatable.check(&h)[0].contains("index 5 follows 1"));
    }
}
