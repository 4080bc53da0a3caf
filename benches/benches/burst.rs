//! A deployment burst on a three-node control plane: three `ControlPlane`s on loopback
//! (RocksDB with fsync, gRPC between them) each run orchd's leader-only loops (the scheduler,
//! the ReplicaSet, Deployment and endpoints controllers, the garbage collector, the node
//! lifecycle controller) and 5,000 simulated nodes (`orch_core::simnodes`, as `orchd
//! --simulated-nodes`: 8 cores, 32 GiB and 110 pods each, heartbeating every 10 s, bound pods
//! Running and Ready 0.2-1 s later). Only the leader's loops run.
//!
//! Measures, in order:
//! 1. the process's CPU while the nodes only heartbeat (no log writes: the lifecycle
//!    controller keeps the times in memory), against a first window before they registered;
//! 2. a Deployment of 150,000 replicas (the typical pod: 250m cpu, 128 MiB) created at once:
//!    pods created, bound and Ready over time, pods bound per second from the create until
//!    the last is bound, and the CPU meanwhile.
//!
//! The heartbeats go to the lifecycle controller in process, the path the API's `Heartbeat`
//! handler takes after decoding; the gRPC hop of 500 heartbeats a second is not included.
//! CPU is the whole process (three nodes; the followers apply the log too), read from
//! `/proc/self/stat`.
//!
//! `cargo test --workspace --all-features --bench burst` (the test profile), or `cargo bench -p
//! orch-benches --bench burst`. ORCH_BENCH_DIR chooses the disk, ORCH_BENCH_REPLICAS the
//! deployment's size (default 150,000), ORCH_BENCH_SIM_NODES the nodes (default 5,000),
//! ORCH_BENCH_IDLE_SECONDS the heartbeat window (default 30), ORCH_BENCH_SERVICE=1 adds a
//! Service selecting the deployment's pods.
#![allow(clippy::print_stdout)]

/// orchd's allocator (`orch-daemon/src/bin/orchd.rs`), so the bench measures what it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use orch_benches::timed::{Rounds, timed};
use orch_core::meta::ConditionStatus;
use orch_core::{Command, Kind, Object, State};
use orch_raft::control_plane::{Consistency, ControlPlane};
use orch_raft::leader::{FullRound, LoopEvents, LoopFactory, Loops};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// CPU time this process has used (user and system), from `/proc/self/stat` (in the kernel's
/// fixed 100 ticks a second).
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    Duration::from_millis(fields.iter().sum::<u64>() * 10)
}

/// The loops orchd runs with its defaults, with `sims` simulated nodes heartbeating every 10 s.
fn orchd_loops(sims: usize) -> Vec<LoopFactory> {
    let mut loops = orch_raft::controllers::standard(Default::default(), Default::default());
    loops.push(orch_raft::controllers::simulated_nodes(orch_core::simnodes::Settings::named(sims)));
    loops
}

/// Ready nodes; pods of the deployment created, bound, Ready.
fn counts(state: &State) -> (usize, usize, usize, usize) {
    let ready = |conditions: &[_]| {
        let conditions: &[orch_core::core_v1::PodCondition] = conditions;
        conditions.iter().any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
    };
    let nodes = state
        .list(Kind::Node, None)
        .filter(|o| match o {
            Object::Node(n) => {
                n.status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True)
            }
            _ => false,
        })
        .count();
    let (mut created, mut bound, mut running) = (0, 0, 0);
    for pod in state.list(Kind::Pod, Some("default")).filter_map(Object::as_pod) {
        created += 1;
        bound += usize::from(pod.spec.node_name.is_some());
        running += usize::from(ready(&pod.status.conditions));
    }
    (nodes, created, bound, running)
}

/// The pods that hold a node's capacity (bound and not finished) on the nodes that exist, in
/// every namespace, from the usage apply keeps per node: in this bench, the deployment's
/// bound pods (none finishes, every node exists, no other pod runs).
fn bound_pods(state: &State) -> usize {
    state
        .list(Kind::Node, None)
        .filter_map(|n| state.node_usage(&n.meta().name))
        .map(|u| usize::try_from(u.requested.pods).unwrap_or(0))
        .sum()
}

fn deployment(replicas: usize) -> Command {
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: default}}\nspec:\n  \
         replicas: {replicas}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: \
         {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: web\n        image: \
         registry.example.com/shop/web:1.27.3\n        ports: [{{name: http, containerPort: 8080}}]\n        \
         resources: {{requests: {{cpu: 250m, memory: 128Mi}}, limits: {{memory: 256Mi}}}}\n        \
         readinessProbe: {{httpGet: {{path: /healthz, port: http}}}}\n"
    );
    let mut objects = orch_core::parse_manifests(&yaml).expect("a valid deployment");
    Command::Create(objects.remove(0))
}

/// Counts the loops' full rounds by loop and reason.
#[derive(Default)]
struct FullRounds(std::sync::Mutex<std::collections::BTreeMap<(&'static str, FullRound), u64>>);

impl LoopEvents for FullRounds {
    fn full_round(&self, name: &'static str, why: FullRound) {
        *self.0.lock().expect("lock").entry((name, why)).or_insert(0) += 1;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo bench -- --list` probes every bench binary.
    }
    let base = std::env::var("ORCH_BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let replicas: usize = env("ORCH_BENCH_REPLICAS", 150_000);
    let sims: usize = env("ORCH_BENCH_SIM_NODES", 5_000);
    let idle = Duration::from_secs(env("ORCH_BENCH_IDLE_SECONDS", 30));
    let dirs = [tempfile::tempdir_in(&base)?, tempfile::tempdir_in(&base)?, tempfile::tempdir_in(&base)?];

    // The first window: three nodes, no loops, no simulated node.
    let n1 = ControlPlane::builder(1, dirs[0].path()).single_node().start().await?;
    let n2 = ControlPlane::builder(2, dirs[1].path()).join().start().await?;
    let n3 = ControlPlane::builder(3, dirs[2].path()).join().start().await?;
    while n1.metrics().leader != Some(1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    n1.add_member(2, n2.address()).await?;
    n1.add_member(3, n3.address()).await?;
    let nodes = [n1.clone(), n2, n3];
    let (t, c) = (Instant::now(), cpu());
    tokio::time::sleep(idle).await;
    let quiet = (cpu() - c).as_secs_f64() / t.elapsed().as_secs_f64();
    println!("three nodes on loopback, fsync on; no loops, no simulated node: CPU {:.1}% of a core", quiet * 100.0);

    let rounds: Rounds = Arc::default();
    let fulls = Arc::new(FullRounds::default());
    let loops: Vec<Loops> = nodes
        .iter()
        .map(|n| {
            Loops::spawn(
                n.clone(),
                timed(orchd_loops(sims), &rounds),
                orch_raft::leader::LOOP_RESYNC,
                Arc::clone(&fulls) as Arc<dyn LoopEvents>,
            )
        })
        .collect();
    let t = Instant::now();
    loop {
        let (ready, ..) = n1.read(Consistency::Stale, counts).await?;
        if ready >= sims {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "{ready} of {sims} nodes Ready after 5 minutes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("{sims} simulated nodes registered and Ready in {:.1} s", t.elapsed().as_secs_f64());
    // Past the registration's writes, then the heartbeats alone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let applied = n1.metrics().applied_index;
    let (t, c) = (Instant::now(), cpu());
    tokio::time::sleep(idle).await;
    let beating = (cpu() - c).as_secs_f64() / t.elapsed().as_secs_f64();
    let entries = n1.metrics().applied_index.saturating_sub(applied);
    println!(
        "{sims} nodes heartbeating every 10 s ({:.0}/s) for {:.0} s: CPU {:.1}% of a core ({:.1}% above the quiet \
         window), {entries} log entries meanwhile",
        sims as f64 / 10.0,
        idle.as_secs_f64(),
        beating * 100.0,
        (beating - quiet) * 100.0
    );

    let (t, c) = (Instant::now(), cpu());
    rounds.lock().expect("lock").clear();
    fulls.0.lock().expect("lock").clear();
    // With ORCH_BENCH_SERVICE=1, a Service selects the deployment's pods (the endpoints
    // controller then follows all of them).
    if env("ORCH_BENCH_SERVICE", 0u8) == 1 {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n\
                    spec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}\n";
        let service = orch_core::parse_manifests(yaml).expect("a valid service").remove(0);
        let outcomes = n1.propose(vec![Command::Create(service)]).await?;
        assert!(outcomes[0].is_ok(), "{outcomes:?}");
        println!("with a Service selecting the deployment's pods");
    }
    let outcomes = n1.propose(vec![deployment(replicas)]).await?;
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    println!("\n{:>8} {:>10} {:>10} {:>10}", "s", "created", "bound", "Ready");
    let mut next_print = Duration::ZERO;
    let bound_at = loop {
        // Every 250 ms only the bound pods are counted, from the nodes' usage that apply
        // keeps (5,000 lookups); every pod is walked only for the line printed each 5 s (a
        // walk of 150,000 pods four times a second was 5% of the run's CPU).
        let bound = n1.read(Consistency::Stale, bound_pods).await?;
        if t.elapsed() >= next_print || bound >= replicas {
            let (_, created, bound, running) = n1.read(Consistency::Stale, counts).await?;
            println!("{:>8.1} {created:>10} {bound:>10} {running:>10}", t.elapsed().as_secs_f64());
            next_print += Duration::from_secs(5);
        }
        if bound >= replicas {
            break t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(1800), "{bound} of {replicas} bound after 30 minutes");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let burst_cpu = (cpu() - c).as_secs_f64() / bound_at.as_secs_f64();
    println!(
        "\n{replicas} pods of one deployment bound {:.1} s after its create: {:.0} pods/s end to end \
         (the ReplicaSet's creates, the scheduler's binds with their events, the nodes' status writes, \
         all through the log); CPU {:.0}% of a core",
        bound_at.as_secs_f64(),
        replicas as f64 / bound_at.as_secs_f64(),
        burst_cpu * 100.0
    );
    println!("\nthe leader's loops from the create to the last bind:\n{}", orch_benches::timed::report(&rounds));
    let fulls_seen: Vec<String> =
        fulls.0.lock().expect("lock").iter().map(|((name, why), n)| format!("{name} {} x{n}", why.as_str())).collect();
    println!(
        "full rounds meanwhile: {}",
        if fulls_seen.is_empty() { "none".to_owned() } else { fulls_seen.join(", ") }
    );
    let t = Instant::now();
    loop {
        let (.., running) = n1.read(Consistency::Stale, counts).await?;
        if running >= replicas {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(1800), "{running} of {replicas} Ready after 30 more minutes");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("every pod Ready {:.1} s after the last bind", t.elapsed().as_secs_f64());
    println!(
        "longest hold of the leader's state machine lock: {:.1} ms",
        n1.lock_holds().longest().as_secs_f64() * 1e3
    );
    let term = nodes.iter().map(|n| n.metrics().term).max().unwrap_or(0);
    println!("term at the end: {term} (1 + elections during the run)");
    for l in loops {
        l.stop().await;
    }
    for n in nodes {
        n.shutdown().await?;
    }
    Ok(())
}
