//! The node agent's decisions, as a pure state machine (raft-rs style): what to start, stop,
//! kill, probe, restart and report for the pods bound to one node. It does no IO and reads no
//! clock; its owner feeds it
//! - the desired pods, as the watch delivers them ([`Agent::pod`], [`Agent::pod_gone`],
//!   [`Agent::synced`] once the first list is in),
//! - what the runtime reports ([`Agent::runtime`]: a sandbox ready or failed, a container
//!   started, failed to start or exited, a probe's result; [`Agent::adopt`] for what a
//!   restarted agent finds still running),
//! - the time (every input carries it; [`Agent::tick`] at [`Agent::next_wake`]),
//! - the fates of its status writes ([`Agent::status_written`]),
//!
//! and takes its [`Action`]s ([`Agent::take_actions`]) and its status writes
//! ([`Agent::statuses`]). The process runtime of orch-node and the simulated runtime of
//! orch-sim are adapters around the same logic.
//!
//! A pod's life here: its sandbox (network namespace, address, cgroup) is created; its
//! containers start in spec order without waiting for each other; a container that exits is
//! restarted as `restartPolicy` says (`Always`; `OnFailure` unless it exited 0; `Never`) after
//! the back-off of [`backoff`], reporting `CrashLoopBackOff` while it waits; its probes
//! ([`ProbeKind`]) run while it runs. When every container is done for good the pod is
//! `Succeeded` or `Failed` and its sandbox goes (its address is freed). A pod being deleted
//! gets SIGTERM in each container, then at its grace period's end a SIGKILL of everything in
//! the pod; once nothing runs its sandbox goes and the agent deletes it for good (the grace-0
//! delete under its uid). A pod that left the store (deleted for good, or replaced by another
//! of the same name) is stopped the same way and forgotten.
//!
//! Status follows the kubelet's rules ([`status`]) and is written only when it differs from
//! what the store has, one write per pod in flight, under the pod's uid; a write whose fate is
//! unknown is made again. A status someone else wrote over the agent's own (the node lifecycle
//! controller marks a lost node's pods not Ready) is written back [`STATUS_RESYNC_MS`] later,
//! as the kubelet's status manager reconciles at its sync period, unless the agent's own
//! status changes first: so a controller and the agent that disagree write a few times a
//! minute, never in a tight loop.

pub mod backoff;
pub mod config;
pub mod probe;
pub mod status;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::core_v1::{Container, Pod, PodPhase, PodStatus, Probe, RestartPolicy};
use crate::events::{EventType, Record};
use crate::ids::Uid;
use crate::object::{Kind, ObjectKey};
use crate::text::Text;

pub use backoff::{Backoff, Delay};
pub use config::{Configs, VolumeData, VolumeFile, VolumeSource, Volumes};
pub use probe::ProbeKind;
use probe::ProbeState;

/// The component name of the agent's events, as Kubernetes'.
pub const COMPONENT: &str = "kubelet";
/// The most pods one agent runs; more bound to its node are refused with a Warning event
/// (the node's `pods` capacity keeps the scheduler well below it).
pub const AGENT_PODS_MAX: usize = 1_024;
/// The most bytes of a message the agent keeps from the runtime (a start error, a probe's
/// output).
pub const MESSAGE_BYTES_MAX: usize = 1_024;
/// How long after someone else wrote over the agent's status of a pod the agent writes its
/// own back (the kubelet's status manager sync period).
pub const STATUS_RESYNC_MS: i64 = 10_000;
/// The waiting reason of a container whose pod's sandbox is being made, or that is starting.
pub const CONTAINER_CREATING: &str = "ContainerCreating";
/// The waiting reason of a container that waits out its restart back-off.
pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
/// The waiting reason of a container the runtime could not start.
pub const RUN_CONTAINER_ERROR: &str = "RunContainerError";
/// The waiting reason of a container whose configuration this node cannot run.
pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";

/// What the agent is and how it acts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The node it serves.
    pub node: String,
    /// The node's address, reported as each pod's `hostIP`.
    pub host_ip: Option<String>,
    /// The restart back-off of a container that exits or fails to start.
    pub restart_backoff: Backoff,
    /// The back-off of a pod whose sandbox could not be made.
    pub sandbox_backoff: Backoff,
    /// Refuse containers that name an image (the process runtime runs the container's
    /// command from the node's own filesystem and pulls nothing); otherwise they run with a
    /// Warning event that says so.
    pub strict_images: bool,
}

impl Settings {
    /// The kubelet's defaults for the node `node`: back-offs of 10 s doubling to 5 min,
    /// images run with a warning.
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            host_ip: None,
            restart_backoff: Backoff::RESTART,
            sandbox_backoff: Backoff::RESTART,
            strict_images: false,
        }
    }
}

/// How a container process ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exit {
    /// The exit code; 128 + the signal for a process killed by one, as shells report it.
    pub code: i32,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// The kernel killed it for going over its memory limit.
    pub oom_killed: bool,
}

/// What the runtime reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// A pod's sandbox is made, with the pod's address (none: it uses the host's network).
    SandboxReady { uid: Uid, ip: Option<String> },
    /// A pod's sandbox could not be made; tried again after the sandbox back-off.
    SandboxFailed { uid: Uid, message: String },
    /// A pod's sandbox is gone (its address freed).
    SandboxRemoved { uid: Uid },
    /// A container's process runs.
    ContainerStarted { uid: Uid, container: String, attempt: u32 },
    /// A container could not start: `reason` is [`RUN_CONTAINER_ERROR`] (command not found,
    /// permission denied, ...) or [`CREATE_CONTAINER_CONFIG_ERROR`] (its configuration could
    /// not be made, such as a missing ConfigMap key).
    ContainerFailed { uid: Uid, container: String, attempt: u32, reason: &'static str, message: String },
    /// A container's process ended.
    ContainerExited { uid: Uid, container: String, attempt: u32, exit: Exit },
    /// A probe's try came back.
    ProbeDone { uid: Uid, container: String, attempt: u32, kind: ProbeKind, ok: bool, message: String },
}

/// A container a restarted agent finds (see [`Agent::adopt`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Its name.
    pub name: String,
    /// Its run: the number of times it was started.
    pub attempt: u32,
    /// When that run started (ms).
    pub started_ms: i64,
    /// How and when (ms) it ended, if it did.
    pub exit: Option<(Exit, i64)>,
}

/// A signal the agent sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Asks the process to stop.
    Term,
}

/// What the agent has the runtime (and the API client) do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Make the pod's sandbox (its network namespace and address, its cgroup); answer with
    /// [`RuntimeEvent::SandboxReady`] or [`RuntimeEvent::SandboxFailed`].
    CreateSandbox { uid: Uid, pod: Arc<Pod> },
    /// Start run `attempt` of the pod's container `container` (an index into
    /// `pod.spec.containers`) in its sandbox; answer with [`RuntimeEvent::ContainerStarted`]
    /// or [`RuntimeEvent::ContainerFailed`], later [`RuntimeEvent::ContainerExited`].
    /// `env` is the container's own variables, resolved ([`config::environment`]); `volumes`
    /// the pod's, to be in place (at least this version) before the run starts.
    StartContainer {
        uid: Uid,
        pod: Arc<Pod>,
        container: usize,
        attempt: u32,
        ip: Option<String>,
        env: Vec<(String, String)>,
        volumes: Arc<Volumes>,
    },
    /// A ConfigMap or Secret the pod's volumes project changed: put this version of the
    /// volumes' files in place (unless a newer one is).
    UpdateVolumes { uid: Uid, volumes: Arc<Volumes> },
    /// Try a probe of a container's run, within `timeout_ms`, against the pod's address;
    /// answer with [`RuntimeEvent::ProbeDone`].
    Probe {
        uid: Uid,
        container: String,
        attempt: u32,
        kind: ProbeKind,
        probe: Box<Probe>,
        ip: Option<String>,
        timeout_ms: i64,
    },
    /// Signal a container's run.
    Signal { uid: Uid, container: String, attempt: u32, signal: Signal },
    /// SIGKILL a container's run (its whole process group).
    KillContainer { uid: Uid, container: String, attempt: u32 },
    /// SIGKILL everything in the pod (its whole cgroup).
    KillPod { uid: Uid },
    /// Remove the pod's sandbox once nothing runs in it; answer with
    /// [`RuntimeEvent::SandboxRemoved`].
    RemoveSandbox { uid: Uid },
    /// Delete the pod for good (grace 0, under its uid): it stopped.
    DeletePod { key: ObjectKey, uid: Uid },
    /// Record an event about a pod.
    Event(Record),
}

/// A status write the agent wants: the pod's status, under its uid.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusWrite {
    /// The pod.
    pub key: ObjectKey,
    /// Its uid: the write's precondition.
    pub uid: Uid,
    /// Its whole status.
    pub status: PodStatus,
}

/// The fate of a status write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// It applied at this revision.
    Applied { revision: u64 },
    /// It was refused (the pod is gone or is another); the watch tells what became of it.
    Refused,
    /// Not known (not sent, or no answer): written again at the next [`Agent::statuses`].
    Unknown,
}

/// The store key of `pod`.
pub fn pod_key(pod: &Pod) -> ObjectKey {
    ObjectKey::new(Kind::Pod, pod.metadata.namespace_str(), &pod.metadata.name)
}

/// When a pod's status someone else wrote over the agent's is written back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resync {
    /// Nothing to write back.
    None,
    /// At this time.
    At(i64),
    /// Now: the time passed.
    Due,
}

/// Where a container's run stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Run {
    /// Not running: starts at `restart_at` unless its pod is done or stopping.
    Idle,
    /// Asked to start.
    Starting,
    /// Running since `started_ms`.
    Running { started_ms: i64 },
    /// Ended; whether it runs again is decided at the pod's next step.
    Exited(Terminated),
    /// Ended for good (`last` says how).
    Done,
}

/// A run that ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Terminated {
    /// The run's number (0: not known).
    pub(crate) attempt: u32,
    pub(crate) exit: Exit,
    pub(crate) started_ms: Option<i64>,
    pub(crate) finished_ms: i64,
}

/// One container of a pod, as the agent keeps it.
#[derive(Clone, Debug)]
pub(crate) struct Ctr {
    pub(crate) name: Text,
    /// Runs started so far (the run numbers the runtime's reports carry).
    attempt: u32,
    run: Run,
    restart_at: i64,
    /// Why it waits, when it does.
    pub(crate) waiting: Option<(&'static str, Option<String>)>,
    /// How its last run ended.
    pub(crate) last: Option<Terminated>,
    pub(crate) restarts: i32,
    delay: Delay,
    probes: Vec<ProbeState>,
    /// Its startup probe passed (or it has none) in this run.
    pub(crate) started: bool,
    /// Its readiness probe passes (or it has none) in this run.
    pub(crate) ready: bool,
    /// SIGTERM was sent to this run; SIGKILL at the time given.
    stop_at: Option<i64>,
    kill_sent: bool,
    /// This run was stopped by its liveness or startup probe: it is restarted whatever its
    /// exit code, unless the policy is `Never` (as the kubelet does).
    probe_killed: bool,
}

impl Ctr {
    fn new(name: Text, restarts: i32) -> Self {
        Self {
            name,
            attempt: u32::try_from(restarts).unwrap_or(0),
            run: Run::Idle,
            restart_at: i64::MIN,
            waiting: Some((CONTAINER_CREATING, None)),
            last: None,
            restarts,
            delay: Delay::default(),
            probes: Vec::new(),
            started: false,
            ready: false,
            stop_at: None,
            kill_sent: false,
            probe_killed: false,
        }
    }

    /// When its current run started, if it runs.
    pub(crate) fn running_since(&self) -> Option<i64> {
        match self.run {
            Run::Running { started_ms } => Some(started_ms),
            _ => None,
        }
    }

    /// Ended for good.
    pub(crate) fn done(&self) -> bool {
        self.run == Run::Done
    }

    /// A process may be running.
    fn live(&self) -> bool {
        matches!(self.run, Run::Starting | Run::Running { .. })
    }
}

/// A pod's sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Sandbox {
    /// To be made at the time given.
    Pending {
        at: i64,
    },
    Creating,
    Ready,
    Removing,
    Removed,
}

/// One pod, as the agent keeps it.
#[derive(Debug)]
pub(crate) struct PodRec {
    key: ObjectKey,
    uid: Uid,
    /// The newest desired pod; none for one adopted but not yet seen in the store.
    pod: Option<Arc<Pod>>,
    /// Left the store (or adopted and never in it): stop, clean up, forget.
    gone: bool,
    sandbox: Sandbox,
    sandbox_delay: Delay,
    /// The pod's address, kept after its sandbox went.
    pub(crate) ip: Option<String>,
    pub(crate) containers: Vec<Ctr>,
    /// When the agent first took the pod up (ms).
    pub(crate) start_ms: Option<i64>,
    /// Stopping the whole pod: SIGKILL of everything at `kill_at`.
    kill_at: Option<i64>,
    pod_killed: bool,
    delete_sent: bool,
    image_warned: bool,
    /// The newest version of its volumes handed to the runtime, whether its sources may have
    /// changed since, and the last `FailedMount` said.
    volumes: Option<Arc<Volumes>>,
    volumes_stale: bool,
    mount_failure: Option<String>,
    /// The status the store has (as the watch or an applied write last said), the revision
    /// it is from, the write out, and whether the status may have changed since.
    acked: Option<PodStatus>,
    acked_rev: u64,
    in_flight: bool,
    /// The newest status the watch showed while a write was out, with its revision: if it is
    /// newer than the write, it is what the store has.
    seen: Option<(u64, PodStatus)>,
    /// The last status of the agent's own the store applied, and when a status someone else
    /// wrote over it is to be written back: at a time, or due (the time passed; taken from
    /// the wake-ups, so a pod whose write cannot go now never makes the loop spin).
    pub(crate) written: Option<PodStatus>,
    resync: Resync,
    dirty: bool,
    wake_at: Option<i64>,
}

/// The agent of one node.
#[derive(Debug)]
pub struct Agent {
    settings: Settings,
    pods: BTreeMap<Uid, PodRec>,
    by_key: BTreeMap<ObjectKey, Uid>,
    synced: bool,
    /// Pods refused for being one too many, warned about once.
    refused: BTreeSet<Uid>,
    actions: Vec<Action>,
    /// The ConfigMaps and Secrets the watch delivered, and whether their first lists are in.
    configs: Configs,
    configs_synced: bool,
}

/// `message` cut to [`MESSAGE_BYTES_MAX`].
fn cut(message: &str) -> String {
    crate::text::cut(message, MESSAGE_BYTES_MAX).to_owned()
}

/// Why `container` of `pod` cannot run on this node, if it cannot.
fn config_error(settings: &Settings, container: &Container) -> Option<(&'static str, String)> {
    if container.command.is_empty() {
        return Some((
            CREATE_CONTAINER_CONFIG_ERROR,
            "no command: this node runs a container's command from its own filesystem and does not pull images, so a \
             container without `command` has nothing to run"
                .to_owned(),
        ));
    }
    if settings.strict_images && !container.image.is_empty() {
        return Some((
            CREATE_CONTAINER_CONFIG_ERROR,
            format!(
                "image {:?}: this node pulls no images and refuses containers that name one (strict images); it runs \
                 `command` from its own filesystem",
                container.image.as_str()
            ),
        ));
    }
    None
}

impl Agent {
    /// An agent with no pods.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            pods: BTreeMap::new(),
            by_key: BTreeMap::new(),
            synced: false,
            refused: BTreeSet::new(),
            actions: Vec::new(),
            configs: Configs::default(),
            configs_synced: false,
        }
    }

    /// A ConfigMap or Secret as the watch delivers it: the pods that take from it see the
    /// change (their volumes are updated; a container that waits for it starts).
    pub fn config(&mut self, obj: &crate::object::Object, now: i64) {
        if self.configs.put(obj) {
            self.config_changed(&obj.key(), now);
        }
    }

    /// The ConfigMap or Secret at `key` is gone (a pod's volumes keep its last files, as the
    /// kubelet's do).
    pub fn config_gone(&mut self, key: &ObjectKey, now: i64) {
        if self.configs.remove(key) {
            self.config_changed(key, now);
        }
    }

    /// The first lists of ConfigMaps and Secrets are in: pods that take from them may start.
    pub fn configs_synced(&mut self, now: i64) {
        if self.configs_synced {
            return;
        }
        self.configs_synced = true;
        let uids: Vec<Uid> = self.pods.keys().copied().collect();
        for uid in uids {
            if let Some(rec) = self.pods.get_mut(&uid) {
                rec.volumes_stale = true;
            }
            self.drive(uid, now);
        }
    }

    /// The ConfigMaps and Secrets it knows.
    pub fn configs(&self) -> &Configs {
        &self.configs
    }

    fn config_changed(&mut self, key: &ObjectKey, now: i64) {
        let uids: Vec<Uid> = self
            .pods
            .values()
            .filter(|r| r.pod.as_ref().is_some_and(|p| config::references(p).contains(key)))
            .map(|r| r.uid)
            .collect();
        for uid in uids {
            if let Some(rec) = self.pods.get_mut(&uid) {
                rec.volumes_stale = true;
            }
            self.drive(uid, now);
        }
    }

    /// Its settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The uids of the pods it keeps (running, stopping or done), in uid order.
    pub fn pods(&self) -> impl Iterator<Item = (&ObjectKey, Uid)> {
        self.pods.values().map(|r| (&r.key, r.uid))
    }

    /// The spec of the container `name` of the pod `uid`, if the agent has that pod.
    pub fn container(&self, uid: Uid, name: &str) -> Option<&Container> {
        self.pods.get(&uid)?.pod.as_ref()?.spec.containers.iter().find(|c| c.name == name)
    }

    /// The actions decided so far, in order; the owner carries them out.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// A pod as the watch delivers it at `revision`. One not bound to this node is taken as
    /// gone from it.
    pub fn pod(&mut self, pod: &Arc<Pod>, revision: u64, now: i64) {
        let key = pod_key(pod);
        let Some(uid) = pod.metadata.uid else { return };
        if pod.spec.node_name.as_deref() != Some(self.settings.node.as_str()) {
            self.pod_gone(&key, now);
            return;
        }
        // Another pod of that name was here: that one is gone.
        if let Some(old) = self.by_key.get(&key).copied()
            && old != uid
        {
            self.gone(old, now);
        }
        if !self.pods.contains_key(&uid) {
            if self.pods.len() >= AGENT_PODS_MAX {
                if self.refused.insert(uid) {
                    self.actions.push(Action::Event(Record::about(
                        COMPONENT,
                        &crate::object::Object::Pod(pod.clone()),
                        EventType::Warning,
                        "TooManyPods",
                        format!("this agent runs at most {AGENT_PODS_MAX} pods"),
                    )));
                }
                return;
            }
            self.pods.insert(uid, PodRec::new(key.clone(), uid, pod));
        }
        self.by_key.insert(key, uid);
        let Some(rec) = self.pods.get_mut(&uid) else { return };
        if rec.pod.is_none() {
            rec.take_up(pod);
        }
        rec.pod = Some(pod.clone());
        // What the store has, unless a write of ours is out or applied after this revision.
        if !rec.in_flight && revision >= rec.acked_rev {
            rec.acked = Some(pod.status.clone());
            rec.acked_rev = revision;
        } else if rec.in_flight && rec.seen.as_ref().is_none_or(|(r, _)| revision > *r) {
            rec.seen = Some((revision, pod.status.clone()));
        }
        rec.dirty = true;
        self.drive(uid, now);
    }

    /// The pod at `key` left the store (or this node): it is stopped and forgotten.
    pub fn pod_gone(&mut self, key: &ObjectKey, now: i64) {
        if let Some(uid) = self.by_key.get(key).copied() {
            self.gone(uid, now);
        }
    }

    fn gone(&mut self, uid: Uid, now: i64) {
        self.refused.remove(&uid);
        if let Some(rec) = self.pods.get_mut(&uid) {
            rec.gone = true;
            self.drive(uid, now);
        }
    }

    /// A list of the node's pods at `revision`: the first one after a start, or a relist after
    /// the watch was told its revision expired (events were missed). Each listed pod is taken
    /// as a watch event would be (a pod seen before is brought up to date, not started again);
    /// a pod seen in the store before that the list lacks left it in the gap and is stopped
    /// ([`Agent::pod_gone`]); after the first list, [`Agent::synced`].
    pub fn listed(&mut self, pods: &[Arc<Pod>], revision: u64, now: i64) {
        let listed: BTreeSet<ObjectKey> = pods.iter().map(|p| pod_key(p)).collect();
        let left: Vec<ObjectKey> = self
            .by_key
            .iter()
            .filter(|(key, uid)| {
                !listed.contains(*key) && self.pods.get(*uid).is_some_and(|r| r.pod.is_some() && !r.gone)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in left {
            self.pod_gone(&key, now);
        }
        for pod in pods {
            self.pod(pod, revision, now);
        }
        if !self.synced {
            self.synced(now);
        }
    }

    /// The first list of the node's pods is in: what was adopted and is not in it is stopped
    /// and cleaned up.
    pub fn synced(&mut self, now: i64) {
        self.synced = true;
        let orphans: Vec<Uid> = self.pods.values().filter(|r| r.pod.is_none()).map(|r| r.uid).collect();
        for uid in orphans {
            self.gone(uid, now);
        }
    }

    /// A pod a restarted agent finds in the runtime: its sandbox (with its address) and its
    /// containers' runs. Taken over as they are, not restarted; one whose pod the first list
    /// lacks is stopped and cleaned up ([`Agent::synced`]).
    pub fn adopt(&mut self, key: ObjectKey, uid: Uid, ip: Option<String>, found: Vec<Found>, now: i64) {
        if self.pods.contains_key(&uid) || self.pods.len() >= AGENT_PODS_MAX {
            return;
        }
        let mut rec = PodRec::empty(key.clone(), uid);
        rec.sandbox = Sandbox::Ready;
        rec.ip = ip;
        for f in found {
            let mut c = Ctr::new(Text::from(f.name.as_str()), i32::try_from(f.attempt.saturating_sub(1)).unwrap_or(0));
            c.attempt = f.attempt;
            c.waiting = None;
            c.run = match f.exit {
                None => Run::Running { started_ms: f.started_ms },
                Some((exit, finished_ms)) => {
                    Run::Exited(Terminated { attempt: f.attempt, exit, started_ms: Some(f.started_ms), finished_ms })
                }
            };
            rec.containers.push(c);
        }
        if let Some(old) = self.by_key.insert(key, uid) {
            self.gone(old, now);
        }
        self.pods.insert(uid, rec);
        if self.synced {
            self.gone(uid, now);
        }
    }

    /// What the runtime reports. Reports of runs or pods it does not know are ignored.
    pub fn runtime(&mut self, event: RuntimeEvent, now: i64) {
        let uid = match &event {
            RuntimeEvent::SandboxReady { uid, .. }
            | RuntimeEvent::SandboxFailed { uid, .. }
            | RuntimeEvent::SandboxRemoved { uid }
            | RuntimeEvent::ContainerStarted { uid, .. }
            | RuntimeEvent::ContainerFailed { uid, .. }
            | RuntimeEvent::ContainerExited { uid, .. }
            | RuntimeEvent::ProbeDone { uid, .. } => *uid,
        };
        let settings = &self.settings;
        let Some(rec) = self.pods.get_mut(&uid) else { return };
        rec.dirty = true;
        match event {
            RuntimeEvent::SandboxReady { ip, .. } => {
                if rec.sandbox == Sandbox::Creating {
                    rec.sandbox = Sandbox::Ready;
                    rec.sandbox_delay.reset();
                    // A pod on the host network has the host's address.
                    rec.ip = ip.or_else(|| settings.host_ip.clone());
                }
            }
            RuntimeEvent::SandboxFailed { message, .. } => {
                if rec.sandbox == Sandbox::Creating {
                    let delay = rec.sandbox_delay.fail(settings.sandbox_backoff, 0);
                    rec.sandbox = Sandbox::Pending { at: now.saturating_add(delay) };
                    let message = format!("failed to create the pod sandbox: {}", cut(&message));
                    let record = rec.record(EventType::Warning, "FailedCreatePodSandBox", message);
                    self.actions.extend(record);
                }
            }
            RuntimeEvent::SandboxRemoved { .. } => {
                if rec.sandbox == Sandbox::Removing {
                    rec.sandbox = Sandbox::Removed;
                }
            }
            RuntimeEvent::ContainerStarted { container, attempt, .. } => {
                let pod = rec.pod.clone();
                if let Some(c) = rec.run_of(&container, attempt)
                    && c.run == Run::Starting
                {
                    c.run = Run::Running { started_ms: now };
                    c.waiting = None;
                    c.restarts = c.restarts.max(i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX));
                    c.stop_at = None;
                    c.kill_sent = false;
                    c.probe_killed = false;
                    let spec = pod.as_ref().and_then(|p| p.spec.containers.iter().find(|s| s.name == c.name));
                    c.started = false;
                    c.set_probes(spec, now, now);
                    let message = format!("Started container {container}");
                    let record = rec.record(EventType::Normal, "Started", message);
                    self.actions.extend(record);
                }
            }
            RuntimeEvent::ContainerFailed { container, attempt, reason, message, .. } => {
                if let Some(c) = rec.run_of(&container, attempt)
                    && c.run == Run::Starting
                {
                    let delay = c.delay.fail(settings.restart_backoff, 0);
                    c.run = Run::Idle;
                    c.restart_at = now.saturating_add(delay);
                    let message = cut(&message);
                    c.waiting = Some((reason, Some(message.clone())));
                    let record = rec.record(EventType::Warning, "Failed", format!("Error: {message}"));
                    self.actions.extend(record);
                }
            }
            RuntimeEvent::ContainerExited { container, attempt, exit, .. } => {
                if let Some(c) = rec.run_of(&container, attempt)
                    && c.live()
                {
                    c.run = Run::Exited(Terminated { attempt, exit, started_ms: c.running_since(), finished_ms: now });
                    c.started = false;
                    c.ready = false;
                    c.probes.clear();
                    c.stop_at = None;
                    c.kill_sent = false;
                }
            }
            RuntimeEvent::ProbeDone { container, attempt, kind, ok, message, .. } => {
                let grace = rec.pod.as_ref().map_or(crate::defaults::DEFAULT_TERMINATION_GRACE_SECONDS, |p| {
                    p.spec
                        .termination_grace_period_seconds
                        .unwrap_or(crate::defaults::DEFAULT_TERMINATION_GRACE_SECONDS)
                });
                let mut records = Vec::new();
                let pod = rec.pod.clone();
                if let Some(c) = rec.run_of(&container, attempt)
                    && c.running_since().is_some()
                    && let Some(p) = c.probes.iter_mut().find(|p| p.kind == kind && p.in_flight)
                {
                    let verdict = p.result(ok);
                    let probe_grace = p.probe.termination_grace_period_seconds;
                    if !ok {
                        records.push((
                            EventType::Warning,
                            "Unhealthy",
                            format!("{} probe failed: {}", kind.as_str(), cut(&message)),
                        ));
                    }
                    match (kind, verdict) {
                        (ProbeKind::Readiness, Some(v)) => c.ready = v && c.started,
                        (ProbeKind::Startup, Some(true)) => {
                            c.started = true;
                            let spec = pod.as_ref().and_then(|p| p.spec.containers.iter().find(|s| s.name == c.name));
                            c.set_probes(spec, c.running_since().unwrap_or(now), now);
                        }
                        (ProbeKind::Startup | ProbeKind::Liveness, Some(false)) if c.stop_at.is_none() => {
                            // Restarted once it exits, whatever its exit code, unless the
                            // policy is Never.
                            let grace = probe_grace.unwrap_or(grace).max(0);
                            c.stop_at = Some(now.saturating_add(grace.saturating_mul(1_000)));
                            c.ready = false;
                            c.probe_killed = true;
                            let never =
                                pod.as_ref().is_some_and(|p| p.spec.restart_policy == Some(RestartPolicy::Never));
                            let what = kind.as_str().to_ascii_lowercase();
                            let message = if never {
                                format!("Container {container} failed {what} probe")
                            } else {
                                format!("Container {container} failed {what} probe, will be restarted")
                            };
                            records.push((EventType::Normal, "Killing", message));
                            self.actions.push(Action::Signal {
                                uid,
                                container: container.clone(),
                                attempt,
                                signal: Signal::Term,
                            });
                        }
                        _ => {}
                    }
                }
                for (type_, reason, message) in records {
                    let record = rec.record(type_, reason, message);
                    self.actions.extend(record);
                }
            }
        }
        self.drive(uid, now);
    }

    /// When the agent next has something to do by the clock (a restart, a probe, a kill, a
    /// retry), if ever.
    pub fn next_wake(&self) -> Option<i64> {
        let resync = |r: &PodRec| if let Resync::At(at) = r.resync { Some(at) } else { None };
        self.pods.values().flat_map(|r| [r.wake_at, resync(r)]).flatten().min()
    }

    /// Time passed: does what is due by `now`.
    pub fn tick(&mut self, now: i64) {
        for rec in self.pods.values_mut() {
            if let Resync::At(at) = rec.resync
                && at <= now
            {
                rec.resync = Resync::Due;
                rec.dirty = true;
            }
        }
        let due: Vec<Uid> = self.pods.values().filter(|r| r.wake_at.is_some_and(|w| w <= now)).map(|r| r.uid).collect();
        for uid in due {
            self.drive(uid, now);
        }
    }

    /// The status writes due: one per pod whose status changed from what the store has and
    /// has no write out (one someone else wrote over the agent's unchanged own: once
    /// [`STATUS_RESYNC_MS`] passed). Each write's fate comes back through
    /// [`Agent::status_written`].
    pub fn statuses(&mut self, now: i64) -> Vec<StatusWrite> {
        let mut writes = Vec::new();
        for rec in self.pods.values_mut() {
            if !rec.dirty || rec.in_flight || rec.gone || rec.delete_sent {
                continue;
            }
            let Some(pod) = rec.pod.clone() else { continue };
            rec.dirty = false;
            let status = status::compute(&self.settings, rec, &pod, now);
            if rec.acked.as_ref() == Some(&status) {
                rec.resync = Resync::None;
                continue;
            }
            // The store holds someone else's status over ours, which has not changed since.
            let overwritten = rec.acked.is_some() && rec.written.as_ref() == Some(&status);
            if overwritten {
                match rec.resync {
                    Resync::Due => {}
                    Resync::None => {
                        rec.resync = Resync::At(now.saturating_add(STATUS_RESYNC_MS));
                        continue;
                    }
                    Resync::At(_) => continue,
                }
            }
            rec.resync = Resync::None;
            rec.in_flight = true;
            rec.acked = Some(status.clone());
            writes.push(StatusWrite { key: rec.key.clone(), uid: rec.uid, status });
        }
        writes
    }

    /// The fate of the status write for the pod `uid`.
    pub fn status_written(&mut self, uid: Uid, written: Written) {
        let Some(rec) = self.pods.get_mut(&uid) else { return };
        if !rec.in_flight {
            return;
        }
        rec.in_flight = false;
        let seen = rec.seen.take();
        match written {
            Written::Applied { revision } => {
                rec.written.clone_from(&rec.acked);
                rec.acked_rev = rec.acked_rev.max(revision);
                // Someone wrote after this write: the store has theirs.
                if let Some((r, status)) = seen
                    && r > revision
                {
                    rec.acked = Some(status);
                    rec.acked_rev = r;
                    rec.dirty = true;
                }
            }
            Written::Refused => {
                // The store's status is unknown: the watch tells it.
                rec.acked = None;
            }
            Written::Unknown => {
                rec.acked = None;
                rec.dirty = true;
            }
        }
    }

    /// Steps the pod `uid`: does what its state and the time call for.
    fn drive(&mut self, uid: Uid, now: i64) {
        let settings = &self.settings;
        let synced = self.synced;
        let configs = self.configs_synced.then_some(&self.configs);
        let Some(rec) = self.pods.get_mut(&uid) else { return };
        let before = self.actions.len();
        let forget = rec.step(settings, synced, configs, now, &mut self.actions);
        if self.actions.len() != before {
            rec.dirty = true;
        }
        if forget {
            if self.by_key.get(&rec.key) == Some(&uid) {
                self.by_key.remove(&rec.key);
            }
            self.pods.remove(&uid);
        }
    }
}

impl PodRec {
    fn empty(key: ObjectKey, uid: Uid) -> Self {
        Self {
            key,
            uid,
            pod: None,
            gone: false,
            sandbox: Sandbox::Pending { at: i64::MIN },
            sandbox_delay: Delay::default(),
            ip: None,
            containers: Vec::new(),
            start_ms: None,
            kill_at: None,
            pod_killed: false,
            delete_sent: false,
            image_warned: false,
            volumes: None,
            volumes_stale: true,
            mount_failure: None,
            acked: None,
            acked_rev: 0,
            in_flight: false,
            seen: None,
            written: None,
            resync: Resync::None,
            dirty: true,
            wake_at: None,
        }
    }

    fn new(key: ObjectKey, uid: Uid, pod: &Arc<Pod>) -> Self {
        let mut rec = Self::empty(key, uid);
        rec.take_up(pod);
        rec
    }

    /// Takes up the pod's containers: those of its spec, adopted runs kept, restart counts
    /// carried on from its status. A pod the store says is done is not run again.
    fn take_up(&mut self, pod: &Arc<Pod>) {
        let mut adopted = std::mem::take(&mut self.containers);
        let done = matches!(pod.status.phase, Some(PodPhase::Succeeded | PodPhase::Failed));
        for spec in &pod.spec.containers {
            let status = pod.status.container_statuses.iter().find(|s| s.name == spec.name);
            let restarts = status.map_or(0, |s| s.restart_count.max(0));
            let mut c = match adopted.iter().position(|a| a.name == spec.name) {
                Some(i) => adopted.swap_remove(i),
                None => Ctr::new(spec.name.clone(), restarts),
            };
            c.restarts = c.restarts.max(restarts);
            c.attempt = c.attempt.max(u32::try_from(c.restarts).unwrap_or(0));
            if let Some(since) = c.running_since() {
                // An adopted run: probed from now on, as ready and started as the store
                // says meanwhile (a restarted agent does not flap its pods' readiness).
                c.started = status.and_then(|s| s.started).unwrap_or(spec.startup_probe.is_none());
                c.set_probes(Some(spec), since, since);
                c.ready = status.is_some_and(|s| s.ready);
            }
            if done && c.run == Run::Idle {
                c.run = Run::Done;
                c.waiting = None;
                c.last = status.and_then(|s| s.state.terminated.as_deref()).map(|t| Terminated {
                    attempt: 0,
                    exit: Exit {
                        code: t.exit_code,
                        signal: t.signal,
                        oom_killed: t.reason.as_deref() == Some("OOMKilled"),
                    },
                    started_ms: t.started_at.map(crate::time::Time::as_millis),
                    finished_ms: t.finished_at.map_or(0, crate::time::Time::as_millis),
                });
            }
            self.containers.push(c);
        }
        // Adopted runs of containers the spec lacks are stopped with the rest if the pod is.
        self.containers.extend(adopted);
        if self.ip.is_none() {
            self.ip = pod.status.pod_ip.as_ref().map(ToString::to_string);
        }
        if self.start_ms.is_none() {
            self.start_ms = pod.status.start_time.map(crate::time::Time::as_millis);
        }
        if done && self.sandbox != Sandbox::Ready {
            self.sandbox = Sandbox::Removed;
        }
    }

    /// The container `name`'s run `attempt`, if that is its current one.
    fn run_of(&mut self, name: &str, attempt: u32) -> Option<&mut Ctr> {
        self.containers.iter_mut().find(|c| c.name == name && c.attempt == attempt)
    }

    /// An event about this pod, if it is known.
    fn record(&self, type_: EventType, reason: &'static str, message: String) -> Option<Action> {
        let pod = self.pod.as_ref()?;
        Some(Action::Event(Record::about(COMPONENT, &crate::object::Object::Pod(pod.clone()), type_, reason, message)))
    }

    /// The grace period of a stop of the whole pod, in ms.
    fn grace_ms(&self) -> i64 {
        let grace = self.pod.as_ref().map_or(crate::defaults::DEFAULT_TERMINATION_GRACE_SECONDS, |p| {
            p.metadata
                .deletion_grace_period_seconds
                .or(p.spec.termination_grace_period_seconds)
                .unwrap_or(crate::defaults::DEFAULT_TERMINATION_GRACE_SECONDS)
        });
        grace.max(0).saturating_mul(1_000)
    }

    /// Does what the pod's state and the time call for; whether the pod is to be forgotten.
    /// `configs` is none until the first lists of ConfigMaps and Secrets are in.
    fn step(
        &mut self,
        settings: &Settings,
        synced: bool,
        configs: Option<&Configs>,
        now: i64,
        out: &mut Vec<Action>,
    ) -> bool {
        self.wake_at = None;
        if self.pod.is_none() && !self.gone && !synced {
            // Adopted: wait for the list to say whether it is still wanted.
            return false;
        }
        let stopping = self.gone || self.pod.as_ref().is_none_or(|p| p.metadata.deletion_timestamp.is_some());
        if stopping {
            return self.stop(now, out);
        }
        let Some(pod) = self.pod.clone() else { return false };
        self.start_ms.get_or_insert(now);
        let policy = pod.spec.restart_policy.unwrap_or(RestartPolicy::Always);
        let uid = self.uid;
        for c in &mut self.containers {
            // Decide on runs that ended.
            if let Run::Exited(t) = &c.run {
                let t = t.clone();
                let again = match policy {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => c.probe_killed || t.exit.code != 0 || t.exit.signal.is_some(),
                    RestartPolicy::Never => false,
                };
                if again {
                    let ran = t.started_ms.map_or(0, |s| t.finished_ms.saturating_sub(s));
                    let delay = c.delay.fail(settings.restart_backoff, ran);
                    c.run = Run::Idle;
                    c.restart_at = t.finished_ms.saturating_add(delay);
                    c.waiting = (c.restart_at > now).then(|| {
                        let message = format!(
                            "back-off {}s restarting failed container={} pod={}_{}({uid})",
                            delay / 1_000,
                            c.name,
                            pod.metadata.name,
                            pod.metadata.namespace_str()
                        );
                        (CRASH_LOOP_BACK_OFF, Some(message))
                    });
                } else {
                    c.run = Run::Done;
                    c.waiting = None;
                }
                c.last = Some(t);
            }
            // Probes and stops of running ones.
            if let Run::Running { .. } = c.run {
                if let Some(at) = c.stop_at {
                    if now >= at && !c.kill_sent {
                        c.kill_sent = true;
                        out.push(Action::KillContainer { uid, container: c.name.to_string(), attempt: c.attempt });
                    } else if !c.kill_sent {
                        wake(&mut self.wake_at, at);
                    }
                    continue;
                }
                for p in &mut c.probes {
                    if p.due(now) {
                        p.begin(now);
                        out.push(Action::Probe {
                            uid,
                            container: c.name.to_string(),
                            attempt: c.attempt,
                            kind: p.kind,
                            probe: Box::new(p.probe.clone()),
                            ip: self.ip.clone(),
                            timeout_ms: p.timeout_ms(),
                        });
                    }
                    if !p.in_flight {
                        wake(&mut self.wake_at, p.next_at);
                    }
                }
            }
        }
        // Config the node cannot run: the container waits with the reason, for good (a pod's
        // containers do not change but for their image).
        for (c, spec) in self.containers.iter_mut().zip(&pod.spec.containers) {
            if c.run == Run::Idle
                && let Some((reason, message)) = config_error(settings, spec)
            {
                c.waiting = Some((reason, Some(message)));
                c.restart_at = i64::MAX;
            }
        }
        let finished = !self.containers.is_empty() && self.containers.iter().all(Ctr::done);
        match self.sandbox {
            Sandbox::Pending { .. } if finished => self.sandbox = Sandbox::Removed,
            Sandbox::Pending { at } if at <= now => {
                self.sandbox = Sandbox::Creating;
                out.push(Action::CreateSandbox { uid, pod: pod.clone() });
            }
            Sandbox::Pending { at } => wake(&mut self.wake_at, at),
            Sandbox::Ready if finished => {
                // Done for good: the address and the namespace go; the pod stays, as its phase.
                self.sandbox = Sandbox::Removing;
                out.push(Action::RemoveSandbox { uid });
            }
            Sandbox::Ready => {
                let starting = self.containers.iter().any(|c| c.run == Run::Idle && c.restart_at <= now);
                if starting && !self.image_warned && !settings.strict_images {
                    // Said once per pod, when the agent first starts one of its containers.
                    self.image_warned = true;
                    for c in pod.spec.containers.iter().filter(|c| !c.image.is_empty() && !c.command.is_empty()) {
                        let message = format!(
                            "image {:?} is not pulled: this node runs container {}'s command from its own filesystem",
                            c.image.as_str(),
                            c.name
                        );
                        out.extend(self.record(EventType::Warning, "ImageNotPulled", message));
                    }
                }
                // A pod that takes nothing from ConfigMaps or Secrets need not wait for them.
                let configs = configs.or_else(|| config::references(&pod).is_empty().then_some(&config::EMPTY));
                let volumes = self.volumes_now(&pod, configs, out);
                let fields =
                    config::PodFields { pod: &pod, pod_ip: self.ip.as_deref(), host_ip: settings.host_ip.as_deref() };
                let mut records = Vec::new();
                for (i, c) in self.containers.iter_mut().enumerate().take(pod.spec.containers.len()) {
                    if c.run != Run::Idle || c.restart_at == i64::MAX {
                        continue;
                    }
                    if c.restart_at > now {
                        wake(&mut self.wake_at, c.restart_at);
                        continue;
                    }
                    // Its volumes are not there yet (or their sources are not known yet): it
                    // waits, and starts when they change.
                    let (Some(volumes), Some(configs)) = (&volumes, configs) else {
                        c.waiting = Some((CONTAINER_CREATING, None));
                        continue;
                    };
                    let Some(spec) = pod.spec.containers.get(i) else { continue };
                    match config::environment(&fields, spec, configs) {
                        Ok(env) => {
                            c.run = Run::Starting;
                            c.attempt = c.attempt.saturating_add(1);
                            out.push(Action::StartContainer {
                                uid,
                                pod: pod.clone(),
                                container: i,
                                attempt: c.attempt,
                                ip: self.ip.clone(),
                                env,
                                volumes: volumes.clone(),
                            });
                        }
                        // As the kubelet: the container waits, and is tried again when a
                        // ConfigMap or Secret changes.
                        Err(message) => {
                            let message = cut(&message);
                            if c.waiting.as_ref().and_then(|(_, m)| m.as_ref()) != Some(&message) {
                                records.push((EventType::Warning, "Failed", format!("Error: {message}")));
                            }
                            c.waiting = Some((CREATE_CONTAINER_CONFIG_ERROR, Some(message)));
                        }
                    }
                }
                for (type_, reason, message) in records {
                    out.extend(self.record(type_, reason, message));
                }
            }
            Sandbox::Creating | Sandbox::Removing | Sandbox::Removed => {}
        }
        false
    }

    /// The pod's volumes as of now, if they can be made: a new version when a source changed
    /// (handed to the runtime at once when the pod already has one), the last one when a
    /// source is gone since (the kubelet keeps a volume's files). None, with a `FailedMount`
    /// event (once per message), while they cannot be made; none until `configs` are known
    /// for a pod that takes from them.
    fn volumes_now(
        &mut self,
        pod: &Arc<Pod>,
        configs: Option<&Configs>,
        out: &mut Vec<Action>,
    ) -> Option<Arc<Volumes>> {
        let configs = configs?;
        if self.volumes_stale || self.volumes.is_none() {
            return self.fresh_volumes(pod, configs, out);
        }
        self.volumes.clone()
    }

    fn fresh_volumes(&mut self, pod: &Arc<Pod>, configs: &Configs, out: &mut Vec<Action>) -> Option<Arc<Volumes>> {
        self.volumes_stale = false;
        match config::volumes(pod, configs) {
            Ok(volumes) => {
                self.mount_failure = None;
                match &self.volumes {
                    Some(v) if v.volumes == volumes => {}
                    Some(v) => {
                        let next = Arc::new(Volumes { generation: v.generation + 1, volumes });
                        out.push(Action::UpdateVolumes { uid: self.uid, volumes: next.clone() });
                        self.volumes = Some(next);
                    }
                    None => {
                        let first = Arc::new(Volumes { generation: 1, volumes });
                        // Runs adopted by a restarted agent: their volumes are brought up to
                        // date now (a source may have changed while it was down).
                        if !first.volumes.is_empty() && self.containers.iter().any(Ctr::live) {
                            out.push(Action::UpdateVolumes { uid: self.uid, volumes: first.clone() });
                        }
                        self.volumes = Some(first);
                    }
                }
                self.volumes.clone()
            }
            Err(message) => {
                let message = cut(&message);
                if self.mount_failure.as_ref() != Some(&message) {
                    out.extend(self.record(EventType::Warning, "FailedMount", message.clone()));
                    self.mount_failure = Some(message);
                }
                self.volumes.clone()
            }
        }
    }

    /// Stops the pod: SIGTERM to each run, SIGKILL of the pod at the grace period's end,
    /// then its sandbox goes, then it is deleted for good (or forgotten, if it left the
    /// store). Whether it is to be forgotten.
    fn stop(&mut self, now: i64, out: &mut Vec<Action>) -> bool {
        let uid = self.uid;
        let kill_at = *self.kill_at.get_or_insert(now.saturating_add(self.grace_ms()));
        for c in &mut self.containers {
            match &c.run {
                Run::Running { .. } if c.stop_at.is_none() => {
                    c.stop_at = Some(kill_at);
                    c.ready = false;
                    out.push(Action::Signal {
                        uid,
                        container: c.name.to_string(),
                        attempt: c.attempt,
                        signal: Signal::Term,
                    });
                }
                Run::Exited(t) => {
                    c.last = Some(t.clone());
                    c.run = Run::Done;
                    c.waiting = None;
                }
                Run::Idle => {
                    c.run = Run::Done;
                    c.waiting = None;
                }
                _ => {}
            }
        }
        if self.containers.iter().any(Ctr::live) {
            if now >= kill_at && !self.pod_killed {
                self.pod_killed = true;
                out.push(Action::KillPod { uid });
                for c in self.containers.iter_mut().filter(|c| c.running_since().is_some()) {
                    c.kill_sent = true;
                }
            } else if !self.pod_killed {
                wake(&mut self.wake_at, kill_at);
            }
            // A run stopped sooner (a liveness kill under way), or one whose start was still
            // out when the pod was killed: SIGKILL it on its own.
            for c in self.containers.iter_mut().filter(|c| c.running_since().is_some() && !c.kill_sent) {
                let at = c.stop_at.unwrap_or(kill_at).min(kill_at);
                if now >= at {
                    c.kill_sent = true;
                    out.push(Action::KillContainer { uid, container: c.name.to_string(), attempt: c.attempt });
                } else {
                    wake(&mut self.wake_at, at);
                }
            }
            return false;
        }
        match self.sandbox {
            Sandbox::Ready => {
                self.sandbox = Sandbox::Removing;
                out.push(Action::RemoveSandbox { uid });
                false
            }
            // Its answer comes; then it is removed.
            Sandbox::Creating | Sandbox::Removing => false,
            Sandbox::Pending { .. } | Sandbox::Removed => {
                self.sandbox = Sandbox::Removed;
                if self.gone {
                    return true;
                }
                if !self.delete_sent {
                    self.delete_sent = true;
                    out.push(Action::DeletePod { key: self.key.clone(), uid });
                }
                false
            }
        }
    }
}

impl Ctr {
    /// Its probes for a run that started at `since`, as of `now`: the startup probe alone
    /// until it passes, then liveness and readiness (their first try no sooner than now).
    fn set_probes(&mut self, spec: Option<&Container>, since: i64, now: i64) {
        self.probes.clear();
        let Some(spec) = spec else {
            self.started = true;
            self.ready = true;
            return;
        };
        if !self.started
            && let Some(p) = &spec.startup_probe
        {
            self.probes.push(ProbeState::new(ProbeKind::Startup, p, since));
            self.ready = false;
            return;
        }
        self.started = true;
        for (kind, probe) in
            [(ProbeKind::Liveness, &spec.liveness_probe), (ProbeKind::Readiness, &spec.readiness_probe)]
        {
            if let Some(p) = probe {
                let mut state = ProbeState::new(kind, p, since);
                state.next_at = state.next_at.max(now);
                self.probes.push(state);
            }
        }
        self.ready = spec.readiness_probe.is_none();
    }
}

/// Moves `wake_at` to `at` if that is sooner.
fn wake(wake_at: &mut Option<i64>, at: i64) {
    *wake_at = Some(wake_at.map_or(at, |w| w.min(at)));
}
