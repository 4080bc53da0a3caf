//! What a pod takes from ConfigMaps and Secrets, worked out by the agent's core: its
//! containers' variables (`env` with `valueFrom`, `envFrom`) and the files of its volumes.
//! Pure functions of the pod and the objects the agent's watch delivered.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::core_v1::{ConfigMap, Container, KeyToPath, Pod, Secret};
use crate::object::{Kind, Object, ObjectKey};
use crate::validation::{FieldRef, decode_base64, field_path_of};

/// The ConfigMaps and Secrets an agent knows, by key.
#[derive(Clone, Debug, Default)]
pub struct Configs {
    maps: BTreeMap<ObjectKey, Arc<ConfigMap>>,
    secrets: BTreeMap<ObjectKey, Arc<Secret>>,
}

/// No ConfigMaps or Secrets.
pub static EMPTY: Configs = Configs::new();

impl Configs {
    /// None.
    pub const fn new() -> Self {
        Self { maps: BTreeMap::new(), secrets: BTreeMap::new() }
    }

    /// Keeps `obj` (a ConfigMap or Secret; other kinds are ignored). Whether it changed
    /// what the agent knows.
    pub fn put(&mut self, obj: &Object) -> bool {
        match obj {
            Object::ConfigMap(c) => {
                let key = obj.key();
                let same = self.maps.get(&key).is_some_and(|o| o.data == c.data && o.binary_data == c.binary_data);
                self.maps.insert(key, c.clone());
                !same
            }
            Object::Secret(s) => {
                let key = obj.key();
                let same = self.secrets.get(&key).is_some_and(|o| o.data == s.data);
                self.secrets.insert(key, s.clone());
                !same
            }
            _ => false,
        }
    }

    /// Forgets the object at `key`; whether it was known.
    pub fn remove(&mut self, key: &ObjectKey) -> bool {
        match key.kind {
            Kind::ConfigMap => self.maps.remove(key).is_some(),
            Kind::Secret => self.secrets.remove(key).is_some(),
            _ => false,
        }
    }

    /// The keys it knows of `kind` (for a relist: what is missing from the new list is gone).
    pub fn keys(&self, kind: Kind) -> Vec<ObjectKey> {
        match kind {
            Kind::ConfigMap => self.maps.keys().cloned().collect(),
            Kind::Secret => self.secrets.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    fn map(&self, namespace: &str, name: &str) -> Option<&ConfigMap> {
        self.maps.get(&ObjectKey::new(Kind::ConfigMap, namespace, name)).map(|c| &**c)
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<&Secret> {
        self.secrets.get(&ObjectKey::new(Kind::Secret, namespace, name)).map(|s| &**s)
    }
}

/// The ConfigMaps and Secrets `pod` takes anything from, in key order.
pub fn references(pod: &Pod) -> Vec<ObjectKey> {
    let ns = pod.metadata.namespace_str();
    let mut out = Vec::new();
    for c in &pod.spec.containers {
        for e in &c.env {
            if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    out.push(ObjectKey::new(Kind::ConfigMap, ns, &r.name));
                }
                if let Some(r) = &from.secret_key_ref {
                    out.push(ObjectKey::new(Kind::Secret, ns, &r.name));
                }
            }
        }
        for f in &c.env_from {
            if let Some(r) = &f.config_map_ref {
                out.push(ObjectKey::new(Kind::ConfigMap, ns, &r.name));
            }
            if let Some(r) = &f.secret_ref {
                out.push(ObjectKey::new(Kind::Secret, ns, &r.name));
            }
        }
    }
    for v in &pod.spec.volumes {
        if let Some(c) = &v.config_map {
            out.push(ObjectKey::new(Kind::ConfigMap, ns, &c.name));
        }
        if let Some(s) = &v.secret {
            out.push(ObjectKey::new(Kind::Secret, ns, &s.secret_name));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// What the pod's own fields give a `fieldRef`.
#[derive(Clone, Copy, Debug)]
pub struct PodFields<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its address, once its sandbox has one.
    pub pod_ip: Option<&'a str>,
    /// The node's address.
    pub host_ip: Option<&'a str>,
}

/// The value a `fieldRef` names, if the pod has one.
fn field_value(fields: &PodFields<'_>, path: &str) -> Option<String> {
    let pod = fields.pod;
    Some(match field_path_of(path)? {
        FieldRef::Field("metadata.name") => pod.metadata.name.to_string(),
        FieldRef::Field("metadata.namespace") => pod.metadata.namespace_str().to_owned(),
        FieldRef::Field("metadata.uid") => pod.metadata.uid.map(|u| u.to_string()).unwrap_or_default(),
        FieldRef::Field("spec.nodeName") => pod.spec.node_name.as_deref().unwrap_or_default().to_owned(),
        FieldRef::Field("status.hostIP") => fields.host_ip.unwrap_or_default().to_owned(),
        FieldRef::Field("status.podIP" | "status.podIPs") => {
            fields.pod_ip.or(fields.host_ip).unwrap_or_default().to_owned()
        }
        FieldRef::Field(_) => return None,
        FieldRef::Label(k) => pod.metadata.labels.get(k).unwrap_or_default().to_owned(),
        FieldRef::Annotation(k) => pod.metadata.annotations.get(k).unwrap_or_default().to_owned(),
    })
}

/// `$(VAR)` in `s` replaced with `env`'s VAR (its last value), `$$` with `$`, other text kept
/// (Kubernetes' expansion of `value`, `command` and `args`).
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some((_, v)) = env.iter().rev().find(|(k, _)| k == &inner[..end])
        {
            out.push_str(v);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The values of a ConfigMap's keys, `binaryData` decoded.
fn map_values(c: &ConfigMap) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = c.data.iter().map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec())).collect();
    out.extend(c.binary_data.iter().filter_map(|(k, v)| Some((k.to_owned(), decode_base64(v)?))));
    out.sort();
    out
}

/// The values of a Secret's keys, decoded.
fn secret_values(s: &Secret) -> Vec<(String, Vec<u8>)> {
    s.data.iter().filter_map(|(k, v)| Some((k.to_owned(), decode_base64(v)?))).collect()
}

/// The variables of `container`, in order: `envFrom` (each source's keys, with its prefix;
/// keys that are no variable names are skipped, as the kubelet does), then `env` (`value`s
/// expanded against the variables before them, `valueFrom` resolved). Kubernetes' kubelet
/// message when a source is missing and not optional.
///
/// # Errors
/// A ConfigMap, Secret or key that is missing and not optional, as the kubelet says it.
pub fn environment(
    fields: &PodFields<'_>,
    container: &Container,
    configs: &Configs,
) -> Result<Vec<(String, String)>, String> {
    let ns = fields.pod.metadata.namespace_str();
    let mut env = Env::default();
    for f in &container.env_from {
        let prefix = f.prefix.as_deref().unwrap_or_default();
        let values = if let Some(r) = &f.config_map_ref {
            match configs.map(ns, &r.name) {
                // As the kubelet: variables come from `data`, not `binaryData`.
                Some(c) => c.data.iter().map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec())).collect(),
                None if r.optional == Some(true) => continue,
                None => return Err(format!("configmap {:?} not found", r.name.as_str())),
            }
        } else if let Some(r) = &f.secret_ref {
            match configs.secret(ns, &r.name) {
                Some(s) => secret_values(s),
                None if r.optional == Some(true) => continue,
                None => return Err(format!("secret {:?} not found", r.name.as_str())),
            }
        } else {
            continue;
        };
        for (k, v) in values {
            let name = format!("{prefix}{k}");
            if crate::validation::is_env_var_name(&name) {
                env.set(name, lossy(&v));
            }
        }
    }
    for var in &container.env {
        let value = match &var.value_from {
            None => expand(var.value.as_deref().unwrap_or_default(), &env.vars),
            Some(from) => {
                if let Some(f) = &from.field_ref {
                    field_value(fields, &f.field_path).unwrap_or_default()
                } else if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional == Some(true);
                    match configs.map(ns, &r.name) {
                        None if optional => continue,
                        None => return Err(format!("configmap {:?} not found", r.name.as_str())),
                        Some(c) => match c.data.get(&r.key) {
                            Some(v) => v.to_owned(),
                            None if optional => continue,
                            None => {
                                return Err(format!("couldn't find key {} in ConfigMap {}/{}", r.key, ns, r.name));
                            }
                        },
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional == Some(true);
                    match configs.secret(ns, &r.name) {
                        None if optional => continue,
                        None => return Err(format!("secret {:?} not found", r.name.as_str())),
                        Some(s) => match secret_values(s).into_iter().find(|(k, _)| k == r.key.as_str()) {
                            Some((_, v)) => lossy(&v),
                            None if optional => continue,
                            None => {
                                return Err(format!("couldn't find key {} in Secret {}/{}", r.key, ns, r.name));
                            }
                        },
                    }
                } else {
                    continue;
                }
            }
        };
        env.set(var.name.to_string(), value);
    }
    Ok(env.vars)
}

/// Variables in order, a name set again keeping its place (as the kubelet's list), each set
/// in O(log n).
#[derive(Default)]
struct Env {
    vars: Vec<(String, String)>,
    at: BTreeMap<String, usize>,
}

impl Env {
    fn set(&mut self, name: String, value: String) {
        match self.at.get(&name) {
            Some(&i) => self.vars[i].1 = value,
            None => {
                self.at.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }
}

/// A file of a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeFile {
    /// Its path in the volume (relative, validated: no `..`).
    pub path: String,
    /// Its contents.
    pub data: Vec<u8>,
    /// Its mode (0 to 0o777).
    pub mode: u32,
}

/// What a volume is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeSource {
    /// An empty directory; on a tmpfs of at most `size_limit` bytes when `memory`.
    EmptyDir {
        /// On a tmpfs.
        memory: bool,
        /// Its bound in bytes, if it has one.
        size_limit: Option<i64>,
    },
    /// Files projected from a ConfigMap or (`secret`: on a tmpfs) a Secret, replaced as a
    /// whole when the object changes.
    Files {
        /// From a Secret: kept off the disk.
        secret: bool,
        /// The files.
        files: Vec<VolumeFile>,
    },
}

/// One volume of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeData {
    /// Its name.
    pub name: String,
    /// What it holds.
    pub source: VolumeSource,
}

/// Every volume of a pod as of one version of its sources; `generation` grows with each
/// change, so a runtime that gets two versions out of order keeps the newer.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Volumes {
    /// The version.
    pub generation: u64,
    /// The volumes, in the pod's order.
    pub volumes: Vec<VolumeData>,
}

/// The files `items` (all keys when empty) of `values` project to; an error for an item whose
/// key is missing, unless `optional`.
fn project(
    values: &[(String, Vec<u8>)],
    items: &[KeyToPath],
    default_mode: Option<i32>,
    optional: bool,
    what: &str,
) -> Result<Vec<VolumeFile>, String> {
    let mode = |m: Option<i32>| {
        u32::try_from(m.or(default_mode).unwrap_or(crate::defaults::DEFAULT_VOLUME_MODE)).unwrap_or(0o644) & 0o777
    };
    if items.is_empty() {
        return Ok(values
            .iter()
            .map(|(k, v)| VolumeFile { path: k.clone(), data: v.clone(), mode: mode(None) })
            .collect());
    }
    let mut out = Vec::new();
    for item in items {
        match values.iter().find(|(k, _)| k == item.key.as_str()) {
            Some((_, v)) => {
                out.push(VolumeFile { path: item.path.to_string(), data: v.clone(), mode: mode(item.mode) })
            }
            None if optional => {}
            None => return Err(format!("{what} references non-existent config key: {}", item.key)),
        }
    }
    Ok(out)
}

/// The pod's volumes and their files as of `configs`.
///
/// # Errors
/// As the kubelet's `FailedMount` event says it: the first volume whose ConfigMap, Secret or
/// key is missing and not optional.
pub fn volumes(pod: &Pod, configs: &Configs) -> Result<Vec<VolumeData>, String> {
    let ns = pod.metadata.namespace_str();
    let mut out = Vec::new();
    for v in &pod.spec.volumes {
        let failed = |e: String| format!("MountVolume.SetUp failed for volume {:?} : {e}", v.name.as_str());
        let source = if let Some(e) = &v.empty_dir {
            VolumeSource::EmptyDir {
                memory: e.medium.as_deref() == Some("Memory"),
                size_limit: e.size_limit.map(|q| q.value()),
            }
        } else if let Some(c) = &v.config_map {
            let optional = c.optional == Some(true);
            let values = match configs.map(ns, &c.name) {
                Some(m) => map_values(m),
                None if optional => Vec::new(),
                None => return Err(failed(format!("configmap {:?} not found", c.name.as_str()))),
            };
            let files = project(&values, &c.items, c.default_mode, optional, "configMap").map_err(failed)?;
            VolumeSource::Files { secret: false, files }
        } else if let Some(s) = &v.secret {
            let optional = s.optional == Some(true);
            let values = match configs.secret(ns, &s.secret_name) {
                Some(m) => secret_values(m),
                None if optional => Vec::new(),
                None => return Err(failed(format!("secret {:?} not found", s.secret_name.as_str()))),
            };
            let files = project(&values, &s.items, s.default_mode, optional, "secret").map_err(failed)?;
            VolumeSource::Files { secret: true, files }
        } else {
            continue;
        };
        out.push(VolumeData { name: v.name.to_string(), source });
    }
    Ok(out)
}
