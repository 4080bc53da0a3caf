//! orch-sim's own tests: a run replays from its seed, and a campaign of seeds with every fault
//! finds nothing wrong.

mod campaign;
mod controllers;
