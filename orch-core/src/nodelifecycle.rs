//! The node lifecycle controller (Kubernetes' node lifecycle controller and its taint-based
//! eviction), as a pure reconciler: node liveness without log writes.
//!
//! Node agents heartbeat to the leader ([`Message::Heartbeat`], over the API); the controller
//! keeps the last time it heard each node in memory and commits only transitions:
//!
//! - A node not heard from for the grace period (`node-monitor-grace-period`, 40 s by
//!   default) has its conditions set to `Unknown` (reason `NodeStatusUnknown`, or
//!   `NodeStatusNeverUpdated` for a node that never had a `Ready` condition). Each term starts
//!   with every node heard "now": after a leader change every node gets a full grace period
//!   before it can be declared lost (the new leader has not heard anyone yet).
//! - A node heard from again whose `Ready` is `Unknown` (or missing) becomes `Ready=True`,
//!   and the conditions that were made `Unknown` become `False` again. A `Ready=False` the
//!   agent wrote itself is left alone: a heartbeat says the agent is alive, not that its node is
//!   ready.
//! - The `NoExecute` taint follows the `Ready` condition: `node.kubernetes.io/not-ready` while
//!   it is `False`, `node.kubernetes.io/unreachable` while it is `Unknown`, neither while it
//!   is `True` (written once the condition is, with `timeAdded`).
//! - The pods of a node whose `Ready` is `Unknown` or `False` are marked `Ready=False`
//!   (nobody can say they serve: the endpoints controller takes them out of their Services).
//! - Taint-based eviction: a pod on a node with `NoExecute` taints it does not all tolerate is
//!   deleted at once; one that tolerates them is deleted when the shortest
//!   `tolerationSeconds` of the tolerations used has passed since the taint was added (never
//!   for tolerations without one). Pods get 300 s tolerations of both taints by default
//!   ([`crate::defaults::DEFAULT_TOLERATION_SECONDS`], rules 5), as Kubernetes' admission adds.
//!   Deleted pods are replaced by their controllers; they stay terminating until their node
//!   comes back or is deleted (pod GC, [`crate::gc`]).
//!
//! Every write is under the object's resourceVersion (a stale round's write is refused). A
//! round proposes at most [`Settings::writes_per_round`] commands and asks for another round
//! when it had more.

use std::collections::BTreeMap;

use crate::command::{Command, Preconditions};
use crate::core_v1::{Node, NodeCondition, Pod, PodCondition, PodPhase, Taint, TaintEffect};
use crate::events::{EventType, Record};
use crate::fit::tolerates;
use crate::meta::ConditionStatus;
use crate::object::{Kind, Object, ObjectKey};
use crate::reconcile::{Fate, Message, Reconciler};
use crate::state::State;
use crate::time::Time;

/// The taint of a node whose `Ready` condition is `False`.
pub const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// The taint of a node whose `Ready` condition is `Unknown`.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// Kubernetes' default `node-monitor-grace-period`: 40 s.
pub const DEFAULT_GRACE_MS: i64 = 40_000;

/// The controller's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How long a node may go unheard before its conditions become `Unknown`, in ms.
    pub grace_ms: i64,
    /// The most commands one round proposes.
    pub writes_per_round: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self { grace_ms: DEFAULT_GRACE_MS, writes_per_round: 1_024 }
    }
}

/// When a node was last heard from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    /// In ms; the first round that saw the node, before any heartbeat.
    at: i64,
    /// Whether a heartbeat came (this term).
    heard: bool,
}

/// What the pods of a node are checked against: its `NoExecute` taints, and why it is not
/// Ready (`NodeUnreachable`, `NodeNotReady`), if it is not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Watched {
    taints: Vec<Taint>,
    not_ready: Option<&'static str>,
    /// When this term first saw the taints (for a taint without `timeAdded`).
    since_ms: i64,
}

/// The node lifecycle controller of one term.
#[derive(Debug)]
pub struct NodeLifecycle {
    settings: Settings,
    /// By node name: when it was last heard from.
    seen: BTreeMap<String, Seen>,
    /// Heartbeats received since the last round, by node name: the time of the last.
    heard: BTreeMap<String, i64>,
    /// The nodes whose pods are watched (those with `NoExecute` taints or unreachable).
    watched: BTreeMap<String, Watched>,
    /// Pods that tolerate their node's taints for a while: when to evict them.
    evict_at: BTreeMap<ObjectKey, i64>,
    /// Every pod on a watched node must be looked at (the watched nodes changed, a round was
    /// cut short, a write's outcome is not known).
    rescan: bool,
    /// Work was left over.
    more: bool,
    /// The earliest time a node's grace runs out or a pod is due for eviction.
    wake_at: Option<i64>,
    /// The nodes must be looked at next round (a round was cut short, or none yet), and the
    /// earliest time a node's grace runs out, as the last look at them found.
    nodes_due: bool,
    node_wake: Option<i64>,
    /// Tests: look at every node every round (to check that skipping them changes nothing).
    #[cfg(test)]
    always_look: bool,
    /// Events for the owner ([`Reconciler::events`]).
    events: Vec<Record>,
    /// The nodes whose loss the last round proposed while they were Ready (their
    /// `NodeNotReady` event waits for the write to apply).
    was_ready: std::collections::BTreeSet<String>,
}

/// The node lifecycle controller's name in its `NodeNotReady` events, as Kubernetes'.
pub const COMPONENT: &str = "node-controller";
/// The name in its `TaintManagerEviction` events, as Kubernetes' taint eviction controller.
pub const EVICTION_COMPONENT: &str = "taint-eviction-controller";

/// The status of `node`'s `Ready` condition, if it has one.
fn ready_status(node: &Node) -> Option<ConditionStatus> {
    node.status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status)
}

/// The `NoExecute` taints `node` should carry for its `Ready` condition.
fn wanted_taint(node: &Node) -> Option<&'static str> {
    match ready_status(node) {
        Some(ConditionStatus::False) => Some(NOT_READY_TAINT),
        Some(ConditionStatus::Unknown) => Some(UNREACHABLE_TAINT),
        _ => None,
    }
}

/// Whether `taint` is one this controller manages.
fn managed(taint: &Taint) -> bool {
    taint.effect == Some(TaintEffect::NoExecute) && (taint.key == NOT_READY_TAINT || taint.key == UNREACHABLE_TAINT)
}

/// Sets `condition` to `status` with `reason` and `message`, noting the transition at `now`.
fn set_condition(condition: &mut NodeCondition, status: ConditionStatus, reason: &str, message: &str, now: Time) {
    if condition.status != status {
        condition.last_transition_time = Some(now);
    }
    condition.status = status;
    condition.reason = Some(reason.into());
    condition.message = Some(message.into());
}

/// The reason this controller gives a condition it made `Unknown`.
const STATUS_UNKNOWN: &str = "NodeStatusUnknown";
const NEVER_UPDATED: &str = "NodeStatusNeverUpdated";

/// The conditions a node agent reports, which only it can vouch for (Kubernetes' kubelet's
/// four): made `Unknown` when it is not heard from. Others (a user's, another controller's)
/// are left alone.
const AGENT_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

fn agent_condition(c: &NodeCondition) -> bool {
    AGENT_CONDITIONS.contains(&c.type_.as_str())
}

/// `node` with the agent's conditions `Unknown`: not heard from for the grace period.
fn lost(node: &Node, now: Time) -> Node {
    let mut n = node.clone();
    for c in n.status.conditions.iter_mut().filter(|c| agent_condition(c)) {
        set_condition(c, ConditionStatus::Unknown, STATUS_UNKNOWN, "Node agent stopped posting node status.", now);
    }
    if ready_status(&n).is_none() {
        let mut ready = NodeCondition { type_: "Ready".into(), ..NodeCondition::default() };
        set_condition(&mut ready, ConditionStatus::Unknown, NEVER_UPDATED, "Node agent never posted node status.", now);
        n.status.conditions.push(ready);
    }
    n
}

/// `node` heard from again: `Ready=True`, and the conditions made `Unknown` for want of news
/// `False` again.
fn back(node: &Node, now: Time) -> Node {
    let mut n = node.clone();
    for c in &mut n.status.conditions {
        if c.type_ == "Ready" {
            set_condition(c, ConditionStatus::True, "NodeAgentReady", "Node agent is posting ready status.", now);
        } else if agent_condition(c)
            && c.status == ConditionStatus::Unknown
            && c.reason.as_deref().is_some_and(|r| r == STATUS_UNKNOWN || r == NEVER_UPDATED)
        {
            set_condition(c, ConditionStatus::False, "NodeAgentHasNoPressure", "Node agent is posting status.", now);
        }
    }
    if ready_status(&n).is_none() {
        let mut ready = NodeCondition { type_: "Ready".into(), ..NodeCondition::default() };
        set_condition(&mut ready, ConditionStatus::True, "NodeAgentReady", "Node agent is posting ready status.", now);
        n.status.conditions.push(ready);
    }
    n
}

/// Whether `pod` still runs something to evict or mark: not being deleted, not finished.
fn live(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod.status.phase, Some(PodPhase::Succeeded | PodPhase::Failed))
}

/// When `pod` is to be evicted from a node with `NoExecute` taints `watched` (ms), if ever:
/// now (`Some(i64::MIN)`) when a taint is not tolerated. As Kubernetes' taint manager: the
/// first toleration that tolerates each taint is the one used, and the shortest
/// `tolerationSeconds` among those used counts (none: never); counted from when the pod met
/// the taints: the earliest `timeAdded` of the taints, or the pod's scheduling if later.
fn eviction_time(pod: &Pod, watched: &Watched) -> Option<i64> {
    let mut seconds: Option<i64> = None;
    let mut start = i64::MAX;
    for taint in &watched.taints {
        let value = taint.value.as_deref().unwrap_or("");
        let Some(used) = pod.spec.tolerations.iter().find(|t| tolerates(t, &taint.key, value, taint.effect)) else {
            return Some(i64::MIN);
        };
        start = start.min(taint.time_added.map_or(watched.since_ms, Time::as_millis));
        if let Some(limit) = used.toleration_seconds {
            let limit = limit.max(0);
            seconds = Some(seconds.map_or(limit, |s| s.min(limit)));
        }
    }
    let scheduled = pod
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled")
        .and_then(|c| c.last_transition_time)
        .map_or(i64::MIN, Time::as_millis);
    seconds.map(|s| start.max(scheduled).saturating_add(s.saturating_mul(1_000)))
}

impl NodeLifecycle {
    /// A controller with `settings`.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            seen: BTreeMap::new(),
            heard: BTreeMap::new(),
            watched: BTreeMap::new(),
            evict_at: BTreeMap::new(),
            rescan: true,
            more: false,
            wake_at: None,
            nodes_due: true,
            node_wake: None,
            #[cfg(test)]
            always_look: false,
            events: Vec::new(),
            was_ready: std::collections::BTreeSet::new(),
        }
    }

    /// The write, if any, that moves `node` towards what its liveness says.
    fn node_write(&mut self, node: &Node, now_ms: i64) -> Option<Command> {
        let name = node.metadata.name.to_string();
        let seen = *self.seen.entry(name).or_insert(Seen { at: now_ms, heard: false });
        let ready = ready_status(node);
        let expires = seen.at.saturating_add(self.settings.grace_ms);
        let now = Time::from_millis(now_ms);
        if now_ms > expires {
            if ready == Some(ConditionStatus::True) {
                self.was_ready.insert(node.metadata.name.to_string());
            }
            if ready != Some(ConditionStatus::Unknown) {
                return Some(Command::UpdateStatus(Object::from(lost(node, now))));
            }
        } else {
            if ready != Some(ConditionStatus::Unknown) {
                let at = expires.saturating_add(1);
                self.node_wake = Some(self.node_wake.map_or(at, |w| w.min(at)));
            }
            if seen.heard && matches!(ready, None | Some(ConditionStatus::Unknown)) {
                return Some(Command::UpdateStatus(Object::from(back(node, now))));
            }
        }
        // The condition is as it should be: the taint follows it.
        let wanted = wanted_taint(node);
        let has: Vec<&str> = node.spec.taints.iter().filter(|t| managed(t)).map(|t| t.key.as_str()).collect();
        if has.len() == usize::from(wanted.is_some()) && wanted.is_none_or(|w| has.contains(&w)) {
            return None;
        }
        let mut n = node.clone();
        n.spec.taints.retain(|t| !managed(t));
        if wanted.is_some() && n.spec.taints.len() >= crate::validation::LIST_ITEMS_MAX {
            // No room for the taint: the write would be refused round after round.
            return None;
        }
        if let Some(key) = wanted {
            n.spec.taints.push(Taint {
                key: key.into(),
                value: None,
                effect: Some(TaintEffect::NoExecute),
                time_added: Some(now),
            });
        }
        Some(Command::Update(Object::from(n)))
    }

    /// What to do now with the pod at `key`, on a watched node or not.
    fn pod_write(&mut self, state: &State, key: &ObjectKey, now_ms: i64) -> Option<Command> {
        let Some(Object::Pod(pod)) = state.get(key) else {
            self.evict_at.remove(key);
            return None;
        };
        let watched = pod.spec.node_name.as_deref().and_then(|n| self.watched.get(n));
        let Some(watched) = watched.filter(|_| live(pod)) else {
            self.evict_at.remove(key);
            return None;
        };
        let at = eviction_time(pod, watched);
        match at {
            Some(at) if at <= now_ms => {
                self.evict_at.remove(key);
                let message = format!("Marking for deletion Pod {}/{}", key.namespace, key.name);
                let object = Object::Pod(std::sync::Arc::clone(pod));
                self.events.push(Record::about(
                    EVICTION_COMPONENT,
                    &object,
                    EventType::Normal,
                    "TaintManagerEviction",
                    message,
                ));
                return Some(Command::Delete {
                    key: key.clone(),
                    grace_period_seconds: None,
                    // As the pod was judged: one changed since (a toleration added) is refused,
                    // and looked at again.
                    preconditions: Preconditions {
                        uid: pod.metadata.uid,
                        resource_version: pod.metadata.resource_version,
                    },
                    propagation_policy: None,
                });
            }
            Some(at) => {
                self.evict_at.insert(key.clone(), at);
            }
            None => {
                self.evict_at.remove(key);
            }
        }
        let serving = pod.status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True);
        if let Some(reason) = watched.not_ready.filter(|_| serving) {
            let mut p = (**pod).clone();
            let now = Time::from_millis(now_ms);
            for c in p.status.conditions.iter_mut().filter(|c| c.type_ == "Ready") {
                *c = PodCondition::new("Ready", ConditionStatus::False, now);
                c.set_detail(Some(reason.into()), Some("The pod's node is not Ready.".into()));
            }
            // Under its resourceVersion, as the state has it.
            return Some(Command::UpdateStatus(Object::from(p)));
        }
        None
    }

    /// The nodes whose pods are watched, as the state has them.
    fn watched_nodes(&self, state: &State, now_ms: i64) -> BTreeMap<String, Watched> {
        let mut out = BTreeMap::new();
        for obj in state.list(Kind::Node, None) {
            let Object::Node(node) = obj else { continue };
            let taints: Vec<Taint> =
                node.spec.taints.iter().filter(|t| t.effect == Some(TaintEffect::NoExecute)).cloned().collect();
            let not_ready = match ready_status(node) {
                Some(ConditionStatus::Unknown) => Some("NodeUnreachable"),
                Some(ConditionStatus::False) => Some("NodeNotReady"),
                _ => None,
            };
            if taints.is_empty() && not_ready.is_none() {
                continue;
            }
            let name = node.metadata.name.to_string();
            let since_ms = match self.watched.get(&name) {
                Some(w) if w.taints == taints => w.since_ms,
                _ => now_ms,
            };
            out.insert(name, Watched { taints, not_ready, since_ms });
        }
        out
    }
}

impl Reconciler for NodeLifecycle {
    const NAME: &'static str = "node-lifecycle";

    fn events(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.events)
    }

    fn reconcile(
        &mut self,
        state: &State,
        now_ms: i64,
        full: bool,
        changed: &[ObjectKey],
        outcomes: &[(Command, Fate)],
    ) -> Vec<Command> {
        let cap = self.settings.writes_per_round.max(1);
        // `NodeNotReady` once a node's loss applied, as Kubernetes' (only for a node that was
        // Ready: never on a refused write, which is proposed again).
        for (command, fate) in outcomes {
            if let (Command::UpdateStatus(Object::Node(lost)), Fate::Applied(Ok(_))) = (command, fate)
                && ready_status(lost) == Some(ConditionStatus::Unknown)
                && self.was_ready.remove(lost.metadata.name.as_str())
                && let Some(node) = state.get(&ObjectKey::new(Kind::Node, "", &lost.metadata.name))
            {
                let message = format!("Node {} status is now: NodeNotReady", lost.metadata.name);
                self.events.push(Record::about(COMPONENT, node, EventType::Normal, "NodeNotReady", message));
            }
        }
        self.was_ready.clear();
        // A write whose outcome is unknown, or refused, is looked at again from the state.
        if outcomes.iter().any(|(_, f)| !matches!(f, Fate::Applied(Ok(_)))) {
            self.rescan = true;
        }
        // The nodes are looked at (each an O(nodes) pass) only when one of them may need a
        // write: a node changed, a grace may have run out, a write of this controller's
        // applied or not, a heartbeat came from a node whose Ready is Unknown or missing (or
        // not heard yet this term).
        // Heartbeats of Ready nodes, the common case, only move their times on.
        let mut look = full
            || self.nodes_due
            || self.rescan
            || !outcomes.is_empty()
            || self.node_wake.is_some_and(|at| at <= now_ms)
            || changed.iter().any(|k| k.kind == Kind::Node);
        #[cfg(test)]
        {
            look |= self.always_look;
        }
        for (node, at) in std::mem::take(&mut self.heard) {
            let Some(Object::Node(n)) = state.get(&ObjectKey::new(Kind::Node, "", &node)) else { continue };
            let was = self.seen.insert(node, Seen { at, heard: true });
            // Only a node whose Ready is Unknown or missing is written on a heartbeat (an
            // agent's own False is its word).
            look |= !was.is_some_and(|s| s.heard) || matches!(ready_status(n), None | Some(ConditionStatus::Unknown));
        }
        let mut commands = Vec::new();
        let mut nodes_cut = false;
        if look {
            self.node_wake = None;
            let mut names = Vec::new();
            for obj in state.list(Kind::Node, None) {
                let Object::Node(node) = obj else { continue };
                names.push(node.metadata.name.to_string());
                if node.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if commands.len() >= cap {
                    // The other nodes next round, at once.
                    nodes_cut = true;
                    continue;
                }
                if let Some(command) = self.node_write(node, now_ms) {
                    commands.push(command);
                }
            }
            self.seen.retain(|name, _| names.binary_search(name).is_ok());
            let watched = self.watched_nodes(state, now_ms);
            if watched != self.watched || full {
                self.rescan = true;
            }
            self.watched = watched;
        }
        self.nodes_due = nodes_cut;
        self.wake_at = self.node_wake;
        let mut keys: Vec<ObjectKey> = Vec::new();
        if self.rescan && !self.watched.is_empty() {
            keys.extend(state.list(Kind::Pod, None).filter_map(|o| {
                let on = o.as_pod()?.spec.node_name.as_deref()?;
                self.watched.contains_key(on).then(|| o.key())
            }));
            // Timers of pods no longer on a watched node go below.
            keys.extend(self.evict_at.keys().cloned());
        } else if self.rescan {
            self.evict_at.clear();
        } else {
            keys.extend(changed.iter().filter(|k| k.kind == Kind::Pod).cloned());
            keys.extend(self.evict_at.iter().filter(|(_, at)| **at <= now_ms).map(|(k, _)| k.clone()));
        }
        keys.sort();
        keys.dedup();
        self.rescan = false;
        for key in &keys {
            if commands.len() >= cap {
                // The rest next round, from the state.
                self.rescan = true;
                break;
            }
            if let Some(command) = self.pod_write(state, key, now_ms) {
                commands.push(command);
            }
        }
        self.more = self.rescan || nodes_cut;
        if let Some(first) = self.evict_at.values().min() {
            self.wake_at = Some(self.wake_at.map_or(*first, |w| w.min(*first)));
        }
        commands
    }

    fn more(&self) -> bool {
        self.more
    }

    fn wake_at_ms(&self) -> Option<i64> {
        self.wake_at
    }

    fn receive(&mut self, now_ms: i64, message: Message) {
        match message {
            Message::Heartbeat { node } => {
                // One entry per name between rounds; the round keeps those of nodes that exist.
                self.heard.insert(node, now_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests;
