//! The determinism proof: a three-node cluster on the in-process network, in one thread under
//! simulated time, with seeded openraft randomness, lossy and slow links and a leader crash,
//! replays exactly from its seed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, RaftError};
use orch_core::{ClientId, Command, Kind, Request, parse_manifests};
use orch_raft::local::{Faults, LocalRouter};
use orch_raft::mem::MemLogStore;
use orch_raft::{Member, RaftNode, StateMachineStore, start_raft, with_seed};

/// What one run produced: every application as (node, index, encoded entry), in the order
/// they happened, and the final state digest of each surviving node.
#[derive(Debug, PartialEq, Eq)]
struct Trace {
    applications: Vec<(u64, u64, Vec<u8>)>,
    /// Per surviving node: the state digest and how many pods it holds.
    digests: BTreeMap<u64, (String, usize)>,
    crashed: u64,
}

const WRITES: u64 = 40;
const CRASH_AFTER: u64 = 15;

fn create_pod(serial: u64, at_ms: u64) -> orch_core::Entry {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: pod-{serial}}}\nspec: {{containers: [{{name: c, image: x}}]}}"
    );
    let pod = parse_manifests(&manifest).expect("valid manifest").remove(0);
    orch_core::Entry::new(
        1_700_000_000_000 + i64::try_from(at_ms).expect("millis fit"),
        vec![Request { client: ClientId(7), serial, acked_below: 0, retry: false, command: Command::Create(pod) }],
    )
}

fn leader_of(nodes: &BTreeMap<u64, (RaftNode, StateMachineStore)>, up: &[u64]) -> Option<u64> {
    up.iter().find_map(|id| nodes[id].0.metrics().borrow_watched().current_leader.filter(|l| up.contains(l)))
}

async fn run(seed: u64) -> Trace {
    // Align the simulated clock with the timer wheel's millisecond ticks: the runtime's clock
    // starts at a real instant, so timers set before the first advance would round differently
    // from run to run.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let start = tokio::time::Instant::now();
    let router =
        LocalRouter::with_faults(Faults { seed, loss_per_mille: 50, latency_ms: (1, 8), duplicate_per_mille: 0 });
    let config = crate::fast_raft_config();
    let applications = Arc::new(Mutex::new(Vec::new()));
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        let sm = StateMachineStore::in_memory();
        let log = Arc::clone(&applications);
        sm.set_apply_hook(Arc::new(move |applied: &orch_raft::AppliedEntry<'_>| {
            if let orch_raft::AppliedPayload::Normal(entry, _) = applied.payload {
                log.lock().expect("trace lock").push((id, applied.index, orch_core::codec::encode(entry)));
            }
        }));
        let raft = start_raft(id, Arc::clone(&config), router.clone(), MemLogStore::default(), sm.clone(), seed ^ id)
            .await
            .expect("raft starts");
        router.register(id, raft.clone());
        nodes.insert(id, (raft, sm));
    }
    let members: BTreeMap<u64, Member> = (1..=3).map(|i| (i, Member::from(format!("sim-{i}")))).collect();
    nodes[&1].0.initialize(members).await.expect("initialize");

    let mut up: Vec<u64> = vec![1, 2, 3];
    let mut crashed = 0;
    let deadline = start + Duration::from_secs(600);
    let mut serial = 1;
    while serial <= WRITES {
        assert!(tokio::time::Instant::now() < deadline, "the simulated cluster stopped making progress");
        if serial == CRASH_AFTER + 1
            && crashed == 0
            && let Some(leader) = leader_of(&nodes, &up)
        {
            router.unregister(leader).expect("registered").shutdown().await.expect("shuts down");
            up.retain(|id| *id != leader);
            crashed = leader;
        }
        let Some(leader) = leader_of(&nodes, &up) else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let at = u64::try_from(start.elapsed().as_millis()).expect("millis fit");
        // A retried write keeps its serial: the state machine applies it at most once.
        match nodes[&leader].0.client_write(create_pod(serial, at)).await {
            Ok(response) => {
                assert!(response.data.outcomes[0].is_ok(), "{:?}", response.data.outcomes);
                serial += 1;
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)) | RaftError::Fatal(_)) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("unexpected write error: {e}"),
        }
    }
    let last =
        up.iter().map(|id| nodes[id].0.metrics().borrow_watched().last_log_index.unwrap_or(0)).max().unwrap_or(0);
    for id in &up {
        let wait = nodes[id].0.wait(Some(Duration::from_secs(60)));
        wait.applied_index_at_least(Some(last), "caught up").await.expect("every survivor applies the whole log");
    }
    let digests = up
        .iter()
        .map(|id| (*id, nodes[id].1.read(|s| (s.digest().to_string(), s.list(Kind::Pod, None).count()))))
        .collect();
    for id in &up {
        nodes[id].0.shutdown().await.expect("shuts down");
    }
    let applications = std::mem::take(&mut *applications.lock().expect("trace lock"));
    Trace { applications, digests, crashed }
}

fn simulate(seed: u64) -> Trace {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a single-threaded runtime");
    runtime.block_on(with_seed(seed, run(seed)))
}

#[test]
fn same_seed_same_run_and_other_seeds_differ() {
    let first = simulate(42);
    assert_ne!(first.crashed, 0, "the leader crashed during the run");
    let survivors: Vec<_> = first.digests.values().collect();
    assert_eq!(survivors.len(), 2);
    assert_eq!(survivors[0], survivors[1], "the survivors hold identical state");
    assert_eq!(survivors[0].1, WRITES as usize, "every acknowledged write is there, once");

    let again = simulate(42);
    let diverged = first.applications.iter().zip(&again.applications).position(|(a, b)| a != b);
    if let Some(at) = diverged {
        let show = |t: &Trace| {
            t.applications[at.saturating_sub(3)..at + 1].iter().map(|(n, i, _)| (*n, *i)).collect::<Vec<_>>()
        };
        panic!("the runs diverge at application {at}: {:?} vs {:?}", show(&first), show(&again));
    }
    assert_eq!(first, again, "the same seed replays the same applications and final state");

    let others: Vec<Trace> = [7, 1234, 99_999].into_iter().map(simulate).collect();
    assert!(others.iter().any(|t| t.applications != first.applications), "other seeds take other paths");
}
