//! Validation of ConfigMaps, Secrets, and what pods take from them: `env` `valueFrom`,
//! `envFrom`, volumes and volume mounts (storage format 14), as Kubernetes validates them.

use std::collections::BTreeSet;

use base64::Engine as _;

use super::{FieldErrors, Path, check_name, is_dns1123_label, is_dns1123_subdomain, is_env_var_name, q};
use crate::core_v1::{ConfigMap, Container, EnvVarSource, KeyToPath, PodSpec, Secret};
use crate::strmap::StrMap;
use crate::text::Text;

/// The most bytes of keys and values a ConfigMap or a Secret may hold (a Secret's values
/// decoded): Kubernetes' 1 MiB (`MaxSecretSize`, a ConfigMap's `TotalSize`), which counts
/// values only; keys count here too, so that no map of empty values grows without bound.
pub const CONFIG_BYTES_MAX: usize = 1024 * 1024;
/// The longest key of a ConfigMap or Secret.
pub const CONFIG_KEY_BYTES_MAX: usize = 253;
/// The longest path of a projected key (`items[].path`).
pub const KEY_PATH_BYTES_MAX: usize = 4096;

const CONFIG_KEY_RULE: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const ENV_NAME_RULE: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit";
const MODE_RULE: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// The fields of a pod `fieldRef` may name (besides `metadata.labels['KEY']` and
/// `metadata.annotations['KEY']`).
pub const FIELD_PATHS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "status.hostIP",
    "status.podIP",
    "status.podIPs",
];

/// Why `key` is no ConfigMap or Secret key (Kubernetes' `IsConfigMapKey`), if it is not.
pub fn config_key_problem(key: &str) -> Option<String> {
    if key.is_empty() || key.len() > CONFIG_KEY_BYTES_MAX {
        return Some(format!("must be no more than {CONFIG_KEY_BYTES_MAX} characters"));
    }
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Some(CONFIG_KEY_RULE.to_owned());
    }
    if key == "." {
        return Some("must not be '.'".to_owned());
    }
    if key == ".." {
        return Some("must not be '..'".to_owned());
    }
    if key.starts_with("..") {
        return Some("must not start with '..'".to_owned());
    }
    None
}

fn check_keys(errs: &mut FieldErrors, path: &str, map: &StrMap) {
    for (k, _) in map.iter() {
        if let Some(reason) = config_key_problem(k) {
            errs.invalid(path, q(k), reason);
        }
    }
}

/// Base64 as Go's `encoding/base64.StdEncoding` reads it (what Kubernetes decodes `[]byte`
/// fields with): the standard alphabet with padding, line breaks skipped, and any bits after
/// the last whole byte taken (Go's non-strict mode).
const GO_STD: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical),
);

/// The decoded bytes of a base64 value, if it is one (see [`GO_STD`]).
pub fn decode_base64(value: &str) -> Option<Vec<u8>> {
    if value.contains(['\r', '\n']) {
        let joined: String = value.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
        return GO_STD.decode(joined.as_bytes()).ok();
    }
    GO_STD.decode(value.as_bytes()).ok()
}

/// The decoded bytes of every base64 value, in total; invalid values reported (and counted as
/// their text).
fn check_base64(errs: &mut FieldErrors, path: &str, map: &StrMap) -> usize {
    let mut total = 0usize;
    for (k, v) in map.iter() {
        match decode_base64(v) {
            Some(bytes) => total = total.saturating_add(bytes.len()),
            None => {
                errs.invalid(
                    format!("{path}[{k}]").as_str(),
                    "<value omitted>",
                    "must be base64 (RFC 4648, with padding)",
                );
                total = total.saturating_add(v.len());
            }
        }
    }
    total
}

/// A ConfigMap: keys, `binaryData` in base64, no key in both maps, at most
/// [`CONFIG_BYTES_MAX`] of values.
pub(super) fn check_config_map(errs: &mut FieldErrors, c: &ConfigMap) {
    check_keys(errs, "data", &c.data);
    check_keys(errs, "binaryData", &c.binary_data);
    for (k, _) in c.binary_data.iter() {
        if c.data.contains_key(k) {
            errs.invalid("data", q(k), "duplicate of key present in binaryData");
        }
    }
    let text: usize = c.data.iter().map(|(k, v)| k.len() + v.len()).sum();
    let keys: usize = c.binary_data.iter().map(|(k, _)| k.len()).sum();
    let binary = check_base64(errs, "binaryData", &c.binary_data).saturating_add(keys);
    if text.saturating_add(binary) > CONFIG_BYTES_MAX {
        errs.too_long("data", CONFIG_BYTES_MAX);
    }
}

/// A Secret: keys, values in base64 (`stringData` is merged into `data` by the defaults), at
/// most [`CONFIG_BYTES_MAX`] of decoded values.
pub(super) fn check_secret(errs: &mut FieldErrors, s: &Secret) {
    check_keys(errs, "data", &s.data);
    let keys: usize = s.data.iter().map(|(k, _)| k.len()).sum();
    if check_base64(errs, "data", &s.data).saturating_add(keys) > CONFIG_BYTES_MAX {
        errs.too_long("data", CONFIG_BYTES_MAX);
    }
    match s.type_.as_deref() {
        None | Some("") => errs.required("type", ""),
        Some(t) => {
            if let Some(reason) = is_qualified_type(t) {
                errs.invalid("type", q(t), reason);
            }
        }
    }
}

/// A Secret's type: any non-empty text within a name's length (Kubernetes checks only its
/// own `kubernetes.io/...` types' keys, which orch does not).
fn is_qualified_type(t: &str) -> Option<String> {
    (t.len() > CONFIG_KEY_BYTES_MAX).then(|| format!("must be no more than {CONFIG_KEY_BYTES_MAX} characters"))
}

fn check_immutable(errs: &mut FieldErrors, new: Option<bool>, old: Option<bool>, data_changed: bool) {
    if old == Some(true) {
        if new != Some(true) {
            errs.forbidden("immutable", "field is immutable when `immutable` is set");
        }
        if data_changed {
            errs.forbidden("data", "field is immutable when `immutable` is set");
        }
    }
}

pub(super) fn check_config_map_update(errs: &mut FieldErrors, new: &ConfigMap, old: &ConfigMap) {
    let changed = new.data != old.data || new.binary_data != old.binary_data;
    check_immutable(errs, new.immutable, old.immutable, changed);
}

pub(super) fn check_secret_update(errs: &mut FieldErrors, new: &Secret, old: &Secret) {
    check_immutable(errs, new.immutable, old.immutable, new.data != old.data);
    if new.type_ != old.type_ {
        errs.invalid("type", q(new.type_.as_deref().unwrap_or("")), "field is immutable");
    }
}

fn check_mode(errs: &mut FieldErrors, path: &Path<'_>, mode: Option<i32>) {
    if let Some(m) = mode
        && !(0..=0o777).contains(&m)
    {
        errs.invalid(path, m, MODE_RULE);
    }
}

fn check_items(errs: &mut FieldErrors, path: &Path<'_>, items: &[KeyToPath]) {
    if !errs.check_len(path, items.len(), super::LIST_ITEMS_MAX) {
        return;
    }
    let mut paths: BTreeSet<&str> = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        if let Some(reason) = config_key_problem(&item.key) {
            errs.invalid(&p.child("key"), q(&item.key), reason);
        }
        let pp = p.child("path");
        if item.path.is_empty() {
            errs.required(&pp, "");
        } else if let Some(reason) = relative_path_problem(&item.path) {
            errs.invalid(&pp, q(&item.path), reason);
        } else if !paths.insert(item.path.as_str()) {
            errs.duplicate(&pp, q(&item.path));
        } else if let Some(other) = paths.iter().find(|o| **o != item.path.as_str() && nested(o, &item.path)) {
            errs.invalid(
                &pp,
                q(&item.path),
                format!("must not be a directory of or under another item's path {}", q(other)),
            );
        }
        check_mode(errs, &p.child("mode"), item.mode);
    }
}

/// Why `path` is no relative path inside a volume, if it is not.
fn relative_path_problem(path: &str) -> Option<&'static str> {
    if path.len() > KEY_PATH_BYTES_MAX {
        return Some("must be no more than 4096 characters");
    }
    if path.starts_with('/') {
        return Some("must be a relative path");
    }
    if path.split('/').any(|seg| seg == "..") {
        return Some("must not contain '..'");
    }
    if path.split('/').next().is_some_and(|first| first.starts_with("..")) {
        return Some("must not start with '..'");
    }
    if path.contains('\0') {
        return Some("must not contain NUL");
    }
    // Stricter than Kubernetes, whose atomic writer fails on these when it writes.
    if path.split('/').any(|seg| seg.is_empty() || seg == ".") {
        return Some("must be a path of names: no empty or '.' parts, no trailing '/'");
    }
    None
}

/// Whether one of two item paths is a directory of the other (`a` and `a/b`).
fn nested(a: &str, b: &str) -> bool {
    let under = |x: &str, dir: &str| x.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'));
    under(a, b) || under(b, a)
}

/// The pod's volumes: names, exactly one source each, and each source's fields. Returns the
/// volume names.
pub(super) fn check_volumes<'s>(errs: &mut FieldErrors, path: &Path<'_>, spec: &'s PodSpec) -> BTreeSet<&'s str> {
    let mut names = BTreeSet::new();
    let vp = path.child("volumes");
    if !errs.check_len(&vp, spec.volumes.len(), super::LIST_ITEMS_MAX) {
        return names;
    }
    for (i, v) in spec.volumes.iter().enumerate() {
        let p = vp.index(i);
        if v.name.is_empty() {
            errs.required(&p.child("name"), "");
        } else {
            check_name(errs, &p.child("name"), &v.name, is_dns1123_label);
            if !names.insert(v.name.as_str()) {
                errs.duplicate(&p.child("name"), q(&v.name));
            }
        }
        let sources =
            usize::from(v.empty_dir.is_some()) + usize::from(v.config_map.is_some()) + usize::from(v.secret.is_some());
        if sources == 0 {
            errs.required(&p, "must specify a volume type: `emptyDir`, `configMap` or `secret`");
        } else if sources > 1 {
            errs.forbidden(&p, "may not specify more than 1 volume type");
        }
        if let Some(e) = &v.empty_dir {
            let ep = p.child("emptyDir");
            if let Some(m) = e.medium.as_deref()
                && !m.is_empty()
                && m != "Memory"
            {
                errs.not_supported(&ep.child("medium"), m, &["", "Memory"]);
            }
            if let Some(limit) = e.size_limit
                && limit.is_negative()
            {
                errs.invalid(&ep.child("sizeLimit"), q(&limit.to_string()), "must be greater than or equal to 0");
            }
        }
        if let Some(c) = &v.config_map {
            let cp = p.child("configMap");
            if c.name.is_empty() {
                errs.required(&cp.child("name"), "");
            } else {
                check_name(errs, &cp.child("name"), &c.name, is_dns1123_subdomain);
            }
            check_items(errs, &cp.child("items"), &c.items);
            check_mode(errs, &cp.child("defaultMode"), c.default_mode);
        }
        if let Some(s) = &v.secret {
            let sp = p.child("secret");
            if s.secret_name.is_empty() {
                errs.required(&sp.child("secretName"), "");
            } else {
                check_name(errs, &sp.child("secretName"), &s.secret_name, is_dns1123_subdomain);
            }
            check_items(errs, &sp.child("items"), &s.items);
            check_mode(errs, &sp.child("defaultMode"), s.default_mode);
        }
    }
    names
}

/// Why `path` is no mount path, if it is not: the process runtime mounts at an absolute path
/// of the node's filesystem, with no `..`.
fn mount_path_problem(path: &str) -> Option<&'static str> {
    if !path.starts_with('/') {
        return Some("must be an absolute path");
    }
    if path.split('/').any(|seg| seg == "..") {
        return Some("must not contain '..'");
    }
    if path.contains('\0') {
        return Some("must not contain NUL");
    }
    if path.trim_end_matches('/').is_empty() {
        return Some("must not be the root directory");
    }
    None
}

/// A container's `volumeMounts` (each names a volume of the pod, at a unique absolute path),
/// its `envFrom`, and its variables' `valueFrom`.
pub(super) fn check_container_config(errs: &mut FieldErrors, path: &Path<'_>, c: &Container, volumes: &BTreeSet<&str>) {
    let mp = path.child("volumeMounts");
    if errs.check_len(&mp, c.volume_mounts.len(), super::LIST_ITEMS_MAX) {
        let mut paths = BTreeSet::new();
        for (i, m) in c.volume_mounts.iter().enumerate() {
            let p = mp.index(i);
            if m.name.is_empty() {
                errs.required(&p.child("name"), "");
            } else if !volumes.contains(m.name.as_str()) {
                errs.not_found(&p.child("name"), q(&m.name), "");
            }
            let pp = p.child("mountPath");
            if m.mount_path.is_empty() {
                errs.required(&pp, "");
            } else if let Some(reason) = mount_path_problem(&m.mount_path) {
                errs.invalid(&pp, q(&m.mount_path), reason);
            } else if !paths.insert(m.mount_path.trim_end_matches('/')) {
                errs.invalid(&pp, q(&m.mount_path), "must be unique");
            }
        }
    }
    let fp = path.child("envFrom");
    if errs.check_len(&fp, c.env_from.len(), super::LIST_ITEMS_MAX) {
        for (i, f) in c.env_from.iter().enumerate() {
            let p = fp.index(i);
            if let Some(prefix) = &f.prefix
                && !prefix.is_empty()
                && !is_env_var_name(prefix)
            {
                errs.invalid(&p.child("prefix"), q(prefix), ENV_NAME_RULE);
            }
            match (&f.config_map_ref, &f.secret_ref) {
                (None, None) => errs.required(&p, "must specify one of: `configMapRef` or `secretRef`"),
                (Some(_), Some(_)) => errs.forbidden(&p, "may not have more than one field specified at a time"),
                (Some(r), None) => check_ref_name(errs, &p.child("configMapRef").child("name"), &r.name),
                (None, Some(r)) => check_ref_name(errs, &p.child("secretRef").child("name"), &r.name),
            }
        }
    }
    let ep = path.child("env");
    for (i, e) in c.env.iter().enumerate().take(super::LIST_ITEMS_MAX) {
        let Some(from) = &e.value_from else { continue };
        let item = ep.index(i);
        let p = item.child("valueFrom");
        if e.value.as_deref().is_some_and(|v| !v.is_empty()) {
            errs.invalid(&p, "", "may not be specified when `value` is not empty");
        }
        check_source(errs, &p, from);
    }
}

fn check_ref_name(errs: &mut FieldErrors, path: &Path<'_>, name: &Text) {
    if name.is_empty() {
        errs.required(path, "");
    } else {
        check_name(errs, path, name, is_dns1123_subdomain);
    }
}

fn check_source(errs: &mut FieldErrors, path: &Path<'_>, from: &EnvVarSource) {
    let set = usize::from(from.field_ref.is_some())
        + usize::from(from.config_map_key_ref.is_some())
        + usize::from(from.secret_key_ref.is_some());
    if set == 0 {
        errs.invalid(path, "", "must specify one of: `fieldRef`, `configMapKeyRef` or `secretKeyRef`");
        return;
    }
    if set > 1 {
        errs.invalid(path, "", "may not have more than one field specified at a time");
        return;
    }
    if let Some(f) = &from.field_ref {
        let p = path.child("fieldRef");
        if let Some(v) = f.api_version.as_deref()
            && v != "v1"
        {
            errs.not_supported(&p.child("apiVersion"), v, &["v1"]);
        }
        let fp = p.child("fieldPath");
        if f.field_path.is_empty() {
            errs.required(&fp, "");
        } else if field_path_of(&f.field_path).is_none() {
            let mut supported: Vec<&str> = FIELD_PATHS.to_vec();
            supported.extend(["metadata.annotations['KEY']", "metadata.labels['KEY']"]);
            errs.not_supported(&fp, &f.field_path, &supported);
        }
    }
    for (name, r) in [("configMapKeyRef", &from.config_map_key_ref), ("secretKeyRef", &from.secret_key_ref)] {
        if let Some(r) = r {
            let p = path.child(name);
            check_ref_name(errs, &p.child("name"), &r.name);
            if r.key.is_empty() {
                errs.required(&p.child("key"), "");
            } else if let Some(reason) = config_key_problem(&r.key) {
                errs.invalid(&p.child("key"), q(&r.key), reason);
            }
        }
    }
}

/// A pod field a `fieldRef` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldRef<'a> {
    /// One of [`FIELD_PATHS`].
    Field(&'a str),
    /// `metadata.labels['KEY']`.
    Label(&'a str),
    /// `metadata.annotations['KEY']`.
    Annotation(&'a str),
}

/// The field a `fieldPath` names, if orch supports it.
pub fn field_path_of(path: &str) -> Option<FieldRef<'_>> {
    if let Some(f) = FIELD_PATHS.iter().find(|f| **f == path) {
        return Some(FieldRef::Field(f));
    }
    let subscript = |prefix: &str| {
        let rest = path.strip_prefix(prefix)?.strip_prefix("['")?.strip_suffix("']")?;
        (!rest.is_empty() && super::is_qualified_name(rest).is_none()).then_some(rest)
    };
    if let Some(k) = subscript("metadata.labels") {
        return Some(FieldRef::Label(k));
    }
    subscript("metadata.annotations").map(FieldRef::Annotation)
}

/// A `hostNetwork` pod's ports: a host port equal to the container port (the defaults set it).
pub(super) fn check_host_network(errs: &mut FieldErrors, path: &Path<'_>, spec: &PodSpec) {
    if spec.host_network != Some(true) {
        return;
    }
    for (i, c) in spec.containers.iter().enumerate().take(super::CONTAINERS_MAX) {
        for (j, p) in c.ports.iter().enumerate().take(super::LIST_ITEMS_MAX) {
            if let Some(hp) = p.host_port
                && hp != p.container_port
            {
                let cp = path.child("containers");
                let ci = cp.index(i);
                let pp = ci.child("ports");
                let pi = pp.index(j);
                errs.invalid(&pi.child("hostPort"), hp, "must match `containerPort` when `hostNetwork` is true");
            }
        }
    }
}
