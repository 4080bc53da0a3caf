//! Starting, stopping and killing `orchd` processes, and running `orchctl`.
//!
//! Each test uses its own loopback network `127.0.<net>.0/24` with fixed ports, so tests in
//! one process never race for ports: node `i` listens on `127.0.<net>.<i>:7100` (API), `:7101`
//! (Raft) and `:7102` (HTTP).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a test waits for a condition before it fails.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// One `orchd` process.
pub(crate) struct Daemon {
    pub(crate) id: u64,
    pub(crate) net: u8,
    pub(crate) dir: PathBuf,
    pub(crate) extra: Vec<String>,
    child: Option<Child>,
}

pub(crate) fn api(net: u8, id: u64) -> String {
    format!("127.0.{net}.{id}:7100")
}

pub(crate) fn raft(net: u8, id: u64) -> String {
    format!("127.0.{net}.{id}:7101")
}

pub(crate) fn http(net: u8, id: u64) -> String {
    format!("127.0.{net}.{id}:7102")
}

/// `ID=RAFT/API,...` for nodes 1..=n.
pub(crate) fn initial_members(net: u8, n: u64) -> String {
    (1..=n).map(|i| format!("{i}={}/{}", raft(net, i), api(net, i))).collect::<Vec<_>>().join(",")
}

impl Daemon {
    /// Node `id` of network `net`, its data in `root/net<net>-n<id>`, with extra flags.
    pub(crate) fn new(root: &Path, net: u8, id: u64, extra: &[String]) -> Self {
        Self { id, net, dir: root.join(format!("net{net}-n{id}")), extra: extra.to_vec(), child: None }
    }

    pub(crate) fn api(&self) -> String {
        api(self.net, self.id)
    }

    /// Starts the process (again).
    pub(crate) fn start(&mut self) {
        let log = std::fs::File::create(self.dir.with_extension("log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_orchd"))
            .args(["--id", &self.id.to_string()])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--api-addr", &api(self.net, self.id)])
            .args(["--raft-addr", &raft(self.net, self.id)])
            .args(["--http-addr", &http(self.net, self.id)])
            .args(["--heartbeat-ms", "50", "--election-timeout-ms", "500"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("orchd starts");
        self.child = Some(child);
    }

    /// kill -9.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "orchd {} did not exit after SIGTERM", self.id);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log so far, for failure messages.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `orchctl` binary: package `orchctl` (orch-api/orchctl), built beside `orchd` by
/// `cargo test --workspace` (it has integration tests, so cargo builds its binary). Cargo gives a
/// test the paths of its own package's binaries only; `cargo test -p orch-daemon` alone needs
/// `cargo build -p orchctl` first.
pub(crate) fn orchctl_bin() -> std::path::PathBuf {
    let path =
        Path::new(env!("CARGO_BIN_EXE_orchd")).with_file_name(format!("orchctl{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, or `cargo build -p orchctl` first",
        path.display()
    );
    path
}

/// Runs orchctl against `servers` with `args`, `stdin` piped in.
pub(crate) fn orchctl(servers: &str, args: &[&str], stdin: Option<&str>) -> Output {
    orchctl_in(None, servers, args, stdin)
}

/// As [`orchctl`], in the network namespace `netns` when one is given.
pub(crate) fn orchctl_in(netns: Option<&str>, servers: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg(orchctl_bin());
            c
        }
        None => Command::new(orchctl_bin()),
    };
    let mut child = command
        .args(["--server", servers])
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("orchctl starts");
    if let Some(text) = stdin {
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("writes stdin");
    }
    child.wait_with_output().expect("orchctl runs")
}

/// orchctl that must succeed; returns its standard output.
pub(crate) fn ok(servers: &str, args: &[&str]) -> String {
    let out = orchctl(servers, args, None);
    assert!(
        out.status.success(),
        "orchctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `f` until it returns Some, or fails the test after [`WAIT`].
pub(crate) fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP GET on loopback: (status code, body).
pub(crate) fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((code, body))
}

/// A binary of the workspace built beside `orchd` (`orch-node`, `orch-hello`): `cargo test
/// --workspace` builds them (orch-node has integration tests); `cargo test -p orch-daemon`
/// alone needs `cargo build -p orch-node` first.
pub(crate) fn sibling_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_orchd")).with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, or `cargo build -p orch-node` first",
        path.display()
    );
    path
}

/// One `orch-node` agent process, its data in `root/agent-<name>`.
pub(crate) struct Agent {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    server: String,
    ip: String,
    extra: Vec<String>,
    /// The network namespace it runs in (through `nsenter`, which keeps the cgroup mounts).
    netns: Option<String>,
    child: Option<Child>,
}

impl Agent {
    /// The agent of node `name` at address `ip`, serving the control plane at `server`.
    pub(crate) fn new(root: &Path, name: &str, ip: &str, server: &str, extra: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            dir: root.join(format!("agent-{name}")),
            server: server.to_owned(),
            ip: ip.to_owned(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            netns: None,
            child: None,
        }
    }

    /// The agent runs in the network namespace `netns`.
    pub(crate) fn in_netns(mut self, netns: &str) -> Self {
        self.netns = Some(netns.to_owned());
        self
    }

    /// Starts the process (again).
    pub(crate) fn start(&mut self) {
        std::fs::create_dir_all(&self.dir).expect("agent dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.with_extension("log"))
            .expect("log file");
        let mut command = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(sibling_bin("orch-node"));
                c
            }
            None => Command::new(sibling_bin("orch-node")),
        };
        let child = command
            .args(["--server", &self.server, "--node-name", &self.name, "--node-ip", &self.ip])
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--heartbeat-ms", "200", "--backoff-initial-ms", "500", "--backoff-max-ms", "2000"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("orch-node starts");
        self.child = Some(child);
    }

    /// kill -9 of the agent alone (its pods' shims live on).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The agent's log so far, for failure messages.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
    }

    /// The pod directories the agent's runtime holds.
    pub(crate) fn pod_dirs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.join("pods")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default()
    }

    /// The agent's cgroup roots (`orch-<node>` under this process's cgroup in the memory and
    /// cpu hierarchies), where they exist.
    pub(crate) fn cgroup_roots(&self) -> Vec<PathBuf> {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        ["memory", "cpu"]
            .iter()
            .filter_map(|controller| {
                let path = own.lines().find_map(|l| {
                    let mut parts = l.splitn(3, ':');
                    let (_, cs, path) = (parts.next()?, parts.next()?, parts.next()?);
                    cs.split(',').any(|c| c == *controller).then(|| path.to_owned())
                })?;
                let root = Path::new("/sys/fs/cgroup")
                    .join(controller)
                    .join(path.trim_start_matches('/'))
                    .join(format!("orch-{}", self.name));
                root.exists().then_some(root)
            })
            .collect()
    }

    /// The pods' cgroups left under the agent's roots.
    pub(crate) fn pod_cgroups(&self) -> Vec<PathBuf> {
        self.cgroup_roots()
            .iter()
            .flat_map(|r| {
                std::fs::read_dir(r)
                    .map(|d| d.flatten().filter(|e| e.path().is_dir()).map(|e| e.path()).collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Kills every process of the agent's pods (their shims and everything in their
    /// cgroups) and removes the cgroups, for the end of a test.
    pub(crate) fn kill_pods(&self) {
        for dir in self.pod_dirs() {
            if let Ok(pid) = std::fs::read_to_string(dir.join("shim.pid")) {
                let _ = Command::new("kill").args(["-9", pid.trim()]).status();
            }
        }
        fn kill_tree(dir: &Path) {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in procs.split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            for e in std::fs::read_dir(dir).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
                if e.path().is_dir() {
                    kill_tree(&e.path());
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        for root in self.cgroup_roots() {
            kill_tree(&root);
            kill_tree(&root);
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        self.kill_pods();
    }
}

/// Runs `ip` with `args`, which must succeed.
pub(crate) fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// Simulated hosts: a network namespace each, on one bridge that lives in a namespace of its
/// own, addresses `<subnet>.<10 + i>`. Nothing is added to the machine's own namespace; all
/// of it goes when this is dropped.
pub(crate) struct Lan {
    prefix: String,
    hosts: Vec<String>,
}

impl Lan {
    /// Hosts named `hosts` on `<subnet>.0/24` (`subnet` as `192.168.251`).
    pub(crate) fn new(subnet: &str, hosts: &[&str]) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let prefix = format!("orcht{}x{n}", std::process::id());
        let lan = Self { prefix, hosts: hosts.iter().map(|h| (*h).to_owned()).collect() };
        let bridge_ns = lan.ns("lan");
        ip(&["netns", "add", &bridge_ns]);
        ip(&["-n", &bridge_ns, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge_ns, "link", "set", "br0", "up"]);
        for (i, host) in hosts.iter().enumerate() {
            let ns = lan.ns(host);
            let port = format!("v{i}");
            ip(&["netns", "add", &ns]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &bridge_ns]);
            ip(&["-n", &bridge_ns, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", lan_ip(subnet, i)), "dev", "eth0"]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        }
        lan
    }

    /// The namespace of host `host`.
    pub(crate) fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }
}

/// The address of host `i` of a [`Lan`] on `subnet`.
pub(crate) fn lan_ip(subnet: &str, i: usize) -> String {
    format!("{subnet}.{}", 10 + i)
}

impl Drop for Lan {
    fn drop(&mut self) {
        for host in self.hosts.iter().map(String::as_str).chain(["lan"]) {
            let _ = Command::new("ip").args(["netns", "del", &self.ns(host)]).status();
        }
    }
}
