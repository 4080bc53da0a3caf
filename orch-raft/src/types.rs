//! The openraft type configuration.
//!
//! openraft's runtime is tokio made replayable ([`Runtime`]): its random numbers (election
//! timeouts, tick jitter) come from a seed, which production draws from the operating system and
//! the simulator passes in. openraft spawns all its tasks while [`crate::start_raft`] holds the
//! seed in scope; every task derives its own seed from its parent.

use std::future::Future;

use orch_core::Outcome;

pub use crate::runtime::Runtime;

openraft::declare_raft_types!(
    /// openraft's type configuration for orch: a log entry's application data is one
    /// `orch_core::Entry` (a batch of requests), its response the outcome of each request.
    pub TypeConfig:
        D = orch_core::Entry,
        R = Response,
        AsyncRuntime = Runtime,
);

/// What applying one log entry answers: one outcome per request, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// The outcomes.
    pub outcomes: Vec<Outcome>,
}

/// Runs `future` with openraft's random numbers seeded by `seed`; tasks it spawns through
/// openraft inherit derived seeds.
pub fn with_seed<F: Future>(seed: u64, future: F) -> impl Future<Output = F::Output> {
    Runtime::scope(seed, future)
}
