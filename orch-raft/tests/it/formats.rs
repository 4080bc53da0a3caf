//! An upgraded node restarts on the data an earlier build wrote.
//!
//! `tests/fixtures/format-vN/` is a data directory (RocksDB log, snapshot) written by a build of
//! storage format version N (orch-core's `codec::FORMAT_VERSION`): a snapshot, entries after it,
//! every command and kind. Each is committed and never rewritten: a change of layout bumps the
//! format version, keeps a reader for the older ones, and writes the new version's fixture with
//! `write_format_fixture` (ignored); the test opens every version's fixture. Format 2 added
//! `acked_below` to requests, so the version 1 fixture's log is read through format 1's frozen
//! entry layout; format 3 added the commands `Scale` and `RolloutUndo`, which its fixture's log
//! holds.

use std::path::Path;

use orch_core::{Command, Kind, Object, ObjectKey, Preconditions, State, parse_manifests};
use orch_raft::control_plane::{Consistency, ControlPlane, SnapshotSettings};

use crate::control_plane::eventually;

/// The fixture written by format `version`.
fn fixture(version: u8) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/format-v{version}"))
}

/// Proposals before the snapshot: the membership entry, the leader's blank entry and these
/// creates make 9 log entries, `every_entries` of the fixture's snapshot settings.
const CREATES: usize = 7;

/// What the fixture's node was asked to do, one proposal per item.
fn proposals() -> Vec<Vec<Command>> {
    let objects = parse_manifests(include_str!("../../../examples/web.yaml")).expect("example parses");
    let mut out: Vec<Vec<Command>> = objects.into_iter().map(|o| vec![Command::Create(o)]).collect();
    let node = "apiVersion: v1\nkind: Node\nmetadata: {name: n1, labels: {zone: a}}\nstatus:\n  capacity: {cpu: '4', memory: 8Gi, pods: '110'}\n  addresses: [{type: InternalIP, address: 10.0.0.1}]\n";
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n";
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: team, labels: {{app: x}}, finalizers: [example.com/keep]}}\n\
             spec:\n  containers:\n  - name: c\n    image: busybox:1.36\n    command: [sleep, '3600']\n    env: [{{name: A, value: b}}]\n    \
             readinessProbe: {{httpGet: {{path: /, port: 80, httpHeaders: [{{name: X, value: y}}]}}}}\n"
        )
    };
    let one = |yaml: &str| parse_manifests(yaml).expect("fixture parses").remove(0);
    out.push(vec![Command::Create(one(node))]);
    out.push(vec![Command::Create(one(ns))]);
    out.push(vec![Command::Create(one(&pod("p1")))]);
    out.push(vec![Command::Create(one(&pod("p2")))]);
    // The snapshot covers the creates above; every kind of command below stays in the log.
    out.push(vec![Command::Batch(vec![Command::Create(one(&pod("p4"))), Command::Create(one(&pod("p5")))])]);
    let mut relabeled = one(&pod("p5"));
    relabeled.meta_mut().labels.insert("tier", "b");
    out.push(vec![Command::Update(relabeled)]);
    out.push(vec![Command::Bind {
        namespace: "team".into(),
        name: "p1".into(),
        node: "n1".into(),
        preconditions: Preconditions::default(),
    }]);
    let mut running = one(&pod("p1"));
    if let Object::Pod(p) = &mut running {
        let p = std::sync::Arc::make_mut(p);
        p.status.phase = Some(orch_core::core_v1::PodPhase::Running);
        p.status.pod_ip = Some("10.1.0.5".into());
    }
    out.push(vec![Command::UpdateStatus(running)]);
    out.push(vec![Command::Apply(one(&pod("p2").replace("busybox:1.36", "busybox:1.37")))]);
    out.push(vec![Command::Delete {
        key: ObjectKey::new(Kind::Pod, "team", "p1"),
        grace_period_seconds: Some(0),
        preconditions: Preconditions::default(),
    }]);
    out.push(vec![Command::Create(one(&pod("p3"))), Command::Create(one(&pod("p3")))]);
    // Format 3's commands (the fixtures of earlier formats end above).
    // One entry (a second snapshot would otherwise be due); the undo is refused (the deployment
    // has no ReplicaSets) but is in the log all the same.
    out.push(vec![
        Command::Scale { key: ObjectKey::new(Kind::Deployment, "shop", "web"), replicas: 5 },
        Command::RolloutUndo { namespace: "shop".into(), name: "web".into(), to_revision: 0 },
    ]);
    out
}

fn objects(state: &State) -> Vec<Object> {
    Kind::ALL.iter().flat_map(|k| state.list(*k, None).cloned().collect::<Vec<_>>()).collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes tests/fixtures/format-vN for this build's format; run once per new format version"]
async fn write_format_fixture() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = SnapshotSettings { every_entries: 9, keep_entries: 0, ..SnapshotSettings::default() };
    let node =
        ControlPlane::builder(1, dir.path()).single_node().snapshots(settings).seed(1).start().await.expect("starts");
    eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
    let all = proposals();
    for p in &all[..CREATES] {
        node.propose(p.clone()).await.expect("proposed");
    }
    let mark = node.metrics().last_log_index;
    eventually("a snapshot", || (node.metrics().snapshot_index == mark).then_some(())).await;
    for p in &all[CREATES..] {
        let outcomes = node.propose(p.clone()).await.expect("proposed");
        assert!(outcomes.iter().all(Result::is_ok) || p.len() == 2, "{outcomes:?}");
    }
    assert_eq!(node.metrics().snapshot_index, mark, "one snapshot, the rest in the log");
    let state = node.state(Consistency::Linearizable).await.expect("state");
    node.shutdown().await.expect("shuts down");
    drop(node);
    let out = &fixture(orch_core::codec::FORMAT_VERSION);
    assert!(!out.exists(), "a fixture is never rewritten: {}", out.display());
    copy_dir(dir.path(), out);
    for f in ["log/LOG", "log/LOCK"] {
        let _ = std::fs::remove_file(out.join(f));
    }
    let expected = serde_json::to_string_pretty(&objects(&state)).expect("json");
    std::fs::write(out.join("expected.json"), expected).expect("write");
    std::fs::write(out.join("applied-index"), state.applied_index().to_string()).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarts_on_data_written_by_every_format_version() {
    for version in 1..=orch_core::codec::FORMAT_VERSION {
        restarts_on(version).await;
    }
}

async fn restarts_on(version: u8) {
    let dir = tempfile::tempdir().expect("temp dir");
    assert!(fixture(version).exists(), "no fixture for format {version}: write one with write_format_fixture");
    copy_dir(&fixture(version), dir.path());
    let node =
        ControlPlane::open(dir.path()).await.unwrap_or_else(|e| panic!("format {version}: opening the old data: {e}"));
    eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
    let state = node.state(Consistency::Linearizable).await.expect("state");
    let applied: u64 =
        std::fs::read_to_string(dir.path().join("applied-index")).expect("read").parse().expect("a number");
    assert_eq!(state.applied_index(), applied, "format {version}: the snapshot and the log after it replayed");
    let snapshot = node.metrics().snapshot_index;
    assert!(
        snapshot > 0 && snapshot + 7 <= applied,
        "format {version}: a snapshot at {snapshot}, entries after it up to {applied}"
    );
    let expected: Vec<Object> =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("expected.json")).expect("read"))
            .expect("parses");
    assert_eq!(objects(&state), expected, "format {version}");
    assert!(expected.len() >= 8, "the fixture holds every kind it was written with");
    // And it goes on writing.
    let more = parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: after}\n").expect("parses");
    let outcomes = node.propose(vec![Command::Create(more[0].clone())]).await.expect("proposed");
    assert!(outcomes[0].is_ok(), "format {version}: {outcomes:?}");
    node.shutdown().await.expect("shuts down");
}
