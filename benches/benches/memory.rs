//! Measures what a stored pod costs: heap bytes per pod (counted by a global allocator),
//! resident memory per pod, snapshot bytes per pod, and one snapshot round trip, for a state
//! of 150,000 running pods on 5,000 nodes. Prints the figures; BENCHMARKS.md records them.
//!
//! `cargo bench -p orch-benches --bench memory`
#![allow(unsafe_code, clippy::print_stdout)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use orch_benches::{NODES, PODS, apply_all, build_state, node, running_status, typical_pod};
use orch_core::{ClientId, Command, Entry, Request, State, Time};

/// Counts the bytes currently allocated through it.
struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to the system allocator with the caller's layout unchanged
// and only adds bookkeeping on an atomic counter.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATED.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated() -> isize {
    ALLOCATED.load(Ordering::Relaxed)
}

fn resident_bytes() -> isize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: isize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// In a fresh process: restores a snapshot and prints the resident bytes it added.
fn restore_and_report(path: &str) {
    let bytes = std::fs::read(path).expect("snapshot file");
    let (heap_before, rss_before) = (allocated(), resident_bytes());
    let state = State::from_snapshot(&bytes).expect("snapshot restores");
    // Measured while the file's bytes are still held, as they were before.
    let (heap_after, rss_after) = (allocated(), resident_bytes());
    let objects = state.len() as f64;
    println!("{:.0} {:.0}", (heap_after - heap_before) as f64 / objects, (rss_after - rss_before) as f64 / objects);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes every bench binary.
    }
    if let Some(i) = args.iter().position(|a| a == "--restore") {
        restore_and_report(&args[i + 1]);
        return;
    }
    let now_ms = 1_800_000_000_000;
    let mut serial = 0;
    let mut state = State::new();
    apply_all(&mut state, (0..NODES).map(|i| Command::Create(node(i))), now_ms, &mut serial);
    // Let the deduplication table (one client here) fill to its bound before measuring, so that
    // the per-pod figures do not count it; it is measured on its own below.
    apply_all(&mut state, (0..300).map(|i| Command::Create(typical_pod(PODS + i))), now_ms, &mut serial);
    let (heap_before, rss_before) = (allocated(), resident_bytes());
    apply_all(&mut state, (0..PODS).map(|i| Command::Create(typical_pod(i))), now_ms, &mut serial);
    apply_all(
        &mut state,
        (0..PODS).map(|i| Command::UpdateStatus(running_status(&typical_pod(i), Time::from_millis(now_ms)))),
        now_ms,
        &mut serial,
    );
    let (heap_after, rss_after) = (allocated(), resident_bytes());
    let pods = PODS as f64;
    println!("state: {PODS} running pods on {NODES} nodes");
    println!("heap bytes per stored pod:     {:.0}", (heap_after - heap_before) as f64 / pods);
    println!("resident bytes per stored pod: {:.0}", (rss_after - rss_before) as f64 / pods);
    println!(
        "one pod as JSON: {} bytes, as bincode: {} bytes",
        running_status(&typical_pod(1), Time::from_millis(now_ms)).to_manifest().to_string().len(),
        orch_core::codec::encode(&running_status(&typical_pod(1), Time::from_millis(now_ms))).len()
    );

    // The deduplication table at scale: one status write from each of 5,000 clients (a node
    // agent per node). Each replaces a pod by one of the same size, so the heap grows by the
    // sessions and their outcomes.
    let heap_before = allocated();
    let sessions_before = state.sessions().len();
    for k in 0..NODES {
        let status = running_status(&typical_pod(k), Time::from_millis(now_ms + 1000));
        let request = Request {
            client: ClientId(1_000 + k as u128),
            serial: 1,
            acked_below: 1,
            retry: false,
            command: Command::UpdateStatus(status),
        };
        let out = state.apply(state.applied_index() + 1, Entry::new(now_ms + 1000, vec![request]));
        assert!(out.outcomes.iter().all(Result::is_ok));
    }
    let added = state.sessions().len() - sessions_before;
    println!(
        "deduplication table: {NODES} clients with one status write each: {added} sessions kept (SESSIONS_MAX {}), {:.0} heap bytes per session",
        orch_core::sessions::SESSIONS_MAX,
        (allocated() - heap_before) as f64 / added as f64
    );

    // The first round trip also pays for faulting in fresh pages; report the best of three.
    let (mut encode, mut decode) = (f64::MAX, f64::MAX);
    let mut bytes = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        bytes = state.to_snapshot();
        encode = encode.min(start.elapsed().as_secs_f64());
        let start = Instant::now();
        let restored = State::from_snapshot(&bytes);
        decode = decode.min(start.elapsed().as_secs_f64());
        assert_eq!(restored.as_ref().ok(), Some(&state), "snapshot round trip");
    }
    println!(
        "snapshot: {} bytes, {:.0} bytes per object; encode {:.0} ms, decode {:.0} ms, round trip {:.0} ms (best of 3)",
        bytes.len(),
        bytes.len() as f64 / (PODS + NODES) as f64,
        encode * 1e3,
        decode * 1e3,
        (encode + decode) * 1e3
    );
    // A replica that restores the snapshot holds only the final objects, without the churn
    // of applying: measured in a fresh process.
    let path = std::env::temp_dir().join(format!("orch-memory-bench-{}.snap", std::process::id()));
    std::fs::write(&path, &bytes).expect("temp file");
    let out = std::process::Command::new(&args[0]).arg("--restore").arg(&path).output().expect("child process");
    let _ = std::fs::remove_file(&path);
    let line = String::from_utf8_lossy(&out.stdout);
    let mut figures = line.split_whitespace();
    println!(
        "after restoring the snapshot in a fresh process: heap {} bytes, resident {} bytes per object",
        figures.next().unwrap_or("?"),
        figures.next().unwrap_or("?")
    );
    let start = Instant::now();
    let built = build_state(NODES, 10_000);
    println!("(building a 10,000-pod state for comparison took {:.0} ms)", start.elapsed().as_secs_f64() * 1e3);
    drop(built);
}
