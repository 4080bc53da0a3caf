//! An embedding program's own leader-only loop and checker on a simulated cluster:
//! `cargo run -p orch-sim --example custom_loop -- SEED`.
//!
//! The loop keeps a namespace `managed` in existence; the checker requires that no client
//! write stayed unknown for good. The run goes through every fault of the default mix; the
//! report says whether the standard checkers and this one passed, and the final state shows
//! the loop's work.
#![allow(clippy::print_stdout)]

use std::sync::Arc;

use orch_core::{Command, Kind, ObjectKey};
use orch_raft::leader::{LeaderLoop, LoopFactory, Round};
use orch_sim::history::{History, OpResult};
use orch_sim::{Checker, Config, Simulation};

/// Creates namespace `managed` whenever it is missing.
struct EnsureNamespace;

impl LeaderLoop for EnsureNamespace {
    fn name(&self) -> &'static str {
        "ensure-namespace"
    }

    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
        if round.state.get(&ObjectKey::new(Kind::Namespace, "", "managed")).is_some() {
            return Vec::new();
        }
        let manifest = "apiVersion: v1\nkind: Namespace\nmetadata: {name: managed}\n";
        orch_core::parse_manifests(manifest).map(|o| o.into_iter().map(Command::Create).collect()).unwrap_or_default()
    }
}

/// Counts the writes whose outcome stayed unknown.
struct FewUnknowns {
    at_most: usize,
}

impl Checker for FewUnknowns {
    fn name(&self) -> &'static str {
        "few-unknowns"
    }

    fn check(&self, history: &History) -> Vec<String> {
        let unknown = history.ops.iter().filter(|o| o.result == OpResult::Unknown).count();
        if unknown > self.at_most {
            vec![format!("{unknown} writes stayed unknown (at most {})", self.at_most)]
        } else {
            Vec::new()
        }
    }
}

fn main() {
    let seed = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let factory: LoopFactory = Arc::new(|| Box::new(EnsureNamespace) as Box<dyn LeaderLoop>);
    let report =
        Simulation::new(Config::new(seed)).leader_loop(factory).checker(Box::new(FewUnknowns { at_most: 20 })).run();
    print!("{report}");
    let managed = report.final_state.get(&ObjectKey::new(Kind::Namespace, "", "managed")).is_some();
    println!("namespace managed exists at the end: {managed}");
    if !report.violations.is_empty() || !managed {
        std::process::exit(1);
    }
}
