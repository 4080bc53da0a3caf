//! Simulated node agents: orch-node's own agent loop (`orch_node::agent::run`: registration,
//! heartbeats, the list and watch of its pods and of ConfigMaps and Secrets, the pure core of
//! `orch_core::agent`, status writes under the pod's uid, the grace-0 delete) against the
//! simulated cluster's real API, with a simulated runtime in place of processes: sandboxes
//! and starts take a seeded time and sometimes fail, some runs crash after a seeded lifetime,
//! a run passes its probes from a seeded moment on, a SIGTERM ends a run after a seeded delay.
//! Only the runtime is simulated; every decision is production code.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_core::agent::{Backoff, Exit, Found, RuntimeEvent, Settings, Volumes};
use orch_core::core_v1::{Container, NodeSystemInfo, Pod, Probe, ResourceList};
use orch_core::ids::{ClientId, Uid};
use orch_core::object::{Kind, ObjectKey};
use orch_node::agent::{AgentConfig, Clock};
use orch_node::runtime::{FoundPod, Runtime};
use tokio::sync::mpsc;

use crate::cluster::{EPOCH_MS, World, lock};
use crate::rng::Rng;

/// How the simulated agents and their runtime behave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentSettings {
    /// How many agents (nodes `agent-1`, `agent-2`, ...).
    pub count: usize,
    /// Each node's cores, memory and pods.
    pub cpu: String,
    /// See `cpu`.
    pub memory: String,
    /// See `cpu`.
    pub pods: String,
    /// The time a sandbox or a start takes, in ms (a range).
    pub start_ms: (u64, u64),
    /// Of every 1,000 sandboxes, how many fail (as a CNI error would).
    pub sandbox_fail_per_mille: u32,
    /// Of every 1,000 starts, how many fail (as a command not found would).
    pub start_fail_per_mille: u32,
    /// Of every 1,000 runs, how many crash (exit 1) after a lifetime drawn from `life_ms`.
    pub crash_per_mille: u32,
    /// See `crash_per_mille`.
    pub life_ms: (u64, u64),
    /// The time from a run's start until it passes its probes, in ms.
    pub ready_ms: (u64, u64),
    /// The time a run takes to exit after SIGTERM, in ms.
    pub stop_ms: (u64, u64),
    /// The agents' restart and sandbox back-off.
    pub backoff: Backoff,
    /// How often the agents heartbeat.
    pub heartbeat: Duration,
}

impl AgentSettings {
    /// `count` agents of 8 cores, 32 GiB and 110 pods; starts in 10-200 ms, 2% of sandboxes
    /// and starts failing, 10% of runs crashing within 1-5 s, ready 0.2-2 s after the start,
    /// stopping 0.1-1 s after SIGTERM; back-off from 0.5 s doubling to 4 s; heartbeats every 2 s.
    pub fn new(count: usize) -> Self {
        Self {
            count,
            cpu: "8".into(),
            memory: "32Gi".into(),
            pods: "110".into(),
            start_ms: (10, 200),
            sandbox_fail_per_mille: 20,
            start_fail_per_mille: 20,
            crash_per_mille: 100,
            life_ms: (1_000, 5_000),
            ready_ms: (200, 2_000),
            stop_ms: (100, 1_000),
            backoff: Backoff { initial_ms: 500, max_ms: 4_000 },
            heartbeat: Duration::from_secs(2),
        }
    }

    /// The name of agent `i` (from 1).
    pub fn node_name(i: usize) -> String {
        format!("agent-{i}")
    }
}

/// A run of a container in the simulated runtime.
#[derive(Clone, Debug)]
struct SimRun {
    attempt: u32,
    started_ms: i64,
    ready_at_ms: i64,
    exit: Option<(Exit, i64)>,
}

#[derive(Clone, Debug)]
struct SimPod {
    key: ObjectKey,
    ip: String,
    runs: BTreeMap<String, SimRun>,
}

struct Inner {
    rng: Rng,
    pods: BTreeMap<Uid, SimPod>,
    next_host: u32,
}

/// The simulated runtime of one agent. It outlives the agent's loop, as shims outlive a real
/// agent, so a restarted agent adopts its pods.
#[derive(Clone)]
pub(crate) struct SimRuntime {
    settings: AgentSettings,
    index: usize,
    world: Arc<World>,
    inner: Arc<Mutex<Inner>>,
    events: mpsc::Sender<RuntimeEvent>,
}

impl SimRuntime {
    pub(crate) fn new(
        settings: AgentSettings,
        index: usize,
        world: Arc<World>,
        rng: Rng,
        events: mpsc::Sender<RuntimeEvent>,
    ) -> Self {
        let inner = Inner { rng, pods: BTreeMap::new(), next_host: 2 };
        Self { settings, index, world, inner: Arc::new(Mutex::new(inner)), events }
    }

    fn now(&self) -> i64 {
        EPOCH_MS + i64::try_from(self.world.now_ms()).unwrap_or(i64::MAX)
    }

    fn draw(&self, range: (u64, u64)) -> u64 {
        lock(&self.inner).rng.between(range.0, range.1)
    }

    fn chance(&self, per_mille: u32) -> bool {
        lock(&self.inner).rng.chance(per_mille)
    }

    async fn pause(&self, range: (u64, u64)) {
        tokio::time::sleep(Duration::from_millis(self.draw(range))).await;
    }

    /// Ends run `attempt` of `container` with `exit`, if it is still running; reported.
    fn end(&self, uid: Uid, container: &str, attempt: u32, exit: Exit) {
        let now = self.now();
        let ended = {
            let mut inner = lock(&self.inner);
            match inner.pods.get_mut(&uid).and_then(|p| p.runs.get_mut(container)) {
                Some(run) if run.attempt == attempt && run.exit.is_none() => {
                    run.exit = Some((exit, now));
                    true
                }
                _ => false,
            }
        };
        if ended {
            let event = RuntimeEvent::ContainerExited { uid, container: container.to_owned(), attempt, exit };
            let events = self.events.clone();
            tokio::spawn(async move {
                let _ = events.send(event).await;
            });
        }
    }

    fn live_runs(&self, uid: Uid) -> Vec<(String, u32)> {
        lock(&self.inner)
            .pods
            .get(&uid)
            .map(|p| p.runs.iter().filter(|(_, r)| r.exit.is_none()).map(|(n, r)| (n.clone(), r.attempt)).collect())
            .unwrap_or_default()
    }
}

const KILLED: Exit = Exit { code: 137, signal: Some(9), oom_killed: false };

impl Runtime for SimRuntime {
    async fn create_sandbox(&self, uid: Uid, pod: Arc<Pod>) -> Result<Option<String>, String> {
        self.pause(self.settings.start_ms).await;
        if self.chance(self.settings.sandbox_fail_per_mille) {
            return Err("simulated: the network plugin failed".to_owned());
        }
        let mut inner = lock(&self.inner);
        if let Some(p) = inner.pods.get(&uid) {
            return Ok(Some(p.ip.clone()));
        }
        let host = inner.next_host;
        inner.next_host += 1;
        let ip = format!("10.{}.{}.{}", 100 + self.index, host / 250, 2 + host % 250);
        let key = ObjectKey::new(Kind::Pod, pod.metadata.namespace_str(), &pod.metadata.name);
        inner.pods.insert(uid, SimPod { key, ip: ip.clone(), runs: BTreeMap::new() });
        Ok(Some(ip))
    }

    async fn start(
        &self,
        uid: Uid,
        pod: Arc<Pod>,
        container: usize,
        attempt: u32,
        _ip: Option<String>,
        _env: Vec<(String, String)>,
        _volumes: Arc<Volumes>,
    ) -> Result<(), (&'static str, String)> {
        let Some(name) = pod.spec.containers.get(container).map(|c| c.name.to_string()) else {
            return Err((orch_core::agent::CREATE_CONTAINER_CONFIG_ERROR, "no such container".to_owned()));
        };
        self.pause(self.settings.start_ms).await;
        if self.chance(self.settings.start_fail_per_mille) {
            return Err((orch_core::agent::RUN_CONTAINER_ERROR, "simulated: the command failed to start".to_owned()));
        }
        let now = self.now();
        let ready_at_ms = now.saturating_add(i64::try_from(self.draw(self.settings.ready_ms)).unwrap_or(0));
        let crash = self.chance(self.settings.crash_per_mille).then(|| self.draw(self.settings.life_ms));
        {
            let mut inner = lock(&self.inner);
            let Some(p) = inner.pods.get_mut(&uid) else {
                return Err((orch_core::agent::RUN_CONTAINER_ERROR, "simulated: no sandbox".to_owned()));
            };
            p.runs.insert(name.clone(), SimRun { attempt, started_ms: now, ready_at_ms, exit: None });
        }
        if let Some(life) = crash {
            let rt = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(life)).await;
                rt.end(uid, &name, attempt, Exit { code: 1, signal: None, oom_killed: false });
            });
        }
        Ok(())
    }

    async fn update_volumes(&self, _uid: Uid, _volumes: Arc<Volumes>) -> Result<(), String> {
        Ok(())
    }

    async fn signal(&self, uid: Uid, container: &str, attempt: u32, _signal: i32) {
        let rt = self.clone();
        let container = container.to_owned();
        let delay = self.draw(self.settings.stop_ms);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            rt.end(uid, &container, attempt, Exit { code: 143, signal: Some(15), oom_killed: false });
        });
    }

    async fn kill(&self, uid: Uid, container: &str, attempt: u32) {
        self.end(uid, container, attempt, KILLED);
    }

    async fn kill_pod(&self, uid: Uid) {
        for (name, attempt) in self.live_runs(uid) {
            self.end(uid, &name, attempt, KILLED);
        }
    }

    async fn remove_sandbox(&self, uid: Uid) -> Result<(), String> {
        lock(&self.inner).pods.remove(&uid);
        Ok(())
    }

    async fn exec(
        &self,
        _uid: Uid,
        _container: &str,
        _argv: Vec<String>,
        _timeout: Duration,
    ) -> Result<(i32, Vec<u8>), String> {
        Ok((0, Vec::new()))
    }

    async fn found(&self) -> Vec<FoundPod> {
        lock(&self.inner)
            .pods
            .iter()
            .map(|(uid, p)| FoundPod {
                key: p.key.clone(),
                uid: *uid,
                ip: Some(p.ip.clone()),
                containers: p
                    .runs
                    .iter()
                    .map(|(name, r)| Found {
                        name: name.clone(),
                        attempt: r.attempt,
                        started_ms: r.started_ms,
                        exit: r.exit,
                    })
                    .collect(),
            })
            .collect()
    }

    async fn probe(
        &self,
        uid: Uid,
        container: &Container,
        _probe: &Probe,
        _host: &str,
        _timeout: Duration,
    ) -> Result<(), String> {
        let now = self.now();
        let inner = lock(&self.inner);
        match inner.pods.get(&uid).and_then(|p| p.runs.get(container.name.as_str())) {
            Some(run) if run.exit.is_none() && now >= run.ready_at_ms => Ok(()),
            Some(run) if run.exit.is_none() => Err("simulated: not ready yet".to_owned()),
            _ => Err("simulated: not running".to_owned()),
        }
    }
}

/// The running agents.
pub(crate) struct Agents {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Agents {
    /// Stops every agent's loop (its watches and heartbeats with it), as a SIGTERM stops
    /// orch-node; their pods stay with their runtimes.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        for mut task in self.tasks {
            // An agent still registering (the cluster never answered) is not in its loop yet.
            if tokio::time::timeout(Duration::from_secs(30), &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

/// Starts the agents: each `orch_node::agent::run` with a simulated runtime, a real API client
/// of the simulated cluster, and the simulated clock, until [`Agents::stop`].
pub(crate) fn start(world: &Arc<World>, settings: &AgentSettings, rng: &Rng) -> Agents {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let quantity = |s: &str| s.parse().ok();
    let capacity = ResourceList {
        cpu: quantity(&settings.cpu),
        memory: quantity(&settings.memory),
        pods: quantity(&settings.pods),
        ephemeral_storage: None,
    };
    let mut tasks = Vec::new();
    for i in 1..=settings.count {
        let node = AgentSettings::node_name(i);
        let node_ip = format!("192.168.{}.{}", 100 + i / 250, 1 + i % 250);
        let clock_world = Arc::clone(world);
        let config = AgentConfig {
            core: Settings {
                node: node.clone(),
                host_ip: Some(node_ip.clone()),
                restart_backoff: settings.backoff,
                sandbox_backoff: settings.backoff,
                strict_images: false,
            },
            node_ip,
            capacity: capacity.clone(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            heartbeat: settings.heartbeat,
            network: None,
            pod_cidr: None,
            endpoint: None,
            node_info: NodeSystemInfo {
                kernel_version: "simulated".into(),
                os_image: "orch-sim".into(),
                operating_system: "linux".into(),
                architecture: "amd64".into(),
                container_runtime_version: "orch-sim://simulated".into(),
                kubelet_version: format!("orch-node {}", env!("CARGO_PKG_VERSION")).into(),
                ..NodeSystemInfo::default()
            },
            clock: Clock::from_fn(move || EPOCH_MS + i64::try_from(clock_world.now_ms()).unwrap_or(i64::MAX)),
            data_dir: None,
        };
        let mut agent_rng = rng.fork(300 + i as u64);
        let id = ClientId(u128::from(0xa6e0_u16) << 112 | i as u128);
        let client = crate::workload::api_client(world, &mut agent_rng, id, Duration::from_secs(6));
        let (events, events_rx) = mpsc::channel(4_096);
        let runtime = Arc::new(SimRuntime::new(settings.clone(), i, Arc::clone(world), agent_rng.fork(1), events));
        let mut stopped = stopped.clone();
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        tasks.push(tokio::spawn(orch_node::agent::run(config, client, runtime, events_rx, shutdown)));
    }
    Agents { tasks, stop }
}
