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
use crate::runtime::{FoundPod, Runtime};
use crate::shim::proto::{LINE_BYTES_MAX, Request, Response, RunInfo, StartSpec};
use crate::shim::{self, SOCKET};

/// The most bytes of a unix socket's path (`sun_path`, with its NUL).
const SOCKET_PATH_BYTES_MAX: usize = 107;
/// The most output of an exec kept.
pub const EXEC_OUTPUT_BYTES_MAX: usize = 1 << 20;
/// How long a new shim has to open its socket.
const SHIM_START: Duration = Duration::from_secs(10);

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
}

/// What a pod's directory records of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PodFile {
    namespace: String,
    name: String,
    uid: String,
    ip: Option<String>,
}

/// The process runtime.
pub struct ProcessRuntime {
    config: ProcessConfig,
    events: mpsc::Sender<RuntimeEvent>,
    /// Each pod's container specs, kept for exec.
    pods: Mutex<BTreeMap<Uid, Arc<Pod>>>,
}

/// `$(VAR)` in `s` replaced with `env`'s VAR, `$$` with `$`, other text kept (Kubernetes'
/// expansion of `command` and `args`).
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some((_, v)) = env.iter().rev().find(|(k, _)| k == &inner[..end])
        {
            out.push_str(v);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Sends `request` on a new connection to the shim at `dir`; its answer.
async fn call(dir: &Path, request: &Request) -> Result<Response, String> {
    let mut stream =
        UnixStream::connect(dir.join(SOCKET)).await.map_err(|e| format!("shim of {}: {e}", dir.display()))?;
    let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
    line.push('\n');
    stream.write_all(line.as_bytes()).await.map_err(|e| format!("shim: {e}"))?;
    read_response(&mut BufReader::new(stream)).await
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
        Ok(Self { config, events, pods: Mutex::new(BTreeMap::new()) })
    }

    fn dir(&self, uid: Uid) -> PathBuf {
        self.config.root.join(uid.to_string())
    }

    fn remember(&self, uid: Uid, pod: Arc<Pod>) {
        self.pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(uid, pod);
    }

    /// Follows the shim of pod `uid`: each run's exit, once, as a [`RuntimeEvent`]. `seen` are
    /// the exits already known.
    fn watch(&self, uid: Uid, mut seen: BTreeMap<String, (u32, bool)>) {
        let dir = self.dir(uid);
        let events = self.events.clone();
        tokio::spawn(async move {
            let mut version = 0;
            let mut failures = 0u32;
            loop {
                let request = Request::State { after: version, wait_ms: 30_000 };
                match call(&dir, &request).await {
                    Ok(Response::State { version: v, runs }) => {
                        failures = 0;
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
                                return;
                            }
                        }
                    }
                    _ => {
                        // The shim is gone (the sandbox was removed) or not answering.
                        failures += 1;
                        if failures > 50 || !dir.join(SOCKET).exists() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }

    /// Kills what runs in a pod's cgroups and removes them and its directory.
    fn clean(&self, uid: Uid) {
        if let Some(cgroups) = &self.config.cgroups {
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
        let _ = std::fs::remove_dir_all(self.dir(uid));
    }
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

/// The environment of a container: `PATH` (the kubelet's default), `HOSTNAME`, then its own.
pub fn environment(pod: &Pod, container: &orch_core::core_v1::Container) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), DEFAULT_PATH.to_owned()),
        ("HOSTNAME".to_owned(), pod.spec.hostname.as_deref().unwrap_or(&pod.metadata.name).to_owned()),
    ];
    for var in &container.env {
        let value = var.value.as_deref().unwrap_or_default();
        let value = expand(value, &env);
        env.retain(|(k, _)| k != var.name.as_str());
        env.push((var.name.to_string(), value));
    }
    env
}

impl Runtime for ProcessRuntime {
    async fn create_sandbox(&self, uid: Uid, pod: Arc<Pod>) -> Result<Option<String>, String> {
        let dir = self.dir(uid);
        std::fs::create_dir_all(&dir).map_err(|e| format!("making {}: {e}", dir.display()))?;
        let record = PodFile {
            namespace: pod.metadata.namespace_str().to_owned(),
            name: pod.metadata.name.to_string(),
            uid: uid.to_string(),
            ip: None,
        };
        let text = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("pod.json"), text).map_err(|e| format!("writing pod.json: {e}"))?;
        self.remember(uid, pod);
        if call(&dir, &Request::State { after: 0, wait_ms: 0 }).await.is_err() {
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
                    return Err("the pod's shim did not start".to_owned());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        self.watch(uid, BTreeMap::new());
        Ok(None)
    }

    async fn start(
        &self,
        uid: Uid,
        pod: Arc<Pod>,
        container: usize,
        attempt: u32,
        _ip: Option<String>,
    ) -> Result<(), (&'static str, String)> {
        const CONFIG: &str = orch_core::agent::CREATE_CONTAINER_CONFIG_ERROR;
        let Some(c) = pod.spec.containers.get(container) else { return Err((CONFIG, "no such container".to_owned())) };
        self.remember(uid, pod.clone());
        let env = environment(&pod, c);
        let argv: Vec<String> = c.command.iter().chain(&c.args).map(|a| expand(a, &env)).collect();
        let cgroups = match &self.config.cgroups {
            Some(cg) => cg
                .container(uid, &c.name, attempt, &c.resources.limits)
                .map_err(|e| (CONFIG, format!("making the container's cgroups: {e}")))?,
            None => Vec::new(),
        };
        let dir = self.dir(uid);
        let spec = StartSpec {
            name: c.name.to_string(),
            attempt,
            argv,
            env,
            cwd: c.working_dir.as_ref().map(ToString::to_string),
            netns: None,
            cgroups,
            mounts: Vec::new(),
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

    async fn kill_pod(&self, uid: Uid) {
        let cgroups = self.config.cgroups.as_ref().map(|c| c.pod(uid)).unwrap_or_default();
        let _ = call(&self.dir(uid), &Request::KillAll { cgroups }).await;
    }

    async fn remove_sandbox(&self, uid: Uid) -> Result<(), String> {
        let _ = call(&self.dir(uid), &Request::Shutdown).await;
        self.pods.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&uid);
        self.clean(uid);
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
        let env = environment(&pod, c);
        let spec = StartSpec {
            name: c.name.to_string(),
            attempt: 0,
            argv,
            env,
            cwd: c.working_dir.as_ref().map(ToString::to_string),
            netns: None,
            cgroups: Vec::new(),
            mounts: Vec::new(),
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
            Ok(child) => match tokio::time::timeout(timeout, child.wait_with_output()).await {
                Ok(Ok(out)) => {
                    let mut output = out.stdout;
                    output.extend_from_slice(&out.stderr);
                    output.truncate(EXEC_OUTPUT_BYTES_MAX);
                    Ok((out.status.code().unwrap_or(128), output))
                }
                Ok(Err(e)) => Err(format!("exec: {e}")),
                Err(_) => Err(format!("command timed out after {}s", timeout.as_secs_f64())),
            },
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&file);
        result
    }

    async fn found(&self) -> Vec<FoundPod> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.config.root) else { return out };
        for e in entries.flatten() {
            let Some(uid) = e.file_name().to_str().and_then(|n| n.parse::<Uid>().ok()) else { continue };
            let dir = e.path();
            let record: Option<PodFile> =
                std::fs::read(dir.join("pod.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
            let state = call(&dir, &Request::State { after: 0, wait_ms: 0 }).await;
            match (record, state) {
                (Some(record), Ok(Response::State { runs, .. })) => {
                    let seen = runs.iter().map(|r| (r.name.clone(), (r.attempt, r.exit.is_some()))).collect();
                    self.watch(uid, seen);
                    out.push(FoundPod {
                        key: ObjectKey::new(Kind::Pod, &record.namespace, &record.name),
                        uid,
                        ip: record.ip,
                        containers: runs.iter().map(found).collect(),
                    });
                }
                _ => self.clean(uid),
            }
        }
        // Cgroups of pods without a directory are leftovers too.
        if let Some(cgroups) = &self.config.cgroups {
            for uid in cgroups.pods() {
                if !out.iter().any(|p| p.uid == uid) && !self.dir(uid).exists() {
                    self.clean(uid);
                }
            }
        }
        out
    }
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
