//! Apply's three-way merge: kubectl's client-side apply, run inside the state machine.
//!
//! Three versions of an object meet: the manifest applied last (`original`, kept in the
//! [`LAST_APPLIED_ANNOTATION`]), the manifest applied now (`modified`) and the live object
//! (`current`). As kubectl's `CreateThreeWayMergePatch` applied to the live object:
//!
//! - a field `modified` sets is set to its value (maps and structs field by field);
//! - a field `original` set and `modified` no longer does is removed;
//! - a field only the live object has (set by a controller, a scale, the scheduler, the
//!   system) is kept.
//!
//! - a field `modified` sets to `null` is removed.
//!
//! Lists follow the model's merge metadata ([`crate::schema`]): a list merged by key keeps
//! the live items `modified` does not name (unless `original` named them) and merges the
//! others item by item; items are matched by key and occurrence, so two ports 53 (TCP and
//! UDP) are two items. The result has `modified`'s items in its order and the kept live items
//! where they stood relative to the live items it names (Kubernetes' `$setElementOrder`), so
//! re-applying a manifest does not reorder a list. A set of strings merges likewise; any other
//! list is replaced as a whole; a struct marked `retainKeys` loses, when the merge changes it,
//! the fields `modified` leaves out.
//!
//! Everything here is a pure function of JSON values: no clock, no hash order (serde_json's
//! maps are sorted), so every replica computes the same object.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::command::ApplyError;
use crate::defaults::DEFAULT_NAMESPACE;
use crate::manifest::object_from_value;
use crate::object::{Kind, Object};
use crate::schema::{ListStrategy, Shape};

/// The annotation that keeps the manifest applied last, as kubectl's.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The most bytes of manifest text one apply carries ([`crate::Command::ApplyManifest`]). The
/// manifest is kept in an annotation, and an object's annotations hold at most
/// [`crate::validation::ANNOTATIONS_BYTES_MAX`] (256 KiB); the rest is room for whitespace
/// and for what the manifest carries beside itself.
pub const APPLY_MANIFEST_BYTES_MAX: usize = 1 << 20;

fn bad(reason: impl Into<String>) -> ApplyError {
    ApplyError::BadRequest { reason: reason.into() }
}

/// Reads the manifest an apply carries (JSON text of one object, as submitted) and returns
/// the version of it to merge (`modified`: nulls removed, as Kubernetes reads them; the
/// namespace defaulted; the [`LAST_APPLIED_ANNOTATION`] set to the manifest without it) and the
/// object it describes.
///
/// # Errors
/// [`ApplyError::BadRequest`] naming the rule: too long, not a JSON object, nested too deep, or
/// not an object of the model (the field named, in words that depend on no library's, since
/// the outcome is kept by every replica). Validation is the caller's.
pub fn submitted(text: &str) -> Result<(Value, Object), ApplyError> {
    if text.len() > APPLY_MANIFEST_BYTES_MAX {
        return Err(bad(format!("manifest: Too long: must have at most {APPLY_MANIFEST_BYTES_MAX} bytes")));
    }
    // serde_json stops at 128 levels, so a deep text cannot overflow the stack.
    let value: Value = serde_json::from_str(text).map_err(|_| bad("manifest: Invalid value: not JSON"))?;
    modified(value)
}

/// As [`submitted`], for a manifest already parsed (a typed [`crate::Command::Apply`]'s
/// object as a manifest).
///
/// # Errors
/// As [`submitted`].
pub fn modified(mut value: Value) -> Result<(Value, Object), ApplyError> {
    // An explicit null stays: it removes the field (as in kubectl's patch); the typed object
    // below reads it as absent.
    if depth(&value, 0) > crate::manifest::MANIFEST_DEPTH_MAX {
        return Err(bad(format!("manifest: nesting is deeper than {} levels", crate::manifest::MANIFEST_DEPTH_MAX)));
    }
    let Value::Object(map) = &mut value else {
        return Err(bad("manifest: Invalid value: must be a JSON object with apiVersion, kind and metadata"));
    };
    let kind = match (map.get("apiVersion"), map.get("kind")) {
        (Some(Value::String(api_version)), Some(Value::String(kind))) => Kind::from_type(api_version, kind),
        _ => None,
    };
    let Some(kind) = kind else {
        return Err(bad("manifest: apiVersion and kind: Invalid value: must name a kind of the model"));
    };
    let metadata = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(metadata) = metadata else {
        return Err(bad("manifest: metadata: Invalid value: must be a map"));
    };
    let unset = match metadata.get("namespace") {
        None | Some(Value::Null) => true,
        Some(Value::String(namespace)) => namespace.is_empty(),
        // Not a string: the typed object below names it.
        Some(_) => false,
    };
    if kind.namespaced() && unset {
        metadata.insert("namespace".into(), DEFAULT_NAMESPACE.into());
    }
    if let Some(Value::Object(annotations)) = metadata.get_mut("annotations") {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
    // Serializing a JSON value into memory cannot fail.
    let recorded = serde_json::to_string(&value).unwrap_or_default();
    if let Some(Value::Object(metadata)) = value.get_mut("metadata") {
        let annotations = metadata.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
        if annotations.is_null() {
            *annotations = Value::Object(Map::new());
        }
        match annotations {
            Value::Object(annotations) => {
                annotations.insert(LAST_APPLIED_ANNOTATION.into(), recorded.into());
            }
            _ => return Err(bad("manifest: metadata.annotations: Invalid value: must be a map")),
        }
    }
    let object = typed(kind, value.clone())?;
    Ok((value, object))
}

/// How deep `value` nests (0 for a scalar), counted no further than one level past the limit.
fn depth(value: &Value, at: usize) -> usize {
    if at > crate::manifest::MANIFEST_DEPTH_MAX {
        return at;
    }
    let deepest = |items: &mut dyn Iterator<Item = &Value>| items.map(|v| depth(v, at + 1)).max().unwrap_or(at);
    match value {
        Value::Object(map) => deepest(&mut map.values()),
        Value::Array(items) => deepest(&mut items.iter()),
        _ => at,
    }
}

/// `value` as an object of `kind`, or an error naming the field.
fn typed(kind: Kind, value: Value) -> Result<Object, ApplyError> {
    object_from_value(value).map_err(|e| {
        // The path is orch's own text, each key cut short (`manifest::field_path`); the
        // library's message is left out, since every replica keeps the outcome.
        let field = if e.field.is_empty() { "manifest".to_owned() } else { format!("manifest: {}", e.field) };
        bad(format!("{field}: Invalid value: does not fit the {kind} model"))
    })
}

/// The object an apply of `modified` (from [`submitted`]) makes of the live object `live`: the
/// three-way merge of the manifest applied last (`live`'s [`LAST_APPLIED_ANNOTATION`]; an
/// annotation that does not hold a JSON object counts as none), `modified` and `live`.
///
/// # Errors
/// [`ApplyError::BadRequest`] when the merged manifest is not an object of the model (a field
/// whose type the manifest changed in a way the typed model refuses).
pub fn merged(live: &Object, modified: &Value) -> Result<Object, ApplyError> {
    let original = live
        .meta()
        .annotations
        .get(LAST_APPLIED_ANNOTATION)
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .filter(Value::is_object);
    let kind = live.kind();
    let merged = three_way(original.as_ref(), modified, &live.to_manifest(), Object::shape(kind));
    typed(kind, merged)
}

/// Merges `modified` into `current` given `original` (None: no manifest was applied before,
/// so nothing is removed), for a value of shape `shape`. The depth of the walk is at most the
/// depth of `modified`.
pub fn three_way(original: Option<&Value>, modified: &Value, current: &Value, shape: Shape) -> Value {
    match (shape, modified, current) {
        (Shape::Struct { .. } | Shape::Map, Value::Object(m), Value::Object(c)) => {
            let o = original.and_then(Value::as_object);
            let mut merged = merge_maps(o, m, c, shape);
            if matches!(shape, Shape::Struct { retain_keys: true, .. }) && merged != *c {
                merged.retain(|name, _| m.contains_key(name));
            }
            Value::Object(merged)
        }
        (Shape::List { item, strategy: ListStrategy::Merge { key } }, Value::Array(m), Value::Array(c)) => {
            merge_keyed(original.and_then(Value::as_array), m, c, key, item())
        }
        (Shape::List { strategy: ListStrategy::Set, .. }, Value::Array(m), Value::Array(c)) => {
            Value::Array(merge_set(original.and_then(Value::as_array), m, c))
        }
        _ => modified.clone(),
    }
}

fn merge_maps(
    o: Option<&Map<String, Value>>,
    m: &Map<String, Value>,
    c: &Map<String, Value>,
    shape: Shape,
) -> Map<String, Value> {
    let fields = match shape {
        Shape::Struct { fields, .. } => fields(),
        _ => Vec::new(),
    };
    let field = |name: &str| fields.iter().find(|(n, _)| *n == name).map_or(Shape::Scalar, |(_, s)| *s);
    let mut out = c.clone();
    if let Some(o) = o {
        for name in o.keys().filter(|k| !m.contains_key(*k)) {
            out.remove(name);
        }
    }
    for (name, value) in m {
        if value.is_null() {
            // An explicit null removes the field, as in kubectl's patch.
            out.remove(name);
            continue;
        }
        let merged = match c.get(name) {
            Some(live) => three_way(o.and_then(|o| o.get(name)), value, live, field(name)),
            None => value.clone(),
        };
        out.insert(name.clone(), merged);
    }
    out
}

/// The merge key of a list item, as canonical JSON text (keys are strings or numbers).
fn key_of(item: &Value, key: &str) -> Option<String> {
    item.as_object().and_then(|o| o.get(key)).map(Value::to_string)
}

/// A keyed item's identity: its key (canonical JSON text) and which occurrence of that key in
/// its list it is (two ports 53, TCP and UDP, are `(53, 0)` and `(53, 1)`), or None for an
/// item without the key.
fn identities(items: &[Value], key: &str) -> Vec<Option<(String, usize)>> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    items
        .iter()
        .map(|v| {
            key_of(v, key).map(|k| {
                let n = seen.entry(k.clone()).or_insert(0);
                *n += 1;
                (k, *n - 1)
            })
        })
        .collect()
}

fn merge_keyed(o: Option<&Vec<Value>>, m: &[Value], c: &[Value], key: &str, item: Shape) -> Value {
    let o = o.map_or(&[][..], Vec::as_slice);
    let (o_ids, m_ids, c_ids) = (identities(o, key), identities(m, key), identities(c, key));
    let index = |ids: &[Option<(String, usize)>]| -> BTreeMap<(String, usize), usize> {
        ids.iter().enumerate().filter_map(|(i, id)| id.clone().map(|id| (id, i))).collect()
    };
    let (in_original, in_current) = (index(&o_ids), index(&c_ids));
    let named: BTreeSet<&(String, usize)> = m_ids.iter().flatten().collect();
    // The manifest's items, merged with their live ones, each with its live position.
    let mut merged: Vec<(Value, Option<usize>)> = Vec::with_capacity(m.len());
    for (v, id) in m.iter().zip(&m_ids) {
        let live = id.as_ref().and_then(|id| in_current.get(id).copied());
        let value = match (id, live) {
            (Some(id), Some(i)) => three_way(in_original.get(id).map(|&j| &o[j]), v, &c[i], item),
            _ => v.clone(),
        };
        merged.push((value, live));
    }
    // Live items the manifest does not name stay, unless the last manifest named them (an
    // item without the key stays unless the manifest holds it as it is).
    let kept: Vec<(usize, &Value)> = c
        .iter()
        .zip(&c_ids)
        .enumerate()
        .filter(|(_, (v, id))| match id {
            Some(id) => !named.contains(id) && !in_original.contains_key(id),
            None => !m.contains(v),
        })
        .map(|(i, (v, _))| (i, v))
        .collect();
    // As Kubernetes' `$setElementOrder`: the manifest's items in its order, the kept live items
    // where they were relative to the live items the manifest names.
    let mut out = Vec::with_capacity(merged.len() + kept.len());
    let (mut merged, mut kept) = (merged.into_iter().peekable(), kept.into_iter().peekable());
    loop {
        match (merged.peek(), kept.peek()) {
            (Some((_, Some(at))), Some((live, _))) if at < live => out.extend(merged.next().map(|(v, _)| v)),
            (Some(_), Some(_)) | (None, Some(_)) => out.extend(kept.next().map(|(_, v)| v.clone())),
            (Some(_), None) => out.extend(merged.next().map(|(v, _)| v)),
            (None, None) => break,
        }
    }
    Value::Array(out)
}

fn merge_set(o: Option<&Vec<Value>>, m: &[Value], c: &[Value]) -> Vec<Value> {
    let o = o.map_or(&[][..], Vec::as_slice);
    let mut out = m.to_vec();
    out.extend(c.iter().filter(|v| !m.contains(v) && !o.contains(v)).cloned());
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::object::{Kind, Object};

    fn merge(kind: Kind, original: Option<Value>, modified: Value, current: Value) -> Value {
        three_way(original.as_ref(), &modified, &current, Object::shape(kind))
    }

    #[test]
    fn fields_set_now_win_fields_dropped_go_and_fields_of_others_stay() {
        let original = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"replicas": 3, "paused": true}});
        let modified = json!({"metadata": {"labels": {"a": "9"}}, "spec": {"minReadySeconds": 5}});
        let current = json!({
            "metadata": {"labels": {"a": "1", "b": "2", "c": "3"}, "uid": "u", "annotations": {"deployment.kubernetes.io/revision": "4"}},
            "spec": {"replicas": 7, "paused": true, "revisionHistoryLimit": 10},
            "status": {"replicas": 7},
        });
        assert_eq!(
            merge(Kind::Deployment, Some(original), modified, current),
            json!({
                "metadata": {"labels": {"a": "9", "c": "3"}, "uid": "u", "annotations": {"deployment.kubernetes.io/revision": "4"}},
                "spec": {"minReadySeconds": 5, "revisionHistoryLimit": 10},
                "status": {"replicas": 7},
            })
        );
    }

    #[test]
    fn a_field_set_again_is_set_even_where_the_live_object_changed_it() {
        // As kubectl: a scaled deployment re-applied with replicas in its manifest gets them.
        let manifest = json!({"spec": {"replicas": 3}});
        let merged = merge(Kind::Deployment, Some(manifest.clone()), manifest, json!({"spec": {"replicas": 5}}));
        assert_eq!(merged, json!({"spec": {"replicas": 3}}));
        // Without them in the manifest, the scale stays.
        let merged =
            merge(Kind::Deployment, Some(json!({"spec": {}})), json!({"spec": {}}), json!({"spec": {"replicas": 5}}));
        assert_eq!(merged, json!({"spec": {"replicas": 5}}));
    }

    #[test]
    fn containers_merge_by_name_and_their_lists_by_their_keys() {
        let original = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
             "ports": [{"containerPort": 80}]},
            {"name": "old", "image": "o:1"},
        ]}});
        let modified = json!({"spec": {"containers": [
            {"name": "app", "image": "a:2", "env": [{"name": "X", "value": "1"}], "ports": [{"containerPort": 80}]},
        ]}});
        let current = json!({"spec": {"containers": [
            {"name": "sidecar", "image": "s:1"},
            {"name": "old", "image": "o:1"},
            {"name": "app", "image": "a:1", "imagePullPolicy": "IfNotPresent",
             "env": [{"name": "Z", "value": "3"}, {"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
             "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 9090}]},
        ], "nodeName": "n1"}});
        assert_eq!(
            merge(Kind::Pod, Some(original), modified, current),
            json!({"spec": {"containers": [
                {"name": "sidecar", "image": "s:1"},
                {"name": "app", "image": "a:2", "imagePullPolicy": "IfNotPresent",
                 "env": [{"name": "Z", "value": "3"}, {"name": "X", "value": "1"}],
                 "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 9090}]},
            ], "nodeName": "n1"}})
        );
    }

    #[test]
    fn lists_without_a_strategy_are_replaced_whole_and_an_empty_one_clears() {
        let current = json!({"spec": {"containers": [{"name": "a", "command": ["sh", "-c", "x"]}],
            "tolerations": [{"key": "k", "operator": "Exists"}]}});
        let modified = json!({"spec": {"containers": [{"name": "a", "command": ["sleep"]}], "tolerations": []}});
        assert_eq!(
            merge(Kind::Pod, None, modified, current),
            json!({"spec": {"containers": [{"name": "a", "command": ["sleep"]}], "tolerations": []}})
        );
    }

    #[test]
    fn finalizers_merge_as_a_set_and_owner_references_by_uid() {
        let original = json!({"metadata": {"finalizers": ["a", "b"]}});
        let modified = json!({"metadata": {"finalizers": ["a", "c"]}});
        let current = json!({"metadata": {
            "finalizers": ["b", "orphan", "a"],
            "ownerReferences": [{"uid": "1", "name": "rs"}],
        }});
        assert_eq!(
            merge(Kind::ReplicaSet, Some(original), modified, current),
            json!({"metadata": {"finalizers": ["a", "c", "orphan"], "ownerReferences": [{"uid": "1", "name": "rs"}]}})
        );
    }

    #[test]
    fn items_of_one_key_are_matched_by_occurrence_and_keyless_ones_kept() {
        // Port 53 twice (TCP and UDP): two items; a live-only port stays.
        let current = json!({"spec": {"ports": [
            {"port": 53, "protocol": "TCP", "targetPort": 5353}, {"port": 53, "protocol": "UDP"}, {"port": 80},
        ]}});
        let modified = json!({"spec": {"ports": [{"port": 53, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}});
        assert_eq!(
            merge(Kind::Service, None, modified, current),
            json!({"spec": {"ports": [
                {"port": 53, "protocol": "TCP", "targetPort": 5353}, {"port": 53, "protocol": "UDP"}, {"port": 80},
            ]}})
        );
        // An item without its key is taken as written (validation names it); live items stay.
        let current = json!({"spec": {"ports": [{"port": 80}]}});
        let modified = json!({"spec": {"ports": [{"name": "x"}]}});
        assert_eq!(
            merge(Kind::Service, None, modified, current),
            json!({"spec": {"ports": [{"port": 80}, {"name": "x"}]}})
        );
    }

    #[test]
    fn kept_items_stay_where_they_were_and_new_ones_follow() {
        let current = json!({"spec": {"containers": [{"name": "a"}, {"name": "s1"}, {"name": "b"}, {"name": "s2"}]}});
        let modified = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "new"}]}});
        assert_eq!(
            merge(Kind::Pod, None, modified, current),
            json!({"spec": {"containers": [{"name": "a"}, {"name": "s1"}, {"name": "b"}, {"name": "s2"}, {"name": "new"}]}})
        );
        // A manifest that reorders its items reorders them.
        let current = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let modified = json!({"spec": {"containers": [{"name": "b"}, {"name": "a"}]}});
        assert_eq!(merge(Kind::Pod, None, modified.clone(), current), modified);
    }

    #[test]
    fn an_explicit_null_removes_the_field() {
        let modified = json!({"spec": {"replicas": null, "paused": true}});
        let current = json!({"spec": {"replicas": 5, "minReadySeconds": 3}});
        assert_eq!(
            merge(Kind::Deployment, None, modified, current),
            json!({"spec": {"paused": true, "minReadySeconds": 3}})
        );
    }

    #[test]
    fn the_recorded_manifest_has_its_keys_sorted_whatever_order_it_came_in() {
        // The annotation is replicated state: its text must be a function of the manifest's
        // content (serde_json's maps sort their keys; a `preserve_order` feature would not).
        let text = r#"{"spec":{"selector":{"matchLabels":{"b":"2","a":"1"}}},"metadata":{"name":"d"},"kind":"Deployment","apiVersion":"apps/v1"}"#;
        let (modified, _) = submitted(text).expect("reads");
        let recorded = modified["metadata"]["annotations"][LAST_APPLIED_ANNOTATION].as_str().expect("recorded");
        assert_eq!(
            recorded,
            r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d","namespace":"default"},"spec":{"selector":{"matchLabels":{"a":"1","b":"2"}}}}"#
        );
    }

    #[test]
    fn manifests_that_cannot_be_merged_are_refused_naming_the_rule() {
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let cases = [
            (deep.as_str(), "nesting is deeper than 64 levels"),
            (r#"{"apiVersion":"v1","kind":"Pod","metadata":[]}"#, "metadata: Invalid value: must be a map"),
            (
                r#"{"apiVersion":"v1","kind":"Pod","metadata":{"annotations":[]}}"#,
                "metadata.annotations: Invalid value",
            ),
            (
                r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":5}}"#,
                "manifest: metadata.namespace: Invalid value",
            ),
        ];
        for (text, message) in cases {
            match submitted(text) {
                Err(ApplyError::BadRequest { reason }) => assert!(reason.contains(message), "{text}: {reason}"),
                other => panic!("{text}: {other:?}"),
            }
        }
        // A long unknown key is cut in the message.
        let long = format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p"}},"spec":{{"{}":1}}}}"#,
            "k".repeat(10_000)
        );
        match submitted(&long) {
            Err(ApplyError::BadRequest { reason }) => assert!(reason.len() < 200 && reason.contains("..."), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_last_applied_annotation_that_is_not_a_manifest_counts_as_none() {
        let (modified, live) =
            submitted(r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a","labels":{"x":"1"}}}"#)
                .expect("reads");
        let mut live = live;
        live.meta_mut().labels.insert("y", "2");
        for bad in ["not json", "[1]", &format!("{}{}", "[".repeat(200), "]".repeat(200))] {
            live.meta_mut().annotations.insert(LAST_APPLIED_ANNOTATION, bad);
            let merged = merged(&live, &modified).expect("merges");
            assert_eq!(merged.meta().labels.get("y"), Some("2"), "nothing removed");
        }
    }

    #[test]
    fn a_strategy_changed_keeps_only_the_fields_the_manifest_sets() {
        // Kubernetes' retainKeys: the live object's defaulted rollingUpdate goes with the type.
        let current = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}}});
        let recreate = json!({"spec": {"strategy": {"type": "Recreate"}}});
        let merged = merge(Kind::Deployment, None, recreate, current.clone());
        assert_eq!(merged, json!({"spec": {"strategy": {"type": "Recreate"}}}));
        // A strategy the manifest does not change stays as it is.
        let same = json!({"spec": {"strategy": {"type": "RollingUpdate"}}});
        assert_eq!(merge(Kind::Deployment, None, same, current.clone()), current);
    }

    #[test]
    fn a_field_whose_type_changed_is_replaced() {
        let merged =
            merge(Kind::Pod, None, json!({"metadata": {"labels": "x"}}), json!({"metadata": {"labels": {"a": "1"}}}));
        assert_eq!(merged, json!({"metadata": {"labels": "x"}}));
    }
}
