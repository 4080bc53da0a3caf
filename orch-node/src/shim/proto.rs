//! What the agent and a pod's shim say to each other over the shim's unix socket: one JSON
//! request per line, one JSON response per line.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The longest request or response line a side reads (argv and env of a container are
/// bounded by the pod's validation; ConfigMap values in env can be large).
pub const LINE_BYTES_MAX: usize = 8 << 20;

/// How a container's run is to be made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartSpec {
    /// The container's name.
    pub name: String,
    /// The run's number.
    pub attempt: u32,
    /// The command and its arguments (`command` then `args`).
    pub argv: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// The working directory.
    pub cwd: Option<String>,
    /// The network namespace to join (none: the host's).
    pub netns: Option<PathBuf>,
    /// The cgroups to join (one per hierarchy), made by the agent.
    pub cgroups: Vec<PathBuf>,
    /// Bind mounts made in the run's own mount namespace: (source, target, read-only).
    pub mounts: Vec<(PathBuf, PathBuf, bool)>,
    /// Where its output goes.
    pub log: PathBuf,
    /// The size at which the log is rotated.
    pub log_max_bytes: u64,
    /// How many log files are kept (the current one included).
    pub log_files: u32,
}

/// A request to the shim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Start a run.
    Start(StartSpec),
    /// Send `signal` to a run's process group.
    Signal { name: String, attempt: u32, signal: i32 },
    /// SIGKILL a run: its process group and everything in its cgroups.
    Kill { name: String, attempt: u32 },
    /// SIGKILL everything the shim started and everything in the pod's cgroups.
    KillAll { cgroups: Vec<PathBuf> },
    /// The runs, once the state's version is past `after` (or after `wait_ms`).
    State { after: u64, wait_ms: u64 },
    /// Exit once nothing runs.
    Shutdown,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// The exit code, or 128 + the signal.
    pub code: i32,
    /// The signal that killed it.
    pub signal: Option<i32>,
    /// Its memory cgroup counted an OOM kill.
    pub oom_killed: bool,
    /// When (ms since the epoch).
    pub finished_ms: i64,
}

/// One run, as the shim knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The container's name.
    pub name: String,
    /// The run's number.
    pub attempt: u32,
    /// Its process (and process group) id.
    pub pid: i32,
    /// When it started (ms since the epoch).
    pub started_ms: i64,
    /// How it ended, once it did.
    pub exit: Option<ExitInfo>,
}

/// A response of the shim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Done.
    Ok,
    /// The run started.
    Started { pid: i32 },
    /// The run could not start: `reason` is `RunContainerError` or
    /// `CreateContainerConfigError`.
    Failed { reason: String, message: String },
    /// The runs (the latest of each container), at `version`.
    State { version: u64, runs: Vec<RunInfo> },
    /// The request could not be done.
    Error(String),
}
