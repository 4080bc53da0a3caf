//! The endpoints controller: what each of its rounds proposes, a pure function of the state
//! and the changed keys, stepped by its owner, as Kubernetes' endpoints controller.
//!
//! Each Service with a selector gets an Endpoints object of its name: the pods of its
//! namespace matching the selector that have an IP, are not being deleted (a terminating pod
//! leaves its Service's endpoints at once, before it is stopped) and can still run; Ready ones
//! under `addresses`, the others under `notReadyAddresses`, each with its node and a
//! reference to the pod. Each service port is resolved per pod (a named `targetPort` by the
//! pod's container port of that name and protocol; a pod without it is left out of that
//! port), and addresses with the same resolved ports share a subset (Kubernetes'
//! `RepackSubsets`), in address order. At most [`ENDPOINTS_ADDRESSES_MAX`] addresses, Ready
//! ones first, in at most `LIST_ITEMS_MAX` subsets; more are cut and the object says so
//! (`endpoints.kubernetes.io/over-capacity: truncated`). A Service without a selector keeps
//! the Endpoints its user writes; when a Service's deletion is seen, its Endpoints are
//! deleted (Endpoints without a Service are otherwise left alone: a user's may come first).
//! Not yet: `publishNotReadyAddresses`, `hostname`/`subdomain`, Kubernetes' proportional cut.
//!
//! Each Service's members (the pods it selects, in the order the cut keeps) are kept from the
//! changed pod keys, taken afresh on a full round or when its selector changes: a sync walks
//! at most the addresses it keeps, not the namespace's pods.
//!
//! Which Services a round syncs: all on a full round; else those that changed, and for each
//! changed pod the Services of its namespace whose selector matches it or whose Endpoints
//! name it. Every write names the object's resourceVersion, so a stale round is refused.

use std::collections::{BTreeMap, BTreeSet};

use crate::command::{Command, Preconditions};
use crate::core_v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Pod, PodPhase, Protocol, Service};
use crate::intstr::IntOrString;
use crate::meta::{ConditionStatus, ObjectReference};
use crate::object::{Kind, Object, ObjectKey};
use crate::reconcile::{Fate, Reconciler};
use crate::state::State;
use crate::strmap::StrMap;

/// The most addresses one Endpoints object lists (Kubernetes' `maxCapacity`).
pub const ENDPOINTS_ADDRESSES_MAX: usize = 1000;
/// The annotation of an Endpoints object whose addresses were cut.
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
/// The label of a headless Service's Endpoints.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// A service port as resolved for one pod: its name, the pod's port, the protocol.
type ResolvedPort = (Option<String>, i32, Protocol);

/// Whether `pod` belongs in a Service's endpoints at all (Kubernetes' `ShouldPodBeInEndpoints`):
/// it has an IP, is not being deleted and has not finished.
fn eligible(pod: &Pod) -> bool {
    pod.status.pod_ip.as_deref().is_some_and(|ip| !ip.is_empty())
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod.status.phase, Some(PodPhase::Failed | PodPhase::Succeeded))
}

fn ready(pod: &Pod) -> bool {
    pod.status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
}

/// The pod's port for `target` (a number as it is; a name by its container port of that name
/// and protocol), as Kubernetes' `FindPort`.
fn find_port(pod: &Pod, target: &IntOrString, protocol: Protocol) -> Option<i32> {
    match target {
        IntOrString::Int(n) => Some(*n),
        IntOrString::Str(name) => pod.spec.containers.iter().flat_map(|c| c.ports.iter()).find_map(|p| {
            (p.name.as_deref() == Some(name.as_str()) && p.protocol.unwrap_or(Protocol::Tcp) == protocol)
                .then_some(p.container_port)
        }),
    }
}

/// The Endpoints `service` should have, from the pods of the state.
pub fn desired(state: &State, service: &Service) -> Endpoints {
    let members = Members::of(state, service);
    build(service, members.ordered(state, service))
}

/// The pods a Service selects (eligible, matching its selector), in the order their addresses
/// are kept when there are too many: Ready ones first, then by name. The controller keeps
/// each Service's from the changed keys (O(changes) a round instead of a walk of the
/// namespace's pods on every sync).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Members {
    /// The selector they were taken for.
    selector: StrMap,
    /// (not Ready, pod name), in address order.
    order: BTreeSet<(bool, String)>,
    /// Each member's place in `order`, by name.
    by_name: BTreeMap<String, bool>,
}

impl Members {
    /// Taken afresh from the state.
    fn of(state: &State, service: &Service) -> Self {
        let mut members = Self { selector: service.spec.selector.clone(), ..Self::default() };
        for pod in state.list(Kind::Pod, Some(service.metadata.namespace_str())).filter_map(Object::as_pod) {
            members.note(service, pod.metadata.name.as_str(), Some(pod));
        }
        members
    }

    /// Notes the pod named `name` as the state now has it (`None`: gone).
    fn note(&mut self, service: &Service, name: &str, pod: Option<&Pod>) {
        if let Some(not_ready) = self.by_name.remove(name) {
            self.order.remove(&(not_ready, name.to_owned()));
        }
        if let Some(pod) = pod.filter(|p| eligible(p) && selects(service, &p.metadata.labels)) {
            let not_ready = !ready(pod);
            self.order.insert((not_ready, name.to_owned()));
            self.by_name.insert(name.to_owned(), not_ready);
        }
    }

    /// The members as (Ready, pod), in order, each as the state has it now: the state a round
    /// reads may be ahead of the changes it was told of, so a pod is checked again (one no
    /// longer selected or eligible is left out, and its readiness is its own), and the next
    /// round, told of the change, puts it in its place.
    fn ordered<'a>(&'a self, state: &'a State, service: &'a Service) -> impl Iterator<Item = (bool, &'a Pod)> + 'a {
        let namespace = service.metadata.namespace_str();
        self.order.iter().filter_map(move |(_, name)| match state.get(&ObjectKey::new(Kind::Pod, namespace, name)) {
            Some(Object::Pod(p)) if eligible(p) && selects(service, &p.metadata.labels) => Some((ready(p), p.as_ref())),
            _ => None,
        })
    }
}

/// The Endpoints of `service` from its members, (Ready, pod) with the Ready ones first, so
/// that a cut keeps them.
fn build<'a>(service: &Service, pods: impl Iterator<Item = (bool, &'a Pod)>) -> Endpoints {
    let headless = service.spec.cluster_ip.as_deref() == Some("None");
    // Resolved ports -> (ready, not ready) addresses.
    let mut subsets: BTreeMap<Vec<ResolvedPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> = BTreeMap::new();
    let mut count = 0usize;
    let mut truncated = false;
    for (is_ready, pod) in pods {
        let mut ports = Vec::new();
        for sp in &service.spec.ports {
            let protocol = sp.protocol.unwrap_or(Protocol::Tcp);
            let target = sp.target_port.clone().unwrap_or(IntOrString::Int(sp.port));
            if let Some(port) = find_port(pod, &target, protocol) {
                ports.push((sp.name.as_deref().map(str::to_owned), port, protocol));
            }
        }
        if ports.is_empty() && !(service.spec.ports.is_empty() && headless) {
            continue;
        }
        ports.sort();
        // The object's limits: addresses, and subsets (one per distinct set of resolved ports).
        let new_subset = !subsets.contains_key(&ports);
        if count == ENDPOINTS_ADDRESSES_MAX || (new_subset && subsets.len() == crate::validation::LIST_ITEMS_MAX) {
            truncated = true;
            if count == ENDPOINTS_ADDRESSES_MAX {
                break;
            }
            continue;
        }
        count += 1;
        let address = EndpointAddress {
            ip: pod.status.pod_ip.clone().unwrap_or_default(),
            hostname: None,
            node_name: pod.spec.node_name.clone(),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.metadata.namespace.clone(),
                name: Some(pod.metadata.name.clone()),
                uid: pod.metadata.uid,
                ..ObjectReference::default()
            }),
        };
        let entry = subsets.entry(ports).or_default();
        if is_ready { entry.0.push(address) } else { entry.1.push(address) }
    }
    let order = |a: &EndpointAddress| (a.ip.clone(), a.target_ref.as_ref().and_then(|r| r.name.clone()));
    let mut endpoints = Endpoints::default();
    endpoints.metadata.name = service.metadata.name.clone();
    endpoints.metadata.namespace = service.metadata.namespace.clone();
    endpoints.metadata.labels = service.metadata.labels.clone();
    if headless {
        endpoints.metadata.labels.insert(HEADLESS_LABEL, "");
    }
    if truncated {
        endpoints.metadata.annotations.insert(OVER_CAPACITY_ANNOTATION, "truncated");
    }
    endpoints.subsets = subsets
        .into_iter()
        .map(|(ports, (mut addresses, mut not_ready))| {
            addresses.sort_by_key(order);
            not_ready.sort_by_key(order);
            EndpointSubset {
                addresses,
                not_ready_addresses: not_ready,
                ports: ports
                    .into_iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name: name.map(Into::into),
                        port,
                        protocol: Some(protocol),
                    })
                    .collect(),
            }
        })
        .collect();
    endpoints
}

/// Whether `service` selects pods with `labels` (a Service without a selector selects none).
fn selects(service: &Service, labels: &StrMap) -> bool {
    !service.spec.selector.is_empty() && labels.contains_all(&service.spec.selector)
}

/// The endpoints controller of one term: it keeps each Service's members (the pods it
/// selects) from the changed keys.
#[derive(Debug, Default)]
pub struct EndpointsController {
    members: BTreeMap<ObjectKey, Members>,
}

impl EndpointsController {
    /// A controller.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes a changed pod in the members of the Services of its namespace.
    fn note_pod(&mut self, state: &State, key: &ObjectKey) {
        let pod = match state.get(key) {
            Some(Object::Pod(p)) => Some(p.as_ref()),
            _ => None,
        };
        let from = ObjectKey::new(Kind::Service, &key.namespace, "");
        let services: Vec<ObjectKey> = self
            .members
            .range(from..)
            .take_while(|(k, _)| k.kind == Kind::Service && k.namespace == key.namespace)
            .map(|(k, _)| k.clone())
            .collect();
        for service_key in services {
            match state.get(&service_key) {
                // Kept for the selector they were taken for; one that changed since (the state
                // may be ahead of the changes told) is taken afresh at its next sync.
                Some(Object::Service(service))
                    if self.members.get(&service_key).is_some_and(|m| m.selector == service.spec.selector) =>
                {
                    if let Some(m) = self.members.get_mut(&service_key) {
                        m.note(service, key.name.as_str(), pod);
                    }
                }
                _ => {
                    self.members.remove(&service_key);
                }
            }
        }
    }

    /// What to write so that the Endpoints of the Service at `key` are as they should be.
    fn sync(&mut self, state: &State, key: &ObjectKey) -> Option<Command> {
        let ep_key = ObjectKey::new(Kind::Endpoints, &key.namespace, &key.name);
        let live = match state.get(&ep_key) {
            Some(Object::Endpoints(e)) => Some(e),
            _ => None,
        };
        let service = match state.get(key) {
            Some(Object::Service(s)) => s,
            _ => {
                // The Service is gone (its deletion seen): so go its Endpoints.
                self.members.remove(key);
                return live.map(|e| Command::Delete {
                    key: ep_key,
                    grace_period_seconds: None,
                    preconditions: Preconditions { uid: e.metadata.uid, resource_version: e.metadata.resource_version },
                    propagation_policy: None,
                });
            }
        };
        if service.spec.selector.is_empty() {
            self.members.remove(key);
            return None;
        }
        if self.members.get(key).is_none_or(|m| m.selector != service.spec.selector) {
            self.members.insert(key.clone(), Members::of(state, service));
        }
        let members = &self.members[key];
        #[cfg(test)]
        assert_eq!(*members, Members::of(state, service), "the members kept differ from the state's");
        let mut want = build(service, members.ordered(state, service));
        match live {
            None => Some(Command::Create(Object::from(want))),
            Some(e) => {
                // Annotations others set stay; ours follow the state.
                let mut annotations = e.metadata.annotations.clone();
                annotations.remove(OVER_CAPACITY_ANNOTATION);
                for (k, v) in want.metadata.annotations.iter() {
                    annotations.insert(k, v);
                }
                if e.subsets == want.subsets
                    && e.metadata.labels == want.metadata.labels
                    && e.metadata.annotations == annotations
                {
                    return None;
                }
                let mut updated = (**e).clone();
                updated.subsets = std::mem::take(&mut want.subsets);
                updated.metadata.labels = want.metadata.labels;
                updated.metadata.annotations = annotations;
                Some(Command::Update(Object::from(updated)))
            }
        }
    }
}

impl Reconciler for EndpointsController {
    const NAME: &'static str = "endpoints";

    fn reconcile(
        &mut self,
        state: &State,
        _now_ms: i64,
        full: bool,
        changed: &[ObjectKey],
        outcomes: &[(Command, Fate)],
    ) -> Vec<Command> {
        let mut sync: BTreeSet<ObjectKey> = BTreeSet::new();
        // A write not known to be applied: its Service again.
        for (command, fate) in outcomes {
            if matches!(fate, Fate::Applied(Ok(_))) {
                continue;
            }
            let key = match command {
                Command::Create(o) | Command::Update(o) => o.key(),
                Command::Delete { key, .. } => key.clone(),
                _ => continue,
            };
            sync.insert(ObjectKey::new(Kind::Service, &key.namespace, &key.name));
        }
        if full {
            self.members.clear();
            sync.extend(state.list(Kind::Service, None).map(Object::key));
        } else {
            // For each namespace with changed pods: which pods its Endpoints name.
            let mut named: BTreeMap<String, BTreeMap<String, Vec<ObjectKey>>> = BTreeMap::new();
            for key in changed {
                match key.kind {
                    Kind::Service => {
                        sync.insert(key.clone());
                    }
                    Kind::Endpoints => {
                        // Written by someone else: put right (if its Service exists).
                        let service = ObjectKey::new(Kind::Service, &key.namespace, &key.name);
                        if state.get(&service).is_some() {
                            sync.insert(service);
                        }
                    }
                    Kind::Pod => {
                        self.note_pod(state, key);
                        let ns = key.namespace.to_string();
                        let by_pod = named.entry(ns.clone()).or_insert_with(|| {
                            let mut by_pod: BTreeMap<String, Vec<ObjectKey>> = BTreeMap::new();
                            for e in state.list(Kind::Endpoints, Some(&ns)) {
                                let Object::Endpoints(e) = e else { continue };
                                let service = ObjectKey::new(Kind::Service, &ns, &e.metadata.name);
                                let names = e
                                    .subsets
                                    .iter()
                                    .flat_map(|s| s.addresses.iter().chain(s.not_ready_addresses.iter()))
                                    .filter_map(|a| a.target_ref.as_ref().and_then(|r| r.name.as_deref()));
                                for name in names {
                                    by_pod.entry(name.to_owned()).or_default().push(service.clone());
                                }
                            }
                            by_pod
                        });
                        sync.extend(by_pod.get(key.name.as_str()).into_iter().flatten().cloned());
                        if let Some(Object::Pod(pod)) = state.get(key) {
                            for s in state.list(Kind::Service, Some(&ns)) {
                                if let Object::Service(service) = s
                                    && selects(service, &pod.metadata.labels)
                                {
                                    sync.insert(s.key());
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        sync.iter().filter_map(|key| self.sync(state, key)).collect()
    }
}

#[cfg(test)]
mod tests;
