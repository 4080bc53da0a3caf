//! The scheduler loop: what each of its rounds proposes, a pure function of the state, the
//! changed keys, the outcomes of its earlier proposals and the time, stepped by its owner
//! (orch-raft's leader-only loop framework, which orchd runs; an embedding program or the
//! simulator can run the same).
//!
//! Like Kubernetes' scheduler it keeps a view of the nodes and what their pods take
//! ([`Snapshot`]) and a queue of the pods waiting for a node, both kept current from the keys
//! that changed (a node changed in place, a pod bound, finished or deleted) instead of a scan
//! of the state each round; a full round (the first of a term, a resync) builds both afresh.
//! Each round decides up to [`SCHEDULE_ROUND_MAX`] pods on the view, each decision assumed
//! before the next so a batch never over-commits a node, and proposes their `Bind`s together
//! (the framework groups them into proposals of many requests). The state machine checks
//! each `Bind` again when it applies it (rules 3), so a decision made on a stale view is
//! refused, and the pod is tried again after the others ([`BIND_REFUSALS_MAX`] times in a
//! row, then parked).
//!
//! A pod no node fits gets `PodScheduled=False`, reason `Unschedulable`, with the
//! [`FitError`] text (written only when it changes), and is parked: it is tried again when
//! capacity may have grown (any write of a node, a node that came, a bound pod finished or
//! gone) and on every full round, never in a busy loop. Pods tried before go after the pods
//! never tried, so pods that keep failing cannot starve new ones.
//!
//! Expectations: a `Bind` whose outcome is unknown (the proposal failed, or its entry may
//! yet commit) stays assumed on the view, and its pod is not decided again, until the state
//! shows the pod bound or [`Settings::expectation_timeout_ms`] passes; so a round that runs
//! before its earlier proposals applied does not bind a pod twice (and if it did, the state
//! machine refuses a second binding of a bound pod).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::command::{Command, Preconditions};
use crate::core_v1::{Pod, PodCondition};
use crate::events::{EventType, Record};
use crate::fit::occupies;
use crate::meta::ConditionStatus;
use crate::object::{Kind, Object, ObjectKey};
use crate::reconcile::{Fate, Reconciler};
use crate::scheduler::{self, FitError, Snapshot};
use crate::state::State;
use crate::text::Text;
use crate::time::Time;

/// The most pods one round decides; more wait for the next round, which
/// [`Scheduler::more`] asks for at once.
pub const SCHEDULE_ROUND_MAX: usize = 4096;

/// The scheduler loop's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How the node is chosen.
    pub scheduler: scheduler::Settings,
    /// How long a `Bind` of unknown outcome keeps its pod from being decided again.
    pub expectation_timeout_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { scheduler: scheduler::Settings::default(), expectation_timeout_ms: 30_000 }
    }
}

/// A pod's place in the queue: pods tried before after those never tried (each batch of
/// retries after the earlier ones, so that pods that keep failing cannot starve new ones),
/// then oldest first, then by namespace and name.
type QueueKey = (u64, Option<Time>, Text, Text);

/// How many times in a row a pod's bind may be refused before it is parked (the view
/// disagreed with the state twice: it waits for a change rather than spin).
pub const BIND_REFUSALS_MAX: u32 = 2;
/// A pod's namespace and name.
type PodName = (Text, Text);

/// The scheduler loop of one term.
#[derive(Debug, Default)]
pub struct Scheduler {
    settings: Settings,
    view: Option<Snapshot>,
    /// Pods waiting to be decided, oldest first.
    queue: BTreeSet<QueueKey>,
    /// Pods no node fitted, tried again when capacity may have grown.
    parked: BTreeSet<QueueKey>,
    /// Where each waiting or parked pod sits in the queue.
    places: BTreeMap<PodName, QueueKey>,
    /// `Bind`s of unknown outcome: the node assumed, and until when.
    expected: BTreeMap<PodName, (Text, i64)>,
    /// The binds of each pod refused in a row.
    refused: BTreeMap<PodName, u32>,
    /// The retry batch a pod put back in the queue goes to.
    retries: u64,
    /// Whether the last round proposed binds (their outcomes are for the next round).
    binding: bool,
    /// Events for the owner ([`Reconciler::events`]).
    events: Vec<Record>,
}

/// The scheduler's name in its events, as Kubernetes'.
pub const COMPONENT: &str = "default-scheduler";

fn pod_name(pod: &Pod) -> PodName {
    (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone())
}

/// Whether `pod` waits for the scheduler: not bound, not being deleted.
pub fn waits(pod: &Pod) -> bool {
    pod.spec.node_name.is_none() && pod.metadata.deletion_timestamp.is_none()
}

impl Scheduler {
    /// A scheduler loop with `settings`.
    pub fn new(settings: Settings) -> Self {
        Self { settings, ..Self::default() }
    }

    /// The pods parked because no node fitted them.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    fn untrack(&mut self, name: &PodName) {
        if let Some(place) = self.places.remove(name) {
            self.queue.remove(&place);
            self.parked.remove(&place);
        }
    }

    /// Moves the parked pods back to the queue, after the pods waiting there.
    fn unpark(&mut self) {
        self.retries += 1;
        for place in std::mem::take(&mut self.parked) {
            let again = (self.retries, place.1, place.2, place.3);
            self.places.insert((again.2.clone(), again.3.clone()), again.clone());
            self.queue.insert(again);
        }
    }

    /// Queues `pod` if it waits for a node (an expected bind holds it back).
    fn track(&mut self, pod: &Pod) {
        let name = pod_name(pod);
        self.untrack(&name);
        if waits(pod) && !self.expected.contains_key(&name) {
            let place = (0, pod.metadata.creation_timestamp, name.0.clone(), name.1.clone());
            self.queue.insert(place.clone());
            self.places.insert(name, place);
        }
    }

    /// Counts the pod at `key` on the view as the state has it. True when the view counted
    /// it before and does not now (its share of a node is free).
    fn recount(&mut self, view: &mut Snapshot, state: &State, key: &ObjectKey) -> bool {
        let was = view.counted_on(&key.namespace, &key.name).is_some();
        view.forget_key(&key.namespace, &key.name);
        let name = (key.namespace.clone(), key.name.clone());
        match state.get(key) {
            Some(Object::Pod(pod)) => {
                if let Some(node) = pod.spec.node_name.as_deref() {
                    self.expected.remove(&name);
                    self.refused.remove(&name);
                    if occupies(pod) {
                        view.assume(pod, node);
                    }
                } else if let Some((node, _)) = self.expected.get(&name) {
                    // A bind of unknown outcome: still assumed where it was sent.
                    view.assume(pod, node);
                }
                self.track(pod);
            }
            _ => {
                self.expected.remove(&name);
                self.refused.remove(&name);
                self.untrack(&name);
            }
        }
        was && view.counted_on(&key.namespace, &key.name).is_none()
    }

    /// The view of `state`, with the binds still expected assumed on it.
    fn fresh_view(&mut self, state: &State) -> Snapshot {
        let mut view = Snapshot::of_state(state);
        let expected: Vec<(PodName, Text)> = self.expected.iter().map(|(k, (n, _))| (k.clone(), n.clone())).collect();
        for ((namespace, name), node) in expected {
            match state.get(&ObjectKey::new(Kind::Pod, &namespace, &name)) {
                Some(Object::Pod(pod)) if waits(pod) => {
                    view.assume(pod, &node);
                }
                _ => {
                    self.expected.remove(&(namespace, name));
                }
            }
        }
        view
    }

    /// Decides the waiting pods, oldest first, up to [`SCHEDULE_ROUND_MAX`] of them.
    fn decide(&mut self, state: &State, now_ms: i64) -> Vec<Command> {
        let Some(view) = self.view.as_mut() else { return Vec::new() };
        let mut commands = Vec::new();
        let mut decided = 0;
        while decided < SCHEDULE_ROUND_MAX {
            let Some(place) = self.queue.pop_first() else { break };
            let name = (place.2.clone(), place.3.clone());
            let key = ObjectKey::new(Kind::Pod, &name.0, &name.1);
            let Some(Object::Pod(pod)) = state.get(&key) else {
                self.places.remove(&name);
                continue;
            };
            if !waits(pod) {
                self.places.remove(&name);
                continue;
            }
            decided += 1;
            match view.schedule(pod, &self.settings.scheduler) {
                Ok(node) => {
                    let node = node.to_owned();
                    view.assume(pod, &node);
                    self.places.remove(&name);
                    self.binding = true;
                    commands.push(Command::Bind {
                        namespace: name.0.to_string(),
                        name: name.1.to_string(),
                        node,
                        preconditions: Preconditions { uid: pod.metadata.uid, resource_version: None },
                    });
                }
                Err(error) => {
                    self.parked.insert(place);
                    if let Some(update) = unschedulable(pod, &error, Time::from_millis(now_ms)) {
                        // With the status write, so a pod retried for the same reasons adds
                        // no event either.
                        let object = Object::from(update);
                        let message = error.to_string();
                        self.events.push(Record::about(
                            COMPONENT,
                            &object,
                            EventType::Warning,
                            "FailedScheduling",
                            message,
                        ));
                        commands.push(Command::UpdateStatus(object));
                    }
                }
            }
        }
        commands
    }
}

impl Reconciler for Scheduler {
    const NAME: &'static str = "scheduler";
    // Pods to place and what holds capacity; nodes for where.
    const KINDS: Option<&'static [Kind]> = Some(&[Kind::Pod, Kind::Node]);

    fn reconcile(
        &mut self,
        state: &State,
        now_ms: i64,
        full: bool,
        changed: &[ObjectKey],
        outcomes: &[(Command, Fate)],
    ) -> Vec<Command> {
        // Expectations: binds of unknown outcome hold their pod; the others are settled.
        let mut refused = Vec::new();
        for (command, outcome) in outcomes {
            let Command::Bind { namespace, name, node, .. } = command else { continue };
            let pod: PodName = (namespace.clone().into(), name.clone().into());
            match outcome {
                Fate::Unknown => {
                    let until = now_ms.saturating_add(self.settings.expectation_timeout_ms);
                    self.expected.insert(pod, (node.clone().into(), until));
                }
                Fate::Applied(Err(_)) => refused.push(pod),
                Fate::Applied(Ok(_)) => {
                    if let Some(bound) = state.get(&ObjectKey::new(Kind::Pod, namespace, name)) {
                        let message = format!("Successfully assigned {namespace}/{name} to {node}");
                        self.events.push(Record::about(COMPONENT, bound, EventType::Normal, "Scheduled", message));
                    }
                }
                Fate::NotProposed => {}
            }
        }
        self.binding = false;
        let expired: Vec<PodName> =
            self.expected.iter().filter(|(_, (_, until))| *until <= now_ms).map(|(k, _)| k.clone()).collect();
        let mut touched: Vec<ObjectKey> = expired.iter().map(|(ns, n)| ObjectKey::new(Kind::Pod, ns, n)).collect();
        for name in &expired {
            self.expected.remove(name);
        }
        match self.view.take() {
            Some(mut view) if !full => {
                touched.extend(changed.iter().cloned());
                // The pods of the last round's binds, whatever became of them.
                touched.extend(outcomes.iter().filter_map(|(c, _)| match c {
                    Command::Bind { namespace, name, .. } => Some(ObjectKey::new(Kind::Pod, namespace, name)),
                    _ => None,
                }));
                let (mut rebuild, mut grew) = (false, false);
                for key in &touched {
                    match key.kind {
                        Kind::Node => {
                            grew = true;
                            match state.get(key) {
                                Some(Object::Node(n)) if n.metadata.deletion_timestamp.is_none() => {
                                    rebuild |= !view.replace_node(Arc::clone(n));
                                }
                                _ => rebuild |= view.usage(&key.name).is_some(),
                            }
                        }
                        Kind::Pod => grew |= self.recount(&mut view, state, key),
                        _ => {}
                    }
                }
                if rebuild {
                    view = self.fresh_view(state);
                }
                if grew {
                    // Capacity may have grown: the parked pods are tried again.
                    self.unpark();
                }
                self.view = Some(view);
                // A pod whose bind was refused (the view was stale) is tried again after the
                // others, on the view as the state has it now; refused again, it is parked.
                for pod in refused {
                    let Some(place) = self.places.get(&pod).cloned() else { continue };
                    if !self.queue.remove(&place) {
                        continue;
                    }
                    let count = self.refused.entry(pod.clone()).or_default();
                    *count += 1;
                    if *count >= BIND_REFUSALS_MAX {
                        self.parked.insert(place);
                    } else {
                        let again = (self.retries + 1, place.1, place.2, place.3);
                        self.places.insert(pod, again.clone());
                        self.queue.insert(again);
                    }
                }
            }
            _ => {
                let view = self.fresh_view(state);
                self.queue.clear();
                self.parked.clear();
                self.places.clear();
                self.refused.clear();
                for obj in state.list(Kind::Pod, None) {
                    if let Object::Pod(pod) = obj {
                        self.track(pod);
                    }
                }
                self.view = Some(view);
            }
        }
        self.decide(state, now_ms)
    }

    fn events(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.events)
    }

    /// Pods wait that the last round did not get to, or binds await their outcomes (a
    /// refused bind writes nothing that would wake the loop).
    fn more(&self) -> bool {
        !self.queue.is_empty() || self.binding
    }

    /// When the first expected bind times out (its pod is decided again then, though nothing
    /// changed).
    fn wake_at_ms(&self) -> Option<i64> {
        self.expected.values().map(|(_, until)| *until).min()
    }
}

/// The reason of a `PodScheduled=False` condition.
pub const UNSCHEDULABLE: &str = "Unschedulable";

/// `pod` with `PodScheduled=False`, reason [`UNSCHEDULABLE`] and `error`'s text, or `None`
/// when it says so already. Guarded by the pod's revision: a pod changed since is decided
/// again rather than overwritten.
fn unschedulable(pod: &Pod, error: &FitError, now: Time) -> Option<Pod> {
    let message = error.to_string();
    let current = pod.status.conditions.iter().find(|c| c.type_ == "PodScheduled");
    if current.is_some_and(|c| {
        c.status == ConditionStatus::False && c.reason() == Some(UNSCHEDULABLE) && c.message() == Some(&message)
    }) {
        return None;
    }
    let since = match current {
        Some(c) if c.status == ConditionStatus::False => c.last_transition_time.unwrap_or(now),
        _ => now,
    };
    let mut condition = PodCondition::new("PodScheduled", ConditionStatus::False, since);
    condition.set_detail(Some(UNSCHEDULABLE.into()), Some(message.into()));
    let mut updated = pod.clone();
    updated.status.conditions.retain(|c| c.type_ != "PodScheduled");
    updated.status.conditions.push(condition);
    Some(updated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ApplyError;
    use crate::manifest::parse_manifests;
    use crate::reconcile::world::World;

    fn node(name: &str, cpu: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus: {{capacity: {{cpu: '{cpu}', pods: '10'}}, \
             conditions: [{{type: Ready, status: 'True'}}]}}\n---\n"
        )
    }

    fn pod(name: &str, cpu: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: x, \
             resources: {{requests: {{cpu: '{cpu}'}}}}}}]}}\n---\n"
        )
    }

    fn binds(commands: &[Command]) -> Vec<(String, String)> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Bind { name, node, .. } => Some((name.clone(), node.clone())),
                _ => None,
            })
            .collect()
    }

    fn condition(pod: &Pod) -> Option<(ConditionStatus, Option<String>, Option<String>)> {
        let c = pod.status.conditions.iter().find(|c| c.type_ == "PodScheduled")?;
        Some((c.status, c.reason().map(str::to_owned), c.message().map(str::to_owned)))
    }

    /// Pending pods are bound in one batch within the nodes' room; the one that does not fit
    /// gets `PodScheduled=False` with the reasons once, is not tried while nothing changes,
    /// and is bound when a node comes.
    #[test]
    fn pods_are_bound_and_an_unschedulable_one_waits_for_capacity() {
        let mut w =
            World::with(&format!("{}{}{}{}", node("a", "1"), pod("p1", "600m"), pod("p2", "600m"), pod("p3", "0")));
        let mut s = Scheduler::new(Settings::default());
        let first = s.reconcile(&w.state, w.now_ms, true, &[], &[]);
        let placed = binds(&first);
        assert_eq!(placed.len(), 2, "{first:?}");
        assert!(placed.iter().all(|(_, n)| n == "a"));
        assert_eq!(first.len(), 3, "two binds and one status: {first:?}");
        let (outcomes, changed) = w.run(first);
        assert!(outcomes.iter().all(|(_, o)| matches!(o, Fate::Applied(Ok(_)))), "{outcomes:?}");
        let waiting = ["p1", "p2"].into_iter().find(|p| w.pod(p).spec.node_name.is_none()).expect("one waits");
        assert_eq!(
            condition(&w.pod(waiting)),
            Some((
                ConditionStatus::False,
                Some("Unschedulable".into()),
                Some("0/1 nodes are available: 1 Insufficient cpu.".into())
            ))
        );
        assert_eq!(s.parked(), 1);
        // Events: FailedScheduling with the status write; Scheduled once a bind applied.
        let failed: Vec<_> = s.events().into_iter().map(|e| (e.reason, e.name, e.message)).collect();
        assert_eq!(
            failed,
            [("FailedScheduling", waiting.to_owned(), "0/1 nodes are available: 1 Insufficient cpu.".to_owned())]
        );
        // Its own writes change nothing it decides: no command, not a busy loop.
        assert_eq!(s.reconcile(&w.state, w.now_ms, false, &changed, &outcomes), Vec::new());
        let mut scheduled: Vec<_> = s.events().into_iter().map(|e| (e.reason, e.name, e.message)).collect();
        scheduled.sort();
        let bound = if waiting == "p1" { "p2" } else { "p1" };
        assert_eq!(
            scheduled,
            [
                ("Scheduled", bound.to_owned(), format!("Successfully assigned default/{bound} to a")),
                ("Scheduled", "p3".to_owned(), "Successfully assigned default/p3 to a".to_owned()),
            ]
        );
        let unrelated = w.create("apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n");
        assert_eq!(s.reconcile(&w.state, w.now_ms, false, &unrelated, &[]), Vec::new());
        // A node comes: the parked pod is bound to it.
        let added = w.create(&node("b", "2"));
        let next = s.reconcile(&w.state, w.now_ms, false, &added, &[]);
        assert_eq!(binds(&next), vec![(waiting.to_owned(), "b".to_owned())]);
        assert!(s.more(), "a round that bound pods asks for the next, which learns the outcomes");
        let (outcomes, changed) = w.run(next);
        assert!(outcomes.iter().all(|(_, o)| matches!(o, Fate::Applied(Ok(_)))));
        assert_eq!(s.reconcile(&w.state, w.now_ms, false, &changed, &outcomes), Vec::new());
        assert!(!s.more());
    }

    /// A decision made on a stale view is refused when applied, and the pod is decided again
    /// on the state as it is.
    #[test]
    fn a_refused_bind_is_decided_again() {
        let mut w = World::with(&format!("{}{}{}", node("a", "1"), node("b", "1"), pod("p", "600m")));
        let mut s = Scheduler::new(Settings::default());
        let first = s.reconcile(&w.state, w.now_ms, true, &[], &[]);
        let [(_, chosen)] = binds(&first)[..].to_vec().try_into().expect("one bind");
        // Meanwhile a pod bound by hand takes the chosen node's room.
        let mut manual = w.create(&pod("hog", "600m"));
        let hand = Command::Bind {
            namespace: "default".into(),
            name: "hog".into(),
            node: chosen.clone(),
            preconditions: Preconditions::default(),
        };
        let (_, changed) = w.run(vec![hand]);
        manual.extend(changed);
        let (outcomes, changed) = w.run(first);
        assert!(
            matches!(&outcomes[0].1, Fate::Applied(Err(ApplyError::Conflict { reason, .. })) if reason.ends_with("Insufficient cpu")),
            "{outcomes:?}"
        );
        manual.extend(changed);
        let again = s.reconcile(&w.state, w.now_ms, false, &manual, &outcomes);
        let other = if chosen == "a" { "b" } else { "a" };
        assert_eq!(binds(&again), vec![("p".to_owned(), other.to_owned())]);
    }

    /// A bind whose outcome is unknown holds its pod: a round that runs before it is applied
    /// does not bind the pod again, and its room stays taken; once the expectation times
    /// out without the pod bound, the pod is decided again.
    #[test]
    fn a_bind_of_unknown_outcome_is_not_made_twice() {
        let mut w = World::with(&format!("{}{}{}", node("a", "1"), pod("p", "600m"), pod("q", "600m")));
        let settings = Settings { expectation_timeout_ms: 10_000, ..Settings::default() };
        let mut s = Scheduler::new(settings);
        let first = s.reconcile(&w.state, w.now_ms, true, &[], &[]);
        let placed = binds(&first);
        assert_eq!(placed.len(), 1);
        let unknown: Vec<(Command, Fate)> = first.iter().map(|c| (c.clone(), Fate::Unknown)).collect();
        // Not applied (lost or still on its way): the next rounds, even a full one, do not
        // bind it again nor give its room to q.
        for full in [false, true] {
            let again = s.reconcile(&w.state, w.now_ms, full, &[], if full { &[] } else { &unknown });
            assert!(binds(&again).is_empty(), "full {full}: {again:?}");
        }
        assert!(!s.more());
        assert_eq!(s.wake_at_ms(), Some(w.now_ms + 10_000), "woken when the expectation times out");
        w.now_ms += 10_000;
        let later = s.reconcile(&w.state, w.now_ms, false, &[], &[]);
        assert_eq!(binds(&later).len(), 1, "after the timeout the pod is decided again: {later:?}");
    }

    /// Pods that wait beyond one round's share are decided over several rounds, and
    /// [`Scheduler::more`] says so.
    #[test]
    fn a_large_backlog_takes_several_rounds() {
        let mut yaml = node("a", "1000");
        yaml.push_str(&node("b", "1000"));
        let mut w = World::with(&yaml.replace("pods: '10'", "pods: '5000'"));
        let pods: String = (0..SCHEDULE_ROUND_MAX + 10).map(|i| pod(&format!("p{i:05}"), "0")).collect();
        for chunk in pods.split_inclusive("---\n").collect::<Vec<_>>().chunks(1000) {
            w.create(&chunk.concat());
        }
        let mut s = Scheduler::new(Settings::default());
        let first = s.reconcile(&w.state, w.now_ms, true, &[], &[]);
        assert_eq!(first.len(), SCHEDULE_ROUND_MAX);
        assert!(s.more());
        let (outcomes, changed) = w.run(first);
        let second = s.reconcile(&w.state, w.now_ms, false, &changed, &outcomes);
        assert_eq!(binds(&second).len(), 10);
        let (outcomes, changed) = w.run(second);
        assert_eq!(s.reconcile(&w.state, w.now_ms, false, &changed, &outcomes), Vec::new());
        assert!(!s.more());
    }

    /// The view and the queue kept from the changed keys agree with a view and a queue built
    /// afresh from the state, with the binds just decided (`commands`) assumed.
    fn assert_fresh(s: &Scheduler, state: &State, commands: &[Command]) {
        let mut fresh = Snapshot::of_state(state);
        let mut deciding = BTreeSet::new();
        for (name, node) in binds(commands) {
            let key = ObjectKey::new(Kind::Pod, "default", &name);
            let Some(Object::Pod(p)) = state.get(&key) else { panic!("no pod {name}") };
            assert!(fresh.assume(p, &node));
            deciding.insert((Text::from("default"), Text::from(name.as_str())));
        }
        let view = s.view.as_ref().expect("a view");
        assert_eq!(view.len(), fresh.len(), "the same nodes");
        for obj in state.list(Kind::Node, None) {
            let name = &obj.meta().name;
            assert_eq!(view.usage(name), fresh.usage(name), "usage of {name}");
        }
        let mut waiting = BTreeSet::new();
        for obj in state.list(Kind::Pod, None) {
            let Object::Pod(p) = obj else { continue };
            let (ns, name) = (p.metadata.namespace_str(), p.metadata.name.as_str());
            assert_eq!(view.counted_on(ns, name), fresh.counted_on(ns, name), "pod {name}");
            if waits(p) && !deciding.contains(&pod_name(p)) {
                waiting.insert(pod_name(p));
            }
        }
        let tracked: BTreeSet<PodName> = s.places.keys().cloned().collect();
        assert_eq!(tracked, waiting, "the queue and the parked pods are the waiting pods");
        assert_eq!(s.places.len(), s.queue.len() + s.parked.len());
    }

    /// Every kind of change keeps the view equal to a fresh one: a node cordoned, tainted,
    /// resized in place, moved to a zone, deleted; a pod finished, deleted, recreated under
    /// its name with other requests; and a parked pod is tried again when a bound pod goes.
    #[test]
    fn the_view_kept_from_changes_equals_a_fresh_one() {
        let mut w = World::with(&format!(
            "{}{}{}{}{}",
            node("a", "1"),
            node("b", "1"),
            pod("p1", "600m"),
            pod("p2", "600m"),
            pod("p3", "600m")
        ));
        let mut s = Scheduler::new(Settings::default());
        let mut commands = s.reconcile(&w.state, w.now_ms, true, &[], &[]);
        assert_fresh(&s, &w.state, &commands);
        assert_eq!(binds(&commands).len(), 2, "p3 fits nowhere");
        let step = |w: &mut World, s: &mut Scheduler, commands: Vec<Command>, extra: Vec<ObjectKey>| {
            let (outcomes, mut changed) = w.run(commands);
            changed.extend(extra);
            let next = s.reconcile(&w.state, w.now_ms, false, &changed, &outcomes);
            assert_fresh(s, &w.state, &next);
            next
        };
        commands = step(&mut w, &mut s, commands, Vec::new());
        let node_obj = |w: &World, name: &str| match w.state.get(&ObjectKey::new(Kind::Node, "", name)) {
            Some(Object::Node(n)) => (**n).clone(),
            other => panic!("{other:?}"),
        };
        // In place: a cordon and a taint (update), a bigger capacity (status).
        let mut b = node_obj(&w, "b");
        b.spec.unschedulable = Some(true);
        commands.push(Command::Update(Object::from(b)));
        commands = step(&mut w, &mut s, commands, Vec::new());
        let mut a = node_obj(&w, "a");
        a.status.capacity.cpu = Some("3".parse().expect("a quantity"));
        a.status.allocatable.cpu = Some("3".parse().expect("a quantity"));
        commands.push(Command::UpdateStatus(Object::from(a)));
        commands = step(&mut w, &mut s, commands, Vec::new());
        assert_eq!(binds(&commands), vec![("p3".to_owned(), "a".to_owned())], "a grew: the parked pod goes there");
        commands = step(&mut w, &mut s, commands, Vec::new());
        // A zone label: the view is rebuilt.
        let mut a = node_obj(&w, "a");
        a.metadata.labels.insert(scheduler::ZONE_LABEL, "z1");
        commands.push(Command::Update(Object::from(a)));
        commands = step(&mut w, &mut s, commands, Vec::new());
        // p1 finishes, p2 is deleted and made again with other requests, node b goes.
        let mut p1 = w.pod("p1");
        p1.status.phase = Some(crate::core_v1::PodPhase::Succeeded);
        commands.push(Command::UpdateStatus(Object::from(p1)));
        commands = step(&mut w, &mut s, commands, Vec::new());
        let force = |name: &str| Command::Delete {
            key: ObjectKey::new(Kind::Pod, "default", name),
            grace_period_seconds: Some(0),
            preconditions: Preconditions::default(),
            propagation_policy: None,
        };
        commands.push(force("p2"));
        commands = step(&mut w, &mut s, commands, Vec::new());
        commands.extend(parse_manifests(&pod("p2", "2500m")).expect("valid").into_iter().map(Command::Create));
        commands = step(&mut w, &mut s, commands, Vec::new());
        commands.push(Command::Delete {
            key: ObjectKey::new(Kind::Node, "", "b"),
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
            propagation_policy: None,
        });
        commands = step(&mut w, &mut s, commands, Vec::new());
        // p2 (2.5 cpu) waits, parked; p3 is deleted: its share frees, p2 is tried and fits.
        assert!(binds(&commands).is_empty(), "{commands:?}");
        assert_eq!(s.parked(), 1);
        commands.push(force("p3"));
        commands = step(&mut w, &mut s, commands, Vec::new());
        assert_eq!(binds(&commands), vec![("p2".to_owned(), "a".to_owned())]);
        step(&mut w, &mut s, commands, Vec::new());
    }

    /// A pod whose bind is refused again and again is parked after [`BIND_REFUSALS_MAX`]
    /// refusals rather than decided in a tight loop.
    #[test]
    fn a_pod_refused_again_and_again_is_parked() {
        let mut w = World::with(&format!("{}{}", node("a", "1"), pod("p", "600m")));
        let mut s = Scheduler::new(Settings::default());
        let mut commands = s.reconcile(&w.state, w.now_ms, true, &[], &[]);
        for attempt in 1..=BIND_REFUSALS_MAX {
            assert_eq!(binds(&commands).len(), 1, "attempt {attempt}");
            // The node is not Ready when each bind applies: refused, though the view says it fits.
            let refused: Vec<(Command, Fate)> = commands
                .iter()
                .map(|c| {
                    let reason = "pod p does not fit node \"a\": node(s) were not ready".to_owned();
                    let key = ObjectKey::new(Kind::Pod, "default", "p");
                    (c.clone(), Fate::Applied(Err(ApplyError::Conflict { key, reason })))
                })
                .collect();
            commands = s.reconcile(&w.state, w.now_ms, false, &[], &refused);
        }
        assert!(commands.is_empty(), "{commands:?}");
        assert_eq!(s.parked(), 1);
        assert!(!s.more());
        // A full round tries it again.
        w.now_ms += 1;
        assert_eq!(binds(&s.reconcile(&w.state, w.now_ms, true, &[], &[])).len(), 1);
    }
}
