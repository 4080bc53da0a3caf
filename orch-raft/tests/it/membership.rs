//! Membership changes across a leader change in the middle of one, under paused time over the
//! in-process transport (deterministic: orch-sim's seed 47, reproduced on purpose).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use orch_raft::Member;
use orch_raft::control_plane::{ControlPlane, Error};
use orch_raft::crash::CrashDisk;
use orch_raft::local::LocalRouter;

use crate::control_plane::eventually;

fn joint_halves(node: &ControlPlane) -> Vec<BTreeSet<u64>> {
    node.raft().metrics().borrow_watched().membership_config.membership().get_joint_config().clone()
}

fn leads(node: &ControlPlane) -> bool {
    node.raft().metrics().borrow_watched().current_leader == Some(node.id())
}

/// The membership change asked of the leader that the change under way removes.
#[derive(Clone, Copy, Debug)]
enum Asked {
    /// Add a node (one that never started: the answer must come before any catch-up).
    Add,
    /// Remove a voter that stays.
    Remove,
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_the_change_under_way_removes_hands_over_instead_of_removing_a_member() {
    leader_left_out_by_the_change_under_way(Asked::Remove).await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_the_change_under_way_removes_hands_over_instead_of_adding_a_member() {
    leader_left_out_by_the_change_under_way(Asked::Add).await;
}

/// A leader L begins removing voter X while cut off from the third voter Y: the joint
/// configuration `[{L,X,Y}, {L,Y}]` reaches X only, so it cannot commit. Leadership moves to X
/// (a transfer: X's log is the longest, and both L and Y vote for it), which now leads a cluster
/// whose change under way removes it. Asked for a membership change, X must not make it
/// (openraft 0.10.0-alpha.37 panicked its core: `Only leader is allowed to call
/// update_effective_membership()`): it hands leadership to a voter that stays and answers
/// NotLeader naming it. That one leads, finishes X's removal, and every node stays healthy.
async fn leader_left_out_by_the_change_under_way(asked: Asked) {
    let router = LocalRouter::default();
    let members: BTreeMap<u64, Member> =
        (1..=3).map(|id| (id, Member::new(format!("local-{id}"), format!("api-{id}")))).collect();
    let mut nodes = BTreeMap::new();
    for id in 1..=3u64 {
        let builder = ControlPlane::builder(id, "/nonexistent/orch-raft-test")
            .local(router.clone())
            .crash_disk(CrashDisk::new())
            .seed(id);
        let builder = if id == 1 { builder.initial_members(members.clone()) } else { builder.join() };
        nodes.insert(id, builder.start().await.expect("starts"));
    }
    let l = eventually("a leader", || nodes.values().find(|n| leads(n)).map(ControlPlane::id)).await;
    let others: Vec<u64> = nodes.keys().copied().filter(|id| *id != l).collect();
    let (x, y) = (others[0], others[1]);
    // Every voter knows the leader (so that X's catch-up below is a matter of one append).
    eventually("every node follows the leader", || {
        nodes.values().all(|n| n.raft().metrics().borrow_watched().current_leader == Some(l)).then_some(())
    })
    .await;

    router.cut(l, y);
    router.cut(y, l);
    let removal = tokio::spawn({
        let leader = nodes[&l].clone();
        async move { leader.remove_member(x).await }
    });
    let newer: BTreeSet<u64> = [l, y].into();
    eventually("X holds the joint configuration", || (joint_halves(&nodes[&x]).last() == Some(&newer)).then_some(()))
        .await;
    assert_eq!(joint_halves(&nodes[&y]).len(), 1, "Y, cut off, never saw the joint configuration");
    nodes[&l].transfer_leadership(x).await.expect("leadership moves to X");
    let outcome = removal.await.expect("the removal task ends");
    assert!(matches!(outcome, Err(Error::NotLeader { .. })), "L lost leadership mid-change: {outcome:?}");
    router.heal();
    // X leads, and the configuration it leads under removes it.
    eventually("X leads the joint configuration", || (leads(&nodes[&x])).then_some(())).await;
    assert_eq!(joint_halves(&nodes[&x]).last(), Some(&newer), "the change under way removes X");

    let answer = match asked {
        Asked::Remove => nodes[&x].remove_member(y).await,
        Asked::Add => nodes[&x].add_member(4, Member::new("local-4", "api-4")).await,
    };
    match answer {
        Err(Error::NotLeader { leader: Some(to), address, .. }) => {
            assert!(newer.contains(&to), "it names a voter that stays, not {to}");
            assert_eq!(address.as_deref(), Some(format!("local-{to}").as_str()), "and its address");
            eventually("the named voter leads", || leads(&nodes[&to]).then_some(())).await;
        }
        other => panic!("{asked:?}: expected NotLeader naming a staying voter, got {other:?}"),
    }
    for node in nodes.values() {
        node.health().expect("no node's raft stopped");
    }

    // The staying voter that leads finishes X's removal (a fresh leader answers NotLeader
    // without a leader until its first entry commits: try again, as a client does).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let leader = eventually("a leader that stays", || newer.iter().copied().find(|id| leads(&nodes[id]))).await;
        match nodes[&leader].remove_member(x).await {
            Ok(()) => break,
            Err(Error::NotLeader { .. }) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the staying leader failed to finish the removal: {e}"),
        }
    }
    for id in &newer {
        let node = &nodes[id];
        eventually("the removal applied", || {
            (node.members().voters.keys().copied().collect::<BTreeSet<u64>>() == newer).then_some(())
        })
        .await;
        node.health().expect("healthy after the change");
    }
    for node in nodes.values() {
        node.shutdown().await.expect("stops");
    }
}
