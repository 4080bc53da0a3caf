//! orch-core's integration tests: one binary (see the house style), one module per area.

mod apply;
mod fixtures;
mod props;
mod state_machine;
mod validation;
