//! Apply rate of single-pod creates, and of pod status updates (the dominant write of a running
//! cluster: node agents reporting), into a state holding 150,000 pods and 5,000 nodes, and
//! snapshot encode/decode of that state. Results: BENCHMARKS.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use orch_benches::{NODES, PODS, build_state, running_status, typical_pod};
use orch_core::command::Preconditions;
use orch_core::time::Time;
use orch_core::{ClientId, Command, Entry, Kind, ObjectKey, Request, State};

/// Creates `n` new pods in entries of `per_entry` requests (timed), then deletes them
/// (untimed) so that every sample starts from the same state size.
fn timed_creates(state: &mut State, serial: &mut u64, next_name: &mut usize, n: u64, per_entry: usize) -> Duration {
    let mut entries = Vec::new();
    let mut keys = Vec::new();
    let mut requests = Vec::with_capacity(per_entry);
    for _ in 0..n {
        let i = PODS + *next_name;
        *next_name += 1;
        let mut pod = typical_pod(i);
        pod.meta_mut().name = format!("bench-{i}").into();
        keys.push(pod.key());
        *serial += 1;
        requests.push(Request::new(ClientId(2), *serial, Command::Create(pod)));
        if requests.len() == per_entry {
            entries.push(Entry::new(1_800_000_000_000, std::mem::take(&mut requests)));
        }
    }
    if !requests.is_empty() {
        entries.push(Entry::new(1_800_000_000_000, requests));
    }
    let start = Instant::now();
    for entry in entries {
        let index = state.applied_index() + 1;
        black_box(state.apply(index, entry));
    }
    let elapsed = start.elapsed();
    // Back to the starting size, outside the measurement. Unbound pods go at once.
    for chunk in keys.chunks(1000) {
        let requests = chunk
            .iter()
            .map(|key: &ObjectKey| {
                Request::new(
                    ClientId(3),
                    0,
                    Command::Delete {
                        key: ObjectKey::new(Kind::Pod, &key.namespace, &key.name),
                        grace_period_seconds: Some(0),
                        preconditions: Preconditions::default(),
                        propagation_policy: None,
                    },
                )
            })
            .collect();
        let index = state.applied_index() + 1;
        state.apply(index, Entry::new(1_800_000_000_000, requests));
    }
    elapsed
}

/// Applies `n` status writes (timed), each its own entry of one request: a node agent (one
/// client per node, as 5,000 agents would be) reporting a pod's status with fresh timestamps,
/// so that each is a real change: a deep copy of the stored pod, the merge, re-validation of
/// the whole pod against its spec, and an outcome in the deduplication table.
fn timed_status_updates(state: &mut State, round: &mut i64, n: u64) -> Duration {
    let mut entries = Vec::with_capacity(n as usize);
    for _ in 0..n {
        *round += 1;
        let i = (*round as usize).wrapping_mul(7919) % PODS;
        let now_ms = 1_800_000_000_000 + *round * 1000;
        let status = running_status(&typical_pod(i), Time::from_millis(now_ms));
        let serial = *round as u64;
        let client = ClientId(10 + (i % NODES) as u128);
        let command = Command::UpdateStatus(status);
        entries.push(Entry::new(now_ms, vec![Request { client, serial, acked_below: serial, retry: false, command }]));
    }
    let start = Instant::now();
    for entry in entries {
        let index = state.applied_index() + 1;
        let out = state.apply(index, entry);
        debug_assert!(out.outcomes.iter().all(Result::is_ok));
        black_box(out);
    }
    start.elapsed()
}

fn status_update_rate(c: &mut Criterion) {
    let mut state = build_state(NODES, PODS);
    let mut round = 0;
    let mut group = c.benchmark_group("apply_pod_status_update_into_150k_pods");
    group.throughput(Throughput::Elements(1));
    group.bench_function("1_per_entry", |b| b.iter_custom(|n| timed_status_updates(&mut state, &mut round, n)));
    group.finish();
}

fn apply_rate(c: &mut Criterion) {
    let mut state = build_state(NODES, PODS);
    let mut serial = 0;
    let mut next_name = 0;
    let mut group = c.benchmark_group("apply_pod_create_into_150k_pods");
    group.throughput(Throughput::Elements(1));
    for per_entry in [1usize, 64] {
        group.bench_function(format!("{per_entry}_per_entry"), |b| {
            b.iter_custom(|n| timed_creates(&mut state, &mut serial, &mut next_name, n, per_entry));
        });
    }
    group.finish();
}

fn snapshot(c: &mut Criterion) {
    let state = build_state(NODES, PODS);
    let bytes = state.to_snapshot();
    eprintln!(
        "snapshot of {PODS} pods and {NODES} nodes: {} bytes ({:.0} bytes per object)",
        bytes.len(),
        bytes.len() as f64 / (PODS + NODES) as f64
    );
    let mut group = c.benchmark_group("snapshot_150k_pods_5k_nodes");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    // Dropping the result (a 77 MB buffer, a 155,000-object state) is not part of the figure.
    group.bench_function("encode", |b| b.iter_with_large_drop(|| state.to_snapshot()));
    group.bench_function("decode", |b| b.iter_with_large_drop(|| State::from_snapshot(&bytes)));
    group.finish();
}

criterion_group!(benches, apply_rate, status_update_rate, snapshot);
criterion_main!(benches);
