//! A node on a disk that loses unsynced writes ([`orch_raft::crash::CrashDisk`]): it applies,
//! and so serves, only what its own log holds durably, and after a crash it serves no older
//! state than before. (A SIGKILL cannot show this: the page cache survives it.)

use std::collections::BTreeMap;

use openraft::StorageError;
use openraft::storage::{IOFlushed, RaftLogReader, RaftLogStorage};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::testing::{blank_ent, log_id};
use openraft::type_config::TypeConfigExt;
use orch_raft::crash::{CrashDisk, CrashLogStore};
use orch_raft::gate::RecoveryGate;
use orch_raft::local::LocalRouter;
use orch_raft::{Member, StateMachineStore, TypeConfig};

use crate::cluster::{WAIT, create_pod, start, start_node, write};

struct CrashBuilder;

impl StoreBuilder<TypeConfig, CrashLogStore, StateMachineStore> for CrashBuilder {
    async fn build(&self) -> Result<((), CrashLogStore, StateMachineStore), StorageError<TypeConfig>> {
        Ok(((), CrashDisk::new().store(), StateMachineStore::in_memory()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crash_store_passes_the_openraft_storage_suite() {
    Suite::test_all(CrashBuilder).await.expect("the crash store passes openraft's suite");
}

async fn append(store: &mut CrashLogStore, index: u64, done: IOFlushed<TypeConfig>) {
    store.append([blank_ent::<TypeConfig>(1, 0, index)], done).await.expect("append");
}

#[tokio::test]
async fn a_crash_loses_what_was_not_synced_and_keeps_the_rest() {
    let disk = CrashDisk::new();
    let mut store = disk.store();
    let (tx, rx) = TypeConfig::oneshot();
    append(&mut store, 1, IOFlushed::Signal(tx)).await;
    rx.await.expect("completed").expect("durable");
    assert_eq!(disk.durable_below(), 2);
    store.save_vote(&openraft::alias::VoteOf::<TypeConfig>::new(3, 1)).await.expect("vote");

    disk.pause_syncs(true);
    let (tx, mut pending) = TypeConfig::oneshot();
    append(&mut store, 2, IOFlushed::Signal(tx)).await;
    store.save_committed(Some(log_id::<TypeConfig>(1, 0, 2))).await.expect("committed");
    assert_eq!(disk.last_index(), (2, 1), "readable at once, durable at the next sync");
    assert_eq!(disk.durable_below(), 2);
    assert!(pending.try_recv().is_err(), "its callback waits for the sync");

    disk.crash();
    let mut after = disk.store();
    assert_eq!(disk.last_index(), (1, 1), "the unsynced entry is gone");
    assert_eq!(after.read_committed().await.expect("read"), None, "and the unsynced committed hint");
    let mut reader = after.get_log_reader().await;
    assert_eq!(reader.read_vote().await.expect("read"), Some(openraft::alias::VoteOf::<TypeConfig>::new(3, 1)));
    assert_eq!(disk.durable_below(), 2);

    let (tx, rx) = TypeConfig::oneshot();
    append(&mut after, 2, IOFlushed::Signal(tx)).await;
    rx.await.expect("completed").expect("durable");
    disk.crash();
    assert_eq!(disk.last_index(), (2, 2), "a synced entry survives");
}

/// Node 3, a learner on a crash disk whose syncs are held, receives an entry the voters
/// committed. It must not apply it (a power cut would take it back after a read served it);
/// once the disk syncs it does. Then it crashes with a newer entry unsynced: the log it
/// recovers holds everything it served, so the restart gate never lets it serve older state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_applies_only_what_its_log_holds_durably_and_serves_no_older_state_after_a_crash() {
    let router = LocalRouter::default();
    let nodes = start(&router, 1..=2).await;
    let disk = CrashDisk::new();
    let (raft3, sm3) = start_node(&router, 3, disk.store()).await;
    let voters: BTreeMap<u64, Member> = (1..=2).map(|i| (i, Member::from(format!("local-{i}")))).collect();
    nodes[&1].0.initialize(voters).await.expect("initialize");
    let (first, _) = write(&nodes, &[1, 2], create_pod(1, "a")).await;
    let leader = nodes[&1].0.wait(WAIT).metrics(|m| m.current_leader.is_some(), "a leader").await.expect("leader");
    let leader = &nodes[&leader.current_leader.expect("leader")].0;
    leader.add_learner(3, Member::from("local-3".to_owned()), true).await.expect("adds the learner");
    raft3.wait(WAIT).applied_index_at_least(Some(first.log_id.index), "node 3 applied").await.expect("applied");

    // Node 3's disk holds its syncs: what it receives now is readable, not durable.
    disk.pause_syncs(true);
    let (second, _) = write(&nodes, &[1, 2], create_pod(2, "b")).await;
    let index = second.log_id.index;
    raft3
        .wait(WAIT)
        .metrics(
            |m| m.last_log_index >= Some(index) && m.local_committed.is_some_and(|c| c.index >= index),
            "node 3 holds the entry and knows it committed",
        )
        .await
        .expect("node 3 caught up in memory");
    let (readable, durable) = disk.last_index();
    assert!(readable >= index && durable < index, "readable {readable}, durable {durable}");
    // It does not apply it: openraft would within milliseconds (it did, with the wait removed);
    // give it half a second. (With the wait in place this cannot flake: nothing can apply it.)
    let applied = raft3.wait(Some(std::time::Duration::from_millis(500))).applied_index_at_least(Some(index), "").await;
    let served = sm3.read(orch_core::State::applied_index);
    assert!(
        applied.is_err() && served < index,
        "node 3 applied entry {index} that a crash would take back (applied {served})"
    );

    // The disk syncs: node 3 applies it.
    disk.sync();
    raft3.wait(WAIT).applied_index_at_least(Some(index), "applied once durable").await.expect("applied");

    // A third write reaches node 3 unsynced; then the power fails.
    disk.pause_syncs(true);
    let (third, _) = write(&nodes, &[1, 2], create_pod(3, "c")).await;
    raft3
        .wait(WAIT)
        .metrics(|m| m.last_log_index >= Some(third.log_id.index), "node 3 holds the third entry")
        .await
        .expect("received");
    let served = sm3.read(orch_core::State::applied_index);
    disk.crash();
    router.unregister(3);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), raft3.shutdown()).await;

    // The recovered log holds everything node 3 served: its gate opens no earlier than that.
    let mut store = disk.store();
    let gate = RecoveryGate::read(&mut store).await.expect("reads the gate");
    assert!(gate.last_log_index >= served, "recovered log ends at {}, node 3 served {served}", gate.last_log_index);
    let (raft3, sm3) = start_node(&router, 3, store).await;
    raft3
        .wait(WAIT)
        .metrics(|m| gate.caught_up(m.last_applied.map(|id| (id.leader_id.term, id.index))), "the gate opens")
        .await
        .expect("caught up");
    assert!(sm3.read(orch_core::State::applied_index) >= served, "no older state than before the crash");
    raft3.wait(WAIT).applied_index_at_least(Some(third.log_id.index), "catches up").await.expect("applied");
    for raft in [raft3, nodes[&1].0.clone(), nodes[&2].0.clone()] {
        raft.shutdown().await.expect("shuts down");
    }
}

/// `ControlPlane` on a crash disk: what it acknowledged survives a power cut that loses every
/// unsynced write, what it did not acknowledge may be lost, and after the restart it serves no
/// older state than before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_on_a_crash_disk_keeps_what_it_acknowledged() {
    use orch_core::{Kind, ObjectKey};
    use orch_raft::control_plane::{Consistency, ControlPlane};

    let pod = |name: &str| {
        let manifest = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: x}}]}}"
        );
        orch_core::Command::Create(orch_core::parse_manifests(&manifest).expect("valid").remove(0))
    };
    let dir = tempfile::tempdir().expect("dir");
    let disk = CrashDisk::new();
    let node = ControlPlane::builder(1, dir.path()).crash_disk(disk.clone()).start().await.expect("starts");
    crate::control_plane::eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
    let outcomes = node.propose(vec![pod("a"), pod("b")]).await.expect("acknowledged");
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let served = node.read(Consistency::Stale, orch_core::State::applied_index).await.expect("reads");

    // The disk holds its syncs: a single node commits only what its own log synced, so this
    // write is appended but never acknowledged.
    disk.pause_syncs(true);
    let pending = tokio::spawn({
        let node = node.clone();
        async move { node.propose(vec![pod("c")]).await }
    });
    crate::control_plane::eventually("the write appended, unsynced", || {
        let (readable, durable) = disk.last_index();
        (readable > durable).then_some(())
    })
    .await;
    assert!(!pending.is_finished(), "not acknowledged before it is durable");
    disk.crash();
    pending.abort();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), node.shutdown()).await;
    drop(node);

    // Restarted on what the disk kept.
    let node = ControlPlane::builder(1, dir.path()).crash_disk(disk.clone()).start().await.expect("restarts");
    crate::control_plane::eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
    let key = |name: &str| ObjectKey::new(Kind::Pod, "default", name);
    let (a, b, applied) = node
        .read(Consistency::Linearizable, |s| {
            (s.get(&key("a")).is_some(), s.get(&key("b")).is_some(), s.applied_index())
        })
        .await
        .expect("reads");
    assert!(a && b, "the acknowledged writes survived");
    assert!(applied >= served, "no older state than it served: {applied} >= {served}");
    node.shutdown().await.expect("shuts down");
}
