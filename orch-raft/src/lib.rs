//! orch-raft: replication of orch-core's state machine with openraft.
//!
//! Built so far (issue 3, in progress): the openraft type configuration whose entries are
//! `orch_core::Entry` batches ([`TypeConfig`]); in-memory log and state-machine stores
//! ([`mem`]); the RocksDB log store with group commit ([`rocks`]) and its on-disk encoding
//! ([`codec`]). Both log stores pass openraft's storage conformance suite. Still to come: a
//! durable state machine with snapshots on disk and their streaming, the tonic transport, the
//! in-memory transport and the embeddable `ControlPlane`.
//!
//! **Boundary:** openraft's types stay inside this crate's modules, so that a bump of the
//! openraft alpha stays local.

pub mod codec;
pub mod mem;
pub mod rocks;
mod types;

pub use types::{Response, TypeConfig};
