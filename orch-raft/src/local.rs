//! An in-process transport: Raft messages between nodes of one process go by direct calls.
//!
//! For tests of several nodes in one process, and the base of the deterministic simulator's
//! network. A node that is not registered (stopped, crashed, partitioned away) is reported
//! unreachable, so openraft backs off as it would from a dead peer.
//!
//! Optional seeded [`Faults`] make the network lossy and slow: each message and each reply is
//! lost with a given probability (the sender sees the peer unreachable), delivered after a
//! drawn latency (so messages overtake each other), and delivered a second time with a given
//! probability (the duplicate's reply is dropped). Links can be cut one way
//! ([`LocalRouter::cut`]): a message over a cut link is lost, and so is a reply, so a cut of
//! one direction is an asymmetric partition. The draws come from one seeded generator, so under
//! a single-threaded runtime with simulated time a run replays exactly. Each node sends through
//! its own handle ([`LocalRouter::for_node`]), which is how the router knows a message's link.

use std::collections::{BTreeMap, BTreeSet};
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
    /// Of every 1,000 messages delivered, how many are delivered a second time, later.
    pub duplicate_per_mille: u32,
}

/// SplitMix64: a small, fast, seedable generator; enough for fault draws.
#[derive(Debug, Default)]
struct SplitMix64(u64);

/// SplitMix64's output function: a well-spread 64-bit value from `x` (also how the control
/// plane derives its client id from its seed).
pub fn mix(x: u64) -> u64 {
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
    /// Each node with its registration number.
    nodes: BTreeMap<u64, (u64, RaftNode)>,
    registrations: u64,
    /// Links cut, as (from, to).
    cut: BTreeSet<(u64, u64)>,
    faults: Option<Faults>,
    rng: SplitMix64,
    /// Messages and replies delivered, lost, and duplicated.
    counts: Counts,
    tracer: Option<Tracer>,
}

/// Told of every message the router delivers: (from, to, which RPC). The simulator hashes
/// them into its trace.
pub type Tracer = Arc<dyn Fn(u64, u64, &'static str) + Send + Sync>;

/// What a [`LocalRouter`] has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages that reached their target.
    pub delivered: u64,
    /// Messages or replies lost (drawn, or over a cut link, or to a node not registered, or
    /// the reply of a node that crashed or restarted while it handled the call).
    pub lost: u64,
    /// Messages delivered a second time.
    pub duplicated: u64,
}

/// The fate of one message, drawn before it is sent.
struct Fate {
    lost: bool,
    reply_lost: bool,
    duplicate: Option<std::time::Duration>,
    latency: std::time::Duration,
}

/// Connects the nodes of one process. Clones share the routing table.
#[derive(Clone, Default)]
pub struct LocalRouter {
    routes: Arc<Mutex<Routes>>,
    /// The node sending through this handle (0: unknown, no link can cut it).
    from: u64,
    /// The registration the handle's node sends as ([`LocalRouter::for_node`]); its messages
    /// are lost once that registration is gone (the node crashed or stopped), even if a new
    /// one took its id. 0: any.
    registration: u64,
}

impl std::fmt::Debug for LocalRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRouter").field("from", &self.from).finish_non_exhaustive()
    }
}

impl LocalRouter {
    /// A router that loses, delays and duplicates messages as `faults` says.
    pub fn with_faults(faults: Faults) -> Self {
        let routes = Routes { faults: Some(faults), rng: SplitMix64(faults.seed), ..Routes::default() };
        Self { routes: Arc::new(Mutex::new(routes)), from: 0, registration: 0 }
    }

    /// The handle node `id` sends through (same routing table), for the node's next
    /// registration: register the node with [`LocalRouter::register_handle`]. Its messages
    /// are lost until then, and once the registration is gone.
    pub fn for_node(&self, id: u64) -> Self {
        let mut routes = lock(&self.routes);
        routes.registrations += 1;
        Self { routes: Arc::clone(&self.routes), from: id, registration: routes.registrations }
    }

    /// Makes `node` reachable as the node and registration of `handle` (from
    /// [`LocalRouter::for_node`]); returns the registration's number.
    ///
    /// # Panics
    /// As [`LocalRouter::register`].
    pub fn register_handle(&self, handle: &LocalRouter, node: RaftNode) -> u64 {
        let mut routes = lock(&self.routes);
        routes.nodes.insert(handle.from, (handle.registration, node));
        assert!(routes.nodes.len() <= ROUTER_NODES_MAX, "at most {ROUTER_NODES_MAX} nodes per router");
        handle.registration
    }

    /// Tells `tracer` of every message delivered from now on.
    pub fn set_tracer(&self, tracer: Tracer) {
        lock(&self.routes).tracer = Some(tracer);
    }

    /// Changes the faults from now on (None: none); the draws go on from the same generator.
    pub fn set_faults(&self, faults: Option<Faults>) {
        lock(&self.routes).faults = faults;
    }

    /// Makes `node` reachable as `id` (replacing an earlier registration); returns the
    /// registration's number, for [`LocalRouter::unregister_if`].
    ///
    /// # Panics
    /// When more than [`ROUTER_NODES_MAX`] nodes would be registered: a test set-up error.
    pub fn register(&self, id: u64, node: RaftNode) -> u64 {
        let mut routes = lock(&self.routes);
        routes.registrations += 1;
        let number = routes.registrations;
        routes.nodes.insert(id, (number, node));
        assert!(routes.nodes.len() <= ROUTER_NODES_MAX, "at most {ROUTER_NODES_MAX} nodes per router");
        number
    }

    /// Makes `id` unreachable (as if it crashed or was partitioned away).
    pub fn unregister(&self, id: u64) -> Option<RaftNode> {
        lock(&self.routes).nodes.remove(&id).map(|(_, node)| node)
    }

    /// Makes `id` unreachable if it is still the registration numbered `number` (a node
    /// stopping does not unregister the node that replaced it).
    pub fn unregister_if(&self, id: u64, number: u64) -> Option<RaftNode> {
        let mut routes = lock(&self.routes);
        if routes.nodes.get(&id).is_some_and(|(n, _)| *n == number) {
            return routes.nodes.remove(&id).map(|(_, node)| node);
        }
        None
    }

    /// Cuts the link from `from` to `to` (one way; cut both for a symmetric partition).
    pub fn cut(&self, from: u64, to: u64) {
        lock(&self.routes).cut.insert((from, to));
    }

    /// Restores the link from `from` to `to` (one way).
    pub fn mend(&self, from: u64, to: u64) {
        lock(&self.routes).cut.remove(&(from, to));
    }

    /// Restores every cut link.
    pub fn heal(&self) {
        lock(&self.routes).cut.clear();
    }

    /// The links cut now, as (from, to).
    pub fn cuts(&self) -> BTreeSet<(u64, u64)> {
        lock(&self.routes).cut.clone()
    }

    /// What the router has done so far.
    pub fn counts(&self) -> Counts {
        lock(&self.routes).counts
    }

    fn fate(&self) -> Fate {
        let mut routes = lock(&self.routes);
        let Some(faults) = routes.faults else {
            return Fate { lost: false, reply_lost: false, duplicate: None, latency: std::time::Duration::ZERO };
        };
        let rng = &mut routes.rng;
        let lost = rng.below(1000) < u64::from(faults.loss_per_mille);
        let reply_lost = rng.below(1000) < u64::from(faults.loss_per_mille);
        let (lo, hi) = faults.latency_ms;
        let latency =
            |rng: &mut SplitMix64| std::time::Duration::from_millis(lo + rng.below(hi.saturating_sub(lo) + 1));
        let first = latency(rng);
        let duplicated = rng.below(1000) < u64::from(faults.duplicate_per_mille);
        let again = latency(rng);
        let duplicate = duplicated.then_some(first + again);
        Fate { lost, reply_lost, duplicate, latency: first }
    }

    /// The node `target`, with its registration number, if a message from this handle's node
    /// reaches it now.
    fn reach(&self, target: u64, lost: bool, what: &'static str) -> Option<(u64, RaftNode)> {
        let mut routes = lock(&self.routes);
        let node = routes.nodes.get(&target).map(|(number, node)| (*number, node.clone()));
        let sender_alive =
            self.registration == 0 || routes.nodes.get(&self.from).is_some_and(|(n, _)| *n == self.registration);
        match node {
            Some(node) if sender_alive && !lost && !routes.cut.contains(&(self.from, target)) => {
                routes.counts.delivered += 1;
                if let Some(tracer) = &routes.tracer {
                    tracer(self.from, target, what);
                }
                Some(node)
            }
            _ => {
                routes.counts.lost += 1;
                None
            }
        }
    }

    /// Delivers one message to `target` through `call`, with the faults drawn for it; a
    /// duplicate goes through the same `call` later, and its reply is dropped.
    async fn deliver<T, E, F>(
        &self,
        target: u64,
        what: &'static str,
        call: impl Fn(RaftNode) -> F + Send + Sync + 'static,
    ) -> Result<T, Unreachable<C>>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: std::error::Error + 'static,
    {
        let fate = self.fate();
        let call = Arc::new(call);
        if let Some(after) = fate.duplicate {
            let (router, call) = (self.clone(), Arc::clone(&call));
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                // Delivered if the link lets it through then, to the node registered then.
                if let Some((_, node)) = router.reach(target, false, what) {
                    lock(&router.routes).counts.duplicated += 1;
                    let _ = call(node).await;
                }
            });
        }
        if !fate.latency.is_zero() {
            tokio::time::sleep(fate.latency).await;
        }
        let Some((number, node)) = self.reach(target, fate.lost, what) else {
            return Err(Unreachable::new(&NotRegistered(target)));
        };
        let reply = call(node).await.map_err(|e| Unreachable::new(&e))?;
        // A node that crashed (or restarted) while it handled the call sends no reply: what its
        // handler returned after that was never said by a live process.
        let replier_gone = |routes: &Routes| routes.nodes.get(&target).is_none_or(|(n, _)| *n != number);
        let dropped = {
            let routes = lock(&self.routes);
            fate.reply_lost || routes.cut.contains(&(target, self.from)) || replier_gone(&routes)
        };
        if dropped {
            lock(&self.routes).counts.lost += 1;
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
        let call = move |node: RaftNode| {
            let rpc = rpc.clone();
            async move { node.append_entries(rpc).await }
        };
        Ok(self.router.deliver(self.target, "append_entries", call).await?)
    }

    async fn vote(&mut self, rpc: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        let call = move |node: RaftNode| {
            let rpc = rpc.clone();
            async move { node.vote(rpc).await }
        };
        Ok(self.router.deliver(self.target, "vote", call).await?)
    }

    async fn pre_vote(&mut self, rpc: VoteRequest<C>, _option: RPCOption) -> Result<VoteResponse<C>, RPCError<C>> {
        let call = move |node: RaftNode| {
            let rpc = rpc.clone();
            async move { node.pre_vote(rpc).await }
        };
        Ok(self.router.deliver(self.target, "pre_vote", call).await?)
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<C>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<C>, RPCError<C>> {
        let call = move |node: RaftNode| {
            let req = req.clone();
            async move { node.handle_transfer_leader(req).await }
        };
        Ok(self.router.deliver(self.target, "transfer_leader", call).await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, crate::SnapshotBytes>,
        _cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let call = move |node: RaftNode| {
            let snapshot = snapshot.clone();
            async move { node.install_full_snapshot(vote, snapshot).await }
        };
        Ok(self.router.deliver(self.target, "full_snapshot", call).await?)
    }
}
