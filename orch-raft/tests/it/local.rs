//! The in-process router's faults: one-way cuts, duplication, and the messages of a node that is
//! gone.

use std::time::Duration;

use openraft::alias::VoteOf;
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use orch_raft::local::{Faults, LocalRouter};
use orch_raft::{Member, TypeConfig};

use crate::cluster::start;

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
