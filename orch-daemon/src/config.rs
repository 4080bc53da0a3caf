//! `orchd`'s settings: defaults, an optional TOML file, and flags, in rising precedence.
//!
//! With nothing given, `orchd` is a single-node control plane keeping its data in
//! `./orch-data`, serving the API on `127.0.0.1:7100`, Raft on `127.0.0.1:7101` and metrics
//! and health on `127.0.0.1:7102`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The default API address.
pub const DEFAULT_API_ADDR: &str = "127.0.0.1:7100";
/// The default Raft transport address.
pub const DEFAULT_RAFT_ADDR: &str = "127.0.0.1:7101";
/// The default metrics and health address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:7102";
/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "orch-data";
/// The largest config file read.
pub const CONFIG_BYTES_MAX: usize = 1024 * 1024;
/// The most initial members.
pub const INITIAL_MEMBERS_MAX: usize = 64;

/// How often a watch gets progress at the least, by default (milliseconds).
pub const DEFAULT_WATCH_PROGRESS_MS: u64 = 1000;
/// How long a node must have been gone before its pods are force-deleted, by default
/// (milliseconds; Kubernetes' pod GC quarantine).
pub const DEFAULT_POD_GC_QUARANTINE_MS: u64 = 40_000;
/// How long an event is kept after it last happened, by default (milliseconds; Kubernetes'
/// `--event-ttl`, 1 hour).
pub const DEFAULT_EVENT_TTL_MS: u64 = 3_600_000;
/// Kubernetes' default `node-monitor-grace-period` ([`orch_core::nodelifecycle::DEFAULT_GRACE_MS`]).
pub const DEFAULT_NODE_MONITOR_GRACE_PERIOD_MS: u64 = orch_core::nodelifecycle::DEFAULT_GRACE_MS.unsigned_abs();
/// The longest `node-monitor-grace-period` taken: a day.
pub const NODE_MONITOR_GRACE_PERIOD_MAX_MS: u64 = 86_400_000;
/// The API server's HTTP/2 keepalive interval and timeout, by default (milliseconds).
pub const DEFAULT_KEEPALIVE_MS: u64 = 10_000;

/// A bad setting; the message names the setting and the rule.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// A member of the first configuration: `ID=RAFT_ADDR/API_ADDR`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    /// Its node id.
    pub id: u64,
    /// Its Raft address.
    pub raft: String,
    /// Its API address.
    pub api: String,
}

/// Parses `ID=RAFT_ADDR/API_ADDR,...`.
///
/// # Errors
/// Naming the entry and the rule.
pub fn parse_members(text: &str) -> Result<Vec<InitialMember>, ConfigError> {
    let mut out: Vec<InitialMember> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let bad = |rule: &str| ConfigError(format!("initial-members: Invalid value: {entry:?}: {rule}"));
        let (id, addrs) = entry.split_once('=').ok_or_else(|| bad("must be ID=RAFT_ADDR/API_ADDR"))?;
        let id: u64 = id.trim().parse().map_err(|_| bad("the id must be a number >= 1"))?;
        if id == 0 {
            return Err(bad("the id must be a number >= 1"));
        }
        let (raft, api) = addrs.split_once('/').ok_or_else(|| bad("must be ID=RAFT_ADDR/API_ADDR"))?;
        if !raft.contains(':') || !api.contains(':') {
            return Err(bad("addresses must be host:port"));
        }
        if out.iter().any(|m| m.id == id) {
            return Err(bad("the id appears twice"));
        }
        out.push(InitialMember { id, raft: raft.trim().to_owned(), api: api.trim().to_owned() });
    }
    if out.len() > INITIAL_MEMBERS_MAX {
        return Err(ConfigError(format!(
            "initial-members: Too many: {}: must have at most {INITIAL_MEMBERS_MAX} items",
            out.len()
        )));
    }
    Ok(out)
}

/// The settings of one `orchd`. Every field may be left out of the file.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// This node's id.
    pub id: Option<u64>,
    /// Where the data lives.
    pub data_dir: Option<PathBuf>,
    /// The API listen address.
    pub api_addr: Option<SocketAddr>,
    /// The Raft listen address.
    pub raft_addr: Option<SocketAddr>,
    /// The metrics and health listen address.
    pub http_addr: Option<SocketAddr>,
    /// The API address clients and peers are told (default: the listen address).
    pub advertise_api: Option<String>,
    /// The Raft address peers are told (default: the listen address).
    pub advertise_raft: Option<String>,
    /// `ID=RAFT_ADDR/API_ADDR,...`: start a new cluster of these members.
    pub initial_members: Option<String>,
    /// API addresses of an existing cluster's members: join it.
    pub join: Option<String>,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter.
    pub log_level: Option<String>,
    /// The leader's heartbeat interval in milliseconds.
    pub heartbeat_ms: Option<u64>,
    /// The lower bound of the election timeout in milliseconds (the upper is twice it).
    pub election_timeout_ms: Option<u64>,
    /// Build a snapshot after this many log entries.
    pub snapshot_every_entries: Option<u64>,
    /// A snapshot file (`orchctl snapshot save`) to start a fresh data directory from.
    pub restore: Option<PathBuf>,
    /// How often every watch gets a progress notification at the least, in milliseconds.
    pub watch_progress_ms: Option<u64>,
    /// How often the API server pings a client's connection, in milliseconds.
    pub keepalive_interval_ms: Option<u64>,
    /// How long a ping may go unanswered before the connection (and its watches) is dropped.
    pub keepalive_timeout_ms: Option<u64>,
    /// How many simulated nodes the leader runs (a stand-in for node agents).
    pub simulated_nodes: Option<usize>,
    /// How long a node must have been gone before its pods are force-deleted, in milliseconds.
    pub pod_gc_quarantine_ms: Option<u64>,
    /// How long a node may go without a heartbeat before it is marked `Unknown`, in
    /// milliseconds.
    pub node_monitor_grace_period_ms: Option<u64>,
    /// How long an event is kept after it last happened, in milliseconds (at least: it goes at
    /// the garbage collector's next look at it, when it changes or at a resync).
    pub event_ttl_ms: Option<u64>,
    /// The cluster's pod range, from which each node gets a pod CIDR.
    pub cluster_cidr: Option<String>,
    /// The prefix length of each node's pod CIDR.
    pub node_cidr_mask_size: Option<u8>,
}

impl FileConfig {
    /// Reads a TOML file.
    ///
    /// # Errors
    /// When it cannot be read, is too large, or holds an unknown or malformed setting.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let meta = std::fs::metadata(path).map_err(|e| ConfigError(format!("config {}: {e}", path.display())))?;
        if meta.len() > CONFIG_BYTES_MAX as u64 {
            return Err(ConfigError(format!("config {}: larger than {CONFIG_BYTES_MAX} bytes", path.display())));
        }
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError(format!("config {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ConfigError(format!("config {}: {e}", path.display())))
    }

    /// `other`'s settings where it has them, this one's elsewhere.
    pub fn overridden_by(self, other: FileConfig) -> FileConfig {
        FileConfig {
            id: other.id.or(self.id),
            data_dir: other.data_dir.or(self.data_dir),
            api_addr: other.api_addr.or(self.api_addr),
            raft_addr: other.raft_addr.or(self.raft_addr),
            http_addr: other.http_addr.or(self.http_addr),
            advertise_api: other.advertise_api.or(self.advertise_api),
            advertise_raft: other.advertise_raft.or(self.advertise_raft),
            initial_members: other.initial_members.or(self.initial_members),
            join: other.join.or(self.join),
            log_level: other.log_level.or(self.log_level),
            heartbeat_ms: other.heartbeat_ms.or(self.heartbeat_ms),
            election_timeout_ms: other.election_timeout_ms.or(self.election_timeout_ms),
            snapshot_every_entries: other.snapshot_every_entries.or(self.snapshot_every_entries),
            restore: other.restore.or(self.restore),
            watch_progress_ms: other.watch_progress_ms.or(self.watch_progress_ms),
            keepalive_interval_ms: other.keepalive_interval_ms.or(self.keepalive_interval_ms),
            keepalive_timeout_ms: other.keepalive_timeout_ms.or(self.keepalive_timeout_ms),
            simulated_nodes: other.simulated_nodes.or(self.simulated_nodes),
            pod_gc_quarantine_ms: other.pod_gc_quarantine_ms.or(self.pod_gc_quarantine_ms),
            node_monitor_grace_period_ms: other.node_monitor_grace_period_ms.or(self.node_monitor_grace_period_ms),
            event_ttl_ms: other.event_ttl_ms.or(self.event_ttl_ms),
            cluster_cidr: other.cluster_cidr.or(self.cluster_cidr),
            node_cidr_mask_size: other.node_cidr_mask_size.or(self.node_cidr_mask_size),
        }
    }
}

/// How a fresh node comes to be part of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Alone: a single-node cluster.
    Single,
    /// One of these initial members.
    Initial(Vec<InitialMember>),
    /// Added to the cluster whose API answers at these addresses.
    Join(Vec<String>),
}

/// The resolved settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id.
    pub id: u64,
    /// Where the data lives.
    pub data_dir: PathBuf,
    /// The API listen address.
    pub api_addr: SocketAddr,
    /// The Raft listen address.
    pub raft_addr: SocketAddr,
    /// The metrics and health listen address.
    pub http_addr: SocketAddr,
    /// The API address others are told, if not the bound one.
    pub advertise_api: Option<String>,
    /// The Raft address others are told, if not the bound one.
    pub advertise_raft: Option<String>,
    /// How a fresh data directory starts.
    pub start: Start,
    /// The log filter.
    pub log_level: String,
    /// Heartbeat and election timeout range.
    pub timing: Option<(Duration, (Duration, Duration))>,
    /// Build a snapshot after this many log entries.
    pub snapshot_every_entries: Option<u64>,
    /// A snapshot to start a fresh data directory from.
    pub restore: Option<PathBuf>,
    /// How often every watch gets a progress notification at the least.
    pub watch_progress: Duration,
    /// How often the API server pings a connection, and how long it waits for the answer
    /// before dropping it: a client that vanished does not hold its watches forever.
    pub keepalive: (Duration, Duration),
    /// How many simulated nodes the leader runs (0: none).
    pub simulated_nodes: usize,
    /// How long a node must have been gone before its pods are force-deleted.
    pub pod_gc_quarantine: Duration,
    /// How long a node may go without a heartbeat before it is marked `Unknown`.
    pub node_monitor_grace_period: Duration,
    /// How long an event is kept after it last happened, at least (the garbage collector
    /// deletes it at its next look: when it changes, or at the loops' resync).
    pub event_ttl: Duration,
    /// The node IPAM controller's range and node mask.
    pub node_ipam: orch_core::nodeipam::Settings,
}

impl Default for Config {
    fn default() -> Self {
        Self::resolve(FileConfig::default()).unwrap_or_else(|e| unreachable!("the defaults are valid: {e}"))
    }
}

impl Config {
    /// Fills in the defaults and checks every setting.
    ///
    /// # Errors
    /// Naming the setting and the rule.
    pub fn resolve(f: FileConfig) -> Result<Self, ConfigError> {
        let addr = |text: &str| -> SocketAddr { text.parse().unwrap_or_else(|_| unreachable!("a valid default")) };
        let id = f.id.unwrap_or(1);
        if id == 0 {
            return Err(ConfigError("id: Invalid value: 0: must be >= 1".to_owned()));
        }
        let start = match (f.initial_members.as_deref(), f.join.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(ConfigError("join: Forbidden: give either initial-members or join, not both".to_owned()));
            }
            (Some(m), None) => {
                let members = parse_members(m)?;
                if !members.iter().any(|m| m.id == id) {
                    return Err(ConfigError(format!(
                        "initial-members: Invalid value: {m:?}: must include this node's id {id}"
                    )));
                }
                Start::Initial(members)
            }
            (None, Some(j)) => {
                let addrs: Vec<String> =
                    j.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect();
                if addrs.is_empty() {
                    return Err(ConfigError("join: Required value: API addresses of the cluster".to_owned()));
                }
                Start::Join(addrs)
            }
            (None, None) => Start::Single,
        };
        if f.restore.is_some() && matches!(start, Start::Join(_)) {
            return Err(ConfigError(
                "restore: Forbidden: a restored cluster starts from initial-members (or alone), not by joining"
                    .to_owned(),
            ));
        }
        let timing = match (f.heartbeat_ms, f.election_timeout_ms) {
            (None, None) => None,
            (given_h, given_e) => {
                let default_ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                let (default_h, default_e) = (
                    default_ms(orch_raft::control_plane::DEFAULT_HEARTBEAT),
                    default_ms(orch_raft::control_plane::DEFAULT_ELECTION_TIMEOUT.0),
                );
                // The flag not given follows the one given: at least four heartbeats per
                // shortest election timeout, as the defaults have.
                let h = given_h.unwrap_or_else(|| given_e.map_or(default_h, |e| default_h.min(e / 4)));
                let e = given_e.unwrap_or_else(|| default_e.max(h.saturating_mul(4)));
                if h == 0 {
                    return Err(ConfigError(match given_h {
                        Some(_) => "heartbeat-ms: Invalid value: 0: must be at least 1".to_owned(),
                        None => {
                            format!("election-timeout-ms: Invalid value: {e}: must be at least 4 (four heartbeats)")
                        }
                    }));
                }
                if e <= h {
                    return Err(ConfigError(format!(
                        "election-timeout-ms: Invalid value: {e}: must be greater than heartbeat-ms ({h})"
                    )));
                }
                let ms = Duration::from_millis;
                Some((ms(h), (ms(e), ms(e.saturating_mul(2)))))
            }
        };
        let positive = |name: &str, value: Option<u64>, default: u64, min: u64| match value {
            Some(v) if v < min => Err(ConfigError(format!("{name}: Invalid value: {v}: must be >= {min}"))),
            v => Ok(Duration::from_millis(v.unwrap_or(default))),
        };
        let simulated_nodes = f.simulated_nodes.unwrap_or(0);
        if simulated_nodes > orch_core::simnodes::SIMULATED_NODES_MAX {
            return Err(ConfigError(format!(
                "simulated-nodes: Invalid value: {simulated_nodes}: must be at most {}",
                orch_core::simnodes::SIMULATED_NODES_MAX
            )));
        }
        let pod_gc_quarantine =
            positive("pod-gc-quarantine-ms", f.pod_gc_quarantine_ms, DEFAULT_POD_GC_QUARANTINE_MS, 1)?;
        let node_monitor_grace_period = positive(
            "node-monitor-grace-period-ms",
            f.node_monitor_grace_period_ms,
            DEFAULT_NODE_MONITOR_GRACE_PERIOD_MS,
            1_000,
        )?;
        if node_monitor_grace_period > Duration::from_millis(NODE_MONITOR_GRACE_PERIOD_MAX_MS) {
            return Err(ConfigError(format!(
                "node-monitor-grace-period-ms: Invalid value: {}: must be <= {NODE_MONITOR_GRACE_PERIOD_MAX_MS}",
                node_monitor_grace_period.as_millis()
            )));
        }
        let event_ttl = positive("event-ttl-ms", f.event_ttl_ms, DEFAULT_EVENT_TTL_MS, 1)?;
        let mut node_ipam = orch_core::nodeipam::Settings::default();
        if let Some(cidr) = &f.cluster_cidr {
            node_ipam.cluster_cidr = orch_core::nodeipam::Cidr::parse(cidr)
                .map_err(|e| ConfigError(format!("cluster-cidr: Invalid value: {e}")))?;
        }
        if let Some(mask) = f.node_cidr_mask_size {
            node_ipam.node_mask = mask;
        }
        node_ipam.check().map_err(|e| ConfigError(format!("node-cidr-mask-size: Invalid value: {e}")))?;
        let watch_progress = positive("watch-progress-ms", f.watch_progress_ms, DEFAULT_WATCH_PROGRESS_MS, 10)?;
        let keepalive = (
            positive("keepalive-interval-ms", f.keepalive_interval_ms, DEFAULT_KEEPALIVE_MS, 10)?,
            positive("keepalive-timeout-ms", f.keepalive_timeout_ms, DEFAULT_KEEPALIVE_MS, 10)?,
        );
        Ok(Config {
            id,
            data_dir: f.data_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            api_addr: f.api_addr.unwrap_or_else(|| addr(DEFAULT_API_ADDR)),
            raft_addr: f.raft_addr.unwrap_or_else(|| addr(DEFAULT_RAFT_ADDR)),
            http_addr: f.http_addr.unwrap_or_else(|| addr(DEFAULT_HTTP_ADDR)),
            advertise_api: f.advertise_api,
            advertise_raft: f.advertise_raft,
            start,
            log_level: f.log_level.unwrap_or_else(|| "info".to_owned()),
            timing,
            snapshot_every_entries: f.snapshot_every_entries,
            restore: f.restore,
            watch_progress,
            keepalive,
            simulated_nodes,
            pod_gc_quarantine,
            node_monitor_grace_period,
            event_ttl,
            node_ipam,
        })
    }

    /// The initial members as the control plane takes them.
    pub fn initial_members(&self) -> Option<BTreeMap<u64, orch_raft::Member>> {
        match &self.start {
            Start::Initial(members) => {
                Some(members.iter().map(|m| (m.id, orch_raft::Member::new(m.raft.clone(), m.api.clone()))).collect())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_a_single_local_node() {
        let c = Config::default();
        assert_eq!((c.id, c.start.clone()), (1, Start::Single));
        assert_eq!(c.api_addr.to_string(), DEFAULT_API_ADDR);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn members_parse_and_bad_ones_are_named() {
        let m = parse_members("1=127.0.0.1:7101/127.0.0.1:7100, 2=127.0.0.1:7201/127.0.0.1:7200").expect("valid");
        assert_eq!(m[1], InitialMember { id: 2, raft: "127.0.0.1:7201".into(), api: "127.0.0.1:7200".into() });
        for (text, rule) in [
            ("1=127.0.0.1:7101", "must be ID=RAFT_ADDR/API_ADDR"),
            ("x=a:1/b:2", "the id must be a number >= 1"),
            ("0=a:1/b:2", "the id must be a number >= 1"),
            ("1=a/b", "addresses must be host:port"),
            ("1=a:1/b:2,1=c:3/d:4", "the id appears twice"),
        ] {
            let e = parse_members(text).expect_err(text).to_string();
            assert!(e.starts_with("initial-members: Invalid value") && e.ends_with(rule), "{e}");
        }
    }

    #[test]
    fn settings_are_checked_and_flags_win_over_the_file() {
        let file: FileConfig = toml::from_str("id = 2\ndata-dir = \"/tmp/x\"\nlog-level = \"debug\"\n").expect("valid");
        let flags = FileConfig { id: Some(3), ..FileConfig::default() };
        let c = Config::resolve(file.overridden_by(flags)).expect("valid");
        assert_eq!((c.id, c.data_dir, c.log_level.as_str()), (3, PathBuf::from("/tmp/x"), "debug"));
        assert!(toml::from_str::<FileConfig>("colour = 1\n").is_err(), "unknown settings are refused");
        let sims: FileConfig = toml::from_str("simulated-nodes = 3\n").expect("valid");
        assert_eq!(Config::resolve(sims).expect("valid").simulated_nodes, 3);
        let too_many = FileConfig { simulated_nodes: Some(10_001), ..FileConfig::default() };
        let err = Config::resolve(too_many).expect_err("too many").to_string();
        assert_eq!(err, "simulated-nodes: Invalid value: 10001: must be at most 10000");
        assert_eq!(Config::default().pod_gc_quarantine, Duration::from_secs(40));
        assert_eq!(Config::default().node_monitor_grace_period, Duration::from_secs(40));
        for (ms, error) in [
            (999, "node-monitor-grace-period-ms: Invalid value: 999: must be >= 1000"),
            (86_400_001, "node-monitor-grace-period-ms: Invalid value: 86400001: must be <= 86400000"),
        ] {
            let f = FileConfig { node_monitor_grace_period_ms: Some(ms), ..FileConfig::default() };
            assert_eq!(Config::resolve(f).expect_err("refused").to_string(), error);
        }
        let zero = FileConfig { pod_gc_quarantine_ms: Some(0), ..FileConfig::default() };
        let err = Config::resolve(zero).expect_err("zero").to_string();
        assert_eq!(err, "pod-gc-quarantine-ms: Invalid value: 0: must be >= 1");
        assert_eq!(Config::default().event_ttl, Duration::from_secs(3600));
        let ttl: FileConfig = toml::from_str("event-ttl-ms = 2000\n").expect("valid");
        assert_eq!(Config::resolve(ttl).expect("valid").event_ttl, Duration::from_secs(2));
        let zero = FileConfig { event_ttl_ms: Some(0), ..FileConfig::default() };
        let err = Config::resolve(zero).expect_err("zero").to_string();
        assert_eq!(err, "event-ttl-ms: Invalid value: 0: must be >= 1");
        assert_eq!(Config::default().node_ipam, orch_core::nodeipam::Settings::default());
        let ipam: FileConfig =
            toml::from_str("cluster-cidr = \"10.50.0.0/16\"\nnode-cidr-mask-size = 26\n").expect("valid");
        let ipam = Config::resolve(ipam).expect("valid").node_ipam;
        assert_eq!((ipam.cluster_cidr.to_string(), ipam.node_mask), ("10.50.0.0/16".to_owned(), 26));
        let bad = FileConfig { cluster_cidr: Some("10.50.0.1/16".into()), ..FileConfig::default() };
        let err = Config::resolve(bad).expect_err("host bits").to_string();
        assert!(err.starts_with("cluster-cidr: Invalid value: "), "{err}");
        let bad = FileConfig { node_cidr_mask_size: Some(12), ..FileConfig::default() };
        assert!(
            Config::resolve(bad)
                .expect_err("short mask")
                .to_string()
                .starts_with("node-cidr-mask-size: Invalid value: ")
        );
        let both =
            FileConfig { initial_members: Some("1=a:1/b:2".into()), join: Some("c:3".into()), ..FileConfig::default() };
        assert!(Config::resolve(both).expect_err("both").to_string().starts_with("join: Forbidden"));
        let without_self =
            FileConfig { id: Some(5), initial_members: Some("1=a:1/b:2".into()), ..FileConfig::default() };
        assert!(
            Config::resolve(without_self)
                .expect_err("not a member")
                .to_string()
                .contains("must include this node's id 5")
        );
        let timing = FileConfig { heartbeat_ms: Some(500), election_timeout_ms: Some(100), ..FileConfig::default() };
        assert!(Config::resolve(timing).expect_err("timing").to_string().starts_with("election-timeout-ms"));
        // One flag alone: the other follows it (at least four heartbeats per election timeout).
        let ms = Duration::from_millis;
        let only = |h: Option<u64>, e: Option<u64>| {
            let f = FileConfig { heartbeat_ms: h, election_timeout_ms: e, ..FileConfig::default() };
            Config::resolve(f).expect("valid").timing
        };
        assert_eq!(only(Some(500), None), Some((ms(500), (ms(2000), ms(4000)))));
        assert_eq!(only(Some(50), None), Some((ms(50), (ms(400), ms(800)))));
        assert_eq!(only(None, Some(200)), Some((ms(50), (ms(200), ms(400)))));
        assert_eq!(only(None, Some(2000)), Some((ms(100), (ms(2000), ms(4000)))));
        assert_eq!(only(None, None), None, "the control plane's defaults");
        let zero = FileConfig { election_timeout_ms: Some(3), ..FileConfig::default() };
        assert!(Config::resolve(zero).expect_err("too short").to_string().starts_with("election-timeout-ms"));
        let keepalive = FileConfig { keepalive_timeout_ms: Some(0), ..FileConfig::default() };
        assert_eq!(
            Config::resolve(keepalive).expect_err("keepalive").to_string(),
            "keepalive-timeout-ms: Invalid value: 0: must be >= 10"
        );
        let progress: FileConfig = toml::from_str(
            "watch-progress-ms = 250
",
        )
        .expect("valid");
        assert_eq!(Config::resolve(progress).expect("valid").watch_progress, Duration::from_millis(250));
    }
}
