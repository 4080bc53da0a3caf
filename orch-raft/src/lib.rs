//! orch-raft: replication of orch-core's state machine with openraft.
//!
//! Built so far (issue 3, in progress): the openraft type configuration whose entries are
//! `orch_core::Entry` batches ([`TypeConfig`]), and in-memory log and state-machine stores
//! ([`mem`]) that pass openraft's own storage conformance suite. Still to come: the RocksDB
//! stores with group commit, snapshot streaming, the tonic transport, the in-memory transport
//! and the embeddable `ControlPlane`.
//!
//! **Boundary:** openraft's types stay inside this crate's modules, so that a bump of the
//! openraft alpha stays local.

pub mod mem;
mod types;

pub use types::{Response, TypeConfig};
