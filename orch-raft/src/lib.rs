//! orch-raft: replication of orch-core's state machine with openraft, stored in RocksDB.
//!
//! Not built yet (issue 3): the openraft type config whose entries are
//! `orch_core::Entry` batches, the RocksDB log and state-machine stores with group commit,
//! snapshots, the tonic transport, in-memory stores and transport for simulation, and the
//! embeddable `ControlPlane` handle. This crate holds no code until then, so nothing can
//! mistake a placeholder for the real part.
