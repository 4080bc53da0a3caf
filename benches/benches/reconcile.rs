//! The leader-only loops at 150,000 pods: one `ControlPlane` (RocksDB with fsync) restored
//! from a state of 5,000 Ready nodes (16 cores, 110 pods each) and 150,000 running pods runs
//! three of orchd's loops, the scheduler, the ReplicaSet controller and the node lifecycle
//! controller (not the garbage collector: the fixture's pods name a ReplicaSet the state does
//! not hold, so it would delete them all); then 10,000 pending pods are created, 1,000 per
//! proposal, and the scheduler binds them through the log. Meanwhile every node but
//! `node-00000` heartbeats each second (through the loops' sender, as the API hands them
//! over); with a 5 s grace period that node is lost during the run: its conditions go
//! `Unknown`, it is tainted, and its pods are marked not Ready (their eviction is 300 s
//! away, their default toleration), which takes the node lifecycle controller a scan of
//! every pod.
//!
//! Prints how long the first (full) rounds took, how long until every pending pod was bound
//! (pods bound per second, end to end: decisions, proposals with fsync, apply), the longest
//! round of each loop (computed on a copy of the state: no lock is held meanwhile), and the
//! longest hold of the state machine's lock by site (a round's copy of the state is a
//! `read`).
//!
//! `cargo test --workspace --all-features --bench reconcile` (the test profile: orch-core,
//! orch-raft, openraft and tokio optimized; no release build of RocksDB), or `cargo bench -p
//! orch-benches --bench reconcile`. ORCH_BENCH_DIR chooses the disk.
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use orch_benches::timed::{Rounds, timed};
use orch_benches::{NODES, PODS, build_state_of, ready_node, typical_pod};
use orch_core::meta::ConditionStatus;
use orch_core::{Command, Kind, Object, State};
use orch_raft::control_plane::Consistency;
use orch_raft::leader::{LoopFactory, Loops, NoEvents};

/// The pods created pending.
const PENDING: usize = 10_000;

/// The node lifecycle controller's grace period here.
const GRACE_MS: i64 = 5_000;

/// Of the pods on `node-00000`, once the node is tainted unreachable: how many are not Ready
/// (marked so, or never started), and how many there are.
fn not_ready_on_lost(state: &State) -> (usize, usize) {
    let key = orch_core::ObjectKey::new(Kind::Node, "", "node-00000");
    let tainted = state.get(&key).and_then(|o| match o {
        Object::Node(n) => Some(n.spec.taints.iter().any(|t| t.key == orch_core::nodelifecycle::UNREACHABLE_TAINT)),
        _ => None,
    });
    if tainted != Some(true) {
        return (0, 0);
    }
    let on: Vec<_> = state
        .list(Kind::Pod, None)
        .filter_map(|o| o.as_pod())
        .filter(|p| p.spec.node_name.as_deref() == Some("node-00000"))
        .collect();
    let not_ready = on
        .iter()
        .filter(|p| !p.status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True))
        .count();
    (not_ready, on.len())
}

fn unbound(state: &State) -> usize {
    state.list(Kind::Pod, None).filter(|o| o.as_pod().is_some_and(|p| p.spec.node_name.is_none())).count()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(()); // `cargo bench -- --list` probes every bench binary.
    }
    let base = std::env::var("ORCH_BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let dir = tempfile::tempdir_in(&base)?;
    let t = Instant::now();
    let state = build_state_of(ready_node, NODES, PODS);
    let node = orch_benches::serve_restored(dir.path(), state).await?;
    println!("{NODES} nodes and {PODS} running pods restored and served in {:.1} s", t.elapsed().as_secs_f64());

    let rounds: Rounds = Arc::default();
    let factories: Vec<LoopFactory> = timed(orch_daemon_loops(), &rounds);
    node.lock_holds().reset();
    let t = Instant::now();
    let loops = Loops::spawn(node.clone(), factories, Duration::from_secs(3600), Arc::new(NoEvents));
    while rounds.lock().expect("lock").len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("first rounds of the loops done {:.2} s after the loops started", t.elapsed().as_secs_f64());
    let sender = loops.sender();
    let beating = tokio::spawn(async move {
        loop {
            for i in 1..NODES {
                let node = format!("node-{i:05}");
                let beat = orch_core::reconcile::Message::Heartbeat { node: node.clone() };
                let _ = sender.send_latest(orch_raft::controllers::NODE_LIFECYCLE, &node, Box::new(beat));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let lost_from = Instant::now();

    let t = Instant::now();
    let pending: Vec<Command> = (0..PENDING)
        .map(|i| {
            let mut pod = typical_pod(1_000_000 + i);
            if let Object::Pod(p) = &mut pod {
                Arc::make_mut(p).spec.node_name = None;
            }
            Command::Create(pod)
        })
        .collect();
    for chunk in pending.chunks(1_000) {
        let outcomes = node.propose(chunk.to_vec()).await?;
        assert!(outcomes.iter().all(Result::is_ok), "{:?}", outcomes.iter().find(|o| o.is_err()));
    }
    let created = t.elapsed();
    loop {
        let left = node.read(Consistency::Stale, unbound).await?;
        if left == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(600), "{left} pods still unbound after 10 minutes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bound = t.elapsed();
    println!(
        "{PENDING} pending pods created in {:.2} s and all bound {:.2} s after the first create: {:.0} pods/s end to end",
        created.as_secs_f64(),
        bound.as_secs_f64(),
        PENDING as f64 / bound.as_secs_f64()
    );
    loop {
        let marked = node.read(Consistency::Stale, not_ready_on_lost).await?;
        if marked.0 > 0 && marked.0 == marked.1 {
            println!(
                "node-00000 lost, tainted and its {} pods marked not Ready {:.2} s after the heartbeats began \
                 (grace {GRACE_MS} ms)",
                marked.0,
                lost_from.elapsed().as_secs_f64()
            );
            break;
        }
        assert!(lost_from.elapsed() < Duration::from_secs(120), "node-00000's pods not marked: {marked:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    beating.abort();
    loops.stop().await;
    println!("\n{}", orch_benches::timed::report(&rounds));
    println!("\nthe state machine's lock:");
    println!("{:<18} {:>14} {:>10}", "site", "longest ms", "holds");
    for (site, longest, count) in node.lock_holds().report() {
        println!("{:<18} {:>14.3} {:>10}", site.as_str(), longest.as_secs_f64() * 1e3, count);
    }
    println!("longest hold of any site: {:.3} ms", node.lock_holds().longest().as_secs_f64() * 1e3);
    node.shutdown().await?;
    Ok(())
}

/// Three of the loops orchd runs (`orch_daemon::server::standard_loops`, which this crate does
/// not depend on): the same factories, without the garbage collector, the node lifecycle
/// controller with a 5 s grace period.
fn orch_daemon_loops() -> Vec<LoopFactory> {
    vec![
        orch_raft::controllers::scheduler(orch_core::scheduling::Settings::default()),
        orch_raft::controllers::replica_sets(orch_core::replicaset::Settings::default()),
        orch_raft::controllers::node_lifecycle(orch_core::nodelifecycle::Settings {
            grace_ms: GRACE_MS,
            ..Default::default()
        }),
    ]
}
