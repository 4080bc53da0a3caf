//! The checkers, one per file. Each reads a [`History`] and returns what it found wrong;
//! each has a test that feeds it a bad history and sees it fail.

pub mod at_most_once;
pub mod controllers;
pub mod linearizable;
pub mod liveness;
pub mod monotonic_reads;
pub mod raft;
pub mod state;
pub mod watches;

use std::fmt;

use crate::history::History;

/// Something a checker found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The checker.
    pub checker: &'static str,
    /// What broke.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.checker, self.what)
    }
}

/// A checker of a whole history: the simulation runs its own, and an embedding program adds
/// its own ([`crate::Simulation::checker`]).
pub trait Checker {
    /// Its name, in reports.
    fn name(&self) -> &'static str;
    /// What it found wrong.
    fn check(&self, history: &History) -> Vec<String>;
}

/// The checkers every run runs, with the liveness bound in simulated milliseconds.
pub fn standard(liveness_bound_ms: u64) -> Vec<Box<dyn Checker>> {
    vec![
        Box::new(raft::Raft),
        Box::new(state::StateDigests),
        Box::new(linearizable::Linearizable::default()),
        Box::new(at_most_once::AtMostOnce),
        Box::new(monotonic_reads::MonotonicReads),
        Box::new(watches::Watches),
        Box::new(liveness::Liveness { bound_ms: liveness_bound_ms }),
    ]
}

/// Runs `checkers` on `history`.
pub fn run(checkers: &[Box<dyn Checker>], history: &History) -> Vec<Violation> {
    let mut found = Vec::new();
    for checker in checkers {
        for what in checker.check(history) {
            found.push(Violation { checker: checker.name(), what });
        }
    }
    found
}

/// The first application of each index (the raft checker sees that every replica applied the
/// same entry there).
pub(crate) fn first_applications(history: &History) -> std::collections::BTreeMap<u64, &crate::history::Application> {
    let mut first = std::collections::BTreeMap::new();
    for a in &history.applications {
        first.entry(a.index).or_insert(a);
    }
    first
}
