//! The `v1` kinds: Namespace, Node, Pod, Service, Endpoints, Event, ConfigMap, Secret.

use serde::Deserialize as _;

use crate::intstr::IntOrString;
use crate::meta::{ConditionStatus, ObjectMeta, ObjectReference};
use crate::quantity::Quantity;
use crate::strmap::StrMap;
use crate::text::Text;
use crate::time::Time;

// ---------------------------------------------------------------------------------------------
// Namespace

model! {
    /// A namespace groups namespaced objects; `default` always exists.
    pub struct Namespace {
        pub metadata: ObjectMeta,
        pub spec: NamespaceSpec,
        pub status: NamespaceStatus,
    }
}

model! {
    /// Namespace spec (no fields yet; kept for Kubernetes' shape).
    pub struct NamespaceSpec {}
}

model! {
    /// Namespace status.
    pub struct NamespaceStatus {
        pub phase: Option<NamespacePhase>,
    }
}

string_enum! {
    /// Whether a namespace accepts new objects.
    pub enum NamespacePhase {
        Active = "Active",
        Terminating = "Terminating",
    }
}

// ---------------------------------------------------------------------------------------------
// Node

model! {
    /// A machine that runs pods, registered by its node agent.
    pub struct Node {
        pub metadata: ObjectMeta,
        pub spec: NodeSpec,
        pub status: NodeStatus,
    }
}

model! {
    /// Node spec: scheduling controls.
    pub struct NodeSpec {
        /// A cordoned node takes no new pods.
        pub unschedulable: Option<bool>,
        pub taints: Vec<Taint>,
        #[serde(rename = "podCIDR")]
        pub pod_cidr: Option<Text>,
    }
}

model! {
    /// A taint repels pods that do not tolerate it.
    pub struct Taint {
        pub key: Text,
        pub value: Option<Text>,
        pub effect: Option<TaintEffect>,
        pub time_added: Option<Time>,
    }
}

string_enum! {
    /// What a taint does to pods that do not tolerate it.
    pub enum TaintEffect {
        NoSchedule = "NoSchedule",
        PreferNoSchedule = "PreferNoSchedule",
        NoExecute = "NoExecute",
    }
}

model! {
    /// Node status, reported by its agent.
    pub struct NodeStatus {
        pub capacity: ResourceList,
        pub allocatable: ResourceList,
        [merge "type"] pub addresses: Vec<NodeAddress>,
        [merge "type"] pub conditions: Vec<NodeCondition>,
        /// What the node runs: kernel, OS, agent version (storage format 14; boxed, as it is
        /// written once at registration).
        [since 14] pub node_info: Option<Box<NodeSystemInfo>>,
        /// The agent's own endpoint (logs, exec), on the node's `InternalIP` (storage format 14).
        [since 14] pub daemon_endpoints: Option<NodeDaemonEndpoints>,
    }
}

model! {
    /// What a node runs, as its agent reports it.
    pub struct NodeSystemInfo {
        #[serde(rename = "machineID")]
        pub machine_id: Text,
        #[serde(rename = "bootID")]
        pub boot_id: Text,
        pub kernel_version: Text,
        pub os_image: Text,
        pub operating_system: Text,
        pub architecture: Text,
        /// `orch-process://<version>`: the process runtime (no container images).
        pub container_runtime_version: Text,
        /// The node agent's version (`orch-node <version>`).
        pub kubelet_version: Text,
    }
}

model! {
    /// The endpoints of a node's daemons.
    pub struct NodeDaemonEndpoints {
        pub kubelet_endpoint: DaemonEndpoint,
    }
}

model! {
    /// A daemon's port on the node's address.
    pub struct DaemonEndpoint {
        #[serde(rename = "Port")]
        pub port: i32,
    }
}

model! {
    /// An address of a node.
    pub struct NodeAddress {
        /// `InternalIP`, `ExternalIP` or `Hostname`.
        #[serde(rename = "type")]
        pub type_: Text,
        pub address: Text,
    }
}

model! {
    /// A node condition such as `Ready`.
    pub struct NodeCondition {
        #[serde(rename = "type")]
        pub type_: Text,
        pub status: ConditionStatus,
        pub last_heartbeat_time: Option<Time>,
        pub last_transition_time: Option<Time>,
        pub reason: Option<Text>,
        pub message: Option<Text>,
    }
}

model! {
    /// Amounts of the resources orch schedules by. Other resource names are refused.
    pub struct ResourceList {
        pub cpu: Option<Quantity>,
        pub memory: Option<Quantity>,
        pub pods: Option<Quantity>,
        #[serde(rename = "ephemeral-storage")]
        pub ephemeral_storage: Option<Quantity>,
    }
}

impl ResourceList {
    /// The named quantities that are set, in a fixed order.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, Quantity)> {
        [("cpu", self.cpu), ("memory", self.memory), ("pods", self.pods), ("ephemeral-storage", self.ephemeral_storage)]
            .into_iter()
            .filter_map(|(name, q)| q.map(|q| (name, q)))
    }
}

// ---------------------------------------------------------------------------------------------
// Pod

model! {
    /// A group of containers that run together on one node.
    pub struct Pod {
        pub metadata: ObjectMeta,
        pub spec: PodSpec,
        pub status: PodStatus,
    }
}

model! {
    /// The template of a pod, as held by deployments and replica sets.
    pub struct PodTemplateSpec {
        pub metadata: ObjectMeta,
        pub spec: PodSpec,
    }
}

model! {
    /// What a pod runs and where it may run.
    pub struct PodSpec {
        [merge "name"] pub containers: Vec<Container>,
        /// `Always` (default), `OnFailure` or `Never`.
        pub restart_policy: Option<RestartPolicy>,
        /// The node the pod is bound to; set by a bind command.
        pub node_name: Option<Text>,
        pub node_selector: StrMap,
        pub tolerations: Vec<Toleration>,
        /// Seconds between SIGTERM and SIGKILL on deletion; 30 by default.
        pub termination_grace_period_seconds: Option<i64>,
        pub hostname: Option<Text>,
        /// Where the pod may and would rather run: node affinity (storage format 11; boxed,
        /// since most pods have none).
        [since 11] pub affinity: Option<Box<Affinity>>,
        /// Volumes the containers may mount (storage format 14).
        [since 14] [merge "name"] pub volumes: Vec<Volume>,
        /// Run in the node's network namespace, with the node's address (storage format 14).
        [since 14] pub host_network: Option<bool>,
    }
}

model! {
    /// A named volume of a pod. Exactly one source is set.
    pub struct Volume {
        pub name: Text,
        pub empty_dir: Option<EmptyDirVolumeSource>,
        pub config_map: Option<ConfigMapVolumeSource>,
        pub secret: Option<SecretVolumeSource>,
    }
}

model! {
    /// A directory that lives as long as the pod, empty at first.
    pub struct EmptyDirVolumeSource {
        /// `""` (the node's disk) or `Memory` (a tmpfs).
        pub medium: Option<Text>,
        /// The most bytes it may hold (enforced for `Memory` as the tmpfs size).
        pub size_limit: Option<Quantity>,
    }
}

model! {
    /// A ConfigMap's keys as files.
    pub struct ConfigMapVolumeSource {
        pub name: Text,
        /// The keys to project, and where; all keys when empty.
        pub items: Vec<KeyToPath>,
        /// The mode of the files (0644 by default); `0400` in YAML reads as octal, as
        /// Kubernetes' YAML 1.1 reads it.
        #[serde(deserialize_with = "file_mode")]
        pub default_mode: Option<i32>,
        /// A missing ConfigMap (or key) is not an error.
        pub optional: Option<bool>,
    }
}

model! {
    /// A Secret's keys as files (on a tmpfs).
    pub struct SecretVolumeSource {
        pub secret_name: Text,
        /// The keys to project, and where; all keys when empty.
        pub items: Vec<KeyToPath>,
        /// The mode of the files (0644 by default); `0400` in YAML reads as octal, as
        /// Kubernetes' YAML 1.1 reads it.
        #[serde(deserialize_with = "file_mode")]
        pub default_mode: Option<i32>,
        /// A missing Secret (or key) is not an error.
        pub optional: Option<bool>,
    }
}

/// A file mode as manifests write it: a number, or (YAML 1.1's octal, which YAML 1.2 reads
/// as text) digits with a leading `0`: `0644`.
fn file_mode<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Mode {
        Int(i32),
        Text(String),
    }
    match Option::<Mode>::deserialize(d)? {
        None => Ok(None),
        Some(Mode::Int(m)) => Ok(Some(m)),
        Some(Mode::Text(t)) if t.len() > 1 && t.starts_with('0') => i32::from_str_radix(&t[1..], 8)
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("invalid file mode {t:?}: expected octal digits"))),
        Some(Mode::Text(t)) => Err(serde::de::Error::custom(format!("invalid file mode {t:?}: expected a number"))),
    }
}

model! {
    /// A key projected to a relative path.
    pub struct KeyToPath {
        pub key: Text,
        pub path: Text,
        #[serde(deserialize_with = "file_mode")]
        pub mode: Option<i32>,
    }
}

model! {
    /// Where a container sees a volume.
    pub struct VolumeMount {
        pub name: Text,
        pub mount_path: Text,
        pub read_only: Option<bool>,
    }
}

model! {
    /// A pod's scheduling constraints: node affinity (Kubernetes' `podAffinity` and
    /// `podAntiAffinity` are not supported, and refused as unknown fields).
    pub struct Affinity {
        pub node_affinity: Option<NodeAffinity>,
    }
}

model! {
    /// The nodes a pod may run on (required) and would rather run on (preferred).
    pub struct NodeAffinity {
        /// A node must match one of its terms, or the pod is not placed there. Checked when
        /// the pod is scheduled and bound, not afterwards (a node relabelled later keeps it).
        pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
        /// Each term a node matches adds its weight to the node's score.
        pub preferred_during_scheduling_ignored_during_execution: Vec<PreferredSchedulingTerm>,
    }
}

model! {
    /// Terms of which a node must match one.
    pub struct NodeSelector {
        pub node_selector_terms: Vec<NodeSelectorTerm>,
    }
}

model! {
    /// Requirements a node must all meet; a term with none matches no node.
    pub struct NodeSelectorTerm {
        /// On the node's labels.
        pub match_expressions: Vec<NodeSelectorRequirement>,
        /// On the node's fields: `metadata.name`.
        pub match_fields: Vec<NodeSelectorRequirement>,
    }
}

model! {
    /// One requirement on a node's label or field.
    pub struct NodeSelectorRequirement {
        pub key: Text,
        /// Required (an `Option` so that it is always written out, `In` too).
        pub operator: Option<NodeSelectorOperator>,
        pub values: Vec<Text>,
    }
}

string_enum! {
    /// The operator of a node selector requirement.
    pub enum NodeSelectorOperator {
        In = "In",
        NotIn = "NotIn",
        Exists = "Exists",
        DoesNotExist = "DoesNotExist",
        Gt = "Gt",
        Lt = "Lt",
    }
}

model! {
    /// A weighted preference for nodes matching a term.
    pub struct PreferredSchedulingTerm {
        /// 1 to 100.
        pub weight: i32,
        pub preference: NodeSelectorTerm,
    }
}

string_enum! {
    /// When the node agent restarts a pod's containers.
    pub enum RestartPolicy {
        Always = "Always",
        OnFailure = "OnFailure",
        Never = "Never",
    }
}

model! {
    /// A process the pod runs.
    pub struct Container {
        pub name: Text,
        pub image: Text,
        pub command: Vec<Text>,
        pub args: Vec<Text>,
        [merge "name"] pub env: Vec<EnvVar>,
        pub working_dir: Option<Text>,
        [merge "containerPort"] pub ports: Vec<ContainerPort>,
        pub resources: ResourceRequirements,
        pub liveness_probe: Option<Box<Probe>>,
        pub readiness_probe: Option<Box<Probe>>,
        pub startup_probe: Option<Box<Probe>>,
        pub image_pull_policy: Option<PullPolicy>,
        /// Variables from every key of a ConfigMap or Secret, before `env` (storage format 14).
        [since 14] pub env_from: Vec<EnvFromSource>,
        /// The pod's volumes this container sees, and where (storage format 14).
        [since 14] [merge "mountPath"] pub volume_mounts: Vec<VolumeMount>,
    }
}

string_enum! {
    /// When to pull an image.
    pub enum PullPolicy {
        Always = "Always",
        IfNotPresent = "IfNotPresent",
        Never = "Never",
    }
}

model! {
    /// An environment variable.
    pub struct EnvVar {
        pub name: Text,
        pub value: Option<Text>,
        /// Where the value comes from instead of `value` (storage format 14; boxed, as most
        /// variables have a value).
        [since 14] pub value_from: Option<Box<EnvVarSource>>,
    }
}

model! {
    /// The source of a variable's value. Exactly one is set.
    pub struct EnvVarSource {
        pub field_ref: Option<ObjectFieldSelector>,
        pub config_map_key_ref: Option<KeySelector>,
        pub secret_key_ref: Option<KeySelector>,
    }
}

model! {
    /// A field of the pod: `metadata.name`, `metadata.namespace`, `metadata.uid`,
    /// `spec.nodeName`, `status.podIP`, `status.hostIP`, `metadata.labels['KEY']` or
    /// `metadata.annotations['KEY']`.
    pub struct ObjectFieldSelector {
        pub api_version: Option<Text>,
        pub field_path: Text,
    }
}

model! {
    /// A key of a ConfigMap or Secret in the pod's namespace.
    pub struct KeySelector {
        pub name: Text,
        pub key: Text,
        /// A missing object or key leaves the variable out instead of failing the container.
        pub optional: Option<bool>,
    }
}

model! {
    /// Every key of a ConfigMap or Secret as a variable. Exactly one source is set.
    pub struct EnvFromSource {
        /// Put before each key.
        pub prefix: Option<Text>,
        pub config_map_ref: Option<LocalObjectReference>,
        pub secret_ref: Option<LocalObjectReference>,
    }
}

model! {
    /// An object of the pod's namespace, by name.
    pub struct LocalObjectReference {
        pub name: Text,
        /// A missing object is not an error.
        pub optional: Option<bool>,
    }
}

model! {
    /// A port a container listens on.
    pub struct ContainerPort {
        pub name: Option<Text>,
        pub container_port: i32,
        pub protocol: Option<Protocol>,
        pub host_port: Option<i32>,
        #[serde(rename = "hostIP")]
        pub host_ip: Option<Text>,
    }
}

string_enum! {
    /// A transport protocol.
    pub enum Protocol {
        Tcp = "TCP",
        Udp = "UDP",
        Sctp = "SCTP",
    }
}

model! {
    /// Resource requests (what the scheduler reserves) and limits (what the runtime enforces).
    pub struct ResourceRequirements {
        pub requests: ResourceList,
        pub limits: ResourceList,
    }
}

model! {
    /// A health check run by the node agent. Exactly one handler must be set.
    pub struct Probe {
        pub exec: Option<ExecAction>,
        pub http_get: Option<HttpGetAction>,
        pub tcp_socket: Option<TcpSocketAction>,
        pub initial_delay_seconds: Option<i32>,
        pub timeout_seconds: Option<i32>,
        pub period_seconds: Option<i32>,
        pub success_threshold: Option<i32>,
        pub failure_threshold: Option<i32>,
        pub termination_grace_period_seconds: Option<i64>,
    }
}

model! {
    /// Run a command in the container; exit status 0 is success.
    pub struct ExecAction {
        pub command: Vec<Text>,
    }
}

model! {
    /// An HTTP GET; a status in 200..400 is success.
    pub struct HttpGetAction {
        pub path: Option<Text>,
        pub port: IntOrString,
        pub host: Option<Text>,
        pub scheme: Option<UriScheme>,
        pub http_headers: Vec<HttpHeader>,
    }
}

string_enum! {
    /// The scheme of an HTTP probe.
    pub enum UriScheme {
        Http = "HTTP",
        Https = "HTTPS",
    }
}

model! {
    /// A header sent by an HTTP probe.
    pub struct HttpHeader {
        pub name: Text,
        pub value: Text,
    }
}

model! {
    /// A TCP connect; an accepted connection is success.
    pub struct TcpSocketAction {
        pub port: IntOrString,
        pub host: Option<Text>,
    }
}

model! {
    /// Lets a pod run on nodes with matching taints.
    pub struct Toleration {
        pub key: Option<Text>,
        pub operator: Option<TolerationOperator>,
        pub value: Option<Text>,
        pub effect: Option<TaintEffect>,
        pub toleration_seconds: Option<i64>,
    }
}

string_enum! {
    /// How a toleration matches a taint's value.
    pub enum TolerationOperator {
        Exists = "Exists",
        Equal = "Equal",
    }
}

model! {
    /// What the node agent reports about a pod.
    pub struct PodStatus {
        pub phase: Option<PodPhase>,
        [merge "type"] pub conditions: Vec<PodCondition>,
        pub container_statuses: Vec<ContainerStatus>,
        #[serde(rename = "podIP")]
        pub pod_ip: Option<Text>,
        #[serde(rename = "hostIP")]
        pub host_ip: Option<Text>,
        pub start_time: Option<Time>,
        pub reason: Option<Text>,
        pub message: Option<Text>,
        /// The pod's addresses, one per IP family; the first is `podIP` (storage format 11).
        #[serde(rename = "podIPs")]
        [since 11] [merge "ip"] pub pod_ips: Vec<PodIp>,
    }
}

model! {
    /// One of a pod's addresses.
    pub struct PodIp {
        pub ip: Text,
    }
}

string_enum! {
    /// The lifecycle phase of a pod.
    pub enum PodPhase {
        Pending = "Pending",
        Running = "Running",
        Succeeded = "Succeeded",
        Failed = "Failed",
        Unknown = "Unknown",
    }
}

/// A pod condition such as `PodScheduled` or `Ready`.
///
/// `reason` and `message` are boxed together: most conditions carry neither, and a running
/// pod holds four conditions, so inline they would cost every stored pod 160 bytes. The
/// manifest form is Kubernetes' (`type`, `status`, `lastProbeTime`, `lastTransitionTime`,
/// `reason`, `message`); see [`PodConditionFields`].
#[derive(
    Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, bincode::Encode, bincode::Decode,
)]
#[serde(from = "PodConditionFields", into = "PodConditionFields")]
pub struct PodCondition {
    /// `PodScheduled`, `Initialized`, `ContainersReady`, `Ready`, ...
    pub type_: Text,
    /// Whether the condition holds.
    pub status: ConditionStatus,
    /// When it was last probed.
    pub last_probe_time: Option<Time>,
    /// When `status` last changed.
    pub last_transition_time: Option<Time>,
    /// Never `Some` of an empty detail (see [`PodCondition::set_detail`]).
    detail: Option<Box<(Option<Text>, Option<Text>)>>,
}

impl crate::schema::Schema for PodCondition {
    fn shape() -> crate::schema::Shape {
        <PodConditionFields as crate::schema::Schema>::shape()
    }
}

impl PodCondition {
    /// A condition of `type_` with `status`, changed at `at`.
    pub fn new(type_: &str, status: ConditionStatus, at: Time) -> Self {
        Self { type_: type_.into(), status, last_transition_time: Some(at), ..Self::default() }
    }

    /// A one-word reason for the last transition.
    pub fn reason(&self) -> Option<&str> {
        self.detail.as_ref().and_then(|d| d.0.as_deref())
    }

    /// A human-readable message about the last transition.
    pub fn message(&self) -> Option<&str> {
        self.detail.as_ref().and_then(|d| d.1.as_deref())
    }

    /// Sets the reason and message.
    pub fn set_detail(&mut self, reason: Option<Text>, message: Option<Text>) {
        self.detail = (reason.is_some() || message.is_some()).then(|| Box::new((reason, message)));
    }
}

model! {
    /// The manifest form of a [`PodCondition`], field for field as in Kubernetes.
    pub struct PodConditionFields {
        #[serde(rename = "type")]
        pub type_: Text,
        pub status: ConditionStatus,
        pub last_probe_time: Option<Time>,
        pub last_transition_time: Option<Time>,
        pub reason: Option<Text>,
        pub message: Option<Text>,
    }
}

impl From<PodConditionFields> for PodCondition {
    fn from(f: PodConditionFields) -> Self {
        let mut c = PodCondition {
            type_: f.type_,
            status: f.status,
            last_probe_time: f.last_probe_time,
            last_transition_time: f.last_transition_time,
            detail: None,
        };
        c.set_detail(f.reason, f.message);
        c
    }
}

impl From<PodCondition> for PodConditionFields {
    fn from(c: PodCondition) -> Self {
        let (reason, message) = c.detail.map(|d| *d).unwrap_or_default();
        PodConditionFields {
            type_: c.type_,
            status: c.status,
            last_probe_time: c.last_probe_time,
            last_transition_time: c.last_transition_time,
            reason,
            message,
        }
    }
}

model! {
    /// The state of one container.
    pub struct ContainerStatus {
        pub name: Text,
        pub state: ContainerState,
        pub last_state: ContainerState,
        pub ready: bool,
        pub restart_count: i32,
        pub image: Text,
        #[serde(rename = "containerID")]
        pub container_id: Option<Text>,
        pub started: Option<bool>,
    }
}

model! {
    /// At most one of the three is set. The rarer two are boxed: a pod's status holds two of
    /// these per container, and inline they would triple its size.
    pub struct ContainerState {
        pub waiting: Option<Box<ContainerStateWaiting>>,
        pub running: Option<ContainerStateRunning>,
        pub terminated: Option<Box<ContainerStateTerminated>>,
    }
}

model! {
    /// Not yet running (pulling, back-off, ...).
    pub struct ContainerStateWaiting {
        pub reason: Option<Text>,
        pub message: Option<Text>,
    }
}

model! {
    /// Running since `startedAt`.
    pub struct ContainerStateRunning {
        pub started_at: Option<Time>,
    }
}

model! {
    /// Exited.
    pub struct ContainerStateTerminated {
        pub exit_code: i32,
        pub signal: Option<i32>,
        pub reason: Option<Text>,
        pub message: Option<Text>,
        pub started_at: Option<Time>,
        pub finished_at: Option<Time>,
    }
}

// ---------------------------------------------------------------------------------------------
// Service and Endpoints

model! {
    /// A stable address for the ready pods a selector picks.
    pub struct Service {
        pub metadata: ObjectMeta,
        pub spec: ServiceSpec,
        pub status: ServiceStatus,
    }
}

model! {
    /// Service spec.
    pub struct ServiceSpec {
        /// `ClusterIP` (default) or `NodePort`.
        #[serde(rename = "type")]
        pub type_: Option<ServiceType>,
        pub selector: StrMap,
        [merge "port"] pub ports: Vec<ServicePort>,
        /// A virtual IPv4 address, `None` for a headless service, or empty to have one chosen.
        #[serde(rename = "clusterIP")]
        pub cluster_ip: Option<Text>,
    }
}

string_enum! {
    /// How a service is exposed.
    pub enum ServiceType {
        ClusterIp = "ClusterIP",
        NodePort = "NodePort",
    }
}

model! {
    /// A port of a service.
    pub struct ServicePort {
        pub name: Option<Text>,
        pub protocol: Option<Protocol>,
        pub port: i32,
        /// The pods' port, by number or container port name; defaults to `port`.
        pub target_port: Option<IntOrString>,
        /// For `NodePort` services, in 30000-32767.
        pub node_port: Option<i32>,
    }
}

model! {
    /// Service status (no fields yet).
    pub struct ServiceStatus {}
}

model! {
    /// The addresses behind a service.
    pub struct Endpoints {
        pub metadata: ObjectMeta,
        pub subsets: Vec<EndpointSubset>,
    }
}

model! {
    /// A set of addresses that share ports.
    pub struct EndpointSubset {
        pub addresses: Vec<EndpointAddress>,
        pub not_ready_addresses: Vec<EndpointAddress>,
        pub ports: Vec<EndpointPort>,
    }
}

model! {
    /// One backend address.
    pub struct EndpointAddress {
        pub ip: Text,
        pub hostname: Option<Text>,
        pub node_name: Option<Text>,
        pub target_ref: Option<ObjectReference>,
    }
}

model! {
    /// One backend port.
    pub struct EndpointPort {
        pub name: Option<Text>,
        pub port: i32,
        pub protocol: Option<Protocol>,
    }
}

// ---------------------------------------------------------------------------------------------
// Event

model! {
    /// A report of something that happened to an object.
    pub struct Event {
        pub metadata: ObjectMeta,
        pub involved_object: ObjectReference,
        pub reason: Option<Text>,
        pub message: Option<Text>,
        /// `Normal` (default) or `Warning`.
        #[serde(rename = "type")]
        pub type_: Option<Text>,
        pub count: Option<i32>,
        pub first_timestamp: Option<Time>,
        pub last_timestamp: Option<Time>,
        pub source: EventSource,
    }
}

model! {
    /// Who reported an event.
    pub struct EventSource {
        pub component: Option<Text>,
        pub host: Option<Text>,
    }
}

// ---------------------------------------------------------------------------------------------
// ConfigMap and Secret

model! {
    /// Configuration for pods: keys and values, as environment variables or files.
    pub struct ConfigMap {
        pub metadata: ObjectMeta,
        /// Text values (UTF-8).
        pub data: StrMap,
        /// Binary values, base64 in manifests and as stored.
        pub binary_data: StrMap,
        /// Once true, `data` and `binaryData` never change (and it stays true).
        pub immutable: Option<bool>,
    }
}

model! {
    /// Sensitive configuration: values kept base64 (`data`), put on a tmpfs when mounted.
    pub struct Secret {
        pub metadata: ObjectMeta,
        /// Values, base64.
        pub data: StrMap,
        /// Values as text, write-only: merged into `data` when written, never stored.
        pub string_data: StrMap,
        /// `Opaque` by default.
        #[serde(rename = "type")]
        pub type_: Option<Text>,
        /// Once true, `data` never changes (and it stays true).
        pub immutable: Option<bool>,
    }
}
