//! Defaults applied before validation, as the Kubernetes API server applies them.

use crate::apps_v1::{DeploymentStrategyType, RollingUpdateDeployment};
use crate::core_v1::{
    NamespacePhase, PodSpec, Probe, Protocol, PullPolicy, ResourceList, RestartPolicy, ServiceType, TaintEffect,
    Toleration, TolerationOperator, UriScheme,
};
use crate::intstr::IntOrString;
use crate::object::Object;
use std::sync::Arc;

/// The namespace of a namespaced object that names none.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Seconds between SIGTERM and SIGKILL when a pod names none.
pub const DEFAULT_TERMINATION_GRACE_SECONDS: i64 = 30;
/// The `tolerationSeconds` of the tolerations of the not-ready and unreachable taints a new pod
/// gets ([`default_tolerations`]): Kubernetes' `default-not-ready-toleration-seconds` and
/// `default-unreachable-toleration-seconds`.
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;
/// A deployment's default `revisionHistoryLimit`.
pub const DEFAULT_REVISION_HISTORY_LIMIT: i32 = 10;
/// A deployment's default `progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE_SECONDS: i32 = 600;
/// A rolling update's default `maxSurge` and `maxUnavailable`.
pub const DEFAULT_ROLLING_UPDATE_PERCENT: &str = "25%";

fn default_probe(probe: &mut Probe) {
    probe.timeout_seconds.get_or_insert(1);
    probe.period_seconds.get_or_insert(10);
    probe.success_threshold.get_or_insert(1);
    probe.failure_threshold.get_or_insert(3);
    probe.initial_delay_seconds.get_or_insert(0);
    if let Some(http) = &mut probe.http_get {
        http.path.get_or_insert_with(|| "/".into());
        http.scheme.get_or_insert(UriScheme::Http);
    }
}

fn default_requests(requests: &mut ResourceList, limits: &ResourceList) {
    // A limit without a request reserves the limit, as Kubernetes does.
    requests.cpu = requests.cpu.or(limits.cpu);
    requests.memory = requests.memory.or(limits.memory);
    requests.ephemeral_storage = requests.ephemeral_storage.or(limits.ephemeral_storage);
}

/// `Always` for an untagged or `:latest` image, `IfNotPresent` for a tag or a digest, as
/// Kubernetes defaults `imagePullPolicy`.
fn default_pull_policy(image: &str) -> PullPolicy {
    if image.contains('@') {
        return PullPolicy::IfNotPresent;
    }
    // The tag follows the last ':' of the last path segment (a registry port has a '/' after it).
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    match last_segment.split_once(':') {
        None | Some((_, "latest")) => PullPolicy::Always,
        Some(_) => PullPolicy::IfNotPresent,
    }
}

/// The mode of the files of a ConfigMap or Secret volume that names none (0644).
pub const DEFAULT_VOLUME_MODE: i32 = 0o644;

/// Applies the pod spec defaults: restart policy, grace period, pull policy (of a container
/// that names an image), port protocols (and host ports of a `hostNetwork` pod), probe
/// timings, requests from limits, `fieldRef` API versions, volume file modes.
pub fn default_pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert(RestartPolicy::Always);
    spec.termination_grace_period_seconds.get_or_insert(DEFAULT_TERMINATION_GRACE_SECONDS);
    let host_network = spec.host_network == Some(true);
    for v in &mut spec.volumes {
        if let Some(cm) = &mut v.config_map {
            cm.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        }
        if let Some(secret) = &mut v.secret {
            secret.default_mode.get_or_insert(DEFAULT_VOLUME_MODE);
        }
    }
    for c in &mut spec.containers {
        if c.image_pull_policy.is_none() && !c.image.is_empty() {
            c.image_pull_policy = Some(default_pull_policy(&c.image));
        }
        for p in &mut c.ports {
            p.protocol.get_or_insert(Protocol::Tcp);
            // As Kubernetes: a pod on the node's network listens on the node's port.
            if host_network {
                p.host_port.get_or_insert(p.container_port);
            }
        }
        for e in &mut c.env {
            if let Some(field) = e.value_from.as_mut().and_then(|f| f.field_ref.as_mut()) {
                field.api_version.get_or_insert_with(|| "v1".into());
            }
        }
        let limits = c.resources.limits.clone();
        default_requests(&mut c.resources.requests, &limits);
        for probe in [&mut c.liveness_probe, &mut c.readiness_probe, &mut c.startup_probe].into_iter().flatten() {
            default_probe(probe);
        }
    }
}

/// Adds to a new pod's `spec` the tolerations Kubernetes' `DefaultTolerationSeconds`
/// admission adds: of the `NoExecute` taints `node.kubernetes.io/not-ready` and
/// `node.kubernetes.io/unreachable`, for [`DEFAULT_TOLERATION_SECONDS`] each, unless a
/// toleration of the pod already names that key (or every key) with `NoExecute` or every
/// effect. Applied when a pod is created or updated (rules 5, [`crate::rules`]); a pod whose
/// tolerations are at their list limit ([`crate::validation::LIST_ITEMS_MAX`]) gets none, so
/// that the stored pod stays within its bounds.
pub fn default_tolerations(spec: &mut PodSpec) {
    for key in [crate::nodelifecycle::NOT_READY_TAINT, crate::nodelifecycle::UNREACHABLE_TAINT] {
        let tolerated = spec.tolerations.iter().any(|t| {
            t.key.as_deref().is_none_or(|k| k.is_empty() || k == key)
                && t.effect.is_none_or(|e| e == TaintEffect::NoExecute)
        });
        if !tolerated && spec.tolerations.len() < crate::validation::LIST_ITEMS_MAX {
            spec.tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some(TolerationOperator::Exists),
                value: None,
                effect: Some(TaintEffect::NoExecute),
                toleration_seconds: Some(DEFAULT_TOLERATION_SECONDS),
            });
        }
    }
}

/// Applies the defaults of `obj`'s kind, and the `default` namespace to namespaced kinds that
/// name none (cluster-scoped kinds lose any namespace they name).
pub fn apply_defaults(obj: &mut Object) {
    let namespaced = obj.kind().namespaced();
    let meta = obj.meta_mut();
    if namespaced {
        if meta.namespace.as_deref().unwrap_or("").is_empty() {
            meta.namespace = Some(DEFAULT_NAMESPACE.into());
        }
    } else {
        meta.namespace = None;
    }
    match obj {
        Object::Namespace(ns) => {
            Arc::make_mut(ns).status.phase.get_or_insert(NamespacePhase::Active);
        }
        Object::Node(node) => {
            let status = &mut Arc::make_mut(node).status;
            if status.allocatable == ResourceList::default() {
                status.allocatable = status.capacity.clone();
            }
        }
        Object::Pod(pod) => default_pod_spec(&mut Arc::make_mut(pod).spec),
        Object::Service(svc) => {
            let spec = &mut Arc::make_mut(svc).spec;
            spec.type_.get_or_insert(ServiceType::ClusterIp);
            for p in &mut spec.ports {
                p.protocol.get_or_insert(Protocol::Tcp);
                if p.target_port.is_none() {
                    p.target_port = Some(IntOrString::Int(p.port));
                }
            }
        }
        Object::Endpoints(ep) => {
            for subset in &mut Arc::make_mut(ep).subsets {
                for p in &mut subset.ports {
                    p.protocol.get_or_insert(Protocol::Tcp);
                }
            }
        }
        Object::Deployment(d) => {
            let spec = &mut Arc::make_mut(d).spec;
            spec.replicas.get_or_insert(1);
            spec.revision_history_limit.get_or_insert(DEFAULT_REVISION_HISTORY_LIMIT);
            spec.progress_deadline_seconds.get_or_insert(DEFAULT_PROGRESS_DEADLINE_SECONDS);
            let strategy = &mut spec.strategy;
            let kind = *strategy.type_.get_or_insert(DeploymentStrategyType::RollingUpdate);
            if kind == DeploymentStrategyType::RollingUpdate {
                let ru = strategy.rolling_update.get_or_insert_with(RollingUpdateDeployment::default);
                ru.max_surge.get_or_insert_with(|| IntOrString::Str(DEFAULT_ROLLING_UPDATE_PERCENT.into()));
                ru.max_unavailable.get_or_insert_with(|| IntOrString::Str(DEFAULT_ROLLING_UPDATE_PERCENT.into()));
            }
            default_pod_spec(&mut spec.template.spec);
        }
        Object::ReplicaSet(rs) => {
            let spec = &mut Arc::make_mut(rs).spec;
            spec.replicas.get_or_insert(1);
            default_pod_spec(&mut spec.template.spec);
        }
        Object::Event(ev) => {
            let ev = Arc::make_mut(ev);
            ev.type_.get_or_insert_with(|| "Normal".into());
            ev.count.get_or_insert(1);
        }
        Object::ConfigMap(_) => {}
        Object::Secret(secret) => {
            let secret = Arc::make_mut(secret);
            secret.type_.get_or_insert_with(|| "Opaque".into());
            // As Kubernetes: `stringData` is write-only, merged over `data`.
            use base64::Engine as _;
            for (k, v) in std::mem::take(&mut secret.string_data).iter() {
                secret.data.insert(k, base64::engine::general_purpose::STANDARD.encode(v.as_bytes()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(default_pull_policy("nginx"), PullPolicy::Always);
        assert_eq!(default_pull_policy("nginx:latest"), PullPolicy::Always);
        assert_eq!(default_pull_policy("nginx:1.27"), PullPolicy::IfNotPresent);
        assert_eq!(default_pull_policy("registry:5000/nginx"), PullPolicy::Always);
        assert_eq!(default_pull_policy("registry:5000/nginx:1"), PullPolicy::IfNotPresent);
        assert_eq!(default_pull_policy("nginx@sha256:abc"), PullPolicy::IfNotPresent);
    }
}
