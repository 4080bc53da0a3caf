//! Metadata shared by every object, and references between objects.

use crate::ids::{Revision, Uid};
use crate::strmap::StrMap;
use crate::text::Text;
use crate::time::Time;

model! {
    /// Kubernetes' `ObjectMeta`: identity, labels, and the fields the state machine maintains.
    pub struct ObjectMeta {
        /// Unique per kind and namespace.
        pub name: Text,
        /// A prefix from which the state machine derives a unique name when `name` is empty.
        pub generate_name: Option<Text>,
        /// The namespace of a namespaced object; `default` when left out.
        pub namespace: Option<Text>,
        /// Set by the state machine on create, derived from the log index.
        pub uid: Option<Uid>,
        /// The log index of the entry that last changed the object.
        pub resource_version: Option<Revision>,
        /// Incremented on every change of the spec.
        pub generation: Option<i64>,
        /// The proposer's timestamp of the entry that created the object.
        pub creation_timestamp: Option<Time>,
        /// Set when a graceful deletion starts.
        pub deletion_timestamp: Option<Time>,
        /// The grace period of a pending deletion.
        pub deletion_grace_period_seconds: Option<i64>,
        /// Identifying key/value pairs, matched by selectors.
        pub labels: StrMap,
        /// Non-identifying key/value pairs.
        pub annotations: StrMap,
        /// The objects this one depends on (for garbage collection).
        [merge "uid"] pub owner_references: Vec<OwnerReference>,
        /// Keys that must be removed before the object is finally deleted.
        [merge] pub finalizers: Vec<Text>,
    }
}

impl ObjectMeta {
    /// The namespace, or "" for a cluster-scoped object.
    pub fn namespace_str(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }

    /// The revision, or 0 when unset.
    pub fn revision(&self) -> Revision {
        self.resource_version.unwrap_or_default()
    }

    /// The owner reference marked as the controller, if any.
    pub fn controller_ref(&self) -> Option<&OwnerReference> {
        self.owner_references.iter().find(|r| r.controller == Some(true))
    }
}

model! {
    /// A reference from an object to its owner.
    pub struct OwnerReference {
        pub api_version: Text,
        pub kind: Text,
        pub name: Text,
        pub uid: Uid,
        /// True for the owner that manages this object.
        pub controller: Option<bool>,
        /// When true, the owner cannot be deleted before this object is.
        pub block_owner_deletion: Option<bool>,
    }
}

model! {
    /// A reference to any object (events, endpoints).
    pub struct ObjectReference {
        pub kind: Option<Text>,
        pub namespace: Option<Text>,
        pub name: Option<Text>,
        pub uid: Option<Uid>,
        pub api_version: Option<Text>,
        pub resource_version: Option<Revision>,
        pub field_path: Option<Text>,
    }
}

model! {
    /// A label query: every `matchLabels` pair and every expression must hold.
    pub struct LabelSelector {
        pub match_labels: StrMap,
        pub match_expressions: Vec<LabelSelectorRequirement>,
    }
}

model! {
    /// One expression of a [`LabelSelector`].
    pub struct LabelSelectorRequirement {
        pub key: Text,
        pub operator: SelectorOperator,
        pub values: Vec<Text>,
    }
}

string_enum! {
    /// The operator of a selector expression.
    pub enum SelectorOperator {
        In = "In",
        NotIn = "NotIn",
        Exists = "Exists",
        DoesNotExist = "DoesNotExist",
    }
}

#[allow(clippy::derivable_impls)] // string_enum! owns the derive list
impl Default for SelectorOperator {
    fn default() -> Self {
        Self::In
    }
}

string_enum! {
    /// The status of a condition.
    pub enum ConditionStatus {
        True = "True",
        False = "False",
        Unknown = "Unknown",
    }
}

#[allow(clippy::derivable_impls)] // string_enum! owns the derive list
impl Default for ConditionStatus {
    fn default() -> Self {
        Self::Unknown
    }
}
