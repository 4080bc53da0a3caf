//! Adoption of orphans, as Kubernetes' `ControllerRefManager`: a controller takes as its own
//! the objects of its namespace that match its selector and have no controller (a ReplicaSet
//! the pods of a set deleted with `propagationPolicy: Orphan`, a Deployment such sets), by
//! adding a controller reference with `blockOwnerDeletion`, under the object's
//! resourceVersion. A controller being deleted adopts nothing. An owned object whose labels
//! no longer match its controller's selector is released ([`release`]: its reference to the
//! controller removed, under its resourceVersion), so `kubectl label pod web-x app-` takes a
//! pod out of its set, which replaces it; a controller being deleted releases nothing.
//!
//! [`Orphans`] keeps the keys of the objects of one kind that could be adopted, by namespace
//! (orphans are rare: the pods and sets a delete with `propagationPolicy: Orphan` left, pods
//! made by hand), so that a controller's sync looks at its namespace's orphans only, not at
//! all its objects; it is updated from the changed keys and rebuilt on full rounds.
//!
//! Not yet: the state machine does not check, when an adoption applies, that the owner still
//! exists and is not being deleted (Kubernetes narrows that window with a fresh read before
//! adopting); an object adopted by an owner deleted meanwhile is then collected with it.

use std::collections::{BTreeMap, BTreeSet};

use crate::command::Command;
use crate::meta::{ObjectMeta, OwnerReference};
use crate::object::{Kind, Object, ObjectKey};
use crate::selector::Selector;
use crate::state::State;

/// The objects of one kind without a controller, by namespace.
#[derive(Debug, Default)]
pub struct Orphans {
    by_namespace: BTreeMap<String, BTreeSet<ObjectKey>>,
}

/// Whether `obj` is an object a controller may adopt: no controller, not being deleted, room
/// for one more owner reference, and for a pod not finished.
fn adoptable(obj: &Object) -> bool {
    let meta = obj.meta();
    let finished = obj.as_pod().is_some_and(|p| {
        matches!(p.status.phase, Some(crate::core_v1::PodPhase::Succeeded | crate::core_v1::PodPhase::Failed))
    });
    meta.controller_ref().is_none()
        && meta.deletion_timestamp.is_none()
        && meta.owner_references.len() < crate::validation::OWNER_REFERENCES_MAX
        && !finished
}

impl Orphans {
    /// Every object of `kind` without a controller in `state`.
    pub fn of(state: &State, kind: Kind) -> Self {
        let mut orphans = Self::default();
        for obj in state.list(kind, None) {
            orphans.observe(obj.key(), Some(obj));
        }
        orphans
    }

    /// Notes the object at `key` as it is now (`None`: gone); true when it is an orphan.
    pub fn observe(&mut self, key: ObjectKey, now: Option<&Object>) -> bool {
        let orphan = now.is_some_and(adoptable);
        let namespace = key.namespace.to_string();
        if orphan {
            self.by_namespace.entry(namespace).or_default().insert(key);
        } else if let Some(keys) = self.by_namespace.get_mut(&namespace) {
            keys.remove(&key);
            if keys.is_empty() {
                self.by_namespace.remove(&namespace);
            }
        }
        orphan
    }

    /// The orphans of `namespace` whose labels `selector` matches, as they are in `state`.
    pub fn matching<'s>(&self, state: &'s State, namespace: &str, selector: &Selector) -> Vec<&'s Object> {
        let Some(keys) = self.by_namespace.get(namespace) else { return Vec::new() };
        keys.iter()
            .filter_map(|k| state.get(k))
            .filter(|o| adoptable(o) && !selector.is_empty() && selector.matches(&o.meta().labels))
            .collect()
    }
}

/// The uids of the controllers of kind `controllers` in the namespace of the object at `key`
/// whose selector matches it, if it is an orphan that [`Orphans::observe`] just noted: those
/// that would adopt it, to sync. The controllers of one namespace are few; an orphan's change
/// is rare.
pub fn would_adopt(state: &State, orphans: &mut Orphans, key: &ObjectKey, controllers: Kind) -> Vec<crate::ids::Uid> {
    let now = state.get(key);
    if !orphans.observe(key.clone(), now) {
        return Vec::new();
    }
    let Some(labels) = now.map(|o| &o.meta().labels) else { return Vec::new() };
    state
        .list(controllers, Some(key.namespace.as_str()))
        .filter_map(|obj| {
            let selector = match obj {
                Object::ReplicaSet(rs) => Selector::from(&rs.spec.selector),
                Object::Deployment(d) => Selector::from(&d.spec.selector),
                _ => return None,
            };
            (!selector.is_empty() && selector.matches(labels)).then_some(obj.meta().uid).flatten()
        })
        .collect()
}

/// The update that releases `owned` from the controller of uid `owner`: the reference to it
/// removed, under `owned`'s resourceVersion (a changed object is refused and looked at again).
pub fn release(owner: crate::ids::Uid, owned: &Object) -> Command {
    let mut released = owned.clone();
    released.meta_mut().owner_references.retain(|r| r.uid != owner);
    Command::Update(released)
}

/// The update that makes the object `orphan` the dependent of the controller `owner` (of
/// `api_version` and `kind`), under the orphan's resourceVersion.
pub fn adopt(owner: &ObjectMeta, api_version: &str, kind: &str, orphan: &Object) -> Command {
    let mut adopted = orphan.clone();
    adopted.meta_mut().owner_references.push(OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: owner.name.clone(),
        uid: owner.uid.unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    });
    Command::Update(adopted)
}
