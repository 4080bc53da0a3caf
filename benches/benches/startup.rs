//! Pod startup latency with the process runtime on one agent, as seen through a watch: orchd
//! and one `orch-node` agent (pod networks through CNI, cgroups) as real processes, in a
//! network namespace the bench makes (so the agent's bridge and routes stay out of the
//! machine's own), each pod a real process in a network namespace of its own.
//!
//! Measures:
//! 1. one pod at a time, 100 times: from the create to a watch event showing it `Running`
//!    (the Kubernetes pod startup SLO is 5 s at p99; the target here is 500 ms);
//! 2. a 100-replica Deployment of `orch-hello` (readiness: tcpSocket, periodSeconds 1)
//!    created at once: until all 100 are Running, and until all are Ready;
//! 3. the agent's memory (VmRSS) and CPU over a 10 s window at those 100 pods, and the 100
//!    shims' memory.
//!
//! Needs root, iproute2, `nsenter` and the CNI plugins (`scripts/setup`), and the workspace's
//! binaries built: `cargo build --workspace --all-features --bins`, then
//! `cargo test --workspace --all-features --bench startup` (the test profile; or `cargo
//! bench -p orch-benches --bench startup` after a release build of the binaries). The
//! bench runs itself again inside its namespace (`--inner`). ORCH_BENCH_PODS sets the number
//! of single pods (default 100), ORCH_BENCH_REPLICAS the Deployment's (default 100).
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use orch_api::{Client, WatchItem};
use orch_core::{Kind, Object, ObjectKey};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The directory of the workspace's binaries (the bench's own is `<dir>/deps/`).
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    exe.parent().and_then(Path::parent).expect("target dir").to_owned()
}

fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} is missing: cargo build --workspace --all-features --bins first", path.display());
    path
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--inner") {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(inner());
        return;
    }
    let ns = format!("orchbench{}", std::process::id());
    let ip = |args: &[&str]| {
        let ok = Command::new("ip").args(args).status().is_ok_and(|s| s.success());
        assert!(ok, "ip {} failed (the bench needs root and iproute2)", args.join(" "));
    };
    ip(&["netns", "add", &ns]);
    ip(&["-n", &ns, "link", "set", "lo", "up"]);
    let status = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(std::env::current_exe().expect("own path"))
        .arg("--inner")
        .status();
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    assert!(status.is_ok_and(|s| s.success()), "the bench failed");
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1_000.0
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Fields after the name: state is 0, utime 11, stime 12.
    field(11) + field(12)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// The pids of the shims of the agent whose data is under `dir`.
fn shims(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
                .filter(|pid| {
                    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let cmd = String::from_utf8_lossy(&cmd);
                    cmd.contains("__orch-shim") && cmd.contains(&needle)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn pod_object(name: &str) -> Object {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: main, image: local, command: [sleep, '1000']}}\n"
    );
    orch_core::manifest::parse_manifests(&yaml).expect("pod manifest").pop().expect("pod")
}

fn phase(obj: &Object) -> Option<String> {
    match obj {
        Object::Pod(p) => p.status.phase.map(|p| p.to_string()),
        _ => None,
    }
}

fn ready(obj: &Object) -> bool {
    match obj {
        Object::Pod(p) => {
            p.status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == orch_core::meta::ConditionStatus::True)
        }
        _ => false,
    }
}

async fn until_gone(client: &Client, key: &ObjectKey) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.get(key).await.is_ok() {
        assert!(Instant::now() < deadline, "{} was not deleted", key.name);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn inner() {
    let root = tempfile::tempdir().expect("tempdir");
    let log = |name: &str| std::fs::File::create(root.path().join(name)).expect("log");
    let _orchd = Killed(
        Command::new(bin("orchd"))
            .arg("--data-dir")
            .arg(root.path().join("cp"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log("orchd.log"))
            .spawn()
            .expect("orchd"),
    );
    let agent_dir = root.path().join("agent");
    let agent = Killed(
        Command::new(bin("orch-node"))
            .args(["--node-name", "bench", "--heartbeat-ms", "1000"])
            .arg("--data-dir")
            .arg(&agent_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log("agent.log"))
            .spawn()
            .expect("orch-node"),
    );
    let client = Client::new(["127.0.0.1:7100"]).expect("client");
    let node = ObjectKey::new(Kind::Node, "", "bench");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((Object::Node(n), _)) = client.get(&node).await
            && n.spec.pod_cidr.is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the agent did not register with a pod CIDR");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 1. One pod at a time.
    let count: usize = env("ORCH_BENCH_PODS", 100);
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let pod = pod_object(&format!("one-{i}"));
        let key = pod.key();
        let start = Instant::now();
        let written = client.create(&pod).await.expect("create");
        let mut watch = client.watch(written.revision.saturating_sub(1), "Pod", "default", "", "");
        'watch: while let Some(item) = watch.next().await {
            if let WatchItem::Events { events, .. } = item.expect("watch") {
                for e in events {
                    if e.object.key() == key && phase(&e.object).as_deref() == Some("Running") {
                        break 'watch;
                    }
                }
            }
        }
        latencies.push(start.elapsed());
        client.delete(&key, None).await.expect("delete");
        until_gone(&client, &key).await;
    }
    latencies.sort();
    println!(
        "startup, one pod at a time ({count}): create to Running p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.9)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().expect("some"))
    );

    // 2. A Deployment at once.
    let replicas: usize = env("ORCH_BENCH_REPLICAS", 100);
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: burst, namespace: default}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: burst}}}}\n  template:\n    metadata: {{labels: {{app: burst}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: hello\n        image: local\n        command: [{}]\n        ports: [{{containerPort: 8080}}]\n        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}\n",
        bin("orch-hello").display()
    );
    let deployment = orch_core::manifest::parse_manifests(&yaml).expect("deployment").pop().expect("one");
    let (_, revision) = client.list(Kind::Pod, Some("default"), "", None).await.expect("list");
    let mut watch = client.watch(revision, "Pod", "default", "app=burst", "");
    let start = Instant::now();
    client.create(&deployment).await.expect("create deployment");
    let mut pods: std::collections::BTreeMap<String, (bool, bool)> = std::collections::BTreeMap::new();
    let (mut all_running, mut all_ready) = (None, None);
    while all_ready.is_none() {
        let item = tokio::time::timeout(Duration::from_secs(120), watch.next()).await.expect("progress").expect("item");
        if let WatchItem::Events { events, .. } = item.expect("watch") {
            for e in events {
                let running = phase(&e.object).as_deref() == Some("Running");
                pods.insert(e.object.key().name.to_string(), (running, ready(&e.object)));
            }
        }
        let running = pods.values().filter(|(r, _)| *r).count();
        let ready_count = pods.values().filter(|(_, r)| *r).count();
        if all_running.is_none() && running >= replicas {
            all_running = Some(start.elapsed());
        }
        if ready_count >= replicas {
            all_ready = Some(start.elapsed());
        }
    }
    println!(
        "startup, a {replicas}-replica Deployment at once: all Running after {:.0} ms, all Ready after {:.0} ms",
        ms(all_running.unwrap_or_default()),
        ms(all_ready.unwrap_or_default())
    );

    // 3. The agent at those pods.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The kernel's USER_HZ.
    let ticks_per_s = 100.0;
    let before = cpu_ticks(agent.0.id());
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let cpu = (cpu_ticks(agent.0.id()) - before) as f64 / ticks_per_s / window.as_secs_f64() * 100.0;
    let shim_pids = shims(&agent_dir);
    let shim_rss: u64 = shim_pids.iter().map(|p| rss_kib(*p)).sum();
    println!(
        "agent at {replicas} pods: VmRSS {:.1} MiB, CPU {cpu:.1}% of a core over {} s (probes every second); {} shims, {:.1} MiB VmRSS together ({:.0} KiB each)",
        rss_kib(agent.0.id()) as f64 / 1024.0,
        window.as_secs(),
        shim_pids.len(),
        shim_rss as f64 / 1024.0,
        shim_rss as f64 / shim_pids.len().max(1) as f64
    );
    let key = ObjectKey::new(Kind::Deployment, "default", "burst");
    client.delete(&key, None).await.expect("delete deployment");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (left, _) = client.list(Kind::Pod, Some("default"), "", None).await.expect("list");
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "pods left after the delete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(agent);
}
