//! Cross-crate integration tests: manifests from `examples/` go through parsing, validation
//! and the state machine as a user's `apply` would; watches over the control plane and the
//! API, with connections cut, frozen and partitioned by a proxy.

mod proxy;
mod slow_link;
mod snapshot_transfer;
mod watch_api;
mod watch_snapshot;

use std::time::Duration;

use orch_core::{ClientId, Command, Entry, Kind, Request, State, parse_manifests};
use orch_raft::control_plane::{ControlPlane, Error};

/// How long a test waits for something that should happen.
const DEADLINE: Duration = Duration::from_secs(60);

/// A pod create.
fn pod(name: &str) -> Command {
    let manifest =
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{containers: [{{name: c, image: x}}]}}");
    Command::Create(parse_manifests(&manifest).expect("valid manifest").remove(0))
}

/// Three nodes on loopback, each with `dir` and `snapshots`; node 1 leads, and reaches node 3
/// only through the returned proxy.
async fn proxied_cluster(
    dirs: &[tempfile::TempDir; 3],
    snapshots: orch_raft::control_plane::SnapshotSettings,
) -> ([ControlPlane; 3], proxy::Proxy) {
    let node = |id: u64| {
        let builder = ControlPlane::builder(id, dirs[id as usize - 1].path())
            .progress_interval(Duration::from_millis(100))
            .snapshots(snapshots);
        let builder = if id == 1 { builder.single_node() } else { builder.join() };
        async move { builder.start().await.expect("starts") }
    };
    let n1 = node(1).await;
    eventually("node 1 leads", || (n1.metrics().leader == Some(1)).then_some(())).await;
    let n2 = node(2).await;
    let n3 = node(3).await;
    let proxy = proxy::Proxy::start(n3.address().parse().expect("address")).await;
    n1.add_member(2, n2.address()).await.expect("adds 2");
    n1.add_member(3, proxy.addr().to_string()).await.expect("adds 3");
    ([n1, n2, n3], proxy)
}

/// Polls `check` until it holds, or fails the test at the deadline.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Proposes through whichever of `nodes` leads; every outcome must be a success.
async fn propose(nodes: &[&ControlPlane], commands: Vec<Command>) -> u64 {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        for node in nodes {
            match node.propose(commands.clone()).await {
                Ok(outcomes) => {
                    let first = outcomes.first().map(|o| o.as_ref().map(|s| s.revision.0));
                    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
                    return first.and_then(Result::ok).unwrap_or(0);
                }
                Err(Error::NotLeader { .. } | Error::Raft(_)) => {}
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no node accepted the proposal");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn example_manifests_apply_cleanly() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("examples directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no example manifests found in {dir}");
    let mut state = State::new();
    for (i, path) in paths.iter().enumerate() {
        let text = std::fs::read_to_string(path).expect("readable manifest");
        let objects = parse_manifests(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let requests = objects
            .into_iter()
            .enumerate()
            .map(|(j, obj)| Request::new(ClientId(7), (i * 1000 + j + 1) as u64, Command::Create(obj)))
            .collect();
        let out = state.apply(i as u64 + 1, Entry::new(1_000, requests));
        for outcome in &out.outcomes {
            assert!(outcome.is_ok(), "{}: {outcome:?}", path.display());
        }
    }
    assert!(state.list(Kind::Deployment, None).next().is_some());
    state.check_invariants().expect("invariants hold");
}
