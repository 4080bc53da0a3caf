//! orch-raft's integration tests: one binary, one module per area.

mod mem_store;
mod rocks_store;
