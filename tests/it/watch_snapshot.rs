//! A live watch on a follower that installs a snapshot: three `ControlPlane`s with RocksDB
//! and the gRPC transport on loopback, node 3 reached through a proxy that cuts it off while
//! the leader compacts its log past it. When node 3 comes back it installs a snapshot, and its
//! watch, which never saw the entries the snapshot covers, must end with `Expired` (relist),
//! not carry on as if nothing had been skipped.

use futures_util::StreamExt;
use orch_core::{Kind, WatchFilter};
use orch_raft::control_plane::{Consistency, Error, SnapshotSettings, WatchItem};

use crate::proxy::Mode;
use crate::{DEADLINE, eventually, pod, propose};

const SNAPSHOTS: SnapshotSettings = SnapshotSettings { every_entries: 20, keep_entries: 5, chunk_bytes: 4096 };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_installs_a_snapshot_under_a_live_watch_expires_it() {
    let dirs =
        [tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir")];
    let ([n1, n2, n3], proxy) = crate::proxied_cluster(&dirs, SNAPSHOTS).await;
    let mut target = 0;
    for i in 0..5 {
        target = propose(&[&n1], vec![pod(&format!("before-{i}"))]).await;
    }
    eventually("node 3 caught up", || (n3.metrics().applied_index >= target).then_some(())).await;

    // A watch on node 3, live and caught up.
    let pods = WatchFilter { kind: Some(Kind::Pod), ..WatchFilter::all() };
    let mut watch = n3.watch(0, pods.clone()).expect("watches");
    let Some(Ok(WatchItem::Progress { revision: watched })) = watch.next().await else { panic!("progress first") };
    assert!(watched >= target, "from now: {watched} >= {target}");

    // Node 3 is cut off; the others go on and compact their logs past it.
    proxy.set(Mode::Cut);
    let n3_last = n3.metrics().last_log_index;
    for i in 0..60 {
        propose(&[&n1], vec![pod(&format!("during-{i}"))]).await;
    }
    eventually("the leader's log compacted past node 3", || (n1.metrics().purged_index > n3_last).then_some(())).await;
    let snapshot_before = n3.metrics().snapshot_index;

    // Back: node 3 can only catch up by installing a snapshot.
    proxy.set(Mode::Forward);
    eventually("node 3 installed a snapshot", || (n3.metrics().snapshot_index > snapshot_before).then_some(())).await;

    // The watch saw nothing of the cut-off period, and must say so rather than skip it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let item = tokio::time::timeout_at(deadline, watch.next()).await.expect("the watch answers");
        match item {
            Some(Ok(WatchItem::Progress { revision })) => assert_eq!(revision, watched, "nothing was applied"),
            Some(Err(Error::Expired(e))) => {
                assert_eq!(e.requested, watched);
                assert!(e.horizon > watched, "{e}");
                break;
            }
            other => panic!("expected the watch to expire at the snapshot, got {other:?}"),
        }
    }
    assert!(watch.next().await.is_none(), "the expired stream ends");

    // Relist and watch again from the list's revision (node 3 may still be applying what
    // came after the snapshot): the watch goes on from there, up to a later change.
    let listed = n3.read(Consistency::Stale, |s| s.applied_index()).await.expect("reads");
    let mut again = n3.watch(listed, pods).expect("watches from the relist");
    let after = propose(&[&n1], vec![pod("after")]).await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, again.next()).await.expect("the event arrives") {
            Some(Ok(WatchItem::Events { revision, events })) => {
                assert!(revision > listed, "after the relist: {revision} > {listed}");
                if revision == after {
                    assert_eq!(events[0].object.meta().name.as_str(), "after");
                    break;
                }
            }
            Some(Ok(WatchItem::Progress { .. })) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    for n in [n1, n2, n3] {
        n.shutdown().await.expect("stops");
    }
}
