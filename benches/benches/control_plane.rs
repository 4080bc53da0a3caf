//! A three-node control plane on loopback (RocksDB with fsync on, gRPC): committed commands/s,
//! p50/p99 latency of `propose`, and log syncs per 1,000 commands (summed over the three
//! nodes), with 1, 16, 64 and 256 concurrent proposers, each proposing one pod create at a time.
//!
//! `cargo bench -p orch-benches --bench control_plane` (ORCH_BENCH_DIR chooses the disk,
//! ORCH_BENCH_SECONDS the time per level, default 5).
#![allow(clippy::print_stdout)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use orch_benches::typical_pod;
use orch_core::Command;
use orch_raft::control_plane::ControlPlane;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn syncs(nodes: &[ControlPlane]) -> u64 {
    nodes.iter().map(|n| n.log_sync_stats().syncs.load(Ordering::Relaxed)).sum()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var("ORCH_BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let seconds: u64 = std::env::var("ORCH_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let dirs = [tempfile::tempdir_in(&base)?, tempfile::tempdir_in(&base)?, tempfile::tempdir_in(&base)?];
    let n1 = ControlPlane::builder(1, dirs[0].path()).start().await?;
    let n2 = ControlPlane::builder(2, dirs[1].path()).join().start().await?;
    let n3 = ControlPlane::builder(3, dirs[2].path()).join().start().await?;
    while n1.metrics().leader != Some(1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    n1.add_member(2, n2.address()).await?;
    n1.add_member(3, n3.address()).await?;
    let nodes = [n1.clone(), n2.clone(), n3.clone()];
    println!("three nodes on loopback, fsync on, {seconds} s per level, one pod create per proposal");
    println!("{:>10} {:>12} {:>9} {:>9} {:>16}", "proposers", "commands/s", "p50 ms", "p99 ms", "syncs/1000 cmds");
    for (level, proposers) in [1usize, 16, 64, 256].into_iter().enumerate() {
        let syncs_before = syncs(&nodes);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for p in 0..proposers {
            let leader = n1.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut k = 0;
                while Instant::now() < deadline {
                    let pod = typical_pod(level * 10_000_000 + p * 100_000 + k);
                    let t = Instant::now();
                    let outcomes = leader.propose(vec![Command::Create(pod)]).await.expect("proposal commits");
                    assert!(outcomes[0].is_ok(), "{outcomes:?}");
                    latencies.push(t.elapsed());
                    k += 1;
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await?);
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort();
        let syncs = syncs(&nodes) - syncs_before;
        let rate = latencies.len() as f64 / elapsed;
        let per_1000 = syncs as f64 * 1000.0 / latencies.len() as f64;
        println!(
            "{proposers:>10} {rate:>12.0} {:>9.2} {:>9.2} {per_1000:>16.1}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
    }
    for n in nodes {
        n.shutdown().await?;
    }
    Ok(())
}
