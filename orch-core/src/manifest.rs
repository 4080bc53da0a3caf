//! Manifests: multi-document YAML and JSON, dispatched on `apiVersion` and `kind`.
//!
//! Every error names the document, the field path and the problem:
//! `document 2 (Deployment "web"): spec.replicas: invalid type: string "three", expected i32`.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::object::{Kind, Object, Resource};

/// The most bytes of manifest text parsed in one call.
pub const MANIFEST_BYTES_MAX: usize = 8 * 1024 * 1024;
/// The most objects one manifest text may hold.
pub const MANIFEST_OBJECTS_MAX: usize = 10_000;
/// The deepest nesting of YAML or JSON accepted.
pub const MANIFEST_DEPTH_MAX: usize = 64;

/// A manifest that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The 1-based document number in a multi-document text (0 when not known).
    pub document: usize,
    /// The kind and name of the document, when they could be read.
    pub object: Option<String>,
    /// The field path, such as `spec.template.spec.containers[0].image`, or empty.
    pub field: String,
    /// The problem.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.document > 0 {
            write!(f, "document {}", self.document)?;
            if let Some(obj) = &self.object {
                write!(f, " ({obj})")?;
            }
            f.write_str(": ")?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

fn error(field: impl Into<String>, message: impl Into<String>) -> ManifestError {
    ManifestError { document: 0, object: None, field: field.into(), message: message.into() }
}

/// Rewrites serde's messages into the words Kubernetes users know.
fn humanize(message: &str) -> String {
    // "unknown variant `Sometimes`, expected one of `Always`, `OnFailure`, `Never`"
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((value, expected)) = rest.split_once("`, expected ")
    {
        let supported = expected.trim_start_matches("one of ").replace("` or `", "`, `").replace('`', "\"");
        return format!("Unsupported value: \"{value}\": supported values: {supported}");
    }
    // "unknown field `replcas`, expected one of `replicas`, ..."
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, expected)) = rest.split_once('`')
    {
        let expected = expected.trim_start_matches(", ").replace('`', "");
        return format!("unknown field \"{name}\" ({expected})");
    }
    message.to_owned()
}

/// Removes `null` map values: Kubernetes treats `field: null` (and an empty YAML value) as
/// absent. Also enforces the depth limit.
pub(crate) fn strip_nulls(value: &mut Value, depth: usize) -> Result<(), ManifestError> {
    if depth > MANIFEST_DEPTH_MAX {
        return Err(error("", format!("nesting is deeper than {MANIFEST_DEPTH_MAX} levels")));
    }
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            for v in map.values_mut() {
                strip_nulls(v, depth + 1)?;
            }
        }
        Value::Array(items) => {
            for v in items {
                strip_nulls(v, depth + 1)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The most bytes of one map key a field path quotes (a longer one is cut, marked `...`).
pub const PATH_KEY_BYTES_MAX: usize = 64;

/// A field path in orch's own words (`spec.containers[0].image`): the state machine keeps
/// such paths in its outcomes, so their form must not depend on a library's, and a key is cut
/// to [`PATH_KEY_BYTES_MAX`] bytes so that no input makes a long one.
fn field_path(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        let name = match segment {
            serde_path_to_error::Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                continue;
            }
            serde_path_to_error::Segment::Map { key } => key.as_str(),
            serde_path_to_error::Segment::Enum { variant } => variant.as_str(),
            serde_path_to_error::Segment::Unknown => "?",
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(crate::text::cut(name, PATH_KEY_BYTES_MAX));
        if name.len() > PATH_KEY_BYTES_MAX {
            out.push_str("...");
        }
    }
    out
}

fn typed<T: Resource + DeserializeOwned>(value: Value) -> Result<Object, ManifestError> {
    serde_path_to_error::deserialize::<_, T>(value)
        .map(Resource::into_object)
        .map_err(|e| error(field_path(e.path()), humanize(&e.into_inner().to_string())))
}

fn describe(value: &Value) -> Option<String> {
    let kind = value.get("kind")?.as_str()?;
    match value.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str) {
        Some(name) => Some(format!("{kind} {name:?}")),
        None => Some(kind.to_owned()),
    }
}

/// Reads one object from a parsed manifest value (with `apiVersion` and `kind`).
pub fn object_from_value(mut value: Value) -> Result<Object, ManifestError> {
    strip_nulls(&mut value, 0)?;
    let Value::Object(map) = &mut value else {
        return Err(error("", "a manifest must be a map with apiVersion, kind and metadata"));
    };
    let api_version = match map.remove("apiVersion") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(error("apiVersion", "must be a string")),
        None => return Err(error("apiVersion", "Required value")),
    };
    let kind_name = match map.remove("kind") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(error("kind", "must be a string")),
        None => return Err(error("kind", "Required value")),
    };
    let Some(kind) = Kind::from_type(&api_version, &kind_name) else {
        let known: Vec<String> = Kind::ALL.iter().map(|k| format!("{}/{}", k.api_version(), k.as_str())).collect();
        return Err(error(
            "kind",
            format!("no kind {kind_name:?} is registered for version {api_version:?}; supported: {}", known.join(", ")),
        ));
    };
    match kind {
        Kind::Namespace => typed::<crate::core_v1::Namespace>(value),
        Kind::Node => typed::<crate::core_v1::Node>(value),
        Kind::Pod => typed::<crate::core_v1::Pod>(value),
        Kind::Service => typed::<crate::core_v1::Service>(value),
        Kind::Endpoints => typed::<crate::core_v1::Endpoints>(value),
        Kind::Deployment => typed::<crate::apps_v1::Deployment>(value),
        Kind::ReplicaSet => typed::<crate::apps_v1::ReplicaSet>(value),
        Kind::Event => typed::<crate::core_v1::Event>(value),
        Kind::ConfigMap => typed::<crate::core_v1::ConfigMap>(value),
        Kind::Secret => typed::<crate::core_v1::Secret>(value),
    }
}

/// Adds the objects of one document (a single object, or a `v1` `List`) to `out`, each with
/// its value as written.
fn push_document(value: Value, document: usize, out: &mut Vec<(Value, Object)>) -> Result<(), ManifestError> {
    let located = |mut e: ManifestError, object: Option<String>| {
        e.document = document;
        e.object = object;
        e
    };
    if value.is_null() {
        return Ok(()); // An empty document, as between two `---`.
    }
    if value.get("kind").and_then(Value::as_str) == Some("List") {
        let Some(Value::Array(items)) = value.get("items") else {
            return Err(located(error("items", "Required value"), Some("List".into())));
        };
        for (i, item) in items.iter().enumerate() {
            let object = describe(item);
            let obj = object_from_value(item.clone()).map_err(|mut e| {
                e.field = if e.field.is_empty() { format!("items[{i}]") } else { format!("items[{i}].{}", e.field) };
                located(e, object)
            })?;
            push_object(item.clone(), obj, document, out)?;
        }
        return Ok(());
    }
    let object = describe(&value);
    let obj = object_from_value(value.clone()).map_err(|e| located(e, object))?;
    push_object(value, obj, document, out)
}

fn push_object(
    value: Value,
    obj: Object,
    document: usize,
    out: &mut Vec<(Value, Object)>,
) -> Result<(), ManifestError> {
    // Every list and string within its limit as soon as a manifest is parsed. (Not in
    // `object_from_value`, which also reads what servers send: a stored object is not refused
    // on the way out.)
    if let Some(first) = crate::bounds::check_bounds(&obj).0.first() {
        let text = first.to_string();
        let message = text.strip_prefix(&format!("{}: ", first.field)).unwrap_or(&text).to_owned();
        let mut e = error(first.field.clone(), message);
        e.document = document;
        e.object = Some(format!("{} {:?}", obj.kind(), obj.meta().name.as_str()));
        return Err(e);
    }
    if out.len() >= MANIFEST_OBJECTS_MAX {
        let mut e = error("", format!("a manifest may hold at most {MANIFEST_OBJECTS_MAX} objects"));
        e.document = document;
        return Err(e);
    }
    out.push((value, obj));
    Ok(())
}

/// Parses a manifest text: one or more YAML documents separated by `---`, or a stream of JSON
/// values. Returns the objects in order; nothing is validated beyond types and field names
/// (see [`crate::validation::validate`]).
pub fn parse_manifests(text: &str) -> Result<Vec<Object>, ManifestError> {
    Ok(parse_manifest_documents(text)?.into_iter().map(|(_, obj)| obj).collect())
}

/// As [`parse_manifests`], each object with its manifest as written (the items of a `List`
/// each on its own): what an apply sends, since only the text tells an absent list from an
/// empty one ([`crate::Command::ApplyManifest`]).
///
/// # Errors
/// As [`parse_manifests`].
pub fn parse_manifest_documents(text: &str) -> Result<Vec<(Value, Object)>, ManifestError> {
    if text.len() > MANIFEST_BYTES_MAX {
        return Err(error(
            "",
            format!("a manifest may be at most {MANIFEST_BYTES_MAX} bytes, this one is {}", text.len()),
        ));
    }
    let mut out = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
        for (i, doc) in stream.enumerate() {
            let document = i + 1;
            let value = doc.map_err(|e| {
                let mut err = error("", format!("invalid JSON: {e}"));
                err.document = document;
                err
            })?;
            match value {
                Value::Array(items) => {
                    for item in items {
                        push_document(item, document, &mut out)?;
                    }
                }
                value => push_document(value, document, &mut out)?,
            }
        }
        return Ok(out);
    }
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value: Value = serde::Deserialize::deserialize(doc).map_err(|e| {
            let mut err = error("", format!("invalid YAML: {e}"));
            err.document = document;
            err
        })?;
        push_document(value, document, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports: [{containerPort: 80, name: http}]
        resources:
          requests: {cpu: 250m, memory: 128Mi}
        readinessProbe:
          httpGet: {path: /healthz, port: http}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
"#;

    #[test]
    fn parses_multi_document_yaml() {
        let objs = parse_manifests(WEB).unwrap_or_default();
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[0].kind(), Kind::Deployment);
        assert_eq!(objs[1].kind(), Kind::Service);
        let Object::Deployment(d) = &objs[0] else { panic!("not a deployment") };
        assert_eq!(d.spec.replicas, Some(3));
        let requests = &d.spec.template.spec.containers[0].resources.requests;
        assert_eq!(requests.cpu.map(|q| q.milli_value()), Some(250));
        assert_eq!(requests.memory.map(|q| q.value()), Some(128 << 20));
    }

    #[test]
    fn parses_json_stream_and_lists() {
        let text = r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}}
{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"b"}}]}"#;
        let objs = parse_manifests(text).unwrap_or_default();
        let names: Vec<&str> = objs.iter().map(|o| o.meta().name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    fn err_of(text: &str) -> String {
        parse_manifests(text).err().map(|e| e.to_string()).unwrap_or_else(|| "parsed".into())
    }

    #[test]
    fn lists_and_strings_are_bounded_where_the_object_is_parsed() {
        let args = vec!["''"; 300].join(", ");
        let e = err_of(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\nspec: {{containers: [{{name: c, image: x, args: [{args}]}}]}}"
        ));
        assert_eq!(e, "document 1 (Pod \"p\"): spec.containers[0].args: Too many: 300: must have at most 256 items");
    }

    #[test]
    fn errors_name_document_field_and_problem() {
        let misspelled = WEB.replacen("replicas: 3", "replcas: 3", 1);
        let e = err_of(&misspelled);
        assert!(e.starts_with("document 1 (Deployment \"web\"): spec.replcas: unknown field \"replcas\""), "{e}");

        let wrong_type = WEB.replacen("replicas: 3", "replicas: three", 1);
        let e = err_of(&wrong_type);
        assert!(e.starts_with("document 1 (Deployment \"web\"): spec.replicas: invalid type: string \"three\""), "{e}");

        let bad_qty = WEB.replacen("cpu: 250m", "cpu: lots", 1);
        let e = err_of(&bad_qty);
        assert!(e.contains("spec.template.spec.containers[0].resources.requests.cpu: Invalid value: \"lots\": quantities must match"), "{e}");

        let bad_enum =
            WEB.replacen("  ports: [{port: 80, targetPort: http}]", "  type: LoadBalancer\n  ports: [{port: 80}]", 1);
        let e = err_of(&bad_enum);
        assert!(e.starts_with("document 2 (Service \"web\"): spec.type: Unsupported value: \"LoadBalancer\": supported values: \"ClusterIP\", \"NodePort\""), "{e}");

        let e = err_of("apiVersion: v1\nkind: Widget\nmetadata: {name: w}\n");
        assert!(
            e.starts_with("document 1 (Widget \"w\"): kind: no kind \"Widget\" is registered for version \"v1\""),
            "{e}"
        );

        let e = err_of("kind: Pod\nmetadata: {name: w}\n");
        assert!(e.contains("apiVersion: Required value"), "{e}");

        let e = err_of("a: [b\n");
        assert!(e.starts_with("document 1: invalid YAML"), "{e}");
    }

    #[test]
    fn nulls_are_absent() {
        let objs = parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n  labels:\nspec:\n")
            .unwrap_or_default();
        assert_eq!(objs.len(), 1);
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(parse_manifests(&deep).is_err());
    }
}
