//! A snapshot stream from a peer is checked before openraft sees it: openraft treats an install
//! that fails as a storage error and stops the node, so bytes that are no valid state, and a
//! stream that breaks the protocol, are refused at the RPC and the node carries on.

use openraft::storage::SnapshotMeta;
use openraft::testing::log_id;
use openraft::{StoredMembership, alias::SnapshotMetaOf};
use orch_raft::TypeConfig;
use orch_raft::control_plane::ControlPlane;
use orch_raft::grpc::proto::{LeaderId, SnapshotChunk, SnapshotHeader, Vote, raft_client::RaftClient};

use crate::control_plane::{eventually, pod};

/// A stream from "node 2" in term 9 (newer than the node's), for a snapshot up to index 1000,
/// carrying `chunks` of data.
fn stream(chunks: &[&[u8]]) -> Vec<SnapshotChunk> {
    let meta: SnapshotMetaOf<TypeConfig> = SnapshotMeta {
        last_log_id: Some(log_id::<TypeConfig>(9, 2, 1000)),
        last_membership: StoredMembership::default(),
    };
    let header = SnapshotHeader {
        vote: Some(Vote { leader_id: Some(LeaderId { term: 9, node_id: 2 }), committed: true }),
        meta: orch_raft::codec::encode_snapshot_meta(&meta),
        total_bytes: chunks.iter().map(|c| c.len() as u64).sum(),
    };
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| SnapshotChunk { header: (i == 0).then(|| header.clone()), data: c.to_vec().into() })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_s_bad_snapshot_is_refused_and_the_node_carries_on() {
    let dir = tempfile::tempdir().expect("dir");
    let node = ControlPlane::builder(1, dir.path()).single_node().start().await.expect("starts");
    eventually("a leader", || (node.metrics().leader == Some(1)).then_some(())).await;
    assert!(node.propose(vec![pod("a")]).await.expect("writes")[0].is_ok());
    let term = node.metrics().term;
    let mut client = RaftClient::connect(format!("http://{}", node.address())).await.expect("connects");

    // Bytes that are no valid state, with a header that passes every check.
    let garbage = vec![7u8; 300_000];
    let err = client
        .install_snapshot(futures_util::stream::iter(stream(&[&garbage[..100_000], &garbage[100_000..]])))
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().starts_with("data: "), "{}", err.message());

    // An empty chunk after the first (a sender trickling nothing) is refused.
    let err = client.install_snapshot(futures_util::stream::iter(stream(&[b"abc", b""]))).await.expect_err("refused");
    assert_eq!(err.message(), "data: Required value in every chunk after the first");

    // The node still leads in its term, writes, and kept no received file.
    let metrics = node.metrics();
    assert_eq!((metrics.leader, metrics.term), (Some(1), term));
    assert!(node.propose(vec![pod("b")]).await.expect("writes")[0].is_ok());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .expect("lists")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    node.shutdown().await.expect("shuts down");
}
