//! orch-sim's own tests: a run replays from its seed, and a campaign of seeds with every fault
//! finds nothing wrong.

mod agents;
mod campaign;
mod controllers;
