//! Pod networks through the standard CNI plugins (`bridge`, `host-local`, `loopback`,
//! `portmap`), invoked as the CNI specification says (the command in `CNI_COMMAND`, the
//! network configuration on stdin, the result on stdout), as containerd does for the kubelet.
//!
//! Each pod gets a network namespace of its own (`ip netns add orch-<hash>-<uid>`, the hash of the node and the data directory), its
//! loopback up, and an `eth0` on this agent's bridge with an address of the node's pod CIDR
//! from `host-local` (its data under the agent's data directory, so agents on one machine do
//! not share it); `portmap` maps the containers' `hostPort`s when there are any. DEL releases
//! the address and the namespace goes. The bridge's ADD result is kept (`results/<uid>.json`
//! under the data directory, as libcni caches results) for CHECK, which a restarted agent runs
//! on each pod it adopts ([`Network::check`]).
//!
//! Routes (host-gw): the whole cluster pod range is a blackhole route, with the node's own
//! pod CIDR on its bridge and each other node's pod CIDR via that node's address on top, so a
//! packet for a pod address that is nobody's is dropped here, never sent to the default
//! gateway.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use orch_core::core_v1::Pod;
use orch_core::ids::Uid;
use serde_json::json;

/// The CNI version the configurations speak (the plugins of Debian 12 know up to 1.0.0).
const CNI_VERSION: &str = "1.0.0";
/// The most bytes of a plugin's output read.
const PLUGIN_OUTPUT_MAX: usize = 1 << 20;
/// How long a plugin may take.
const PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";

/// Where the plugins are looked for by default: Debian's directory, then the usual one.
pub const DEFAULT_CNI_BIN_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];

/// The pod network's settings.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// The directories searched for the plugins.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// This agent's bridge (at most 15 bytes).
    pub bridge: String,
    /// This agent's network data (host-local's allocations).
    pub data_dir: PathBuf,
    /// The node's name (in namespace names).
    pub node: String,
    /// The whole cluster's pod range (the blackhole route).
    pub cluster_cidr: String,
}

/// The pod network of one agent.
#[derive(Debug)]
pub struct Network {
    config: NetworkConfig,
    bin_dir: PathBuf,
    /// The node's pod CIDR, once known.
    pod_cidr: Mutex<Option<String>>,
    /// Why the last pod network could not be made, until one is.
    last_failure: Mutex<Option<String>>,
    /// One CHECK or DEL of a pod at a time (a CHECK never runs during a DEL, nor after one
    /// whose bridge step succeeded: the kept result it needs is gone).
    pod_locks: Mutex<std::collections::BTreeMap<Uid, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

/// Runs `ip` with `args`.
///
/// # Errors
/// `ip` failed, with its message.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out =
        std::process::Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// The prefix of the pods' network namespaces of the agent of node `node` whose network data
/// is in `data_dir`.
pub fn netns_prefix(node: &str, data_dir: &Path) -> String {
    let key = format!("{node}\0{}", data_dir.display());
    let hash = key.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("orch-{hash:08x}-")
}

impl Network {
    /// The network, if this agent can make one: it is root and the plugins are there.
    ///
    /// # Errors
    /// Why not, for the warning that pods share the host's network.
    pub fn detect(config: NetworkConfig) -> Result<Self, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("the agent is not root".to_owned());
        }
        if config.bridge.is_empty() || config.bridge.len() > 15 {
            return Err(format!("bridge name {:?} must be 1 to 15 bytes", config.bridge));
        }
        let bin_dir = config
            .cni_bin_dirs
            .iter()
            .find(|d| ["bridge", "host-local", "loopback"].iter().all(|p| d.join(p).is_file()))
            .cloned()
            .ok_or_else(|| {
                format!(
                    "the CNI plugins bridge, host-local and loopback are not in {} (Debian: apt install containernetworking-plugins)",
                    config.cni_bin_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(" or ")
                )
            })?;
        ip(&["-V"]).map_err(|e| format!("iproute2 is missing: {e}"))?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| format!("making {}: {e}", config.data_dir.display()))?;
        // The blackhole under every pod route (replaced, so a restart finds it as it is).
        ip(&["route", "replace", "blackhole", &config.cluster_cidr])?;
        Ok(Self {
            config,
            bin_dir,
            pod_cidr: Mutex::new(None),
            last_failure: Mutex::new(None),
            pod_locks: Mutex::default(),
        })
    }

    /// Sets the node's pod CIDR (once the control plane allocated it, or from a flag).
    pub fn set_pod_cidr(&self, cidr: &str) {
        *self.pod_cidr.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(cidr.to_owned());
    }

    /// The node's pod CIDR, if known.
    pub fn pod_cidr(&self) -> Option<String> {
        self.pod_cidr.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The name of a pod's network namespace: `orch-<8 hex>-<uid>`, the hex a hash of the
    /// node's name and the agent's data directory, so agents (and tests) on one machine never
    /// take each other's namespaces for leftovers.
    pub fn netns_name(&self, uid: Uid) -> String {
        format!("{}{uid}", netns_prefix(&self.config.node, &self.config.data_dir))
    }

    /// The path of a pod's network namespace.
    pub fn netns_path(&self, uid: Uid) -> PathBuf {
        Path::new(NETNS_DIR).join(self.netns_name(uid))
    }

    fn bridge_config(&self, cidr: &str) -> serde_json::Value {
        json!({
            "cniVersion": CNI_VERSION,
            "name": format!("orch-{}", self.config.node),
            "type": "bridge",
            "bridge": self.config.bridge,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": cidr }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": self.config.data_dir.join("ipam"),
            },
        })
    }

    fn portmap_config(&self, pod: &Pod, prev: &serde_json::Value) -> Option<serde_json::Value> {
        let mappings: Vec<serde_json::Value> = pod
            .spec
            .containers
            .iter()
            .flat_map(|c| &c.ports)
            .filter_map(|p| {
                let host_port = p.host_port.filter(|h| *h > 0)?;
                let protocol = p.protocol.map_or("tcp", |p| match p {
                    orch_core::core_v1::Protocol::Tcp => "tcp",
                    orch_core::core_v1::Protocol::Udp => "udp",
                    orch_core::core_v1::Protocol::Sctp => "sctp",
                });
                Some(json!({ "hostPort": host_port, "containerPort": p.container_port, "protocol": protocol }))
            })
            .collect();
        (!mappings.is_empty()).then(|| {
            json!({
                "cniVersion": CNI_VERSION,
                "name": format!("orch-{}", self.config.node),
                "type": "portmap",
                "capabilities": { "portMappings": true },
                "runtimeConfig": { "portMappings": mappings },
                "prevResult": prev,
            })
        })
    }

    /// Runs plugin `plugin` with `command` for the pod `uid` on `ifname`; its result.
    async fn plugin(
        &self,
        plugin: &str,
        command: &str,
        uid: Uid,
        ifname: &str,
        config: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut child = tokio::process::Command::new(self.bin_dir.join(plugin))
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", uid.to_string())
            .env("CNI_NETNS", self.netns_path(uid))
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.bin_dir)
            .env("PATH", crate::exec::DEFAULT_PATH)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("CNI {plugin} {command}: {e}"))?;
        let input = serde_json::to_vec(config).map_err(|e| e.to_string())?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&input).await.map_err(|e| format!("CNI {plugin} {command}: {e}"))?;
        }
        drop(child.stdin.take());
        let (out, err) = (child.stdout.take(), child.stderr.take());
        let run = async {
            // Both streams at once (a plugin blocked writing one must not wait for the other),
            // bounded; the rest drained.
            let drain = |s: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| async move {
                let mut kept = Vec::new();
                if let Some(mut s) = s {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let room = PLUGIN_OUTPUT_MAX.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                    }
                }
                kept
            };
            let out: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>> = out.map(|o| Box::new(o) as _);
            let err: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>> = err.map(|e| Box::new(e) as _);
            let (stdout, stderr) = tokio::join!(drain(out), drain(err));
            (stdout, stderr, child.wait().await)
        };
        let (stdout, stderr, status) = tokio::time::timeout(PLUGIN_TIMEOUT, run)
            .await
            .map_err(|_| format!("CNI {plugin} {command} did not finish in {}s", PLUGIN_TIMEOUT.as_secs()))?;
        let status = status.map_err(|e| e.to_string())?;
        let result: serde_json::Value =
            if stdout.is_empty() { json!({}) } else { serde_json::from_slice(&stdout).unwrap_or(json!({})) };
        if status.success() {
            return Ok(result);
        }
        let msg = result["msg"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&stderr).trim().to_owned());
        let details = result["details"].as_str().unwrap_or_default();
        Err(format!("CNI {plugin} {command} failed: {msg}{}{details}", if details.is_empty() { "" } else { ": " }))
    }

    /// Why pods cannot get a network now, if they cannot: no pod CIDR yet, or the last
    /// sandbox's network failed (until one succeeds). The Node's `NetworkUnavailable`.
    pub fn unavailable(&self) -> Option<String> {
        if self.pod_cidr().is_none() {
            return Some("the node has no pod CIDR yet".to_owned());
        }
        self.last_failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Makes the pod's namespace and its interfaces; its address.
    ///
    /// # Errors
    /// No pod CIDR yet, or a command or plugin failed (what was made is undone).
    pub async fn add(&self, uid: Uid, pod: &Pod) -> Result<String, String> {
        let result = self.add_network(uid, pod).await;
        *self.last_failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = result.as_ref().err().cloned();
        result
    }

    async fn add_network(&self, uid: Uid, pod: &Pod) -> Result<String, String> {
        let cidr = self.pod_cidr().ok_or_else(|| "the node has no pod CIDR yet".to_owned())?;
        if !self.netns_path(uid).exists() {
            ip(&["netns", "add", &self.netns_name(uid)])?;
        }
        let made = async {
            self.plugin(
                "loopback",
                "ADD",
                uid,
                "lo",
                &json!({ "cniVersion": CNI_VERSION, "name": "lo", "type": "loopback" }),
            )
            .await?;
            let result = self.plugin("bridge", "ADD", uid, "eth0", &self.bridge_config(&cidr)).await?;
            let address =
                result["ips"][0]["address"].as_str().ok_or_else(|| format!("CNI bridge gave no address: {result}"))?;
            let ip = address.split('/').next().unwrap_or_default().to_owned();
            self.keep_result(uid, &cidr, &result)?;
            if let Some(portmap) = self.portmap_config(pod, &result) {
                self.plugin("portmap", "ADD", uid, "eth0", &portmap).await?;
            }
            Ok::<_, String>(ip)
        }
        .await;
        if made.is_err() {
            let _ = self.del(uid, Some(pod)).await;
        }
        made
    }

    fn result_path(&self, uid: Uid) -> PathBuf {
        self.config.data_dir.join("results").join(format!("{uid}.json"))
    }

    /// Keeps the bridge's ADD `result` for the pod `uid` (with the pod CIDR it was made in),
    /// written whole or not at all.
    fn keep_result(&self, uid: Uid, cidr: &str, result: &serde_json::Value) -> Result<(), String> {
        let path = self.result_path(uid);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| format!("making {}: {e}", dir.display()))?;
        let bytes = serde_json::to_vec(&json!({ "podCIDR": cidr, "result": result })).map_err(|e| e.to_string())?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("keeping the CNI result in {}: {e}", path.display()))
    }

    /// The lock of the pod `uid`'s CHECK and DEL.
    fn pod_lock(&self, uid: Uid) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.pod_locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Locks nobody holds or waits for go (at most one per pod being checked or deleted).
        locks.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
        std::sync::Arc::clone(locks.entry(uid).or_default())
    }

    /// Checks the pod's network as the plugins see it (CNI CHECK, with the ADD's result as
    /// `prevResult`): the namespace, the address reserved by `host-local`, `eth0` with its
    /// address in the namespace, its veth on the bridge. `Ok(false)`: not checked, the ADD
    /// result was not kept (a pod made by an agent from before results were kept, or one
    /// whose DEL went through).
    ///
    /// # Errors
    /// The namespace is gone, or the plugin found the network broken.
    pub async fn check(&self, uid: Uid) -> Result<bool, String> {
        let lock = self.pod_lock(uid);
        let _held = lock.lock().await;
        let Some(kept) = self.kept_result(uid)? else { return Ok(false) };
        if !self.netns_path(uid).exists() {
            return Err("the pod's network namespace is gone".to_owned());
        }
        let cidr = kept["podCIDR"].as_str().ok_or_else(|| "the kept CNI result has no pod CIDR".to_owned())?;
        let mut config = self.bridge_config(cidr);
        config["prevResult"] = kept["result"].clone();
        self.plugin("bridge", "CHECK", uid, "eth0", &config).await.map(|_| true)
    }

    /// The bridge's ADD result kept for the pod `uid`, with its pod CIDR; none if none was kept.
    fn kept_result(&self, uid: Uid) -> Result<Option<serde_json::Value>, String> {
        let path = self.result_path(uid);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("the kept CNI result {} is unreadable: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading the kept CNI result {}: {e}", path.display())),
        }
    }

    /// Releases the pod's address and removes its namespace; idempotent.
    ///
    /// # Errors
    /// A plugin or `ip` failed (the caller tries again).
    pub async fn del(&self, uid: Uid, pod: Option<&Pod>) -> Result<(), String> {
        let lock = self.pod_lock(uid);
        let _held = lock.lock().await;
        // The ADD's result as `prevResult` and its pod CIDR, when they were kept (the
        // specification asks for the configuration and result of the ADD).
        let kept = self.kept_result(uid).ok().flatten();
        let cidr = kept
            .as_ref()
            .and_then(|k| k["podCIDR"].as_str().map(str::to_owned))
            .or_else(|| self.pod_cidr())
            .unwrap_or_else(|| self.config.cluster_cidr.clone());
        let prev = kept.as_ref().map_or_else(|| json!({ "cniVersion": CNI_VERSION }), |k| k["result"].clone());
        // Every step is tried, whatever the others did: a failed portmap DEL must not keep
        // the address and the namespace.
        let mut errors = Vec::new();
        if let Some(pod) = pod
            && let Some(portmap) = self.portmap_config(pod, &prev)
            && let Err(e) = self.plugin("portmap", "DEL", uid, "eth0", &portmap).await
        {
            tracing::warn!(%uid, error = %e, "removing a pod's port mappings failed");
        }
        let mut config = self.bridge_config(&cidr);
        if kept.is_some() {
            config["prevResult"] = prev;
        }
        match self.plugin("bridge", "DEL", uid, "eth0", &config).await {
            // Released: no CHECK may follow.
            Ok(_) => {
                let _ = std::fs::remove_file(self.result_path(uid));
            }
            Err(e) => errors.push(e),
        }
        if self.netns_path(uid).exists()
            && let Err(e) = ip(&["netns", "del", &self.netns_name(uid)])
        {
            errors.push(e);
        }
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// The pods that have namespaces of this agent.
    pub fn namespaces(&self) -> Vec<Uid> {
        let prefix = netns_prefix(&self.config.node, &self.config.data_dir);
        let Ok(entries) = std::fs::read_dir(NETNS_DIR) else { return Vec::new() };
        entries.flatten().filter_map(|e| e.file_name().to_str()?.strip_prefix(&prefix)?.parse().ok()).collect()
    }

    /// Sets the routes to the other nodes' pod CIDRs via their addresses (host-gw), and
    /// removes the ones to nodes that are gone; `routes` are (pod CIDR, node address).
    pub fn sync_routes(&self, routes: &[(String, String)], installed: &mut Vec<(String, String)>) {
        let own = self.pod_cidr();
        for (cidr, via) in routes {
            if Some(cidr) == own.as_ref() || installed.iter().any(|(c, v)| c == cidr && v == via) {
                continue;
            }
            match ip(&["route", "replace", cidr, "via", via]) {
                Ok(()) => installed.push((cidr.clone(), via.clone())),
                Err(e) => tracing::warn!(error = %e, "a route to another node's pods failed"),
            }
        }
        installed.retain(|(cidr, via)| {
            let keep = routes.iter().any(|(c, v)| c == cidr && v == via);
            if !keep {
                let _ = ip(&["route", "del", cidr, "via", via]);
            }
            keep
        });
    }
}
