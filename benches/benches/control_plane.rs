//! A three-node control plane on loopback (RocksDB with fsync on, gRPC): committed commands/s,
//! p50/p99 latency of `propose`, and log syncs per 1,000 commands (summed over the three
//! nodes), with 1, 16, 64 and 256 concurrent proposers, each proposing one pod create at a time.
//!
//! `cargo bench -p orch-benches --bench control_plane` (ORCH_BENCH_DIR chooses the disk,
//! ORCH_BENCH_SECONDS the time per level, default 5; ORCH_BENCH_NODES=1 measures a single node
//! for comparison; ORCH_BENCH_FOLLOWER_DIR puts the two followers on another file system).
#![allow(clippy::print_stdout)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use orch_benches::typical_pod;
use orch_core::Command;
use orch_raft::control_plane::{ControlPlane, Error};

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
    // ORCH_BENCH_FOLLOWER_DIR puts the followers' data elsewhere (another disk), so that the
    // three nodes' fsyncs do not queue behind each other on one device.
    let followers = std::env::var("ORCH_BENCH_FOLLOWER_DIR").unwrap_or_else(|_| base.clone());
    let dirs = [tempfile::tempdir_in(&base)?, tempfile::tempdir_in(&followers)?, tempfile::tempdir_in(&followers)?];
    // ORCH_BENCH_ELECTION_MS sets the minimum election timeout (the maximum twice it, the
    // heartbeat a fifth), to measure which timeouts hold under load; default the built-in timing.
    // ORCH_BENCH_HEARTBEAT_MS sets the heartbeat (default: a fifth of the timeout).
    let election_ms: Option<u64> = std::env::var("ORCH_BENCH_ELECTION_MS").ok().and_then(|s| s.parse().ok());
    let heartbeat_ms: Option<u64> = std::env::var("ORCH_BENCH_HEARTBEAT_MS").ok().and_then(|s| s.parse().ok());
    let builder = |id: u64, dir: &std::path::Path| {
        let b = ControlPlane::builder(id, dir);
        match election_ms {
            Some(ms) => b.timing(
                Duration::from_millis(heartbeat_ms.unwrap_or((ms / 5).max(20))),
                (Duration::from_millis(ms), Duration::from_millis(2 * ms)),
            ),
            None => b,
        }
    };
    let n1 = builder(1, dirs[0].path()).single_node().start().await?;
    let n2 = builder(2, dirs[1].path()).join().start().await?;
    let n3 = builder(3, dirs[2].path()).join().start().await?;
    while n1.metrics().leader != Some(1) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let three = std::env::var("ORCH_BENCH_NODES").map_or(true, |n| n != "1");
    if three {
        n1.add_member(2, n2.address()).await?;
        n1.add_member(3, n3.address()).await?;
    }
    let nodes = [n1.clone(), n2.clone(), n3.clone()];
    let term_at_start = n1.metrics().term;
    let shape = if three { "three nodes on loopback" } else { "one node" };
    println!("{shape}, fsync on, {seconds} s per level, one pod create per proposal");
    println!(
        "{:>10} {:>12} {:>9} {:>9} {:>16} {:>10}",
        "proposers", "commands/s", "p50 ms", "p99 ms", "syncs/1000 cmds", "redirects"
    );
    for (level, proposers) in [1usize, 16, 64, 256].into_iter().enumerate() {
        let syncs_before = syncs(&nodes);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for p in 0..proposers {
            let nodes = nodes.clone();
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut redirects = 0u64;
                let mut at = 0;
                let mut k = 0;
                while Instant::now() < deadline {
                    let pod = typical_pod(level * 10_000_000 + p * 100_000 + k);
                    let t = Instant::now();
                    // A leader change under load is counted, and the proposal follows the leader.
                    let outcomes = loop {
                        match nodes[at].propose(vec![Command::Create(pod.clone())]).await {
                            Ok(outcomes) => break outcomes,
                            Err(Error::NotLeader { leader, .. }) => {
                                redirects += 1;
                                at = leader.and_then(|l| usize::try_from(l - 1).ok()).unwrap_or((at + 1) % 3);
                                tokio::time::sleep(Duration::from_millis(1)).await;
                            }
                            Err(e) => panic!("proposal failed: {e}"),
                        }
                    };
                    assert!(outcomes[0].is_ok(), "{outcomes:?}");
                    latencies.push(t.elapsed());
                    k += 1;
                }
                (latencies, redirects)
            }));
        }
        let mut latencies = Vec::new();
        let mut redirects = 0;
        for task in tasks {
            let (l, r) = task.await?;
            latencies.extend(l);
            redirects += r;
        }
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort();
        let syncs = syncs(&nodes) - syncs_before;
        let rate = latencies.len() as f64 / elapsed;
        let per_1000 = syncs as f64 * 1000.0 / latencies.len() as f64;
        println!(
            "{proposers:>10} {rate:>12.0} {:>9.2} {:>9.2} {per_1000:>16.1} {redirects:>10}",
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
    }
    // Every election under load raises the term: a spurious one (nothing failed) shows here.
    let term = nodes.iter().map(|n| n.metrics().term).max().unwrap_or(0);
    println!(
        "elections during the run: {} (term {term_at_start} -> {term}; timing: {})",
        term - term_at_start,
        election_ms.map_or("built-in default".to_owned(), |ms| format!(
            "election {ms}-{} ms, heartbeat {} ms",
            2 * ms,
            heartbeat_ms.unwrap_or((ms / 5).max(20))
        ))
    );
    if three {
        round_trips(&n2).await?;
    }
    for n in nodes {
        n.shutdown().await?;
    }
    Ok(())
}

/// The floor replication stands on: sequential vote requests (stale, so refused at once) from
/// a gRPC client to node 2's Raft service and its openraft core, and back.
async fn round_trips(target: &ControlPlane) -> Result<(), Box<dyn std::error::Error>> {
    use openraft::network::v2::RaftNetworkV2;
    use openraft::network::{RPCOption, RaftNetworkFactory};
    let mut network = orch_raft::grpc::GrpcNetwork::new(9, 1 << 20);
    let node = orch_raft::Member::from(target.address());
    let mut connection = network.new_client(target.id(), &node).await;
    let vote = openraft::alias::VoteOf::<orch_raft::TypeConfig>::new(0, 9);
    let mut latencies = Vec::new();
    for _ in 0..2_000 {
        let request = openraft::raft::VoteRequest::new(vote, None);
        let t = Instant::now();
        connection.vote(request, RPCOption::new(Duration::from_secs(1))).await?;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    println!(
        "gRPC round trip to a follower's Raft core (vote, refused): p50 {:.3} ms, p99 {:.3} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    Ok(())
}
