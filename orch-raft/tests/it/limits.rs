//! Byte budgets: what the control plane accepts becomes an entry every replica decodes, and
//! entries and appends stay within their limits however large the objects.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use orch_core::{Command, Kind, ObjectKey, State, WatchFilter, parse_manifests};
use orch_raft::control_plane::{Consistency, ControlPlane, WatchItem};

use crate::control_plane::eventually;

const DEADLINE: Duration = Duration::from_secs(60);

fn pod_with(name: &str, edit: impl FnOnce(&mut orch_core::Pod)) -> Command {
    let manifest =
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: x}}]}}");
    let mut obj = parse_manifests(&manifest).expect("valid manifest").remove(0);
    let orch_core::Object::Pod(pod) = &mut obj else { unreachable!("a pod manifest") };
    edit(Arc::make_mut(pod));
    Command::Create(obj)
}

/// A pod with 50,000 empty arguments (~150 KB of JSON, 50 KB encoded) is one that apply refuses
/// and whose entry the decoder refuses (its claims exceed the budget): it must be refused
/// before it is proposed, naming the field and the limit, and the log must go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_apply_would_refuse_is_refused_before_it_becomes_an_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let node = ControlPlane::open(dir.path()).await.expect("opens");
    eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
    let huge = pod_with("huge", |p| p.spec.containers[0].args = vec![orch_core::Text::new(); 50_000]);
    let ok = pod_with("ok", |_| {});
    let outcomes = node.propose(vec![huge.clone(), ok]).await.expect("proposed");
    let err = outcomes[0].as_ref().expect_err("refused").to_string();
    assert!(err.contains("spec.containers[0].args: Too many: 50000: must have at most 256 items"), "{err}");
    assert!(outcomes[1].is_ok(), "{outcomes:?}");
    // Alone, it writes nothing at all.
    let before = node.read(Consistency::Linearizable, State::applied_index).await.expect("read");
    let outcomes = node.propose(vec![huge]).await.expect("proposed");
    assert!(outcomes[0].is_err());
    let after = node.read(Consistency::Linearizable, State::applied_index).await.expect("read");
    assert_eq!(after, before);

    // One call's requests go in one entry: more than an entry holds is refused whole.
    let blob = "v".repeat(200_000);
    let big: Vec<Command> = (0..12)
        .map(|i| pod_with(&format!("b{i}"), |p| drop(p.metadata.annotations.insert("example.com/blob", blob.as_str()))))
        .collect();
    let err = node.propose(big).await.expect_err("too large").to_string();
    assert!(err.starts_with("requests: Too long: ") && err.contains("must have at most 2097152 bytes"), "{err}");
    let after_big = node.read(Consistency::Linearizable, State::applied_index).await.expect("read");
    assert_eq!(after_big, before);

    // The node restarts on its log.
    node.shutdown().await.expect("shuts down");
    drop(node);
    let node = ControlPlane::open(dir.path()).await.expect("reopens");
    eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
    let key = ObjectKey::new(Kind::Pod, "default", "ok");
    let has = node.read(Consistency::Linearizable, |s| s.get(&key).is_some()).await.expect("read");
    assert!(has);
    node.shutdown().await.expect("shuts down");
}

/// 320 pods of ~200 KB each (64 MB, more than one gRPC message) proposed at once: they commit
/// in entries of at most `ENTRY_BYTES_MAX` and reach a follower that keeps up and one that
/// joins afterwards (whose appends would exceed the message limit at openraft's default of 300
/// entries per append).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_commit_in_bounded_entries_and_replicate() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let n1 = ControlPlane::builder(1, dirs[0].path()).single_node().start().await.expect("starts");
    eventually("a leader", || (n1.metrics().leader == Some(1)).then_some(())).await;
    let n2 = ControlPlane::builder(2, dirs[1].path()).join().start().await.expect("starts");
    let n3 = ControlPlane::builder(3, dirs[2].path()).join().start().await.expect("starts");
    n1.add_member(2, n2.address()).await.expect("adds 2");

    const PODS: usize = 320;
    const VALUE_BYTES: usize = 200_000;
    let mut watch = n1.watch(0, WatchFilter { kind: Some(Kind::Pod), ..WatchFilter::all() }).expect("watch");
    let mut tasks = Vec::new();
    for i in 0..PODS {
        let node = n1.clone();
        tasks.push(tokio::spawn(async move {
            let value = "v".repeat(VALUE_BYTES);
            let cmd = pod_with(&format!("big{i}"), |p| {
                p.metadata.annotations.insert("example.com/blob", value.as_str());
            });
            node.propose(vec![cmd]).await
        }));
    }
    for t in tasks {
        let outcomes = t.await.expect("task").expect("proposed");
        assert!(outcomes[0].is_ok(), "{:?}", outcomes[0].as_ref().err());
    }
    // Every entry stayed within the byte budget: group the events by revision.
    let mut per_revision = Vec::new();
    let mut seen = 0;
    while seen < PODS {
        match tokio::time::timeout(DEADLINE, watch.next()).await.expect("in time").expect("open").expect("ok") {
            WatchItem::Events { events, .. } => {
                seen += events.len();
                per_revision.push(events.len());
            }
            WatchItem::Progress { .. } => {}
        }
    }
    let most = per_revision.iter().copied().max().unwrap_or(0);
    assert!(
        most * VALUE_BYTES <= orch_core::codec::ENTRY_BYTES_MAX,
        "an entry carried {most} pods of {VALUE_BYTES} bytes: {per_revision:?}"
    );
    // Node 3 joins now: it catches up by appends of many full entries, each append one message.
    n1.add_member(3, n3.address()).await.expect("adds 3");
    let target = n1.read(Consistency::Linearizable, State::applied_index).await.expect("read");
    for n in [&n2, &n3] {
        let node = n.clone();
        eventually("replication", move || {
            let applied = futures_util::FutureExt::now_or_never(node.read(Consistency::Stale, State::applied_index));
            matches!(applied, Some(Ok(a)) if a >= target).then_some(())
        })
        .await;
        let count = n.read(Consistency::Stale, |s| s.list(Kind::Pod, None).count()).await.expect("read");
        assert_eq!(count, PODS, "node {}", n.id());
    }
    for n in [n1, n2, n3] {
        n.shutdown().await.expect("shuts down");
    }
}
