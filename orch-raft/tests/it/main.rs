//! orch-raft's integration tests: one binary, one module per area.

mod cluster;
mod control_plane;
mod crash;
mod formats;
mod leader;
mod limits;
mod local;
mod mem_store;
mod membership;
mod rocks_store;
mod scheduling;
mod sim;
mod snapshot_receive;

/// openraft's settings for in-process clusters: openraft's default timing (50 ms heartbeats,
/// 150-300 ms election timeouts).
fn fast_raft_config() -> std::sync::Arc<openraft::Config> {
    let config = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..openraft::Config::default()
    };
    std::sync::Arc::new(config.validate().expect("valid raft config"))
}
