//! The ReplicaSet controller: what each of its rounds proposes, a pure function of the state,
//! the changed keys, the outcomes of its earlier proposals and the time, stepped by its owner
//! (orch-raft's leader-only loop framework), as Kubernetes' replica set controller.
//!
//! For each ReplicaSet it syncs, it counts the active pods it controls (a controller
//! reference to its uid, from the owner index apply maintains; active: not being deleted,
//! not Succeeded or Failed), creates the missing ones from its template (`generateName`
//! `<name>-`, so the state machine derives the 5-character suffix deterministically, with an
//! owner reference to the set) or deletes the surplus, unscheduled, then pending, not-ready,
//! ready for less time, restarted more and newest pods first; at most [`Settings::burst`] of
//! either per set and round. Then it writes the status (replicas, fully labeled, ready,
//! available after `minReadySeconds`, observed generation) when it changed.
//!
//! Which sets a round syncs: every one on a full round; else the sets that changed and the
//! owners of the pods that changed (as they are now and as they were when last seen).
//!
//! Expectations, as Kubernetes': every create and delete a set issues is expected; while a set
//! has expectations unmet it is not resized again, so a round that runs before its earlier
//! proposals applied (some applied, some of unknown outcome: a round's commands may span
//! several proposals) never creates a duplicate pod. A create is met when a pod new to the
//! set is observed (on an incremental round from the changed keys, on a full round from
//! every pod), a delete when the pod is gone or terminating; one that failed or was never
//! proposed is met at once; one of unknown outcome waits for its observation or for
//! [`Settings::expectation_timeout_ms`], after which the set is synced again.

use std::collections::{BTreeMap, BTreeSet};

use crate::adopt::{Orphans, adopt, release, would_adopt};
use crate::apps_v1::{ReplicaSet, ReplicaSetStatus};
use crate::command::{Command, Preconditions};
use crate::core_v1::{Pod, PodPhase};
use crate::events::{EventType, Record};
use crate::ids::Uid;
use crate::meta::{ConditionStatus, OwnerReference};
use crate::object::{Kind, Object, ObjectKey};
use crate::reconcile::{Fate, Reconciler};
use crate::selector::Selector;
use crate::state::State;

/// Kubernetes' default burst of creates or deletes per set and sync.
pub const BURST_DEFAULT: usize = 500;

/// The longest name prefix of a generated pod name (63 characters less the 5-character
/// suffix), as Kubernetes truncates it.
pub const GENERATED_PREFIX_MAX: usize = 58;

/// The ReplicaSet controller's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The most pods one set creates or deletes in a round.
    pub burst: usize,
    /// How long an unmet expectation holds a set back (Kubernetes: 5 minutes).
    pub expectation_timeout_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { burst: BURST_DEFAULT, expectation_timeout_ms: 300_000 }
    }
}

/// A set's proposals of unknown outcome.
#[derive(Clone, Debug, Default)]
struct Expectation {
    creates: usize,
    deletes: BTreeSet<ObjectKey>,
    until_ms: i64,
}

/// How one of a set's active pods counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Class {
    /// Its labels match the set's selector (else it is released).
    matches: bool,
    /// Its labels include the set's template's.
    fully_labeled: bool,
    /// When it became Ready, if it is ([`ready_since`]).
    ready_since: Option<Option<i64>>,
}

/// Counts over a group of a set's active pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    pods: usize,
    fully_labeled: usize,
    ready: usize,
}

impl Counts {
    fn add(&mut self, c: Class, sign: bool) {
        let step = |n: &mut usize, yes: bool| {
            if yes {
                *n = if sign { *n + 1 } else { n.saturating_sub(1) };
            }
        };
        step(&mut self.pods, true);
        step(&mut self.fully_labeled, c.fully_labeled);
        step(&mut self.ready, c.ready_since.is_some());
    }
}

/// A set's active pods (controlled by it, not being deleted, not finished), classified
/// against its selector and template labels as they were when built.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Members {
    selector: crate::meta::LabelSelector,
    template_labels: crate::strmap::StrMap,
    pods: BTreeMap<ObjectKey, Class>,
    /// Every active pod (what a set being deleted counts), and those matching the selector.
    all: Counts,
    matching: Counts,
}

impl Members {
    /// `rs`'s active pods in `state`, from the owner index.
    fn of(state: &State, rs: &ReplicaSet) -> Self {
        let uid = rs.metadata.uid.unwrap_or_default();
        let mut members = Self {
            selector: rs.spec.selector.clone(),
            template_labels: rs.spec.template.metadata.labels.clone(),
            pods: BTreeMap::new(),
            all: Counts::default(),
            matching: Counts::default(),
        };
        for key in state.owned_by(uid).filter(|k| k.kind == Kind::Pod) {
            if let Some(Object::Pod(p)) = state.get(key) {
                members.put(key, Some(p), uid);
            }
        }
        members
    }

    /// Whether these were classified for `rs` as it is.
    fn fit(&self, rs: &ReplicaSet) -> bool {
        self.selector == rs.spec.selector && self.template_labels == rs.spec.template.metadata.labels
    }

    /// Notes the pod at `key` as it is now (`None`: gone), for the set `uid`.
    fn put(&mut self, key: &ObjectKey, pod: Option<&Pod>, uid: Uid) {
        let class = pod.filter(|p| set_uid(p) == Some(uid) && active(p)).map(|p| Class {
            matches: self.selector.matches(&p.metadata.labels),
            fully_labeled: p.metadata.labels.contains_all(&self.template_labels),
            ready_since: ready_since(p),
        });
        let old = match class {
            Some(c) => self.pods.insert(key.clone(), c),
            None => self.pods.remove(key),
        };
        for (c, sign) in [(old, false), (class, true)] {
            if let Some(c) = c {
                self.all.add(c, sign);
                if c.matches {
                    self.matching.add(c, sign);
                }
            }
        }
    }

    /// The pods a set counts (every active one when it is being deleted, else those that
    /// match), with their classes.
    fn counted(&self, deleting: bool) -> impl Iterator<Item = (&ObjectKey, &Class)> {
        self.pods.iter().filter(move |(_, c)| deleting || c.matches)
    }
}

/// The ReplicaSet controller of one term.
#[derive(Debug, Default)]
pub struct ReplicaSets {
    settings: Settings,
    /// The set that controls each pod seen, by pod key.
    owner_of: BTreeMap<ObjectKey, Uid>,
    /// Each set's key, by uid.
    set_of: BTreeMap<Uid, ObjectKey>,
    /// Each set's active pods, classified and counted (built at a set's first sync, kept from
    /// the changed keys after), so that a sync does not look every pod of a large set up.
    members: BTreeMap<Uid, Members>,
    expected: BTreeMap<Uid, Expectation>,
    /// When a set's Ready pods become available (`minReadySeconds`), by uid.
    timers: BTreeMap<Uid, i64>,
    /// The pods without a controller, which a set whose selector matches adopts.
    orphans: Orphans,
    /// Events for the owner ([`Reconciler::events`]).
    events: Vec<Record>,
}

/// The uid of the ReplicaSet that controls `pod`, if one does.
fn set_uid(pod: &Pod) -> Option<Uid> {
    pod.metadata.controller_ref().filter(|r| r.kind.as_str() == "ReplicaSet").map(|r| r.uid)
}

/// Whether `pod` counts towards its set: not being deleted, not finished.
pub fn active(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod.status.phase, Some(PodPhase::Succeeded | PodPhase::Failed))
}

/// When `pod` became Ready, if it is.
fn ready_since(pod: &Pod) -> Option<Option<i64>> {
    pod.status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
        .map(|c| c.last_transition_time.map(crate::time::Time::as_millis))
}

/// Whether `pod` has been Ready for `min_ready_seconds` at `now_ms`.
pub fn available(pod: &Pod, min_ready_seconds: i32, now_ms: i64) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since.saturating_add(i64::from(min_ready_seconds) * 1000) <= now_ms,
    }
}

/// The order in which surplus pods go, first first (Kubernetes' `ActivePods` ranking).
fn deletion_rank(pod: &Pod) -> impl Ord {
    let assigned = pod.spec.node_name.is_some();
    let phase = match pod.status.phase {
        Some(PodPhase::Pending) | None => 0,
        Some(PodPhase::Unknown) => 1,
        Some(PodPhase::Running) => 2,
        Some(_) => 3,
    };
    let ready = ready_since(pod);
    // Ready for less time first: a later transition first (an unknown time counts as now).
    let since = ready.map(|t| std::cmp::Reverse(t.unwrap_or(i64::MAX)));
    // The most restarted container's count, as Kubernetes.
    let restarts = pod.status.container_statuses.iter().map(|c| c.restart_count).max().unwrap_or(0);
    let created = pod.metadata.creation_timestamp.map(|t| t.as_millis());
    (
        assigned,
        phase,
        ready.is_some(),
        since,
        std::cmp::Reverse(restarts),
        std::cmp::Reverse(created),
        pod.metadata.name.clone(),
    )
}

/// A pod for `rs` from its template.
pub fn pod_for(rs: &ReplicaSet) -> Pod {
    let mut pod = Pod::default();
    let template = &rs.spec.template;
    pod.metadata.labels = template.metadata.labels.clone();
    pod.metadata.annotations = template.metadata.annotations.clone();
    pod.metadata.namespace = rs.metadata.namespace.clone();
    let mut prefix = rs.metadata.name.to_string();
    if prefix.len() > GENERATED_PREFIX_MAX {
        // Names are DNS labels: ASCII, so any byte is a boundary.
        prefix.truncate(GENERATED_PREFIX_MAX);
    }
    prefix.push('-');
    pod.metadata.generate_name = Some(prefix.into());
    pod.metadata.owner_references = vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs.metadata.name.clone(),
        uid: rs.metadata.uid.unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }];
    pod.spec = template.spec.clone();
    pod
}

impl ReplicaSets {
    /// A controller with `settings`.
    pub fn new(settings: Settings) -> Self {
        Self { settings, ..Self::default() }
    }

    /// Notes the pod at `key` as the state has it; the sets to sync for it.
    fn observe_pod(&mut self, state: &State, key: &ObjectKey, sync: &mut BTreeSet<Uid>) {
        let now = match state.get(key) {
            Some(Object::Pod(pod)) => Some(pod),
            _ => None,
        };
        let owner = now.and_then(|p| set_uid(p));
        let before = match owner {
            Some(uid) => self.owner_of.insert(key.clone(), uid),
            None => self.owner_of.remove(key),
        };
        for uid in [before, owner].into_iter().flatten() {
            if let Some(m) = self.members.get_mut(&uid) {
                m.put(key, now.map(AsRef::as_ref), uid);
            }
        }
        if let Some(uid) = owner {
            if before != Some(uid) {
                // A pod new to the set: an expected create, observed.
                if let Some(e) = self.expected.get_mut(&uid) {
                    e.creates = e.creates.saturating_sub(1);
                }
            }
            sync.insert(uid);
        }
        if let Some(uid) = before {
            sync.insert(uid);
            if owner != Some(uid)
                && let Some(e) = self.expected.get_mut(&uid)
            {
                // It left the set (released): an expected delete, observed.
                e.deletes.remove(key);
            }
        }
        if now.is_none_or(|p| p.metadata.deletion_timestamp.is_some()) {
            for uid in [owner, before].into_iter().flatten() {
                if let Some(e) = self.expected.get_mut(&uid) {
                    e.deletes.remove(key);
                }
            }
        }
    }

    /// Resizes `rs` towards its replicas (unless expectations are unmet) and writes its status;
    /// when a Ready pod becomes available (after `minReadySeconds`), if one is waiting to.
    fn sync(&mut self, state: &State, rs: &ReplicaSet, now_ms: i64, commands: &mut Vec<Command>) -> Option<i64> {
        let uid = rs.metadata.uid.unwrap_or_default();
        if !self.members.get(&uid).is_some_and(|m| m.fit(rs)) {
            self.members.insert(uid, Members::of(state, rs));
        }
        let members = &self.members[&uid];
        #[cfg(test)]
        assert_eq!(*members, Members::of(state, rs), "the members kept differ from the state's");
        let pod_at = |key: &ObjectKey| match state.get(key) {
            Some(Object::Pod(p)) => Some(p.as_ref()),
            _ => None,
        };
        let want = usize::try_from(rs.spec.replicas.unwrap_or(1)).unwrap_or(0);
        let deleting = rs.metadata.deletion_timestamp.is_some();
        // Pods whose labels no longer match are released (a set being deleted releases none):
        // they count no more, and the set is resized once the releases are observed.
        let counts = if deleting { members.all } else { members.matching };
        let strays = if deleting { 0 } else { members.all.pods.saturating_sub(members.matching.pods) };
        let releasing = strays.min(self.settings.burst);
        if releasing > 0 {
            let released = members.pods.iter().filter(|(_, c)| !c.matches).take(releasing);
            commands.extend(
                released
                    .filter_map(|(k, _)| pod_at(k))
                    .map(|p| release(uid, &Object::Pod(std::sync::Arc::new(p.clone())))),
            );
        }
        // Orphans matching the selector are adopted first (counted as expected creates: each
        // is observed when it names the set); the set is resized once they are its own.
        let adopting = if deleting || self.expected.contains_key(&uid) {
            0
        } else {
            let selector = Selector::from(&rs.spec.selector);
            let orphans = self.orphans.matching(state, rs.metadata.namespace_str(), &selector);
            let adoptions: Vec<Command> = orphans
                .into_iter()
                .filter(|o| o.as_pod().is_some_and(active))
                .take(self.settings.burst)
                .map(|o| adopt(&rs.metadata, "apps/v1", "ReplicaSet", o))
                .collect();
            let n = adoptions.len();
            commands.extend(adoptions);
            n
        };
        if !deleting && adopting == 0 && releasing == 0 && !self.expected.contains_key(&uid) {
            if counts.pods < want {
                let missing = (want - counts.pods).min(self.settings.burst);
                let pod = pod_for(rs);
                commands.extend((0..missing).map(|_| Command::Create(Object::from(pod.clone()))));
            } else if counts.pods > want {
                let mut ranked: Vec<&Pod> = members.counted(deleting).filter_map(|(k, _)| pod_at(k)).collect();
                ranked.sort_by_cached_key(|p| deletion_rank(p));
                let surplus = (counts.pods - want).min(self.settings.burst);
                commands.extend(ranked.into_iter().take(surplus).map(|p| Command::Delete {
                    key: ObjectKey::new(Kind::Pod, p.metadata.namespace_str(), &p.metadata.name),
                    grace_period_seconds: None,
                    preconditions: Preconditions { uid: p.metadata.uid, resource_version: None },
                    propagation_policy: None,
                }));
            }
        }
        let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
        let since = |c: &Class| c.ready_since.flatten();
        let available = if min_ready <= 0 {
            counts.ready
        } else {
            let ready_at = |s: i64| s.saturating_add(i64::from(min_ready) * 1000);
            members.counted(deleting).filter(|(_, c)| since(c).is_some_and(|s| ready_at(s) <= now_ms)).count()
        };
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        let status = ReplicaSetStatus {
            replicas: count(counts.pods),
            fully_labeled_replicas: Some(count(counts.fully_labeled)),
            ready_replicas: Some(count(counts.ready)),
            available_replicas: Some(count(available)),
            observed_generation: rs.metadata.generation,
            conditions: rs.status.conditions.clone(),
        };
        if status != rs.status {
            let mut updated = rs.clone();
            updated.status = status;
            commands.push(Command::UpdateStatus(Object::from(updated)));
        }
        // The earliest a Ready pod not yet available becomes so.
        if min_ready <= 0 {
            return None;
        }
        members
            .counted(deleting)
            .filter_map(|(_, c)| since(c))
            .map(|s| s.saturating_add(i64::from(min_ready) * 1000))
            .filter(|at| *at > now_ms)
            .min()
    }
}

impl ReplicaSets {
    /// The event of a create or delete of a pod that applied (`SuccessfulCreate`,
    /// `SuccessfulDelete`, on the set, as Kubernetes').
    fn announce(&mut self, state: &State, command: &Command, success: &crate::command::Success) {
        let (set, reason, verb) = match command {
            Command::Create(Object::Pod(pod)) => (set_uid(pod), "SuccessfulCreate", "Created"),
            Command::Delete { key, .. } if key.kind == Kind::Pod => {
                (self.owner_of.get(key).copied(), "SuccessfulDelete", "Deleted")
            }
            _ => return,
        };
        let Some(pod) = success.changes.first().map(|c| c.key.name.clone()) else { return };
        let Some(rs) = set.and_then(|uid| self.set_of.get(&uid)).and_then(|key| state.get(key)) else { return };
        let message = format!("{verb} pod: {pod}");
        self.events.push(Record::about(COMPONENT, rs, EventType::Normal, reason, message));
    }
}

/// The ReplicaSet controller's name in its events, as Kubernetes'.
pub const COMPONENT: &str = "replicaset-controller";

impl Reconciler for ReplicaSets {
    const NAME: &'static str = "replicasets";

    fn events(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.events)
    }

    /// When a Ready pod becomes available, or an expectation times out (its set is synced
    /// again then, though nothing changed).
    fn wake_at_ms(&self) -> Option<i64> {
        self.timers.values().copied().chain(self.expected.values().map(|e| e.until_ms)).min()
    }

    fn reconcile(
        &mut self,
        state: &State,
        now_ms: i64,
        full: bool,
        changed: &[ObjectKey],
        outcomes: &[(Command, Fate)],
    ) -> Vec<Command> {
        let mut sync = BTreeSet::new();
        // Every create and delete issued is expected (`sync`); one that failed or was never
        // proposed will never be observed, so it is no longer expected. One of unknown outcome
        // stays expected until observed or timed out.
        for (command, outcome) in outcomes {
            if let Fate::Applied(Ok(success)) = outcome {
                self.announce(state, command, success);
            }
            if matches!(outcome, Fate::Applied(Ok(_)) | Fate::Unknown) {
                continue;
            }
            match command {
                Command::Create(Object::Pod(pod)) | Command::Update(Object::Pod(pod)) => {
                    if let Some(uid) = set_uid(pod) {
                        if let Some(e) = self.expected.get_mut(&uid) {
                            e.creates = e.creates.saturating_sub(1);
                        }
                        sync.insert(uid);
                    } else if matches!(command, Command::Update(_)) {
                        // A release that did not apply: no longer expected.
                        let key = ObjectKey::new(Kind::Pod, pod.metadata.namespace_str(), &pod.metadata.name);
                        if let Some(&uid) = self.owner_of.get(&key) {
                            if let Some(e) = self.expected.get_mut(&uid) {
                                e.deletes.remove(&key);
                            }
                            sync.insert(uid);
                        }
                    }
                }
                Command::Delete { key, .. } if key.kind == Kind::Pod => {
                    if let Some(&uid) = self.owner_of.get(key) {
                        if let Some(e) = self.expected.get_mut(&uid) {
                            e.deletes.remove(key);
                        }
                        sync.insert(uid);
                    }
                }
                _ => {}
            }
        }
        if full {
            // Every pod is looked at: those new to their set are observed creates, and the
            // expected deletes done are observed too.
            let mut owner_of = BTreeMap::new();
            for obj in state.list(Kind::Pod, None) {
                if let Object::Pod(pod) = obj
                    && let Some(uid) = set_uid(pod)
                {
                    let key = obj.key();
                    if self.owner_of.get(&key) != Some(&uid)
                        && let Some(e) = self.expected.get_mut(&uid)
                    {
                        e.creates = e.creates.saturating_sub(1);
                    }
                    owner_of.insert(key, uid);
                }
            }
            self.owner_of = owner_of;
            self.members.clear();
            self.orphans = Orphans::of(state, Kind::Pod);
            for e in self.expected.values_mut() {
                e.deletes.retain(|key| {
                    state.get(key).and_then(Object::as_pod).is_some_and(|p| p.metadata.deletion_timestamp.is_none())
                });
            }
            self.set_of.clear();
            for obj in state.list(Kind::ReplicaSet, None) {
                if let Some(uid) = obj.meta().uid {
                    self.set_of.insert(uid, obj.key());
                    sync.insert(uid);
                }
            }
        } else {
            for key in changed {
                match key.kind {
                    Kind::Pod => {
                        self.observe_pod(state, key, &mut sync);
                        sync.extend(would_adopt(state, &mut self.orphans, key, Kind::ReplicaSet));
                    }
                    Kind::ReplicaSet => match state.get(key).and_then(|o| o.meta().uid) {
                        Some(uid) => {
                            self.set_of.insert(uid, key.clone());
                            sync.insert(uid);
                        }
                        None => self.set_of.retain(|_, k| k != key),
                    },
                    _ => {}
                }
            }
        }
        // Met expectations go; timed-out ones go too, and their set is synced again.
        let expired: Vec<Uid> =
            self.expected.iter().filter(|(_, e)| e.until_ms <= now_ms).map(|(uid, _)| *uid).collect();
        sync.extend(expired);
        let due: Vec<Uid> = self.timers.iter().filter(|(_, at)| **at <= now_ms).map(|(uid, _)| *uid).collect();
        sync.extend(due);
        self.expected.retain(|_, e| (e.creates > 0 || !e.deletes.is_empty()) && e.until_ms > now_ms);
        self.set_of.retain(|uid, key| state.get(key).is_some_and(|o| o.meta().uid == Some(*uid)));
        self.timers.retain(|uid, _| self.set_of.contains_key(uid));
        self.members.retain(|uid, _| self.set_of.contains_key(uid));
        let mut commands = Vec::new();
        let until_ms = now_ms.saturating_add(self.settings.expectation_timeout_ms);
        for uid in sync {
            // A timer due is spent whether or not the set is still there (a set recreated
            // under its name is another uid): a timer left due would wake the loop at once.
            self.timers.remove(&uid);
            let Some(Object::ReplicaSet(rs)) = self.set_of.get(&uid).and_then(|key| state.get(key)) else { continue };
            if rs.metadata.uid != Some(uid) {
                continue;
            }
            let first = commands.len();
            if let Some(at) = self.sync(state, rs, now_ms, &mut commands) {
                self.timers.insert(uid, at.max(now_ms.saturating_add(1)));
            }
            let mut expectation = Expectation { until_ms, ..Expectation::default() };
            for command in &commands[first..] {
                match command {
                    // A release: the pod is expected to leave the set, as a deleted one.
                    Command::Update(Object::Pod(pod)) if set_uid(pod) != Some(uid) => {
                        expectation.deletes.insert(ObjectKey::new(
                            Kind::Pod,
                            pod.metadata.namespace_str(),
                            &pod.metadata.name,
                        ));
                    }
                    Command::Create(_) | Command::Update(_) => expectation.creates += 1,
                    Command::Delete { key, .. } => {
                        expectation.deletes.insert(key.clone());
                    }
                    _ => {}
                }
            }
            if expectation.creates > 0 || !expectation.deletes.is_empty() {
                self.expected.insert(uid, expectation);
            }
        }
        commands
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_manifests;
    use crate::reconcile::world::World;

    fn rs(w: &World) -> ReplicaSet {
        match w.state.get(&ObjectKey::new(Kind::ReplicaSet, "default", "web")) {
            Some(Object::ReplicaSet(rs)) => (**rs).clone(),
            other => panic!("no set: {other:?}"),
        }
    }

    const SET: &str = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web}\nspec:\n  replicas: 3\n  \
                       selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    \
                       spec: {containers: [{name: c, image: nginx}]}\n";

    /// A set adopts the pods of its namespace that match its selector and have no controller
    /// (not terminating ones, nor those of another namespace), before it creates any: it
    /// makes up the difference only once they are its own.
    #[test]
    fn a_set_adopts_matching_orphans_before_creating_pods() {
        let mut w = World::new();
        let mut c = ReplicaSets::new(Settings::default());
        let pod = |name: &str, ns: &str, app: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\n\
                 spec: {{containers: [{{name: c, image: x}}]}}\n---\n"
            )
        };
        w.create("apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n");
        let yaml = pod("a", "default", "web")
            + &pod("b", "default", "web")
            + &pod("c", "default", "db")
            + &pod("d", "other", "web")
            + &pod("done", "default", "web");
        let mut changed = w.create(&yaml);
        // A finished orphan is not adopted.
        let mut done = w.state.get(&ObjectKey::new(Kind::Pod, "default", "done")).cloned().expect("done");
        if let Object::Pod(p) = &mut done {
            std::sync::Arc::make_mut(p).status.phase = Some(PodPhase::Succeeded);
        }
        changed.extend(w.run(vec![Command::UpdateStatus(done)]).1);
        assert!(c.reconcile(&w.state, w.now_ms, false, &changed, &[]).is_empty(), "no set yet");
        let changed = w.create(SET);
        let first = c.reconcile(&w.state, w.now_ms, false, &changed, &[]);
        let adopted: Vec<&str> = first
            .iter()
            .filter_map(|cmd| match cmd {
                Command::Update(o) => Some(o.meta().name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(adopted, ["a", "b"], "{first:?}");
        assert!(!first.iter().any(|cmd| matches!(cmd, Command::Create(_))), "no create before the adoptions apply");
        w.settle_after(&mut c, first);
        let uid = rs(&w).metadata.uid;
        let mine: Vec<String> = w
            .pods()
            .into_iter()
            .filter(|p| p.metadata.controller_ref().map(|r| r.uid) == uid)
            .map(|p| p.metadata.name.to_string())
            .collect();
        assert_eq!(mine.len(), 3, "a, b and one new: {mine:?}");
        assert!(mine.contains(&"a".to_owned()) && mine.contains(&"b".to_owned()));
        assert!(w.pod("c").metadata.owner_references.is_empty(), "another app's pod is left alone");
        assert!(w.pod("done").metadata.owner_references.is_empty(), "a finished pod is left alone");
        // A full round (a new term) finds nothing more to adopt.
        let mut fresh = ReplicaSets::new(Settings::default());
        let again = fresh.reconcile(&w.state, w.now_ms, true, &[], &[]);
        assert!(!again.iter().any(|c| matches!(c, Command::Update(_) | Command::Create(_))), "{again:?}");
        let d = w.state.get(&ObjectKey::new(Kind::Pod, "other", "d")).expect("d");
        assert!(d.meta().owner_references.is_empty(), "another namespace's pod is left alone");
    }

    /// A set being deleted (here held by the `orphan` finalizer) adopts nothing.
    #[test]
    fn a_set_being_deleted_adopts_nothing() {
        let mut w = World::new();
        let mut c = ReplicaSets::new(Settings::default());
        w.create(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, labels: {app: web}}\nspec: {containers: [{name: c, image: x}]}\n",
        );
        w.create(SET);
        w.run(vec![Command::Delete {
            key: rs(&w).key_of(),
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
            propagation_policy: Some(crate::command::PropagationPolicy::Orphan),
        }]);
        let round = c.reconcile(&w.state, w.now_ms, true, &[], &[]);
        assert!(!round.iter().any(|cmd| matches!(cmd, Command::Update(_) | Command::Create(_))), "{round:?}");
        assert!(w.pod("a").metadata.owner_references.is_empty());
    }

    fn scale(w: &mut World, replicas: i32) -> Vec<ObjectKey> {
        let (outcomes, changed) = w.run(vec![Command::Scale { key: rs(w).key_of(), replicas }]);
        assert!(matches!(outcomes[0].1, Fate::Applied(Ok(_))), "{outcomes:?}");
        changed
    }

    trait KeyOf {
        fn key_of(&self) -> ObjectKey;
    }

    impl KeyOf for ReplicaSet {
        fn key_of(&self) -> ObjectKey {
            ObjectKey::new(Kind::ReplicaSet, self.metadata.namespace_str(), &self.metadata.name)
        }
    }

    /// A set gets its pods, named `<set>-<5 chars>` and owned by it; its status counts them;
    /// scaled down it deletes the surplus, unscheduled ones first; a deleted pod is replaced.
    /// The members a set keeps are classified against its template's labels: when those
    /// change, the pods are counted again (`fullyLabeledReplicas` follows at once, from the
    /// set's change alone).
    #[test]
    fn a_template_label_change_counts_the_pods_again() {
        let mut w = World::new();
        let changed = w.create(SET);
        let mut c = ReplicaSets::new(Settings::default());
        w.settle(&mut c, changed);
        assert_eq!(rs(&w).status.fully_labeled_replicas, Some(3));
        let mut set = rs(&w);
        set.spec.template.metadata.labels.insert("tier", "front");
        let (_, changed) = w.run(vec![Command::Update(Object::from(set))]);
        w.settle(&mut c, changed);
        assert_eq!(rs(&w).status.fully_labeled_replicas, Some(0), "no pod has the new label");
        assert_eq!(rs(&w).status.replicas, 3, "the pods still count");
    }

    #[test]
    fn a_set_creates_its_pods_deletes_the_surplus_and_replaces_a_lost_one() {
        let mut w = World::new();
        let changed = w.create(SET);
        let mut c = ReplicaSets::new(Settings::default());
        assert!(w.settle(&mut c, changed) >= 1);
        let pods = w.pods();
        assert_eq!(pods.len(), 3);
        let uid = rs(&w).metadata.uid;
        for p in &pods {
            let name = p.metadata.name.as_str();
            assert!(name.starts_with("web-") && name.len() == 9, "{name}");
            assert_eq!(p.metadata.controller_ref().map(|r| r.uid), uid);
            assert_eq!(p.metadata.labels.get("app"), Some("web"));
        }
        assert_eq!(rs(&w).status.replicas, 3);
        assert_eq!(rs(&w).status.observed_generation, rs(&w).metadata.generation);
        // Two of them are scheduled; scaled to 2, the unscheduled one goes.
        let node = "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nstatus: {capacity: {cpu: '4', pods: '10'}, \
                    conditions: [{type: Ready, status: 'True'}]}\n";
        w.create(node);
        let mut bound = Vec::new();
        for p in &pods[..2] {
            let bind = Command::Bind {
                namespace: "default".into(),
                name: p.metadata.name.to_string(),
                node: "n".into(),
                preconditions: Preconditions::default(),
            };
            bound.extend(w.run(vec![bind]).1);
        }
        w.settle(&mut c, bound);
        let changed = scale(&mut w, 2);
        w.settle(&mut c, changed);
        let left: Vec<String> = w.pods().iter().filter(|p| active(p)).map(|p| p.metadata.name.to_string()).collect();
        let expected: Vec<String> = pods[..2].iter().map(|p| p.metadata.name.to_string()).collect();
        assert_eq!(left, expected, "the unscheduled pod went first");
        assert_eq!(rs(&w).status.replicas, 2);
        // A pod deleted by hand (gracefully: bound, it terminates) is replaced at once.
        let gone = Command::Delete {
            key: ObjectKey::new(Kind::Pod, "default", &pods[0].metadata.name),
            grace_period_seconds: Some(30),
            preconditions: Preconditions::default(),
            propagation_policy: None,
        };
        let (_, changed) = w.run(vec![gone]);
        w.settle(&mut c, changed);
        assert_eq!(w.pods().iter().filter(|p| active(p)).count(), 2);
        assert_eq!(w.pods().len(), 3, "the terminating pod stays until its node confirms");
        // Each create and delete that applied is an event on the set, as Kubernetes'.
        let events = c.events();
        assert!(events.iter().all(|e| e.kind == Kind::ReplicaSet && e.name == "web" && e.uid == uid));
        let said =
            |reason: &str| events.iter().filter(|e| e.reason == reason).map(|e| e.message.clone()).collect::<Vec<_>>();
        assert_eq!(said("SuccessfulCreate").len(), 4, "three, then the replacement: {events:?}");
        assert!(said("SuccessfulCreate").contains(&format!("Created pod: {}", pods[0].metadata.name)));
        assert_eq!(said("SuccessfulDelete"), [format!("Deleted pod: {}", pods[2].metadata.name)]);
    }

    /// A pod relabelled out of its set's selector is released (its reference to the set
    /// removed) and replaced, as Kubernetes' `ControllerRefManager`; it lives on, an orphan.
    #[test]
    fn a_pod_relabelled_out_of_the_selector_is_released_and_replaced() {
        let mut w = World::new();
        let changed = w.create(SET);
        let mut c = ReplicaSets::new(Settings::default());
        w.settle(&mut c, changed);
        let uid = rs(&w).metadata.uid.expect("uid");
        let mut stray = w.pods().remove(0);
        let name = stray.metadata.name.to_string();
        stray.metadata.labels.insert("app", "debug");
        let (_, changed) = w.run(vec![Command::Update(Object::from(stray))]);
        let first = c.reconcile(&w.state, w.now_ms, false, &changed, &[]);
        assert!(
            matches!(&first[..], [Command::Update(Object::Pod(p)), Command::UpdateStatus(_)]
                if p.metadata.name == name && p.metadata.owner_references.is_empty()),
            "a release, no create before it applies: {first:?}"
        );
        w.settle_after(&mut c, first);
        let released = w.pods().into_iter().find(|p| p.metadata.name == name).expect("the pod lives on");
        assert!(released.metadata.owner_references.is_empty());
        let owned: Vec<Pod> = w.pods().into_iter().filter(|p| set_uid(p) == Some(uid) && active(p)).collect();
        assert_eq!(owned.len(), 3, "replaced");
        assert!(owned.iter().all(|p| p.metadata.labels.get("app") == Some("web")));
        assert_eq!(rs(&w).status.replicas, 3);
    }

    /// Creates of unknown outcome are expected: the set is not resized again until they are
    /// observed or time out, so no duplicate pod is created.
    #[test]
    fn creates_of_unknown_outcome_are_not_made_twice() {
        let mut w = World::new();
        let changed = w.create(SET);
        let mut c = ReplicaSets::new(Settings { expectation_timeout_ms: 60_000, ..Settings::default() });
        let first = c.reconcile(&w.state, w.now_ms, false, &changed, &[]);
        let creates: Vec<Command> = first.iter().filter(|c| matches!(c, Command::Create(_))).cloned().collect();
        assert_eq!(creates.len(), 3);
        let unknown: Vec<(Command, Fate)> = first.iter().map(|c| (c.clone(), Fate::Unknown)).collect();
        // Nothing applied yet: the next round (a change of the set wakes it) creates none.
        let again = c.reconcile(&w.state, w.now_ms, false, &changed, &unknown);
        assert!(again.iter().all(|c| !matches!(c, Command::Create(_))), "{again:?}");
        // The entry commits late: the pods are observed, the expectation met, nothing more.
        let (_, changed) = w.run(creates);
        assert!(c.reconcile(&w.state, w.now_ms, false, &changed, &[]).iter().all(|c| !matches!(c, Command::Create(_))));
        assert_eq!(w.pods().len(), 3);
        // Lost instead: after the timeout the set is resized again.
        let lost = w.pods()[0].clone();
        let delete = Command::Delete {
            key: ObjectKey::new(Kind::Pod, "default", &lost.metadata.name),
            grace_period_seconds: Some(0),
            preconditions: Preconditions::default(),
            propagation_policy: None,
        };
        let (_, changed) = w.run(vec![delete]);
        let replace = c.reconcile(&w.state, w.now_ms, false, &changed, &[]);
        let unknown: Vec<(Command, Fate)> = replace.iter().map(|c| (c.clone(), Fate::Unknown)).collect();
        assert_eq!(unknown.iter().filter(|(c, _)| matches!(c, Command::Create(_))).count(), 1);
        let rs_key = rs(&w).key_of();
        let held = c.reconcile(&w.state, w.now_ms, false, std::slice::from_ref(&rs_key), &unknown);
        assert!(held.iter().all(|c| !matches!(c, Command::Create(_))), "{held:?}");
        assert_eq!(c.wake_at_ms(), Some(w.now_ms + 60_000), "woken when the expectation times out");
        w.now_ms += 60_000;
        let retried = c.reconcile(&w.state, w.now_ms, false, &[rs_key], &[]);
        assert_eq!(retried.iter().filter(|c| matches!(c, Command::Create(_))).count(), 1, "{retried:?}");
    }

    /// A round's creates spanning proposals, some applied and some of unknown outcome, are
    /// all expected: the next round creates none again, and the late one completes the set.
    #[test]
    fn creates_partly_applied_and_partly_unknown_are_not_made_twice() {
        let mut w = World::new();
        let changed = w.create(SET);
        let mut c = ReplicaSets::new(Settings::default());
        let first = c.reconcile(&w.state, w.now_ms, false, &changed, &[]);
        let creates: Vec<Command> = first.into_iter().filter(|c| matches!(c, Command::Create(_))).collect();
        assert_eq!(creates.len(), 3);
        let (mut outcomes, changed) = w.run(creates[..2].to_vec());
        outcomes.push((creates[2].clone(), Fate::Unknown));
        let again = c.reconcile(&w.state, w.now_ms, false, &changed, &outcomes);
        assert!(again.iter().all(|c| !matches!(c, Command::Create(_))), "{again:?}");
        // The third commits late: three pods, and nothing more to do.
        let (_, changed) = w.run(vec![creates[2].clone()]);
        w.settle(&mut c, changed);
        assert_eq!(w.pods().len(), 3);
        // A full round after creates it has not observed yet counts them from the state.
        let mut d = ReplicaSets::new(Settings::default());
        let changed = scale(&mut w, 5);
        let more = d.reconcile(&w.state, w.now_ms, false, &changed, &[]);
        let (_, _) = w.run(more.into_iter().filter(|c| matches!(c, Command::Create(_))).collect());
        let full = d.reconcile(&w.state, w.now_ms, true, &[], &[]);
        assert!(full.iter().all(|c| !matches!(c, Command::Create(_))), "{full:?}");
        assert_eq!(w.pods().len(), 5);
    }

    /// A pod's generated name starts with its set's name, cut to [`GENERATED_PREFIX_MAX`]
    /// characters as Kubernetes cuts it, and names its set as controller.
    #[test]
    fn a_pod_for_a_long_named_set_gets_a_cut_prefix() {
        let mut w = World::new();
        let long = "a".repeat(63);
        w.create(&SET.replace("metadata: {name: web}", &format!("metadata: {{name: {long}}}")));
        let Some(Object::ReplicaSet(set)) = w.state.get(&ObjectKey::new(Kind::ReplicaSet, "default", &long)).cloned()
        else {
            panic!("the set is stored")
        };
        let pod = pod_for(&set);
        assert_eq!(pod.metadata.generate_name.as_deref(), Some(format!("{}-", &long[..GENERATED_PREFIX_MAX]).as_str()));
        assert_eq!(pod.metadata.controller_ref().map(|r| r.uid), set.metadata.uid);
        let changed = w.run(vec![Command::Create(Object::from(pod))]).1;
        assert_eq!(changed[0].name.len(), GENERATED_PREFIX_MAX + 1 + 5, "a valid name: {}", changed[0].name);
    }

    /// Surplus pods go in Kubernetes' order: unscheduled, pending, not ready, ready for less
    /// time, restarted more, newest.
    #[test]
    fn surplus_pods_are_ranked_as_kubernetes_ranks_them() {
        let base = |name: &str| {
            let yaml = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: x}}]}}"
            );
            parse_manifests(&yaml).expect("valid").remove(0).as_pod().cloned().expect("a pod")
        };
        let at = crate::time::Time::from_millis;
        let mut unscheduled = base("unscheduled");
        unscheduled.metadata.creation_timestamp = Some(at(1));
        let mut pending = base("pending");
        pending.spec.node_name = Some("n".into());
        pending.status.phase = Some(PodPhase::Pending);
        let running = |name: &str, ready_at: Option<i64>, restarts: i32, created: i64| {
            let mut p = base(name);
            p.spec.node_name = Some("n".into());
            p.status.phase = Some(PodPhase::Running);
            p.metadata.creation_timestamp = Some(at(created));
            if let Some(t) = ready_at {
                p.status.conditions.push(crate::core_v1::PodCondition::new("Ready", ConditionStatus::True, at(t)));
            }
            p.status
                .container_statuses
                .push(crate::core_v1::ContainerStatus { restart_count: restarts, ..Default::default() });
            p
        };
        let not_ready = running("not-ready", None, 0, 1);
        let ready_late = running("ready-late", Some(500), 0, 1);
        let restarted = running("restarted", Some(100), 5, 1);
        let newest = running("newest", Some(100), 0, 9);
        let oldest = running("oldest", Some(100), 0, 1);
        let mut all = [&oldest, &newest, &restarted, &ready_late, &not_ready, &pending, &unscheduled];
        all.sort_by_cached_key(|p| deletion_rank(p));
        let order: Vec<&str> = all.iter().map(|p| p.metadata.name.as_str()).collect();
        assert_eq!(order, ["unscheduled", "pending", "not-ready", "ready-late", "restarted", "newest", "oldest"]);
    }

    /// A set of one pod with `minReadySeconds: 5`, settled, whose pod then turned Ready (and
    /// Running when `running`) and the controller saw it; with the time it turned Ready.
    fn one_pod_ready_under_min_ready_seconds(running: bool) -> (World, ReplicaSets, i64) {
        let mut w = World::with(&SET.replace("replicas: 3", "replicas: 1\n  minReadySeconds: 5"));
        let mut c = ReplicaSets::new(Settings::default());
        let changed = w.state.list(Kind::ReplicaSet, None).map(Object::key).collect();
        w.settle(&mut c, changed);
        let mut pod = w.pods()[0].clone();
        let since = w.now_ms;
        if running {
            pod.status.phase = Some(PodPhase::Running);
        }
        let ready =
            crate::core_v1::PodCondition::new("Ready", ConditionStatus::True, crate::time::Time::from_millis(since));
        pod.status.conditions.push(ready);
        let (_, changed) = w.run(vec![Command::UpdateStatus(Object::from(pod))]);
        w.settle(&mut c, changed);
        (w, c, since)
    }

    /// A Ready pod counts as available only after `minReadySeconds`: the controller asks to
    /// be woken then, and that round (nothing changed) updates the status.
    #[test]
    fn a_ready_pod_becomes_available_after_min_ready_seconds_by_a_timer() {
        let (mut w, mut c, since) = one_pod_ready_under_min_ready_seconds(true);
        assert_eq!((rs(&w).status.ready_replicas, rs(&w).status.available_replicas), (Some(1), Some(0)));
        assert_eq!(c.wake_at_ms(), Some(since + 5_000));
        assert!(c.reconcile(&w.state, since + 4_999, false, &[], &[]).is_empty(), "not yet");
        let commands = c.reconcile(&w.state, since + 5_000, false, &[], &[]);
        w.run(commands);
        assert_eq!(rs(&w).status.available_replicas, Some(1));
        assert_eq!(c.wake_at_ms(), None);
    }

    /// A set's timer is spent when due even if the set went (recreated under its name, another
    /// uid): no timer stays due, which would wake the loop over and over.
    #[test]
    fn a_timer_of_a_set_that_went_is_spent() {
        let (mut w, mut c, since) = one_pod_ready_under_min_ready_seconds(false);
        assert_eq!(c.wake_at_ms(), Some(since + 5_000));
        // The set is replaced under its name in one entry, unseen by the controller.
        let key = rs(&w).key_of();
        let delete = Command::Delete {
            key,
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
            propagation_policy: None,
        };
        let again = parse_manifests(SET).expect("valid").remove(0);
        w.run(vec![delete, Command::Create(again)]);
        c.reconcile(&w.state, since + 5_000, false, &[], &[]);
        assert!(c.wake_at_ms().is_none_or(|at| at > since + 5_000), "{:?}", c.wake_at_ms());
    }
}
