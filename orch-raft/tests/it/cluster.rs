//! Several nodes in one process over the in-process transport.

use std::collections::BTreeMap;
use std::time::Duration;

use orch_core::{ClientId, Command, Kind, ObjectKey, Request, parse_manifests};
use orch_raft::local::LocalRouter;
use orch_raft::mem::MemLogStore;
use orch_raft::{Member, RaftNode, StateMachineStore, start_raft};

pub(crate) const WAIT: Option<Duration> = Some(Duration::from_secs(20));

pub(crate) async fn start(
    router: &LocalRouter,
    ids: impl IntoIterator<Item = u64>,
) -> BTreeMap<u64, (RaftNode, StateMachineStore)> {
    let mut nodes = BTreeMap::new();
    for id in ids {
        nodes.insert(id, start_node(router, id, MemLogStore::default()).await);
    }
    nodes
}

/// Starts node `id` on `log` with an in-memory state machine and registers it with `router`.
pub(crate) async fn start_node<L>(router: &LocalRouter, id: u64, log: L) -> (RaftNode, StateMachineStore)
where
    L: openraft::storage::RaftLogStorage<orch_raft::TypeConfig> + orch_raft::DurableLog,
{
    let sm = StateMachineStore::in_memory();
    let raft =
        start_raft(id, crate::fast_raft_config(), router.clone(), log, sm.clone(), id).await.expect("raft starts");
    router.register(id, raft.clone());
    (raft, sm)
}

/// Writes through whichever node leads, retrying (with the same client id and serial, so a
/// write that did commit is not applied twice) while leadership settles. Between attempts it
/// waits for the leader's metrics to show a fresh quorum acknowledgement, never for a fixed
/// time.
pub(crate) async fn write(
    nodes: &BTreeMap<u64, (RaftNode, StateMachineStore)>,
    up: &[u64],
    entry: orch_core::Entry,
) -> (openraft::raft::ClientWriteResponse<orch_raft::TypeConfig>, u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let any = &nodes[&up[0]].0;
    loop {
        let metrics = any
            .wait(WAIT)
            .metrics(|m| m.current_leader.is_some_and(|l| up.contains(&l)), "a live leader")
            .await
            .expect("leader");
        let leader_id = metrics.current_leader.expect("leader id");
        let leader = &nodes[&leader_id].0;
        let acked = leader.wait(WAIT).metrics(|_| true, "metrics").await.expect("metrics").last_quorum_acked;
        match leader.client_write(entry.clone()).await {
            Ok(response) => return (response, leader_id),
            Err(e) if std::time::Instant::now() < deadline => {
                // Wait for the next quorum acknowledgement (or a leader change) before retrying.
                let _ = leader
                    .wait(Some(Duration::from_secs(2)))
                    .metrics(
                        |m| m.last_quorum_acked != acked || m.current_leader != Some(leader_id),
                        format!("a fresh lease after {e}"),
                    )
                    .await;
            }
            Err(e) => panic!("write failed until the deadline: {e}"),
        }
    }
}

pub(crate) fn create_pod(serial: u64, name: &str) -> orch_core::Entry {
    let manifest =
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: x}}]}}");
    let pod = parse_manifests(&manifest).expect("valid manifest").remove(0);
    orch_core::Entry::new(
        1_000,
        vec![Request { client: ClientId(1), serial, acked_below: 0, retry: false, command: Command::Create(pod) }],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_writes_and_survive_the_leader_leaving() {
    let router = LocalRouter::default();
    let nodes = start(&router, 1..=3).await;
    let members: BTreeMap<u64, Member> = (1..=3).map(|i| (i, Member::from(format!("local-{i}")))).collect();
    nodes[&1].0.initialize(members).await.expect("initialize");
    let (written, leader) = write(&nodes, &[1, 2, 3], create_pod(1, "a")).await;
    assert!(written.data.outcomes[0].is_ok(), "{:?}", written.data.outcomes);
    let index = written.log_id.index;
    let key = ObjectKey::new(Kind::Pod, "default", "a");
    for (raft, sm) in nodes.values() {
        raft.wait(WAIT).applied_index_at_least(Some(index), "applied everywhere").await.expect("applied");
        let revision = sm.read(|s| s.get(&key).and_then(|p| p.meta().resource_version).map(|r| r.0));
        assert_eq!(revision, Some(index), "every replica stores the pod at the write's index");
    }

    // The leader leaves; the two others elect a new one, which has the acknowledged write.
    router.unregister(leader).expect("registered").shutdown().await.expect("shuts down");
    let up: Vec<u64> = nodes.keys().copied().filter(|id| *id != leader).collect();
    let (second, _) = write(&nodes, &up, create_pod(2, "b")).await;
    assert!(second.data.outcomes[0].is_ok());
    let digests: Vec<_> = nodes.iter().filter(|(id, _)| **id != leader).map(|(_, (raft, sm))| (raft, sm)).collect();
    for (raft, _) in &digests {
        raft.wait(WAIT).applied_index_at_least(Some(second.log_id.index), "applied").await.expect("applied");
    }
    let states: Vec<_> = digests.iter().map(|(_, sm)| sm.read(|s| (s.get(&key).is_some(), s.digest()))).collect();
    assert!(states.iter().all(|(has_first, _)| *has_first), "the first acknowledged write survived");
    assert_eq!(states[0].1, states[1].1, "the surviving replicas hold identical state");
    for (id, (raft, _)) in &nodes {
        if *id != leader {
            raft.shutdown().await.expect("shuts down");
        }
    }
}
