//! Kinds, the [`Object`] enum that holds any stored object, and object keys.

use std::fmt;
use std::sync::Arc;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::apps_v1::{Deployment, ReplicaSet};
use crate::core_v1::{ConfigMap, Endpoints, Event, Namespace, Node, Pod, Secret, Service};
use crate::meta::ObjectMeta;
use crate::text::Text;

/// The kinds of object orch stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
#[derive(Default)]
pub enum Kind {
    /// `v1` Namespace (cluster-scoped).
    Namespace,
    /// `v1` Node (cluster-scoped).
    Node,
    /// `v1` Pod.
    #[default]
    Pod,
    /// `v1` Service.
    Service,
    /// `v1` Endpoints.
    Endpoints,
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` ReplicaSet.
    ReplicaSet,
    /// `v1` Event.
    Event,
    /// `v1` ConfigMap (storage format 14).
    ConfigMap,
    /// `v1` Secret (storage format 14).
    Secret,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 10] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Service,
        Kind::Endpoints,
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::Event,
        Kind::ConfigMap,
        Kind::Secret,
    ];

    /// The kind's name as in manifests (`Pod`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Node => "Node",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::Endpoints => "Endpoints",
            Kind::Deployment => "Deployment",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Event => "Event",
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }

    /// The `apiVersion` manifests of this kind carry.
    pub const fn api_version(self) -> &'static str {
        match self {
            Kind::Deployment | Kind::ReplicaSet => "apps/v1",
            _ => "v1",
        }
    }

    /// The lowercase plural used in messages and on the command line (`pods`).
    pub const fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Node => "nodes",
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::Endpoints => "endpoints",
            Kind::Deployment => "deployments",
            Kind::ReplicaSet => "replicasets",
            Kind::Event => "events",
            Kind::ConfigMap => "configmaps",
            Kind::Secret => "secrets",
        }
    }

    /// The short name kubectl accepts (`po`, `svc`, ...).
    pub const fn short_name(self) -> &'static str {
        match self {
            Kind::Namespace => "ns",
            Kind::Node => "no",
            Kind::Pod => "po",
            Kind::Service => "svc",
            Kind::Endpoints => "ep",
            Kind::Deployment => "deploy",
            Kind::ReplicaSet => "rs",
            Kind::Event => "ev",
            Kind::ConfigMap => "cm",
            // kubectl has no short name for secrets.
            Kind::Secret => "secret",
        }
    }

    /// True for kinds that live in a namespace.
    pub const fn namespaced(self) -> bool {
        !matches!(self, Kind::Namespace | Kind::Node)
    }

    /// Reads a kind as a user types it: `Pod`, `pod`, `pods`, `po` (case-insensitive).
    pub fn parse(text: &str) -> Option<Kind> {
        let lower = text.to_ascii_lowercase();
        Kind::ALL
            .into_iter()
            .find(|k| lower == k.as_str().to_ascii_lowercase() || lower == k.plural() || lower == k.short_name())
    }

    /// The kind of a manifest with this `apiVersion` and `kind`.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind && k.api_version() == api_version)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What identifies an object: kind, namespace ("" for cluster-scoped kinds) and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct ObjectKey {
    /// The kind.
    pub kind: Kind,
    /// The namespace, or "" for a cluster-scoped kind.
    pub namespace: Text,
    /// The name.
    pub name: Text,
}

impl ObjectKey {
    /// The key of `name` of `kind` in `namespace` (ignored for cluster-scoped kinds).
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        let namespace = if kind.namespaced() { namespace } else { "" };
        Self { kind, namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ObjectKey {
    /// `pods "web"` or `pods "default/web"`, as in Kubernetes' messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} \"{}\"", self.kind.plural(), self.name)
    }
}

/// Behaviour every stored kind shares.
pub trait Resource: Clone + PartialEq + fmt::Debug + Send + Sync + 'static {
    /// The kind.
    const KIND: Kind;
    /// The metadata.
    fn meta(&self) -> &ObjectMeta;
    /// The metadata, mutably.
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    /// True when `self` and `other` have the same spec: `generation` counts spec changes.
    fn same_spec(&self, other: &Self) -> bool;
    /// Replaces this object's status with `from`'s.
    fn copy_status_from(&mut self, from: &Self);
    /// Wraps the object.
    fn into_object(self) -> Object;
}

macro_rules! resource_with_spec_and_status {
    ($($ty:ident),*) => {$(
        impl Resource for $ty {
            const KIND: Kind = Kind::$ty;
            fn meta(&self) -> &ObjectMeta { &self.metadata }
            fn meta_mut(&mut self) -> &mut ObjectMeta { &mut self.metadata }
            fn same_spec(&self, other: &Self) -> bool { self.spec == other.spec }
            fn copy_status_from(&mut self, from: &Self) { self.status.clone_from(&from.status) }
            fn into_object(self) -> Object { Object::$ty(Arc::new(self)) }
        }
    )*};
}
resource_with_spec_and_status!(Namespace, Node, Pod, Service, Deployment, ReplicaSet);

impl Resource for Endpoints {
    const KIND: Kind = Kind::Endpoints;
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn same_spec(&self, other: &Self) -> bool {
        self.subsets == other.subsets
    }
    fn copy_status_from(&mut self, _from: &Self) {}
    fn into_object(self) -> Object {
        Object::Endpoints(Arc::new(self))
    }
}

impl Resource for Event {
    const KIND: Kind = Kind::Event;
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
    fn same_spec(&self, other: &Self) -> bool {
        let mut a = self.clone();
        a.metadata = other.metadata.clone();
        a == *other
    }
    fn copy_status_from(&mut self, _from: &Self) {}
    fn into_object(self) -> Object {
        Object::Event(Arc::new(self))
    }
}

macro_rules! resource_without_status {
    ($($ty:ident),*) => {$(
        impl Resource for $ty {
            const KIND: Kind = Kind::$ty;
            fn meta(&self) -> &ObjectMeta { &self.metadata }
            fn meta_mut(&mut self) -> &mut ObjectMeta { &mut self.metadata }
            fn same_spec(&self, other: &Self) -> bool {
                let mut a = self.clone();
                a.metadata = other.metadata.clone();
                a == *other
            }
            fn copy_status_from(&mut self, _from: &Self) {}
            fn into_object(self) -> Object { Object::$ty(Arc::new(self)) }
        }
    )*};
}
resource_without_status!(ConfigMap, Secret);

/// Any stored object. Cloning is cheap: the object itself is shared.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
#[bincode(decode_context = "crate::codec::Format")]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
#[allow(missing_docs)]
pub enum Object {
    Namespace(Arc<Namespace>),
    Node(Arc<Node>),
    Pod(Arc<Pod>),
    Service(Arc<Service>),
    Endpoints(Arc<Endpoints>),
    Deployment(Arc<Deployment>),
    ReplicaSet(Arc<ReplicaSet>),
    Event(Arc<Event>),
    ConfigMap(Arc<ConfigMap>),
    Secret(Arc<Secret>),
}

/// Runs `$body` with `$o` bound to the inner `Arc<T>` of any [`Object`] variant.
macro_rules! each_object {
    ($obj:expr, $o:ident => $body:expr) => {
        match $obj {
            Object::Namespace($o) => $body,
            Object::Node($o) => $body,
            Object::Pod($o) => $body,
            Object::Service($o) => $body,
            Object::Endpoints($o) => $body,
            Object::Deployment($o) => $body,
            Object::ReplicaSet($o) => $body,
            Object::Event($o) => $body,
            Object::ConfigMap($o) => $body,
            Object::Secret($o) => $body,
        }
    };
}

impl Object {
    /// The kind.
    pub fn kind(&self) -> Kind {
        each_object!(self, o => kind_of(&**o))
    }

    /// The metadata.
    pub fn meta(&self) -> &ObjectMeta {
        each_object!(self, o => o.meta())
    }

    /// The metadata, mutably (copies the object if it is shared).
    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each_object!(self, o => Arc::make_mut(o).meta_mut())
    }

    /// The key (kind, namespace, name).
    pub fn key(&self) -> ObjectKey {
        let meta = self.meta();
        ObjectKey::new(self.kind(), meta.namespace_str(), &meta.name)
    }

    /// The object as a manifest: `apiVersion`, `kind`, then its fields.
    pub fn to_manifest(&self) -> serde_json::Value {
        let body = each_object!(self, o => serde_json::to_value(&**o));
        let mut map = match body {
            Ok(serde_json::Value::Object(map)) => map,
            // A model struct always serializes to a JSON object.
            _ => serde_json::Map::new(),
        };
        let kind = self.kind();
        map.insert("apiVersion".into(), kind.api_version().into());
        map.insert("kind".into(), kind.as_str().into());
        serde_json::Value::Object(map)
    }

    /// The merge metadata of objects of `kind`, as manifests are written (`apiVersion` and
    /// `kind` are scalars, like any field the model does not name).
    pub fn shape(kind: Kind) -> crate::schema::Shape {
        use crate::schema::Schema;
        match kind {
            Kind::Namespace => Namespace::shape(),
            Kind::Node => Node::shape(),
            Kind::Pod => Pod::shape(),
            Kind::Service => Service::shape(),
            Kind::Endpoints => Endpoints::shape(),
            Kind::Deployment => Deployment::shape(),
            Kind::ReplicaSet => ReplicaSet::shape(),
            Kind::Event => Event::shape(),
            Kind::ConfigMap => ConfigMap::shape(),
            Kind::Secret => Secret::shape(),
        }
    }

    /// The pod, if this is one.
    pub fn as_pod(&self) -> Option<&Pod> {
        match self {
            Object::Pod(p) => Some(p),
            _ => None,
        }
    }
}

fn kind_of<T: Resource>(_: &T) -> Kind {
    T::KIND
}

impl<T: Resource> From<T> for Object {
    fn from(value: T) -> Self {
        value.into_object()
    }
}

impl Serialize for Object {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_manifest().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        crate::manifest::object_from_value(value).map_err(serde::de::Error::custom)
    }
}

/// Runs `$body` with `$a` and `$b` bound to the inner values when both objects are of the same
/// kind, and `$other` when they are not.
macro_rules! each_pair {
    ($x:expr, $y:expr, $a:ident, $b:ident => $body:expr, $other:expr) => {
        match ($x, $y) {
            (Object::Namespace($a), Object::Namespace($b)) => $body,
            (Object::Node($a), Object::Node($b)) => $body,
            (Object::Pod($a), Object::Pod($b)) => $body,
            (Object::Service($a), Object::Service($b)) => $body,
            (Object::Endpoints($a), Object::Endpoints($b)) => $body,
            (Object::Deployment($a), Object::Deployment($b)) => $body,
            (Object::ReplicaSet($a), Object::ReplicaSet($b)) => $body,
            (Object::Event($a), Object::Event($b)) => $body,
            (Object::ConfigMap($a), Object::ConfigMap($b)) => $body,
            (Object::Secret($a), Object::Secret($b)) => $body,
            _ => $other,
        }
    };
}

impl Object {
    /// True when both objects are of one kind with equal specs.
    pub fn same_spec(&self, other: &Object) -> bool {
        each_pair!(self, other, a, b => a.same_spec(b), false)
    }

    /// Replaces this object's status with `from`'s (no-op across kinds).
    pub fn copy_status_from(&mut self, from: &Object) {
        each_pair!(self, from, a, b => Arc::make_mut(a).copy_status_from(b), ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_parse() {
        assert_eq!(Kind::parse("po"), Some(Kind::Pod));
        assert_eq!(Kind::parse("Deployments"), Some(Kind::Deployment));
        assert_eq!(Kind::parse("deploy"), Some(Kind::Deployment));
        assert_eq!(Kind::parse("svc"), Some(Kind::Service));
        assert_eq!(Kind::parse("rs"), Some(Kind::ReplicaSet));
        assert_eq!(Kind::parse("no"), Some(Kind::Node));
        assert_eq!(Kind::parse("ns"), Some(Kind::Namespace));
        assert_eq!(Kind::parse("widget"), None);
        assert_eq!(Kind::from_type("apps/v1", "Deployment"), Some(Kind::Deployment));
        assert_eq!(Kind::from_type("v1", "Deployment"), None);
    }

    #[test]
    fn cluster_scoped_keys_drop_the_namespace() {
        assert_eq!(ObjectKey::new(Kind::Node, "default", "n1").namespace, "");
        assert_eq!(ObjectKey::new(Kind::Pod, "default", "p").namespace, "default");
    }
}
