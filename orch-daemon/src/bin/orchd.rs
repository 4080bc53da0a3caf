//! `orchd`: the orch control-plane daemon. With no flags, a single-node control plane with
//! its data in `./orch-data`, the API on 127.0.0.1:7100.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use orch_daemon::config::{Config, FileConfig};
use orch_daemon::server::Orchd;

/// mimalloc: glibc's malloc, with the page clearing its heap growth brings, took a fifth of the
/// CPU of a 150,000-pod deployment burst (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The orch control-plane daemon.
#[derive(Debug, Parser)]
#[command(name = "orchd", version, about)]
struct Args {
    /// A TOML file with any of the settings below (flags win over it).
    #[arg(long, env = "ORCHD_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id (>= 1) [default: 1].
    #[arg(long)]
    id: Option<u64>,
    /// Where the data lives [default: ./orch-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The API listen address [default: 127.0.0.1:7100].
    #[arg(long)]
    api_addr: Option<SocketAddr>,
    /// The Raft listen address [default: 127.0.0.1:7101].
    #[arg(long)]
    raft_addr: Option<SocketAddr>,
    /// The metrics and health listen address [default: 127.0.0.1:7102].
    #[arg(long)]
    http_addr: Option<SocketAddr>,
    /// The API address others are told (default: the listen address).
    #[arg(long)]
    advertise_api: Option<String>,
    /// The Raft address peers are told (default: the listen address).
    #[arg(long)]
    advertise_raft: Option<String>,
    /// Start a new cluster of these members: ID=RAFT_ADDR/API_ADDR,... (give the same list to
    /// each of them).
    #[arg(long)]
    initial_members: Option<String>,
    /// Join the cluster whose API answers at these addresses (comma-separated).
    #[arg(long)]
    join: Option<String>,
    /// error, warn, info, debug, trace, or a tracing filter [default: info].
    #[arg(long, env = "ORCH_LOG")]
    log_level: Option<String>,
    /// The leader's heartbeat interval in milliseconds [default: 100, or a quarter of
    /// --election-timeout-ms when only that is given and smaller].
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// The shortest election timeout in milliseconds (the longest is twice it) [default: 400,
    /// or four heartbeats when only --heartbeat-ms is given and larger].
    #[arg(long)]
    election_timeout_ms: Option<u64>,
    /// Build a snapshot after this many log entries [default: 10000].
    #[arg(long)]
    snapshot_every_entries: Option<u64>,
    /// Start a fresh data directory from this snapshot file (`orchctl snapshot save`), with
    /// the initial members (or alone) as the new cluster; ignored once the directory has data.
    #[arg(long)]
    restore: Option<PathBuf>,
    /// How often every watch gets a progress notification at the least, in milliseconds
    /// [default: 1000].
    #[arg(long)]
    watch_progress_ms: Option<u64>,
    /// How often the API server pings a client's connection, in milliseconds [default: 10000].
    #[arg(long)]
    keepalive_interval_ms: Option<u64>,
    /// How long an unanswered ping waits before the connection and its watches are dropped,
    /// in milliseconds [default: 10000].
    #[arg(long)]
    keepalive_timeout_ms: Option<u64>,
    /// Run this many simulated nodes (`sim-1`, ...) on the leader: they register, and make
    /// the pods bound to them Running and Ready and finish their deletions, but run nothing
    /// (a stand-in for node agents, for trying orch out and for tests) [default: 0].
    #[arg(long)]
    simulated_nodes: Option<usize>,
    /// How long a node must have been gone before the pods bound to it are force-deleted, in
    /// milliseconds [default: 40000, Kubernetes' pod GC quarantine].
    #[arg(long)]
    pod_gc_quarantine_ms: Option<u64>,
    /// How long a node may go without a heartbeat before it is marked `Unknown` (and, with the
    /// unreachable taint, its pods evicted after their tolerations), in milliseconds
    /// [default: 40000, Kubernetes' node-monitor-grace-period; at least 1000].
    #[arg(long)]
    node_monitor_grace_period_ms: Option<u64>,
    /// How long an event is kept after it last happened, in milliseconds, at least (it goes
    /// when it changes or at the loops' resync, every 5 minutes, after that) [default: 3600000,
    /// Kubernetes' --event-ttl].
    #[arg(long)]
    event_ttl_ms: Option<u64>,
    /// The cluster's pod range: each node without a pod CIDR gets the lowest free subnet of
    /// it [default: 10.244.0.0/16; give node agents the same --cluster-cidr].
    #[arg(long)]
    cluster_cidr: Option<String>,
    /// The prefix length of each node's pod CIDR [default: 24].
    #[arg(long)]
    node_cidr_mask_size: Option<u8>,
    /// Development mode: also run a node agent in this process (like `nomad agent -dev`), named
    /// after this host, its pods under <data-dir>/agents; the binaries built beside orchd
    /// (`orch-hello`) are on its containers' PATH.
    #[arg(long)]
    dev: bool,
    /// Development mode with this many agents in this process (`<host>-1`, `<host>-2`, ...),
    /// to try multi-node scheduling on one machine.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    dev_agents: Option<u16>,
}

impl Args {
    /// How many agents the development mode runs (0: none).
    fn dev_agents(&self) -> u16 {
        self.dev_agents.unwrap_or(u16::from(self.dev))
    }

    fn into_file_config(self) -> (Option<PathBuf>, FileConfig) {
        let flags = FileConfig {
            id: self.id,
            data_dir: self.data_dir,
            api_addr: self.api_addr,
            raft_addr: self.raft_addr,
            http_addr: self.http_addr,
            advertise_api: self.advertise_api,
            advertise_raft: self.advertise_raft,
            initial_members: self.initial_members,
            join: self.join,
            log_level: self.log_level,
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_ms: self.election_timeout_ms,
            snapshot_every_entries: self.snapshot_every_entries,
            restore: self.restore,
            watch_progress_ms: self.watch_progress_ms,
            keepalive_interval_ms: self.keepalive_interval_ms,
            keepalive_timeout_ms: self.keepalive_timeout_ms,
            simulated_nodes: self.simulated_nodes,
            pod_gc_quarantine_ms: self.pod_gc_quarantine_ms,
            node_monitor_grace_period_ms: self.node_monitor_grace_period_ms,
            event_ttl_ms: self.event_ttl_ms,
            cluster_cidr: self.cluster_cidr,
            node_cidr_mask_size: self.node_cidr_mask_size,
        };
        (self.config, flags)
    }
}

async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> anyhow::Result<()> {
    // The development mode's shims and exec helpers are this binary: they must branch off
    // before the async runtime starts its threads.
    orch_node::run_helpers_if_called();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve())
}

/// The development mode's agents, started against `orchd`'s API: each with its data under
/// `<data-dir>/agents/<i>`, the cluster range of `config`, and this binary's directory on
/// its containers' PATH. Each stops when `stop` says so.
fn start_agents(
    count: u16,
    config: &Config,
    api: String,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let host = orch_node::host::hostname();
    let exe = std::env::current_exe().context("finding this binary")?;
    let mut agents = Vec::new();
    for i in 1..=count {
        let name = if count == 1 { host.clone() } else { format!("{host}-{i}") };
        let dir = config.data_dir.join("agents").join(&name);
        let mut options = orch_node::embed::Options::new(&name, vec![api.clone()], dir)?;
        options.cluster_cidr = config.node_ipam.cluster_cidr.to_string();
        options.extra_path = exe.parent().map(|d| d.display().to_string());
        // Several agents on one address: each endpoint on a port of its own.
        options.listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let mut stop = stop.clone();
        agents.push(tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = orch_node::embed::run_agent(options, stopped).await {
                tracing::error!(node = %name, error = %e, "the node agent could not start");
            }
        }));
    }
    Ok(agents)
}

async fn serve() -> anyhow::Result<()> {
    let args = Args::parse();
    let dev_agents = args.dev_agents();
    let (file, flags) = args.into_file_config();
    let from_file = match &file {
        Some(path) => FileConfig::read(path)?,
        None => FileConfig::default(),
    };
    let config = Config::resolve(from_file.overridden_by(flags))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log_level)
                .with_context(|| format!("log-level: Invalid value: {:?}", config.log_level))?,
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let mut orchd =
        Orchd::start(config.clone(), orch_daemon::server::loops_for(&config)).await.context("orchd could not start")?;
    eprintln!(
        "orchd {} ready: node {}, API {}, metrics http://{}/metrics, data {}",
        env!("CARGO_PKG_VERSION"),
        config.id,
        orchd.api_addr(),
        orchd.http_addr(),
        config.data_dir.display()
    );
    let (stop_agents, stop) = tokio::sync::watch::channel(false);
    let agents = start_agents(dev_agents, &config, orchd.api_addr().to_string(), &stop)?;
    if dev_agents > 0 {
        eprintln!(
            "orchd development mode: {dev_agents} node agent(s) in this process, pods under {}",
            config.data_dir.join("agents").display()
        );
    }
    terminated().await;
    eprintln!("orchd: shutting down");
    // The agents first (their pods keep running, adopted at the next start), then orchd.
    let _ = stop_agents.send(true);
    for agent in agents {
        let _ = agent.await;
    }
    orchd.shutdown().await;
    Ok(())
}
