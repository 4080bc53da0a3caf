//! Whether a pod fits a node: the scheduler's filter ([`crate::scheduler`]), and the check a
//! `Bind` repeats when applied (rules 3, [`crate::rules`]), so that a decision made on a stale
//! view is refused instead of over-committing a node.
//!
//! Kubernetes' filter plugins, in their order (a node is reported under the first one it
//! fails): the node is Ready; not cordoned (`NodeUnschedulable`); every `NoSchedule` and
//! `NoExecute` taint tolerated (`TaintToleration`); the pod's `nodeSelector` and required
//! node affinity terms matched (`NodeAffinity`: every label of the selector, and one of the
//! terms, each of whose expressions on labels and fields on `metadata.name` hold); its host ports free (`NodePorts`); its requests within what the node
//! has left of its allocatable, and one more pod within its `pods` (`NodeResourcesFit`,
//! which lists every resource that is short). Integer arithmetic only: every replica
//! computes the same answer.

use std::collections::BTreeMap;
use std::fmt;

use crate::core_v1::{
    Node, NodeSelectorOperator, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodPhase, Protocol, ResourceList,
    TaintEffect, Toleration, TolerationOperator,
};
use crate::meta::ConditionStatus;
use crate::quantity::Quantity;
use crate::text::Text;

/// The taint key of a cordoned node, which a pod may tolerate to be placed there anyway.
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// What pods request of a node, in milli-units (millicores, thousandths of a byte) and pods.
///
/// Held in `i128`: a quantity is at most 2^61 milli-units and a pod has a bounded number of
/// containers, so no sum of any number of pods comes near the bound, and removing a pod
/// always takes back exactly what adding it added (a saturated `i64` sum could not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// Millicores.
    pub cpu: i128,
    /// Thousandths of a byte.
    pub memory: i128,
    /// Thousandths of a byte.
    pub ephemeral_storage: i128,
    /// Pods.
    pub pods: i128,
}

fn milli(q: Option<Quantity>) -> Option<i128> {
    q.map(|q| i128::from(q.milli_value().max(0)))
}

impl Requests {
    /// What `pod` requests: the sum over its containers, a container's limit standing for a
    /// request it leaves out (as Kubernetes defaults it), and one pod.
    pub fn of(pod: &Pod) -> Self {
        Self::with_defaults(pod, Self::default())
    }

    /// As [`Requests::of`], with `defaults` (cpu, memory, ephemeral storage) standing for a
    /// container's request that neither its requests nor its limits name (the scheduler's
    /// non-zero defaults when scoring).
    pub fn with_defaults(pod: &Pod, defaults: Self) -> Self {
        let mut sum = Self { pods: 1, ..Self::default() };
        for c in &pod.spec.containers {
            let (req, lim) = (&c.resources.requests, &c.resources.limits);
            let either = |r: Option<Quantity>, l: Option<Quantity>, default| milli(r.or(l)).unwrap_or(default);
            sum.cpu += either(req.cpu, lim.cpu, defaults.cpu);
            sum.memory += either(req.memory, lim.memory, defaults.memory);
            sum.ephemeral_storage += either(req.ephemeral_storage, lim.ephemeral_storage, defaults.ephemeral_storage);
        }
        sum
    }

    /// What `node` offers: its allocatable, or its capacity when it reports no allocatable at
    /// all (as Kubernetes); a resource not named is 0 (a node that reports nothing takes no
    /// pod).
    pub fn allocatable(node: &Node) -> Self {
        let (a, c) = (&node.status.allocatable, &node.status.capacity);
        let list = if *a == ResourceList::default() { c } else { a };
        Self {
            cpu: milli(list.cpu).unwrap_or(0),
            memory: milli(list.memory).unwrap_or(0),
            ephemeral_storage: milli(list.ephemeral_storage).unwrap_or(0),
            pods: list.pods.map_or(0, |q| i128::from(q.value().max(0))),
        }
    }

    /// The sum of both.
    #[must_use]
    pub fn plus(self, other: Self) -> Self {
        Self {
            cpu: self.cpu + other.cpu,
            memory: self.memory + other.memory,
            ephemeral_storage: self.ephemeral_storage + other.ephemeral_storage,
            pods: self.pods + other.pods,
        }
    }

    /// This less `other`.
    #[must_use]
    pub fn minus(self, other: Self) -> Self {
        Self {
            cpu: self.cpu - other.cpu,
            memory: self.memory - other.memory,
            ephemeral_storage: self.ephemeral_storage - other.ephemeral_storage,
            pods: self.pods - other.pods,
        }
    }
}

/// A host port a pod's container takes on its node: (protocol, port, host IP, "" for all).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostPort {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: &'static str,
    /// The port on the node.
    pub port: i32,
    /// The address it binds, empty for every address (`0.0.0.0`).
    pub ip: Text,
}

impl HostPort {
    /// The host ports `pod` asks for.
    pub fn of(pod: &Pod) -> impl Iterator<Item = HostPort> + '_ {
        pod.spec.containers.iter().flat_map(|c| &c.ports).filter_map(|p| {
            let port = p.host_port.filter(|port| *port > 0)?;
            let protocol = match p.protocol {
                Some(Protocol::Udp) => "UDP",
                Some(Protocol::Sctp) => "SCTP",
                _ => "TCP",
            };
            let ip = p.host_ip.clone().filter(|ip| ip.as_str() != "0.0.0.0").unwrap_or_default();
            Some(HostPort { protocol, port, ip })
        })
    }

    /// Whether the two cannot both be bound: one protocol and port, and one address or either
    /// on every address.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        self.protocol == other.protocol
            && self.port == other.port
            && (self.ip == other.ip || self.ip.is_empty() || other.ip.is_empty())
    }
}

/// What the pods bound to a node already take of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeUsage {
    /// The sum of their requests (and their number).
    pub requested: Requests,
    /// Their host ports, each with the number of pods that hold it (pods bound by setting
    /// `nodeName` directly may share one).
    pub host_ports: BTreeMap<HostPort, u32>,
}

impl NodeUsage {
    /// Counts `pod` as bound to the node.
    pub fn add(&mut self, pod: &Pod) {
        let ports: Vec<HostPort> = HostPort::of(pod).collect();
        self.add_parts(Requests::of(pod), &ports);
    }

    /// Counts `pod`, counted before, as no longer bound: a port stays held while another pod
    /// holds it.
    pub fn remove(&mut self, pod: &Pod) {
        let ports: Vec<HostPort> = HostPort::of(pod).collect();
        self.remove_parts(Requests::of(pod), &ports);
    }

    /// Counts a pod of `request` holding `ports` as bound to the node.
    pub fn add_parts(&mut self, request: Requests, ports: &[HostPort]) {
        self.requested = self.requested.plus(request);
        for port in ports {
            *self.host_ports.entry(port.clone()).or_default() += 1;
        }
    }

    /// Undoes [`NodeUsage::add_parts`] of the same `request` and `ports`.
    pub fn remove_parts(&mut self, request: Requests, ports: &[HostPort]) {
        self.requested = self.requested.minus(request);
        for port in ports {
            if let Some(n) = self.host_ports.get_mut(port) {
                *n -= 1;
                if *n == 0 {
                    self.host_ports.remove(port);
                }
            }
        }
    }
}

/// Whether `pod` takes a share of its node: bound and not finished (Succeeded or Failed).
pub fn occupies(pod: &Pod) -> bool {
    pod.spec.node_name.is_some() && !matches!(pod.status.phase, Some(PodPhase::Succeeded | PodPhase::Failed))
}

/// Why a pod does not fit a node, worded as Kubernetes' scheduler words it in
/// `0/5 nodes are available: 3 Insufficient cpu, 2 node(s) had untolerated taint {k: v}.`
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unfit {
    /// The node's `Ready` condition is not `True`.
    NotReady,
    /// The node is cordoned (`spec.unschedulable`).
    Unschedulable,
    /// A `NoSchedule` or `NoExecute` taint the pod does not tolerate (the first one).
    Taint {
        /// The taint's key.
        key: Text,
        /// Its value.
        value: Text,
    },
    /// The node's labels do not match the pod's `nodeSelector`.
    Selector,
    /// A host port the pod asks for is taken.
    Ports,
    /// Not enough of a resource left (`cpu`, `memory`, `ephemeral-storage`).
    Insufficient(&'static str),
    /// The node runs its `pods` allocatable already.
    TooManyPods,
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotReady => f.write_str("node(s) were not ready"),
            Self::Unschedulable => f.write_str("node(s) were unschedulable"),
            Self::Taint { key, value } => write!(f, "node(s) had untolerated taint {{{key}: {value}}}"),
            Self::Selector => f.write_str("node(s) didn't match Pod's node affinity/selector"),
            Self::Ports => f.write_str("node(s) didn't have free ports for the requested pod ports"),
            Self::Insufficient(resource) => write!(f, "Insufficient {resource}"),
            Self::TooManyPods => f.write_str("Too many pods"),
        }
    }
}

/// Whether node `node`'s `Ready` condition is `True`.
pub fn ready(node: &Node) -> bool {
    node.status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
}

/// Whether `toleration` tolerates a taint of `key`, `value` and `effect`.
pub fn tolerates(toleration: &Toleration, key: &str, value: &str, effect: Option<TaintEffect>) -> bool {
    if toleration.effect.is_some() && toleration.effect != effect {
        return false;
    }
    let toleration_key = toleration.key.as_deref().unwrap_or("");
    match toleration.operator.unwrap_or(TolerationOperator::Equal) {
        // An empty key with Exists tolerates every taint.
        TolerationOperator::Exists => toleration_key.is_empty() || toleration_key == key,
        TolerationOperator::Equal => toleration_key == key && toleration.value.as_deref().unwrap_or("") == value,
    }
}

/// Whether `pod` fits `node`, whose bound pods take `usage` of it (with `allocatable`, from
/// [`Requests::allocatable`], precomputed by a caller that asks often); `request` is
/// [`Requests::of`] the pod. The reasons of the first filter the node fails (every short
/// resource for the last one).
///
/// # Errors
/// The reasons it does not fit.
pub fn fits(
    pod: &Pod,
    request: Requests,
    node: &Node,
    allocatable: Requests,
    usage: &NodeUsage,
) -> Result<(), Vec<Unfit>> {
    if !ready(node) {
        return Err(vec![Unfit::NotReady]);
    }
    // A cordoned node takes the pods that tolerate its taint (Kubernetes adds the same
    // `node.kubernetes.io/unschedulable` NoSchedule taint, and DaemonSet pods tolerate it).
    if node.spec.unschedulable == Some(true)
        && !pod.spec.tolerations.iter().any(|t| tolerates(t, UNSCHEDULABLE_TAINT, "", Some(TaintEffect::NoSchedule)))
    {
        return Err(vec![Unfit::Unschedulable]);
    }
    for taint in &node.spec.taints {
        let effect = taint.effect;
        if !matches!(effect, Some(TaintEffect::NoSchedule | TaintEffect::NoExecute)) {
            continue;
        }
        let value = taint.value.as_deref().unwrap_or("");
        if !pod.spec.tolerations.iter().any(|t| tolerates(t, &taint.key, value, effect)) {
            return Err(vec![Unfit::Taint { key: taint.key.clone(), value: value.into() }]);
        }
    }
    if !node.metadata.labels.contains_all(&pod.spec.node_selector) || !required_affinity_matches(pod, node) {
        return Err(vec![Unfit::Selector]);
    }
    if HostPort::of(pod).any(|want| usage.host_ports.keys().any(|held| held.conflicts(&want))) {
        return Err(vec![Unfit::Ports]);
    }
    let after = usage.requested.plus(request);
    let mut short = Vec::new();
    if after.pods > allocatable.pods {
        short.push(Unfit::TooManyPods);
    }
    if request.cpu > 0 && after.cpu > allocatable.cpu {
        short.push(Unfit::Insufficient("cpu"));
    }
    if request.memory > 0 && after.memory > allocatable.memory {
        short.push(Unfit::Insufficient("memory"));
    }
    if request.ephemeral_storage > 0 && after.ephemeral_storage > allocatable.ephemeral_storage {
        short.push(Unfit::Insufficient("ephemeral-storage"));
    }
    if short.is_empty() { Ok(()) } else { Err(short) }
}

/// The node affinity terms a pod's node must match one of, if it has any.
fn required_terms(pod: &Pod) -> Option<&[NodeSelectorTerm]> {
    let affinity = pod.spec.affinity.as_ref()?.node_affinity.as_ref()?;
    Some(&affinity.required_during_scheduling_ignored_during_execution.as_ref()?.node_selector_terms)
}

/// Whether `node` meets the node affinity `pod` requires: one of its required terms, if it has
/// any (Kubernetes' `NodeAffinity` filter; a pod without one fits any node).
pub fn required_affinity_matches(pod: &Pod, node: &Node) -> bool {
    required_terms(pod).is_none_or(|terms| terms.iter().any(|t| term_matches(t, node)))
}

/// The sum of the weights of the preferred node affinity terms `node` matches (Kubernetes'
/// `NodeAffinity` score before normalization).
pub fn preferred_affinity_weight(pod: &Pod, node: &Node) -> i64 {
    let Some(affinity) = pod.spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()) else { return 0 };
    affinity
        .preferred_during_scheduling_ignored_during_execution
        .iter()
        .filter(|t| term_matches(&t.preference, node))
        .map(|t| i64::from(t.weight))
        .sum()
}

/// Whether `node` meets every requirement of `term`; a term without any matches no node.
pub fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    if term.match_expressions.is_empty() && term.match_fields.is_empty() {
        return false;
    }
    let labels = &node.metadata.labels;
    term.match_expressions.iter().all(|r| requirement_matches(r, labels.get(&r.key)))
        && term.match_fields.iter().all(|r| {
            r.key.as_str() == crate::validation::NODE_NAME_FIELD
                && requirement_matches(r, Some(node.metadata.name.as_str()))
        })
}

/// Whether `value` (the label's or field's; `None` when absent) meets `r`.
fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let listed = |v: &str| r.values.iter().any(|w| w.as_str() == v);
    // Gt and Lt compare integers; a value that is not one never matches.
    let compare = |want: fn(i64, i64) -> bool| {
        let parse = |s: &str| s.parse::<i64>().ok();
        match (value.and_then(parse), r.values.first().and_then(|v| parse(v))) {
            (Some(have), Some(bound)) if r.values.len() == 1 => want(have, bound),
            _ => false,
        }
    };
    match r.operator {
        // Validation requires an operator; a requirement without one matches nothing.
        None => false,
        Some(NodeSelectorOperator::In) => value.is_some_and(listed),
        Some(NodeSelectorOperator::NotIn) => !value.is_some_and(listed),
        Some(NodeSelectorOperator::Exists) => value.is_some(),
        Some(NodeSelectorOperator::DoesNotExist) => value.is_none(),
        Some(NodeSelectorOperator::Gt) => compare(|have, bound| have > bound),
        Some(NodeSelectorOperator::Lt) => compare(|have, bound| have < bound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core_v1::Taint;
    use crate::manifest::parse_manifests;
    use crate::object::Object;

    pub(crate) fn node(yaml_status: &str) -> Node {
        let manifest =
            format!("apiVersion: v1\nkind: Node\nmetadata: {{name: n, labels: {{disk: ssd}}}}\n{yaml_status}");
        match parse_manifests(&manifest).expect("a valid node").remove(0) {
            Object::Node(n) => (*n).clone(),
            other => panic!("not a node: {other:?}"),
        }
    }

    fn ready_node() -> Node {
        node("status: {allocatable: {cpu: '2', memory: 4Gi, pods: '3'}, conditions: [{type: Ready, status: 'True'}]}")
    }

    fn pod(spec: &str) -> Pod {
        let manifest = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {spec}");
        match parse_manifests(&manifest).expect("a valid pod").remove(0) {
            Object::Pod(p) => (*p).clone(),
            other => panic!("not a pod: {other:?}"),
        }
    }

    fn check(p: &Pod, n: &Node, usage: &NodeUsage) -> Result<(), Vec<Unfit>> {
        fits(p, Requests::of(p), n, Requests::allocatable(n), usage)
    }

    /// Required node affinity: one term of several must match, every requirement of it;
    /// each operator as Kubernetes'; a field requirement on the node's name; a term
    /// without requirements matches nothing.
    #[test]
    fn required_node_affinity_terms() {
        // Node n, labelled disk=ssd and cores=8.
        let mut n = ready_node();
        n.metadata.labels.insert("cores", "8");
        let with = |terms: &str| {
            pod(&format!(
                "{{affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: \
                 {{nodeSelectorTerms: {terms}}}}}}}, containers: [{{name: c, image: x}}]}}"
            ))
        };
        let fits_terms = |terms: &str| check(&with(terms), &n, &NodeUsage::default()).is_ok();
        let expr = |key: &str, op: &str, values: &str| {
            format!("[{{matchExpressions: [{{key: {key}, operator: {op}, values: {values}}}]}}]")
        };
        assert!(fits_terms(&expr("disk", "In", "[hdd, ssd]")));
        assert!(!fits_terms(&expr("disk", "In", "[hdd]")));
        assert!(fits_terms(&expr("disk", "NotIn", "[hdd]")));
        assert!(fits_terms(&expr("gpu", "NotIn", "[a]")), "absent: not in");
        assert!(!fits_terms(&expr("disk", "NotIn", "[ssd]")));
        assert!(fits_terms(&expr("disk", "Exists", "[]")));
        assert!(!fits_terms(&expr("gpu", "Exists", "[]")));
        assert!(fits_terms(&expr("gpu", "DoesNotExist", "[]")));
        assert!(fits_terms(&expr("cores", "Gt", "['4']")));
        assert!(!fits_terms(&expr("cores", "Gt", "['8']")));
        assert!(fits_terms(&expr("cores", "Lt", "['16']")));
        assert!(!fits_terms(&expr("disk", "Lt", "['16']")), "not an integer: no match");
        assert!(!fits_terms(&expr("gpu", "Gt", "['1']")), "absent: no match");
        // One of two terms; both requirements of one.
        let two = "[{matchExpressions: [{key: disk, operator: In, values: [hdd]}]}, \
                   {matchExpressions: [{key: disk, operator: In, values: [ssd]}, {key: cores, operator: Gt, values: ['1']}]}]";
        assert!(fits_terms(two));
        let both = "[{matchExpressions: [{key: disk, operator: In, values: [ssd]}, {key: cores, operator: Gt, values: ['9']}]}]";
        assert!(!fits_terms(both));
        assert!(fits_terms("[{matchFields: [{key: metadata.name, operator: In, values: [n]}]}]"));
        assert!(!fits_terms("[{matchFields: [{key: metadata.name, operator: NotIn, values: [n]}]}]"));
        assert!(!fits_terms("[{}]"), "an empty term matches no node");
        assert_eq!(check(&with(&expr("disk", "In", "[hdd]")), &n, &NodeUsage::default()), Err(vec![Unfit::Selector]));
        // nodeSelector and affinity both hold, or the node is out.
        let both = pod(&format!(
            "{{nodeSelector: {{disk: hdd}}, affinity: {{nodeAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: \
             {{nodeSelectorTerms: {}}}}}}}, containers: [{{name: c, image: x}}]}}",
            expr("disk", "Exists", "[]")
        ));
        assert_eq!(check(&both, &n, &NodeUsage::default()), Err(vec![Unfit::Selector]));
    }

    #[test]
    fn requests_sum_the_containers_and_a_limit_stands_for_a_missing_request() {
        let p = pod("{containers: [{name: a, image: x, resources: {requests: {cpu: 250m}, limits: {memory: 1Gi}}}, \
             {name: b, image: x, resources: {requests: {cpu: '1', memory: 1Mi}}}]}");
        let r = Requests::of(&p);
        assert_eq!(r.cpu, 1250);
        assert_eq!(r.memory, (1024 * 1024 * 1024 + 1024 * 1024) * 1000);
        assert_eq!(r.pods, 1);
    }

    #[test]
    fn a_pod_fits_until_a_resource_or_the_pod_count_runs_out() {
        let n = ready_node();
        let p = pod("{containers: [{name: a, image: x, resources: {requests: {cpu: '1', memory: 1Gi}}}]}");
        let mut usage = NodeUsage::default();
        assert_eq!(check(&p, &n, &usage), Ok(()));
        usage.add(&p);
        assert_eq!(check(&p, &n, &usage), Ok(()), "two of them fill the cpu exactly");
        usage.add(&p);
        assert_eq!(check(&p, &n, &usage), Err(vec![Unfit::Insufficient("cpu")]));
        let small = pod("{containers: [{name: a, image: x}]}");
        assert_eq!(check(&small, &n, &usage), Ok(()), "a pod without requests needs only a pod slot");
        usage.add(&small);
        assert_eq!(check(&small, &n, &usage), Err(vec![Unfit::TooManyPods]));
        assert_eq!(check(&p, &n, &usage), Err(vec![Unfit::TooManyPods, Unfit::Insufficient("cpu")]));
        usage.remove(&p);
        assert_eq!(check(&p, &n, &usage), Ok(()), "a pod gone frees what it took");
        let empty = node("status: {conditions: [{type: Ready, status: 'True'}]}");
        assert_eq!(check(&small, &empty, &NodeUsage::default()), Err(vec![Unfit::TooManyPods]), "nothing reported");
    }

    #[test]
    fn each_filter_reports_its_reason_in_kubernetes_words() {
        let p = pod("{containers: [{name: a, image: x}]}");
        let usage = NodeUsage::default();
        let not_ready = node("status: {allocatable: {pods: '3'}, conditions: [{type: Ready, status: 'Unknown'}]}");
        assert_eq!(check(&p, &not_ready, &usage), Err(vec![Unfit::NotReady]));
        let mut cordoned = ready_node();
        cordoned.spec.unschedulable = Some(true);
        assert_eq!(check(&p, &cordoned, &usage), Err(vec![Unfit::Unschedulable]));
        let mut tainted = ready_node();
        let taint = |key: &str, effect| Taint { key: key.into(), value: Some("v".into()), effect, time_added: None };
        tainted.spec.taints =
            vec![taint("soft", Some(TaintEffect::PreferNoSchedule)), taint("k", Some(TaintEffect::NoSchedule))];
        let err = check(&p, &tainted, &usage).expect_err("untolerated");
        assert_eq!(err[0].to_string(), "node(s) had untolerated taint {k: v}");
        let tolerant = pod("{containers: [{name: a, image: x}], tolerations: [{key: k, operator: Equal, value: v}]}");
        assert_eq!(check(&tolerant, &tainted, &usage), Ok(()));
        let everything = pod("{containers: [{name: a, image: x}], tolerations: [{operator: Exists}]}");
        assert_eq!(check(&everything, &tainted, &usage), Ok(()));
        let other_effect =
            pod("{containers: [{name: a, image: x}], tolerations: [{key: k, operator: Exists, effect: NoExecute}]}");
        assert!(check(&other_effect, &tainted, &usage).is_err(), "a toleration of another effect does not count");
        let hdd = pod("{containers: [{name: a, image: x}], nodeSelector: {disk: hdd}}");
        let err = check(&hdd, &ready_node(), &usage).expect_err("no match");
        assert_eq!(err[0].to_string(), "node(s) didn't match Pod's node affinity/selector");
        let ssd = pod("{containers: [{name: a, image: x}], nodeSelector: {disk: ssd}}");
        assert_eq!(check(&ssd, &ready_node(), &usage), Ok(()));
        assert_eq!(Unfit::Insufficient("cpu").to_string(), "Insufficient cpu");
        assert_eq!(Unfit::TooManyPods.to_string(), "Too many pods");
    }

    #[test]
    fn host_ports_conflict_on_one_protocol_port_and_address() {
        let with_port = |port: i32, protocol: &str, ip: &str| {
            pod(&format!(
                "{{containers: [{{name: a, image: x, ports: [{{containerPort: 80, hostPort: {port}, protocol: {protocol}, hostIP: '{ip}'}}]}}]}}"
            ))
        };
        let n = ready_node();
        let mut usage = NodeUsage::default();
        usage.add(&with_port(8080, "TCP", "10.0.0.1"));
        assert_eq!(check(&with_port(8080, "TCP", "10.0.0.1"), &n, &usage), Err(vec![Unfit::Ports]));
        assert_eq!(check(&with_port(8080, "TCP", "0.0.0.0"), &n, &usage), Err(vec![Unfit::Ports]), "every address");
        assert_eq!(check(&with_port(8080, "TCP", "10.0.0.2"), &n, &usage), Ok(()));
        assert_eq!(check(&with_port(8080, "UDP", "10.0.0.1"), &n, &usage), Ok(()));
        assert_eq!(check(&with_port(8081, "TCP", "10.0.0.1"), &n, &usage), Ok(()));
    }

    #[test]
    fn no_execute_and_valueless_taints_a_cordon_toleration_and_capacity_as_allocatable() {
        let p = pod("{containers: [{name: a, image: x}]}");
        let usage = NodeUsage::default();
        let mut tainted = ready_node();
        tainted.spec.taints =
            vec![Taint { key: "gpu".into(), value: None, effect: Some(TaintEffect::NoExecute), time_added: None }];
        let err = check(&p, &tainted, &usage).expect_err("NoExecute repels too");
        assert_eq!(err[0].to_string(), "node(s) had untolerated taint {gpu: }");
        let tolerant = pod("{containers: [{name: a, image: x}], tolerations: [{key: gpu, operator: Exists}]}");
        assert_eq!(check(&tolerant, &tainted, &usage), Ok(()));

        let mut cordoned = ready_node();
        cordoned.spec.unschedulable = Some(true);
        let daemon = pod("{containers: [{name: a, image: x}], tolerations: [{key: node.kubernetes.io/unschedulable, \
             operator: Exists, effect: NoSchedule}]}");
        assert_eq!(check(&daemon, &cordoned, &usage), Ok(()), "a pod that tolerates the cordon");

        // Capacity counts only when no allocatable is reported at all.
        let capacity_only =
            node("status: {capacity: {cpu: '2', pods: '4'}, conditions: [{type: Ready, status: 'True'}]}");
        assert_eq!(Requests::allocatable(&capacity_only).pods, 4);
        let partial = node(
            "status: {capacity: {cpu: '2', pods: '4'}, allocatable: {cpu: '1'}, conditions: [{type: Ready, status: 'True'}]}",
        );
        assert_eq!(Requests::allocatable(&partial).pods, 0, "allocatable reported: capacity is not looked at");
        assert_eq!(Requests::allocatable(&partial).cpu, 1000);
    }

    #[test]
    fn a_port_without_protocol_is_tcp_and_stays_held_while_a_pod_holds_it() {
        let tcp = pod("{containers: [{name: a, image: x, ports: [{containerPort: 80, hostPort: 80}]}]}");
        let explicit =
            pod("{containers: [{name: a, image: x, ports: [{containerPort: 80, hostPort: 80, protocol: TCP}]}]}");
        let n = ready_node();
        let mut usage = NodeUsage::default();
        usage.add(&tcp);
        assert_eq!(check(&explicit, &n, &usage), Err(vec![Unfit::Ports]));
        usage.add(&tcp); // bound directly by nodeName: two pods share it
        usage.remove(&tcp);
        assert_eq!(check(&explicit, &n, &usage), Err(vec![Unfit::Ports]), "the other pod still holds it");
        usage.remove(&tcp);
        assert_eq!(check(&explicit, &n, &usage), Ok(()));
        assert_eq!(usage, NodeUsage::default(), "removing what was added leaves nothing");
    }
}
