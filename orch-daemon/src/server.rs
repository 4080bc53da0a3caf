//! One running `orchd`: the control plane, its API server, the HTTP endpoints and the
//! leader-only loops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use orch_raft::ControlPlane;
use orch_raft::control_plane::SnapshotSettings;
use tokio::sync::oneshot;

use crate::api::ApiService;
use crate::config::{Config, Start};
use crate::loops::{LoopFactory, Loops};
use crate::metrics::Metrics;

/// How long a joining node keeps asking the cluster to add it.
pub const JOIN_WAIT: Duration = Duration::from_secs(60);
/// The leader-only loops orchd runs, with their default settings: the scheduler
/// ([`orch_core::scheduling`]), the ReplicaSet, Deployment and endpoints controllers
/// ([`orch_core::replicaset`], [`orch_core::deployment`], [`orch_core::endpoints`]), the
/// garbage collector ([`orch_core::gc`]) and the node lifecycle controller
/// ([`orch_core::nodelifecycle`]).
pub fn standard_loops() -> Vec<LoopFactory> {
    loops_for(&Config::default())
}

/// The loops `config` asks for: the [`standard_loops`] with its pod GC quarantine, event TTL
/// and node monitor grace period, and simulated nodes when it names some (heartbeating at a quarter of
/// the grace period, within 250 ms to 10 s).
pub fn loops_for(config: &Config) -> Vec<LoopFactory> {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let grace_ms = ms(config.node_monitor_grace_period);
    let mut loops = orch_raft::controllers::standard(
        orch_core::gc::Settings {
            orphan_quarantine_ms: ms(config.pod_gc_quarantine),
            event_ttl_ms: ms(config.event_ttl),
        },
        orch_core::nodelifecycle::Settings { grace_ms, ..Default::default() },
    );
    loops.push(orch_raft::controllers::node_ipam(config.node_ipam));
    if config.simulated_nodes > 0 {
        loops.push(orch_raft::controllers::simulated_nodes(orch_core::simnodes::Settings {
            heartbeat_ms: (grace_ms / 4).clamp(250, 10_000),
            ..orch_core::simnodes::Settings::named(config.simulated_nodes)
        }));
    }
    loops
}

/// How often the leader-only loops reconcile from the full state at the least.
pub use orch_raft::leader::LOOP_RESYNC;

/// What can stop `orchd` from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The control plane did not start.
    #[error("control plane: {0}")]
    ControlPlane(#[from] orch_raft::control_plane::Error),
    /// The snapshot to restore could not be read or restored.
    #[error("restoring {file}: {message}")]
    Restore {
        /// The file.
        file: String,
        /// Why.
        message: String,
    },
    /// Joining the cluster failed.
    #[error("joining the cluster: {0}")]
    Join(orch_api::Error),
}

/// A running daemon.
pub struct Orchd {
    cp: ControlPlane,
    metrics: Arc<Metrics>,
    api_addr: SocketAddr,
    http_addr: SocketAddr,
    stop_api: Option<oneshot::Sender<()>>,
    stop_http: Option<oneshot::Sender<()>>,
    api_task: tokio::task::JoinHandle<()>,
    http_task: tokio::task::JoinHandle<()>,
    loops: Option<Loops>,
}

fn bind(what: &'static str, addr: SocketAddr) -> Result<std::net::TcpListener, StartError> {
    let listener = std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { what, addr, source })?;
    listener.set_nonblocking(true).map_err(|source| StartError::Bind { what, addr, source })?;
    Ok(listener)
}

impl Orchd {
    /// Starts a daemon with `config` and the leader-only loops that `loops` make.
    ///
    /// # Errors
    /// When a port is taken, the data directory cannot be opened, or joining fails.
    pub async fn start(config: Config, loops: Vec<LoopFactory>) -> Result<Self, StartError> {
        let api_listener = bind("api", config.api_addr)?;
        let raft_listener = bind("raft", config.raft_addr)?;
        let http_listener = bind("http", config.http_addr)?;
        let local = |l: &std::net::TcpListener, what, addr| {
            l.local_addr().map_err(|source| StartError::Bind { what, addr, source })
        };
        let api_addr = local(&api_listener, "api", config.api_addr)?;
        let raft_addr = local(&raft_listener, "raft", config.raft_addr)?;
        let http_addr = local(&http_listener, "http", config.http_addr)?;
        let advertise_api = config.advertise_api.clone().unwrap_or_else(|| api_addr.to_string());
        let advertise_raft = config.advertise_raft.clone().unwrap_or_else(|| raft_addr.to_string());

        if let Some(file) = &config.restore {
            restore(&config, file, &advertise_raft, &advertise_api).await?;
        }
        let mut builder = ControlPlane::builder(config.id, &config.data_dir)
            .progress_interval(config.watch_progress)
            .listener(raft_listener)
            .advertise(advertise_raft.clone())
            .api_address(advertise_api.clone());
        if let Some((heartbeat, election)) = config.timing {
            builder = builder.timing(heartbeat, election);
        }
        if let Some(every) = config.snapshot_every_entries {
            builder = builder.snapshots(SnapshotSettings { every_entries: every, ..SnapshotSettings::default() });
        }
        builder = match &config.start {
            Start::Single => builder.single_node(),
            Start::Initial(_) => builder.initial_members(config.initial_members().unwrap_or_default()),
            Start::Join(_) => builder.join(),
        };
        let cp = builder.start().await?;

        let metrics = Arc::new(Metrics::new());
        let loops = Loops::spawn(cp.clone(), loops, LOOP_RESYNC, Arc::new(metrics.loops.clone()));
        let (stop_api, api_stopped) = oneshot::channel::<()>();
        let api = ApiService::new(cp.clone(), Arc::clone(&metrics)).with_loops(loops.sender()).server();
        let incoming = tonic::transport::server::TcpIncoming::from(
            tokio::net::TcpListener::from_std(api_listener).map_err(|source| StartError::Bind {
                what: "api",
                addr: api_addr,
                source,
            })?,
        )
        .with_nodelay(Some(true));
        let (keepalive_interval, keepalive_timeout) = config.keepalive;
        let api_task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(keepalive_interval))
                .http2_keepalive_timeout(Some(keepalive_timeout))
                .add_service(api)
                .serve_with_incoming_shutdown(incoming, async { drop(api_stopped.await) })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the API server failed");
            }
        });

        let (stop_http, http_stopped) = oneshot::channel::<()>();
        let router = crate::http::router(cp.clone(), Arc::clone(&metrics));
        let http_listener = tokio::net::TcpListener::from_std(http_listener).map_err(|source| StartError::Bind {
            what: "http",
            addr: http_addr,
            source,
        })?;
        let http_task = tokio::spawn(async move {
            let served =
                axum::serve(http_listener, router).with_graceful_shutdown(async { drop(http_stopped.await) }).await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the HTTP server failed");
            }
        });

        let mut orchd = Self {
            cp: cp.clone(),
            metrics: Arc::clone(&metrics),
            api_addr,
            http_addr,
            stop_api: Some(stop_api),
            stop_http: Some(stop_http),
            api_task,
            http_task,
            loops: Some(loops),
        };
        if let Start::Join(addrs) = &config.start
            && let Err(e) = join(&cp, config.id, addrs, &advertise_raft, &advertise_api).await
        {
            orchd.shutdown().await;
            return Err(e);
        }
        tracing::info!(id = config.id, api = %api_addr, raft = %raft_addr, http = %http_addr, "orchd started");
        Ok(orchd)
    }

    /// The control plane.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.cp
    }

    /// The daemon's metrics (what `/metrics` shows).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The bound API address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The bound metrics and health address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Stops the loops, hands leadership to another voter when this node leads (so that a
    /// rolling restart does not wait out an election timeout), stops the servers, then the control plane (its data
    /// is synced).
    pub async fn shutdown(&mut self) {
        if let Some(loops) = self.loops.take() {
            loops.stop().await;
        }
        // While the API still answers, so that calls in flight are sent to the new leader.
        match self.cp.step_down(STEP_DOWN_WAIT).await {
            Ok(Some(to)) => tracing::info!(to, "handed leadership over before stopping"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "leadership was not handed over before stopping"),
        }
        if let Some(stop) = self.stop_api.take() {
            let _ = stop.send(());
        }
        if let Some(stop) = self.stop_http.take() {
            let _ = stop.send(());
        }
        // Open watch streams keep the API server's graceful shutdown waiting: cut it short.
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.api_task).await;
        self.api_task.abort();
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.http_task).await;
        self.http_task.abort();
        if let Err(e) = self.cp.shutdown().await {
            tracing::warn!(error = %e, "control plane shutdown");
        }
    }
}

/// How long a stopping leader waits for another voter to take over (SIGTERM).
pub const STEP_DOWN_WAIT: Duration = Duration::from_secs(3);

/// Starts a fresh data directory from a snapshot file; a directory with data is left alone
/// (a restarted node of a restored cluster).
async fn restore(config: &Config, file: &std::path::Path, raft: &str, api: &str) -> Result<(), StartError> {
    let fail = |message: String| StartError::Restore { file: file.display().to_string(), message };
    let log_dir = config.data_dir.join("log");
    if log_dir.exists() && std::fs::read_dir(&log_dir).map_err(|e| fail(e.to_string()))?.next().is_some() {
        tracing::info!(dir = %config.data_dir.display(), "the data directory holds data: not restoring");
        return Ok(());
    }
    let bytes = std::fs::read(file).map_err(|e| fail(e.to_string()))?;
    let members = config
        .initial_members()
        .unwrap_or_else(|| std::collections::BTreeMap::from([(config.id, orch_raft::Member::new(raft, api))]));
    let revision =
        orch_raft::control_plane::restore(&config.data_dir, &bytes, members).await.map_err(|e| fail(e.to_string()))?;
    tracing::info!(revision, file = %file.display(), "restored the state from a snapshot");
    Ok(())
}

/// Asks the cluster at `addrs` to add this node, unless it is a member already (a restart).
async fn join(cp: &ControlPlane, id: u64, addrs: &[String], raft: &str, api: &str) -> Result<(), StartError> {
    let members = cp.members();
    if members.voters.contains_key(&id) || members.learners.contains_key(&id) {
        return Ok(());
    }
    let options = orch_api::ClientOptions { retry_for: JOIN_WAIT, ..orch_api::ClientOptions::default() };
    let client = orch_api::Client::with_options(addrs.iter().cloned(), options).map_err(StartError::Join)?;
    client.add_member(id, raft, api).await.map_err(StartError::Join)?;
    Ok(())
}
