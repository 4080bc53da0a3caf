//! An in-process transport: Raft messages between nodes of one process go by direct calls.
//!
//! For tests of several nodes in one process, and the base of the deterministic simulator's
//! network. A node that is not registered (stopped, crashed, partitioned away) is reported
//! unreachable, so openraft backs off as it would from a dead peer.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, Raft};

use crate::lock;
use crate::{StateMachineStore, TypeConfig};

type C = TypeConfig;

/// A node handle, as the router holds it.
pub type RaftNode = Raft<C, StateMachineStore>;

/// The most nodes one router connects.
pub const ROUTER_NODES_MAX: usize = 64;

/// Why a peer could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("node {0} is not reachable on the local router")]
struct NotRegistered(u64);

/// Connects the nodes of one process. Clones share the routing table.
#[derive(Clone, Default)]
pub struct LocalRouter {
    nodes: Arc<Mutex<BTreeMap<u64, RaftNode>>>,
}

impl LocalRouter {
    /// Makes `node` reachable as `id` (replacing an earlier registration).
    ///
    /// # Panics
    /// When more than [`ROUTER_NODES_MAX`] nodes would be registered: a test set-up error.
    pub fn register(&self, id: u64, node: RaftNode) {
        let mut nodes = lock(&self.nodes);
        nodes.insert(id, node);
        assert!(nodes.len() <= ROUTER_NODES_MAX, "at most {ROUTER_NODES_MAX} nodes per router");
    }

    /// Makes `id` unreachable (as if it crashed or was partitioned away).
    pub fn unregister(&self, id: u64) -> Option<RaftNode> {
        lock(&self.nodes).remove(&id)
    }

    fn node(&self, id: u64) -> Result<RaftNode, Unreachable<C>> {
        lock(&self.nodes).get(&id).cloned().ok_or_else(|| Unreachable::new(&NotRegistered(id)))
    }
}

/// A connection to one peer through a [`LocalRouter`].
pub struct LocalConnection {
    router: LocalRouter,
    target: u64,
}

impl RaftNetworkFactory<C> for LocalRouter {
    type Network = LocalConnection;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Self::Network {
        LocalConnection { router: self.clone(), target }
    }
}

impl RaftNetworkV2<C> for LocalConnection {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let node = self.router.node(self.target)?;
        node.append_entries(rpc).await.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        let node = self.router.node(self.target)?;
        node.vote(rpc).await.map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Vec<u8>>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let node = self.router.node(self.target)?;
        node.install_full_snapshot(vote, snapshot).await.map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }
}
