//! The garbage collector: what each of its rounds proposes, a pure function of the state, the
//! changed keys and the time (a [`Reconciler`]), as Kubernetes' garbage collector and
//! namespace controller do:
//!
//! - **Owners gone, dependents go** (background cascade): an object all of whose owners
//!   (its owner references, matched by kind, name and uid) no longer exist is deleted, with
//!   its uid as precondition. Deleting a ReplicaSet deletes its pods once it is gone. An owner
//!   reference that cannot be resolved (a kind orch does not have; a namespaced owner of a
//!   cluster-scoped object) never counts as gone, as in Kubernetes.
//! - **A terminating namespace is emptied**: every object in a namespace being deleted is
//!   deleted (pods gracefully), after which the state machine removes the namespace.
//! - **Events expire** [`Settings::event_ttl_ms`] after they last happened (Kubernetes keeps
//!   them an hour), so they cannot grow without bound; checked whenever the collector looks
//!   at an event: when it changes, and on every full round (the first of a term, and the
//!   framework's periodic resync, which a busy cluster does not put off).
//!
//! - **Pods of a node that is gone are force-deleted** (Kubernetes' pod garbage collector):
//!   a pod bound to a node that has not existed for [`Settings::orphan_quarantine_ms`] (so a
//!   node registering late is not raced) is deleted with grace 0, terminating or not, so that
//!   a lost node's pods, and their namespace, can always go: `orchctl delete node` of a lost
//!   node does it.
//!
//! A full round looks at every object; an incremental round at the objects changed (an
//! object with owner references, a namespace) and at the dependents of the changed objects
//! that are gone (it remembers the uids of every owner it has seen, so it can find them with
//! the owner index); a deletion that failed is looked at again in the next round.
//!
//! - **A delete's `propagationPolicy`** (Kubernetes'): a Background delete (the default)
//!   removes the object at once and the cascade above follows. An Orphan delete leaves the
//!   object with the `orphan` finalizer: the collector removes the dependents' references to
//!   it, then the finalizer, and the object goes. A Foreground delete leaves it with the
//!   `foregroundDeletion` finalizer: such an owner is "waiting", and a dependent whose owners
//!   are all gone or waiting is deleted (in the foreground itself when it has dependents of
//!   its own, so a Deployment waits for its sets' pods); a dependent kept by another owner
//!   loses its references to the waiting and gone ones. Once no dependent whose reference has
//!   `blockOwnerDeletion` remains, the finalizer is removed and the owner goes. Objects with
//!   either finalizer are looked at every round until they go.

use std::collections::{BTreeMap, BTreeSet};

use crate::command::{Command, FINALIZER_FOREGROUND, FINALIZER_ORPHAN, Preconditions, PropagationPolicy};
use crate::ids::Uid;
use crate::meta::{ObjectMeta, OwnerReference};
use crate::object::{Kind, Object, ObjectKey};
use crate::reconcile::{Fate, Reconciler};
use crate::state::State;

/// The most deletions one round proposes; the rest wait for the next round, which
/// [`Reconciler::more`] asks for.
pub const GC_ROUND_MAX: usize = 4096;

/// How long after a force delete of an orphaned pod the collector looks at it again, should it
/// still be there (the delete failed or its outcome is unknown).
pub const ORPHAN_RETRY_MS: i64 = 1_000;

/// The garbage collector's settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// How long an event is kept after it last happened (Kubernetes: 1 hour).
    pub event_ttl_ms: i64,
    /// How long a pod's node must have been missing before the pod is force-deleted
    /// (Kubernetes' pod GC quarantine: 40 s).
    pub orphan_quarantine_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { event_ttl_ms: 3_600_000, orphan_quarantine_ms: 40_000 }
    }
}

/// The garbage collector of one term.
#[derive(Debug, Default)]
pub struct Collector {
    settings: Settings,
    /// The uids of every owner seen, by key: when one goes (or is replaced under its name),
    /// its dependents are looked at.
    owners: BTreeMap<ObjectKey, BTreeSet<Uid>>,
    /// Objects to look at that the last round had no room for.
    backlog: BTreeSet<ObjectKey>,
    /// Pods whose node was missing when looked at: the node, and when to look again (ms):
    /// the end of the quarantine, or a second after a force delete was proposed.
    orphans: BTreeMap<ObjectKey, (String, i64)>,
    /// Objects being deleted with the finalizer of an orphaning or foreground deletion: looked
    /// at every round until it is gone (their dependents' changes may be all that happens).
    waiting: BTreeSet<ObjectKey>,
}

/// The key an owner reference of an object in `namespace` ("" for a cluster-scoped one)
/// names: `None` when it cannot be resolved (a kind orch does not have, or a namespaced
/// owner of a cluster-scoped object).
fn owner_key(reference: &OwnerReference, namespace: &str) -> Option<ObjectKey> {
    let kind = Kind::from_type(&reference.api_version, &reference.kind)?;
    if kind.namespaced() && namespace.is_empty() {
        return None;
    }
    Some(ObjectKey::new(kind, if kind.namespaced() { namespace } else { "" }, &reference.name))
}

/// What an owner reference points at, as Kubernetes' collector classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// There (the same kind, name and uid), or unresolvable, which Kubernetes' collector never
    /// takes for absent.
    Solid,
    /// Gone (or replaced under its name by another uid).
    Dangling,
    /// There, but being deleted in the foreground: it waits for its dependents to go.
    Waiting,
}

fn classify(state: &State, reference: &OwnerReference, namespace: &str) -> Owner {
    let Some(key) = owner_key(reference, namespace) else { return Owner::Solid };
    match state.get(&key).map(Object::meta) {
        Some(m) if m.uid == Some(reference.uid) => {
            if is_waiting(m) {
                Owner::Waiting
            } else {
                Owner::Solid
            }
        }
        _ => Owner::Dangling,
    }
}

fn has_finalizer(meta: &ObjectMeta, name: &str) -> bool {
    meta.finalizers.iter().any(|f| f.as_str() == name)
}

/// Whether the object is being deleted in the foreground (it waits for its dependents).
fn is_waiting(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some() && has_finalizer(meta, FINALIZER_FOREGROUND)
}

fn delete(key: ObjectKey, meta: &ObjectMeta, propagation_policy: Option<PropagationPolicy>) -> Command {
    Command::Delete {
        key,
        grace_period_seconds: None,
        preconditions: Preconditions { uid: meta.uid, resource_version: None },
        propagation_policy,
    }
}

/// `obj` without its owner references to the uids `drop` keeps, as an update under its
/// resourceVersion.
fn without_owners(obj: &Object, drop: impl Fn(Uid) -> bool) -> Command {
    let mut new = obj.clone();
    new.meta_mut().owner_references.retain(|r| !drop(r.uid));
    Command::Update(new)
}

/// `obj` with none of its owner references blocking its owners' deletion, as an update under
/// its resourceVersion; `None` when none does.
fn unblocked(obj: &Object) -> Option<Command> {
    let mut new = obj.clone();
    let mut any = false;
    for r in &mut new.meta_mut().owner_references {
        if r.block_owner_deletion == Some(true) {
            r.block_owner_deletion = Some(false);
            any = true;
        }
    }
    any.then_some(Command::Update(new))
}

/// `obj` without the finalizer `name`, as an update under its resourceVersion.
fn without_finalizer(obj: &Object, name: &str) -> Command {
    let mut new = obj.clone();
    new.meta_mut().finalizers.retain(|f| f.as_str() != name);
    Command::Update(new)
}

impl Collector {
    /// A collector with `settings`.
    pub fn new(settings: Settings) -> Self {
        Self { settings, ..Self::default() }
    }

    /// Remembers the owners `meta` names.
    fn note_owners(&mut self, meta: &ObjectMeta) {
        for reference in &meta.owner_references {
            if let Some(key) = owner_key(reference, meta.namespace_str()) {
                self.owners.entry(key).or_default().insert(reference.uid);
            }
        }
    }

    /// What to propose for the object at `key`, into `out` while it has fewer than
    /// [`GC_ROUND_MAX`] commands: false when it ran out of room before it was done.
    fn verdict(&mut self, state: &State, key: &ObjectKey, now_ms: i64, out: &mut Vec<Command>) -> bool {
        let Some(obj) = state.get(key) else {
            self.orphans.remove(key);
            self.waiting.remove(key);
            return true;
        };
        let meta = obj.meta();
        if let Object::Pod(pod) = obj
            && let Some(node) = pod.spec.node_name.as_deref()
        {
            if state.get(&ObjectKey::new(Kind::Node, "", node)).is_none() {
                // The entry stays until the pod is gone or its node is back: a force delete
                // that fails is proposed again without a new quarantine.
                let quarantine = self.settings.orphan_quarantine_ms;
                let (_, due) = self
                    .orphans
                    .entry(key.clone())
                    .or_insert_with(|| (node.to_owned(), now_ms.saturating_add(quarantine)));
                if *due <= now_ms {
                    *due = now_ms.saturating_add(ORPHAN_RETRY_MS);
                    out.push(Command::Delete {
                        key: key.clone(),
                        grace_period_seconds: Some(0),
                        preconditions: Preconditions { uid: meta.uid, resource_version: None },
                        propagation_policy: None,
                    });
                    return true;
                }
            } else {
                self.orphans.remove(key);
            }
        }
        if meta.deletion_timestamp.is_some() {
            return self.finalize(state, obj, out);
        }
        self.waiting.remove(key);
        let namespace = meta.namespace_str();
        let owners: Vec<(Uid, Owner)> =
            meta.owner_references.iter().map(|r| (r.uid, classify(state, r, namespace))).collect();
        if !owners.is_empty() {
            if owners.iter().all(|(_, o)| *o != Owner::Solid) {
                // Every owner gone or waiting for its dependents: this one goes; in the
                // foreground itself if an owner waits and it has dependents of its own.
                let dependents: Vec<&Object> =
                    meta.uid.map(|uid| state.owned_by(uid).filter_map(|k| state.get(k)).collect()).unwrap_or_default();
                let foreground = owners.iter().any(|(_, o)| *o == Owner::Waiting) && !dependents.is_empty();
                // As Kubernetes: if one of those dependents waits for its own dependents
                // (owners that own each other), this one stops blocking its owners first, so
                // that they need not wait for it while it waits for them.
                if foreground && dependents.iter().any(|d| is_waiting(d.meta())) {
                    out.extend(unblocked(obj));
                }
                out.push(delete(key.clone(), meta, foreground.then_some(PropagationPolicy::Foreground)));
                return true;
            }
            if owners.iter().any(|(_, o)| *o == Owner::Waiting) {
                // A solid owner keeps it: the references to the owners that are gone or
                // waiting are removed, so that they do not wait for it.
                out.push(without_owners(obj, |uid| owners.iter().any(|(u, o)| *u == uid && *o != Owner::Solid)));
                return true;
            }
        }
        let namespace_going = key.kind.namespaced()
            && state
                .get(&ObjectKey::new(Kind::Namespace, "", namespace))
                .is_some_and(|ns| ns.meta().deletion_timestamp.is_some());
        let expired = matches!(obj, Object::Event(e) if {
            let last = e.last_timestamp.or(e.first_timestamp).or(e.metadata.creation_timestamp);
            last.is_some_and(|t| t.as_millis().saturating_add(self.settings.event_ttl_ms) <= now_ms)
        });
        if namespace_going || expired {
            out.push(delete(key.clone(), meta, None));
        }
        true
    }

    /// An object being deleted with the finalizer of an orphaning or foreground deletion:
    /// its dependents' references to it removed (orphan), or its blocking dependents gone
    /// (foreground; the dependents themselves are deleted by their own verdicts), and then
    /// the finalizer.
    fn finalize(&mut self, state: &State, obj: &Object, out: &mut Vec<Command>) -> bool {
        let meta = obj.meta();
        let key = obj.key();
        let (Some(uid), orphan, foreground) =
            (meta.uid, has_finalizer(meta, FINALIZER_ORPHAN), has_finalizer(meta, FINALIZER_FOREGROUND))
        else {
            self.waiting.remove(&key);
            return true;
        };
        if !orphan && !foreground {
            self.waiting.remove(&key);
            return true;
        }
        self.waiting.insert(key.clone());
        let dependents = state.owned_by(uid).filter_map(|k| state.get(k));
        if orphan {
            let mut any = false;
            for dependent in dependents {
                if out.len() >= GC_ROUND_MAX {
                    return false;
                }
                out.push(without_owners(dependent, |u| u == uid));
                any = true;
            }
            if !any {
                out.push(without_finalizer(obj, FINALIZER_ORPHAN));
            }
            return true;
        }
        let blocked = dependents
            .into_iter()
            .any(|d| d.meta().owner_references.iter().any(|r| r.uid == uid && r.block_owner_deletion == Some(true)));
        if !blocked {
            out.push(without_finalizer(obj, FINALIZER_FOREGROUND));
        } else if meta
            .owner_references
            .iter()
            .any(|r| r.block_owner_deletion == Some(true) && classify(state, r, meta.namespace_str()) == Owner::Waiting)
            && state.owned_by(uid).filter_map(|k| state.get(k)).any(|d| is_waiting(d.meta()))
        {
            // Owners that own each other, and the unblocking that went with this one's
            // deletion did not apply: again, or they would wait for each other for ever.
            out.extend(unblocked(obj));
        }
        true
    }
}

impl Reconciler for Collector {
    const NAME: &'static str = "garbage-collector";

    fn reconcile(
        &mut self,
        state: &State,
        now_ms: i64,
        full: bool,
        changed: &[ObjectKey],
        outcomes: &[(Command, Fate)],
    ) -> Vec<Command> {
        // A deletion applied shows in the state; one that failed, was not proposed or whose
        // outcome is unknown is looked at again (its verdict is made afresh).
        let mut look: BTreeSet<ObjectKey> = std::mem::take(&mut self.backlog);
        for (command, fate) in outcomes {
            if matches!(fate, Fate::Applied(Ok(_))) {
                continue;
            }
            match command {
                Command::Delete { key, .. } => {
                    look.insert(key.clone());
                }
                Command::Update(obj) => {
                    look.insert(obj.key());
                }
                _ => {}
            }
        }
        if full {
            self.owners.clear();
            self.waiting.clear();
            for kind in Kind::ALL {
                for obj in state.list(kind, None) {
                    self.note_owners(obj.meta());
                    look.insert(obj.key());
                }
            }
        } else {
            let mut gone_nodes: BTreeSet<String> = BTreeSet::new();
            for key in changed {
                match state.get(key) {
                    Some(obj) => {
                        if key.kind == Kind::Node {
                            // A node (back) under this name: its pods' quarantine ends.
                            self.orphans.retain(|_, (node, _)| node.as_str() != key.name.as_str());
                        }
                        self.note_owners(obj.meta());
                        look.insert(key.clone());
                        if key.kind == Kind::Namespace && obj.meta().deletion_timestamp.is_some() {
                            for kind in Kind::ALL.into_iter().filter(|k| k.namespaced()) {
                                look.extend(state.list(kind, Some(&key.name)).map(Object::key));
                            }
                        }
                        // An owner replaced under its name: the old one's dependents.
                        let current = obj.meta().uid;
                        if let Some(uids) = self.owners.get_mut(key) {
                            for uid in uids.iter().filter(|u| Some(**u) != current) {
                                look.extend(state.owned_by(*uid).cloned());
                            }
                            uids.retain(|u| Some(*u) == current);
                        }
                    }
                    None => {
                        self.orphans.remove(key);
                        for uid in self.owners.remove(key).unwrap_or_default() {
                            look.extend(state.owned_by(uid).cloned());
                        }
                        if key.kind == Kind::Node {
                            gone_nodes.insert(key.name.to_string());
                        }
                    }
                }
            }
            // Nodes gone: the pods bound to them (no index by node name: one scan a round,
            // only when nodes went).
            if !gone_nodes.is_empty() {
                look.extend(
                    state
                        .list(Kind::Pod, None)
                        .filter(|o| {
                            o.as_pod().and_then(|p| p.spec.node_name.as_deref()).is_some_and(|n| gone_nodes.contains(n))
                        })
                        .map(Object::key),
                );
            }
        }
        // Pods whose node's quarantine is over.
        look.extend(self.orphans.iter().filter(|(_, (_, due))| *due <= now_ms).map(|(k, _)| k.clone()));
        // The dependents of an object whose foreground deletion just started (or of every
        // one, on a full round), which go with it; a dependent that changes later is looked
        // at as a changed key, one whose deletion failed as such.
        let started: Vec<Uid> = if full { look.iter().collect::<Vec<_>>() } else { changed.iter().collect() }
            .into_iter()
            .filter_map(|k| state.get(k))
            .map(Object::meta)
            .filter(|m| is_waiting(m))
            .filter_map(|m| m.uid)
            .collect();
        for uid in started {
            look.extend(state.owned_by(uid).cloned());
        }
        // Objects waiting for their dependents, every round (what changed may be a dependent
        // that is gone, whose owners the state no longer tells): cheap, since the check stops
        // at the first dependent that still blocks.
        look.extend(self.waiting.iter().cloned());
        let mut commands = Vec::new();
        let mut keys = look.into_iter();
        while commands.len() < GC_ROUND_MAX {
            let Some(key) = keys.next() else { break };
            if !self.verdict(state, &key, now_ms, &mut commands) {
                self.backlog.insert(key);
            }
        }
        self.backlog.extend(keys);
        commands
    }

    fn more(&self) -> bool {
        !self.backlog.is_empty()
    }

    fn wake_at_ms(&self) -> Option<i64> {
        self.orphans.values().map(|(_, due)| *due).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::world::World;

    fn owned_pod(name: &str, owner: &str, uid: Uid) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, \
             name: {owner}, uid: '{uid}', controller: true}}]}}\nspec: {{containers: [{{name: c, image: x}}]}}\n---\n"
        )
    }

    /// A Ready node `n` with room for ten pods.
    const NODE_N: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nstatus: {capacity: {cpu: '4', pods: '10'}, \
                          conditions: [{type: Ready, status: 'True'}]}\n";

    const SET: &str = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: rs}\nspec:\n  replicas: 0\n  \
                       selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    \
                       spec: {containers: [{name: c, image: nginx}]}\n";

    /// Deleting an owner deletes its dependents once it is gone; a dependent with another
    /// owner still there stays; an owner recreated under the same name does not save the
    /// dependents of the old one.
    #[test]
    fn the_dependents_of_a_deleted_owner_are_deleted() {
        let mut w = World::new();
        let mut c = Collector::new(Settings::default());
        w.create(SET);
        let uid = w.uid(Kind::ReplicaSet, "default", "rs");
        w.create(&owned_pod("a", "rs", uid));
        w.create(&(owned_pod("b", "rs", uid) + "---\n"));
        assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty(), "every owner is there");
        // b also names a second owner, which stays.
        w.create(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: other}\nspec:\n  replicas: 0\n  \
                  selector: {matchLabels: {app: x}}\n  template:\n    metadata: {labels: {app: x}}\n    \
                  spec: {containers: [{name: c, image: nginx}]}\n",
        );
        let other = w.uid(Kind::ReplicaSet, "default", "other");
        let mut b = w.state.get(&ObjectKey::new(Kind::Pod, "default", "b")).cloned().expect("b");
        b.meta_mut().owner_references.push(OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: "other".into(),
            uid: other,
            controller: None,
            block_owner_deletion: None,
        });
        let (_, changed) = w.run(vec![Command::Update(b)]);
        w.settle(&mut c, changed);
        let (_, changed) = w.run(vec![Command::Delete {
            key: ObjectKey::new(Kind::ReplicaSet, "default", "rs"),
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
            propagation_policy: None,
        }]);
        // Recreated under the same name before the collector ran: a new uid.
        let mut changed = changed;
        changed.extend(w.create(SET));
        w.settle(&mut c, changed);
        assert!(!w.has(Kind::Pod, "default", "a"), "a's only owner is gone");
        assert!(w.has(Kind::Pod, "default", "b"), "b's other owner is there");
    }

    fn delete_with(kind: Kind, name: &str, policy: Option<PropagationPolicy>) -> Command {
        Command::Delete {
            key: ObjectKey::new(kind, "default", name),
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
            propagation_policy: policy,
        }
    }

    fn finalizers(w: &World, kind: Kind, name: &str) -> Vec<String> {
        let obj = w.state.get(&ObjectKey::new(kind, "default", name)).expect("exists");
        assert!(obj.meta().deletion_timestamp.is_some(), "{name} is being deleted");
        obj.meta().finalizers.iter().map(ToString::to_string).collect()
    }

    fn owner_uids(w: &World, name: &str) -> Vec<Uid> {
        w.pod(name).metadata.owner_references.iter().map(|r| r.uid).collect()
    }

    /// A delete's policy puts its finalizer on the object (the other policy's taken off); a
    /// delete without one keeps what is there; Background takes both off, and the object goes.
    #[test]
    fn each_policy_puts_its_finalizer_and_background_takes_them_off() {
        let mut w = World::new();
        w.create(SET);
        w.run(vec![delete_with(Kind::ReplicaSet, "rs", Some(PropagationPolicy::Orphan))]);
        assert_eq!(finalizers(&w, Kind::ReplicaSet, "rs"), ["orphan"]);
        w.run(vec![delete_with(Kind::ReplicaSet, "rs", None)]);
        assert_eq!(finalizers(&w, Kind::ReplicaSet, "rs"), ["orphan"], "no policy: kept");
        w.run(vec![delete_with(Kind::ReplicaSet, "rs", Some(PropagationPolicy::Foreground))]);
        assert_eq!(finalizers(&w, Kind::ReplicaSet, "rs"), ["foregroundDeletion"]);
        w.run(vec![delete_with(Kind::ReplicaSet, "rs", Some(PropagationPolicy::Background))]);
        assert!(!w.has(Kind::ReplicaSet, "default", "rs"), "nothing holds it any more");
    }

    /// An orphaning delete keeps the dependents, without their reference to the owner, and
    /// then the owner goes.
    #[test]
    fn an_orphaning_delete_keeps_the_dependents() {
        let mut w = World::new();
        let mut c = Collector::new(Settings::default());
        w.create(SET);
        let uid = w.uid(Kind::ReplicaSet, "default", "rs");
        w.create(&(owned_pod("a", "rs", uid) + &owned_pod("b", "rs", uid)));
        assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty());
        let (_, changed) = w.run(vec![delete_with(Kind::ReplicaSet, "rs", Some(PropagationPolicy::Orphan))]);
        assert!(w.has(Kind::ReplicaSet, "default", "rs"), "held by its finalizer");
        w.settle(&mut c, changed);
        assert!(!w.has(Kind::ReplicaSet, "default", "rs"), "gone once its dependents are orphaned");
        for pod in ["a", "b"] {
            assert!(w.has(Kind::Pod, "default", pod), "{pod} is kept");
            assert!(owner_uids(&w, pod).is_empty(), "{pod} no longer names the set");
        }
        // Nothing left to do: a full round proposes nothing.
        assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty());
    }

    /// A foreground delete keeps the owner until the dependents that block it are gone, down
    /// the chain (a Deployment's set is deleted in the foreground in turn); a bound pod in its
    /// grace period holds them all until its node finishes it.
    #[test]
    fn a_foreground_delete_waits_for_the_blocking_dependents() {
        let mut w = World::with(NODE_N);
        let mut c = Collector::new(Settings::default());
        w.create(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  replicas: 0\n  \
             selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    \
             spec: {containers: [{name: c, image: nginx}]}\n",
        );
        let d = w.uid(Kind::Deployment, "default", "d");
        w.create(&SET.replace(
            "metadata: {name: rs}",
            &format!(
                "metadata: {{name: rs, ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: d, \
                 uid: '{d}', controller: true, blockOwnerDeletion: true}}]}}"
            ),
        ));
        let rs = w.uid(Kind::ReplicaSet, "default", "rs");
        let blocking = |pod: String| pod.replace("controller: true", "controller: true, blockOwnerDeletion: true");
        // b runs on n: its deletion waits for the node.
        let b = blocking(owned_pod("b", "rs", rs)).replace("spec: {containers", "spec: {nodeName: n, containers");
        w.create(&(blocking(owned_pod("a", "rs", rs)) + &b));
        assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty());

        let (_, changed) = w.run(vec![delete_with(Kind::Deployment, "d", Some(PropagationPolicy::Foreground))]);
        w.settle(&mut c, changed);
        assert!(!w.has(Kind::Pod, "default", "a"), "an unbound pod goes at once");
        assert!(w.pod("b").metadata.deletion_timestamp.is_some(), "b is terminating");
        assert_eq!(finalizers(&w, Kind::ReplicaSet, "rs"), ["foregroundDeletion"], "the set waits in turn");
        assert_eq!(finalizers(&w, Kind::Deployment, "d"), ["foregroundDeletion"], "the deployment waits");

        // The node finishes b: the set goes, then the deployment.
        let (_, changed) = w.run(vec![Command::Delete {
            key: ObjectKey::new(Kind::Pod, "default", "b"),
            grace_period_seconds: Some(0),
            preconditions: Preconditions::default(),
            propagation_policy: None,
        }]);
        w.settle(&mut c, changed);
        assert!(!w.has(Kind::ReplicaSet, "default", "rs"));
        assert!(!w.has(Kind::Deployment, "default", "d"));
    }

    /// A dependent another owner keeps is not deleted with an owner deleted in the
    /// foreground: its reference to that owner is removed instead, which lets the owner go.
    #[test]
    fn a_dependent_with_another_owner_lets_a_foreground_owner_go() {
        let mut w = World::new();
        let mut c = Collector::new(Settings::default());
        w.create(SET);
        w.create(&SET.replace("name: rs", "name: other"));
        let (rs, other) = (w.uid(Kind::ReplicaSet, "default", "rs"), w.uid(Kind::ReplicaSet, "default", "other"));
        let pod = owned_pod("p", "rs", rs).replace(
            "controller: true}]",
            &format!(
                "controller: true, blockOwnerDeletion: true}}, {{apiVersion: apps/v1, kind: ReplicaSet, name: other, \
                 uid: '{other}'}}]"
            ),
        );
        w.create(&pod);
        assert_eq!(owner_uids(&w, "p"), [rs, other]);
        let (_, changed) = w.run(vec![delete_with(Kind::ReplicaSet, "rs", Some(PropagationPolicy::Foreground))]);
        w.settle(&mut c, changed);
        assert!(!w.has(Kind::ReplicaSet, "default", "rs"));
        assert_eq!(owner_uids(&w, "p"), [other], "p is kept by its other owner");
    }

    /// Two objects that own each other, both blocking: a foreground delete of one still
    /// finishes (the other stops blocking before it is deleted in the foreground, as
    /// Kubernetes' collector does), and both go.
    #[test]
    fn owners_that_own_each_other_go_in_the_foreground() {
        let mut w = World::new();
        let mut c = Collector::new(Settings::default());
        w.create(SET);
        w.create(&SET.replace("name: rs", "name: other"));
        let reference = |name: &str, uid: Uid| OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: name.into(),
            uid,
            controller: None,
            block_owner_deletion: Some(true),
        };
        let (a, b) = (w.uid(Kind::ReplicaSet, "default", "rs"), w.uid(Kind::ReplicaSet, "default", "other"));
        let mut rs = w.state.get(&ObjectKey::new(Kind::ReplicaSet, "default", "rs")).cloned().expect("rs");
        rs.meta_mut().owner_references.push(reference("other", b));
        let mut other = w.state.get(&ObjectKey::new(Kind::ReplicaSet, "default", "other")).cloned().expect("other");
        other.meta_mut().owner_references.push(reference("rs", a));
        w.run(vec![Command::Update(rs), Command::Update(other)]);
        assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty(), "each has its owner");
        let (_, changed) = w.run(vec![delete_with(Kind::ReplicaSet, "rs", Some(PropagationPolicy::Foreground))]);
        // The first round's unblocking of `other` is lost (a conflict, a lost proposal); its
        // deletion applies: it is proposed again from `other`'s own finalization.
        let first = c.reconcile(&w.state, w.now_ms, false, &changed, &[]);
        assert!(first.iter().any(|cmd| matches!(cmd, Command::Update(o) if o.meta().name == "other")), "{first:?}");
        let kept: Vec<Command> = first.iter().filter(|cmd| !matches!(cmd, Command::Update(_))).cloned().collect();
        let lost: Vec<(Command, Fate)> = first
            .into_iter()
            .filter(|cmd| matches!(cmd, Command::Update(_)))
            .map(|cmd| (cmd, Fate::NotProposed))
            .collect();
        let (mut outcomes, changed) = w.run(kept);
        outcomes.extend(lost);
        let next = c.reconcile(&w.state, w.now_ms, false, &changed, &outcomes);
        let (_, changed) = w.run(next);
        w.settle(&mut c, changed);
        assert!(!w.has(Kind::ReplicaSet, "default", "rs"));
        assert!(!w.has(Kind::ReplicaSet, "default", "other"));
    }

    /// An owner with more dependents than a round proposes is orphaned over several rounds
    /// (the collector asks for the next one at once), and its finalizer goes only after the
    /// last dependent's reference.
    #[test]
    fn an_orphaning_delete_of_many_dependents_spans_rounds() {
        let mut w = World::new();
        let mut c = Collector::new(Settings::default());
        w.create(SET);
        let uid = w.uid(Kind::ReplicaSet, "default", "rs");
        let total = GC_ROUND_MAX + 10;
        for chunk in (0..total).collect::<Vec<_>>().chunks(2_000) {
            let yaml: String = chunk.iter().map(|i| owned_pod(&format!("p{i}"), "rs", uid)).collect();
            w.create(&yaml);
        }
        let (_, changed) = w.run(vec![delete_with(Kind::ReplicaSet, "rs", Some(PropagationPolicy::Orphan))]);
        let first = c.reconcile(&w.state, w.now_ms, false, &changed, &[]);
        assert_eq!(first.len(), GC_ROUND_MAX, "a full round's worth");
        assert!(c.more(), "the rest next round");
        assert!(first.iter().all(|cmd| matches!(cmd, Command::Update(o) if o.key().kind == Kind::Pod)));
        let (outcomes, changed) = w.run(first);
        let second = c.reconcile(&w.state, w.now_ms, false, &changed, &outcomes);
        assert_eq!(second.len(), 10, "the last dependents, not yet the finalizer: {}", second.len());
        let (outcomes, changed) = w.run(second);
        let third = c.reconcile(&w.state, w.now_ms, false, &changed, &outcomes);
        assert!(
            matches!(&third[..], [Command::Update(o)] if o.key().kind == Kind::ReplicaSet),
            "then the finalizer: {third:?}"
        );
        w.run(third);
        assert!(!w.has(Kind::ReplicaSet, "default", "rs"));
        assert_eq!(w.state.owned_by(uid).count(), 0);
        assert_eq!(w.pods().len(), total);
    }

    /// A foreground owner none of whose dependents blocks it goes at once; its dependents
    /// are deleted all the same.
    #[test]
    fn a_foreground_owner_without_blocking_dependents_goes_at_once() {
        let mut w = World::new();
        let mut c = Collector::new(Settings::default());
        w.create(SET);
        let uid = w.uid(Kind::ReplicaSet, "default", "rs");
        w.create(&owned_pod("a", "rs", uid));
        let (_, changed) = w.run(vec![delete_with(Kind::ReplicaSet, "rs", Some(PropagationPolicy::Foreground))]);
        let commands = c.reconcile(&w.state, w.now_ms, false, &changed, &[]);
        assert_eq!(commands.len(), 2, "the pod's delete and the finalizer's removal: {commands:?}");
        let (outcomes, changed) = w.run(commands);
        assert!(outcomes.iter().all(|(_, f)| matches!(f, Fate::Applied(Ok(_)))), "{outcomes:?}");
        assert!(!w.has(Kind::ReplicaSet, "default", "rs") && !w.has(Kind::Pod, "default", "a"));
        assert!(c.reconcile(&w.state, w.now_ms, false, &changed, &outcomes).is_empty());
    }

    /// A collector of a new term (which starts with a full round and remembers nothing)
    /// finishes an orphaning deletion the last one started.
    #[test]
    fn a_new_term_finishes_a_deletion_started_before() {
        let mut w = World::new();
        w.create(SET);
        let uid = w.uid(Kind::ReplicaSet, "default", "rs");
        w.create(&(owned_pod("a", "rs", uid) + &owned_pod("b", "rs", uid)));
        w.run(vec![delete_with(Kind::ReplicaSet, "rs", Some(PropagationPolicy::Orphan))]);
        let mut old = Collector::new(Settings::default());
        let commands = old.reconcile(&w.state, w.now_ms, true, &[], &[]);
        assert_eq!(commands.len(), 2, "{commands:?}");
        // Only the first update applied before the term ended.
        let (_, _) = w.run(commands.into_iter().take(1).collect());
        let mut new = Collector::new(Settings::default());
        let commands = new.reconcile(&w.state, w.now_ms, true, &[], &[]);
        let (_, changed) = w.run(commands);
        w.settle(&mut new, changed);
        assert!(!w.has(Kind::ReplicaSet, "default", "rs"));
        assert!(owner_uids(&w, "a").is_empty() && owner_uids(&w, "b").is_empty());
    }

    /// A policy's finalizer is refused where the object has no room for it (nothing is
    /// written); a pod whose graceful deletion is pending keeps its finalizers, as in
    /// Kubernetes, unless the delete shortens its grace period.
    #[test]
    fn a_policy_delete_within_the_finalizer_limit_and_a_pending_grace() {
        let mut w = World::with(NODE_N);
        let full: Vec<String> = (0..crate::validation::FINALIZERS_MAX).map(|i| format!("example.com/f{i}")).collect();
        w.create(
            &SET.replace("metadata: {name: rs}", &format!("metadata: {{name: rs, finalizers: [{}]}}", full.join(", "))),
        );
        let (outcomes, _) = w.run(vec![delete_with(Kind::ReplicaSet, "rs", Some(PropagationPolicy::Orphan))]);
        let Fate::Applied(Err(e)) = &outcomes[0].1 else { panic!("{outcomes:?}") };
        assert!(e.to_string().contains("metadata.finalizers: Too many: 33: must have at most 32 items"), "{e}");
        let rs = w.state.get(&ObjectKey::new(Kind::ReplicaSet, "default", "rs")).expect("rs");
        assert!(rs.meta().deletion_timestamp.is_none(), "nothing written");

        w.create(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: n, terminationGracePeriodSeconds: 30, \
             containers: [{name: c, image: x}]}\n",
        );
        let delete_pod = |grace: Option<i64>| Command::Delete {
            key: ObjectKey::new(Kind::Pod, "default", "p"),
            grace_period_seconds: grace,
            preconditions: Preconditions::default(),
            propagation_policy: Some(PropagationPolicy::Orphan),
        };
        w.run(vec![Command::Delete {
            key: ObjectKey::new(Kind::Pod, "default", "p"),
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
            propagation_policy: None,
        }]);
        w.run(vec![delete_pod(None)]);
        assert!(w.pod("p").metadata.finalizers.is_empty(), "pending graceful deletion: kept as it was");
        w.run(vec![delete_pod(Some(10))]);
        assert_eq!(finalizers(&w, Kind::Pod, "p"), ["orphan"], "a shorter grace period: taken");
    }

    /// An owner reference the collector cannot resolve (a kind orch does not have) never
    /// counts as gone, as in Kubernetes.
    #[test]
    fn an_owner_of_an_unknown_kind_keeps_its_dependent() {
        let mut w = World::new();
        let mut c = Collector::new(Settings::default());
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, ownerReferences: [{apiVersion: batch/v1, kind: Job, \
                    name: j, uid: '00000000-0000-0000-0000-00000000002a'}]}\nspec: {containers: [{name: c, image: x}]}\n";
        let changed = w.create(yaml);
        assert!(c.reconcile(&w.state, w.now_ms, false, &changed, &[]).is_empty());
        assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty());
    }

    /// A namespace being deleted is emptied, and then goes.
    #[test]
    fn a_terminating_namespace_is_emptied_and_goes() {
        let mut w = World::new();
        let mut c = Collector::new(Settings::default());
        w.create("apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n");
        w.create(&SET.replace("metadata: {name: rs}", "metadata: {name: rs, namespace: team}"));
        w.create("apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: team}\nspec: {containers: [{name: c, image: x}]}\n");
        let (_, changed) = w.run(vec![Command::Delete {
            key: ObjectKey::new(Kind::Namespace, "", "team"),
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
            propagation_policy: None,
        }]);
        assert!(w.has(Kind::Namespace, "", "team"), "terminating while it holds objects");
        w.settle(&mut c, changed);
        assert!(!w.has(Kind::Namespace, "", "team"), "emptied, then removed");
    }

    /// Events expire an hour after they last happened, on a full round.
    #[test]
    fn events_expire_after_their_ttl() {
        let mut w = World::new();
        let mut c = Collector::new(Settings::default());
        w.create(
            "apiVersion: v1\nkind: Event\nmetadata: {name: e}\ninvolvedObject: {kind: Pod, name: p}\nreason: Started\n",
        );
        assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty());
        w.now_ms += 3_600_000;
        let commands = c.reconcile(&w.state, w.now_ms, true, &[], &[]);
        assert_eq!(commands.len(), 1, "{commands:?}");
        w.run(commands);
        assert!(!w.has(Kind::Event, "default", "e"));
    }

    /// The pods of a deleted node are force-deleted once its quarantine is over, terminating
    /// or not; a pod on a node that exists is left alone.
    #[test]
    fn the_pods_of_a_deleted_node_are_force_deleted_after_the_quarantine() {
        let node = |name: &str| {
            format!(
                "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus: {{capacity: {{cpu: '4', pods: '10'}}, \
                 conditions: [{{type: Ready, status: 'True'}}]}}\n"
            )
        };
        let pod = |name: &str, node: &str| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{nodeName: {node}, containers: [{{name: c, image: x}}]}}\n"
            )
        };
        let mut w = World::with(&(node("lost") + "---\n" + &node("fine")));
        w.create(&(pod("a", "lost") + "---\n" + &pod("b", "lost") + "---\n" + &pod("c", "fine")));
        // b is terminating (bound: it waits for its node, which will never answer).
        let (_, _) = w.run(vec![Command::Delete {
            key: ObjectKey::new(Kind::Pod, "default", "b"),
            grace_period_seconds: Some(30),
            preconditions: Preconditions::default(),
            propagation_policy: None,
        }]);
        let mut c = Collector::new(Settings { orphan_quarantine_ms: 5_000, ..Settings::default() });
        assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty());
        let (_, changed) = w.run(vec![Command::Delete {
            key: ObjectKey::new(Kind::Node, "", "lost"),
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
            propagation_policy: None,
        }]);
        let gone_at = w.now_ms;
        assert!(c.reconcile(&w.state, gone_at, false, &changed, &[]).is_empty(), "quarantined");
        assert_eq!(c.wake_at_ms(), Some(gone_at + 5_000));
        let commands = c.reconcile(&w.state, gone_at + 5_000, false, &[], &[]);
        assert_eq!(commands.len(), 2, "{commands:?}");
        // The first attempt is lost: a second later they are proposed again, without a new
        // quarantine.
        assert_eq!(c.wake_at_ms(), Some(gone_at + 5_000 + ORPHAN_RETRY_MS));
        let lost: Vec<(Command, Fate)> = commands.into_iter().map(|c| (c, Fate::Unknown)).collect();
        let again = c.reconcile(&w.state, gone_at + 6_000, false, &[], &lost);
        assert_eq!(again.len(), 2, "{again:?}");
        let (_, changed) = w.run(again);
        assert!(!w.has(Kind::Pod, "default", "a") && !w.has(Kind::Pod, "default", "b"));
        assert!(w.has(Kind::Pod, "default", "c"));
        assert!(c.reconcile(&w.state, w.now_ms, false, &changed, &[]).is_empty());
        assert_eq!(c.wake_at_ms(), None);
    }

    /// A node that comes back under its name during the quarantine keeps its pods; deleted
    /// again, they get a fresh quarantine.
    #[test]
    fn a_node_back_within_the_quarantine_keeps_its_pods() {
        let node = NODE_N;
        let mut w = World::with(node);
        w.create(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {nodeName: n, containers: [{name: c, image: x}]}\n",
        );
        let mut c = Collector::new(Settings { orphan_quarantine_ms: 5_000, ..Settings::default() });
        c.reconcile(&w.state, w.now_ms, true, &[], &[]);
        let delete_node = Command::Delete {
            key: ObjectKey::new(Kind::Node, "", "n"),
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
            propagation_policy: None,
        };
        let (_, changed) = w.run(vec![delete_node.clone()]);
        assert!(c.reconcile(&w.state, w.now_ms, false, &changed, &[]).is_empty());
        let changed = w.create(node);
        assert!(c.reconcile(&w.state, w.now_ms, false, &changed, &[]).is_empty());
        assert_eq!(c.wake_at_ms(), None, "the quarantine ended with the node's return");
        let (_, changed) = w.run(vec![delete_node]);
        let again_at = w.now_ms;
        assert!(c.reconcile(&w.state, again_at, false, &changed, &[]).is_empty());
        assert_eq!(c.wake_at_ms(), Some(again_at + 5_000), "a fresh quarantine");
        assert!(w.has(Kind::Pod, "default", "a"));
    }
}
