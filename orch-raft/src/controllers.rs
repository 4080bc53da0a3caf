//! The leader-only loops orch ships, as [`crate::leader`] runs them: thin adapters around the
//! pure reconcilers of orch-core, so that orchd, an embedding program and the simulator run
//! the very same decisions.

use std::sync::Arc;

use orch_core::scheduling::{Scheduler, Settings};
use orch_core::{Command, Outcome};

use crate::leader::{LeaderLoop, LoopFactory, Round};

/// The scheduler loop's name (for [`crate::leader::Loops::send`], logs and counters).
pub const SCHEDULER: &str = "scheduler";

/// The scheduler ([`orch_core::scheduling`]) as a leader loop.
pub struct SchedulerLoop(Scheduler);

impl LeaderLoop for SchedulerLoop {
    fn name(&self) -> &'static str {
        SCHEDULER
    }

    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
        // An outcome the framework could not learn is `None`: the scheduler keeps expecting it.
        let outcomes: Vec<(Command, Option<Outcome>)> =
            round.outcomes.iter().map(|(command, outcome)| (command.clone(), outcome.as_ref().ok().cloned())).collect();
        self.0.reconcile(round.state, round.now_ms, round.full, round.changed, &outcomes)
    }

    fn more(&self) -> bool {
        self.0.more()
    }
}

/// Makes a fresh scheduler loop with `settings` for each term.
pub fn scheduler(settings: Settings) -> LoopFactory {
    Arc::new(move || Box::new(SchedulerLoop(Scheduler::new(settings.clone()))))
}
