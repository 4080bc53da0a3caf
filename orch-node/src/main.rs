//! `orch-node`: the node agent. With no flags it serves this host as a node of the control
//! plane at 127.0.0.1:7100, named after the host, its pods under `./orch-node-data`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use orch_core::agent::Backoff;
use orch_core::core_v1::{Taint, TaintEffect};
use orch_core::quantity::Quantity;
use orch_node::embed::{Options, run_agent};

/// The orch node agent.
#[derive(Debug, Parser)]
#[command(name = "orch-node", version, about)]
struct Args {
    /// The control plane's API addresses, comma-separated.
    #[arg(long, default_value = "127.0.0.1:7100", env = "ORCH_SERVER")]
    server: String,
    /// The node's name [default: the host name].
    #[arg(long)]
    node_name: Option<String>,
    /// The node's address: its InternalIP, and the hostIP of its pods.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: String,
    /// Where the pods' directories, logs and state live.
    #[arg(long, default_value = "orch-node-data")]
    data_dir: PathBuf,
    /// The node's cores as a quantity [default: the host's].
    #[arg(long)]
    cpu: Option<String>,
    /// The node's memory as a quantity [default: the host's].
    #[arg(long)]
    memory: Option<String>,
    /// The most pods the node takes.
    #[arg(long, default_value_t = orch_node::host::DEFAULT_MAX_PODS)]
    max_pods: i64,
    /// Labels of the node: KEY=VALUE,...
    #[arg(long, default_value = "")]
    node_labels: String,
    /// Taints of the node: KEY[=VALUE]:EFFECT,...
    #[arg(long, default_value = "")]
    register_with_taints: String,
    /// How often the agent heartbeats, in ms.
    #[arg(long, default_value_t = 10_000)]
    heartbeat_ms: u64,
    /// The first delay of a container's restart back-off, in ms (then doubling).
    #[arg(long, default_value_t = 10_000)]
    backoff_initial_ms: i64,
    /// The longest restart back-off, in ms.
    #[arg(long, default_value_t = 300_000)]
    backoff_max_ms: i64,
    /// Refuse containers that name an image (this agent runs commands from the host's
    /// filesystem and pulls nothing); by default they run, with a Warning event.
    #[arg(long)]
    strict_images: bool,
    /// The size at which a container's log is rotated, in bytes.
    #[arg(long, default_value_t = 10 << 20)]
    container_log_max_bytes: u64,
    /// How many log files a container run keeps.
    #[arg(long, default_value_t = 5)]
    container_log_max_files: u32,
    /// Where the cgroup hierarchies are mounted.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// Run pods on the host's network instead of giving each its own (no CNI).
    #[arg(long)]
    host_network: bool,
    /// Where the CNI plugins are looked for, comma-separated.
    #[arg(long, default_value = "/usr/lib/cni,/opt/cni/bin")]
    cni_bin_dir: String,
    /// The cluster's pod range (a blackhole route: a packet for a pod address no node has is
    /// dropped here); the same as orchd's --cluster-cidr.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// This node's pod CIDR [default: the one the control plane allocates].
    #[arg(long)]
    pod_cidr: Option<String>,
    /// This agent's bridge [default: orch followed by a hash of the node name].
    #[arg(long)]
    bridge: Option<String>,
    /// Where the agent's endpoint for `orchctl logs` and `exec` listens [default:
    /// <node-ip>:10250]; registered in the Node's `orch.dev/agent-endpoint` annotation.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// error, warn, info, debug, trace, or a tracing filter.
    #[arg(long, default_value = "info", env = "ORCH_LOG")]
    log_level: String,
}

fn labels(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').with_context(|| format!("--node-labels: {kv:?} is not KEY=VALUE"))?;
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

fn taints(text: &str) -> anyhow::Result<Vec<Taint>> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|t| {
            let (kv, effect) = t
                .rsplit_once(':')
                .with_context(|| format!("--register-with-taints: {t:?} is not KEY[=VALUE]:EFFECT"))?;
            let effect = match effect {
                "NoSchedule" => TaintEffect::NoSchedule,
                "PreferNoSchedule" => TaintEffect::PreferNoSchedule,
                "NoExecute" => TaintEffect::NoExecute,
                other => {
                    bail!("--register-with-taints: effect {other:?} is not NoSchedule, PreferNoSchedule or NoExecute")
                }
            };
            let (key, value) = match kv.split_once('=') {
                Some((k, v)) => (k, Some(v.into())),
                None => (kv, None),
            };
            Ok(Taint { key: key.into(), value, effect: Some(effect), time_added: None })
        })
        .collect()
}

fn quantity(flag: &str, text: &str) -> anyhow::Result<Quantity> {
    text.parse().map_err(|e| anyhow::anyhow!("--{flag}: {text:?}: {e}"))
}

fn main() -> anyhow::Result<()> {
    orch_node::run_helpers_if_called();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&args.log_level).context("--log-level")?)
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let node = args.node_name.clone().unwrap_or_else(orch_node::host::hostname);
    let mut options =
        Options::new(&node, args.server.split(',').map(|s| s.trim().to_owned()).collect(), args.data_dir.clone())?;
    if let Some(c) = &args.cpu {
        options.capacity.cpu = Some(quantity("cpu", c)?);
    }
    if let Some(m) = &args.memory {
        options.capacity.memory = Some(quantity("memory", m)?);
    }
    if args.max_pods < 1 || args.max_pods > i64::try_from(orch_core::agent::AGENT_PODS_MAX).unwrap_or(i64::MAX) {
        bail!("--max-pods must be between 1 and {}", orch_core::agent::AGENT_PODS_MAX);
    }
    options.capacity.pods = Some(Quantity::from_units(args.max_pods));
    options.node_ip = args.node_ip.clone();
    options.labels = labels(&args.node_labels)?;
    options.taints = taints(&args.register_with_taints)?;
    options.heartbeat = Duration::from_millis(args.heartbeat_ms.max(1));
    options.backoff = Backoff { initial_ms: args.backoff_initial_ms, max_ms: args.backoff_max_ms };
    options.strict_images = args.strict_images;
    options.log_max_bytes = args.container_log_max_bytes;
    options.log_files = args.container_log_max_files;
    options.cgroup_root = args.cgroup_root.clone();
    options.host_network = args.host_network;
    options.cni_bin_dirs = args.cni_bin_dir.split(',').map(PathBuf::from).collect();
    options.cluster_cidr = args.cluster_cidr.clone();
    options.pod_cidr = args.pod_cidr.clone();
    options.bridge = args.bridge.clone();
    options.listen = args.listen;
    let shutdown = async {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    run_agent(options, shutdown).await?;
    tracing::info!("orch-node stopped; its pods keep running and the next agent adopts them");
    Ok(())
}
