//! orch-raft: orch-core's state machine replicated with openraft, stored in RocksDB, and the
//! embeddable [`ControlPlane`].
//!
//! The parts: the openraft type configuration whose entries are `orch_core::Entry` batches
//! ([`TypeConfig`]) and its replayable runtime ([`runtime`]); the state machine over orch-core
//! with snapshots on disk ([`StateMachineStore`]; their files, which sends read and receives
//! write chunk by chunk, in [`snapshot_file`]) and its feed of committed watch events ([`feed`]); the
//! RocksDB log store with group commit ([`rocks`], encoding in [`codec`]) and
//! the in-memory one ([`mem`]); the gRPC transport ([`grpc`]) and the in-process one with seeded
//! faults ([`local`]); and [`ControlPlane`], which puts them together.
//!
//! # A single node
//!
//! ```
//! use orch_raft::control_plane::{Consistency, ControlPlane};
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let cp = ControlPlane::open(dir.path()).await?;
//! let manifest = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}";
//! let commands = orch_core::parse_manifests(manifest)?.into_iter().map(orch_core::Command::Create).collect();
//! let outcomes = cp.propose(commands).await?;
//! assert!(outcomes[0].is_ok());
//! let namespaces = cp.read(Consistency::Linearizable, |s| s.list(orch_core::Kind::Namespace, None).count()).await?;
//! assert_eq!(namespaces, 2); // `default` and `shop`
//! cp.shutdown().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Three nodes
//!
//! ```
//! use orch_raft::control_plane::{Consistency, ControlPlane, Error};
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! let dirs = [tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?];
//! // Node 1 starts a cluster of one; nodes 2 and 3 wait to be added.
//! let n1 = ControlPlane::builder(1, dirs[0].path()).single_node().start().await?;
//! let n2 = ControlPlane::builder(2, dirs[1].path()).join().start().await?;
//! let n3 = ControlPlane::builder(3, dirs[2].path()).join().start().await?;
//! while n1.metrics().leader != Some(1) {
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//! }
//! n1.add_member(2, n2.address()).await?; // a learner that catches up, then a voter
//! n1.add_member(3, n3.address()).await?;
//! assert_eq!(n1.members().voters.len(), 3);
//! let manifest = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}";
//! let commands: Vec<_> = orch_core::parse_manifests(manifest)?.into_iter().map(orch_core::Command::Create).collect();
//! // Followers refuse writes and name the leader.
//! assert!(matches!(n2.propose(commands.clone()).await, Err(Error::NotLeader { leader: Some(1), .. })));
//! n1.propose(commands).await?;
//! for n in [&n1, &n2, &n3] {
//!     n.shutdown().await?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! **Boundary:** openraft's types stay inside this crate's modules, so that a bump of the
//! openraft alpha stays local.

pub mod clock;
pub mod codec;
pub mod control_plane;
pub mod controllers;
pub mod crash;
pub mod durable;
pub mod feed;
pub mod gate;
pub mod grpc;
mod holds;
pub mod leader;
pub mod local;
pub mod log_cache;
pub mod mem;
pub mod rocks;
pub mod runtime;
pub mod snapshot_file;
mod state_machine;
mod types;
mod watch;

use std::sync::Arc;

use openraft::Raft;
use openraft::errors::Fatal;
use openraft::network::{NetSnapshot, RaftNetworkFactory};
use openraft::storage::RaftLogStorage;

pub use control_plane::ControlPlane;
pub use durable::{DurableIndex, DurableLog, DurableWatch};
pub use holds::{LockHolds, LockSite};
pub use snapshot_file::{SnapshotBytes, SnapshotSink};
pub use state_machine::{AppliedEntry, AppliedPayload, ApplyHook, StateMachineStore};
pub use types::{Member, Response, Runtime, TypeConfig, with_seed};

/// A Raft node of orch.
pub type RaftNode = Raft<TypeConfig, StateMachineStore>;

/// Starts a Raft node whose random numbers (election timeouts, tick jitter) derive from `seed`.
///
/// # Errors
/// When openraft cannot start (its storage failed).
pub async fn start_raft<N, L>(
    id: u64,
    config: Arc<openraft::Config>,
    network: N,
    log: L,
    state_machine: StateMachineStore,
    seed: u64,
) -> Result<RaftNode, Fatal<TypeConfig>>
where
    N: RaftNetworkFactory<TypeConfig>,
    N::Network: NetSnapshot<TypeConfig, SnapshotData = SnapshotBytes>,
    L: RaftLogStorage<TypeConfig> + DurableLog,
{
    state_machine.follow_durable(log.durable_watch());
    with_seed(seed, Raft::new(id, config, network, log, state_machine)).await
}

/// A seed from the operating system's randomness, for production nodes.
pub fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// Locks a mutex shared by the stores and the router; a panic elsewhere while it was held
/// does not make the data unusable here.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
