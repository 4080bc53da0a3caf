//! A pod's shim (like containerd-shim or conmon): a small process per pod, started by the
//! agent as `<agent binary> __orch-shim <pod dir>` in a process group of its own, that owns the
//! pod's container processes and outlives the agent. It
//! - starts each run through [`crate::exec`] in a process group of its own, its output copied
//!   to size-bounded, rotated log files;
//! - is the subreaper of everything its runs start, and reaps it all, recording each run's
//!   exit code (and whether its memory cgroup counted an OOM kill);
//! - signals and kills runs (their process groups and their cgroups);
//! - answers on `<pod dir>/shim.sock` ([`proto`]); a restarted agent reconnects there and
//!   finds every run and exit as they are.

pub mod proto;
mod server;

pub use server::{ARG, run_if_called};

/// The name of a shim's socket in its pod directory.
pub const SOCKET: &str = "shim.sock";
