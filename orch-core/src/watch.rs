//! Watch events produced by [`crate::state::State::apply`] and the filters watchers use.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::fields::FieldSelector;
use crate::ids::Revision;
use crate::object::{Kind, Object};
use crate::selector::Selector;

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub enum EventType {
    /// The object appeared (created, or it now matches the filter).
    Added,
    /// The object changed.
    Modified,
    /// The object is gone (removed, or it no longer matches the filter).
    Deleted,
}

/// A committed change, in log order.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[bincode(decode_context = "crate::codec::Format")]
pub struct WatchEvent {
    /// The log index of the entry that made the change.
    pub revision: Revision,
    /// What happened.
    pub event_type: EventType,
    /// The object after the change; for `Deleted`, its last state (at `revision`).
    pub object: Object,
    /// For `Modified`, the object before the change: filters use it to turn a change that
    /// enters or leaves their selection into `Added` or `Deleted`.
    pub prev: Option<Object>,
}

/// Which events a watcher wants: every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct WatchFilter {
    /// Only this kind.
    pub kind: Option<Kind>,
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only objects whose labels match.
    pub labels: Selector,
    /// Only pods bound to this node (the field selector `spec.nodeName=NODE`).
    pub node_name: Option<String>,
    /// Only objects whose fields match.
    pub fields: FieldSelector,
}

impl WatchFilter {
    /// Everything.
    pub fn all() -> Self {
        Self::default()
    }

    /// True when the object is in the filter's selection.
    pub fn matches(&self, obj: &Object) -> bool {
        if self.kind.is_some_and(|k| k != obj.kind()) {
            return false;
        }
        let meta = obj.meta();
        if let Some(ns) = &self.namespace
            && meta.namespace_str() != ns
        {
            return false;
        }
        if let Some(node) = &self.node_name {
            let bound = obj.as_pod().and_then(|p| p.spec.node_name.as_deref());
            if bound != Some(node.as_str()) {
                return false;
            }
        }
        self.labels.matches(&meta.labels) && self.fields.matches(obj)
    }

    /// The event as this watcher sees it, or None when it is outside the selection.
    ///
    /// A change that brings an object into the selection is `Added`; one that takes it out
    /// is `Deleted` (carrying the new state), as the Kubernetes watch cache reports them.
    pub fn view(&self, event: &WatchEvent) -> Option<WatchEvent> {
        let now = self.matches(&event.object);
        let event_type = match event.event_type {
            EventType::Modified => {
                let before = event.prev.as_ref().is_some_and(|p| self.matches(p));
                match (before, now) {
                    (true, true) => EventType::Modified,
                    (false, true) => EventType::Added,
                    (true, false) => EventType::Deleted,
                    (false, false) => return None,
                }
            }
            other if now => other,
            _ => return None,
        };
        Some(WatchEvent { event_type, ..event.clone() })
    }
}
