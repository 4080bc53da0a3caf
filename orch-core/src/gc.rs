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
//! the owner index); a deletion that failed is looked at again in the next round. Not yet:
//! `propagationPolicy` Orphan and Foreground (every delete is a background cascade).

use std::collections::{BTreeMap, BTreeSet};

use crate::command::{Command, Preconditions};
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

/// Whether the owner `reference` names may exist: it does (the same kind, name and uid), or
/// the reference cannot be resolved, which Kubernetes' collector never takes for absent (an
/// object holding one is not collected).
fn owner_exists(state: &State, reference: &OwnerReference, namespace: &str) -> bool {
    match owner_key(reference, namespace) {
        None => true,
        Some(key) => state.get(&key).and_then(|o| o.meta().uid) == Some(reference.uid),
    }
}

fn delete(key: ObjectKey, meta: &ObjectMeta) -> Command {
    Command::Delete {
        key,
        grace_period_seconds: None,
        preconditions: Preconditions { uid: meta.uid, resource_version: None },
    }
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

    /// The deletion of the object at `key`, if it should go now.
    fn verdict(&mut self, state: &State, key: &ObjectKey, now_ms: i64) -> Option<Command> {
        let Some(obj) = state.get(key) else {
            self.orphans.remove(key);
            return None;
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
                    return Some(Command::Delete {
                        key: key.clone(),
                        grace_period_seconds: Some(0),
                        preconditions: Preconditions { uid: meta.uid, resource_version: None },
                    });
                }
            } else {
                self.orphans.remove(key);
            }
        }
        if meta.deletion_timestamp.is_some() {
            return None;
        }
        let namespace = meta.namespace_str();
        let orphaned = !meta.owner_references.is_empty()
            && meta.owner_references.iter().all(|r| !owner_exists(state, r, namespace));
        let namespace_going = key.kind.namespaced()
            && state
                .get(&ObjectKey::new(Kind::Namespace, "", namespace))
                .is_some_and(|ns| ns.meta().deletion_timestamp.is_some());
        let expired = matches!(obj, Object::Event(e) if {
            let last = e.last_timestamp.or(e.first_timestamp).or(e.metadata.creation_timestamp);
            last.is_some_and(|t| t.as_millis().saturating_add(self.settings.event_ttl_ms) <= now_ms)
        });
        (orphaned || namespace_going || expired).then(|| delete(key.clone(), meta))
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
            if let Command::Delete { key, .. } = command
                && !matches!(fate, Fate::Applied(Ok(_)))
            {
                look.insert(key.clone());
            }
        }
        if full {
            self.owners.clear();
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
        let mut commands = Vec::new();
        let mut keys = look.into_iter();
        for key in keys.by_ref() {
            if let Some(command) = self.verdict(state, &key, now_ms) {
                commands.push(command);
                if commands.len() >= GC_ROUND_MAX {
                    break;
                }
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
        }]);
        // Recreated under the same name before the collector ran: a new uid.
        let mut changed = changed;
        changed.extend(w.create(SET));
        w.settle(&mut c, changed);
        assert!(!w.has(Kind::Pod, "default", "a"), "a's only owner is gone");
        assert!(w.has(Kind::Pod, "default", "b"), "b's other owner is there");
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
        }]);
        let mut c = Collector::new(Settings { orphan_quarantine_ms: 5_000, ..Settings::default() });
        assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty());
        let (_, changed) = w.run(vec![Command::Delete {
            key: ObjectKey::new(Kind::Node, "", "lost"),
            grace_period_seconds: None,
            preconditions: Preconditions::default(),
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
        let node = "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nstatus: {capacity: {cpu: '4', pods: '10'}, \
                    conditions: [{type: Ready, status: 'True'}]}\n";
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
