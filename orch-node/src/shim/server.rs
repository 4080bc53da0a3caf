//! The shim process.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;

use super::SOCKET;
use super::proto::{ExitInfo, LINE_BYTES_MAX, Request, Response, RunInfo, StartSpec};
use crate::exec;

/// The argument that selects this mode.
pub const ARG: &str = "__orch-shim";
/// The longest a state request waits for a change.
const WAIT_MS_MAX: u64 = 60_000;

/// Runs as a pod's shim if the arguments say so (and exits); otherwise returns.
pub fn run_if_called() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(ARG)) {
        return;
    }
    let Some(dir) = args.next().map(PathBuf::from) else {
        let _ = writeln!(std::io::stderr(), "orch shim: no pod directory given");
        std::process::exit(2);
    };
    if let Err(e) = serve(&dir) {
        let _ = writeln!(std::io::stderr(), "orch shim {}: {e}", dir.display());
        std::process::exit(1);
    }
    std::process::exit(0);
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

struct Run {
    info: RunInfo,
    cgroups: Vec<PathBuf>,
    /// Its start was confirmed (its command runs); until then it is not shown, and an exit
    /// (of the exec helper that failed) is not a run's.
    confirmed: bool,
    /// The threads copying its output to its log: an exit is shown once they are done, so
    /// the log is whole when the exit is known.
    copiers: Vec<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct State {
    version: u64,
    /// The latest run of each container.
    runs: BTreeMap<String, Run>,
    /// The live runs' pids, to their containers.
    pids: BTreeMap<i32, String>,
}

struct Shared {
    dir: PathBuf,
    exe: PathBuf,
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn serve(dir: &Path) -> std::io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(std::io::Error::from)?;
    let exe = std::env::current_exe()?;
    let shared =
        Arc::new(Shared { dir: dir.to_owned(), exe, state: Mutex::new(State::default()), changed: Condvar::new() });
    let socket = dir.join(SOCKET);
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket)?;
    // Only root (the agent) may talk to it: a request starts processes.
    std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::write(dir.join("shim.pid"), std::process::id().to_string())?;
    {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || reap(&shared));
    }
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            if let Err(e) = handle(&shared, conn) {
                let _ = writeln!(std::io::stderr(), "orch shim: connection: {e}");
            }
        });
    }
    Ok(())
}

/// Reaps every child and orphan; records the exits of runs.
fn reap(shared: &Shared) {
    loop {
        let (pid, code, signal) = match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, code, None),
            Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as i32, Some(signal as i32)),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => {
                // No child yet: wait for a start.
                let state = shared.lock();
                let _ = shared.changed.wait_timeout(state, Duration::from_millis(200));
                continue;
            }
        };
        let mut state = shared.lock();
        let Some(name) = state.pids.remove(&pid.as_raw()) else { continue };
        let Some(run) = state.runs.get_mut(&name).filter(|r| r.info.pid == pid.as_raw()) else { continue };
        let oom_killed = run.cgroups.iter().any(|c| oom_kills(c) > 0);
        let exit = ExitInfo { code, signal, oom_killed, finished_ms: now_ms() };
        // The run ended with its first process, as a container ends with its PID 1: what it
        // left behind (its process group, its cgroups) is killed, so no orphan stays.
        let _ = killpg(pid, Signal::SIGKILL);
        kill_cgroups(&run.cgroups);
        if !run.confirmed {
            // Its start decides (a failed exec helper's exit is no run's).
            run.info.exit = Some(exit);
            continue;
        }
        // The output it wrote last reaches the log before the exit is shown (its writers are
        // dead now; a descendant that escaped its group and holds the pipe is waited for 2 s
        // at most).
        let copiers = std::mem::take(&mut run.copiers);
        drop(state);
        await_copiers(&copiers);
        let mut state = shared.lock();
        if let Some(run) = state.runs.get_mut(&name).filter(|r| r.info.pid == pid.as_raw()) {
            run.info.exit = Some(exit);
        }
        state.version += 1;
        shared.changed.notify_all();
    }
}

/// The OOM kills a memory cgroup counted (v1 `memory.oom_control`, v2 `memory.events`).
fn oom_kills(cgroup: &Path) -> u64 {
    for (file, key) in [("memory.oom_control", "oom_kill "), ("memory.events", "oom_kill ")] {
        if let Ok(text) = std::fs::read_to_string(cgroup.join(file)) {
            return text.lines().find_map(|l| l.strip_prefix(key)).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        }
    }
    0
}

/// Every process in `cgroup` and the cgroups under it.
fn cgroup_pids(cgroup: &Path, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(cgroup.join("cgroup.procs")) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(cgroup) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                cgroup_pids(&e.path(), out);
            }
        }
    }
}

/// SIGKILLs everything in the cgroups.
fn kill_cgroups(cgroups: &[PathBuf]) {
    let mut pids = Vec::new();
    for c in cgroups {
        cgroup_pids(c, &mut pids);
    }
    for pid in pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

fn handle(shared: &Shared, conn: UnixStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = conn;
    loop {
        let mut line = String::new();
        let n = (&mut reader).take(LINE_BYTES_MAX as u64 + 1).read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        let response = if line.len() > LINE_BYTES_MAX {
            Response::Error(format!("a request is at most {LINE_BYTES_MAX} bytes"))
        } else {
            match serde_json::from_str::<Request>(&line) {
                Ok(Request::Shutdown) => {
                    shutdown(shared);
                    let _ = writeln!(writer, "{}", serde_json::to_string(&Response::Ok)?);
                    let _ = std::fs::remove_file(shared.dir.join(SOCKET));
                    std::process::exit(0);
                }
                Ok(request) => respond(shared, request),
                Err(e) => Response::Error(format!("not a request: {e}")),
            }
        };
        writeln!(writer, "{}", serde_json::to_string(&response)?)?;
    }
}

fn respond(shared: &Shared, request: Request) -> Response {
    match request {
        Request::Start(spec) => start(shared, spec),
        Request::Signal { name, attempt, signal } => {
            let Ok(signal) = Signal::try_from(signal) else { return Response::Error(format!("no signal {signal}")) };
            let state = shared.lock();
            if let Some(run) = live(&state, &name, attempt) {
                let _ = killpg(Pid::from_raw(run.info.pid), signal);
            }
            Response::Ok
        }
        Request::Kill { name, attempt } => {
            let state = shared.lock();
            if let Some(run) = live(&state, &name, attempt) {
                let _ = killpg(Pid::from_raw(run.info.pid), Signal::SIGKILL);
                kill_cgroups(&run.cgroups);
            }
            Response::Ok
        }
        Request::KillAll { cgroups } => {
            let state = shared.lock();
            for run in state.runs.values().filter(|r| r.info.exit.is_none()) {
                let _ = killpg(Pid::from_raw(run.info.pid), Signal::SIGKILL);
                kill_cgroups(&run.cgroups);
            }
            kill_cgroups(&cgroups);
            Response::Ok
        }
        Request::State { after, wait_ms } => {
            let mut state = shared.lock();
            let deadline = std::time::Instant::now() + Duration::from_millis(wait_ms.min(WAIT_MS_MAX));
            while state.version <= after {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                state = shared.changed.wait_timeout(state, left).map_or_else(|e| e.into_inner().0, |r| r.0);
            }
            Response::State {
                version: state.version,
                runs: state.runs.values().filter(|r| r.confirmed).map(|r| r.info.clone()).collect(),
            }
        }
        Request::Shutdown => Response::Ok,
    }
}

fn live<'a>(state: &'a State, name: &str, attempt: u32) -> Option<&'a Run> {
    state.runs.get(name).filter(|r| r.info.attempt == attempt && r.info.exit.is_none())
}

/// Kills every live run and waits (a little) for the exits.
fn shutdown(shared: &Shared) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut state = shared.lock();
    loop {
        let live: Vec<(i32, Vec<PathBuf>)> =
            state.runs.values().filter(|r| r.info.exit.is_none()).map(|r| (r.info.pid, r.cgroups.clone())).collect();
        if live.is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
        for (pid, cgroups) in live {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            kill_cgroups(&cgroups);
        }
        state =
            shared.changed.wait_timeout(state, Duration::from_millis(50)).map_or_else(|e| e.into_inner().0, |r| r.0);
    }
}

/// Starts a run: the exec helper in a process group of its own, its output to the log.
fn start(shared: &Shared, spec: StartSpec) -> Response {
    let error = |what: &str, e: &dyn std::fmt::Display| Response::Error(format!("{what}: {e}"));
    let runs = shared.dir.join("runs");
    if let Err(e) = std::fs::create_dir_all(&runs) {
        return error("making the runs directory", &e);
    }
    let spec_file = runs.join(format!("{}-{}.json", spec.name, spec.attempt));
    let written = serde_json::to_vec(&spec).map_err(std::io::Error::other).and_then(|b| std::fs::write(&spec_file, b));
    if let Err(e) = written {
        return error("writing the run's spec", &e);
    }
    let log = match LogWriter::open(&spec.log, spec.log_max_bytes, spec.log_files) {
        Ok(log) => Arc::new(Mutex::new(log)),
        Err(e) => return error("opening the log", &e),
    };
    let (mut status_read, status_write) = match std::io::pipe() {
        Ok(p) => p,
        Err(e) => return error("making a pipe", &e),
    };
    let status_write = OwnedFd::from(status_write);
    let mut state = shared.lock();
    if state.runs.get(&spec.name).is_some_and(|r| r.info.exit.is_none()) {
        return Response::Error(format!("container {} has a live run", spec.name));
    }
    // Inheritable only under the lock, and dropped before it is let go, so no other start's
    // child inherits it. Spawned and recorded under the lock too, so the reaper cannot miss
    // a quick exit.
    if let Err(e) = fcntl(&status_write, FcntlArg::F_SETFD(FdFlag::empty())) {
        return error("status descriptor", &e);
    }
    let child = Command::new(&shared.exe)
        .arg(exec::ARG)
        .arg(&spec_file)
        .env_clear()
        .env(exec::STATUS_FD_ENV, status_write.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    drop(status_write);
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return error("starting the run", &e),
    };
    let pid = i32::try_from(child.id()).unwrap_or(0);
    let previous = state.runs.insert(
        spec.name.clone(),
        Run {
            info: RunInfo { name: spec.name.clone(), attempt: spec.attempt, pid, started_ms: now_ms(), exit: None },
            cgroups: spec.cgroups.clone(),
            confirmed: false,
            copiers: Vec::new(),
        },
    );
    state.pids.insert(pid, spec.name.clone());
    drop(state);
    let mut copiers = Vec::new();
    if let Some(out) = child.stdout.take() {
        copiers.push(copy_to_log(out, Arc::clone(&log)));
    }
    if let Some(err) = child.stderr.take() {
        copiers.push(copy_to_log(err, log));
    }
    {
        let mut state = shared.lock();
        if let Some(run) = state.runs.get_mut(&spec.name)
            && run.info.pid == pid
        {
            run.copiers = copiers;
        }
    }
    // Empty at a successful exec; the reason otherwise.
    let mut message = String::new();
    let _ = (&mut status_read).take(64 << 10).read_to_string(&mut message);
    if message.is_empty() {
        let mut state = shared.lock();
        // A run that already ended (reaped before this confirmation) is shown once its log is
        // whole, as the reaper does.
        let ended = state.runs.get_mut(&spec.name).filter(|r| r.info.pid == pid && r.info.exit.is_some());
        if let Some(run) = ended {
            let copiers = std::mem::take(&mut run.copiers);
            drop(state);
            await_copiers(&copiers);
            state = shared.lock();
        }
        if let Some(run) = state.runs.get_mut(&spec.name)
            && run.info.pid == pid
        {
            run.confirmed = true;
        }
        state.version += 1;
        shared.changed.notify_all();
        return Response::Started { pid };
    }
    // Could not start: as if never tried (its helper's exit is not a run's).
    let mut state = shared.lock();
    state.pids.remove(&pid);
    match previous {
        Some(p) => state.runs.insert(spec.name.clone(), p),
        None => state.runs.remove(&spec.name),
    };
    let reason = if message.contains("executable file not found") || message.starts_with("exec:") {
        "RunContainerError"
    } else {
        "CreateContainerConfigError"
    };
    Response::Failed { reason: reason.to_owned(), message }
}

/// Waits for a run's log copiers to finish, 2 s at most (a descendant that left the run's
/// process group may hold its pipe open).
fn await_copiers(copiers: &[std::thread::JoinHandle<()>]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while copiers.iter().any(|c| !c.is_finished()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Copies a run's output stream to its log, in a thread of its own.
fn copy_to_log(mut stream: impl Read + Send + 'static, log: Arc<Mutex<LogWriter>>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let mut log = log.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let _ = log.write(&buf[..n]);
                }
            }
        }
    })
}

/// A log file rotated at a size: `name.log`, then `name.log.1` (the newest old one) up to
/// `name.log.<files - 1>`.
struct LogWriter {
    path: PathBuf,
    file: std::fs::File,
    written: u64,
    max_bytes: u64,
    files: u32,
}

impl LogWriter {
    fn open(path: &Path, max_bytes: u64, files: u32) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let written = file.metadata()?.len();
        Ok(Self { path: path.to_owned(), file, written, max_bytes: max_bytes.max(1), files: files.max(1) })
    }

    fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            if self.written >= self.max_bytes {
                self.rotate()?;
            }
            let room = usize::try_from(self.max_bytes - self.written).unwrap_or(usize::MAX).max(1);
            let n = room.min(data.len());
            self.file.write_all(&data[..n])?;
            self.written += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let old = |i: u32| PathBuf::from(format!("{}.{i}", self.path.display()));
        if self.files > 1 {
            for i in (1..self.files - 1).rev() {
                let _ = std::fs::rename(old(i), old(i + 1));
            }
            std::fs::rename(&self.path, old(1))?;
        }
        self.file = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_rotate_at_their_size_and_keep_their_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c/1.log");
        let mut log = LogWriter::open(&path, 10, 3).expect("opens");
        log.write(b"0123456789abcdefghij").expect("writes");
        log.write(b"ABCDEFGHIJxyz").expect("writes");
        assert_eq!(std::fs::read(&path).expect("current"), b"xyz");
        assert_eq!(std::fs::read(dir.path().join("c/1.log.1")).expect("newest old"), b"ABCDEFGHIJ");
        assert_eq!(std::fs::read(dir.path().join("c/1.log.2")).expect("oldest"), b"abcdefghij");
        assert!(!dir.path().join("c/1.log.3").exists());
    }
}
