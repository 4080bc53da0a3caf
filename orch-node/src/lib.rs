//! orch-node: the node agent (like a kubelet).
//!
//! Not built yet (see the roadmap): registration and heartbeats, a watch of the committed
//! events for its node, pods run as real processes with probes, restarts and logs, status
//! written back, and a service proxy with DNS. This crate holds no code until then.
