//! orch-raft's integration tests: one binary, one module per area.

mod cluster;
mod mem_store;
mod rocks_store;
