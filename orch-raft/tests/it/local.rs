//! The in-process router's faults: one-way cuts, duplication, and the messages of a node that is
//! gone.

use std::time::Duration;

use openraft::alias::VoteOf;
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use openraft::testing::blank_ent;
use orch_raft::crash::CrashDisk;
use orch_raft::local::{Faults, LocalRouter};
use orch_raft::{Member, TypeConfig};

use crate::cluster::{start, start_node};

/// A vote request for term 1 from node 9 (a node that is not a member; node 1 answers it).
async fn ask(from: &mut LocalRouter) -> bool {
    let mut connection = from.new_client(1, &Member::from("local-1")).await;
    let request = VoteRequest::<TypeConfig>::new(VoteOf::<TypeConfig>::new(1, 9), None);
    connection.vote(request, RPCOption::new(Duration::from_secs(1))).await.is_ok()
}

#[tokio::test(start_paused = true)]
async fn cuts_are_one_way_and_a_gone_sender_is_not_delivered() {
    let router = LocalRouter::default();
    let nodes = start(&router, [1]).await;
    let mut nine = router.for_node(9);
    assert!(!ask(&mut nine).await, "a sender not registered yet is not delivered");
    router.register_handle(&nine, nodes[&1].0.clone());
    assert!(ask(&mut nine).await, "registered, it reaches node 1");

    router.cut(9, 1);
    let before = router.counts();
    assert!(!ask(&mut nine).await, "its message over the cut link is lost");
    assert_eq!(router.counts().delivered, before.delivered);
    router.heal();
    router.cut(1, 9);
    let before = router.counts();
    assert!(!ask(&mut nine).await, "the reply over the cut way back is lost");
    assert_eq!(router.counts().delivered, before.delivered + 1, "but the message itself was delivered");
    router.heal();
    assert!(ask(&mut nine).await);

    // Mending restores one way of a link, and only that.
    router.cut(9, 1);
    router.cut(1, 9);
    router.mend(9, 1);
    let before = router.counts();
    assert!(!ask(&mut nine).await, "the way back is still cut");
    assert_eq!(router.counts().delivered, before.delivered + 1, "the way there is mended");
    router.mend(1, 9);
    assert!(router.cuts().is_empty());
    assert!(ask(&mut nine).await);

    // Node 9 crashes: unregistered, and a new start of it registers afresh. What the old handle
    // sends is lost, what the new one sends is delivered.
    router.unregister(9);
    let mut restarted = router.for_node(9);
    router.register_handle(&restarted, nodes[&1].0.clone());
    assert!(!ask(&mut nine).await, "the crashed start's messages are lost");
    assert!(ask(&mut restarted).await);
    assert!(router.unregister_if(9, 1).is_none(), "a stale registration number unregisters nothing");
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_is_delivered_again_later() {
    let faults = Faults { seed: 1, loss_per_mille: 0, latency_ms: (1, 5), duplicate_per_mille: 1000 };
    let router = LocalRouter::with_faults(faults);
    let nodes = start(&router, [1]).await;
    let mut nine = router.for_node(9);
    router.register_handle(&nine, nodes[&1].0.clone());
    assert!(ask(&mut nine).await);
    assert_eq!(router.counts().duplicated, 0, "the duplicate comes later");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(router.counts().duplicated, 1);
    assert_eq!(router.counts().delivered, 2, "the message and its duplicate");
}

/// Node 1's registration changes while it handles a message (here: an append it answers only
/// once the entry is synced, and the sync waits), as when the node crashed and started again:
/// the reply the earlier registration's handler returns afterwards was never said by a live
/// process, and is dropped. (The test registers the same Raft again: the router goes by the
/// registration, whatever runs behind it.)
#[tokio::test(start_paused = true)]
async fn the_reply_of_a_node_that_restarted_mid_call_is_dropped() {
    let router = LocalRouter::default();
    let disk = CrashDisk::new();
    let (one, _) = start_node(&router, 1, disk.store()).await;
    disk.pause_syncs(true);
    let nine = router.for_node(9);
    router.register_handle(&nine, one.clone());
    let append = |mut from: LocalRouter| async move {
        let mut connection = from.new_client(1, &Member::from("local-1")).await;
        let request = AppendEntriesRequest::<TypeConfig> {
            vote: VoteOf::<TypeConfig>::new_committed(1, 9),
            prev_log_id: None,
            entries: vec![blank_ent::<TypeConfig>(1, 9, 0)],
            leader_commit: None,
        };
        connection.append_entries(request, RPCOption::new(Duration::from_secs(5))).await.is_ok()
    };

    // Node 1 appended and waits for the sync to answer; meanwhile it restarts (a new
    // registration under its id).
    let call = tokio::spawn(append(nine.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !disk.sync_due() {
        assert!(tokio::time::Instant::now() < deadline, "node 1 never appended");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let before = router.counts();
    router.unregister(1).expect("registered");
    router.register(1, one.clone());
    disk.pause_syncs(false);
    assert!(!call.await.expect("the call ends"), "the reply of the earlier start is dropped");
    assert_eq!(router.counts().lost, before.lost + 1);

    // The same call to the start registered now is answered (the entry is held: at once).
    assert!(append(nine).await, "a reply of the live start arrives");
    one.shutdown().await.expect("stops");
}
