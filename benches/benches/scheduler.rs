//! The pure scheduler ([`orch_core::scheduler`]) placing 150,000 pods of one deployment on
//! 5,000 nodes in one process: one snapshot, each decision assumed before the next (as a batch
//! is). Prints pods placed per second and how even the placement came out. Nodes have 16
//! cores, 64 GiB and 110 pods, in 3 zones; the pods are the typical pod of the other benches
//! (250m cpu, 128Mi), not yet bound.
//!
//! `cargo bench -p orch-benches --bench scheduler`
#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use orch_benches::{NODES, PODS, typical_pod};
use orch_core::scheduler::{Settings, Snapshot};
use orch_core::{Node, Object, Pod, Uid};

fn ready_node(i: usize) -> Arc<Node> {
    match orch_benches::ready_node(i) {
        Object::Node(n) => n,
        _ => unreachable!("ready_node() makes a node"),
    }
}

fn pending_pod(i: usize) -> Pod {
    let Object::Pod(p) = typical_pod(i) else { unreachable!("typical_pod() makes a pod") };
    let mut p = (*p).clone();
    p.spec.node_name = None;
    p.metadata.uid = Some(Uid::from_u128(1_000_000 + i as u128));
    p
}

fn place(pods: &[Pod], nodes: &[Arc<Node>], settings: &Settings) -> (f64, usize, Snapshot) {
    let mut snapshot = Snapshot::new(nodes.iter().cloned(), []);
    let mut refused = 0;
    let started = Instant::now();
    for pod in pods {
        match snapshot.schedule(pod, settings) {
            Ok(name) => {
                let name = name.to_owned();
                snapshot.assume(pod, &name);
            }
            Err(_) => refused += 1,
        }
    }
    (started.elapsed().as_secs_f64(), refused, snapshot)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` probes every bench binary.
    }
    let nodes: Vec<Arc<Node>> = (0..NODES).map(ready_node).collect();
    let pods: Vec<Pod> = (0..PODS).map(pending_pod).collect();
    let (secs, refused, snapshot) = place(&pods, &nodes, &Settings::default());
    let per_node: Vec<i128> =
        nodes.iter().map(|n| snapshot.usage(&n.metadata.name).map_or(0, |u| u.requested.pods)).collect();
    let (min, max) = (per_node.iter().min().copied().unwrap_or(0), per_node.iter().max().copied().unwrap_or(0));
    println!("{PODS} pods on {NODES} nodes (adaptive sample: 10% of the nodes scored)");
    println!("  {:.0} pods/s ({secs:.2} s), {refused} refused, pods per node {min}..{max}", PODS as f64 / secs);
    let some = &pods[..20_000];
    let (secs, _, _) = place(some, &nodes, &Settings { percentage_of_nodes_to_score: 100 });
    println!("{} pods scored against every node: {:.0} pods/s", some.len(), some.len() as f64 / secs);
}
