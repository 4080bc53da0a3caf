//! The leader-only loop framework on three in-process control planes: loops run on the leader
//! only, start with a full reconcile, and stop when it hands leadership over.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use orch_core::{Command, Kind, ObjectKey};
use orch_daemon::loops::{LeaderLoop, LoopCounters, LoopFactory, Loops, Round};
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

    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
        let state = round.state;
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
        running.push(Loops::spawn(
            cp.clone(),
            vec![factory],
            Duration::from_secs(1),
            Arc::new(LoopCounters::default()),
        ));
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

/// Panics in its first life; afterwards creates namespace `after-restart`.
struct Flaky {
    life: usize,
}

impl LeaderLoop for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }

    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
        let state = round.state;
        assert!(self.life > 1, "a bug in the loop's first life");
        if state.get(&ObjectKey::new(Kind::Namespace, "", "after-restart")).is_some() {
            return Vec::new();
        }
        let ns = orch_core::parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: after-restart}\n")
            .expect("valid");
        ns.into_iter().map(Command::Create).collect()
    }
}

/// Proposes a namespace that exists: the state machine refuses it every round.
struct Refused;

impl LeaderLoop for Refused {
    fn name(&self) -> &'static str {
        "refused"
    }

    fn reconcile(&mut self, _round: Round<'_>) -> Vec<Command> {
        let ns =
            orch_core::parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n").expect("valid");
        ns.into_iter().map(Command::Create).collect()
    }
}

/// A loop that panics is logged and started again (and counted); refused commands are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_loop_restarts_and_refusals_are_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cp = ControlPlane::builder(1, dir.path()).single_node().start().await.expect("starts");
    let lives = Arc::new(AtomicUsize::new(0));
    let flaky: LoopFactory = {
        let lives = Arc::clone(&lives);
        Arc::new(move || Box::new(Flaky { life: lives.fetch_add(1, Ordering::SeqCst) + 1 }) as Box<dyn LeaderLoop>)
    };
    let refused: LoopFactory = Arc::new(|| Box::new(Refused) as Box<dyn LeaderLoop>);
    let counters = LoopCounters::default();
    let loops = Loops::spawn(cp.clone(), vec![flaky, refused], Duration::from_secs(1), Arc::new(counters.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !has(&cp, "after-restart").await {
        assert!(tokio::time::Instant::now() < deadline, "the restarted loop never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lives.load(Ordering::SeqCst), 2, "made again once");
    assert_eq!(counters.counts("flaky"), (1, 0, 0));
    until("a refused command counted", || counters.counts("refused").1 >= 1).await;
    assert_eq!(counters.counts("refused").0, 0, "refusals do not restart a loop");
    loops.stop().await;
    cp.shutdown().await.expect("stops");
}

/// Counts its reconciles.
struct Counting {
    rounds: Arc<AtomicUsize>,
}

impl LeaderLoop for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }

    fn reconcile(&mut self, _round: Round<'_>) -> Vec<Command> {
        self.rounds.fetch_add(1, Ordering::SeqCst);
        Vec::new()
    }
}

/// A single node with watch progress every 10 ms running a [`Counting`] loop that resyncs
/// every `resync`.
async fn counting_node(dir: &std::path::Path, resync: Duration) -> (ControlPlane, Arc<AtomicUsize>, Loops) {
    let cp = ControlPlane::builder(1, dir)
        .single_node()
        .progress_interval(Duration::from_millis(10))
        .start()
        .await
        .expect("starts");
    let rounds = Arc::new(AtomicUsize::new(0));
    let factory: LoopFactory = {
        let rounds = Arc::clone(&rounds);
        Arc::new(move || Box::new(Counting { rounds: Arc::clone(&rounds) }) as Box<dyn LeaderLoop>)
    };
    let loops = Loops::spawn(cp.clone(), vec![factory], resync, Arc::new(LoopCounters::default()));
    (cp, rounds, loops)
}

/// Committed changes wake a loop; the watch's progress items (every 10 ms here) do not: one
/// reconcile at start, then exactly one per write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_does_not_wake_a_loop() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cp, rounds, loops) = counting_node(dir.path(), Duration::from_secs(600)).await;
    until("the first reconcile", || rounds.load(Ordering::SeqCst) >= 1).await;
    for i in 1..=10 {
        let ns = orch_core::parse_manifests(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: n{i}}}\n"))
            .expect("valid");
        cp.propose(ns.into_iter().map(Command::Create).collect()).await.expect("writes");
        until("the write's reconcile", || rounds.load(Ordering::SeqCst) > i).await;
        assert_eq!(rounds.load(Ordering::SeqCst), i + 1, "one reconcile per write, none for progress");
    }
    loops.stop().await;
    cp.shutdown().await.expect("stops");
}

/// An idle loop still reconciles every resync interval, though progress items (every 10 ms
/// here) keep arriving and do not wake it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_loop_resyncs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cp, rounds, loops) = counting_node(dir.path(), Duration::from_millis(200)).await;
    until("three resyncs with no write", || rounds.load(Ordering::SeqCst) >= 4).await;
    loops.stop().await;
    cp.shutdown().await.expect("stops");
}
