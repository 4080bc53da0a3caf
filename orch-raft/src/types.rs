//! The openraft type configuration.

use orch_core::Outcome;

openraft::declare_raft_types!(
    /// openraft's type configuration for orch: a log entry's application data is one
    /// `orch_core::Entry` (a batch of requests), its response the outcome of each request.
    pub TypeConfig:
        D = orch_core::Entry,
        R = Response,
);

/// What applying one log entry answers: one outcome per request, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    /// The outcomes.
    pub outcomes: Vec<Outcome>,
}
