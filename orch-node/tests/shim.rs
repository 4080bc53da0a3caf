//! A pod's shim as a real process (the `orch-node` binary in its shim mode): runs, their exit
//! codes, their logs, start failures, signals, kills and shutdown.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orch_node::shim::proto::{Request, Response, RunInfo, StartSpec};

struct Shim {
    dir: tempfile::TempDir,
    child: Child,
}

impl Shim {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new(env!("CARGO_BIN_EXE_orch-node"))
            .arg(orch_node::shim::ARG)
            .arg(dir.path())
            .stdin(Stdio::null())
            .spawn()
            .expect("the shim starts");
        let shim = Self { dir, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(shim.socket()).is_err() {
            assert!(Instant::now() < deadline, "the shim opened no socket");
            std::thread::sleep(Duration::from_millis(10));
        }
        shim
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join(orch_node::shim::SOCKET)
    }

    fn call(&self, request: &Request) -> Response {
        let mut stream = UnixStream::connect(self.socket()).expect("connects");
        stream.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
        writeln!(stream, "{}", serde_json::to_string(request).expect("encodes")).expect("sends");
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).expect("reads");
        serde_json::from_str(&line).expect("a response")
    }

    fn spec(&self, name: &str, attempt: u32, argv: &[&str]) -> StartSpec {
        StartSpec {
            name: name.into(),
            attempt,
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            env: vec![("PATH".into(), orch_node::exec::DEFAULT_PATH.into()), ("GREETING".into(), "hi".into())],
            cwd: Some("/".into()),
            netns: None,
            cgroups: Vec::new(),
            mounts: Vec::new(),
            log: self.log(name, attempt),
            log_max_bytes: 1 << 20,
            log_files: 2,
        }
    }

    fn log(&self, name: &str, attempt: u32) -> PathBuf {
        self.dir.path().join(format!("logs/{name}/{attempt}.log"))
    }

    /// Waits for the run to end; how.
    fn exit_of(&self, name: &str, attempt: u32) -> RunInfo {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut version = 0;
        loop {
            let Response::State { version: v, runs } = self.call(&Request::State { after: version, wait_ms: 1_000 })
            else {
                panic!("not a state")
            };
            version = v;
            if let Some(run) = runs.iter().find(|r| r.name == name && r.attempt == attempt && r.exit.is_some()) {
                return run.clone();
            }
            assert!(Instant::now() < deadline, "{name} did not end");
        }
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z ")
}

#[test]
fn a_run_exits_with_its_code_and_its_output_in_its_log() {
    let shim = Shim::start();
    let spec = shim.spec("app", 1, &["sh", "-c", "echo out $GREETING; echo err >&2; exit 3"]);
    assert!(matches!(shim.call(&Request::Start(spec)), Response::Started { .. }));
    let run = shim.exit_of("app", 1);
    let exit = run.exit.expect("exited");
    assert_eq!((exit.code, exit.signal, exit.oom_killed), (3, None, false));
    let log = std::fs::read_to_string(shim.log("app", 1)).expect("log");
    assert!(log.contains("out hi") && log.contains("err"), "{log}");
}

#[test]
fn a_command_that_is_not_there_is_a_start_failure_not_a_run() {
    let shim = Shim::start();
    let spec = shim.spec("app", 1, &["no-such-command-for-orch"]);
    match shim.call(&Request::Start(spec)) {
        Response::Failed { reason, message } => {
            assert_eq!(reason, "RunContainerError");
            assert!(message.contains("executable file not found in $PATH"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let Response::State { runs, .. } = shim.call(&Request::State { after: 0, wait_ms: 0 }) else { panic!() };
    assert!(runs.is_empty(), "{runs:?}");
    // A working directory that is not there is one too.
    let mut spec = shim.spec("app", 2, &["true"]);
    spec.cwd = Some("/no/such/dir".into());
    assert!(matches!(shim.call(&Request::Start(spec)), Response::Failed { .. }));
}

#[test]
fn signals_reach_the_run_and_what_it_leaves_behind_is_killed_with_it() {
    let shim = Shim::start();
    // The shell's background child is in its process group; `wait` keeps the shell alive.
    let spec = shim.spec("app", 1, &["sh", "-c", "sleep 1000 & wait"]);
    let Response::Started { pid } = shim.call(&Request::Start(spec)) else { panic!("not started") };
    assert!(alive(pid));
    let Response::Ok = shim.call(&Request::Signal { name: "app".into(), attempt: 1, signal: 15 }) else { panic!() };
    let exit = shim.exit_of("app", 1).exit.expect("exited");
    assert_eq!((exit.code, exit.signal), (143, Some(15)));
    assert!(!alive(pid));
    // A run that ignores SIGTERM is killed.
    let ready = shim.dir.path().join("ready");
    let script = format!("trap '' TERM; touch {}; while true; do sleep 0.1; done", ready.display());
    let Response::Started { .. } = shim.call(&Request::Start(shim.spec("app", 2, &["sh", "-c", &script]))) else {
        panic!("not started")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the run did not set its trap");
        std::thread::sleep(Duration::from_millis(10));
    }
    shim.call(&Request::Signal { name: "app".into(), attempt: 2, signal: 15 });
    shim.call(&Request::Kill { name: "app".into(), attempt: 2 });
    let exit = shim.exit_of("app", 2).exit.expect("exited");
    assert_eq!(exit.signal, Some(9));
}

#[test]
fn what_a_run_leaves_behind_is_killed_when_it_ends() {
    let shim = Shim::start();
    let pidfile = shim.dir.path().join("left.pid");
    let script = format!("sleep 1000 & echo $! > {}; exit 0", pidfile.display());
    let Response::Started { .. } = shim.call(&Request::Start(shim.spec("bg", 1, &["sh", "-c", &script]))) else {
        panic!("not started")
    };
    shim.exit_of("bg", 1);
    let left: i32 = std::fs::read_to_string(&pidfile).expect("pid").trim().parse().expect("a pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(left) {
        assert!(Instant::now() < deadline, "the run's background process outlived it");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn shutdown_kills_every_run_and_ends_the_shim() {
    let mut shim = Shim::start();
    let Response::Started { pid } = shim.call(&Request::Start(shim.spec("a", 1, &["sleep", "1000"]))) else { panic!() };
    assert!(matches!(shim.call(&Request::Shutdown), Response::Ok));
    let status = shim.child.wait().expect("the shim ends");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "a run outlived its shim's shutdown");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn starts_at_once_do_not_hold_each_other_up() {
    let shim = std::sync::Arc::new(Shim::start());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let shim = std::sync::Arc::clone(&shim);
            std::thread::spawn(move || {
                let name = format!("c{i}");
                shim.call(&Request::Start(shim.spec(&name, 1, &["sleep", "1000"])))
            })
        })
        .collect();
    for t in threads {
        // Each answer comes although the others' runs go on (a start waits for its own exec
        // only; a status descriptor leaked into another run would hold it until that run ends).
        assert!(matches!(t.join().expect("joins"), Response::Started { .. }));
    }
    assert!(matches!(shim.call(&Request::Shutdown), Response::Ok));
}

#[test]
fn a_start_that_fails_is_never_shown_as_a_run_that_exited() {
    let shim = std::sync::Arc::new(Shim::start());
    let watcher = {
        let shim = std::sync::Arc::clone(&shim);
        std::thread::spawn(move || shim.call(&Request::State { after: 0, wait_ms: 2_000 }))
    };
    let failed = shim.call(&Request::Start(shim.spec("app", 1, &["no-such-command-for-orch"])));
    assert!(matches!(failed, Response::Failed { .. }));
    let Response::State { runs, .. } = watcher.join().expect("joins") else { panic!("not a state") };
    assert!(runs.is_empty(), "{runs:?}");
}
