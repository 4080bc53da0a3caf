//! Field errors with Kubernetes-style messages, the name and label rules, and the validation
//! of every kind.
//!
//! Messages name the field path and the rule, as the Kubernetes API server does:
//! `spec.replicas: Invalid value: -1: must be greater than or equal to 0`.

mod config;

use std::collections::BTreeSet;
use std::fmt;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::apps_v1::{Deployment, DeploymentStrategyType};
use crate::core_v1::{
    Container, Endpoints, Event, Node, NodeAffinity, NodeSelectorOperator, NodeSelectorTerm, Pod, PodPhase, PodSpec,
    PodTemplateSpec, Probe, ResourceList, RestartPolicy, Service, ServiceType, TolerationOperator,
};
use crate::intstr::IntOrString;
use crate::meta::{LabelSelector, ObjectMeta, SelectorOperator};
use crate::object::{Kind, Object};
use crate::selector::SELECTOR_VALUES_MAX;
use crate::strmap::StrMap;
use crate::text::Text;

pub use config::{
    CONFIG_BYTES_MAX, CONFIG_KEY_BYTES_MAX, FIELD_PATHS, FieldRef, KEY_PATH_BYTES_MAX, config_key_problem,
    decode_base64, field_path_of,
};

/// The most labels an object may carry.
pub const LABELS_MAX: usize = 64;
/// The most bytes of annotations (keys and values) an object may carry, as Kubernetes.
pub const ANNOTATIONS_BYTES_MAX: usize = 256 * 1024;
/// The most finalizers an object may carry.
pub const FINALIZERS_MAX: usize = 32;
/// The most owner references an object may carry.
pub const OWNER_REFERENCES_MAX: usize = 32;
/// The most containers a pod may run.
pub const CONTAINERS_MAX: usize = 32;
/// The most ports, environment variables, arguments or tolerations one list may hold.
pub const LIST_ITEMS_MAX: usize = 256;
/// The most bytes one string field may hold (a name, an image, an argument...).
pub const STRING_BYTES_MAX: usize = 32 * 1024;
/// The most endpoint addresses an Endpoints object may hold.
pub const ENDPOINT_ADDRESSES_MAX: usize = 5000;
/// The lowest and highest port a `NodePort` service may use.
pub const NODE_PORT_RANGE: (i32, i32) = (30000, 32767);

/// The category of a field error, as Kubernetes' `field.ErrorType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub enum FieldErrorType {
    /// A required field is missing.
    Required,
    /// The value breaks a rule.
    Invalid,
    /// The value is not one of a fixed set.
    NotSupported,
    /// The value repeats one that must be unique.
    Duplicate,
    /// The field may not be set or changed here.
    Forbidden,
    /// The value is longer than allowed.
    TooLong,
    /// The list holds more items than allowed.
    TooMany,
    /// The value names something that does not exist.
    NotFound,
}

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct FieldError {
    /// The path of the field, such as `spec.template.spec.containers[0].name`.
    pub field: String,
    /// The category.
    pub error_type: FieldErrorType,
    /// The offending value as shown to the user (strings quoted), or empty.
    pub value: String,
    /// The rule that was broken.
    pub detail: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (field, value, detail) = (&self.field, &self.value, &self.detail);
        match self.error_type {
            FieldErrorType::Required if detail.is_empty() => write!(f, "{field}: Required value"),
            FieldErrorType::Required => write!(f, "{field}: Required value: {detail}"),
            FieldErrorType::Invalid => write!(f, "{field}: Invalid value: {value}: {detail}"),
            FieldErrorType::NotSupported => {
                write!(f, "{field}: Unsupported value: {value}: supported values: {detail}")
            }
            FieldErrorType::Duplicate => write!(f, "{field}: Duplicate value: {value}"),
            FieldErrorType::Forbidden => write!(f, "{field}: Forbidden: {detail}"),
            FieldErrorType::TooLong => write!(f, "{field}: Too long: {detail}"),
            FieldErrorType::TooMany => write!(f, "{field}: Too many: {value}: {detail}"),
            FieldErrorType::NotFound => write!(f, "{field}: Not found: {value}: {detail}"),
        }
    }
}

/// A list of field errors; empty means valid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(proptest_derive::Arbitrary))]
pub struct FieldErrors(pub Vec<FieldError>);

impl fmt::Display for FieldErrors {
    /// One error as is; several as `[a, b]`, as Kubernetes prints an aggregate.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let many = self.0.len() > 1;
        if many {
            f.write_str("[")?;
        }
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{e}")?;
        }
        if many {
            f.write_str("]")?;
        }
        Ok(())
    }
}

impl FieldErrors {
    /// True when there is no error.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn push(
        &mut self,
        field: &(impl FieldPath + ?Sized),
        error_type: FieldErrorType,
        value: String,
        detail: impl Into<String>,
    ) {
        self.0.push(FieldError { field: field.render(), error_type, value, detail: detail.into() });
    }

    /// Adds a `Required value` error.
    pub fn required(&mut self, field: &(impl FieldPath + ?Sized), detail: impl Into<String>) {
        self.push(field, FieldErrorType::Required, String::new(), detail);
    }

    /// Adds an `Invalid value` error; `value` is shown as given (quote strings with [`q`]).
    pub fn invalid(&mut self, field: &(impl FieldPath + ?Sized), value: impl fmt::Display, detail: impl Into<String>) {
        self.push(field, FieldErrorType::Invalid, value.to_string(), detail);
    }

    /// Adds an `Unsupported value` error listing the supported values.
    pub fn not_supported(&mut self, field: &(impl FieldPath + ?Sized), value: &str, supported: &[&str]) {
        let list: Vec<String> = supported.iter().map(|s| q(s)).collect();
        self.push(field, FieldErrorType::NotSupported, q(value), list.join(", "));
    }

    /// Adds a `Duplicate value` error.
    pub fn duplicate(&mut self, field: &(impl FieldPath + ?Sized), value: impl fmt::Display) {
        self.push(field, FieldErrorType::Duplicate, value.to_string(), "");
    }

    /// Adds a `Forbidden` error.
    pub fn forbidden(&mut self, field: &(impl FieldPath + ?Sized), detail: impl Into<String>) {
        self.push(field, FieldErrorType::Forbidden, String::new(), detail);
    }

    /// Adds a `Not found` error.
    pub fn not_found(
        &mut self,
        field: &(impl FieldPath + ?Sized),
        value: impl fmt::Display,
        detail: impl Into<String>,
    ) {
        self.push(field, FieldErrorType::NotFound, value.to_string(), detail);
    }

    /// Adds a `Too long` error.
    pub fn too_long(&mut self, field: &(impl FieldPath + ?Sized), max: usize) {
        self.push(field, FieldErrorType::TooLong, String::new(), format!("may not be more than {max} bytes"));
    }

    /// Adds a `Too many` error.
    pub fn too_many(&mut self, field: &(impl FieldPath + ?Sized), count: usize, max: usize) {
        self.push(field, FieldErrorType::TooMany, count.to_string(), format!("must have at most {max} items"));
    }

    fn non_negative(&mut self, field: &(impl FieldPath + ?Sized), value: Option<i64>) {
        if let Some(v) = value
            && v < 0
        {
            self.invalid(field, v, "must be greater than or equal to 0");
        }
    }

    fn at_least_one(&mut self, field: &(impl FieldPath + ?Sized), value: Option<i32>) {
        if let Some(v) = value
            && v < 1
        {
            self.invalid(field, v, "must be greater than or equal to 1");
        }
    }

    fn check_len(&mut self, field: &(impl FieldPath + ?Sized), items: usize, max: usize) -> bool {
        if items > max {
            self.too_many(field, items, max);
            return false;
        }
        true
    }

    fn check_str(&mut self, field: &(impl FieldPath + ?Sized), s: &str) {
        if s.len() > STRING_BYTES_MAX {
            self.too_long(field, STRING_BYTES_MAX);
        }
    }
}

/// Quotes a string as Kubernetes shows values in messages: in double quotes, with `"`, `\`
/// and the control characters (Unicode's fixed Cc set) escaped (`\n`, `\r`, `\t`, `\0`,
/// else `\u{1b}`), every other character as it is (format characters such as bidi marks
/// included). Messages live in replicated state (the deduplication
/// table's outcomes), so this must not depend on the toolchain: `{:?}` escapes by the Unicode
/// tables of the Rust release that built it (which characters are printable or extend a
/// grapheme), and two replicas built by different compilers could disagree.
pub fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            // The control characters (Cc) are a fixed set: Unicode's stability policy.
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Something that names a field: a `&str` such as `"spec.replicas"`, or a [`Path`].
pub trait FieldPath {
    /// The path as shown in messages.
    fn render(&self) -> String;
}

impl FieldPath for str {
    fn render(&self) -> String {
        self.to_owned()
    }
}

/// A field path built as validation descends (`spec.containers[0].name`), rendered to a
/// string only when an error is recorded: valid objects allocate no path strings.
#[derive(Clone, Copy, Debug)]
pub struct Path<'a> {
    parent: Option<&'a Path<'a>>,
    segment: Segment<'a>,
}

#[derive(Clone, Copy, Debug)]
enum Segment<'a> {
    Name(&'a str),
    Index(usize),
}

impl<'a> Path<'a> {
    /// A path starting at `name` (which may itself be dotted, as `spec.template.spec`).
    pub const fn root(name: &'a str) -> Self {
        Self { parent: None, segment: Segment::Name(name) }
    }

    /// The field `name` under this path.
    pub const fn child(&'a self, name: &'a str) -> Path<'a> {
        Path { parent: Some(self), segment: Segment::Name(name) }
    }

    /// The list item `i` under this path.
    pub const fn index(&'a self, i: usize) -> Path<'a> {
        Path { parent: Some(self), segment: Segment::Index(i) }
    }

    fn write(&self, out: &mut String) {
        if let Some(parent) = self.parent {
            parent.write(out);
        }
        match self.segment {
            Segment::Name(name) => {
                if self.parent.is_some() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Segment::Index(i) => {
                use std::fmt::Write;
                let _ = write!(out, "[{i}]");
            }
        }
    }
}

impl FieldPath for Path<'_> {
    fn render(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Name and label rules. Each returns None when valid, or the rule that was broken.

const DNS1123_LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_RULE: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_RULE: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_RULE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn dns_label_shape(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && lower_alnum(b[0]) && lower_alnum(b[b.len() - 1]) && b.iter().all(|&c| lower_alnum(c) || c == b'-')
}

/// The RFC 1123 label rule (namespace names, container names): at most 63 characters.
pub fn is_dns1123_label(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    (!dns_label_shape(s)).then(|| DNS1123_LABEL_RULE.into())
}

/// The RFC 1123 subdomain rule (most object names): at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    (s.is_empty() || !s.split('.').all(dns_label_shape)).then(|| DNS1123_SUBDOMAIN_RULE.into())
}

/// The RFC 1035 label rule (service names): starts with a letter, at most 63 characters.
pub fn is_dns1035_label(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    let starts_alpha = s.as_bytes().first().is_some_and(u8::is_ascii_lowercase);
    (!starts_alpha || !dns_label_shape(s)).then(|| DNS1035_LABEL_RULE.into())
}

fn label_shape(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// The qualified name rule (label and annotation keys, finalizers): `[prefix/]name`.
pub fn is_qualified_name(s: &str) -> Option<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            return Some("prefix part must be non-empty".into());
        }
        if let Some(reason) = is_dns1123_subdomain(p) {
            return Some(format!("prefix part {reason}"));
        }
    }
    if name.is_empty() {
        return Some("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return Some("name part must be no more than 63 characters".into());
    }
    (!label_shape(name)).then(|| QUALIFIED_NAME_RULE.into())
}

/// The label value rule: empty, or at most 63 characters of `[-A-Za-z0-9_.]` starting and
/// ending with an alphanumeric character.
pub fn is_label_value(s: &str) -> Option<String> {
    if s.len() > 63 {
        return Some("must be no more than 63 characters".into());
    }
    (!s.is_empty() && !label_shape(s)).then(|| LABEL_VALUE_RULE.into())
}

/// The IANA service name rule (port names): at most 15 characters, lowercase letters, digits
/// and '-', at least one letter, no leading, trailing or doubled '-'.
pub fn is_iana_svc_name(s: &str) -> Option<String> {
    if s.len() > 15 {
        return Some("must be no more than 15 characters".into());
    }
    let b = s.as_bytes();
    if b.is_empty() || !b.iter().all(|&c| lower_alnum(c) || c == b'-') {
        return Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if s.contains("--") {
        return Some("must not contain consecutive hyphens".into());
    }
    if !b.iter().any(u8::is_ascii_lowercase) {
        return Some("must contain at least one letter (a-z)".into());
    }
    if b[0] == b'-' || b[b.len() - 1] == b'-' {
        return Some("must not begin or end with a hyphen".into());
    }
    None
}

/// True for a dotted-quad IPv4 address.
pub fn is_ipv4(s: &str) -> bool {
    s.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Whether `s` may name an environment variable (`env[].name`, Kubernetes' `IsEnvVarName`).
pub(crate) fn is_env_var_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

fn check_port(errs: &mut FieldErrors, path: &(impl FieldPath + ?Sized), port: i32) {
    if !(1..=65535).contains(&port) {
        errs.invalid(path, port, "must be between 1 and 65535, inclusive");
    }
}

fn check_int_or_name_port(errs: &mut FieldErrors, path: &(impl FieldPath + ?Sized), port: &IntOrString) {
    match port {
        IntOrString::Int(p) => check_port(errs, path, *p),
        IntOrString::Str(name) => {
            if let Some(reason) = is_iana_svc_name(name) {
                errs.invalid(path, q(name), reason);
            }
        }
    }
}

fn check_labels(errs: &mut FieldErrors, path: &(impl FieldPath + ?Sized), labels: &StrMap) {
    if !errs.check_len(path, labels.len(), LABELS_MAX) {
        return;
    }
    for (k, v) in labels.iter() {
        if let Some(reason) = is_qualified_name(k) {
            errs.invalid(path, q(k), reason);
        }
        if let Some(reason) = is_label_value(v) {
            errs.invalid(path, q(v), reason);
        }
    }
}

fn check_name(errs: &mut FieldErrors, path: &(impl FieldPath + ?Sized), name: &str, rule: fn(&str) -> Option<String>) {
    if let Some(reason) = rule(name) {
        errs.invalid(path, q(name), reason);
    }
}

/// The name rule of a kind.
pub fn name_rule(kind: Kind) -> fn(&str) -> Option<String> {
    match kind {
        Kind::Namespace => is_dns1123_label,
        Kind::Service => is_dns1035_label,
        _ => is_dns1123_subdomain,
    }
}

fn check_meta(errs: &mut FieldErrors, kind: Kind, meta: &ObjectMeta) {
    if meta.name.is_empty() {
        if meta.generate_name.as_deref().unwrap_or("").is_empty() {
            errs.required("metadata.name", "name or generateName is required");
        }
    } else {
        check_name(errs, "metadata.name", &meta.name, name_rule(kind));
    }
    if let Some(prefix) = meta.generate_name.as_deref()
        && !prefix.is_empty()
        && meta.name.is_empty()
    {
        // The prefix plus a generated suffix must make a valid name.
        let sample = format!("{prefix}abcde");
        check_name(errs, "metadata.generateName", &sample, name_rule(kind));
    }
    if kind.namespaced() {
        match meta.namespace.as_deref() {
            None | Some("") => errs.required("metadata.namespace", ""),
            Some(ns) => check_name(errs, "metadata.namespace", ns, is_dns1123_label),
        }
    }
    check_labels(errs, "metadata.labels", &meta.labels);
    if meta.annotations.total_bytes() > ANNOTATIONS_BYTES_MAX {
        errs.too_long("metadata.annotations", ANNOTATIONS_BYTES_MAX);
    }
    for (k, _) in meta.annotations.iter() {
        if let Some(reason) = is_qualified_name(&k.to_ascii_lowercase()) {
            errs.invalid("metadata.annotations", q(k), reason);
        }
    }
    if errs.check_len("metadata.finalizers", meta.finalizers.len(), FINALIZERS_MAX) {
        let mut seen = BTreeSet::new();
        let list = Path::root("metadata.finalizers");
        for (i, f) in meta.finalizers.iter().enumerate() {
            let path = list.index(i);
            if let Some(reason) = is_qualified_name(f) {
                errs.invalid(&path, q(f), reason);
            } else if !seen.insert(f) {
                errs.duplicate(&path, q(f));
            }
        }
    }
    if errs.check_len("metadata.ownerReferences", meta.owner_references.len(), OWNER_REFERENCES_MAX) {
        let mut controllers = 0;
        let list = Path::root("metadata.ownerReferences");
        for (i, r) in meta.owner_references.iter().enumerate() {
            let path = list.index(i);
            for (name, value) in [("apiVersion", &r.api_version), ("kind", &r.kind), ("name", &r.name)] {
                if value.is_empty() {
                    errs.required(&path.child(name), "");
                }
            }
            if r.uid.is_nil() {
                errs.required(&path.child("uid"), "");
            }
            controllers += usize::from(r.controller == Some(true));
        }
        if controllers > 1 {
            errs.invalid("metadata.ownerReferences", controllers, "only one reference can have Controller set to true");
        }
    }
}

fn check_resources(errs: &mut FieldErrors, path: &Path<'_>, list: &ResourceList) {
    for (name, qty) in list.entries() {
        if qty.is_negative() {
            errs.invalid(&path.child(name), q(&qty.to_string()), "must be greater than or equal to 0");
        }
    }
}

fn check_probe(errs: &mut FieldErrors, path: &Path<'_>, probe: &Probe, success_must_be_one: bool) {
    let handlers = usize::from(probe.exec.is_some())
        + usize::from(probe.http_get.is_some())
        + usize::from(probe.tcp_socket.is_some());
    match handlers {
        0 => errs.required(path, "must specify a handler type"),
        1 => {}
        _ => errs.forbidden(path, "may not specify more than 1 handler type"),
    }
    if let Some(exec) = &probe.exec
        && exec.command.is_empty()
    {
        errs.required(&path.child("exec.command"), "");
    }
    if let Some(http) = &probe.http_get {
        check_int_or_name_port(errs, &path.child("httpGet.port"), &http.port);
        if let Some(p) = &http.path
            && !p.starts_with('/')
        {
            errs.invalid(&path.child("httpGet.path"), q(p), "must be an absolute path starting with '/'");
        }
    }
    if let Some(tcp) = &probe.tcp_socket {
        check_int_or_name_port(errs, &path.child("tcpSocket.port"), &tcp.port);
    }
    errs.non_negative(&path.child("initialDelaySeconds"), probe.initial_delay_seconds.map(i64::from));
    errs.at_least_one(&path.child("timeoutSeconds"), probe.timeout_seconds);
    errs.at_least_one(&path.child("periodSeconds"), probe.period_seconds);
    errs.at_least_one(&path.child("successThreshold"), probe.success_threshold);
    errs.at_least_one(&path.child("failureThreshold"), probe.failure_threshold);
    if success_must_be_one
        && let Some(s) = probe.success_threshold
        && s != 1
    {
        errs.invalid(&path.child("successThreshold"), s, "must be 1");
    }
    errs.non_negative(&path.child("terminationGracePeriodSeconds"), probe.termination_grace_period_seconds);
}

fn check_container(
    errs: &mut FieldErrors,
    path: &Path<'_>,
    c: &Container,
    port_names: &mut BTreeSet<Text>,
    rules: u16,
) {
    if c.name.is_empty() {
        errs.required(&path.child("name"), "");
    } else {
        check_name(errs, &path.child("name"), &c.name, is_dns1123_label);
    }
    // Rules 8: the process runtime runs `command` and pulls no image, so a container may
    // name none. Required before, as Kubernetes requires it.
    if rules < 8 && c.image.trim().is_empty() {
        errs.required(&path.child("image"), "");
    }
    errs.check_str(&path.child("image"), &c.image);
    for (name, list) in [("command", &c.command), ("args", &c.args)] {
        let p = path.child(name);
        if errs.check_len(&p, list.len(), LIST_ITEMS_MAX) {
            for (i, s) in list.iter().enumerate() {
                errs.check_str(&p.index(i), s);
            }
        }
    }
    let env_path = path.child("env");
    if errs.check_len(&env_path, c.env.len(), LIST_ITEMS_MAX) {
        for (i, e) in c.env.iter().enumerate() {
            let item = env_path.index(i);
            let p = item.child("name");
            if e.name.is_empty() {
                errs.required(&p, "");
            } else if !is_env_var_name(&e.name) {
                errs.invalid(&p, q(&e.name), "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit");
            }
            if let Some(v) = &e.value {
                errs.check_str(&item.child("value"), v);
            }
        }
    }
    let ports_path = path.child("ports");
    if errs.check_len(&ports_path, c.ports.len(), LIST_ITEMS_MAX) {
        for (i, p) in c.ports.iter().enumerate() {
            let pp = ports_path.index(i);
            check_port(errs, &pp.child("containerPort"), p.container_port);
            if let Some(hp) = p.host_port {
                check_port(errs, &pp.child("hostPort"), hp);
            }
            if let Some(name) = &p.name {
                if let Some(reason) = is_iana_svc_name(name) {
                    errs.invalid(&pp.child("name"), q(name), reason);
                } else if !port_names.insert(name.clone()) {
                    errs.duplicate(&pp.child("name"), q(name));
                }
            }
        }
    }
    let res = path.child("resources");
    check_resources(errs, &res.child("requests"), &c.resources.requests);
    check_resources(errs, &res.child("limits"), &c.resources.limits);
    let limits: Vec<_> = c.resources.limits.entries().collect();
    for (name, request) in c.resources.requests.entries() {
        if let Some((_, limit)) = limits.iter().find(|(n, _)| *n == name)
            && request > *limit
        {
            errs.invalid(
                &res.child("requests").child(name),
                q(&request.to_string()),
                format!("must be less than or equal to {name} limit of {limit}"),
            );
        }
    }
    for (name, probe, success_one) in [
        ("livenessProbe", &c.liveness_probe, true),
        ("readinessProbe", &c.readiness_probe, false),
        ("startupProbe", &c.startup_probe, true),
    ] {
        if let Some(p) = probe {
            check_probe(errs, &path.child(name), p, success_one);
        }
    }
}

/// Validates a pod spec whose fields live under `path` (`spec` or `spec.template.spec`), under
/// this build's rules.
pub fn check_pod_spec(errs: &mut FieldErrors, path: &Path<'_>, spec: &PodSpec) {
    check_pod_spec_under(errs, path, spec, crate::rules::RULES_VERSION);
}

fn check_pod_spec_under(errs: &mut FieldErrors, path: &Path<'_>, spec: &PodSpec, rules: u16) {
    let volumes = config::check_volumes(errs, path, spec);
    let containers = path.child("containers");
    if spec.containers.is_empty() {
        errs.required(&containers, "");
    } else if errs.check_len(&containers, spec.containers.len(), CONTAINERS_MAX) {
        let mut names = BTreeSet::new();
        let mut port_names = BTreeSet::new();
        for (i, c) in spec.containers.iter().enumerate() {
            let p = containers.index(i);
            check_container(errs, &p, c, &mut port_names, rules);
            config::check_container_config(errs, &p, c, &volumes);
            if !c.name.is_empty() && !names.insert(c.name.as_str()) {
                errs.duplicate(&p.child("name"), q(&c.name));
            }
        }
    }
    config::check_host_network(errs, path, spec);
    errs.non_negative(&path.child("terminationGracePeriodSeconds"), spec.termination_grace_period_seconds);
    if let Some(node) = &spec.node_name {
        check_name(errs, &path.child("nodeName"), node, is_dns1123_subdomain);
    }
    if let Some(host) = &spec.hostname {
        check_name(errs, &path.child("hostname"), host, is_dns1123_label);
    }
    check_labels(errs, &path.child("nodeSelector"), &spec.node_selector);
    let tol_path = path.child("tolerations");
    if errs.check_len(&tol_path, spec.tolerations.len(), LIST_ITEMS_MAX) {
        for (i, t) in spec.tolerations.iter().enumerate() {
            let p = tol_path.index(i);
            let key = t.key.as_deref().unwrap_or("");
            if key.is_empty() {
                if t.operator != Some(TolerationOperator::Exists) {
                    errs.invalid(
                        &p.child("operator"),
                        q(t.operator.map_or("", |o| o.as_str())),
                        "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
                    );
                }
            } else if let Some(reason) = is_qualified_name(key) {
                errs.invalid(&p.child("key"), q(key), reason);
            }
            if t.operator == Some(TolerationOperator::Exists) && !t.value.as_deref().unwrap_or("").is_empty() {
                errs.invalid(
                    &p.child("operator"),
                    q(t.value.as_deref().unwrap_or("")),
                    "value must be empty when `operator` is 'Exists'",
                );
            }
            if t.toleration_seconds.is_some() && t.effect != Some(crate::core_v1::TaintEffect::NoExecute) {
                errs.invalid(
                    &p.child("effect"),
                    q(t.effect.map_or("", |e| e.as_str())),
                    "effect must be 'NoExecute' when `tolerationSeconds` is set",
                );
            }
        }
    }
    if let Some(node_affinity) = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()) {
        let affinity = path.child("affinity");
        check_node_affinity(errs, &affinity.child("nodeAffinity"), node_affinity);
    }
}

/// Kubernetes' rules of node affinity: at least one required term; each requirement's key a
/// label name (or `metadata.name` for a field), its values as its operator wants; weights of
/// preferred terms from 1 to 100.
fn check_node_affinity(errs: &mut FieldErrors, path: &Path<'_>, affinity: &NodeAffinity) {
    if let Some(required) = &affinity.required_during_scheduling_ignored_during_execution {
        let required_path = path.child("requiredDuringSchedulingIgnoredDuringExecution");
        let terms = required_path.child("nodeSelectorTerms");
        if required.node_selector_terms.is_empty() {
            errs.required(&terms, "must have at least one node selector term");
        } else if errs.check_len(&terms, required.node_selector_terms.len(), LIST_ITEMS_MAX) {
            for (i, term) in required.node_selector_terms.iter().enumerate() {
                check_node_selector_term(errs, &terms.index(i), term);
            }
        }
    }
    let preferred = path.child("preferredDuringSchedulingIgnoredDuringExecution");
    if errs.check_len(&preferred, affinity.preferred_during_scheduling_ignored_during_execution.len(), LIST_ITEMS_MAX) {
        for (i, term) in affinity.preferred_during_scheduling_ignored_during_execution.iter().enumerate() {
            let p = preferred.index(i);
            if !(1..=100).contains(&term.weight) {
                errs.invalid(&p.child("weight"), term.weight, "must be in the range 1-100");
            }
            check_node_selector_term(errs, &p.child("preference"), &term.preference);
        }
    }
}

fn check_node_selector_term(errs: &mut FieldErrors, path: &Path<'_>, term: &NodeSelectorTerm) {
    let exprs = path.child("matchExpressions");
    if errs.check_len(&exprs, term.match_expressions.len(), LIST_ITEMS_MAX) {
        for (i, r) in term.match_expressions.iter().enumerate() {
            let p = exprs.index(i);
            let values = p.child("values");
            if !errs.check_len(&values, r.values.len(), SELECTOR_VALUES_MAX) {
                continue;
            }
            match r.operator {
                None => errs.invalid(&p.child("operator"), q(""), "not a valid selector operator"),
                Some(NodeSelectorOperator::In | NodeSelectorOperator::NotIn) => {
                    if r.values.is_empty() {
                        errs.required(&values, "must be specified when `operator` is 'In' or 'NotIn'");
                    }
                }
                Some(NodeSelectorOperator::Exists | NodeSelectorOperator::DoesNotExist) => {
                    if !r.values.is_empty() {
                        errs.forbidden(&values, "may not be specified when `operator` is 'Exists' or 'DoesNotExist'");
                    }
                }
                Some(NodeSelectorOperator::Gt | NodeSelectorOperator::Lt) => {
                    if r.values.len() != 1 {
                        errs.required(&values, "must be specified single value when `operator` is 'Lt' or 'Gt'");
                    } else if r.values[0].parse::<i64>().is_err() {
                        // Stricter than Kubernetes, which takes any label value and never
                        // matches one that is not an integer.
                        errs.invalid(&values.index(0), q(&r.values[0]), "must be an integer");
                    }
                }
            }
            if let Some(reason) = is_qualified_name(&r.key) {
                errs.invalid(&p.child("key"), q(&r.key), reason);
            }
            for (k, v) in r.values.iter().enumerate() {
                if let Some(reason) = is_label_value(v) {
                    errs.invalid(&values.index(k), q(v), reason);
                }
            }
        }
    }
    let fields = path.child("matchFields");
    if errs.check_len(&fields, term.match_fields.len(), LIST_ITEMS_MAX) {
        for (i, r) in term.match_fields.iter().enumerate() {
            let p = fields.index(i);
            match r.operator {
                Some(NodeSelectorOperator::In | NodeSelectorOperator::NotIn) => {
                    if r.values.len() != 1 {
                        errs.required(
                            &p.child("values"),
                            "must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
                        );
                    }
                }
                other => {
                    errs.invalid(
                        &p.child("operator"),
                        q(other.map_or("", |o| o.as_str())),
                        "not a valid selector operator",
                    );
                }
            }
            if r.key.as_str() != NODE_NAME_FIELD {
                errs.invalid(&p.child("key"), q(&r.key), "not a valid field selector key");
            }
            for (k, v) in r.values.iter().take(SELECTOR_VALUES_MAX).enumerate() {
                if let Some(reason) = is_dns1123_subdomain(v) {
                    errs.invalid(&p.child("values").index(k), q(v), reason);
                }
            }
        }
    }
}

/// The one node field a node selector term's `matchFields` may name.
pub const NODE_NAME_FIELD: &str = "metadata.name";

fn check_selector(errs: &mut FieldErrors, path: &Path<'_>, sel: &LabelSelector) {
    check_labels(errs, &path.child("matchLabels"), &sel.match_labels);
    let exprs = path.child("matchExpressions");
    if errs.check_len(&exprs, sel.match_expressions.len(), LIST_ITEMS_MAX) {
        for (i, e) in sel.match_expressions.iter().enumerate() {
            let p = exprs.index(i);
            if let Some(reason) = is_qualified_name(&e.key) {
                errs.invalid(&p.child("key"), q(&e.key), reason);
            }
            match e.operator {
                SelectorOperator::In | SelectorOperator::NotIn if e.values.is_empty() => {
                    errs.required(&p.child("values"), "must be specified when `operator` is 'In' or 'NotIn'");
                }
                SelectorOperator::Exists | SelectorOperator::DoesNotExist if !e.values.is_empty() => {
                    errs.forbidden(
                        &p.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    );
                }
                _ => {}
            }
            for v in &e.values {
                if let Some(reason) = is_label_value(v) {
                    errs.invalid(&p.child("values"), q(v), reason);
                }
            }
        }
    }
}

/// Validates the selector, template and replicas shared by deployments and replica sets.
fn check_workload(
    errs: &mut FieldErrors,
    replicas: Option<i32>,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
    min_ready_seconds: Option<i32>,
    rules: u16,
) {
    errs.non_negative("spec.replicas", replicas.map(i64::from));
    errs.non_negative("spec.minReadySeconds", min_ready_seconds.map(i64::from));
    if selector.is_empty() {
        errs.required("spec.selector", "");
    } else {
        check_selector(errs, &Path::root("spec.selector"), selector);
        if !selector.matches(&template.metadata.labels) {
            errs.invalid(
                "spec.template.metadata.labels",
                q(&template.metadata.labels.to_string()),
                "`selector` does not match template `labels`",
            );
        }
    }
    check_labels(errs, "spec.template.metadata.labels", &template.metadata.labels);
    if template.metadata.annotations.total_bytes() > ANNOTATIONS_BYTES_MAX {
        errs.too_long("spec.template.metadata.annotations", ANNOTATIONS_BYTES_MAX);
    }
    check_pod_spec_under(errs, &Path::root("spec.template.spec"), &template.spec, rules);
    if let Some(policy) = template.spec.restart_policy
        && policy != RestartPolicy::Always
    {
        errs.not_supported("spec.template.spec.restartPolicy", policy.as_str(), &["Always"]);
    }
}

fn check_percent_or_int(
    errs: &mut FieldErrors,
    path: &(impl FieldPath + ?Sized),
    value: &IntOrString,
    at_most_100: bool,
) -> Option<i64> {
    match value {
        IntOrString::Int(i) => {
            if *i < 0 {
                errs.invalid(path, i, "must be greater than or equal to 0");
                return None;
            }
            Some(i64::from(*i))
        }
        IntOrString::Str(s) => match value.percent() {
            None => {
                errs.invalid(path, q(s), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')");
                None
            }
            Some(p) if at_most_100 && p > 100 => {
                errs.invalid(path, q(s), "must not be greater than 100%");
                None
            }
            Some(p) => Some(p),
        },
    }
}

fn check_deployment(errs: &mut FieldErrors, d: &Deployment, rules: u16) {
    let s = &d.spec;
    check_workload(errs, s.replicas, &s.selector, &s.template, s.min_ready_seconds, rules);
    errs.non_negative("spec.revisionHistoryLimit", s.revision_history_limit.map(i64::from));
    if let Some(deadline) = s.progress_deadline_seconds {
        errs.non_negative("spec.progressDeadlineSeconds", Some(i64::from(deadline)));
        if deadline <= s.min_ready_seconds.unwrap_or(0) {
            errs.invalid("spec.progressDeadlineSeconds", deadline, "must be greater than minReadySeconds");
        }
    }
    match (s.strategy.type_, &s.strategy.rolling_update) {
        (Some(DeploymentStrategyType::Recreate), Some(_)) => {
            errs.forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'");
        }
        (_, Some(ru)) => {
            let surge = ru
                .max_surge
                .as_ref()
                .and_then(|v| check_percent_or_int(errs, "spec.strategy.rollingUpdate.maxSurge", v, false));
            let unavailable = ru
                .max_unavailable
                .as_ref()
                .and_then(|v| check_percent_or_int(errs, "spec.strategy.rollingUpdate.maxUnavailable", v, true));
            if surge == Some(0) && unavailable == Some(0) {
                errs.invalid("spec.strategy.rollingUpdate.maxUnavailable", 0, "may not be 0 when `maxSurge` is 0");
            }
        }
        _ => {}
    }
}

fn check_service(errs: &mut FieldErrors, svc: &Service) {
    let s = &svc.spec;
    check_labels(errs, "spec.selector", &s.selector);
    if s.ports.is_empty() {
        errs.required("spec.ports", "");
    }
    if errs.check_len("spec.ports", s.ports.len(), LIST_ITEMS_MAX) {
        let mut names = BTreeSet::new();
        let mut node_ports = BTreeSet::new();
        let list = Path::root("spec.ports");
        for (i, p) in s.ports.iter().enumerate() {
            let pp = list.index(i);
            match p.name.as_deref() {
                None | Some("") if s.ports.len() > 1 => errs.required(&pp.child("name"), ""),
                None | Some("") => {}
                Some(name) => {
                    check_name(errs, &pp.child("name"), name, is_dns1123_label);
                    if !names.insert(name) {
                        errs.duplicate(&pp.child("name"), q(name));
                    }
                }
            }
            check_port(errs, &pp.child("port"), p.port);
            if let Some(tp) = &p.target_port {
                check_int_or_name_port(errs, &pp.child("targetPort"), tp);
            }
            if let Some(np) = p.node_port {
                if s.type_ != Some(ServiceType::NodePort) {
                    errs.forbidden(&pp.child("nodePort"), "may not be used when `type` is 'ClusterIP'");
                } else if !(NODE_PORT_RANGE.0..=NODE_PORT_RANGE.1).contains(&np) {
                    errs.invalid(
                        &pp.child("nodePort"),
                        np,
                        format!(
                            "provided port is not in the valid range. The range of valid ports is {}-{}",
                            NODE_PORT_RANGE.0, NODE_PORT_RANGE.1
                        ),
                    );
                } else if !node_ports.insert((np, p.protocol)) {
                    errs.duplicate(&pp.child("nodePort"), np);
                }
            }
        }
    }
    if let Some(ip) = s.cluster_ip.as_deref()
        && !ip.is_empty()
        && ip != "None"
        && !is_ipv4(ip)
    {
        errs.invalid("spec.clusterIP", q(ip), "must be empty, 'None', or a valid IPv4 address");
    }
}

fn check_endpoints(errs: &mut FieldErrors, ep: &Endpoints) {
    if !errs.check_len("subsets", ep.subsets.len(), LIST_ITEMS_MAX) {
        return;
    }
    let list = Path::root("subsets");
    for (i, subset) in ep.subsets.iter().enumerate() {
        let sp = list.index(i);
        for (name, list) in [("addresses", &subset.addresses), ("notReadyAddresses", &subset.not_ready_addresses)] {
            let lp = sp.child(name);
            if !errs.check_len(&lp, list.len(), ENDPOINT_ADDRESSES_MAX) {
                continue;
            }
            for (j, a) in list.iter().enumerate() {
                if !is_ipv4(&a.ip) {
                    errs.invalid(&lp.index(j).child("ip"), q(&a.ip), "must be a valid IPv4 address");
                }
            }
        }
        let pp = sp.child("ports");
        if errs.check_len(&pp, subset.ports.len(), LIST_ITEMS_MAX) {
            for (j, p) in subset.ports.iter().enumerate() {
                check_port(errs, &pp.index(j).child("port"), p.port);
            }
        }
    }
}

fn check_node(errs: &mut FieldErrors, node: &Node) {
    let mut seen = BTreeSet::new();
    if errs.check_len("spec.taints", node.spec.taints.len(), LIST_ITEMS_MAX) {
        let list = Path::root("spec.taints");
        for (i, t) in node.spec.taints.iter().enumerate() {
            let p = list.index(i);
            if let Some(reason) = is_qualified_name(&t.key) {
                errs.invalid(&p.child("key"), q(&t.key), reason);
            }
            if let Some(v) = &t.value
                && let Some(reason) = is_label_value(v)
            {
                errs.invalid(&p.child("value"), q(v), reason);
            }
            match t.effect {
                None => errs.required(&p.child("effect"), ""),
                Some(effect) => {
                    if !seen.insert((t.key.as_str(), effect)) {
                        errs.duplicate(&p, format!("{}:{}", q(&t.key), effect));
                    }
                }
            }
        }
    }
    check_resources(errs, &Path::root("status.capacity"), &node.status.capacity);
    check_resources(errs, &Path::root("status.allocatable"), &node.status.allocatable);
}

fn check_event(errs: &mut FieldErrors, ev: &Event) {
    if ev.involved_object.name.as_deref().unwrap_or("").is_empty() {
        errs.required("involvedObject.name", "");
    }
    if ev.involved_object.kind.as_deref().unwrap_or("").is_empty() {
        errs.required("involvedObject.kind", "");
    }
    if let Some(t) = ev.type_.as_deref()
        && t != "Normal"
        && t != "Warning"
    {
        errs.not_supported("type", t, &["Normal", "Warning"]);
    }
    errs.check_str("message", ev.message.as_deref().unwrap_or(""));
}

/// The node address types, as Kubernetes.
pub const NODE_ADDRESS_TYPES: [&str; 5] = ["Hostname", "InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS"];

fn check_condition_type(errs: &mut FieldErrors, path: &Path<'_>, type_: &str) {
    if type_.is_empty() {
        errs.required(&path.child("type"), "");
    } else if let Some(reason) = is_qualified_name(type_) {
        errs.invalid(&path.child("type"), q(type_), reason);
    }
}

fn check_ip_field(errs: &mut FieldErrors, path: &(impl FieldPath + ?Sized), ip: Option<&str>) {
    if let Some(ip) = ip
        && !ip.is_empty()
        && !is_ipv4(ip)
    {
        errs.invalid(path, q(ip), "must be a valid IPv4 address");
    }
}

fn check_counts(errs: &mut FieldErrors, counts: &[(&str, Option<i64>)]) {
    for (field, value) in counts {
        errs.non_negative(*field, *value);
    }
}

/// A pod's status: its addresses, its conditions, and one status per container of its spec.
fn check_pod_status(errs: &mut FieldErrors, pod: &Pod) {
    let s = &pod.status;
    check_ip_field(errs, "status.podIP", s.pod_ip.as_deref());
    check_ip_field(errs, "status.hostIP", s.host_ip.as_deref());
    // As Kubernetes: one address per family (IPv4 only here, so one), the first the podIP
    // (Kubernetes keeps the two in step when it converts; here the writer does).
    let ips = Path::root("status.podIPs");
    if s.pod_ips.len() > 1 {
        let listed: Vec<String> = s.pod_ips.iter().take(8).map(|p| q(&p.ip)).collect();
        errs.invalid(&ips, format!("[{}]", listed.join(", ")), "may specify no more than one IP for each IP family");
    }
    for (i, ip) in s.pod_ips.iter().take(8).enumerate() {
        let item = ips.index(i);
        let p = item.child("ip");
        if ip.ip.is_empty() {
            errs.required(&p, "");
        }
        check_ip_field(errs, &p, Some(ip.ip.as_str()));
    }
    if let Some(first) = s.pod_ips.first()
        && s.pod_ip.as_deref() != Some(first.ip.as_str())
    {
        errs.invalid(&ips.index(0).child("ip"), q(&first.ip), "must match `status.podIP`");
    }
    let conditions = Path::root("status.conditions");
    let mut types = BTreeSet::new();
    for (i, c) in s.conditions.iter().enumerate() {
        let p = conditions.index(i);
        check_condition_type(errs, &p, &c.type_);
        if !types.insert(c.type_.as_str()) {
            errs.duplicate(&p.child("type"), q(&c.type_));
        }
    }
    let statuses = Path::root("status.containerStatuses");
    let mut names = BTreeSet::new();
    for (i, cs) in s.container_statuses.iter().enumerate() {
        let p = statuses.index(i);
        if !pod.spec.containers.iter().any(|c| c.name == cs.name) {
            errs.not_found(&p.child("name"), q(&cs.name), "no container of that name in spec.containers");
        } else if !names.insert(cs.name.as_str()) {
            errs.duplicate(&p.child("name"), q(&cs.name));
        }
        errs.non_negative(&p.child("restartCount"), Some(i64::from(cs.restart_count)));
        let states = [&cs.state, &cs.last_state];
        for (name, state) in ["state", "lastState"].into_iter().zip(states) {
            let set = usize::from(state.waiting.is_some())
                + usize::from(state.running.is_some())
                + usize::from(state.terminated.is_some());
            if set > 1 {
                errs.forbidden(&p.child(name), "may not specify more than 1 state type");
            }
        }
    }
}

/// A node's status: address types and addresses, and condition types.
fn check_node_status(errs: &mut FieldErrors, node: &Node) {
    let addresses = Path::root("status.addresses");
    for (i, a) in node.status.addresses.iter().enumerate() {
        let p = addresses.index(i);
        if !NODE_ADDRESS_TYPES.contains(&a.type_.as_str()) {
            errs.not_supported(&p.child("type"), &a.type_, &NODE_ADDRESS_TYPES);
        } else if a.type_.ends_with("IP") && !is_ipv4(&a.address) {
            errs.invalid(&p.child("address"), q(&a.address), "must be a valid IPv4 address");
        }
    }
    let conditions = Path::root("status.conditions");
    for (i, c) in node.status.conditions.iter().enumerate() {
        check_condition_type(errs, &conditions.index(i), &c.type_);
    }
    if let Some(d) = &node.status.daemon_endpoints {
        check_port(errs, "status.daemonEndpoints.kubeletEndpoint.Port", d.kubelet_endpoint.port);
    }
}

/// Validates an object's status against its spec: IPv4 addresses (orch is IPv4 only, as its
/// cluster IPs), container statuses that name containers of the spec, condition types, counts
/// that are not negative. Applied where a status is written (a status update, a node's create),
/// not to every spec update: a status stored by an earlier build never blocks one.
pub fn validate_status(obj: &Object) -> FieldErrors {
    let mut errs = FieldErrors::default();
    match obj {
        Object::Node(n) => check_node_status(&mut errs, n),
        Object::Pod(p) => check_pod_status(&mut errs, p),
        Object::Deployment(d) => {
            let st = &d.status;
            check_counts(
                &mut errs,
                &[
                    ("status.replicas", st.replicas.map(i64::from)),
                    ("status.updatedReplicas", st.updated_replicas.map(i64::from)),
                    ("status.readyReplicas", st.ready_replicas.map(i64::from)),
                    ("status.availableReplicas", st.available_replicas.map(i64::from)),
                    ("status.unavailableReplicas", st.unavailable_replicas.map(i64::from)),
                    ("status.observedGeneration", st.observed_generation),
                    ("status.collisionCount", st.collision_count.map(i64::from)),
                ],
            );
            let conditions = Path::root("status.conditions");
            for (i, c) in st.conditions.iter().enumerate() {
                check_condition_type(&mut errs, &conditions.index(i), &c.type_);
            }
        }
        Object::ReplicaSet(rs) => {
            let st = &rs.status;
            check_counts(
                &mut errs,
                &[
                    ("status.replicas", Some(i64::from(st.replicas))),
                    ("status.fullyLabeledReplicas", st.fully_labeled_replicas.map(i64::from)),
                    ("status.readyReplicas", st.ready_replicas.map(i64::from)),
                    ("status.availableReplicas", st.available_replicas.map(i64::from)),
                    ("status.observedGeneration", st.observed_generation),
                ],
            );
            let conditions = Path::root("status.conditions");
            for (i, c) in st.conditions.iter().enumerate() {
                check_condition_type(&mut errs, &conditions.index(i), &c.type_);
            }
        }
        Object::Namespace(_)
        | Object::Service(_)
        | Object::Endpoints(_)
        | Object::Event(_)
        | Object::ConfigMap(_)
        | Object::Secret(_) => {}
    }
    errs
}

/// Validates a status change from `old` to `new`: the rules of [`validate`] and
/// [`validate_status`], plus the transitions a status may not make (a pod that succeeded or
/// failed keeps its phase).
pub fn validate_status_update(new: &Object, old: &Object) -> FieldErrors {
    let mut errs = validate(new);
    errs.0.extend(validate_status(new).0);
    if let (Object::Pod(n), Object::Pod(o)) = (new, old)
        && let Some(phase @ (PodPhase::Succeeded | PodPhase::Failed)) = o.status.phase
        && n.status.phase != Some(phase)
    {
        errs.forbidden("status.phase", format!("may not change from the terminal phase {phase}"));
    }
    errs
}

/// Validates an object as it would be stored (defaults already applied), status included,
/// under this build's rules ([`crate::rules::RULES_VERSION`]).
pub fn validate(obj: &Object) -> FieldErrors {
    validate_under(obj, crate::rules::RULES_VERSION)
}

/// [`validate`] under the rules version `rules` (an entry's, [`crate::rules`]).
pub fn validate_under(obj: &Object, rules: u16) -> FieldErrors {
    let mut errs = FieldErrors::default();
    check_meta(&mut errs, obj.kind(), obj.meta());
    match obj {
        Object::Namespace(_) => {}
        Object::Node(n) => check_node(&mut errs, n),
        Object::Pod(p) => check_pod_spec_under(&mut errs, &Path::root("spec"), &p.spec, rules),
        Object::Service(s) => check_service(&mut errs, s),
        Object::Endpoints(e) => check_endpoints(&mut errs, e),
        Object::Deployment(d) => check_deployment(&mut errs, d, rules),
        Object::ReplicaSet(rs) => {
            let s = &rs.spec;
            check_workload(&mut errs, s.replicas, &s.selector, &s.template, s.min_ready_seconds, rules);
        }
        Object::Event(e) => check_event(&mut errs, e),
        Object::ConfigMap(c) => config::check_config_map(&mut errs, c),
        Object::Secret(s) => config::check_secret(&mut errs, s),
    }
    errs
}

/// Whether `s` is a CIDR as Kubernetes' `IsValidCIDR` takes it: an IPv4 or IPv6 address, `/`,
/// and a prefix length in decimal digits of at most 32 or 128 (stricter on one point: an IPv4
/// octet with a leading zero is refused).
fn is_cidr(s: &str) -> bool {
    let Some((ip, prefix)) = s.split_once('/') else { return false };
    let bits = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    !prefix.is_empty()
        && prefix.len() <= 3
        && prefix.bytes().all(|b| b.is_ascii_digit())
        && prefix.parse::<u32>().is_ok_and(|p| p <= bits)
}

/// Rules 7 ([`crate::rules`]): a node's `spec.podCIDR` is a CIDR, and once set never changes
/// (Kubernetes' `ValidateNode` and `ValidateNodeUpdate` on `spec.podCIDRs`: the controller
/// manager may give a node its range, never move it). `old` is the stored node, for an
/// update: a value it already holds is not checked again (Kubernetes' ratcheting), so a node
/// stored under older rules with a range that is no CIDR can still be written (tainted,
/// labelled), though never given another range. Kept apart from [`validate`] because entries
/// of older rules are applied without it.
pub fn validate_pod_cidr(new: &Node, old: Option<&Node>) -> FieldErrors {
    let mut errs = FieldErrors::default();
    let cidr = new.spec.pod_cidr.as_deref().unwrap_or("");
    let stored = old.and_then(|o| o.spec.pod_cidr.as_deref()).unwrap_or("");
    if !cidr.is_empty() && cidr != stored && !is_cidr(cidr) {
        errs.invalid("spec.podCIDR", q(cidr), "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)");
    }
    if let Some(was) = old.and_then(|o| o.spec.pod_cidr.as_deref()).filter(|c| !c.is_empty())
        && was != cidr
    {
        errs.forbidden("spec.podCIDR", "node updates may not change podCIDR except from \"\" to valid");
    }
    errs
}

/// Validates a change from `old` to `new` of the same object: the rules of [`validate`] plus
/// the fields that may not change.
pub fn validate_update(new: &Object, old: &Object) -> FieldErrors {
    validate_update_under(new, old, crate::rules::RULES_VERSION)
}

/// [`validate_update`] under the rules version `rules` (an entry's, [`crate::rules`]).
pub fn validate_update_under(new: &Object, old: &Object, rules: u16) -> FieldErrors {
    let mut errs = validate_under(new, rules);
    match (new, old) {
        (Object::Deployment(n), Object::Deployment(o)) if n.spec.selector != o.spec.selector => {
            errs.invalid(
                "spec.selector",
                q(&crate::selector::Selector::from(&n.spec.selector).to_string()),
                "field is immutable",
            );
        }
        (Object::ReplicaSet(n), Object::ReplicaSet(o)) if n.spec.selector != o.spec.selector => {
            errs.invalid(
                "spec.selector",
                q(&crate::selector::Selector::from(&n.spec.selector).to_string()),
                "field is immutable",
            );
        }
        (Object::Service(n), Object::Service(o)) => {
            let (nip, oip) = (n.spec.cluster_ip.as_deref().unwrap_or(""), o.spec.cluster_ip.as_deref().unwrap_or(""));
            if !oip.is_empty() && nip != oip {
                errs.invalid("spec.clusterIP", q(nip), "field is immutable");
            }
        }
        (Object::Pod(n), Object::Pod(o)) => {
            // As Kubernetes: only container images may change (and tolerations be added).
            let mut probe = n.spec.clone();
            for (c, oc) in probe.containers.iter_mut().zip(&o.spec.containers) {
                // Rules 8: a container created without an image may be given one, and with
                // it the pull policy the defaults give it.
                if rules >= 8 && oc.image.is_empty() {
                    c.image_pull_policy.clone_from(&oc.image_pull_policy);
                }
                c.image.clone_from(&oc.image);
            }
            let added_tolerations = probe.tolerations.len() >= o.spec.tolerations.len()
                && probe.tolerations[..o.spec.tolerations.len()] == o.spec.tolerations[..];
            if added_tolerations {
                probe.tolerations.clone_from(&o.spec.tolerations);
            }
            if probe != o.spec {
                errs.forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image` or `spec.tolerations` (only additions to existing tolerations); use a bind command to set `spec.nodeName`");
            }
        }
        (Object::ConfigMap(n), Object::ConfigMap(o)) => config::check_config_map_update(&mut errs, n, o),
        (Object::Secret(n), Object::Secret(o)) => config::check_secret_update(&mut errs, n, o),
        _ => {}
    }
    errs
}

#[cfg(test)]
mod quoting {
    use super::q;

    /// Values in messages are quoted without the toolchain's Unicode tables: the same bytes
    /// from every compiler. For printable ASCII and the usual escapes they read as `{:?}` did.
    #[test]
    fn values_are_quoted_the_same_by_every_build() {
        for s in ["web-1", "a\"b\\c", "line\nbreak\ttab\r\0", "", "spaces and 'quotes'"] {
            assert_eq!(q(s), format!("{s:?}"), "{s}");
        }
        assert_eq!(q("\u{1b}[31m\u{85}"), "\"\\u{1b}[31m\\u{85}\"");
        // Not escaped, whatever a Rust release's tables say of them: a combining accent at the
        // start (a grapheme extender, which `{:?}` escapes), an unassigned code point, a
        // right-to-left mark.
        assert_eq!(q("\u{301}e\u{50000}\u{200f}"), "\"\u{301}e\u{50000}\u{200f}\"");
    }
}
