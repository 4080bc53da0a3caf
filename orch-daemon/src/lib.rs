//! orch-daemon: `orchd`, the control-plane daemon, and `orchctl`, the command line.
//!
//! Not built yet (issue 4): the gRPC API with watch, leader-only loops, metrics and health
//! endpoints, flags and config, and the kubectl-like command line. This crate holds no code
//! until then.
