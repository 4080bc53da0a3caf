//! A snapshot reaches a follower over a slow link: three `ControlPlane`s on loopback, node 3
//! reached through a proxy that paces the leader's bytes to 2 MB/s. A 2.6 MB snapshot takes
//! 1.3 s to cross, more than openraft's `install_snapshot_timeout` (200 ms), which used to be
//! the stream's whole deadline: it was cut and resent from the start, forever. After it, the
//! appends of the entries the snapshot does not cover (up to 20 pods, 400 KB) can take longer
//! than the heartbeat interval (100 ms), which used to be an append's whole deadline. With the
//! snapshot's old deadline put back this test times out; with the append's, it did in the runs
//! made (how many entries the last snapshot leaves uncovered varies). On the way, the test
//! freezes the link part way through the snapshot and finds the part received in a file on node
//! 3, not in memory.

use orch_core::{Command, parse_manifests};
use orch_raft::control_plane::{Consistency, SnapshotSettings};

use crate::proxy::Mode;
use crate::{eventually, propose};

const SNAPSHOTS: SnapshotSettings = SnapshotSettings { every_entries: 20, keep_entries: 5, chunk_bytes: 64 * 1024 };

fn big_pod(name: &str) -> Command {
    let blob = "v".repeat(20_000);
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{blob: {blob}}}}}\nspec: {{containers: [{{name: c, image: x}}]}}"
    );
    Command::Create(parse_manifests(&manifest).expect("valid manifest").remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_slower_than_the_install_timeout_reaches_a_follower() {
    let dirs =
        [tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir")];
    let ([n1, n2, n3], proxy) = crate::proxied_cluster(&dirs, SNAPSHOTS).await;

    // Node 3 is cut off while 150 pods of 20 KB (3 MB) are written and the log compacted.
    proxy.set(Mode::Cut);
    let n3_last = n3.metrics().last_log_index;
    let mut target = 0;
    for i in 0..150 {
        target = propose(&[&n1], vec![big_pod(&format!("p{i}"))]).await;
    }
    eventually("the leader's log compacted past node 3", || (n1.metrics().purged_index > n3_last).then_some(())).await;

    // Back over a 2 MB/s link: the snapshot takes 1.5 s to cross. Node 3 receives it into a file
    // as the bytes arrive: frozen part way, the link leaves part of it in a temporary file of
    // node 3's snapshot directory, not yet installed (received into memory, nothing would be on
    // disk before the last byte).
    let leader_snapshot = std::fs::metadata(dirs[0].path().join("state/snapshot.bin")).expect("leader's").len();
    let n3_state = dirs[2].path().join("state");
    let partial = || {
        std::fs::read_dir(&n3_state).ok()?.filter_map(Result::ok).find_map(|e| {
            let len = e.metadata().ok()?.len();
            (e.file_name().to_string_lossy().ends_with(".tmp") && len >= 256 << 10).then_some(len)
        })
    };
    proxy.set(Mode::Throttle(2_000_000));
    eventually("part of the snapshot in a file on node 3", partial).await;
    proxy.set(Mode::Freeze);
    let held = partial().expect("a partial snapshot stays while the link is frozen");
    assert!(held < leader_snapshot, "{held} of {leader_snapshot} bytes");
    assert!(n3.metrics().applied_index < target, "not installed yet");
    proxy.set(Mode::Throttle(2_000_000));
    eventually("node 3 installed the snapshot and caught up", || (n3.metrics().applied_index >= target).then_some(()))
        .await;
    // Only the installed snapshot is left (a snapshot build's own temporary file comes and goes).
    let only_snapshot = || {
        let files: Vec<String> = std::fs::read_dir(&n3_state)
            .ok()?
            .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
            .collect();
        (files == ["snapshot.bin"]).then_some(())
    };
    eventually("only the installed snapshot on node 3", only_snapshot).await;
    let pods = n3.read(Consistency::Stale, |s| s.len()).await.expect("reads");
    assert!(pods >= 150, "node 3 holds the state: {pods} objects");
    drop(proxy);
    for n in [n1, n2, n3] {
        n.shutdown().await.expect("shuts down");
    }
}
