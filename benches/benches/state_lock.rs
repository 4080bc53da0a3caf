//! How long anything holds the state machine's lock at 150,000 pods, and what a writer waits
//! meanwhile: one `ControlPlane` (RocksDB with fsync) restored from a state of 5,000 nodes and
//! 150,000 running pods; one writer proposes pod creates back to back while a reader, in
//! turn, lists the pods of a label selector, counts the objects of every kind (what
//! `/metrics` does), takes a linearizable backup (`State::to_snapshot`, what `orchctl snapshot
//! save` does), has openraft build a snapshot, and subscribes a watch with a backlog.
//!
//! Prints, per site, the longest time it held the lock and how often it took it, and the
//! writer's latency percentiles.
//!
//! `cargo bench -p orch-benches --bench state_lock` (ORCH_BENCH_DIR chooses the disk,
//! ORCH_BENCH_SECONDS the time, default 10).
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use orch_benches::{NODES, PODS, build_state, typical_pod};
use orch_core::{Command, Kind, Selector, WatchFilter};
use orch_raft::control_plane::Consistency;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var("ORCH_BENCH_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let seconds: u64 = std::env::var("ORCH_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let dir = tempfile::tempdir_in(&base)?;

    let t = Instant::now();
    let state = build_state(NODES, PODS);
    let objects = state.len();
    let node = orch_benches::serve_restored(dir.path(), state).await?;
    println!("{objects} objects restored and served in {:.1} s; measuring for {seconds} s", t.elapsed().as_secs_f64());

    // Some history for the watch to replay.
    for k in 0..20 {
        let pods = (0..500).map(|i| Command::Create(typical_pod(10_000_000 + k * 1000 + i))).collect();
        node.propose(pods).await?;
    }
    let history_from = node.metrics().applied_index.saturating_sub(15);

    node.lock_holds().reset();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let node = node.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                let pod = typical_pod(20_000_000 + k);
                let t = Instant::now();
                let outcomes = node.propose(vec![Command::Create(pod)]).await.expect("proposal");
                assert!(outcomes[0].is_ok(), "{outcomes:?}");
                latencies.push(t.elapsed());
                k += 1;
            }
            latencies
        })
    };
    let selector: Selector = "app=web".parse()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut rounds = 0;
    let mut reader_ms: BTreeMap<&str, f64> = BTreeMap::new();
    let mut note = |what: &'static str, t: Instant| {
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let longest = reader_ms.entry(what).or_default();
        *longest = longest.max(ms);
    };
    while Instant::now() < deadline {
        let t = Instant::now();
        node.read(Consistency::Stale, |s| s.select(Kind::Pod, Some("default"), &selector).count()).await?;
        note("list pods app=web", t);
        let t = Instant::now();
        node.read(Consistency::Stale, |s| Kind::ALL.iter().map(|k| s.list(*k, None).count()).sum::<usize>()).await?;
        note("count objects by kind", t);
        let t = Instant::now();
        let bytes = node.read(Consistency::Linearizable, |s| s.to_snapshot()).await?;
        note("backup (to_snapshot)", t);
        drop(bytes);
        let t = Instant::now();
        let before = node.metrics().snapshot_index;
        node.raft().trigger().snapshot().await?;
        while node.metrics().snapshot_index == before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        note("openraft snapshot build", t);
        let t = Instant::now();
        let mut watch = node.watch(history_from, WatchFilter { kind: Some(Kind::Pod), ..WatchFilter::all() })?;
        let _ = watch.next().await;
        note("watch with backlog, first item", t);
        drop(watch);
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut latencies = writer.await?;
    latencies.sort();

    println!("\nthe state machine's lock, {rounds} reader rounds:");
    println!("{:<18} {:>14} {:>10}", "site", "longest ms", "holds");
    for (site, longest, count) in node.lock_holds().report() {
        println!("{:<18} {:>14.3} {:>10}", site.as_str(), longest.as_secs_f64() * 1e3, count);
    }
    println!("longest hold of any site: {:.3} ms", node.lock_holds().longest().as_secs_f64() * 1e3);
    println!("\nreader calls, longest each (ms):");
    for (what, ms) in &reader_ms {
        println!("  {what:<32} {ms:>10.1}");
    }
    println!(
        "\nwriter: {} proposals, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    node.shutdown().await?;
    Ok(())
}
