//! The embeddable control plane with real RocksDB in temporary directories and the real tonic
//! transport on loopback.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use futures_util::StreamExt;
use orch_core::{ClientId, Command, Kind, ObjectKey, Request, State, WatchFilter, parse_manifests};
use orch_raft::Member;
use orch_raft::control_plane::{Consistency, ControlPlane, Error, SnapshotSettings, WatchItem};

const DEADLINE: Duration = Duration::from_secs(30);

/// Small snapshots, often, sent in many small chunks.
const SNAPSHOTS: SnapshotSettings = SnapshotSettings { every_entries: 30, keep_entries: 5, chunk_bytes: 512 };

/// A minimal pod's create.
pub(crate) fn pod(name: &str) -> Command {
    let manifest =
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: x}}]}}");
    Command::Create(parse_manifests(&manifest).expect("valid manifest").remove(0))
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::Pod, "default", name)
}

/// Polls `check` until it holds, or fails the test at the deadline.
pub(crate) async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Proposes through whichever of `nodes` leads, following NotLeader answers.
async fn propose(nodes: &[&ControlPlane], commands: Vec<Command>) -> Vec<orch_core::Outcome> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        for node in nodes {
            match node.propose(commands.clone()).await {
                Ok(outcomes) => return outcomes,
                Err(Error::NotLeader { .. } | Error::Raft(_)) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no node accepted the proposal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_leader(dir: &std::path::Path) -> ControlPlane {
    let node = ControlPlane::builder(1, dir)
        .single_node()
        .progress_interval(Duration::from_millis(100))
        .snapshots(SNAPSHOTS)
        .start()
        .await
        .expect("starts");
    eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
    node
}

async fn start_joiner(id: u64, dir: &std::path::Path, listen: Option<std::net::SocketAddr>) -> ControlPlane {
    let mut builder =
        ControlPlane::builder(id, dir).join().progress_interval(Duration::from_millis(100)).snapshots(SNAPSHOTS);
    if let Some(addr) = listen {
        builder = builder.listen(addr);
    }
    builder.start().await.expect("starts")
}

/// Nodes 2 and 3 with `timing`, added to leader `n1`'s cluster, which then commits a write.
async fn two_more(
    n1: &ControlPlane,
    dirs: &[tempfile::TempDir],
    timing: (Duration, (Duration, Duration)),
) -> (ControlPlane, ControlPlane) {
    let (n2, n3) = (timed_node(dirs, 2, timing).await, timed_node(dirs, 3, timing).await);
    n1.add_member(2, n2.address()).await.expect("adds 2");
    n1.add_member(3, n3.address()).await.expect("adds 3");
    assert!(propose(&[n1], vec![pod("before")]).await[0].is_ok());
    (n2, n3)
}

/// Node 1 leads; nodes 2 and 3 join it as voters.
async fn three_nodes(dirs: &[tempfile::TempDir]) -> [ControlPlane; 3] {
    let n1 = start_leader(dirs[0].path()).await;
    let n2 = start_joiner(2, dirs[1].path(), None).await;
    let n3 = start_joiner(3, dirs[2].path(), None).await;
    n1.add_member(2, n2.address()).await.expect("adds 2");
    n1.add_member(3, n3.address()).await.expect("adds 3");
    [n1, n2, n3]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_default_writes_reads_watches_and_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = ControlPlane::open(dir.path()).await.expect("opens");
    let outcomes = propose(&[&node], vec![pod("a"), pod("b")]).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let names: Vec<String> = node
        .read(Consistency::Linearizable, |s| s.list(Kind::Pod, None).map(|p| p.meta().name.to_string()).collect())
        .await
        .expect("linearizable read");
    assert_eq!(names, vec!["a".to_owned(), "b".to_owned()]);

    // A retried request (same client, same serial) applies once and answers the first outcome.
    let request = Request::new(ClientId(99), 1, pod("c"));
    let first = node.submit(vec![request.clone()]).await.expect("submitted");
    let again = node.submit(vec![request]).await.expect("resubmitted");
    assert_eq!(first, again);

    // A watch from revision 1 replays the history, a revision at a time (a and b were one
    // entry), then reports progress at once.
    let pods = WatchFilter { kind: Some(Kind::Pod), ..WatchFilter::all() };
    // (openraft's metrics may trail the state machine, never lead it.)
    let applied = node.metrics().applied_index;
    let mut watch = node.watch(1, pods.clone()).expect("watch");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match watch.next().await.expect("stream open").expect("no error") {
            WatchItem::Events { events, .. } => {
                seen.push(events.iter().map(|e| e.object.meta().name.to_string()).collect::<Vec<_>>());
            }
            WatchItem::Progress { .. } => panic!("progress before the backlog was delivered"),
        }
    }
    assert_eq!(seen, [vec!["a", "b"], vec!["c"]]);
    let progress = watch.next().await.expect("stream open").expect("no error");
    let WatchItem::Progress { revision: reached } = progress else {
        panic!("progress after the backlog: {progress:?}")
    };
    assert!(reached >= applied, "{reached} >= {applied}");
    // A watch from 0 starts now, and says where that is.
    let mut now = node.watch(0, pods).expect("watch");
    assert_eq!(now.next().await.expect("open").expect("no error"), WatchItem::Progress { revision: reached });

    // Restart from the data directory: everything acknowledged is there.
    node.shutdown().await.expect("shuts down");
    drop(node);
    let node = ControlPlane::open(dir.path()).await.expect("reopens");
    let count = node.read(Consistency::Linearizable, |s| s.list(Kind::Pod, None).count()).await.expect("read");
    assert_eq!(count, 3);
    node.shutdown().await.expect("shuts down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_proposals_and_follower_calls_get_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = ControlPlane::open(dir.path()).await.expect("opens");
    let too_many = vec![pod("x"); orch_raft::control_plane::PROPOSAL_REQUESTS_MAX + 1];
    let err = node.propose(too_many).await.expect_err("too many");
    assert_eq!(err.to_string(), "requests: Too many: 1025: must have at most 1024 items");
    let expired = node.watch(1, WatchFilter::all());
    assert!(expired.is_ok(), "revision 1 is within the horizon of a fresh node");
    node.shutdown().await.expect("shuts down");
    assert!(matches!(node.propose(vec![pod("y")]).await, Err(Error::NotLeader { .. } | Error::Shutdown)));

    let other = tempfile::tempdir().expect("temp dir");
    let settings = SnapshotSettings { every_entries: 0, ..SnapshotSettings::default() };
    let refused = ControlPlane::builder(1, other.path()).snapshots(settings).start().await;
    let message = refused.err().map(|e| e.to_string());
    assert_eq!(message.as_deref(), Some("snapshots.everyEntries: Invalid value: 0: must be >= 1"));
    let refused = ControlPlane::builder(0, other.path()).start().await;
    assert_eq!(refused.err().map(|e| e.to_string()).as_deref(), Some("id: Invalid value: 0: must be >= 1"));
    let too_often = ControlPlane::builder(1, other.path()).progress_interval(Duration::ZERO).start().await;
    let message = too_often.err().map(|e| e.to_string());
    assert_eq!(message.as_deref(), Some("progressInterval: Invalid value: 0ns: must be at least 10ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_leader_loss_restart_snapshot_and_membership_changes() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let [n1, n2, n3] = three_nodes(&dirs).await;
    assert_eq!(n1.members().voters.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);

    // Writes replicate to every node.
    for i in 0..10 {
        let outcomes = propose(&[&n1], vec![pod(&format!("p{i}"))]).await;
        assert!(outcomes[0].is_ok(), "{outcomes:?}");
    }
    // The state's applied index: metrics may trail what the state machine has applied.
    let target = n1.read(Consistency::Stale, State::applied_index).await.expect("read");
    for n in [&n1, &n2, &n3] {
        eventually("replication", || (n.metrics().applied_index >= target).then_some(())).await;
        let has = n.read(Consistency::Stale, |s| s.get(&key("p9")).is_some()).await.expect("stale read");
        assert!(has, "node {} has the write", n.id());
    }
    let follower_read = n2.read(Consistency::Linearizable, |_| ()).await;
    assert!(matches!(follower_read, Err(Error::NotLeader { leader: Some(1), .. })), "{follower_read:?}");

    // A watch on node 2 reads the first events and remembers its revision.
    let pods = WatchFilter { kind: Some(Kind::Pod), ..WatchFilter::all() };
    let mut first_part = Vec::new();
    let mut watch = n2.watch(1, pods.clone()).expect("watch");
    while first_part.len() < 10 {
        if let WatchItem::Events { events, .. } = watch.next().await.expect("open").expect("no error") {
            first_part.extend(events.iter().map(|e| e.revision.0));
        }
    }
    drop(watch);
    let resume_from = *first_part.last().expect("events");

    // Node 3 falls behind while the log is compacted past it.
    let n3_addr: std::net::SocketAddr = n3.address().parse().expect("address");
    let n3_last = n3.metrics().last_log_index;
    n3.shutdown().await.expect("stops 3");
    drop(n3);
    for i in 10..80 {
        propose(&[&n1, &n2], vec![pod(&format!("p{i}"))]).await;
    }
    eventually("logs compacted past node 3", || {
        (n1.metrics().purged_index > n3_last && n2.metrics().purged_index > n3_last).then_some(())
    })
    .await;

    // Kill the leader: node 2 and node 3 (restarted from its directory) carry on.
    n1.shutdown().await.expect("stops 1");
    drop(n1);
    let n3 = start_joiner(3, dirs[2].path(), Some(n3_addr)).await;
    for i in 80..90 {
        propose(&[&n2, &n3], vec![pod(&format!("p{i}"))]).await;
    }
    let (leader, other) = eventually("a new leader", || match n2.metrics().leader {
        Some(2) => Some((&n2, &n3)),
        Some(3) => Some((&n3, &n2)),
        _ => None,
    })
    .await;
    let count = leader.read(Consistency::Linearizable, |s| s.list(Kind::Pod, None).count()).await.expect("read");
    assert_eq!(count, 90, "no acknowledged write was lost");
    let target = leader.read(Consistency::Stale, State::applied_index).await.expect("read");
    eventually("node 3 caught up", || (other.metrics().applied_index >= target).then_some(())).await;
    let (snap3, count3) =
        (n3.metrics().snapshot_index, n3.read(Consistency::Stale, |s| s.list(Kind::Pod, None).count()));
    assert!(snap3 > 0, "node 3 received a snapshot");
    assert_eq!(count3.await.expect("read"), 90);

    // The watch resumes from its last revision on node 2, across the leader change: no gap, no
    // duplicate. Node 3 installed a snapshot, so it no longer holds those events and says so.
    let mut resumed = Vec::new();
    let mut watch = n2.watch(resume_from, pods.clone()).expect("watch resumes");
    while resumed.len() < 80 {
        if let WatchItem::Events { events, .. } = watch.next().await.expect("open").expect("no error") {
            resumed.extend(events.iter().map(|e| e.revision.0));
        }
    }
    let all: Vec<u64> = first_part.iter().chain(&resumed).copied().collect();
    let mut full = Vec::new();
    let mut full_watch = n2.watch(1, pods.clone()).expect("watch from the start");
    while full.len() < 90 {
        if let WatchItem::Events { events, .. } = full_watch.next().await.expect("open").expect("no error") {
            full.extend(events.iter().map(|e| e.revision.0));
        }
    }
    assert_eq!(full, all, "the two halves are exactly the full history");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "revisions strictly increase");
    match n3.watch(resume_from, pods) {
        Err(Error::Expired(e)) => assert!(e.horizon > resume_from),
        other => panic!("expected an expired watch, got {:?}", other.map(|_| "a stream")),
    }

    // Remove the killed member.
    leader.remove_member(1).await.expect("removes 1");
    let voters: Vec<u64> = leader.members().voters.keys().copied().collect();
    assert_eq!(voters.len(), 2);
    assert!(!voters.contains(&1));
    n2.shutdown().await.expect("stops");
    n3.shutdown().await.expect("stops");
}

/// Three nodes on TCP in `dirs`, node 1 initializing the cluster; with their membership.
pub(crate) async fn three_bootstrapped(
    dirs: &[tempfile::TempDir],
) -> (Vec<ControlPlane>, std::collections::BTreeMap<u64, Member>) {
    let listeners: Vec<_> =
        (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("binds a free port")).collect();
    let members: std::collections::BTreeMap<u64, Member> = (1..=3)
        .zip(&listeners)
        .map(|(id, l)| (id, Member::new(l.local_addr().expect("address").to_string(), format!("api-{id}"))))
        .collect();
    let mut nodes = Vec::new();
    for ((id, dir), listener) in (1..=3u64).zip(dirs).zip(listeners) {
        let builder = ControlPlane::builder(id, dir.path()).listener(listener);
        // Exactly one node initializes the cluster; the others learn of it from the leader.
        let builder = if id == 1 { builder.initial_members(members.clone()) } else { builder.join() };
        nodes.push(builder.start().await.expect("starts"));
    }
    (nodes, members)
}

/// The leader asked to remove itself hands leadership over first and names the new leader,
/// which removes it as a follower; a membership change on the new leader works after that
/// (openraft alpha.37 left a leader that removed itself believing it led, and its next
/// change panicked its core: orch-sim's seed 52). A follower asked to remove a node it does
/// not know redirects rather than answer "no such member" from its own, maybe stale, view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_asked_to_remove_itself_hands_over_first() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let (nodes, _) = three_bootstrapped(&dirs).await;
    let refs: Vec<&ControlPlane> = nodes.iter().collect();
    propose(&refs, vec![pod("before")]).await;
    let mut removed = None;
    for _ in 0..5 {
        let leader = eventually("a leader", || nodes.iter().find(|n| n.metrics().leader == Some(n.id()))).await;
        match leader.remove_member(leader.id()).await {
            Err(Error::NotLeader { leader: Some(to), .. }) => {
                assert_ne!(to, leader.id(), "it names another node");
                let new = &nodes[usize::try_from(to - 1).expect("index")];
                // A fresh leader changes membership once its lease began and its first entry
                // committed: until then it answers NotLeader with no leader, and a client
                // tries again (as `orch_api::Client` does).
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                loop {
                    match new.remove_member(leader.id()).await {
                        Ok(()) => {
                            removed = Some((leader.id(), to));
                            break;
                        }
                        Err(Error::NotLeader { leader: None, .. }) if tokio::time::Instant::now() < deadline => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(Error::NotLeader { .. }) => break, // leadership moved again meanwhile
                        Err(e) => panic!("the new leader failed to remove the old one: {e}"),
                    }
                }
                if removed.is_some() {
                    break;
                }
            }
            Err(Error::NotLeader { .. }) => continue,
            other => panic!("expected NotLeader naming the new leader, got {other:?}"),
        }
    }
    let (old, new) = removed.expect("the old leader was removed");
    let new = &nodes[usize::try_from(new - 1).expect("index")];
    assert!(!new.members().voters.contains_key(&old), "{:?}", new.members());
    let follower = nodes.iter().find(|n| n.id() != old && n.id() != new.id()).expect("the third node");
    match follower.remove_member(9).await {
        Err(Error::NotLeader { .. }) => {}
        other => panic!("a follower redirects, got {other:?}"),
    }
    let err = new.remove_member(9).await.expect_err("no such member");
    assert_eq!(err.to_string(), "id: Not found: 9: not a member of the cluster");
    // Another change on the new leader: the old one, gone, rejoins as a learner and leaves.
    let old_node = &nodes[usize::try_from(old - 1).expect("index")];
    new.raft().add_learner(old, Member::new(old_node.address(), "api-old"), true).await.expect("adds a learner");
    new.remove_member(old).await.expect("removes the learner");
    for n in &nodes {
        n.shutdown().await.expect("stops");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_bootstrapped_together_hand_over_leadership() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let (nodes, members) = three_bootstrapped(&dirs).await;
    let refs: Vec<&ControlPlane> = nodes.iter().collect();
    propose(&refs, vec![pod("before")]).await;
    assert_eq!(nodes[0].members().voters, members);

    // Hand leadership to another node. An election may move it meanwhile (the answer is then
    // NotLeader): ask whoever leads now, a few times at most.
    let mut moved = None;
    for _ in 0..5 {
        let leader = eventually("a leader", || nodes.iter().find(|n| n.metrics().leader == Some(n.id()))).await;
        let to = if leader.id() == 3 { 2 } else { 3 };
        match leader.transfer_leadership(to).await {
            Ok(()) => {
                moved = Some((leader.id(), to));
                break;
            }
            Err(Error::NotLeader { .. }) => continue,
            Err(e) => panic!("transfer failed: {e}"),
        }
    }
    let (from, to) = moved.expect("leadership moved");
    assert_ne!(from, to);
    let outcomes = propose(&refs, vec![pod("after")]).await;
    assert!(outcomes[0].is_ok());
    let former = &nodes[usize::try_from(from - 1).expect("index")];
    if let Some(leader) = former.metrics().leader.filter(|l| *l != from) {
        // The refusal points at the leader's client API, as the membership records it.
        let answer = former.propose(vec![pod("x")]).await;
        match answer {
            Err(Error::NotLeader { leader: Some(l), api_address: Some(api), .. }) if l == leader => {
                assert_eq!(api, format!("api-{leader}"));
            }
            Err(Error::NotLeader { .. }) => {} // leadership moved again meanwhile
            other => panic!("expected NotLeader with the leader's API address, got {other:?}"),
        }
    }
    for n in &nodes {
        n.shutdown().await.expect("stops");
    }
}

/// Run by `a_crash_between_append_and_apply_loses_nothing_acknowledged` in a child process,
/// which it kills with SIGKILL; not a test on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a helper process of the crash test"]
async fn crash_child() {
    let Ok(dir) = std::env::var("ORCH_CRASH_DIR") else { return };
    let node = ControlPlane::open(dir).await.expect("opens");
    let mut out = std::io::stdout().lock();
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    for worker in 0..16u64 {
        let node = node.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let name = format!("w{worker}-{i}");
                if let Ok(outcomes) = node.propose(vec![pod(&name)]).await
                    && outcomes[0].is_ok()
                    && tx.send(name).await.is_err()
                {
                    return;
                }
            }
        });
    }
    while let Some(name) = rx.recv().await {
        writeln!(out, "acked {name}").expect("stdout");
        out.flush().expect("stdout");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_append_and_apply_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--ignored", "--exact", "control_plane::crash_child", "--nocapture"])
        .env("ORCH_CRASH_DIR", dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("piped");
    let acked = tokio::task::spawn_blocking(move || {
        let mut acked = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(name) = line.strip_prefix("acked ") {
                acked.push(name.to_owned());
                if acked.len() == 300 {
                    break;
                }
            }
        }
        acked
    })
    .await
    .expect("reader");
    // SIGKILL while sixteen writers have entries appended, committing and applying.
    child.kill().expect("kill -9");
    child.wait().expect("reaped");
    assert_eq!(acked.len(), 300, "the child acknowledged writes before it was killed");

    let node = ControlPlane::open(dir.path()).await.expect("reopens");
    let missing: Vec<String> = node
        .read(Consistency::Linearizable, |s| acked.iter().filter(|n| s.get(&key(n)).is_none()).cloned().collect())
        .await
        .expect("read");
    assert!(missing.is_empty(), "acknowledged writes lost: {missing:?}");
    node.shutdown().await.expect("shuts down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_falls_behind_continues_from_the_history() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = ControlPlane::open(dir.path()).await.expect("starts");
    node.propose(vec![pod("first")]).await.expect("proposes");
    let mut slow = node.watch(0, WatchFilter::all()).expect("watches");
    assert!(matches!(slow.next().await, Some(Ok(WatchItem::Progress { .. }))));
    // More entries than a subscriber may have waiting, while the watch is not read.
    let entries = orch_raft::feed::FEED_SUBSCRIBER_BUFFER_MAX + 10;
    for i in 0..entries {
        node.propose(vec![pod(&format!("p{i}"))]).await.expect("proposes");
    }
    // Every one of them arrives, in order: the watch went on from the history.
    let mut names = Vec::new();
    while names.len() < entries {
        match slow.next().await {
            Some(Ok(WatchItem::Events { events, .. })) => {
                names.extend(events.iter().map(|e| e.object.meta().name.to_string()));
            }
            Some(Ok(WatchItem::Progress { .. })) => {}
            other => panic!("expected the watch to go on, got {other:?}"),
        }
    }
    assert_eq!(names, (0..entries).map(|i| format!("p{i}")).collect::<Vec<_>>());
    node.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_read_does_not_hold_up_apply() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = ControlPlane::open(dir.path()).await.expect("starts");
    node.propose(vec![pod("before")]).await.expect("proposes");
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    // A read that takes as long as the test wants, on a thread of its own.
    let reader = {
        let node = node.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            runtime.block_on(node.read(Consistency::Stale, move |s| {
                let _ = entered_tx.send(());
                let _ = release_rx.recv();
                (s.get(&key("before")).is_some(), s.get(&key("during")).is_some())
            }))
        })
    };
    entered.recv().expect("the read started");
    // While the read runs, a write commits and is applied.
    // (`propose` returns once the entry was applied.)
    let write = tokio::time::timeout(DEADLINE, node.propose(vec![pod("during")])).await;
    let _ = release.send(());
    let seen = reader.await.expect("the reader ends").expect("reads");
    assert!(write.is_ok(), "a write waited for a read to finish");
    assert_eq!(seen, (true, false), "the read saw one consistent state: before the write");
    node.shutdown().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_lists_revision_is_accepted_after_a_restart_from_a_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = ControlPlane::open(dir.path()).await.expect("starts");
    let outcomes = node.propose(vec![pod("a"), pod("b")]).await.expect("proposes");
    let written = outcomes[0].as_ref().expect("created").revision.0;
    // A membership entry (a learner that never comes) after the last application entry: a
    // snapshot taken now ends on it, past the state's revision.
    node.raft().add_learner(9, Member::from("127.0.0.1:9"), false).await.expect("adds a learner");
    let blank = eventually("the membership entry applied", || {
        let applied = node.metrics().applied_index;
        (applied > written).then_some(applied)
    })
    .await;
    node.raft().trigger().snapshot().await.expect("triggers a snapshot");
    eventually("the snapshot", || (node.metrics().snapshot_index >= blank).then_some(())).await;
    let revision = node.read(Consistency::Linearizable, State::applied_index).await.expect("reads");
    assert!(revision < blank, "the snapshot's state revision {revision} is below its log index {blank}");
    node.shutdown().await.expect("stops");
    drop(node);
    // Restarted from that snapshot: a list reports the state's revision, and a watch from it is
    // accepted (not expired: nothing happened after it that a watch could miss).
    let node = ControlPlane::open(dir.path()).await.expect("restarts");
    let revision = node.read(Consistency::Linearizable, State::applied_index).await.expect("reads");
    let mut watch = node.watch(revision, WatchFilter::all()).expect("a watch from the list's revision");
    assert!(matches!(watch.next().await, Some(Ok(WatchItem::Progress { .. }))));
    node.shutdown().await.expect("stops");
}

/// Many callers share the node's own client: their entries reach openraft in any order (the
/// batcher writes several at once), and each caller's request is applied once, none stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_of_one_client_each_apply_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = ControlPlane::open(dir.path()).await.expect("opens");
    let callers: Vec<_> = (0..1_500)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move { node.propose(vec![pod(&format!("c{i}"))]).await })
        })
        .collect();
    for (i, caller) in callers.into_iter().enumerate() {
        let outcomes = caller.await.expect("joins").expect("proposed");
        assert!(outcomes[0].is_ok(), "caller {i}: {:?}", outcomes[0]);
    }
    let count = node.read(Consistency::Linearizable, |s| s.list(Kind::Pod, None).count()).await.expect("read");
    assert_eq!(count, 1_500);
    node.shutdown().await.expect("shuts down");
}

/// A node that has just become leader refuses writes until a quorum acknowledged its lease
/// (openraft answers `LeaseExpired` with no leader id): a write sent to it the moment it leads
/// waits for that instead of failing with "no leader".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_leader_of_a_moment_ago_waits_for_its_lease() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let [n1, n2, n3] = three_nodes(&dirs).await;
    let nodes = [&n1, &n2, &n3];
    let mut written = 0;
    for round in 0..12u64 {
        let leader = eventually("a leader", || nodes.iter().find(|n| n.metrics().leader == Some(n.id()))).await;
        let to = nodes[usize::try_from((leader.id() + round % 2) % 3).expect("index")];
        if to.id() == leader.id() {
            continue;
        }
        // Watch the new leader's own metrics and write the moment it leads.
        let wait = to.raft().wait(Some(DEADLINE));
        let leads = wait.metrics(|m| m.current_leader == Some(m.id), "leads");
        let (moved, led) = tokio::join!(leader.transfer_leadership(to.id()), leads);
        if led.is_err() || moved.is_err() {
            continue; // an election moved it elsewhere meanwhile
        }
        match to.propose(vec![pod(&format!("fresh-{round}"))]).await {
            Ok(outcomes) => {
                assert!(outcomes[0].is_ok(), "round {round}: {outcomes:?}");
                written += 1;
            }
            // Leadership moved on again (another election): not the case under test.
            Err(Error::NotLeader { leader: Some(other), .. }) if other != to.id() => {}
            Err(e) => panic!("round {round}: a fresh leader refused a write: {e:?}"),
        }
    }
    assert!(written >= 8, "only {written} of 12 rounds wrote to a fresh leader");
    for n in nodes {
        n.shutdown().await.expect("stops");
    }
}

/// A learner (a node added that never became a voter) is removed too, and removing a node that
/// is no member is an error, not a silent success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_is_removed_and_an_unknown_member_is_an_error() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let n1 = start_leader(dirs[0].path()).await;
    let n2 = start_joiner(2, dirs[1].path(), None).await;
    n1.raft().add_learner(2, Member::new(n2.address(), "api-2"), true).await.expect("adds a learner");
    assert!(n1.members().learners.contains_key(&2));
    n1.remove_member(2).await.expect("removes the learner");
    let members = n1.members();
    assert!(!members.learners.contains_key(&2) && !members.voters.contains_key(&2), "{members:?}");
    let err = n1.remove_member(9).await.expect_err("no such member");
    assert_eq!(err.to_string(), "id: Not found: 9: not a member of the cluster");
    for n in [n1, n2] {
        n.shutdown().await.expect("stops");
    }
}

/// A start that fails after Raft and its server came up (here: initial members that leave this
/// node out) stops them again: the address and the data directory are free for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_nothing_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let addr = std::net::TcpListener::bind("127.0.0.1:0").expect("binds").local_addr().expect("address");
    let others = [(2u64, Member::new("127.0.0.1:1", "api-2"))];
    let failed = ControlPlane::builder(1, dir.path()).listen(addr).initial_members(others).start().await;
    let err = failed.err().expect("node 1 is not among the initial members");
    assert!(matches!(err, Error::Raft(_)), "{err}");
    // The log is closed when the error returns (not some time later): it opens at once.
    drop(orch_raft::rocks::RocksLogStore::open(&dir.path().join("log")).expect("the log is closed"));
    // The same address and directory start a node now: nothing of the failed start holds them.
    let node = ControlPlane::builder(1, dir.path()).single_node().listen(addr).start().await.expect("starts");
    eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
    node.shutdown().await.expect("stops");
}

/// A fresh data directory with no bootstrap setting is refused instead of becoming a cluster of
/// one; a directory that holds a node restarts without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_directory_needs_a_bootstrap_setting() {
    let dir = tempfile::tempdir().expect("temp dir");
    let refused = ControlPlane::builder(1, dir.path()).start().await.err().expect("refused");
    assert_eq!(
        refused.to_string(),
        "bootstrap: Required value: a fresh data directory starts a cluster (single_node() or initial_members(..)) \
         or joins one (join())"
    );
    let node = ControlPlane::builder(1, dir.path()).single_node().start().await.expect("starts");
    eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
    node.shutdown().await.expect("stops");
    drop(node);
    let node = ControlPlane::builder(1, dir.path()).start().await.expect("restarts with no setting");
    eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
    node.shutdown().await.expect("stops");
}

/// Node `id` in `dirs[id - 1]` with (heartbeat, election timeout range) `timing`: node 1
/// bootstraps a cluster and is returned once it leads, the others join.
async fn timed_node(dirs: &[tempfile::TempDir], id: u64, timing: (Duration, (Duration, Duration))) -> ControlPlane {
    let builder = ControlPlane::builder(id, dirs[id as usize - 1].path()).timing(timing.0, timing.1);
    let builder = if id == 1 { builder.single_node() } else { builder.join() };
    let node = builder.start().await.expect("starts");
    if id == 1 {
        eventually("node 1 leads", || (node.metrics().leader == Some(1)).then_some(())).await;
    }
    node
}

/// A leader stopping on purpose hands over first. The election timeout here is 20-40 s, so
/// within the 15 s this test waits nobody could be elected the usual way: only the hand-over
/// can make a new leader in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_hands_over_without_waiting_for_an_election() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let timing = (Duration::from_millis(100), (Duration::from_secs(20), Duration::from_secs(40)));
    let n1 = timed_node(&dirs, 1, timing).await;
    assert_eq!(n1.step_down(Duration::from_secs(1)).await.expect("no transfer"), None, "the only voter stays");
    let (n2, n3) = two_more(&n1, &dirs, timing).await;
    assert_eq!(n2.step_down(Duration::from_secs(1)).await.expect("not the leader"), None);

    let to = n1.step_down(Duration::from_secs(10)).await.expect("handed over").expect("a voter took over");
    assert!(to == 2 || to == 3, "{to}");
    n1.shutdown().await.expect("stops");
    let others = [&n2, &n3];
    let written = tokio::time::timeout(Duration::from_secs(15), propose(&others, vec![pod("after")]))
        .await
        .expect("a leader within 15 s, without an election timeout");
    assert!(written[0].is_ok(), "{written:?}");
    for n in others {
        n.shutdown().await.expect("stops");
    }
}

/// A stopping leader hands over to a voter that is alive, never to one that stopped answering:
/// with node 2 down (and seen down: no heartbeat answered for an election timeout), the
/// hand-over goes to node 3 and completes well before anyone could be elected (4-8 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_leader_hands_over_to_a_live_voter_only() {
    use openraft::async_runtime::WatchReceiver as _;
    use openraft::async_runtime::instant::Instant as _;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let timing = (Duration::from_millis(100), (Duration::from_secs(4), Duration::from_secs(8)));
    let n1 = timed_node(&dirs, 1, timing).await;
    let (n2, n3) = two_more(&n1, &dirs, timing).await;
    // Node 2 stops once it has all node 3 has: with the lower id, only its being down keeps the
    // hand-over from it.
    eventually("both followers have the whole log", || {
        let metrics = n1.raft().metrics();
        let m = metrics.borrow_watched();
        let replication = m.replication.as_ref()?;
        let matched = |v: u64| replication.get(&v).cloned().flatten().map(|l| l.index());
        (matched(2) == m.last_log_index && matched(3) == m.last_log_index).then_some(())
    })
    .await;
    n2.shutdown().await.expect("stops");
    eventually("node 2 seen down", || {
        let metrics = n1.raft().metrics();
        let m = metrics.borrow_watched();
        let heard = m.heartbeat.as_ref().and_then(|h| h.get(&2).cloned()).flatten();
        heard.is_some_and(|t| t.elapsed() > timing.1.0).then_some(())
    })
    .await;
    let to = n1.step_down(Duration::from_millis(1500)).await.expect("handed over in time");
    assert_eq!(to, Some(3), "the live voter");
    eventually("node 3 leads", || (n3.metrics().leader == Some(3)).then_some(())).await;
    for n in [&n1, &n3] {
        n.shutdown().await.expect("stops");
    }
}

/// `restore` prepares a fresh directory only: one that holds data, no members, or bytes that
/// are no snapshot are refused, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_prepares_a_fresh_directory_only() {
    let mut state = orch_core::State::new();
    state.apply(1, orch_core::Entry::new(1_800_000_000_000, Vec::new()));
    let snapshot = state.to_snapshot();
    let members = || std::collections::BTreeMap::from([(1, orch_raft::Member::from("127.0.0.1:1"))]);
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = orch_raft::control_plane::restore(dir.path(), b"not a snapshot", members()).await;
    assert!(matches!(&garbage, Err(Error::Invalid(m)) if m.starts_with("snapshot: ")), "{garbage:?}");
    let none = orch_raft::control_plane::restore(dir.path(), &snapshot, Default::default()).await;
    assert!(matches!(&none, Err(Error::Invalid(m)) if m == "members: Required value"), "{none:?}");
    assert_eq!(orch_raft::control_plane::restore(dir.path(), &snapshot, members()).await.expect("restores"), 1);
    let again = orch_raft::control_plane::restore(dir.path(), &snapshot, members()).await;
    assert!(matches!(&again, Err(Error::Invalid(m)) if m.contains("holds data already")), "{again:?}");
}

/// The seams a simulation drives: entries are stamped by the node's `Clock` (here one that
/// stands still at a chosen time), and a seeded node's own client id follows from its seed, so
/// the same seed gives the same deduplication table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stamps_entries_with_its_clock_and_derives_its_client_id_from_its_seed() {
    #[derive(Debug)]
    struct Fixed(i64);
    impl orch_raft::clock::Clock for Fixed {
        fn now_ms(&self) -> i64 {
            self.0
        }
    }
    // In the past: the state's clock is the largest stamp, so a stray wall-clock stamp would
    // show.
    const AT_MS: i64 = 1_000_000_000_000;
    let run = |seed: u64| async move {
        let dir = tempfile::tempdir().expect("temp dir");
        let node = ControlPlane::builder(1, dir.path())
            .single_node()
            .seed(seed)
            .clock(std::sync::Arc::new(Fixed(AT_MS)))
            .start()
            .await
            .expect("starts");
        eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
        assert!(node.propose(vec![pod("stamped")]).await.expect("proposed")[0].is_ok());
        let state = node.state(Consistency::Linearizable).await.expect("state");
        node.shutdown().await.expect("stops");
        let created = state.get(&ObjectKey::new(Kind::Pod, "default", "stamped")).expect("stored");
        assert_eq!(created.meta().creation_timestamp.map(|t| t.as_millis()), Some(AT_MS));
        assert_eq!(state.clock().as_millis(), AT_MS, "the state's clock is the stamps'");
        state.sessions().outcomes().map(|(client, _, _)| client).collect::<Vec<_>>()
    };
    let (a, b, c) = (run(7).await, run(7).await, run(8).await);
    assert_eq!(a.len(), 1);
    assert_eq!(a, b, "the same seed, the same client id");
    assert_ne!(a, c, "another seed, another");
}

/// Each proposer is a client of its own: its id differs from every other proposer's and from
/// the node's own client's, and its serials start at 1 in a window of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposers_are_clients_of_their_own() {
    let dir = tempfile::tempdir().expect("dir");
    let cp = start_leader(dir.path()).await;
    let ids: std::collections::BTreeSet<ClientId> = (0..1000).map(|_| cp.proposer().client()).collect();
    assert_eq!(ids.len(), 1000, "distinct ids");
    let namespace = |name: &str| {
        parse_manifests(&format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"))
            .expect("valid")
            .into_iter()
            .map(Command::Create)
            .collect::<Vec<_>>()
    };
    let outcomes = cp.propose(namespace("own")).await.expect("proposed");
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let (a, b) = (cp.proposer(), cp.proposer());
    for (p, name) in [(&a, "a"), (&b, "b")] {
        let outcomes = p.propose_retrying(namespace(name), 1).await.expect("proposed");
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    }
    let kept: Vec<(ClientId, u64)> = cp
        .read(Consistency::Linearizable, |s: &State| {
            s.sessions().outcomes().map(|(c, serial, _)| (c, serial)).collect()
        })
        .await
        .expect("read");
    let clients: std::collections::BTreeSet<ClientId> = kept.iter().map(|(c, _)| *c).collect();
    assert_eq!(clients.len(), 3, "the node's own client and the two proposers: {kept:?}");
    for p in [&a, &b] {
        assert!(kept.contains(&(p.client(), 1)), "{:?} wrote serial 1 of its own: {kept:?}", p.client());
    }
    cp.shutdown().await.expect("stops");
}
