//! The leader-only loop framework on three in-process control planes: loops run on the leader
//! only, start with a full reconcile, and stop when it hands leadership over.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use orch_core::{Command, Kind, ObjectKey, State};
use orch_daemon::loops::{LeaderLoop, LoopFactory, Loops};
use orch_raft::ControlPlane;
use orch_raft::control_plane::Consistency;

/// Creates namespace `led-by-<node>` when it is missing; counts live instances.
struct Marker {
    node: u64,
    live: Arc<AtomicUsize>,
}

impl Drop for Marker {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl LeaderLoop for Marker {
    fn name(&self) -> &'static str {
        "marker"
    }

    fn reconcile(&mut self, state: &State, _now_ms: i64) -> Vec<Command> {
        let name = format!("led-by-{}", self.node);
        if state.get(&ObjectKey::new(Kind::Namespace, "", &name)).is_some() {
            return Vec::new();
        }
        let ns = orch_core::parse_manifests(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"))
            .expect("valid");
        ns.into_iter().map(Command::Create).collect()
    }
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn has(cp: &ControlPlane, name: &str) -> bool {
    let key = ObjectKey::new(Kind::Namespace, "", name);
    cp.read(Consistency::Stale, |s| s.get(&key).is_some()).await.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_follow_leadership() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let listeners: Vec<_> = (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("port")).collect();
    let members: std::collections::BTreeMap<u64, String> =
        (1..=3).zip(&listeners).map(|(id, l)| (id, l.local_addr().expect("addr").to_string())).collect();
    let mut nodes = Vec::new();
    let mut lives = Vec::new();
    let mut running = Vec::new();
    for ((id, dir), listener) in (1..=3u64).zip(&dirs).zip(listeners) {
        let cp = ControlPlane::builder(id, dir.path())
            .listener(listener)
            .initial_members(members.clone())
            .start()
            .await
            .expect("starts");
        let live = Arc::new(AtomicUsize::new(0));
        let factory: LoopFactory = {
            let live = Arc::clone(&live);
            Arc::new(move || {
                live.fetch_add(1, Ordering::SeqCst);
                Box::new(Marker { node: id, live: Arc::clone(&live) }) as Box<dyn LeaderLoop>
            })
        };
        running.push(Loops::spawn(cp.clone(), vec![factory], Duration::from_secs(1)));
        nodes.push(cp);
        lives.push(live);
    }
    let leader = loop {
        if let Some(l) = nodes.iter().find(|n| n.metrics().leader == Some(n.id())) {
            break l.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first = leader.id();
    // The leader's loop reconciled from the full state and its proposal committed.
    let mut found = false;
    for _ in 0..3000 {
        if has(&leader, &format!("led-by-{first}")).await {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(found, "the leader's loop ran");
    for (i, live) in lives.iter().enumerate() {
        let expected = usize::from(i as u64 + 1 == first);
        assert_eq!(live.load(Ordering::SeqCst), expected, "node {}: loops live", i + 1);
    }

    // Hand leadership over: the old leader's loop stops, the new one's starts. (An election
    // may move leadership meanwhile; any new leader will do.)
    let mut to = None;
    for _ in 0..5 {
        let current = nodes.iter().find(|n| n.metrics().leader == Some(n.id())).cloned();
        let Some(current) = current else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        if current.id() != first {
            to = Some(current.id());
            break;
        }
        let target = if first == 3 { 2 } else { 3 };
        if current.transfer_leadership(target).await.is_ok() {
            to = Some(target);
            break;
        }
    }
    let to = to.expect("leadership moved");
    let new_leader = nodes[usize::try_from(to - 1).expect("index")].clone();
    let mut found = false;
    for _ in 0..3000 {
        if has(&new_leader, &format!("led-by-{to}")).await {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(found, "the new leader's loop ran");
    let old = Arc::clone(&lives[usize::try_from(first - 1).expect("index")]);
    until("the old leader's loop to stop", || old.load(Ordering::SeqCst) == 0).await;
    assert_eq!(lives[usize::try_from(to - 1).expect("index")].load(Ordering::SeqCst), 1);

    for loops in running {
        loops.stop().await;
    }
    for live in &lives {
        assert_eq!(live.load(Ordering::SeqCst), 0, "stopping the framework stops every loop");
    }
    for n in &nodes {
        n.shutdown().await.expect("stops");
    }
}
