//! orch-daemon: `orchd`, the control-plane daemon. (`orchctl`, the command line, is the
//! package `orchctl` in `orch-api/orchctl`: a client only, with no storage engine linked in.)
//!
//! - [`server::Orchd`]: one running daemon: a [`orch_raft::ControlPlane`], the gRPC API
//!   ([`api`]), the HTTP endpoints `/metrics`, `/healthz`, `/readyz` ([`http`]) and the
//!   leader-only loops ([`loops`]).
//! - [`config`]: defaults, an optional TOML file, flags.
//!
//! Binaries use `anyhow`; this library returns typed errors.

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod http;
pub mod loops;
pub mod metrics;
pub mod server;
