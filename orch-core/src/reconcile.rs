//! What the pure reconcilers (the scheduler loop, the controllers) share with their owner.

use crate::command::{Command, Outcome};
use crate::object::ObjectKey;
use crate::state::State;

/// What became of a command a reconciler returned, as its owner tells it next round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Applied, with the state machine's outcome (which may be a refusal).
    Applied(Outcome),
    /// Never proposed (an earlier proposal of the round failed): not applied.
    NotProposed,
    /// Proposed, but no outcome is known: its entry may or may not commit.
    Unknown,
}

/// A pure reconciler (the scheduler loop, a controller): each round its owner gives it the
/// state, the time, whether to look at everything (`full`) or the keys changed since its last
/// round, and the fates of the commands it returned last round; it returns the commands to
/// propose.
pub trait Reconciler: Send + 'static {
    /// Its name, for logs, counters and inputs.
    const NAME: &'static str;

    /// One round.
    fn reconcile(
        &mut self,
        state: &State,
        now_ms: i64,
        full: bool,
        changed: &[ObjectKey],
        outcomes: &[(Command, Fate)],
    ) -> Vec<Command>;

    /// Whether work is left that the last round did not get to: its owner should run the next
    /// round at once.
    fn more(&self) -> bool {
        false
    }
}
