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

/// The store as the simulator runs it: writes wait for a separate syncer (a group commit), and
/// the state machine keeps its snapshots on the same disk.
struct JournalBuilder;

/// The syncer of one store of the suite: it stops with the store.
struct Syncer(tokio::task::JoinHandle<()>);

impl Drop for Syncer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl StoreBuilder<TypeConfig, CrashLogStore, StateMachineStore, Syncer> for JournalBuilder {
    async fn build(&self) -> Result<(Syncer, CrashLogStore, StateMachineStore), StorageError<TypeConfig>> {
        let disk = CrashDisk::new();
        disk.pause_syncs(true);
        let syncer_disk = disk.clone();
        let syncer = tokio::spawn(async move {
            loop {
                syncer_disk.written().await;
                let ticket = syncer_disk.begin_sync();
                tokio::task::yield_now().await;
                syncer_disk.complete_sync(ticket);
            }
        });
        let sm = StateMachineStore::on_crash_disk(&disk, orch_raft::feed::HistoryLimits::default())
            .expect("an empty disk holds no snapshot");
        Ok((Syncer(syncer), disk.store(), sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crash_store_passes_the_openraft_storage_suite_with_a_separate_syncer() {
    Suite::test_all(JournalBuilder).await.expect("the crash store with group commits passes openraft's suite");
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

/// A sync that takes time makes durable only what was written before it began; a crash may
/// keep a prefix of the unsynced writes (what the page cache wrote back), the last of them torn;
/// a disk that fails its writes fails them; the snapshot slot survives a crash, and a slot
/// taken before one fails.
#[tokio::test]
async fn the_disk_model_syncs_what_came_before_a_sync_and_crashes_keep_a_prefix() {
    let disk = CrashDisk::new();
    let mut store = disk.store();
    disk.pause_syncs(true);
    let (tx, mut first) = TypeConfig::oneshot();
    append(&mut store, 1, IOFlushed::Signal(tx)).await;
    assert!(disk.sync_due());
    let ticket = disk.begin_sync();
    let (tx, mut second) = TypeConfig::oneshot();
    append(&mut store, 2, IOFlushed::Signal(tx)).await;
    disk.complete_sync(ticket);
    assert_eq!(disk.last_index(), (2, 1), "the sync covered the write before it began, not the one after");
    assert!(first.try_recv().is_ok(), "its callback completed");
    assert!(second.try_recv().is_err(), "the later write still waits");
    assert_eq!(disk.durable_below(), 2);

    // Two more unsynced appends (3, and 4-6 in one write): the crash keeps all three unsynced
    // writes, the last torn after one entry.
    let (tx, _third) = TypeConfig::oneshot();
    append(&mut store, 3, IOFlushed::Signal(tx)).await;
    let (tx, _fourth) = TypeConfig::oneshot();
    let batch = [4, 5, 6].map(|i| blank_ent::<TypeConfig>(1, 0, i));
    store.append(batch, IOFlushed::Signal(tx)).await.expect("append");
    let stale = disk.begin_sync();
    assert_eq!(disk.crash_keeping(3, Some(1)), 3, "three writes were unsynced");
    assert_eq!(disk.last_index(), (4, 4), "entries 2 and 3 kept, and entry 4 of the torn write");
    let (syncs, _) = disk.counts();
    disk.complete_sync(stale);
    assert_eq!(disk.counts().0, syncs, "a sync begun before the crash completes nothing after it");
    assert!(store.save_committed(None).await.is_err(), "the crashed node's store fails");

    let mut after = disk.store();
    disk.fail_writes(true);
    let (tx, _) = TypeConfig::oneshot();
    let failed = after.append([blank_ent::<TypeConfig>(1, 0, 5)], IOFlushed::Signal(tx)).await;
    assert!(failed.is_err(), "a failing disk fails the write");
    assert!(after.save_vote(&openraft::alias::VoteOf::<TypeConfig>::new(2, 1)).await.is_err());
    disk.fail_writes(false);
    assert_eq!(disk.last_index(), (4, 4), "nothing of the failed writes landed");

    let slot = disk.snapshot_slot();
    let meta =
        openraft::storage::SnapshotMeta { last_log_id: Some(log_id::<TypeConfig>(1, 0, 4)), ..Default::default() };
    slot.write(&meta, orch_raft::SnapshotBytes::from_vec(b"state".to_vec())).expect("writes");
    disk.crash();
    let (kept, bytes) = disk.snapshot_slot().read().expect("the snapshot survived the crash");
    assert_eq!(kept.last_log_id, meta.last_log_id);
    assert_eq!(bytes.with_all(<[u8]>::to_vec).expect("reads"), b"state");
    assert!(slot.write(&meta, orch_raft::SnapshotBytes::from_vec(Vec::new())).is_err(), "a crashed node's slot fails");
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

    use crate::control_plane::pod;

    let dir = tempfile::tempdir().expect("dir");
    let disk = CrashDisk::new();
    let node =
        ControlPlane::builder(1, dir.path()).single_node().crash_disk(disk.clone()).start().await.expect("starts");
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
    let node =
        ControlPlane::builder(1, dir.path()).single_node().crash_disk(disk.clone()).start().await.expect("restarts");
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

/// Three control planes, each on a crash disk. A follower, then the leader, then a follower and
/// the leader again lose power while they hold appended, unsynced entries; the two others carry
/// on. Each crashed node restarts on what its disk kept, serves no older state than it served
/// before, and catches up (from the log or a snapshot). No acknowledged write is lost, and the
/// three states end equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_control_planes_on_crash_disks_lose_no_acknowledged_write_through_power_cuts() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use orch_core::{Kind, ObjectKey};
    use orch_raft::control_plane::{Consistency, ControlPlane, Error, SnapshotSettings};

    use crate::control_plane::eventually;

    use crate::control_plane::pod;

    // Snapshots often, so that restarts and catch-ups meet compacted logs.
    let snapshots = SnapshotSettings { every_entries: 25, keep_entries: 5, chunk_bytes: 4096 };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("dir")).collect();
    let disks: Vec<CrashDisk> = (0..3).map(|_| CrashDisk::new()).collect();
    let listeners: Vec<_> =
        (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("binds a free port")).collect();
    let addrs: Vec<std::net::SocketAddr> = listeners.iter().map(|l| l.local_addr().expect("address")).collect();
    let members: BTreeMap<u64, Member> =
        (1..=3).zip(&addrs).map(|(id, a)| (id, Member::new(a.to_string(), format!("api-{id}")))).collect();
    let builder = |id: u64| {
        let i = usize::try_from(id - 1).expect("index");
        ControlPlane::builder(id, dirs[i].path()).crash_disk(disks[i].clone()).snapshots(snapshots)
    };
    let mut nodes = BTreeMap::new();
    for (id, listener) in (1..=3u64).zip(listeners) {
        let b = builder(id).listener(listener);
        let b = if id == 1 { b.initial_members(members.clone()) } else { b.join() };
        nodes.insert(id, b.start().await.expect("starts"));
    }

    // One writer, a pod at a time, to whichever live node accepts it; it records what was
    // acknowledged.
    let live = Arc::new(Mutex::new(nodes.values().cloned().collect::<Vec<_>>()));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (live, acked, stop) = (Arc::clone(&live), Arc::clone(&acked), Arc::clone(&stop));
        async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{i}");
                let targets = live.lock().expect("lock").clone();
                let mut answered = false;
                for node in &targets {
                    let answer = tokio::time::timeout(Duration::from_secs(2), node.propose(vec![pod(&name)])).await;
                    if let Ok(Ok(outcomes)) = answer {
                        // A retry of a write that was applied meanwhile answers AlreadyExists.
                        if outcomes[0].is_ok() {
                            acked.lock().expect("lock").push(name.clone());
                        }
                        answered = true;
                        break;
                    }
                }
                if answered {
                    i += 1;
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    });
    let acked_count = || acked.lock().expect("lock").len();
    let leader_of = |nodes: &BTreeMap<u64, ControlPlane>| {
        nodes.values().find_map(|n| (n.metrics().leader == Some(n.id())).then(|| n.id()))
    };

    for (round, victim_leads) in [false, true, false, true].into_iter().enumerate() {
        let before = acked_count();
        eventually("writes acknowledged", || (acked_count() >= before + 15).then_some(())).await;
        let leader = eventually("a leader", || leader_of(&nodes)).await;
        let victim = if victim_leads { leader } else { *nodes.keys().find(|id| **id != leader).expect("a follower") };
        let i = usize::try_from(victim - 1).expect("index");
        let node = nodes.remove(&victim).expect("live");
        let served = node.read(Consistency::Stale, orch_core::State::applied_index).await.expect("serves");

        // The victim's disk holds its syncs: it appends what the leader sends (or, leading, what
        // it proposes), the others commit it, and the victim's state machine reaches an entry
        // its disk has not synced. It must wait there: were it to apply the entry, it could serve
        // what the power cut below takes back.
        disks[i].pause_syncs(true);
        eventually("the victim's apply reaches an unsynced entry", || {
            let below = disks[i].durable_below();
            let held = disks[i].apply_waits_for().is_some_and(|w| w >= below);
            (held || node.metrics().applied_index >= below).then_some(())
        })
        .await;
        let served_before_crash = node.read(Consistency::Stale, orch_core::State::applied_index).await.expect("serves");
        let below = disks[i].durable_below();
        assert!(served_before_crash < below, "round {round}: applied {served_before_crash}, durable below {below}");
        assert!(served_before_crash >= served);
        live.lock().expect("lock").retain(|n| n.id() != victim);
        disks[i].crash();
        // Stopped before it restarts on the same directory (its own result is an error: its
        // disk failed under it).
        let stopped = tokio::time::timeout(Duration::from_secs(10), node.shutdown()).await;
        assert!(stopped.is_ok(), "round {round}: the crashed node stops");
        drop(node);

        // The two others carry on.
        let before = acked_count();
        eventually("writes acknowledged without the victim", || (acked_count() >= before + 15).then_some(())).await;

        // Restarted on what the disk kept: it serves nothing older than before the power cut.
        let node = builder(victim).listen(addrs[i]).join().start().await.expect("restarts");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let applied = loop {
            match node.read(Consistency::Stale, orch_core::State::applied_index).await {
                Ok(applied) => break applied,
                Err(Error::CatchingUp) => {}
                Err(e) => panic!("round {round}: {e}"),
            }
            assert!(tokio::time::Instant::now() < deadline, "round {round}: the restarted node never served");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(applied >= served_before_crash, "round {round}: served {applied} after {served_before_crash}");
        live.lock().expect("lock").push(node.clone());
        nodes.insert(victim, node);
    }

    stop.store(true, Ordering::Relaxed);
    writer.await.expect("the writer ends");
    let acked = acked.lock().expect("lock").clone();
    let leader = eventually("a leader", || leader_of(&nodes)).await;
    let target = nodes[&leader].read(Consistency::Linearizable, orch_core::State::applied_index).await.expect("reads");
    let key = |name: &str| ObjectKey::new(Kind::Pod, "default", name);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut digests = Vec::new();
        for node in nodes.values() {
            let state = node.state(Consistency::Stale).await.expect("serves");
            let missing: Vec<&String> = acked.iter().filter(|n| state.get(&key(n)).is_none()).collect();
            assert!(missing.is_empty() || state.applied_index() < target, "node {}: lost {missing:?}", node.id());
            digests.push((state.applied_index(), state.digest()));
        }
        // Equal at the same index, once every node reached the leader's (a later election adds
        // a blank entry: then again).
        if digests[0].0 >= target && digests.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the replicas never agreed: {digests:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for node in nodes.values() {
        node.shutdown().await.expect("shuts down");
    }
}

/// A storage failure stops Raft, and the node says so (`ControlPlane::health`, behind orchd's
/// `/healthz`), instead of looking alive while it can no longer write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_storage_failed_reports_itself_unhealthy() {
    use orch_raft::control_plane::ControlPlane;

    let dir = tempfile::tempdir().expect("dir");
    let disk = CrashDisk::new();
    let node =
        ControlPlane::builder(1, dir.path()).single_node().crash_disk(disk.clone()).start().await.expect("starts");
    crate::control_plane::eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
    assert_eq!(node.health(), Ok(()));
    // The disk fails under the running node: its next write to it is a storage error.
    disk.crash();
    let ns = orch_core::parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n").expect("valid");
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        node.propose(ns.into_iter().map(orch_core::Command::Create).collect()),
    )
    .await;
    let why = crate::control_plane::eventually("unhealthy", || node.health().err()).await;
    assert!(why.starts_with("raft stopped: "), "{why}");
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), node.shutdown()).await;
}
