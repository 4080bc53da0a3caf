//! Leader-only loops: orch-raft's framework ([`orch_raft::leader`]), which orchd, embedding
//! programs and the simulator share; orchd logs what the loops do and counts it in `/metrics`
//! ([`LoopCounters`]).

pub use orch_raft::leader::{
    Input, InputError, LOOP_EVENTS_PER_ROUND_MAX, LOOP_INPUTS_PENDING_MAX, LOOP_RESTART_DELAY, LeaderLoop, LoopEvents,
    LoopFactory, Loops, NoEvents, PROPOSAL_ATTEMPTS, Round,
};

pub use crate::metrics::LoopCounters;

impl LoopEvents for LoopCounters {
    fn restarted(&self, name: &'static str) {
        tracing::error!(name, "leader loop stopped; starting it again");
        LoopCounters::restarted(self, name);
    }

    fn rejected(&self, name: &'static str, error: &orch_core::ApplyError) {
        tracing::warn!(name, %error, "leader loop: a command was refused");
        LoopCounters::rejected(self, name);
    }

    fn failed(&self, name: &'static str, error: &orch_raft::control_plane::Error) {
        tracing::warn!(name, %error, "leader loop: proposal failed; the next round learns it");
        LoopCounters::failed(self, name);
    }

    fn full_round(&self, name: &'static str, why: orch_raft::leader::FullRound) {
        LoopCounters::full_round(self, name, why);
    }
}
