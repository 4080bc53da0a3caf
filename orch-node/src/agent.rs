//! The agent loop: registers the node, heartbeats to the leader, lists and watches the pods
//! bound to the node, steps the pure core ([`orch_core::agent`]) with what the watch, the
//! runtime and the clock say, and carries out its actions through the runtime and the API.
//!
//! - Registration: the Node object (capacity, addresses, labels, taints, `Ready=True`) is
//!   created, or its status brought up to date when it exists; again whenever a heartbeat
//!   finds it gone (the control plane lost it, or it was deleted).
//! - Watch: a list of the node's pods, then a watch from the list's revision (resumed by the
//!   client on another server after a disconnect, from the last revision delivered); when the
//!   watch says its revision expired, a new list (pods missing from it are gone) and a new
//!   watch. So no change is missed and none is taken twice.
//! - Status: the core's writes go out concurrently (at most [`STATUS_WRITES_MAX`] at once; the
//!   server groups concurrent writes into one log entry), each the pod's status under its uid
//!   alone; a write whose fate is unknown is made again after [`RETRY`].
//! - Deletes (the grace-0 delete of a stopped pod) are made under the pod's uid, and retried
//!   until they land or the pod is gone. Events are best effort: at most
//!   [`EVENT_WRITES_MAX`] in flight, the rest dropped and counted in the log.
//! - A lost connection to the control plane never stops a running pod: the core only acts on
//!   what the watch says, and the watch says nothing while it is down.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use orch_api::{Client, Error as ApiError, WatchItem};
use orch_core::agent::{Action, Agent, RuntimeEvent, Settings, StatusWrite, Written};
use orch_core::core_v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, Pod, ResourceList,
    Taint,
};
use orch_core::ids::Uid;
use orch_core::meta::{ConditionStatus, ObjectMeta};
use orch_core::object::{Kind, Object, ObjectKey};
use orch_core::quantity::Quantity;
use orch_core::time::Time;
use orch_core::watch::EventType;
use tokio::sync::{Semaphore, mpsc};

use crate::network::Network;
use crate::runtime::Runtime;

/// The most status writes in flight at once.
pub const STATUS_WRITES_MAX: usize = 64;
/// The most event writes in flight at once; more are dropped.
pub const EVENT_WRITES_MAX: usize = 16;
/// The pause before a failed write or call is tried again.
pub const RETRY: Duration = Duration::from_secs(1);
/// How many times a failed update of a pod's volumes is tried.
const VOLUME_UPDATE_TRIES: usize = 30;
/// The most inputs waiting for the loop.
const INPUTS_MAX: usize = 4_096;

/// The agent's settings.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The core's settings (node name, back-offs, strict images, host address).
    pub core: Settings,
    /// The node's address (its `InternalIP`, each pod's `hostIP`).
    pub node_ip: String,
    /// The node's cores, memory and pods.
    pub capacity: ResourceList,
    /// Labels the node gets at registration (beside `kubernetes.io/hostname` and
    /// `kubernetes.io/os`).
    pub labels: BTreeMap<String, String>,
    /// Taints the node gets at registration.
    pub taints: Vec<Taint>,
    /// How often it heartbeats.
    pub heartbeat: Duration,
    /// The pod network, if pods have their own (its pod CIDR and routes follow the nodes).
    pub network: Option<Arc<Network>>,
    /// The node's pod CIDR, when given rather than allocated by the control plane.
    pub pod_cidr: Option<String>,
    /// The agent's endpoint for logs and exec (`host:port`), registered in the Node's
    /// [`crate::server::ENDPOINT_ANNOTATION`].
    pub endpoint: Option<String>,
    /// What the node runs (its `status.nodeInfo`; [`crate::host::node_info`] on a real host).
    pub node_info: orch_core::core_v1::NodeSystemInfo,
    /// The agent's clock ([`Clock::system`] but in a simulation).
    pub clock: Clock,
    /// Its data directory, whose disk its `DiskPressure` condition watches (none: not
    /// reported).
    pub data_dir: Option<std::path::PathBuf>,
}

/// The time in ms the agent's core and its timestamps go by.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl Clock {
    /// [`now_ms`]: the wall clock at start plus a monotonic clock since.
    pub fn system() -> Self {
        Self(Arc::new(now_ms))
    }

    /// A clock that reads `f` (a simulation's).
    pub fn from_fn(f: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// The time now, in ms since the epoch.
    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

/// The core's time in ms: the wall clock when the agent started plus a monotonic clock since,
/// so a step of the wall clock (NTP) neither fires every timer at once nor holds them back;
/// the statuses' timestamps are near the wall clock's.
pub fn now_ms() -> i64 {
    static START: std::sync::OnceLock<(std::time::Instant, i64)> = std::sync::OnceLock::new();
    let (at, wall) = START.get_or_init(|| {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        (std::time::Instant::now(), wall)
    });
    wall.saturating_add(i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX))
}

/// What reaches the loop.
enum Input {
    Runtime(RuntimeEvent),
    Written(Uid, Written),
    Listed(Vec<Arc<Pod>>, u64),
    Events(u64, Vec<orch_core::watch::WatchEvent>),
    /// A list of every ConfigMap or Secret, then changes to them.
    ConfigsListed(Kind, Vec<Object>),
    ConfigEvents(Vec<orch_core::watch::WatchEvent>),
}

/// The Node object this agent registers.
pub fn node_object(config: &AgentConfig) -> Node {
    let name = config.core.node.as_str();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".into(), name.into());
    labels.insert("kubernetes.io/os".into(), "linux".into());
    labels.insert(
        "kubernetes.io/arch".into(),
        std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
    );
    labels.extend(config.labels.clone());
    let now = Time::from_millis(config.clock.now());
    Node {
        metadata: ObjectMeta {
            name: name.into(),
            labels: labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
            annotations: config.endpoint.iter().map(|e| (crate::server::ENDPOINT_ANNOTATION, e.as_str())).collect(),
            ..ObjectMeta::default()
        },
        spec: NodeSpec {
            taints: config.taints.clone(),
            pod_cidr: config.pod_cidr.as_deref().map(Into::into),
            ..NodeSpec::default()
        },
        status: NodeStatus {
            capacity: config.capacity.clone(),
            allocatable: config.capacity.clone(),
            addresses: vec![
                NodeAddress { type_: "InternalIP".into(), address: config.node_ip.as_str().into() },
                NodeAddress { type_: "Hostname".into(), address: name.into() },
            ],
            conditions: vec![NodeCondition {
                type_: "Ready".into(),
                status: ConditionStatus::True,
                last_heartbeat_time: Some(now),
                last_transition_time: Some(now),
                reason: Some("KubeletReady".into()),
                message: Some("orch-node is posting ready status".into()),
            }],
            node_info: Some(Box::new(config.node_info.clone())),
            daemon_endpoints: config
                .endpoint
                .as_deref()
                .and_then(endpoint_port)
                .map(|port| NodeDaemonEndpoints { kubelet_endpoint: DaemonEndpoint { port } }),
        },
    }
}

/// The port of an endpoint `host:port`.
fn endpoint_port(endpoint: &str) -> Option<i32> {
    endpoint.rsplit_once(':')?.1.parse().ok()
}

/// Registers the node (creates it, or brings its status up to date), retrying until done.
async fn register(client: &Client, config: &AgentConfig) {
    let node = node_object(config);
    loop {
        let result = match client.create(&Object::from(node.clone())).await {
            Ok(_) => Ok(()),
            Err(ApiError::AlreadyExists(_)) => {
                let key = ObjectKey::new(Kind::Node, "", &config.core.node);
                match client.get(&key).await {
                    Ok((Object::Node(old), _)) => {
                        let mut n = (*old).clone();
                        n.status.capacity = node.status.capacity.clone();
                        n.status.allocatable = node.status.allocatable.clone();
                        n.status.addresses = node.status.addresses.clone();
                        n.status.node_info = node.status.node_info.clone();
                        n.status.daemon_endpoints = node.status.daemon_endpoints.clone();
                        // Ready again, as this agent says; the lifecycle controller's Unknown goes.
                        n.status.conditions.retain(|c| c.type_ != "Ready");
                        n.status.conditions.extend(node.status.conditions.clone());
                        let result = client.update_status(&Object::from(n.clone())).await;
                        // The endpoint may have moved (a new port): its annotation follows.
                        let endpoint = crate::server::ENDPOINT_ANNOTATION;
                        match (result, &config.endpoint) {
                            (Ok(_), Some(e)) if n.metadata.annotations.get(endpoint) != Some(e.as_str()) => {
                                // Under the resourceVersion just read: a conflict registers again.
                                match client.get(&key).await {
                                    Ok((Object::Node(now), _)) => {
                                        let mut m = (*now).clone();
                                        m.metadata.annotations.insert(endpoint, e.as_str());
                                        client.update(&Object::from(m)).await.map(|_| ())
                                    }
                                    Ok(_) => Ok(()),
                                    Err(e) => Err(e),
                                }
                            }
                            (result, _) => result.map(|_| ()),
                        }
                    }
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!(node = %config.core.node, "node registered");
                return;
            }
            Err(e) => {
                tracing::warn!(node = %config.core.node, error = %e, "registering the node failed; trying again");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Lists and watches the ConfigMaps or Secrets (`kind`) of every namespace for ever, feeding
/// the loop (the core keeps them for the pods that take from them).
async fn follow_configs(client: Client, kind: Kind, inputs: mpsc::Sender<Input>) {
    loop {
        let (objects, revision) = match client.list(kind, None, "", None).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(error = %e, kind = kind.plural(), "listing failed; trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if inputs.send(Input::ConfigsListed(kind, objects)).await.is_err() {
            return;
        }
        let mut stream = client.watch(revision, kind.as_str(), "", "", "");
        while let Some(item) = stream.next().await {
            match item {
                Ok(WatchItem::Events { events, .. }) => {
                    if inputs.send(Input::ConfigEvents(events)).await.is_err() {
                        return;
                    }
                }
                Ok(WatchItem::Progress(_)) => {}
                Err(e) => {
                    tracing::info!(error = %e, kind = kind.plural(), "the watch ended; listing again");
                    if !matches!(e, ApiError::Expired(_)) {
                        tokio::time::sleep(RETRY).await;
                    }
                    break;
                }
            }
        }
    }
}

/// Lists and watches the node's pods for ever, feeding the loop.
async fn follow(client: Client, node: String, inputs: mpsc::Sender<Input>) {
    loop {
        let (objects, revision) = match client.list(Kind::Pod, None, "", Some(&node)).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(error = %e, "listing the node's pods failed; trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let pods = objects.into_iter().filter_map(|o| if let Object::Pod(p) = o { Some(p) } else { None }).collect();
        if inputs.send(Input::Listed(pods, revision)).await.is_err() {
            return;
        }
        let mut stream = client.watch(revision, "Pod", "", "", &node);
        while let Some(item) = stream.next().await {
            match item {
                Ok(WatchItem::Events { revision, events }) => {
                    if inputs.send(Input::Events(revision, events)).await.is_err() {
                        return;
                    }
                }
                Ok(WatchItem::Progress(_)) => {}
                Err(ApiError::Expired(_)) => {
                    tracing::info!("the pod watch's revision expired; listing again");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the pod watch failed; listing again");
                    tokio::time::sleep(RETRY).await;
                    break;
                }
            }
        }
    }
}

/// Lists and watches the nodes for ever: this node's pod CIDR (allocated by the control
/// plane) goes to the network, and the other nodes' pod CIDRs become routes via their
/// addresses.
async fn follow_nodes(client: Client, node: String, node_ip: String, network: Arc<Network>, fixed_cidr: bool) {
    let mut installed: Vec<(String, String)> = Vec::new();
    loop {
        let (objects, revision) = match client.list(Kind::Node, None, "", None).await {
            Ok(listed) => listed,
            Err(e) => {
                tracing::warn!(error = %e, "listing the nodes failed; trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let mut nodes: BTreeMap<String, Arc<Node>> = objects
            .into_iter()
            .filter_map(|o| if let Object::Node(n) = o { Some((n.metadata.name.to_string(), n)) } else { None })
            .collect();
        let mut stream = client.watch(revision, "Node", "", "", "");
        loop {
            let routes: Vec<(String, String)> = nodes
                .values()
                .filter(|n| n.metadata.name.as_str() != node)
                .filter_map(|n| {
                    let cidr = n.spec.pod_cidr.as_ref()?.to_string();
                    let ip = n.status.addresses.iter().find(|a| a.type_ == "InternalIP")?.address.to_string();
                    // A node on this same host (the development mode's agents): its bridge is
                    // here already, and a route via this host's own address would replace it.
                    (ip != node_ip).then_some((cidr, ip))
                })
                .collect();
            if !fixed_cidr
                && let Some(cidr) = nodes.get(&node).and_then(|n| n.spec.pod_cidr.as_ref())
                && network.pod_cidr().as_deref() != Some(cidr.as_str())
            {
                tracing::info!(%cidr, "this node's pod CIDR");
                network.set_pod_cidr(cidr);
            }
            let net = Arc::clone(&network);
            installed = tokio::task::spawn_blocking(move || {
                net.sync_routes(&routes, &mut installed);
                installed
            })
            .await
            .unwrap_or_default();
            match stream.next().await {
                Some(Ok(WatchItem::Events { events, .. })) => {
                    for e in events {
                        let Object::Node(n) = e.object else { continue };
                        if e.event_type == EventType::Deleted {
                            nodes.remove(n.metadata.name.as_str());
                        } else {
                            nodes.insert(n.metadata.name.to_string(), n);
                        }
                    }
                }
                Some(Ok(WatchItem::Progress(_))) => {}
                Some(Err(e)) => {
                    tracing::info!(error = %e, "the node watch ended; listing again");
                    tokio::time::sleep(RETRY).await;
                    break;
                }
                None => break,
            }
        }
    }
}

/// The most a node's disk may be full before its `DiskPressure` is True: under 10% free, the
/// kubelet's default eviction threshold (`nodefs.available<10%`).
pub const DISK_PRESSURE_FREE_PERCENT: u64 = 10;
/// The most bytes of a Node condition's message the agent writes.
pub const CONDITION_MESSAGE_BYTES_MAX: usize = 1_024;

/// The Node conditions an agent reports beside `Ready`, from what it sees: its data
/// directory's disk (free and total bytes, if it could be read) and why pods cannot get a
/// network, if they cannot (none for an agent on the host's network). Kubernetes' types,
/// reasons and messages.
pub fn node_conditions(disk: Option<(u64, u64)>, network: Option<Option<String>>, now: Time) -> Vec<NodeCondition> {
    let condition = |type_: &str, on: bool, reason: &str, message: String| NodeCondition {
        type_: type_.into(),
        status: if on { ConditionStatus::True } else { ConditionStatus::False },
        last_heartbeat_time: Some(now),
        last_transition_time: Some(now),
        reason: Some(reason.into()),
        message: Some(message.into()),
    };
    let mut out = Vec::new();
    if let Some((free, total)) = disk {
        let pressure = total > 0 && free.saturating_mul(100) < total.saturating_mul(DISK_PRESSURE_FREE_PERCENT);
        out.push(if pressure {
            condition(
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                format!("kubelet has disk pressure: {free} of {total} bytes free"),
            )
        } else {
            condition("DiskPressure", false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure".to_owned())
        });
    }
    if let Some(failure) = network {
        out.push(match failure {
            // A plugin's error may be long: a condition's message is cut to a bound.
            Some(why) => condition(
                "NetworkUnavailable",
                true,
                "NetworkPluginNotReady",
                orch_core::text::cut(&why, CONDITION_MESSAGE_BYTES_MAX).to_owned(),
            ),
            None => condition("NetworkUnavailable", false, "NetworkPluginReady", "the pod network is ready".to_owned()),
        });
    }
    out
}

/// Free and total bytes of the filesystem of `path`.
fn disk_of(path: &std::path::Path) -> Option<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let block = s.fragment_size();
    Some((s.blocks_available().saturating_mul(block), s.blocks().saturating_mul(block)))
}

/// Writes the Node's conditions beside `Ready` when their status or reason changed from
/// those last written (a transition keeps its time only while the status holds).
async fn report_conditions(client: &Client, config: &AgentConfig, written: &mut Vec<NodeCondition>) {
    let disk = config.data_dir.as_deref().and_then(disk_of);
    let network = config.network.as_ref().map(|n| n.unavailable());
    let now = node_conditions(disk, network, Time::from_millis(config.clock.now()));
    let same = |a: &[NodeCondition], b: &[NodeCondition]| {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| (&x.type_, x.status, &x.reason) == (&y.type_, y.status, &y.reason))
    };
    if same(&now, written) {
        return;
    }
    let key = ObjectKey::new(Kind::Node, "", &config.core.node);
    let Ok((Object::Node(node), _)) = client.get(&key).await else { return };
    let mut n = (*node).clone();
    for c in &now {
        let mut c = c.clone();
        if let Some(old) = n.status.conditions.iter().find(|o| o.type_ == c.type_)
            && old.status == c.status
        {
            c.last_transition_time = old.last_transition_time;
        }
        n.status.conditions.retain(|o| o.type_ != c.type_);
        n.status.conditions.push(c);
    }
    match client.update_status(&Object::from(n)).await {
        Ok(_) => {
            for c in now.iter().filter(|c| c.status == ConditionStatus::True) {
                tracing::warn!(condition = %c.type_, message = c.message.as_deref().unwrap_or(""), "node condition");
            }
            *written = now;
        }
        Err(e) => tracing::debug!(error = %e, "writing the node's conditions failed; trying at the next heartbeat"),
    }
}

/// Heartbeats for ever; registers the node again when the leader does not know it; reports
/// the Node's conditions beside `Ready` when they change.
async fn heartbeat(client: Client, config: AgentConfig) {
    let mut written = Vec::new();
    loop {
        report_conditions(&client, &config, &mut written).await;
        tokio::time::sleep(config.heartbeat).await;
        match client.heartbeat(&config.core.node).await {
            Ok(()) => {}
            Err(ApiError::NotFound(_)) => {
                tracing::warn!(node = %config.core.node, "the control plane does not know this node; registering it again");
                register(&client, &config).await;
                // A new Node holds none of them: written again.
                written.clear();
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Runs the agent until `shutdown` completes. Running pods keep running after it returns
/// (their shims own them); a new agent adopts them.
pub async fn run<R: Runtime>(
    config: AgentConfig,
    client: Client,
    runtime: Arc<R>,
    mut runtime_events: mpsc::Receiver<RuntimeEvent>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let clock = config.clock.clone();
    register(&client, &config).await;
    let mut agent = Agent::new(config.core.clone());
    let now = clock.now();
    for found in runtime.found().await {
        tracing::info!(pod = %found.key.name, uid = %found.uid, "adopting a pod the runtime still has");
        agent.adopt(found.key, found.uid, found.ip, found.containers, now);
    }
    let (inputs, mut input_rx) = mpsc::channel::<Input>(INPUTS_MAX);
    let follower = tokio::spawn(follow(client.clone(), config.core.node.clone(), inputs.clone()));
    let config_followers =
        [Kind::ConfigMap, Kind::Secret].map(|kind| tokio::spawn(follow_configs(client.clone(), kind, inputs.clone())));
    let mut configs_listed: BTreeSet<Kind> = BTreeSet::new();
    let beater = tokio::spawn(heartbeat(client.clone(), config.clone()));
    let node_follower = config.network.as_ref().map(|network| {
        if let Some(cidr) = &config.pod_cidr {
            network.set_pod_cidr(cidr);
        }
        tokio::spawn(follow_nodes(
            client.clone(),
            config.core.node.clone(),
            config.node_ip.clone(),
            Arc::clone(network),
            config.pod_cidr.is_some(),
        ))
    });
    let exec = Exec {
        client: client.clone(),
        runtime,
        inputs: inputs.clone(),
        status_slots: Arc::new(Semaphore::new(STATUS_WRITES_MAX)),
        event_slots: Arc::new(Semaphore::new(EVENT_WRITES_MAX)),
        host_ip: config.node_ip.clone(),
        clock: clock.clone(),
    };
    tokio::pin!(shutdown);
    loop {
        let wake = agent.next_wake().map(|at| {
            let ms = u64::try_from(at.saturating_sub(clock.now())).unwrap_or(0);
            tokio::time::Instant::now() + Duration::from_millis(ms)
        });
        let sleep =
            tokio::time::sleep_until(wake.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600)));
        // In a fixed order (not tokio's random one), so that a simulation replays.
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(event) = runtime_events.recv() => agent.runtime(event, clock.now()),
            Some(input) = input_rx.recv() => {
                let now = clock.now();
                match input {
                    Input::Runtime(event) => agent.runtime(event, now),
                    Input::Written(uid, written) => agent.status_written(uid, written),
                    Input::Listed(pods, revision) => agent.listed(&pods, revision, now),
                    Input::ConfigsListed(kind, objects) => {
                        let listed: BTreeSet<ObjectKey> = objects.iter().map(Object::key).collect();
                        for key in agent.configs().keys(kind) {
                            if !listed.contains(&key) {
                                agent.config_gone(&key, now);
                            }
                        }
                        for obj in &objects {
                            agent.config(obj, now);
                        }
                        configs_listed.insert(kind);
                        if configs_listed.len() == 2 {
                            agent.configs_synced(now);
                        }
                    }
                    Input::ConfigEvents(events) => {
                        for e in events {
                            if e.event_type == EventType::Deleted {
                                agent.config_gone(&e.object.key(), now);
                            } else {
                                agent.config(&e.object, now);
                            }
                        }
                    }
                    Input::Events(revision, events) => {
                        for e in events {
                            let Object::Pod(pod) = &e.object else { continue };
                            if e.event_type == EventType::Deleted {
                                agent.pod_gone(&orch_core::agent::pod_key(pod), now);
                            } else {
                                agent.pod(pod, revision, now);
                            }
                        }
                    }
                }
            }
            () = sleep, if wake.is_some() => agent.tick(clock.now()),
        }
        for action in agent.take_actions() {
            exec.act(action, &agent);
        }
        for write in agent.statuses(clock.now()) {
            exec.write_status(write);
        }
    }
    follower.abort();
    for f in config_followers {
        f.abort();
    }
    beater.abort();
    if let Some(f) = node_follower {
        f.abort();
    }
}

/// Carries out the core's actions, each in a task of its own; the answers come back as inputs.
struct Exec<R: Runtime> {
    client: Client,
    runtime: Arc<R>,
    inputs: mpsc::Sender<Input>,
    status_slots: Arc<Semaphore>,
    event_slots: Arc<Semaphore>,
    host_ip: String,
    clock: Clock,
}

impl<R: Runtime> Exec<R> {
    fn act(&self, action: Action, agent: &Agent) {
        let rt = Arc::clone(&self.runtime);
        match action {
            Action::CreateSandbox { uid, pod } => {
                let inputs = self.inputs.clone();
                tokio::spawn(async move {
                    let event = match rt.create_sandbox(uid, pod).await {
                        Ok(ip) => RuntimeEvent::SandboxReady { uid, ip },
                        Err(message) => RuntimeEvent::SandboxFailed { uid, message },
                    };
                    let _ = inputs.send(Input::Runtime(event)).await;
                });
            }
            Action::StartContainer { uid, pod, container, attempt, ip, env, volumes } => {
                let inputs = self.inputs.clone();
                tokio::spawn(async move {
                    let name = pod.spec.containers.get(container).map(|c| c.name.to_string()).unwrap_or_default();
                    let event = match rt.start(uid, pod, container, attempt, ip, env, volumes).await {
                        Ok(()) => RuntimeEvent::ContainerStarted { uid, container: name, attempt },
                        Err((reason, message)) => {
                            RuntimeEvent::ContainerFailed { uid, container: name, attempt, reason, message }
                        }
                    };
                    let _ = inputs.send(Input::Runtime(event)).await;
                });
            }
            Action::Probe { uid, container, attempt, kind, probe, ip, timeout_ms } => {
                let host = ip.unwrap_or_else(|| self.host_ip.clone());
                let timeout = Duration::from_millis(u64::try_from(timeout_ms).unwrap_or(1_000));
                let spec = agent.container(uid, &container).cloned();
                let inputs = self.inputs.clone();
                tokio::spawn(async move {
                    let result = match spec {
                        Some(spec) => rt.probe(uid, &spec, &probe, &host, timeout).await,
                        None => Err("no such container".to_owned()),
                    };
                    let (ok, message) = match result {
                        Ok(()) => (true, String::new()),
                        Err(m) => (false, m),
                    };
                    let event = RuntimeEvent::ProbeDone { uid, container, attempt, kind, ok, message };
                    let _ = inputs.send(Input::Runtime(event)).await;
                });
            }
            Action::UpdateVolumes { uid, volumes } => {
                tokio::spawn(async move {
                    // Retried a while (a newer version makes this one a no-op); a start puts
                    // the newest in place anyway.
                    for _ in 0..VOLUME_UPDATE_TRIES {
                        match rt.update_volumes(uid, volumes.clone()).await {
                            Ok(()) => return,
                            Err(e) => tracing::warn!(%uid, error = %e, "updating a pod's volumes failed; trying again"),
                        }
                        tokio::time::sleep(RETRY).await;
                    }
                });
            }
            Action::Signal { uid, container, attempt, .. } => {
                tokio::spawn(async move { rt.signal(uid, &container, attempt, 15).await });
            }
            Action::KillContainer { uid, container, attempt } => {
                tokio::spawn(async move { rt.kill(uid, &container, attempt).await });
            }
            Action::KillPod { uid } => {
                tokio::spawn(async move { rt.kill_pod(uid).await });
            }
            Action::RemoveSandbox { uid } => {
                let report = self.inputs.clone();
                tokio::spawn(async move {
                    loop {
                        match rt.remove_sandbox(uid).await {
                            Ok(()) => break,
                            Err(e) => {
                                tracing::warn!(%uid, error = %e, "removing a pod sandbox failed; trying again");
                                tokio::time::sleep(RETRY).await;
                            }
                        }
                    }
                    let _ = report.send(Input::Runtime(RuntimeEvent::SandboxRemoved { uid })).await;
                });
            }
            Action::DeletePod { key, uid } => {
                let client = self.client.clone();
                tokio::spawn(async move {
                    loop {
                        match client.delete_uid(&key, uid, Some(0)).await {
                            Ok(_) | Err(ApiError::NotFound(_) | ApiError::Conflict(_)) => return,
                            Err(e) => {
                                tracing::warn!(pod = %key.name, error = %e, "deleting a stopped pod failed; trying again");
                                tokio::time::sleep(RETRY).await;
                            }
                        }
                    }
                });
            }
            Action::Event(record) => {
                let Ok(slot) = Arc::clone(&self.event_slots).try_acquire_owned() else {
                    tracing::debug!(reason = record.reason, "an event was dropped: too many in flight");
                    return;
                };
                let client = self.client.clone();
                let clock = self.clock.clone();
                tokio::spawn(async move {
                    let event = orch_core::events::first_event(record, clock.now());
                    if let Err(e) = client.create(&Object::from(event)).await
                        && !matches!(e, ApiError::AlreadyExists(_))
                    {
                        tracing::debug!(error = %e, "writing an event failed");
                    }
                    drop(slot);
                });
            }
        }
    }

    fn write_status(&self, write: StatusWrite) {
        let client = self.client.clone();
        let inputs = self.inputs.clone();
        let slots = Arc::clone(&self.status_slots);
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else { return };
            let pod = Pod {
                metadata: ObjectMeta {
                    name: write.key.name.as_str().into(),
                    namespace: Some(write.key.namespace.as_str().into()),
                    uid: Some(write.uid),
                    ..ObjectMeta::default()
                },
                status: write.status,
                ..Pod::default()
            };
            let written = match client.update_status(&Object::from(pod)).await {
                Ok(result) => Written::Applied { revision: result.revision },
                Err(ApiError::NotFound(_) | ApiError::Conflict(_)) => Written::Refused,
                // Refused by validation (a bug of this agent): written again only once the
                // status changes, not in a loop.
                Err(ApiError::Invalid(e)) => {
                    tracing::error!(pod = %write.key.name, error = %e, "the control plane refused a pod status");
                    Written::Refused
                }
                Err(e) => {
                    tracing::warn!(pod = %write.key.name, error = %e, "writing a pod's status failed; trying again");
                    tokio::time::sleep(RETRY).await;
                    Written::Unknown
                }
            };
            let _ = inputs.send(Input::Written(write.uid, written)).await;
        });
    }
}

/// Parses a quantity for the node's capacity.
///
/// # Errors
/// Not a quantity.
pub fn quantity(text: &str) -> Result<Quantity, String> {
    text.parse().map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(conditions: &[NodeCondition], type_: &str) -> Option<(ConditionStatus, String)> {
        conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status, c.reason.as_deref().unwrap_or_default().to_owned()))
    }

    #[test]
    fn node_conditions_say_when_the_disk_is_full_or_the_network_is_not_ready() {
        let now = Time::from_millis(1);
        let fine = node_conditions(Some((50, 100)), Some(None), now);
        assert_eq!(status_of(&fine, "DiskPressure"), Some((ConditionStatus::False, "KubeletHasNoDiskPressure".into())));
        assert_eq!(status_of(&fine, "NetworkUnavailable"), Some((ConditionStatus::False, "NetworkPluginReady".into())));
        let full = node_conditions(Some((9, 100)), Some(Some("CNI bridge ADD failed".into())), now);
        assert_eq!(status_of(&full, "DiskPressure"), Some((ConditionStatus::True, "KubeletHasDiskPressure".into())));
        assert_eq!(
            status_of(&full, "NetworkUnavailable"),
            Some((ConditionStatus::True, "NetworkPluginNotReady".into()))
        );
        assert_eq!(
            node_conditions(Some((10, 100)), None, now).len(),
            1,
            "exactly 10% free is no pressure; no network, no condition"
        );
        assert!(node_conditions(None, None, now).is_empty());
        let long = node_conditions(None, Some(Some("x".repeat(5_000))), now);
        assert_eq!(long[0].message.as_ref().map(|m| m.len()), Some(CONDITION_MESSAGE_BYTES_MAX), "a long error is cut");
    }
}
