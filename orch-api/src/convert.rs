//! Conversions between the wire messages and orch-core's types.
//!
//! Every conversion from the wire checks what it reads and names the field it rejects: the
//! bytes come from the network.

use orch_core::fields::FieldSelector;
use orch_core::manifest::object_from_value;
use orch_core::{Action, Change, ClientId, EventType, Kind, Object, ObjectKey, Selector, WatchFilter};

use crate::pb;
use crate::status::Error;

/// An object in its wire form (Kubernetes JSON).
pub fn object_to_pb(object: &Object) -> pb::Object {
    // Serializing a JSON value into memory cannot fail.
    let json = serde_json::to_vec(&object.to_manifest()).unwrap_or_default();
    pb::Object { json: json.into() }
}

/// Reads an object sent as `field`; names the field and the rule on error.
///
/// # Errors
/// [`Error::Invalid`] when the field is missing or does not hold a valid object.
pub fn object_from_pb(object: Option<&pb::Object>, field: &str) -> Result<Object, Error> {
    let value = json_from_pb(object, field)?;
    typed_from_value(value, field)
}

fn json_from_pb(object: Option<&pb::Object>, field: &str) -> Result<serde_json::Value, Error> {
    let object = object.ok_or_else(|| Error::Invalid(format!("{field}: Required value")))?;
    serde_json::from_slice(&object.json).map_err(|e| Error::Invalid(format!("{field}: Invalid value: not JSON: {e}")))
}

fn typed_from_value(value: serde_json::Value, field: &str) -> Result<Object, Error> {
    object_from_value(value).map_err(|e| {
        let path = if e.field.is_empty() { field.to_owned() } else { format!("{field}.{}", e.field) };
        Error::Invalid(format!("{path}: {}", e.message))
    })
}

/// Reads a manifest sent as `field` for an apply: returns it as compact JSON text, as
/// submitted (an absent list stays absent), and the object it describes, which names the field
/// and the rule on error.
///
/// # Errors
/// [`Error::Invalid`] when the field is missing or does not hold a valid object.
pub fn manifest_from_pb(object: Option<&pb::Object>, field: &str) -> Result<(String, Object), Error> {
    let value = json_from_pb(object, field)?;
    // Serializing a JSON value into memory cannot fail.
    let text = serde_json::to_string(&value).unwrap_or_default();
    Ok((text, typed_from_value(value, field)?))
}

/// Reads a kind as a user types it (`Pod`, `pods`, `po`), naming `field` on error.
///
/// # Errors
/// [`Error::Invalid`] for an unknown kind.
pub fn kind_from_str(text: &str, field: &str) -> Result<Kind, Error> {
    Kind::parse(text).ok_or_else(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
        Error::Invalid(format!("{field}: Unsupported value: {text:?}: supported values: {}", known.join(", ")))
    })
}

/// The wire form of a key.
pub fn key_to_pb(key: &ObjectKey) -> pb::Key {
    pb::Key { kind: key.kind.as_str().to_owned(), namespace: key.namespace.to_string(), name: key.name.to_string() }
}

/// Reads a key; a namespaced kind without a namespace is in `default`.
///
/// # Errors
/// [`Error::Invalid`] when the key is missing, its kind unknown or its name empty.
pub fn key_from_pb(key: Option<&pb::Key>, field: &str) -> Result<ObjectKey, Error> {
    let key = key.ok_or_else(|| Error::Invalid(format!("{field}: Required value")))?;
    let kind = kind_from_str(&key.kind, &format!("{field}.kind"))?;
    if key.name.is_empty() {
        return Err(Error::Invalid(format!("{field}.name: Required value")));
    }
    let namespace = if key.namespace.is_empty() { "default" } else { &key.namespace };
    Ok(ObjectKey::new(kind, namespace, &key.name))
}

/// The wire form of a first attempt's client id, serial and the client's lowest serial awaiting
/// a reply (a retry sets `retry`).
pub fn write_id(client: ClientId, serial: u64, acked_below: u64) -> pb::WriteId {
    pb::WriteId { client_high: (client.0 >> 64) as u64, client_low: client.0 as u64, serial, acked_below, retry: false }
}

/// Reads a write id as the request it makes with `command`.
///
/// # Errors
/// [`Error::Invalid`] when it is missing, its client is 0, or `acked_below` is above the serial.
pub fn request_from_pb(id: Option<&pb::WriteId>, command: orch_core::Command) -> Result<orch_core::Request, Error> {
    let (client, serial, acked_below) = write_id_from_pb(id)?;
    let retry = id.is_some_and(|id| id.retry);
    Ok(orch_core::Request { client, serial, acked_below, retry, command })
}

/// Reads a write id: the client, the serial and `acked_below`.
///
/// # Errors
/// [`Error::Invalid`] when it is missing, its client is 0, or `acked_below` is above the serial.
pub fn write_id_from_pb(id: Option<&pb::WriteId>) -> Result<(ClientId, u64, u64), Error> {
    let id = id.ok_or_else(|| Error::Invalid("id: Required value".to_owned()))?;
    let client = (u128::from(id.client_high) << 64) | u128::from(id.client_low);
    if client == 0 {
        return Err(Error::Invalid("id.client: Invalid value: 0: must not be 0".to_owned()));
    }
    if id.acked_below > id.serial {
        return Err(Error::Invalid(format!(
            "id.ackedBelow: Invalid value: {}: must not be above the serial {}",
            id.acked_below, id.serial
        )));
    }
    Ok((ClientId(client), id.serial, id.acked_below))
}

/// The wire form of a change.
pub fn change_to_pb(change: &Change) -> pb::Change {
    pb::Change {
        key: Some(key_to_pb(&change.key)),
        uid: change.uid.to_string(),
        revision: change.revision.0,
        action: change.action.to_string(),
    }
}

/// Reads an action's wire name (as [`Action`]'s `Display` writes it).
pub fn action_from_str(text: &str) -> Option<Action> {
    [Action::Created, Action::Updated, Action::Unchanged, Action::Deleting, Action::Deleted]
        .into_iter()
        .find(|a| a.to_string() == text)
}

/// Builds a watch or list filter from its wire fields; empty fields do not filter.
///
/// # Errors
/// [`Error::Invalid`] for an unknown kind or a malformed label selector.
pub fn filter_from_parts(
    kind: &str,
    namespace: &str,
    label_selector: &str,
    node_name: &str,
    field_selector: &str,
) -> Result<WatchFilter, Error> {
    let kind = if kind.is_empty() { None } else { Some(kind_from_str(kind, "kind")?) };
    let labels: Selector = label_selector
        .parse()
        .map_err(|e| Error::Invalid(format!("labelSelector: Invalid value: {label_selector:?}: {e}")))?;
    let fields = FieldSelector::parse(field_selector, kind).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(WatchFilter {
        kind,
        namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
        labels,
        node_name: (!node_name.is_empty()).then(|| node_name.to_owned()),
        fields,
    })
}

/// The wire form of an event type.
pub fn event_type_to_pb(t: EventType) -> pb::EventType {
    match t {
        EventType::Added => pb::EventType::Added,
        EventType::Modified => pb::EventType::Modified,
        EventType::Deleted => pb::EventType::Deleted,
    }
}

/// Reads an event type.
pub fn event_type_from_pb(t: pb::EventType) -> EventType {
    match t {
        pb::EventType::Added => EventType::Added,
        pb::EventType::Modified => EventType::Modified,
        pb::EventType::Deleted => EventType::Deleted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Object {
        orch_core::parse_manifests(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: shop, labels: {app: web}}\nspec:\n  containers: [{name: web, image: nginx:1.27}]\n",
        )
        .expect("valid")
        .remove(0)
    }

    #[test]
    fn an_object_survives_the_wire() {
        let obj = pod();
        assert_eq!(object_from_pb(Some(&object_to_pb(&obj)), "object").expect("decodes"), obj);
    }

    #[test]
    fn a_bad_object_names_the_field() {
        let missing = object_from_pb(None, "object").expect_err("missing");
        assert_eq!(missing, Error::Invalid("object: Required value".into()));
        let not_json = pb::Object { json: b"{not json".to_vec().into() };
        assert!(
            matches!(object_from_pb(Some(&not_json), "objects[2]"), Err(Error::Invalid(m)) if m.starts_with("objects[2]: Invalid value: not JSON"))
        );
        let bad = pb::Object { json: br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"},"spec":{"containers":"no"}}"#.to_vec().into() };
        let e = object_from_pb(Some(&bad), "object").expect_err("bad spec");
        assert!(e.message().starts_with("object.spec.containers"), "{e}");
        let unknown =
            pb::Object { json: br#"{"apiVersion":"v9","kind":"Thing","metadata":{"name":"x"}}"#.to_vec().into() };
        assert!(
            object_from_pb(Some(&unknown), "object").expect_err("unknown kind").message().starts_with("object.kind")
        );
    }

    #[test]
    fn keys_default_the_namespace_and_name_bad_fields() {
        let key =
            key_from_pb(Some(&pb::Key { kind: "po".into(), namespace: String::new(), name: "web".into() }), "key")
                .expect("valid");
        assert_eq!(key, ObjectKey::new(Kind::Pod, "default", "web"));
        let node =
            key_from_pb(Some(&pb::Key { kind: "nodes".into(), namespace: "x".into(), name: "n1".into() }), "key")
                .expect("valid");
        assert_eq!(node, ObjectKey::new(Kind::Node, "", "n1"));
        let e =
            key_from_pb(Some(&pb::Key { kind: "widget".into(), namespace: String::new(), name: "w".into() }), "key")
                .expect_err("unknown kind");
        assert!(e.message().starts_with("key.kind: Unsupported value: \"widget\""), "{e}");
        let e = key_from_pb(Some(&pb::Key { kind: "pod".into(), ..Default::default() }), "key").expect_err("no name");
        assert_eq!(e.message(), "key.name: Required value");
    }

    #[test]
    fn write_ids_round_trip_and_refuse_client_zero() {
        let client = ClientId((7u128 << 64) | 9);
        assert_eq!(write_id_from_pb(Some(&write_id(client, 5, 3))).expect("valid"), (client, 5, 3));
        assert!(write_id_from_pb(Some(&write_id(ClientId(0), 5, 0))).is_err());
        let err = write_id_from_pb(Some(&write_id(client, 5, 6))).expect_err("acked beyond the serial");
        assert_eq!(err.to_string(), "id.ackedBelow: Invalid value: 6: must not be above the serial 5");
        assert!(write_id_from_pb(None).is_err());
    }

    #[test]
    fn filters_read_selectors_and_refuse_bad_ones() {
        let f = filter_from_parts("pods", "shop", "app=web", "", "").expect("valid");
        assert_eq!(f.kind, Some(Kind::Pod));
        assert!(f.matches(&pod()));
        assert!(!filter_from_parts("pods", "shop", "app=db", "", "").expect("valid").matches(&pod()));
        assert!(!filter_from_parts("pods", "shop", "app=web", "n1", "").expect("valid").matches(&pod()));
        let e = filter_from_parts("", "", "app in (", "", "").expect_err("malformed");
        assert!(e.message().starts_with("labelSelector: Invalid value"), "{e}");
        assert!(filter_from_parts("pods", "shop", "", "", "metadata.name=web").expect("valid").matches(&pod()));
        assert!(!filter_from_parts("pods", "shop", "", "", "metadata.name!=web").expect("valid").matches(&pod()));
        let e = filter_from_parts("pods", "", "", "", "spec.replicas=1").expect_err("not a pod field");
        assert!(e.message().starts_with("fieldSelector: Invalid value"), "{e}");
        for a in [Action::Created, Action::Updated, Action::Unchanged, Action::Deleting, Action::Deleted] {
            assert_eq!(action_from_str(&a.to_string()), Some(a));
        }
    }
}
