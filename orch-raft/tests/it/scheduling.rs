//! The scheduler loop on a real control plane: pods are bound through the log within the
//! nodes' room, driven by the committed changes (the resync interval is far away), a pod no
//! node fits says why and is bound when a node comes, and a backlog larger than one round is
//! worked off round after round (each round's binds wake the next; a round that writes
//! nothing relies on `LeaderLoop::more`, tested in `leader.rs`).

use std::sync::Arc;
use std::time::Duration;

use orch_core::{Command, Kind, Object, State};
use orch_raft::ControlPlane;
use orch_raft::control_plane::Consistency;
use orch_raft::leader::{Loops, NoEvents};

/// Polls the leader's state until `check` gives a value (30 s at most).
async fn until<T>(cp: &ControlPlane, what: &str, check: impl Fn(&State) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = cp.state(Consistency::Stale).await.expect("reads");
        if let Some(value) = check(&state) {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A single-node control plane in `dir`, leading, running the loops `factories` make (no
/// resync within a test: every round is driven by a change).
async fn started(dir: &std::path::Path, factories: Vec<orch_raft::leader::LoopFactory>) -> (ControlPlane, Loops) {
    let cp = ControlPlane::builder(1, dir).single_node().start().await.expect("starts");
    let loops = Loops::spawn(cp.clone(), factories, Duration::from_secs(3600), Arc::new(NoEvents));
    (cp, loops)
}

fn scheduler() -> orch_raft::leader::LoopFactory {
    orch_raft::controllers::scheduler(orch_core::scheduling::Settings::default())
}

fn replica_sets() -> orch_raft::leader::LoopFactory {
    orch_raft::controllers::replica_sets(orch_core::replicaset::Settings::default())
}

fn node(name: &str, cpu: &str, pods: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus: {{capacity: {{cpu: '{cpu}', pods: '{pods}'}}, \
         conditions: [{{type: Ready, status: 'True'}}]}}\n---\n"
    )
}

fn pod(name: &str, cpu: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: x, \
         resources: {{requests: {{cpu: '{cpu}'}}}}}}]}}\n---\n"
    )
}

async fn create(cp: &ControlPlane, yaml: &str) {
    let commands: Vec<Command> =
        orch_core::parse_manifests(yaml).expect("valid").into_iter().map(Command::Create).collect();
    for chunk in commands.chunks(1000) {
        let outcomes = cp.propose(chunk.to_vec()).await.expect("proposed");
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    }
}

/// Bound pods per node, and the unbound pods with their PodScheduled message.
type Placement = (std::collections::BTreeMap<String, usize>, Vec<(String, Option<String>)>);

fn placement(state: &State) -> Placement {
    let mut bound = std::collections::BTreeMap::new();
    let mut waiting = Vec::new();
    for obj in state.list(Kind::Pod, None) {
        let Object::Pod(p) = obj else { continue };
        match &p.spec.node_name {
            Some(n) => *bound.entry(n.to_string()).or_default() += 1,
            None => {
                let message = p.status.conditions.iter().find(|c| c.type_ == "PodScheduled").and_then(|c| c.message());
                waiting.push((p.metadata.name.to_string(), message.map(str::to_owned)));
            }
        }
    }
    (bound, waiting)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_binds_pods_within_room_and_an_unschedulable_pod_waits_for_a_node() {
    let dir = tempfile::tempdir().expect("dir");
    let (cp, loops) = started(dir.path(), vec![scheduler()]).await;
    let mut yaml = node("a", "1", 10) + &node("b", "1", 10);
    for i in 0..5 {
        yaml.push_str(&pod(&format!("p{i}"), "400m"));
    }
    create(&cp, &yaml).await;
    let (bound, waiting) = until(&cp, "four bound, one refused with its reason", |s| {
        let (bound, waiting) = placement(s);
        (bound.values().sum::<usize>() == 4 && waiting.iter().all(|w| w.1.is_some())).then_some((bound, waiting))
    })
    .await;
    assert_eq!(bound.values().copied().collect::<Vec<_>>(), vec![2, 2], "within each node's cpu: {bound:?}");
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].1.as_deref(), Some("0/2 nodes are available: 2 Insufficient cpu."));
    // A node comes: the waiting pod is bound to it.
    create(&cp, &node("c", "1", 10)).await;
    let bound = until(&cp, "the fifth pod bound", |s| {
        let (bound, waiting) = placement(s);
        waiting.is_empty().then_some(bound)
    })
    .await;
    assert_eq!(bound.get("c"), Some(&1), "{bound:?}");
    loops.stop().await;
    cp.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_a_round_is_worked_off_without_waiting_for_a_change() {
    let dir = tempfile::tempdir().expect("dir");
    let cp = ControlPlane::builder(1, dir.path()).single_node().start().await.expect("starts");
    let count = orch_core::scheduling::SCHEDULE_ROUND_MAX + 100;
    let mut yaml = node("a", "64", count) + &node("b", "64", count);
    for i in 0..count {
        yaml.push_str(&pod(&format!("p{i:05}"), "0"));
    }
    // The pods exist before the loop starts: its first round finds them all.
    create(&cp, &yaml).await;
    let loops = Loops::spawn(cp.clone(), vec![scheduler()], Duration::from_secs(3600), Arc::new(NoEvents));
    let bound = until(&cp, "every pod bound", |s| {
        let (bound, waiting) = placement(s);
        waiting.is_empty().then_some(bound)
    })
    .await;
    assert_eq!(bound.values().sum::<usize>(), count);
    loops.stop().await;
    cp.shutdown().await.expect("stops");
}

/// The ReplicaSet controller and the scheduler together: a set's pods are made, bound and
/// counted; scaled down, the surplus is deleted (bound pods terminate gracefully and no
/// longer count) and the status follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_set_s_pods_are_made_bound_and_scaled() {
    let dir = tempfile::tempdir().expect("dir");
    let (cp, loops) = started(dir.path(), vec![scheduler(), replica_sets()]).await;
    let set = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web}\nspec:\n  replicas: 3\n  \
               selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    \
               spec: {containers: [{name: c, image: nginx, resources: {requests: {cpu: 100m}}}]}\n";
    create(&cp, &(node("a", "1", 10) + set)).await;
    let key = orch_core::ObjectKey::new(Kind::ReplicaSet, "default", "web");
    let replicas = |s: &State| match s.get(&key) {
        Some(Object::ReplicaSet(rs)) => Some(rs.status.replicas),
        _ => None,
    };
    until(&cp, "three pods bound and counted", |s| {
        let (bound, waiting) = placement(s);
        (waiting.is_empty() && bound.get("a") == Some(&3) && replicas(s) == Some(3)).then_some(())
    })
    .await;
    let outcomes = cp.propose(vec![Command::Scale { key: key.clone(), replicas: 1 }]).await.expect("scales");
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    let terminating = until(&cp, "two pods terminating, one counted", |s| {
        let terminating = s.list(Kind::Pod, None).filter(|o| o.meta().deletion_timestamp.is_some()).count();
        (replicas(s) == Some(1) && terminating == 2).then_some(terminating)
    })
    .await;
    assert_eq!(terminating, 2);
    loops.stop().await;
    cp.shutdown().await.expect("stops");
}

/// The ReplicaSet controller and the garbage collector together: deleting a set deletes its
/// pods (a background cascade), and deleting a namespace empties it, then it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_set_or_its_namespace_deletes_what_it_holds() {
    let dir = tempfile::tempdir().expect("dir");
    let collector = orch_raft::controllers::garbage_collector(orch_core::gc::Settings::default());
    let (cp, loops) = started(dir.path(), vec![replica_sets(), collector]).await;
    let set = |ns: &str| {
        format!(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: 2\n  \
             selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    \
             spec: {{containers: [{{name: c, image: nginx}}]}}\n---\n"
        )
    };
    create(
        &cp,
        &("apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n---\n".to_owned() + &set("default") + &set("team")),
    )
    .await;
    let pods_in = |s: &State, ns: &str| s.list(Kind::Pod, Some(ns)).count();
    until(&cp, "two pods in each namespace", |s| (pods_in(s, "default") == 2 && pods_in(s, "team") == 2).then_some(()))
        .await;
    let delete = |kind: Kind, ns: &str, name: &str| Command::Delete {
        key: orch_core::ObjectKey::new(kind, ns, name),
        grace_period_seconds: None,
        preconditions: orch_core::Preconditions::default(),
        propagation_policy: None,
    };
    let outcomes = cp
        .propose(vec![delete(Kind::ReplicaSet, "default", "web"), delete(Kind::Namespace, "", "team")])
        .await
        .expect("proposed");
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    until(&cp, "the set's pods and the namespace gone", |s| {
        let gone = s.get(&orch_core::ObjectKey::new(Kind::Namespace, "", "team")).is_none();
        (pods_in(s, "default") == 0 && gone).then_some(())
    })
    .await;
    loops.stop().await;
    cp.shutdown().await.expect("stops");
}
