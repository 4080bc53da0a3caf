//! The indexes `apply` maintains beside the objects, for the scheduler and the controllers
//! (what Kubernetes' informers index): what the pods bound to each node take of it, and the
//! objects each owner owns. Derived from the objects alone: never in a snapshot (rebuilt when
//! one is read) and never in the digest; [`Indexes::check`] recomputes them.
//!
//! [`Indexes::update`] is called wherever the object map changes (a write, a removal, the
//! rollback of a failed request), with the key's value before and after.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::fit::{NodeUsage, occupies};
use crate::ids::Uid;
use crate::object::{Object, ObjectKey};
use crate::state::Objects;
use crate::text::Text;

/// The indexes of a state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Indexes {
    /// By node name: what the pods that occupy it ([`occupies`]) take of it.
    pods_by_node: imbl::OrdMap<Text, NodeUsage>,
    /// By owner uid: the keys of the objects whose owner references name it.
    owned: imbl::OrdMap<Uid, imbl::OrdSet<ObjectKey>>,
}

/// The owners `obj` names, sorted and once each.
fn owners(obj: Option<&Object>) -> Vec<Uid> {
    let mut uids: Vec<Uid> = obj.map(|o| o.meta().owner_references.iter().map(|r| r.uid).collect()).unwrap_or_default();
    uids.sort_unstable();
    uids.dedup();
    uids
}

impl Indexes {
    /// Updates the indexes for a write of `key` that turns `old` into `new` (None: absent).
    pub(crate) fn update(&mut self, key: &ObjectKey, old: Option<&Object>, new: Option<&Object>) {
        self.update_usage(old, new);
        let (before, after) = (owners(old), owners(new));
        if before == after {
            return;
        }
        for uid in before.iter().filter(|u| !after.contains(u)) {
            let mut keys = self.owned.get(uid).cloned().unwrap_or_default();
            keys.remove(key);
            if keys.is_empty() {
                self.owned.remove(uid);
            } else {
                self.owned.insert(*uid, keys);
            }
        }
        for uid in after.iter().filter(|u| !before.contains(u)) {
            let mut keys = self.owned.get(uid).cloned().unwrap_or_default();
            keys.insert(key.clone());
            self.owned.insert(*uid, keys);
        }
    }

    fn update_usage(&mut self, old: Option<&Object>, new: Option<&Object>) {
        let occupying = |o: Option<&Object>| match o {
            Some(Object::Pod(p)) if occupies(p) => Some(Arc::clone(p)),
            _ => None,
        };
        let (old, new) = (occupying(old), occupying(new));
        // A status write of a running pod: the same node, the same requests and ports.
        if let (Some(a), Some(b)) = (&old, &new)
            && a.spec == b.spec
        {
            return;
        }
        for (pod, adding) in [(old, false), (new, true)] {
            let Some(pod) = pod else { continue };
            let node = pod.spec.node_name.clone().unwrap_or_default();
            let mut usage = self.pods_by_node.get(&node).cloned().unwrap_or_default();
            if adding {
                usage.add(&pod);
            } else {
                usage.remove(&pod);
            }
            if usage == NodeUsage::default() {
                self.pods_by_node.remove(&node);
            } else {
                self.pods_by_node.insert(node, usage);
            }
        }
    }

    /// The indexes of `objects`, computed from scratch (summed in place first: through
    /// [`Indexes::update`] each object would copy its entries).
    pub(crate) fn build(objects: &Objects) -> Self {
        let mut usage: BTreeMap<Text, NodeUsage> = BTreeMap::new();
        let mut owned: BTreeMap<Uid, BTreeSet<ObjectKey>> = BTreeMap::new();
        for (key, obj) in objects {
            if let Object::Pod(p) = obj
                && occupies(p)
            {
                usage.entry(p.spec.node_name.clone().unwrap_or_default()).or_default().add(p);
            }
            for uid in owners(Some(obj)) {
                owned.entry(uid).or_default().insert(key.clone());
            }
        }
        Self {
            pods_by_node: usage.into_iter().filter(|(_, u)| *u != NodeUsage::default()).collect(),
            owned: owned.into_iter().map(|(uid, keys)| (uid, keys.into_iter().collect::<imbl::OrdSet<_>>())).collect(),
        }
    }

    /// Whether these are the indexes of `objects`.
    ///
    /// # Errors
    /// Which index disagrees with the objects.
    pub(crate) fn check(&self, objects: &Objects) -> Result<(), String> {
        let built = Self::build(objects);
        if self.pods_by_node != built.pods_by_node {
            return Err("the index of what pods take of each node disagrees with the pods".to_owned());
        }
        if self.owned != built.owned {
            return Err("the index of objects by owner disagrees with the owner references".to_owned());
        }
        Ok(())
    }

    /// What the pods bound to node `name` take of it (None: no pod occupies it).
    pub(crate) fn node_usage(&self, name: &str) -> Option<&NodeUsage> {
        self.pods_by_node.get(name)
    }

    /// The keys of the objects owned by `owner`, in key order.
    pub(crate) fn owned_by(&self, owner: Uid) -> impl Iterator<Item = &ObjectKey> + '_ {
        self.owned.get(&owner).into_iter().flat_map(|keys| keys.iter())
    }
}
