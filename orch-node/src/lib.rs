//! orch-node: the node agent (like a kubelet plus its container runtime).
//!
//! The agent's decisions are the pure core of [`orch_core::agent`]; this crate is its
//! adapters: the agent loop ([`agent`]: registration, heartbeats, the pod watch, status,
//! events), the runtime seam ([`runtime`]) and its default, the process runtime
//! ([`process`]: a shim per pod ([`shim`]) owning each container's processes, started through
//! [`exec`], with limits through [`cgroups`]), and the prober ([`prober`]).
//!
//! A binary that embeds the agent calls [`run_helpers_if_called`] first thing in `main`: the
//! shims and exec helpers are that same binary, started with a hidden first argument.
//!
//! Pod networks are [`network`] (CNI); the agent's endpoint for logs and exec is [`server`];
//! [`embed`] runs an agent for a binary (`orch-node`, and `orchd --dev`); a pod's volumes
//! (emptyDir, ConfigMap, Secret) are [`volumes`].

pub mod agent;
pub mod cgroups;
pub mod embed;
pub mod exec;
pub mod host;
pub mod network;
pub mod prober;
pub mod process;
pub mod runtime;
pub mod server;
pub mod shim;
pub mod volumes;

/// Runs as a pod's shim or a container's exec helper if the process was started as one (and
/// exits); returns otherwise. Call it first thing in `main` of a binary that runs the agent.
pub fn run_helpers_if_called() {
    shim::run_if_called();
    exec::run_if_called();
}
