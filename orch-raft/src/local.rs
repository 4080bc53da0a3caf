//! An in-process transport: Raft messages between nodes of one process go by direct calls.
//!
//! For tests of several nodes in one process, and the base of the deterministic simulator's
//! network. A node that is not registered (stopped, crashed, partitioned away) is reported
//! unreachable, so openraft backs off as it would from a dead peer.
//!
//! Optional seeded [`Faults`] make the network lossy and slow: each message and each reply is
//! lost with a given probability (the sender sees the peer unreachable) and delivered after a
//! drawn latency. The draws come from one seeded generator, so under a single-threaded runtime
//! with simulated time a run replays exactly.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use openraft::alias::{SnapshotOf, VoteOf};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};

use crate::lock;
use crate::{Member, RaftNode, TypeConfig};

type C = TypeConfig;

/// The most nodes one router connects.
pub const ROUTER_NODES_MAX: usize = 64;

/// Why a peer could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("node {0} is not reachable on the local router")]
struct NotRegistered(u64);

/// The faults a [`LocalRouter`] injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    /// The seed of the draws.
    pub seed: u64,
    /// Of every 1,000 messages (and, separately, replies), how many are lost.
    pub loss_per_mille: u32,
    /// The latency of a delivery, drawn uniformly from this range of milliseconds.
    pub latency_ms: (u64, u64),
}

/// SplitMix64: a small, fast, seedable generator; enough for fault draws.
#[derive(Debug)]
struct SplitMix64(u64);

/// SplitMix64's output function: a well-spread 64-bit value from `x` (also how the control
/// plane derives its client id from its seed).
pub(crate) fn mix(x: u64) -> u64 {
    let z = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

#[derive(Default)]
struct Routes {
    nodes: BTreeMap<u64, RaftNode>,
    faults: Option<(Faults, SplitMix64)>,
}

/// The fate of one message, drawn before it is sent.
struct Fate {
    lost: bool,
    reply_lost: bool,
    latency: std::time::Duration,
}

/// Connects the nodes of one process. Clones share the routing table.
#[derive(Clone, Default)]
pub struct LocalRouter {
    routes: Arc<Mutex<Routes>>,
}

impl LocalRouter {
    /// A router that loses and delays messages as `faults` says.
    pub fn with_faults(faults: Faults) -> Self {
        let routes = Routes { nodes: BTreeMap::new(), faults: Some((faults, SplitMix64(faults.seed))) };
        Self { routes: Arc::new(Mutex::new(routes)) }
    }

    /// Makes `node` reachable as `id` (replacing an earlier registration).
    ///
    /// # Panics
    /// When more than [`ROUTER_NODES_MAX`] nodes would be registered: a test set-up error.
    pub fn register(&self, id: u64, node: RaftNode) {
        let mut routes = lock(&self.routes);
        routes.nodes.insert(id, node);
        assert!(routes.nodes.len() <= ROUTER_NODES_MAX, "at most {ROUTER_NODES_MAX} nodes per router");
    }

    /// Makes `id` unreachable (as if it crashed or was partitioned away).
    pub fn unregister(&self, id: u64) -> Option<RaftNode> {
        lock(&self.routes).nodes.remove(&id)
    }

    fn fate(&self) -> Fate {
        let mut routes = lock(&self.routes);
        let Some((faults, rng)) = routes.faults.as_mut() else {
            return Fate { lost: false, reply_lost: false, latency: std::time::Duration::ZERO };
        };
        let lost = rng.below(1000) < u64::from(faults.loss_per_mille);
        let reply_lost = rng.below(1000) < u64::from(faults.loss_per_mille);
        let (lo, hi) = faults.latency_ms;
        let latency = std::time::Duration::from_millis(lo + rng.below(hi.saturating_sub(lo) + 1));
        Fate { lost, reply_lost, latency }
    }

    /// Delivers one message to `target` through `call`, with the faults drawn for it.
    async fn deliver<T, E, F>(&self, target: u64, call: impl FnOnce(RaftNode) -> F) -> Result<T, Unreachable<C>>
    where
        F: Future<Output = Result<T, E>>,
        E: std::error::Error + 'static,
    {
        let fate = self.fate();
        if !fate.latency.is_zero() {
            tokio::time::sleep(fate.latency).await;
        }
        let node = lock(&self.routes).nodes.get(&target).cloned();
        let node = match node {
            Some(node) if !fate.lost => node,
            _ => return Err(Unreachable::new(&NotRegistered(target))),
        };
        let reply = call(node).await.map_err(|e| Unreachable::new(&e))?;
        if fate.reply_lost {
            return Err(Unreachable::new(&NotRegistered(target)));
        }
        Ok(reply)
    }
}

/// A connection to one peer through a [`LocalRouter`].
pub struct LocalConnection {
    router: LocalRouter,
    target: u64,
}

impl RaftNetworkFactory<C> for LocalRouter {
    type Network = LocalConnection;

    async fn new_client(&mut self, target: u64, _node: &Member) -> Self::Network {
        LocalConnection { router: self.clone(), target }
    }
}

impl RaftNetworkV2<C> for LocalConnection {
    type SnapshotData = crate::SnapshotBytes;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        Ok(self.router.deliver(self.target, |node| async move { node.append_entries(rpc).await }).await?)
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        Ok(self.router.deliver(self.target, |node| async move { node.vote(rpc).await }).await?)
    }

    async fn pre_vote(&mut self, rpc: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        Ok(self.router.deliver(self.target, |node| async move { node.pre_vote(rpc).await }).await?)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        Ok(self.router.deliver(self.target, |node| async move { node.handle_transfer_leader(req).await }).await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, crate::SnapshotBytes>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let deliver = |node: RaftNode| async move { node.install_full_snapshot(vote, snapshot).await };
        Ok(self.router.deliver(self.target, deliver).await?)
    }
}
