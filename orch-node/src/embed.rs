//! An agent with everything it needs, for a binary to run: `orch-node` itself, and orchd's
//! development mode (control plane and agents in one process). The binary must call
//! [`crate::run_helpers_if_called`] first thing in `main`, before any thread starts: the
//! shims and exec helpers are that binary ([`Options::exe`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use orch_core::agent::{Backoff, Settings};
use orch_core::core_v1::{ResourceList, Taint};
use orch_core::quantity::Quantity;

use crate::agent::{AgentConfig, run};
use crate::cgroups::Cgroups;
use crate::network::{DEFAULT_CNI_BIN_DIRS, Network, NetworkConfig};
use crate::process::{ProcessConfig, ProcessRuntime};

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

/// What an agent is and how it runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The node's name.
    pub node: String,
    /// The node's address.
    pub node_ip: String,
    /// The control plane's API addresses.
    pub servers: Vec<String>,
    /// Where its pods' directories and network data go.
    pub data_dir: PathBuf,
    /// The node's capacity.
    pub capacity: ResourceList,
    /// Labels and taints it registers with.
    pub labels: BTreeMap<String, String>,
    /// See `labels`.
    pub taints: Vec<Taint>,
    /// How often it heartbeats.
    pub heartbeat: Duration,
    /// The restart back-off (also the sandbox back-off).
    pub backoff: Backoff,
    /// Refuse containers that name an image.
    pub strict_images: bool,
    /// The size at which a container's log is rotated, and how many files a run keeps.
    pub log_max_bytes: u64,
    /// See `log_max_bytes`.
    pub log_files: u32,
    /// Where the cgroup hierarchies are mounted.
    pub cgroup_root: PathBuf,
    /// Pods share the host's network.
    pub host_network: bool,
    /// Where the CNI plugins are looked for.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The cluster's pod range (orchd's `--cluster-cidr`).
    pub cluster_cidr: String,
    /// The node's pod CIDR, instead of the control plane's allocation.
    pub pod_cidr: Option<String>,
    /// The agent's bridge (default: `orch` and a hash of the node name).
    pub bridge: Option<String>,
    /// The binary that serves as shim and exec helper.
    pub exe: PathBuf,
    /// Directories appended to the containers' default `PATH`.
    pub extra_path: Option<String>,
    /// Where the agent's endpoint for logs and exec listens (default `<node-ip>:10250`; port
    /// 0 picks a free one).
    pub listen: Option<std::net::SocketAddr>,
}

impl Options {
    /// An agent for node `node` of the control plane at `servers`, its data in `data_dir`,
    /// with this host's capacity and the kubelet's defaults; this binary as its helpers.
    ///
    /// # Errors
    /// This binary's path cannot be found.
    pub fn new(node: &str, servers: Vec<String>, data_dir: PathBuf) -> Result<Self, StartError> {
        Ok(Self {
            node: node.to_owned(),
            node_ip: "127.0.0.1".to_owned(),
            servers,
            data_dir,
            capacity: ResourceList {
                cpu: Some(Quantity::from_units(crate::host::cores())),
                memory: Some(Quantity::from_bytes(crate::host::memory_bytes().unwrap_or(1 << 30))),
                pods: Some(Quantity::from_units(crate::host::DEFAULT_MAX_PODS)),
                ephemeral_storage: None,
            },
            labels: BTreeMap::new(),
            taints: Vec::new(),
            heartbeat: Duration::from_secs(10),
            backoff: Backoff::RESTART,
            strict_images: false,
            log_max_bytes: 10 << 20,
            log_files: 5,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            host_network: false,
            cni_bin_dirs: DEFAULT_CNI_BIN_DIRS.iter().map(PathBuf::from).collect(),
            cluster_cidr: "10.244.0.0/16".to_owned(),
            pod_cidr: None,
            bridge: None,
            exe: std::env::current_exe().map_err(|e| StartError(format!("finding this binary: {e}")))?,
            extra_path: None,
            listen: None,
        })
    }
}

/// The default bridge of node `node`: `orch` and 8 hex digits of a hash of its name (15
/// bytes at most, as Linux wants).
pub fn default_bridge(node: &str) -> String {
    let hash = node.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("orch{hash:08x}")
}

/// Runs the agent until `shutdown` completes. Its pods keep running after (their shims own
/// them); the next agent with the same data directory adopts them.
///
/// # Errors
/// A bad setting, or the data directory cannot be used.
pub async fn run_agent(options: Options, shutdown: impl std::future::Future<Output = ()>) -> Result<(), StartError> {
    let node = options.node.clone();
    for (what, cidr) in [("cluster CIDR", Some(&options.cluster_cidr)), ("pod CIDR", options.pod_cidr.as_ref())] {
        if let Some(cidr) = cidr {
            orch_core::nodeipam::Cidr::parse(cidr).map_err(|e| StartError(format!("{what}: {e}")))?;
        }
    }
    let data_dir = std::path::absolute(&options.data_dir).map_err(|e| StartError(format!("data directory: {e}")))?;
    let cgroups = match Cgroups::detect(&options.cgroup_root, &node) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(%node, "no cgroups: containers run without resource limits ({e})");
            None
        }
    };
    tracing::warn!(
        %node,
        "this agent runs each container's command from this host's filesystem: images are not pulled{}",
        if options.strict_images { "; containers that name one are refused (strict images)" } else { "" }
    );
    let network = if options.host_network {
        tracing::warn!(%node, "pods share the host's network (asked for)");
        None
    } else {
        let config = NetworkConfig {
            cni_bin_dirs: options.cni_bin_dirs.clone(),
            bridge: options.bridge.clone().unwrap_or_else(|| default_bridge(&node)),
            data_dir: data_dir.join("network"),
            node: node.clone(),
            cluster_cidr: options.cluster_cidr.clone(),
        };
        match Network::detect(config) {
            Ok(n) => Some(Arc::new(n)),
            Err(e) => {
                tracing::warn!(%node, "pods share the host's network: no pod network ({e})");
                None
            }
        }
    };
    let listen = match options.listen {
        Some(addr) => addr,
        None => format!("{}:10250", options.node_ip)
            .parse()
            .map_err(|e| StartError(format!("node address {:?}: {e}", options.node_ip)))?,
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StartError(format!("the agent endpoint cannot listen on {listen}: {e}")))?;
    let endpoint = listener.local_addr().map_err(|e| StartError(e.to_string()))?.to_string();
    let config = AgentConfig {
        core: Settings {
            node: node.clone(),
            host_ip: Some(options.node_ip.clone()),
            restart_backoff: options.backoff,
            sandbox_backoff: options.backoff,
            strict_images: options.strict_images,
        },
        node_ip: options.node_ip.clone(),
        capacity: options.capacity.clone(),
        labels: options.labels.clone(),
        taints: options.taints.clone(),
        heartbeat: options.heartbeat,
        network: network.clone(),
        pod_cidr: options.pod_cidr.clone(),
        endpoint: Some(endpoint.clone()),
        node_info: crate::host::node_info(),
        clock: crate::agent::Clock::system(),
        data_dir: Some(data_dir.clone()),
    };
    let (events, events_rx) = tokio::sync::mpsc::channel(4_096);
    let process = ProcessConfig {
        root: data_dir.join("pods"),
        exe: options.exe.clone(),
        cgroups,
        log_max_bytes: options.log_max_bytes,
        log_files: options.log_files,
        network,
        extra_path: options.extra_path.clone(),
    };
    let runtime = Arc::new(ProcessRuntime::new(process, events).map_err(StartError)?);
    let client = orch_api::Client::new(options.servers.iter().map(String::as_str))
        .map_err(|e| StartError(format!("control plane addresses: {e}")))?;
    tracing::info!(%node, servers = ?options.servers, %endpoint, "node agent starting");
    let server = tokio::spawn(crate::server::serve(listener, Arc::clone(&runtime)));
    run(config, client, runtime, events_rx, shutdown).await;
    server.abort();
    Ok(())
}
