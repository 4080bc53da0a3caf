//! orch-raft: replication of orch-core's state machine with openraft.
//!
//! Built so far (issue 3, in progress), the storage layer: the openraft type configuration
//! whose entries are `orch_core::Entry` batches ([`TypeConfig`]); the state machine over
//! orch-core with snapshots kept on disk or in memory ([`StateMachineStore`]); the in-memory
//! log store ([`mem`]); the RocksDB log store with group commit ([`rocks`]) and its on-disk
//! encoding ([`codec`]). All pass openraft's storage conformance suite. An in-process transport
//! ([`local`]) runs several nodes in one process. Still to come: snapshot streaming in chunks,
//! the tonic transport, the deterministic simulation test, and the embeddable `ControlPlane`.
//!
//! **Boundary:** openraft's types stay inside this crate's modules, so that a bump of the
//! openraft alpha stays local.

pub mod codec;
pub mod local;
pub mod mem;
pub mod rocks;
mod state_machine;
mod types;

pub use state_machine::StateMachineStore;
pub use types::{Response, TypeConfig};

/// Locks a mutex shared by the stores and the router; a panic elsewhere while it was held
/// does not make the data unusable here.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
