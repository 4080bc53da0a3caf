//! The leader-only loops orch ships, as [`crate::leader`] runs them: orch-core's pure
//! reconcilers ([`orch_core::reconcile::Reconciler`]) behind one adapter, so that orchd and an
//! embedding program run the very same decisions (orch-sim adds them with
//! `Simulation::leader_loop`, as its `controllers` tests do).

use std::sync::Arc;

use orch_core::Command;
use orch_core::deployment::Deployments;
use orch_core::gc::Collector;
use orch_core::reconcile::{Fate, Message, Reconciler};
use orch_core::replicaset::ReplicaSets;
use orch_core::scheduling::Scheduler;

use crate::leader::{Input, LeaderLoop, LoopFactory, NOT_PROPOSED, Outgoing, Round};

/// The scheduler loop's name (for [`crate::leader::Loops::send`], logs and counters).
pub const SCHEDULER: &str = Scheduler::NAME;

/// The ReplicaSet controller's name.
pub const REPLICA_SETS: &str = ReplicaSets::NAME;

/// The Deployment controller's name.
pub const DEPLOYMENTS: &str = Deployments::NAME;

/// The garbage collector's name.
pub const GARBAGE_COLLECTOR: &str = Collector::NAME;

/// A pure reconciler as a leader loop.
pub struct Adapter<R>(pub R);

impl<R: Reconciler> LeaderLoop for Adapter<R> {
    fn name(&self) -> &'static str {
        R::NAME
    }

    fn kinds(&self) -> Option<&'static [orch_core::Kind]> {
        R::KINDS
    }

    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
        let fates: Vec<(Command, Fate)> = round
            .outcomes
            .iter()
            // The events this adapter added are not the reconciler's.
            .filter(|(command, _)| !orch_core::events::is_event_write(command))
            .map(|(command, outcome)| {
                let fate = match outcome {
                    Ok(outcome) => Fate::Applied(outcome.clone()),
                    Err(why) if why == NOT_PROPOSED => Fate::NotProposed,
                    Err(_) => Fate::Unknown,
                };
                (command.clone(), fate)
            })
            .collect();
        for input in round.inputs {
            // Inputs of another type are not for a reconciler.
            if let Ok(message) = input.downcast::<Message>() {
                self.0.receive(round.now_ms, *message);
            }
        }
        let mut commands = self.0.reconcile(round.state, round.now_ms, round.full, round.changed, &fates);
        let events = self.0.events();
        if !events.is_empty() {
            commands.extend(orch_core::events::commands(round.state, round.now_ms, events));
        }
        commands
    }

    fn outbox(&mut self) -> Vec<Outgoing> {
        let out = |(to, message): (&'static str, Message)| {
            // A node's heartbeat replaces the one still waiting for it.
            let key = match &message {
                Message::Heartbeat { node } => Some(node.clone()),
                _ => None,
            };
            Outgoing { to, key, input: Box::new(message) as Input }
        };
        self.0.outbox().into_iter().map(out).collect()
    }

    fn more(&self) -> bool {
        self.0.more()
    }

    fn wake_at_ms(&self) -> Option<i64> {
        self.0.wake_at_ms()
    }
}

/// Makes a fresh reconciler with `make` for each term.
pub fn factory<R: Reconciler>(make: impl Fn() -> R + Send + Sync + 'static) -> LoopFactory {
    Arc::new(move || Box::new(Adapter(make())))
}

/// Makes a fresh scheduler loop ([`orch_core::scheduling`]) with `settings` for each term.
pub fn scheduler(settings: orch_core::scheduling::Settings) -> LoopFactory {
    factory(move || Scheduler::new(settings.clone()))
}

/// Makes a fresh ReplicaSet controller ([`orch_core::replicaset`]) with `settings` for each
/// term.
pub fn replica_sets(settings: orch_core::replicaset::Settings) -> LoopFactory {
    factory(move || ReplicaSets::new(settings.clone()))
}

/// Makes a fresh garbage collector ([`orch_core::gc`]) with `settings` for each term.
pub fn garbage_collector(settings: orch_core::gc::Settings) -> LoopFactory {
    factory(move || Collector::new(settings.clone()))
}

/// Makes fresh simulated nodes ([`orch_core::simnodes`]) with `settings` for each term.
pub fn simulated_nodes(settings: orch_core::simnodes::Settings) -> LoopFactory {
    factory(move || orch_core::simnodes::SimulatedNodes::new(settings.clone()))
}

/// The node lifecycle controller's name: node agents' heartbeats go to it
/// ([`orch_core::reconcile::Message::Heartbeat`] through [`crate::leader::Loops::send`]).
pub const NODE_LIFECYCLE: &str = orch_core::nodelifecycle::NodeLifecycle::NAME;

/// Makes a fresh node lifecycle controller ([`orch_core::nodelifecycle`]) with `settings` for
/// each term.
pub fn node_lifecycle(settings: orch_core::nodelifecycle::Settings) -> LoopFactory {
    factory(move || orch_core::nodelifecycle::NodeLifecycle::new(settings.clone()))
}

/// Makes a fresh node IPAM controller ([`orch_core::nodeipam`]) with `settings` for each term.
pub fn node_ipam(settings: orch_core::nodeipam::Settings) -> LoopFactory {
    factory(move || orch_core::nodeipam::NodeIpam::new(settings))
}

/// Makes a fresh endpoints controller ([`orch_core::endpoints`]) for each term.
pub fn endpoints() -> LoopFactory {
    factory(orch_core::endpoints::EndpointsController::new)
}

/// Makes a fresh Deployment controller ([`orch_core::deployment`]) for each term.
pub fn deployments() -> LoopFactory {
    factory(Deployments::new)
}

/// The controllers orchd runs on the leader: the scheduler, the ReplicaSet, Deployment and
/// endpoints controllers (default settings), the garbage collector and the node lifecycle
/// controller with `gc` and `lifecycle` (orchd takes these from its flags; the benchmarks and
/// orch-sim's tests run the same set).
pub fn standard(gc: orch_core::gc::Settings, lifecycle: orch_core::nodelifecycle::Settings) -> Vec<LoopFactory> {
    vec![
        scheduler(orch_core::scheduling::Settings::default()),
        replica_sets(orch_core::replicaset::Settings::default()),
        deployments(),
        endpoints(),
        garbage_collector(gc),
        node_lifecycle(lifecycle),
    ]
}

#[cfg(test)]
mod tests {
    use orch_core::events::{EventType, Record};
    use orch_core::{Command, Kind, Object, ObjectKey, State};

    use super::*;

    /// Returns one command a round, reports one event, and keeps the fates it is given.
    #[derive(Default)]
    struct Reporter {
        fates: Vec<(Command, Fate)>,
    }

    fn scale() -> Command {
        Command::Scale { key: ObjectKey::new(Kind::Deployment, "default", "d"), replicas: 1 }
    }

    impl Reconciler for Reporter {
        const NAME: &'static str = "reporter";

        fn reconcile(
            &mut self,
            _state: &State,
            _now_ms: i64,
            _full: bool,
            _changed: &[ObjectKey],
            outcomes: &[(Command, Fate)],
        ) -> Vec<Command> {
            self.fates = outcomes.to_vec();
            vec![scale()]
        }

        fn events(&mut self) -> Vec<Record> {
            vec![Record {
                component: "reporter",
                kind: Kind::Namespace,
                namespace: String::new(),
                name: "default".into(),
                uid: None,
                type_: EventType::Normal,
                reason: "Seen",
                message: "seen".into(),
            }]
        }
    }

    /// The adapter proposes a reconciler's events after its commands and keeps their fates
    /// from it: the reconciler sees only its own commands' fates.
    #[test]
    fn events_are_proposed_after_the_round_and_their_fates_kept_from_it() {
        let state = State::new();
        let mut adapter = Adapter(Reporter::default());
        let round =
            |outcomes| Round { state: &state, now_ms: 1_000, full: true, changed: &[], outcomes, inputs: Vec::new() };
        let commands = adapter.reconcile(round(&[]));
        assert_eq!(commands.len(), 2, "{commands:?}");
        assert_eq!(commands[0], scale());
        assert!(matches!(&commands[1], Command::Create(Object::Event(e)) if e.reason.as_deref() == Some("Seen")));
        let outcomes: Vec<_> = commands.into_iter().map(|c| (c, Err("unknown".to_owned()))).collect();
        adapter.reconcile(round(&outcomes));
        assert_eq!(adapter.0.fates, [(scale(), Fate::Unknown)]);
    }
}
