//! The first process of a container's run (like runc's init): started by the pod's shim as
//! `<agent binary> __orch-exec <spec file>`, it joins the run's cgroups and the pod's network
//! namespace, takes a mount namespace of its own with the run's bind mounts (its
//! `/etc/resolv.conf`, `/etc/hosts`, volumes), moves to the working directory and executes
//! the command with the container's environment. It is single-threaded, so the namespace
//! calls (which need that) are safe; only adopting the status descriptor needs `unsafe`.
//!
//! A failure before the command runs is written to the status descriptor the shim passed
//! (`ORCH_EXEC_STATUS_FD`), which a successful `execve` closes unread: so the shim tells "could
//! not start" (`RunContainerError`, with the message) from "started and exited".

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};

use crate::shim::proto::StartSpec;

/// The argument that selects this mode.
pub const ARG: &str = "__orch-exec";
/// The environment variable naming the status descriptor.
pub const STATUS_FD_ENV: &str = "ORCH_EXEC_STATUS_FD";
/// The `PATH` a container without one gets (the kubelet's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs as a container's first process if the arguments say so; otherwise returns.
pub fn run_if_called() {
    let mut args = std::env::args_os().skip(1);
    if args.next().as_deref() != Some(std::ffi::OsStr::new(ARG)) {
        return;
    }
    let status = std::env::var(STATUS_FD_ENV).ok().and_then(|v| v.parse::<i32>().ok());
    let spec = args.next().map(PathBuf::from);
    let message = match spec {
        Some(spec) => match start(&spec, status) {
            Ok(never) => match never {},
            Err(message) => message,
        },
        None => "no spec file given".to_owned(),
    };
    fail(status, &message);
}

/// Reports `message` on the status descriptor (or stderr) and exits 127.
fn fail(status: Option<i32>, message: &str) -> ! {
    match status {
        Some(fd) if fd > 2 => {
            let mut f = std::fs::File::from(owned(fd));
            let _ = f.write_all(message.as_bytes());
        }
        _ => {
            let _ = writeln!(std::io::stderr(), "orch-exec: {message}");
        }
    }
    std::process::exit(127)
}

/// Takes ownership of the inherited descriptor `fd`. The only `unsafe` of orch-node: the
/// standard library offers no safe way to adopt a descriptor inherited across `exec`.
#[allow(unsafe_code)]
fn owned(fd: i32) -> OwnedFd {
    // SAFETY: `fd` is the status descriptor the shim left open for this process; nothing else
    // here has opened, closed or adopted it, so this is its only owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

enum Never {}

fn start(spec_path: &Path, status: Option<i32>) -> Result<Never, String> {
    let text = std::fs::read(spec_path).map_err(|e| format!("reading {}: {e}", spec_path.display()))?;
    let spec: StartSpec = serde_json::from_slice(&text).map_err(|e| format!("reading the run's spec: {e}"))?;
    let pid = std::process::id().to_string();
    for cgroup in &spec.cgroups {
        std::fs::write(cgroup.join("cgroup.procs"), &pid)
            .map_err(|e| format!("joining cgroup {}: {e}", cgroup.display()))?;
    }
    if let Some(netns) = &spec.netns {
        let f =
            std::fs::File::open(netns).map_err(|e| format!("opening network namespace {}: {e}", netns.display()))?;
        setns(&f, CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("joining network namespace {}: {e}", netns.display()))?;
    }
    if !spec.mounts.is_empty() {
        unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("making a mount namespace: {e}"))?;
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
            .map_err(|e| format!("making mounts private: {e}"))?;
        for (source, target, read_only) in &spec.mounts {
            mount(Some(source.as_path()), target.as_path(), None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| format!("mounting {} at {}: {e}", source.display(), target.display()))?;
            if *read_only {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                mount(None::<&str>, target.as_path(), None::<&str>, flags, None::<&str>)
                    .map_err(|e| format!("making {} read-only: {e}", target.display()))?;
            }
        }
    }
    // Without a workingDir, `/` (an image's usual WORKDIR), not the agent's own.
    let cwd = spec.cwd.as_deref().unwrap_or("/");
    std::env::set_current_dir(cwd).map_err(|e| format!("chdir to {cwd}: {e}"))?;
    let Some(command) = spec.argv.first() else { return Err("no command".to_owned()) };
    let path_var = spec.env.iter().rev().find(|(k, _)| k == "PATH").map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    let program = resolve(command, path_var)?;
    let cstr = |s: &str, what: &str| CString::new(s).map_err(|_| format!("{what} holds a NUL byte"));
    let argv = spec.argv.iter().map(|a| cstr(a, "an argument")).collect::<Result<Vec<_>, _>>()?;
    let env = spec
        .env
        .iter()
        .map(|(k, v)| cstr(&format!("{k}={v}"), "an environment variable"))
        .collect::<Result<Vec<_>, _>>()?;
    let program =
        CString::new(program.as_os_str().as_bytes()).map_err(|_| "the command holds a NUL byte".to_owned())?;
    if let Some(fd) = status {
        let fd = owned(fd);
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(|e| format!("status descriptor: {e}"))?;
        // Closed by a successful exec; kept open (so the failure can be written) otherwise.
        std::mem::forget(fd);
    }
    match nix::unistd::execve(&program, &argv, &env) {
        Ok(never) => match never {},
        Err(e) => Err(format!("exec: {command:?}: {}", e.desc())),
    }
}

/// Where `command` is: itself if it holds a `/`, else the first executable file of that name
/// in `path`; the error says so as the kubelet's runtimes do.
fn resolve(command: &str, path: &str) -> Result<PathBuf, String> {
    if command.contains('/') {
        return Ok(PathBuf::from(command));
    }
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(command);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0
        {
            return Ok(candidate);
        }
    }
    Err(format!("exec: {command:?}: executable file not found in $PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_found_in_the_containers_path() {
        assert_eq!(resolve("sh", "/nonexistent:/bin").ok(), Some(PathBuf::from("/bin/sh")));
        assert_eq!(resolve("/x/y", "").ok(), Some(PathBuf::from("/x/y")));
        let e = resolve("no-such-command-anywhere", DEFAULT_PATH).expect_err("not found");
        assert!(e.contains("executable file not found in $PATH"), "{e}");
    }
}
