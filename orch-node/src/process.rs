//! The process runtime: each pod a directory `<root>/<uid>` and a shim process
//! ([`crate::shim`]) that owns its containers; each container run a process (its `command`
//! and `args`, its `env`, its `workingDir`) started through [`crate::exec`] in the pod's
//! cgroups ([`crate::cgroups`]), its output in `<root>/<uid>/logs/<container>/<run>.log`
//! (rotated). The image is not pulled: the command runs from the node's own filesystem.
//!
//! A restarted agent finds each pod by its directory (`pod.json`) and its runs through its
//! shim's socket; a pod whose shim is gone is cleaned up (whatever still runs in its cgroups
//! is killed) and not reported, so its pod is started afresh.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_core::agent::{Exit, Found, RuntimeEvent};
use orch_core::core_v1::Pod;
use orch_core::ids::Uid;
use orch_core::object::{Kind, ObjectKey};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use crate::cgroups::Cgroups;
use crate::exec::DEFAULT_PATH;
use crate::network::Network;
use crate::runtime::{FoundPod, Runtime};
use crate::shim::proto::{LINE_BYTES_MAX, Request, Response, RunInfo, StartSpec};
use crate::shim::{self, SOCKET};

/// The most bytes of a unix socket's path (`sun_path`, with its NUL).
const SOCKET_PATH_BYTES_MAX: usize = 107;
/// The most output of an exec kept.
pub const EXEC_OUTPUT_BYTES_MAX: usize = 1 << 20;
/// How long a new shim has to open its socket.
const SHIM_START: Duration = Duration::from_secs(10);
/// How long a shim has to answer a request (beyond the wait of a state request).
const SHIM_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The process runtime's settings.
#[derive(Clone, Debug)]
pub struct ProcessConfig {
    /// Where the pods' directories go.
    pub root: PathBuf,
    /// The binary that runs as shim and exec helper (this agent's own, normally).
    pub exe: PathBuf,
    /// The cgroups, if any are usable.
    pub cgroups: Option<Cgroups>,
    /// The size at which a container's log is rotated.
    pub log_max_bytes: u64,
    /// How many log files a container run keeps.
    pub log_files: u32,
    /// The pod network; none: pods share the host's network.
    pub network: Option<Arc<Network>>,
    /// Directories appended to the containers' default `PATH` (the development mode adds
    /// the one of the binaries built beside orchd, so examples can run `orch-hello`).
    pub extra_path: Option<String>,
}

/// What a pod's directory records of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PodFile {
    namespace: String,
    name: String,
    uid: String,
    ip: Option<String>,
    /// The pod as it was when its sandbox was made (its ports, for the network's DEL).
    pod: Option<Pod>,
}

/// A container's variables, in order.
type Env = Vec<(String, String)>;

/// The process runtime.
pub struct ProcessRuntime {
    config: ProcessConfig,
    events: mpsc::Sender<RuntimeEvent>,
    /// Each pod's container specs, kept for exec.
    pods: Mutex<BTreeMap<Uid, Arc<Pod>>>,
    /// The pods whose shims are being followed.
    watching: Arc<Mutex<std::collections::BTreeSet<Uid>>>,
    /// Each container's variables as last started (for exec).
    envs: Mutex<BTreeMap<(Uid, String), Env>>,
    /// The version of each pod's volumes in place; held while they are written.
    volume_versions: tokio::sync::Mutex<BTreeMap<Uid, u64>>,
}

pub use orch_core::agent::config::expand;

/// Sends `request` on a new connection to the shim at `dir`; its answer, within
/// [`SHIM_CALL_TIMEOUT`] (beyond the wait a state request asks for).
async fn call(dir: &Path, request: &Request) -> Result<Response, String> {
    let wait = match request {
        Request::State { wait_ms, .. } => Duration::from_millis(*wait_ms),
        _ => Duration::ZERO,
    };
    let exchange = async {
        let mut stream =
            UnixStream::connect(dir.join(SOCKET)).await.map_err(|e| format!("shim of {}: {e}", dir.display()))?;
        let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
        line.push('\n');
        stream.write_all(line.as_bytes()).await.map_err(|e| format!("shim: {e}"))?;
        read_response(&mut BufReader::new(stream)).await
    };
    tokio::time::timeout(wait + SHIM_CALL_TIMEOUT, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("the shim of {} did not answer in time", dir.display())))
}

/// Whether the shim of the pod directory `dir` is alive (its recorded pid is a shim of it).
fn shim_alive(dir: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(dir.join("shim.pid")).ok().and_then(|p| p.trim().parse::<i32>().ok())
    else {
        return false;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let text = String::from_utf8_lossy(&cmdline);
    text.contains(shim::ARG) && text.contains(&*dir.to_string_lossy())
}

/// SIGKILLs the shim of `dir`, if it is alive.
fn kill_shim(dir: &Path) {
    if shim_alive(dir)
        && let Some(pid) = std::fs::read_to_string(dir.join("shim.pid")).ok().and_then(|p| p.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

async fn read_response(reader: &mut BufReader<UnixStream>) -> Result<Response, String> {
    let mut line = String::new();
    let n = reader.take(LINE_BYTES_MAX as u64 + 1).read_line(&mut line).await.map_err(|e| format!("shim: {e}"))?;
    if n == 0 || line.len() > LINE_BYTES_MAX {
        return Err("the shim closed the connection or answered too much".to_owned());
    }
    serde_json::from_str(&line).map_err(|e| format!("shim answered nonsense: {e}"))
}

fn found(run: &RunInfo) -> Found {
    Found {
        name: run.name.clone(),
        attempt: run.attempt,
        started_ms: run.started_ms,
        exit: run.exit.map(|e| (Exit { code: e.code, signal: e.signal, oom_killed: e.oom_killed }, e.finished_ms)),
    }
}

impl ProcessRuntime {
    /// The runtime; what happens by itself is reported on `events`.
    ///
    /// # Errors
    /// The root cannot be made, or is too deep for the shims' sockets.
    pub fn new(config: ProcessConfig, events: mpsc::Sender<RuntimeEvent>) -> Result<Self, String> {
        std::fs::create_dir_all(&config.root).map_err(|e| format!("making {}: {e}", config.root.display()))?;
        let socket = config.root.join("00000000-0000-0000-0000-000000000000").join(SOCKET);
        if socket.as_os_str().len() > SOCKET_PATH_BYTES_MAX {
            return Err(format!(
                "the pod directory {} is too deep: a shim's socket path must be at most {SOCKET_PATH_BYTES_MAX} bytes",
                config.root.display()
            ));
        }
        Ok(Self {
            config,
            events,
            pods: Mutex::new(BTreeMap::new()),
            watching: Arc::default(),
            envs: Mutex::default(),
            volume_versions: tokio::sync::Mutex::default(),
        })
    }

    fn dir(&self, uid: Uid) -> PathBuf {
        self.config.root.join(uid.to_string())
    }

    /// The pod's network, when it has one of its own (pods do, but on the host's network:
    /// `hostNetwork`, or an agent without a pod network).
    fn network_of(&self, pod: &Pod) -> Option<&Arc<Network>> {
        self.config.network.as_ref().filter(|_| pod.spec.host_network != Some(true))
    }

    /// The pod's network namespace, when it has a network of its own.
    fn netns(&self, uid: Uid, pod: &Pod) -> Option<PathBuf> {
        self.network_of(pod).map(|n| n.netns_path(uid))
    }

    /// The bind mounts of a run of the pod's `container`: the pod's own `/etc/hosts` and
    /// `/etc/resolv.conf` when it has a network of its own, then the container's volumes.
    fn mounts(
        &self,
        uid: Uid,
        pod: &Pod,
        container: &orch_core::core_v1::Container,
    ) -> Result<Vec<(PathBuf, PathBuf, bool)>, String> {
        let mut out = Vec::new();
        if self.network_of(pod).is_some() {
            let dir = self.dir(uid).join("etc");
            out.push((dir.join("hosts"), PathBuf::from("/etc/hosts"), true));
            out.push((dir.join("resolv.conf"), PathBuf::from("/etc/resolv.conf"), true));
        }
        out.extend(crate::volumes::mounts(&self.dir(uid), &pod.spec, container)?);
        Ok(out)
    }

    /// Puts the pod's volumes in place as of `volumes`, unless a newer version is.
    async fn apply_volumes(&self, uid: Uid, volumes: Arc<orch_core::agent::Volumes>) -> Result<(), String> {
        let mut versions = self.volume_versions.lock().await;
        if versions.get(&uid).is_some_and(|v| *v >= volumes.generation) {
            return Ok(());
        }
        let dir = self.dir(uid);
        let generation = volumes.generation;
        tokio::task::spawn_blocking(move || crate::volumes::set_up(&dir, &volumes))
            .await
            .map_err(|e| e.to_string())??;
        versions.insert(uid, generation);
        Ok(())
    }

    fn pod_file(&self, uid: Uid) -> Option<PodFile> {
        std::fs::read(self.dir(uid).join("pod.json")).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    fn remember(&self, uid: Uid, pod: Arc<Pod>) {
        self.pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(uid, pod);
    }

    /// Follows the shim of pod `uid`: each run's exit, once, as a [`RuntimeEvent`]. `seen` are
    /// the runs already known (and whether they ended). A shim found dead ends its live runs
    /// (exit code 255, as a runtime reports a container it lost) after killing what is left
    /// in the pod's cgroups; the next start makes a new shim.
    fn watch(&self, uid: Uid, mut seen: BTreeMap<String, (u32, bool)>) {
        if !self.watching.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(uid) {
            return;
        }
        let dir = self.dir(uid);
        let events = self.events.clone();
        let watching = Arc::clone(&self.watching);
        let cgroups = self.config.cgroups.clone();
        tokio::spawn(async move {
            let mut version = 0;
            let mut pause = Duration::from_millis(50);
            loop {
                let request = Request::State { after: version, wait_ms: 30_000 };
                match call(&dir, &request).await {
                    Ok(Response::State { version: v, runs }) => {
                        pause = Duration::from_millis(50);
                        version = v;
                        for run in runs {
                            let Some(exit) = run.exit else {
                                seen.insert(run.name.clone(), (run.attempt, false));
                                continue;
                            };
                            if seen.get(&run.name) == Some(&(run.attempt, true)) {
                                continue;
                            }
                            seen.insert(run.name.clone(), (run.attempt, true));
                            let exit = Exit { code: exit.code, signal: exit.signal, oom_killed: exit.oom_killed };
                            let event =
                                RuntimeEvent::ContainerExited { uid, container: run.name, attempt: run.attempt, exit };
                            if events.send(event).await.is_err() {
                                break;
                            }
                        }
                    }
                    _ if !dir.exists() => break,
                    _ if !shim_alive(&dir) => {
                        tracing::warn!(%uid, "a pod's shim died; its runs are ended and started again");
                        if let Some(cg) = &cgroups {
                            for pod in cg.pod(uid) {
                                kill_tree(&pod);
                            }
                        }
                        for (name, (attempt, ended)) in &seen {
                            if !ended {
                                let exit = Exit { code: 255, signal: None, oom_killed: false };
                                let event = RuntimeEvent::ContainerExited {
                                    uid,
                                    container: name.clone(),
                                    attempt: *attempt,
                                    exit,
                                };
                                let _ = events.send(event).await;
                            }
                        }
                        break;
                    }
                    _ => {
                        // Alive but not answering: ask again, less and less often.
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                }
            }
            watching.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&uid);
        });
    }

    /// Makes sure the pod has a live shim: starts one if there is none (a new sandbox, or
    /// one whose shim died) and follows it.
    async fn ensure_shim(&self, uid: Uid) -> Result<(), String> {
        let dir = self.dir(uid);
        if let Ok(Response::State { runs, .. }) = call(&dir, &Request::State { after: 0, wait_ms: 0 }).await {
            self.watch(uid, runs.iter().map(|r| (r.name.clone(), (r.attempt, r.exit.is_some()))).collect());
            return Ok(());
        }
        if shim_alive(&dir) {
            return Err("the pod's shim does not answer".to_owned());
        }
        let log = std::fs::File::create(dir.join("shim.log")).map_err(|e| format!("shim log: {e}"))?;
        let mut child = tokio::process::Command::new(&self.config.exe)
            .arg(shim::ARG)
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| format!("starting the shim: {e}"))?;
        // Reaped if it ends while this agent runs.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        let deadline = tokio::time::Instant::now() + SHIM_START;
        while call(&dir, &Request::State { after: 0, wait_ms: 0 }).await.is_err() {
            if tokio::time::Instant::now() >= deadline {
                kill_shim(&dir);
                return Err("the pod's shim did not start".to_owned());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.watch(uid, BTreeMap::new());
        Ok(())
    }

    /// The pod `namespace/name` this runtime has: its uid and directory.
    pub fn find(&self, namespace: &str, name: &str) -> Option<(Uid, PathBuf)> {
        let entries = std::fs::read_dir(&self.config.root).ok()?;
        entries.flatten().find_map(|e| {
            let uid: Uid = e.file_name().to_str()?.parse().ok()?;
            let file = self.pod_file(uid)?;
            (file.namespace == namespace && file.name == name).then(|| (uid, e.path()))
        })
    }

    /// Whether the pod `uid` (as its directory records it) has a container `name`.
    pub fn has_container(&self, uid: Uid, name: &str) -> bool {
        self.pod_file(uid).and_then(|f| f.pod).is_some_and(|p| p.spec.containers.iter().any(|c| c.name == name))
    }

    /// Whether run `attempt` of the pod's container `name` is still going (as its shim says).
    pub async fn run_live(&self, uid: Uid, name: &str, attempt: u32) -> bool {
        match call(&self.dir(uid), &Request::State { after: 0, wait_ms: 0 }).await {
            Ok(Response::State { runs, .. }) => {
                runs.iter().any(|r| r.name == name && r.attempt == attempt && r.exit.is_none())
            }
            _ => false,
        }
    }

    /// Forgets the runs of container `name` numbered below `keep_from` (the kubelet keeps a
    /// container's current and previous runs): their spec files, logs and cgroups.
    fn forget_runs_before(&self, uid: Uid, name: &str, keep_from: u32) {
        let dir = self.dir(uid);
        // `<run>.log`, `<run>.log.<n>`; `<name>-<run>.json`.
        let number = |file: &str| file.split('.').next().and_then(|p| p.parse::<u32>().ok());
        if let Ok(entries) = std::fs::read_dir(dir.join("runs")) {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                let run = file.strip_prefix(&format!("{name}-")).and_then(|r| r.strip_suffix(".json"));
                if run.and_then(|r| r.parse::<u32>().ok()).is_some_and(|n| n < keep_from) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("logs").join(name)) {
            for e in entries.flatten() {
                if number(&e.file_name().to_string_lossy()).is_some_and(|n| n < keep_from) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if let Some(cgroups) = &self.config.cgroups {
            for pod in cgroups.pod(uid) {
                for attempt in keep_from.saturating_sub(8)..keep_from {
                    let _ = std::fs::remove_dir(pod.join(format!("{name}-{attempt}")));
                }
            }
        }
    }
}

/// Kills what runs in a pod's cgroups and removes them and its directory `dir` (blocking:
/// it waits for the cgroups to empty, at most a second).
fn clean(dir: &Path, cgroups: Option<&Cgroups>, uid: Uid) {
    if let Some(cgroups) = cgroups {
        for pod in cgroups.pod(uid) {
            kill_tree(&pod);
        }
        for _ in 0..50 {
            if cgroups.remove_pod(uid) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    crate::volumes::tear_down(dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// SIGKILLs every process in a cgroup tree.
fn kill_tree(path: &Path) {
    if let Ok(text) = std::fs::read_to_string(path.join("cgroup.procs")) {
        for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
            kill_tree(&e.path());
        }
    }
}

/// The environment of a container: `PATH` (the kubelet's default, then `extra_path`),
/// `HOSTNAME`, then its own variables `own` (resolved by the agent's core,
/// [`orch_core::agent::config::environment`]).
pub fn environment(pod: &Pod, own: &[(String, String)], extra_path: Option<&str>) -> Vec<(String, String)> {
    let path = match extra_path {
        Some(extra) if !extra.is_empty() => format!("{DEFAULT_PATH}:{extra}"),
        _ => DEFAULT_PATH.to_owned(),
    };
    let mut env = vec![
        ("PATH".to_owned(), path),
        ("HOSTNAME".to_owned(), pod.spec.hostname.as_deref().unwrap_or(&pod.metadata.name).to_owned()),
    ];
    for (name, value) in own {
        env.retain(|(k, _)| k != name);
        env.push((name.clone(), value.clone()));
    }
    env
}

impl Runtime for ProcessRuntime {
    async fn create_sandbox(&self, uid: Uid, pod: Arc<Pod>) -> Result<Option<String>, String> {
        let dir = self.dir(uid);
        std::fs::create_dir_all(&dir).map_err(|e| format!("making {}: {e}", dir.display()))?;
        // Its run specs hold the containers' variables (Secrets' values among them), its
        // volumes the Secrets' files: the agent's user alone may read them.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| format!("making {} private: {e}", dir.display()))?;
        let ip = match self.network_of(&pod) {
            Some(network) => {
                let ip = network.add(uid, &pod).await?;
                write_etc(&dir, &pod, &ip)?;
                Some(ip)
            }
            None => None,
        };
        let record = PodFile {
            namespace: pod.metadata.namespace_str().to_owned(),
            name: pod.metadata.name.to_string(),
            uid: uid.to_string(),
            ip: ip.clone(),
            pod: Some(Pod { status: Default::default(), ..(*pod).clone() }),
        };
        let pod_spec = (*pod).clone();
        let text = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("pod.json"), text).map_err(|e| format!("writing pod.json: {e}"))?;
        self.remember(uid, pod);
        if let Err(e) = self.ensure_shim(uid).await {
            self.pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&uid);
            if let (Some(network), Some(_)) = (self.network_of(&pod_spec), &ip) {
                let _ = network.del(uid, Some(&pod_spec)).await;
            }
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(ip)
    }

    async fn start(
        &self,
        uid: Uid,
        pod: Arc<Pod>,
        container: usize,
        attempt: u32,
        _ip: Option<String>,
        own_env: Vec<(String, String)>,
        volumes: Arc<orch_core::agent::Volumes>,
    ) -> Result<(), (&'static str, String)> {
        const CONFIG: &str = orch_core::agent::CREATE_CONTAINER_CONFIG_ERROR;
        let Some(c) = pod.spec.containers.get(container) else { return Err((CONFIG, "no such container".to_owned())) };
        self.remember(uid, pod.clone());
        // `$(VAR)` in command and args names the container's own variables, as Kubernetes.
        let argv: Vec<String> = c.command.iter().chain(&c.args).map(|a| expand(a, &own_env)).collect();
        let env = environment(&pod, &own_env, self.config.extra_path.as_deref());
        self.envs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert((uid, c.name.to_string()), own_env);
        self.apply_volumes(uid, volumes).await.map_err(|e| (CONFIG, format!("setting up volumes: {e}")))?;
        let mounts = self.mounts(uid, &pod, c).map_err(|e| (CONFIG, e))?;
        let cgroups = match &self.config.cgroups {
            Some(cg) => cg
                .container(uid, &c.name, attempt, &c.resources.limits)
                .map_err(|e| (CONFIG, format!("making the container's cgroups: {e}")))?,
            None => Vec::new(),
        };
        let dir = self.dir(uid);
        self.ensure_shim(uid).await.map_err(|e| (orch_core::agent::RUN_CONTAINER_ERROR, e))?;
        self.forget_runs_before(uid, &c.name, attempt.saturating_sub(1));
        let spec = StartSpec {
            name: c.name.to_string(),
            attempt,
            argv,
            env,
            cwd: c.working_dir.as_ref().map(ToString::to_string),
            netns: self.netns(uid, &pod),
            cgroups,
            mounts,
            log: dir.join("logs").join(c.name.as_str()).join(format!("{attempt}.log")),
            log_max_bytes: self.config.log_max_bytes,
            log_files: self.config.log_files,
        };
        match call(&dir, &Request::Start(spec)).await {
            Ok(Response::Started { .. }) => Ok(()),
            Ok(Response::Failed { reason, message }) => {
                let reason = if reason == CONFIG { CONFIG } else { orch_core::agent::RUN_CONTAINER_ERROR };
                Err((reason, message))
            }
            Ok(other) => Err((orch_core::agent::RUN_CONTAINER_ERROR, format!("{other:?}"))),
            Err(e) => Err((orch_core::agent::RUN_CONTAINER_ERROR, e)),
        }
    }

    async fn signal(&self, uid: Uid, container: &str, attempt: u32, signal: i32) {
        let request = Request::Signal { name: container.to_owned(), attempt, signal };
        let _ = call(&self.dir(uid), &request).await;
    }

    async fn kill(&self, uid: Uid, container: &str, attempt: u32) {
        let _ = call(&self.dir(uid), &Request::Kill { name: container.to_owned(), attempt }).await;
    }

    async fn update_volumes(&self, uid: Uid, volumes: Arc<orch_core::agent::Volumes>) -> Result<(), String> {
        // Not before the sandbox: its first container's start puts them in place.
        if !self.dir(uid).join("pod.json").exists() {
            return Ok(());
        }
        self.apply_volumes(uid, volumes).await
    }

    async fn kill_pod(&self, uid: Uid) {
        let cgroups = self.config.cgroups.as_ref().map(|c| c.pod(uid)).unwrap_or_default();
        if call(&self.dir(uid), &Request::KillAll { cgroups: cgroups.clone() }).await.is_err() {
            for c in &cgroups {
                kill_tree(c);
            }
        }
    }

    async fn remove_sandbox(&self, uid: Uid) -> Result<(), String> {
        let dir = self.dir(uid);
        if call(&dir, &Request::Shutdown).await.is_err() {
            // Dead or stuck: whatever it ran is killed with the pod's cgroups below.
            kill_shim(&dir);
        }
        if let Some(network) = &self.config.network {
            let pod = self.pod_file(uid).and_then(|f| f.pod);
            if pod.as_ref().is_none_or(|p| p.spec.host_network != Some(true)) {
                network.del(uid, pod.as_ref()).await?;
            }
        }
        self.pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&uid);
        self.envs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|(u, _), _| *u != uid);
        self.volume_versions.lock().await.remove(&uid);
        let (root, cgroups) = (self.dir(uid), self.config.cgroups.clone());
        tokio::task::spawn_blocking(move || clean(&root, cgroups.as_ref(), uid)).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn exec(
        &self,
        uid: Uid,
        container: &str,
        argv: Vec<String>,
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>), String> {
        let pod = self.pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&uid).cloned();
        let pod = pod.ok_or_else(|| "no such pod here".to_owned())?;
        let c =
            pod.spec.containers.iter().find(|c| c.name == container).ok_or_else(|| "no such container".to_owned())?;
        let own = self
            .envs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(uid, c.name.to_string()))
            .cloned();
        // After an agent restart (until the container starts again): the plain values of its
        // spec; those from ConfigMaps, Secrets and fields are not known here.
        let own = own.unwrap_or_else(|| {
            let mut env: Vec<(String, String)> = Vec::new();
            for var in c.env.iter().filter(|v| v.value_from.is_none()) {
                let value = expand(var.value.as_deref().unwrap_or_default(), &env);
                env.retain(|(k, _)| k != var.name.as_str());
                env.push((var.name.to_string(), value));
            }
            env
        });
        let env = environment(&pod, &own, self.config.extra_path.as_deref());
        let spec = StartSpec {
            name: c.name.to_string(),
            attempt: 0,
            argv,
            env,
            cwd: c.working_dir.as_ref().map(ToString::to_string),
            netns: self.netns(uid, &pod),
            cgroups: Vec::new(),
            mounts: self.mounts(uid, &pod, c)?,
            log: PathBuf::new(),
            log_max_bytes: 0,
            log_files: 0,
        };
        let dir = self.dir(uid).join("exec");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let file = tempfile_in(&dir, &spec)?;
        let child = tokio::process::Command::new(&self.config.exe)
            .arg(crate::exec::ARG)
            .arg(&file)
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("exec: {e}"));
        let result = match child {
            Ok(mut child) => {
                let pid = child.id().and_then(|p| i32::try_from(p).ok());
                let (out, err) = (child.stdout.take(), child.stderr.take());
                let run = async {
                    // At most EXEC_OUTPUT_BYTES_MAX of each stream is kept; the rest is not read.
                    let read = |s: Option<tokio::process::ChildStdout>| async move {
                        let mut buf = Vec::new();
                        if let Some(s) = s {
                            let _ = s.take(EXEC_OUTPUT_BYTES_MAX as u64).read_to_end(&mut buf).await;
                        }
                        buf
                    };
                    let read_err = |s: Option<tokio::process::ChildStderr>| async move {
                        let mut buf = Vec::new();
                        if let Some(s) = s {
                            let _ = s.take(EXEC_OUTPUT_BYTES_MAX as u64).read_to_end(&mut buf).await;
                        }
                        buf
                    };
                    let (mut output, errors) = tokio::join!(read(out), read_err(err));
                    let status = child.wait().await;
                    output.extend_from_slice(&errors);
                    output.truncate(EXEC_OUTPUT_BYTES_MAX);
                    status.map(|s| (s.code().unwrap_or(128), output)).map_err(|e| format!("exec: {e}"))
                };
                let result = tokio::time::timeout(timeout, run).await;
                // Read by the helper before it ran the command: it holds the variables.
                let _ = std::fs::remove_file(&file);
                match result {
                    Ok(result) => result,
                    Err(_) => {
                        // The whole process group: what the command started goes with it.
                        if let Some(pid) = pid {
                            let _ = nix::sys::signal::killpg(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                        Err(format!("command timed out after {}s", timeout.as_secs_f64()))
                    }
                }
            }
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&file);
        result
    }

    async fn found(&self) -> Vec<FoundPod> {
        let mut out = Vec::new();
        // The adopted pods with a network of their own, for CNI CHECK.
        let mut checked = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.config.root) else { return out };
        for e in entries.flatten() {
            let Some(uid) = e.file_name().to_str().and_then(|n| n.parse::<Uid>().ok()) else { continue };
            let dir = e.path();
            let record: Option<PodFile> =
                std::fs::read(dir.join("pod.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
            let state = call(&dir, &Request::State { after: 0, wait_ms: 0 }).await;
            match (record, state) {
                (Some(record), Ok(Response::State { runs, .. })) => {
                    if record.ip.is_some() && record.pod.as_ref().is_some_and(|p| self.network_of(p).is_some()) {
                        checked.push(uid);
                    }
                    let seen = runs.iter().map(|r| (r.name.clone(), (r.attempt, r.exit.is_some()))).collect();
                    self.watch(uid, seen);
                    // Its spec, for exec probes before the watch brings the pod.
                    if let Some(pod) = &record.pod {
                        self.remember(uid, Arc::new(pod.clone()));
                    }
                    out.push(FoundPod {
                        key: ObjectKey::new(Kind::Pod, &record.namespace, &record.name),
                        uid,
                        ip: record.ip,
                        containers: runs.iter().map(found).collect(),
                    });
                }
                (record, _) => {
                    kill_shim(&dir);
                    if let Some(network) = &self.config.network {
                        let pod = record.and_then(|r| r.pod);
                        if let Err(e) = network.del(uid, pod.as_ref()).await {
                            tracing::warn!(%uid, error = %e, "releasing a leftover pod network failed");
                        }
                    }
                    let (root, cgroups) = (self.dir(uid), self.config.cgroups.clone());
                    let _ = tokio::task::spawn_blocking(move || clean(&root, cgroups.as_ref(), uid)).await;
                }
            }
        }
        // CNI CHECK of each adopted pod's network, in the background (the agent goes on to
        // register and heartbeat): reported, not acted on. A failure may be the pod's (its
        // eth0 gone) or the bridge's alone (a capture's promiscuous mode fails it too), and
        // a new sandbox would cost the pod its emptyDir data and run a `Never` pod again.
        if let Some(network) = &self.config.network
            && !checked.is_empty()
        {
            let network = Arc::clone(network);
            tokio::spawn(async move {
                for uid in checked {
                    match network.check(uid).await {
                        Ok(true) => tracing::info!(%uid, "an adopted pod's network passes the CNI CHECK"),
                        Ok(false) => {
                            tracing::debug!(%uid, "an adopted pod's network is not checked: no ADD result kept")
                        }
                        Err(e) => tracing::warn!(%uid, error = %e, "an adopted pod's network fails the CNI CHECK"),
                    }
                }
            });
        }
        // Namespaces of this agent's pods without a directory are leftovers too.
        if let Some(network) = &self.config.network {
            for uid in network.namespaces() {
                if !out.iter().any(|p| p.uid == uid)
                    && let Err(e) = network.del(uid, None).await
                {
                    tracing::warn!(%uid, error = %e, "releasing a leftover pod network failed");
                }
            }
        }
        // Cgroups of pods without a directory are leftovers too.
        if let Some(cgroups) = &self.config.cgroups {
            for uid in cgroups.pods() {
                if !out.iter().any(|p| p.uid == uid) && !self.dir(uid).exists() {
                    clean(&self.dir(uid), self.config.cgroups.as_ref(), uid);
                }
            }
        }
        out
    }
}

/// Writes the pod's own `/etc/hosts` (localhost and its name at its address, as the kubelet's)
/// and `/etc/resolv.conf` (the host's) into `<dir>/etc`.
fn write_etc(dir: &Path, pod: &Pod, ip: &str) -> Result<(), String> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc).map_err(|e| format!("making {}: {e}", etc.display()))?;
    let name = pod.spec.hostname.as_deref().unwrap_or(&pod.metadata.name);
    let hosts = format!(
        "# Kubernetes-managed hosts file (orch-node).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{name}\n"
    );
    std::fs::write(etc.join("hosts"), hosts).map_err(|e| format!("writing hosts: {e}"))?;
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    std::fs::write(etc.join("resolv.conf"), resolv).map_err(|e| format!("writing resolv.conf: {e}"))?;
    Ok(())
}

/// Writes `spec` to a new file in `dir`; its path.
fn tempfile_in(dir: &Path, spec: &StartSpec) -> Result<PathBuf, String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{}-{n}.json", std::process::id()));
    let text = serde_json::to_vec(spec).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_expand_variables_as_kubernetes() {
        let env = vec![("A".to_owned(), "1".to_owned()), ("B".to_owned(), "two".to_owned())];
        assert_eq!(expand("x$(A)y$(B)", &env), "x1ytwo");
        assert_eq!(expand("$$(A) $(C) $ $(A", &env), "$(A) $(C) $ $(A");
        assert_eq!(expand("", &env), "");
    }
}
