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

/// Waits until one node leads, its loop alone is live, and that loop's proposal committed;
/// returns the leader's id.
async fn settled(nodes: &[ControlPlane], lives: &[Arc<AtomicUsize>]) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no leader settled with its loop alone running");
        if let Some(leader) = nodes.iter().find(|n| n.metrics().leader == Some(n.id())) {
            let id = leader.id();
            let alone =
                lives.iter().enumerate().all(|(i, l)| l.load(Ordering::SeqCst) == usize::from(i as u64 + 1 == id));
            if alone && has(leader, &format!("led-by-{id}")).await {
                return id;
            }
        }
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
    // Exactly the leader runs the loop, and its full reconcile at start committed.
    let first = settled(&nodes, &lives).await;

    // Hand leadership over: the old leader's loop stops, the new one's starts. (An election
    // may move leadership meanwhile; any new leader will do.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "leadership did not move");
        match nodes.iter().find(|n| n.metrics().leader == Some(n.id())) {
            Some(current) if current.id() != first => break,
            Some(current) => {
                let target = if first == 3 { 2 } else { 3 };
                let _ = current.transfer_leadership(target).await;
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let second = settled(&nodes, &lives).await;
    assert_ne!(second, first);
    let old = Arc::clone(&lives[usize::try_from(first - 1).expect("index")]);
    until("the old leader's loop to stop", || old.load(Ordering::SeqCst) == 0).await;

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
