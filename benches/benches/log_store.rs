//! Group commit of the RocksDB log store: appends/s, latency to durability, and syncs per
//! 1,000 appends, with 1 to 256 appends in flight (fsync on, on the real disk).
//!
//! Then the floor a three-node commit meets when the three logs share one disk: the same
//! entry appended to three logs at once, one round at a time, timed to the first, second
//! (a majority: the earliest any commit can happen) and third durable copy. And the same with
//! plain `fdatasync` of three files (no RocksDB): what the disk itself allows.
//!
//! `cargo bench -p orch-benches --bench log_store` (set ORCH_BENCH_DIR to choose the disk).
#![allow(clippy::print_stdout)]

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::testing::log_id;
use openraft::type_config::TypeConfigExt;
use orch_benches::typical_pod;
use orch_core::{ClientId, Command, Request};
use orch_raft::TypeConfig;
use orch_raft::rocks::RocksLogStore;

/// Resolves when an append is durable.
type Durable = openraft::alias::OneshotReceiverOf<TypeConfig, Result<(), std::io::Error>>;

/// Appends measured per level of concurrency.
const APPENDS: u64 = 3_000;

fn entry(index: u64) -> openraft::alias::EntryOf<TypeConfig> {
    let batch = orch_core::Entry::new(
        1_800_000_000_000,
        vec![Request::new(ClientId(1), index, Command::Create(typical_pod(index as usize)))],
    );
    openraft::Entry { log_id: log_id::<TypeConfig>(1, 1, index), payload: openraft::EntryPayload::Normal(batch) }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let base = std::env::var_os("ORCH_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    println!("RocksDB log store, one ~600-byte entry per append, {APPENDS} appends per row, dir {}", base.display());
    println!("{:>9} {:>11} {:>9} {:>9} {:>16}", "in flight", "appends/s", "p50 ms", "p99 ms", "syncs per 1000");
    for in_flight in [1usize, 16, 64, 256] {
        let dir = tempfile::tempdir_in(&base).expect("temp dir");
        let mut store = RocksLogStore::open(dir.path()).expect("open");
        let stats = store.stats();
        let entries: Vec<_> = (1..=APPENDS).map(entry).collect();
        let mut pending: VecDeque<(Instant, Durable)> = VecDeque::new();
        let mut latencies = Vec::with_capacity(APPENDS as usize);
        let start = Instant::now();
        for e in entries {
            if pending.len() == in_flight {
                let (t0, rx) = pending.pop_front().expect("pending");
                rx.await.expect("callback").expect("durable");
                latencies.push(t0.elapsed());
            }
            let (tx, rx) = TypeConfig::oneshot();
            let t0 = Instant::now();
            store.append([e], IOFlushed::Signal(tx)).await.expect("append");
            pending.push_back((t0, rx));
        }
        while let Some((t0, rx)) = pending.pop_front() {
            rx.await.expect("callback").expect("durable");
            latencies.push(t0.elapsed());
        }
        let elapsed = start.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let syncs = stats.syncs.load(Ordering::Relaxed);
        println!(
            "{:>9} {:>11.0} {:>9.2} {:>9.2} {:>16.1}",
            in_flight,
            APPENDS as f64 / elapsed,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            syncs as f64 * 1000.0 / APPENDS as f64
        );
    }
    three_logs_one_disk(&base).await;
    three_files_one_disk(&base);
}

/// The disk alone: 600 bytes appended to a file and `fdatasync`ed, first one file, then three
/// files from three threads at once per round (like three replicas' logs on one disk); prints
/// p50/p99 of each rank.
fn three_files_one_disk(base: &std::path::Path) {
    use std::io::Write;
    use std::sync::{Arc, Barrier};
    let dir = tempfile::tempdir_in(base).expect("temp dir");
    let record = [7u8; 600];
    let mut alone = Vec::with_capacity(APPENDS as usize);
    let mut file = std::fs::File::create(dir.path().join("alone")).expect("file");
    for _ in 0..APPENDS {
        let t0 = Instant::now();
        file.write_all(&record).expect("write");
        file.sync_data().expect("fdatasync");
        alone.push(t0.elapsed());
    }
    alone.sort_unstable();
    let start = Arc::new(Barrier::new(4));
    let (tx, rx) = std::sync::mpsc::channel::<(u64, Instant)>();
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let (start, tx) = (Arc::clone(&start), tx.clone());
            let mut file = std::fs::File::create(dir.path().join(format!("log-{i}"))).expect("file");
            std::thread::spawn(move || {
                for round in 0..APPENDS {
                    start.wait();
                    file.write_all(&record).expect("write");
                    file.sync_data().expect("fdatasync");
                    tx.send((round, Instant::now())).expect("send");
                }
            })
        })
        .collect();
    drop(tx);
    let mut by_rank: [Vec<Duration>; 3] = Default::default();
    for _ in 0..APPENDS {
        let t0 = Instant::now();
        start.wait();
        let mut done: Vec<Duration> = (0..3).map(|_| rx.recv().expect("a thread's sync").1 - t0).collect();
        done.sort_unstable();
        for (rank, d) in done.into_iter().enumerate() {
            by_rank[rank].push(d);
        }
    }
    for t in threads {
        t.join().expect("thread");
    }
    println!("plain fdatasync of 600 appended bytes, {APPENDS} rounds (no RocksDB):");
    println!(
        "  {:<26} p50 {:.3} ms  p99 {:.3} ms",
        "one file alone",
        percentile(&alone, 0.5),
        percentile(&alone, 0.99)
    );
    for (rank, mut latencies) in by_rank.into_iter().enumerate() {
        latencies.sort_unstable();
        let name = ["first of three", "second of three (majority)", "third of three"][rank];
        println!("  {name:<26} p50 {:.3} ms  p99 {:.3} ms", percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    }
}

/// One append to each of three logs at once per round; prints p50/p99 of the time until the
/// first, second and third copy is durable.
async fn three_logs_one_disk(base: &std::path::Path) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir_in(base).expect("temp dir")).collect();
    let mut stores: Vec<_> = dirs.iter().map(|d| RocksLogStore::open(d.path()).expect("open")).collect();
    let mut by_rank: [Vec<Duration>; 3] = Default::default();
    for index in 1..=APPENDS {
        let t0 = Instant::now();
        let mut waiting = Vec::with_capacity(3);
        for store in &mut stores {
            let (tx, rx) = TypeConfig::oneshot();
            store.append([entry(index)], IOFlushed::Signal(tx)).await.expect("append");
            waiting.push(tokio::spawn(async move {
                rx.await.expect("callback").expect("durable");
                t0.elapsed()
            }));
        }
        let mut done = Vec::with_capacity(3);
        for w in waiting {
            done.push(w.await.expect("waiter"));
        }
        done.sort_unstable();
        for (rank, d) in done.into_iter().enumerate() {
            by_rank[rank].push(d);
        }
    }
    println!("three logs on one disk, the same entry appended to each at once, {APPENDS} rounds:");
    for (rank, mut latencies) in by_rank.into_iter().enumerate() {
        latencies.sort_unstable();
        let name = ["first durable", "second durable (majority)", "third durable"][rank];
        println!("  {name:<26} p50 {:.2} ms  p99 {:.2} ms", percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    }
}
