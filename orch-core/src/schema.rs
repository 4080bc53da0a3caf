//! The model's merge metadata: for every field, its shape and, for a list, how two versions of
//! it merge (Kubernetes' `patchStrategy` and `patchMergeKey`).
//!
//! Apply's three-way merge ([`crate::merge`]) walks a manifest with it, and a strategic merge
//! patch can be served from it. It lives beside the model: `model!` generates each struct's
//! [`Schema`] from the field types, the field names serde reads (so renames such as `type` or
//! `podCIDR` need no second spelling) and a `[merge ...]` mark on the list fields that merge.
//! A list without a mark is replaced as a whole, as in Kubernetes.

use serde::de::{self, Visitor};

/// How a list field merges with another version of itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListStrategy {
    /// The list is replaced as a whole (Kubernetes' default: no `patchStrategy`).
    Replace,
    /// A list of objects merged item by item, items matched by the value of `key`
    /// (`patchStrategy: merge` with a `patchMergeKey`, such as containers by `name`).
    Merge {
        /// The item field that identifies an item.
        key: &'static str,
    },
    /// A list of strings merged as a set (`patchStrategy: merge` on a list of scalars, such as
    /// `metadata.finalizers`).
    Set,
}

/// The shape of a field's value.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// A string, number, boolean or any value replaced as a whole.
    Scalar,
    /// A map from string to string (labels, annotations, selectors): merged key by key.
    Map,
    /// A struct: merged field by field.
    Struct {
        /// Lists the fields as written in manifests, each with its shape.
        fields: fn() -> Vec<(&'static str, Shape)>,
        /// Kubernetes' `patchStrategy: retainKeys` (a Deployment's `strategy`): when a merge
        /// changes the struct, the fields the manifest does not set go, so that a `type` changed
        /// to `Recreate` does not keep the `rollingUpdate` the live object was defaulted with.
        retain_keys: bool,
    },
    /// A list.
    List {
        /// The shape of an item.
        item: fn() -> Shape,
        /// How the list merges.
        strategy: ListStrategy,
    },
}

impl Shape {
    /// The shape of the field `name` of a struct (a map's values and unknown fields are
    /// [`Shape::Scalar`]).
    pub fn field(self, name: &str) -> Shape {
        match self {
            Shape::Struct { fields, .. } => {
                fields().into_iter().find(|(n, _)| *n == name).map_or(Shape::Scalar, |(_, s)| s)
            }
            _ => Shape::Scalar,
        }
    }

    /// `self` with the list strategy `strategy` (used by `model!` for a marked field).
    pub const fn with_strategy(self, strategy: ListStrategy) -> Shape {
        match self {
            Shape::List { item, .. } => Shape::List { item, strategy },
            other => other,
        }
    }

    /// `self`, a struct, with Kubernetes' `retainKeys` (used by `model!` for a marked field).
    pub const fn with_retain_keys(self) -> Shape {
        match self {
            Shape::Struct { fields, .. } => Shape::Struct { fields, retain_keys: true },
            other => other,
        }
    }

    /// The list strategy of a list (None for any other shape).
    pub const fn strategy(self) -> Option<ListStrategy> {
        match self {
            Shape::List { strategy, .. } => Some(strategy),
            _ => None,
        }
    }

    /// The shape at a dotted path of field names (`spec.template.spec.containers`); a list's
    /// items are passed through by `[]` (`spec.containers[].ports`).
    pub fn at(self, path: &str) -> Shape {
        path.split('.').fold(self, |shape, part| {
            let (name, items) = match part.strip_suffix("[]") {
                Some(name) => (name, true),
                None => (part, false),
            };
            match (shape.field(name), items) {
                (Shape::List { item, .. }, true) => item(),
                (field, _) => field,
            }
        })
    }
}

/// A type with a place in the model's merge metadata.
pub trait Schema {
    /// The shape of a value of the type.
    fn shape() -> Shape;
}

macro_rules! scalars {
    ($($ty:ty),* $(,)?) => {
        $(impl Schema for $ty {
            fn shape() -> Shape {
                Shape::Scalar
            }
        })*
    };
}

scalars!(
    bool,
    i32,
    i64,
    u32,
    u64,
    String,
    crate::text::Text,
    crate::time::Time,
    crate::quantity::Quantity,
    crate::intstr::IntOrString,
    crate::ids::Uid,
    crate::ids::Revision,
);

impl Schema for crate::strmap::StrMap {
    fn shape() -> Shape {
        Shape::Map
    }
}

impl<T: Schema> Schema for Option<T> {
    fn shape() -> Shape {
        T::shape()
    }
}

impl<T: Schema> Schema for Box<T> {
    fn shape() -> Shape {
        T::shape()
    }
}

impl<T: Schema> Schema for std::sync::Arc<T> {
    fn shape() -> Shape {
        T::shape()
    }
}

impl<T: Schema> Schema for Vec<T> {
    fn shape() -> Shape {
        Shape::List { item: T::shape, strategy: ListStrategy::Replace }
    }
}

/// The names serde reads the fields of `T` by, in declaration order (with renames applied):
/// the list serde's derived `Deserialize` passes to `deserialize_struct`, caught by a
/// deserializer that reads nothing. Empty for a type that is not a struct.
pub fn field_names<T: for<'de> serde::Deserialize<'de>>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    // The deserializer always fails: it only records the names.
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The fields of a `model!` struct `T`: serde's names paired with the shapes of the fields in
/// declaration order. Both come from the one declaration, so they have the same length (a
/// test walks every kind to check it).
pub(crate) fn struct_fields<T: for<'de> serde::Deserialize<'de>>(shapes: Vec<Shape>) -> Vec<(&'static str, Shape)> {
    let names = field_names::<T>();
    debug_assert_eq!(
        names.len(),
        shapes.len(),
        "{}: serde's fields and the model's differ",
        std::any::type_name::<T>()
    );
    names.iter().copied().zip(shapes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::{Kind, Object};

    /// Every struct reachable from every kind lists as many names as fields, and no name twice.
    #[test]
    fn every_struct_of_every_kind_names_each_field() {
        fn walk(shape: Shape, path: &str, seen: &mut usize) {
            *seen += 1;
            assert!(*seen < 10_000, "the model is not a tree at {path}");
            match shape {
                Shape::Struct { fields, .. } => {
                    let fields = fields();
                    let mut names: Vec<_> = fields.iter().map(|(n, _)| *n).collect();
                    names.sort_unstable();
                    names.dedup();
                    assert_eq!(names.len(), fields.len(), "{path}");
                    for (name, shape) in fields {
                        assert!(!name.is_empty(), "{path}");
                        walk(shape, &format!("{path}.{name}"), seen);
                    }
                }
                Shape::List { item, .. } => walk(item(), &format!("{path}[]"), seen),
                Shape::Scalar | Shape::Map => {}
            }
        }
        for kind in Kind::ALL {
            let mut seen = 0;
            walk(Object::shape(kind), kind.as_str(), &mut seen);
            assert!(seen > 3, "{kind}");
        }
    }

    #[test]
    fn lists_merge_as_kubernetes_declares_them() {
        let pod = Object::shape(Kind::Pod);
        let merge = |key| Some(ListStrategy::Merge { key });
        assert_eq!(pod.at("spec.containers").strategy(), merge("name"));
        assert_eq!(pod.at("spec.containers[].ports").strategy(), merge("containerPort"));
        assert_eq!(pod.at("spec.containers[].env").strategy(), merge("name"));
        assert_eq!(pod.at("spec.containers[].command").strategy(), Some(ListStrategy::Replace));
        assert_eq!(pod.at("spec.tolerations").strategy(), Some(ListStrategy::Replace));
        assert_eq!(pod.at("metadata.finalizers").strategy(), Some(ListStrategy::Set));
        assert_eq!(pod.at("metadata.ownerReferences").strategy(), merge("uid"));
        assert_eq!(pod.at("status.conditions").strategy(), merge("type"));
        let deployment = Object::shape(Kind::Deployment);
        assert_eq!(deployment.at("spec.template.spec.containers").strategy(), merge("name"));
        assert_eq!(deployment.at("status.conditions").strategy(), merge("type"));
        assert_eq!(Object::shape(Kind::Service).at("spec.ports").strategy(), merge("port"));
        assert_eq!(Object::shape(Kind::Node).at("status.addresses").strategy(), merge("type"));
        assert_eq!(Object::shape(Kind::Node).at("status.conditions").strategy(), merge("type"));
        // Renamed fields are found under their manifest names.
        assert!(matches!(Object::shape(Kind::Node).at("spec.podCIDR"), Shape::Scalar));
        assert!(matches!(pod.at("metadata.labels"), Shape::Map));
        assert!(matches!(pod.at("spec.containers[].resources.limits"), Shape::Struct { retain_keys: false, .. }));
        assert!(matches!(deployment.at("spec.strategy"), Shape::Struct { retain_keys: true, .. }));
    }
}
