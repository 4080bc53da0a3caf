//! Every list and string of an object within its named limit, whatever the field.
//!
//! [`check_bounds`] walks an object through its serde form (the manifest shape, so paths read as
//! Kubernetes prints them: `status.containerStatuses[3].state.waiting.message`) without
//! building anything, and reports each list over its limit and each string over
//! [`STRING_BYTES_MAX`]. A field added to the model later is covered without a new rule.
//! The limits:
//!
//! - a list: [`LIST_ITEMS_MAX`], except those with their own limit (`containers`:
//!   [`CONTAINERS_MAX`], `metadata.finalizers`: [`FINALIZERS_MAX`], `metadata.ownerReferences`:
//!   [`OWNER_REFERENCES_MAX`], Endpoints `addresses` and `notReadyAddresses`:
//!   [`ENDPOINT_ADDRESSES_MAX`]);
//! - a string: [`STRING_BYTES_MAX`], except annotation values, which share
//!   [`ANNOTATIONS_BYTES_MAX`] (checked by [`crate::validation::validate`]), and the values
//!   of a ConfigMap or Secret, which share [`crate::validation::CONFIG_BYTES_MAX`];
//! - a map (labels, selectors, annotations): its count is checked by `validate` (`LABELS_MAX`)
//!   or bounded by its bytes; its keys and values here as strings.
//!
//! A list over its limit is reported once and not walked into.

use std::fmt;

use serde::ser::{self, Serialize};

use crate::object::Object;
use crate::validation::{
    CONTAINERS_MAX, ENDPOINT_ADDRESSES_MAX, FINALIZERS_MAX, FieldErrors, LIST_ITEMS_MAX, OWNER_REFERENCES_MAX,
    STRING_BYTES_MAX,
};

#[cfg(doc)]
use crate::validation::ANNOTATIONS_BYTES_MAX;

/// The lists and strings of `obj` that exceed their limits; empty when every one is within.
pub fn check_bounds(obj: &Object) -> FieldErrors {
    let mut walk = Walk { path: Vec::new(), errors: FieldErrors::default(), key: None, capture_key: false };
    // The kinds' own serde forms (structs with named fields), not `Object`'s manifest form,
    // which goes through a JSON value. The walker's error type only ends a walk early; every
    // finding is in `errors`.
    let _ = match obj {
        Object::Namespace(o) => o.serialize(&mut walk),
        Object::Node(o) => o.serialize(&mut walk),
        Object::Pod(o) => o.serialize(&mut walk),
        Object::Service(o) => o.serialize(&mut walk),
        Object::Endpoints(o) => o.serialize(&mut walk),
        Object::Deployment(o) => o.serialize(&mut walk),
        Object::ReplicaSet(o) => o.serialize(&mut walk),
        Object::Event(o) => o.serialize(&mut walk),
        Object::ConfigMap(o) => o.serialize(&mut walk),
        Object::Secret(o) => o.serialize(&mut walk),
    };
    walk.errors
}

#[derive(Clone, Debug)]
enum Seg {
    Field(&'static str),
    Key(String),
    Index(usize),
}

struct Walk {
    path: Vec<Seg>,
    errors: FieldErrors,
    /// The last map key seen, while serializing a key.
    key: Option<String>,
    capture_key: bool,
}

impl Walk {
    fn render(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Seg::Field(name) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(name);
                }
                Seg::Key(key) => {
                    out.push('[');
                    out.push_str(key);
                    out.push(']');
                }
                Seg::Index(i) => {
                    use std::fmt::Write;
                    let _ = write!(out, "[{i}]");
                }
            }
        }
        out
    }

    fn last_field(&self, back: usize) -> Option<&'static str> {
        let i = self.path.len().checked_sub(back + 1)?;
        match self.path[i] {
            Seg::Field(name) => Some(name),
            _ => None,
        }
    }

    /// The limit of the list at the current path.
    fn list_limit(&self) -> usize {
        match (self.last_field(1), self.last_field(0)) {
            (_, Some("containers")) => CONTAINERS_MAX,
            (Some("metadata"), Some("finalizers")) => FINALIZERS_MAX,
            (Some("metadata"), Some("ownerReferences")) => OWNER_REFERENCES_MAX,
            (_, Some("addresses" | "notReadyAddresses")) if self.path.first().is_some_and(is_subsets) => {
                ENDPOINT_ADDRESSES_MAX
            }
            _ => LIST_ITEMS_MAX,
        }
    }

    /// Whether the current string is a value of the object's own annotations (bounded by
    /// their total, `ANNOTATIONS_BYTES_MAX`); a template's annotations are ordinary strings.
    fn is_annotation_value(&self) -> bool {
        matches!(self.path.as_slice(), [Seg::Field("metadata"), Seg::Field("annotations"), Seg::Key(_)])
    }

    /// Whether the current string is a value of a ConfigMap's or Secret's `data`,
    /// `binaryData` or `stringData` (bounded by their total,
    /// [`crate::validation::CONFIG_BYTES_MAX`]; no other kind has these top-level fields).
    fn is_config_value(&self) -> bool {
        matches!(self.path.as_slice(), [Seg::Field("data" | "binaryData" | "stringData"), Seg::Key(_)])
    }

    fn string(&mut self, len: usize, text: &str) {
        if self.capture_key {
            self.key = Some(text.chars().take(64).collect());
        }
        if len > STRING_BYTES_MAX && !self.is_annotation_value() && !self.is_config_value() {
            let path = self.render();
            self.errors.too_long(path.as_str(), STRING_BYTES_MAX);
        }
    }

    /// Opens a list of `len` items; false when it is over its limit (reported, not walked).
    fn list(&mut self, len: Option<usize>) -> bool {
        let len = len.unwrap_or(0);
        let max = self.list_limit();
        if len > max {
            let path = self.render();
            self.errors.too_many(path.as_str(), len, max);
            return false;
        }
        true
    }
}

fn is_subsets(seg: &Seg) -> bool {
    matches!(seg, Seg::Field("subsets"))
}

/// Ends a walk early; never reported.
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stop")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

/// A list being walked: its items, or nothing when it was over its limit.
struct Seq<'a> {
    walk: &'a mut Walk,
    open: bool,
    next: usize,
}

impl Seq<'_> {
    fn item<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Stop> {
        if !self.open {
            return Ok(());
        }
        self.walk.path.push(Seg::Index(self.next));
        self.next += 1;
        let r = value.serialize(&mut *self.walk);
        self.walk.path.pop();
        r
    }
}

macro_rules! scalars {
    ($($method:ident: $ty:ty),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<(), Stop> { Ok(()) })*
    };
}

impl<'a> ser::Serializer for &'a mut Walk {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Seq<'a>;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    scalars!(
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64,
        serialize_u128: u128, serialize_f32: f32, serialize_f64: f64, serialize_char: char,
    );

    fn serialize_str(self, v: &str) -> Result<(), Stop> {
        self.string(v.len(), v);
        Ok(())
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Stop> {
        self.string(v.len(), "");
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Stop> {
        Ok(())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Stop> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Stop> {
        Ok(())
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Stop> {
        Ok(())
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Stop> {
        Ok(())
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Result<(), Stop> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        value.serialize(self)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Seq<'a>, Stop> {
        let open = self.list(len);
        Ok(Seq { walk: self, open, next: 0 })
    }

    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, Stop> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Seq<'a>, Stop> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, len: usize) -> Result<Seq<'a>, Stop> {
        self.serialize_seq(Some(len))
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self, Stop> {
        Ok(self)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Stop> {
        Ok(self)
    }

    fn serialize_struct_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self, Stop> {
        Ok(self)
    }
}

macro_rules! seq_impls {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Seq<'_> {
            type Ok = ();
            type Error = Stop;
            fn $method<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Stop> {
                self.item(value)
            }
            fn end(self) -> Result<(), Stop> {
                Ok(())
            }
        }
    )*};
}

seq_impls!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

impl ser::SerializeMap for &mut Walk {
    type Ok = ();
    type Error = Stop;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Stop> {
        self.capture_key = true;
        self.key = None;
        let r = key.serialize(&mut **self);
        self.capture_key = false;
        r
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Stop> {
        let key = self.key.take().unwrap_or_default();
        self.path.push(Seg::Key(key));
        let r = value.serialize(&mut **self);
        self.path.pop();
        r
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

impl Walk {
    fn field<T: ?Sized + Serialize>(&mut self, name: &'static str, value: &T) -> Result<(), Stop> {
        self.path.push(Seg::Field(name));
        let r = value.serialize(&mut *self);
        self.path.pop();
        r
    }
}

macro_rules! struct_impls {
    ($($trait:ident),*) => {$(
        impl ser::$trait for &mut Walk {
            type Ok = ();
            type Error = Stop;
            fn serialize_field<T: ?Sized + Serialize>(&mut self, name: &'static str, value: &T) -> Result<(), Stop> {
                self.field(name, value)
            }
            fn end(self) -> Result<(), Stop> {
                Ok(())
            }
        }
    )*};
}

struct_impls!(SerializeStruct, SerializeStructVariant);

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core_v1::{ContainerStatus, ExecAction, HttpGetAction, HttpHeader, Probe};
    use crate::manifest::parse_manifests;
    use crate::text::Text;

    fn pod() -> Object {
        parse_manifests("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: x}]}")
            .expect("valid")
            .remove(0)
    }

    fn edit(obj: &mut Object, f: impl FnOnce(&mut crate::Pod)) {
        let Object::Pod(p) = obj else { unreachable!("a pod") };
        f(Arc::make_mut(p));
    }

    fn messages(obj: &Object) -> Vec<String> {
        check_bounds(obj).0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_valid_object_is_within_every_bound() {
        assert_eq!(messages(&pod()), Vec::<String>::new());
    }

    #[test]
    fn lists_and_strings_the_validation_rules_never_named_are_bounded() {
        let mut obj = pod();
        let long = Text::from("x".repeat(STRING_BYTES_MAX + 1));
        edit(&mut obj, |p| {
            let c = &mut p.spec.containers[0];
            c.liveness_probe = Some(Box::new(Probe {
                exec: Some(ExecAction { command: vec![Text::new(); LIST_ITEMS_MAX + 1] }),
                ..Probe::default()
            }));
            c.readiness_probe = Some(Box::new(Probe {
                http_get: Some(HttpGetAction {
                    http_headers: vec![HttpHeader { name: "a".into(), value: long.clone() }],
                    ..HttpGetAction::default()
                }),
                ..Probe::default()
            }));
            p.status.container_statuses = vec![ContainerStatus::default(); LIST_ITEMS_MAX + 1];
            p.status.message = Some(long.clone());
            p.metadata.labels.insert("k", long.as_str());
        });
        assert_eq!(
            messages(&obj),
            [
                "metadata.labels[k]: Too long: may not be more than 32768 bytes",
                "spec.containers[0].livenessProbe.exec.command: Too many: 257: must have at most 256 items",
                "spec.containers[0].readinessProbe.httpGet.httpHeaders[0].value: Too long: may not be more than 32768 bytes",
                "status.containerStatuses: Too many: 257: must have at most 256 items",
                "status.message: Too long: may not be more than 32768 bytes",
            ]
        );
    }

    #[test]
    fn lists_with_their_own_limits_use_them() {
        let mut obj = pod();
        edit(&mut obj, |p| {
            p.spec.containers = vec![p.spec.containers[0].clone(); CONTAINERS_MAX + 1];
            p.metadata.finalizers = vec!["a/b".into(); FINALIZERS_MAX + 1];
            // Annotation values share the annotations' total, checked by validation.
            p.metadata.annotations.insert("big", "y".repeat(STRING_BYTES_MAX + 1).as_str());
        });
        assert_eq!(
            messages(&obj),
            [
                "metadata.finalizers: Too many: 33: must have at most 32 items",
                "spec.containers: Too many: 33: must have at most 32 items",
            ]
        );
        // A template's annotations are ordinary strings.
        let big = "y".repeat(STRING_BYTES_MAX + 1);
        let d = parse_manifests(&format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d, annotations: {{a: {big}}}}}\nspec:\n  selector: {{matchLabels: {{app: x}}}}\n  template:\n    metadata: {{labels: {{app: x}}, annotations: {{a: {big}}}}}\n    spec: {{containers: [{{name: c, image: x}}]}}\n"
        ));
        let e = d.expect_err("refused where it is parsed").to_string();
        assert!(e.contains("spec.template.metadata.annotations[a]: Too long"), "{e}");
        let eps = parse_manifests("apiVersion: v1\nkind: Endpoints\nmetadata: {name: e}\n").expect("valid").remove(0);
        let Object::Endpoints(mut e) = eps else { unreachable!("endpoints") };
        let subset = crate::core_v1::EndpointSubset {
            addresses: vec![crate::core_v1::EndpointAddress::default(); 300],
            ..Default::default()
        };
        Arc::make_mut(&mut e).subsets = vec![subset];
        assert_eq!(messages(&Object::Endpoints(e)), Vec::<String>::new(), "300 addresses are within 5000");
    }
}
