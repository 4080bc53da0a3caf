//! A 150,000-pod state (an 80 MB snapshot) reaches a node added fresh over a slow link: a network
//! namespace this test creates, joined to the host by a veth pair whose both ends are shaped
//! with `tc tbf` to 100 Mbit/s (12.5 MB/s: the snapshot takes 6.4 s to cross, thirty times
//! openraft's 200 ms install timeout, which used to be the whole stream's deadline). The new
//! node listens inside the namespace (its socket is bound there; the process stays in the
//! host's), so every byte the leader sends it crosses the shaped link. `add_member` completes
//! once it has installed the snapshot and caught up, with nothing left over in its snapshot
//! directory. (That the bytes go to a file as they arrive is shown by `snapshot_transfer`.)
//!
//! The issue asked for `tc netem` delay; this machine's kernel has no netem qdisc ("Specified
//! qdisc kind is unknown", and no modules to load), so the link is slow by bandwidth instead.
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::Command as Process;
use std::time::{Duration, Instant};

use orch_core::{Command, Kind, parse_manifests};
use orch_raft::control_plane::{Consistency, ControlPlane, SnapshotSettings};

use crate::eventually;

/// The namespace and veth pair, removed when dropped.
struct Link {
    ns: String,
    host_if: String,
}

fn run(args: &[&str]) {
    let out = Process::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

impl Link {
    /// A namespace reached at `ns_ip` from `host_ip` on the host, at 100 Mbit/s each way.
    fn new(tag: &str, host_ip: &str, ns_ip: &str) -> Self {
        let ns = format!("orch-{tag}");
        let (host_if, ns_if) = (format!("o{tag}h"), format!("o{tag}n"));
        let link = Self { ns: ns.clone(), host_if: host_if.clone() };
        let _ = Process::new("ip").args(["netns", "del", &ns]).output();
        run(&["ip", "netns", "add", &ns]);
        run(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if]);
        run(&["ip", "link", "set", &ns_if, "netns", &ns]);
        run(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host_if]);
        run(&["ip", "link", "set", &host_if, "up"]);
        run(&["ip", "netns", "exec", &ns, "ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if]);
        run(&["ip", "netns", "exec", &ns, "ip", "link", "set", &ns_if, "up"]);
        run(&["ip", "netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        let shape = ["root", "tbf", "rate", "100mbit", "burst", "256kbit", "latency", "500ms"];
        run(&[&["tc", "qdisc", "add", "dev", &host_if][..], &shape[..]].concat());
        run(&[&["ip", "netns", "exec", &ns, "tc", "qdisc", "add", "dev", &ns_if][..], &shape[..]].concat());
        link
    }

    /// A listener bound inside the namespace: a thread enters it, binds, and ends.
    #[allow(unsafe_code)]
    fn listen(&self, ip: Ipv4Addr) -> TcpListener {
        let path = format!("/run/netns/{}", self.ns);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns on a namespace file descriptor affects only this thread, which
            // ends right after binding.
            let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
            TcpListener::bind(SocketAddr::from((ip, 0))).expect("binds in the namespace")
        })
        .join()
        .expect("the binding thread")
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = Process::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Process::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn pods(from: usize, count: usize) -> Vec<Command> {
    let template = parse_manifests(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x, labels: {app: web, tier: front}, annotations: \
         {kubernetes.io/change-cause: 'orchctl apply --filename=deploy/web-frontend/production.yaml \
         --record --server-side --field-manager=release-pipeline, rollout of build 2026.12.03-1742 \
         approved by the platform team'}}\n\
         spec: {containers: [{name: web, image: 'registry.example.com/team/web-frontend:1.27.3', \
         command: [nginx, -g, 'daemon off;'], \
         env: [{name: MODE, value: production}, {name: LOG_LEVEL, value: info}, {name: UPSTREAM, value: 'http://api.default.svc:8080'}], \
         ports: [{name: http, containerPort: 80}, {name: metrics, containerPort: 9090}], \
         readinessProbe: {httpGet: {path: /healthz, port: 80}}, \
         resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 500m, memory: 256Mi}}}]}",
    )
    .expect("valid")
    .remove(0);
    (from..from + count)
        .map(|i| {
            let mut pod = template.clone();
            pod.meta_mut().name = format!("web-{i:06}").into();
            Command::Create(pod)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_80_mb_snapshot_reaches_a_fresh_node_over_a_slow_link() {
    const PODS: usize = 150_000;
    // A name and a /30 of its own per process (10.254.0.0/16 is used by no other test).
    let pid = std::process::id();
    let tag = format!("{}", pid % 100_000);
    let (a, b) = ((pid / 64) % 256, (pid % 64) * 4);
    let (host_ip, ns_ip) = (format!("10.254.{a}.{}", b + 1), Ipv4Addr::new(10, 254, a as u8, b as u8 + 2));
    let link = Link::new(&tag, &host_ip, &ns_ip.to_string());
    let dirs = [tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir")];
    // Snapshots every 50 entries, 5 kept: the new node can only catch up by a snapshot.
    let snapshots = SnapshotSettings { every_entries: 50, keep_entries: 5, ..SnapshotSettings::default() };
    let n1 = ControlPlane::builder(1, dirs[0].path()).single_node().snapshots(snapshots).start().await.expect("starts");
    eventually("node 1 leads", || (n1.metrics().leader == Some(1)).then_some(())).await;
    let mut target = 0;
    for from in (0..PODS).step_by(1000) {
        let outcomes = n1.propose(pods(from, 1000)).await.expect("proposed");
        assert!(outcomes.iter().all(Result::is_ok), "{:?}", outcomes.iter().find(|o| o.is_err()));
        target = target.max(outcomes[0].as_ref().map(|s| s.revision.0).unwrap_or(0));
    }
    eventually("a snapshot of the state", || (n1.metrics().snapshot_index >= target - 50).then_some(())).await;
    let bytes = n1.state(Consistency::Linearizable).await.expect("state").to_snapshot().len();
    assert!(bytes >= 70_000_000, "a snapshot of {bytes} bytes");

    // The leader's log no longer reaches back to the start: node 2 needs the snapshot.
    assert!(n1.metrics().purged_index > 0, "the leader compacted its log");
    let listener = link.listen(ns_ip);
    let addr = listener.local_addr().expect("address").to_string();
    let n2 = ControlPlane::builder(2, dirs[1].path())
        .join()
        .listener(listener)
        .advertise(addr.clone())
        .snapshots(snapshots)
        .start()
        .await
        .expect("starts");
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(240), n1.add_member(2, addr))
        .await
        .expect("add_member completes")
        .expect("adds node 2");
    let took = started.elapsed();
    // Only the installed snapshot is left (a snapshot build's own temporary file comes and goes).
    let only_snapshot = || {
        let files: Vec<String> = std::fs::read_dir(dirs[1].path().join("state"))
            .ok()?
            .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
            .collect();
        (files == ["snapshot.bin"]).then_some(())
    };
    eventually("only the installed snapshot on node 2", only_snapshot).await;
    eventually("node 2 applied everything", || (n2.metrics().applied_index >= target).then_some(())).await;
    let count = n2.read(Consistency::Stale, |s| s.list(Kind::Pod, None).count()).await.expect("reads");
    assert_eq!(count, PODS);
    eprintln!("150,000 pods, a {bytes}-byte snapshot: add_member over the slow link took {took:?}");
    for n in [n1, n2] {
        n.shutdown().await.expect("shuts down");
    }
    drop(link);
}
