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
        Node = Member,
        AsyncRuntime = Runtime,
);

/// A member of the cluster as the membership records it: where peers reach its Raft
/// transport, and where clients reach its API (empty for a library that serves none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Member {
    /// The Raft transport's address (`host:port`).
    pub addr: String,
    /// The client API's address (`host:port`), or empty.
    pub api_addr: String,
}

impl Member {
    /// A member at Raft address `addr` serving its API at `api_addr`.
    pub fn new(addr: impl Into<String>, api_addr: impl Into<String>) -> Self {
        Self { addr: addr.into(), api_addr: api_addr.into() }
    }
}

impl From<String> for Member {
    /// A member known only by its Raft address.
    fn from(addr: String) -> Self {
        Self { addr, api_addr: String::new() }
    }
}

impl From<&str> for Member {
    /// A member known only by its Raft address.
    fn from(addr: &str) -> Self {
        Self::from(addr.to_owned())
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.api_addr.is_empty() {
            write!(f, "raft {}", self.addr)
        } else {
            write!(f, "raft {} api {}", self.addr, self.api_addr)
        }
    }
}

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
