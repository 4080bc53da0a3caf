//! orch-daemon: `orchd`, the control-plane daemon, and `orchctl`, the command line.
//!
//! - [`server::Orchd`]: one running daemon: a [`orch_raft::ControlPlane`], the gRPC API
//!   ([`api`]), the HTTP endpoints `/metrics`, `/healthz`, `/readyz` ([`http`]) and the
//!   leader-only loops ([`loops`]).
//! - [`config`]: defaults, an optional TOML file, flags.
//! - [`ctl`]: `orchctl`'s commands, on [`orch_api::Client`].
//!
//! Binaries use `anyhow`; this library returns typed errors.

#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod ctl;
pub mod http;
pub mod loops;
pub mod metrics;
pub mod server;
