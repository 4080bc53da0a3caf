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

/// What a reconciler is told besides the state, or tells another: an outside input its owner
/// hands it (a node agent's heartbeat, which is never written to the log), or a message it
/// sends another reconciler of the same owner ([`Reconciler::outbox`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// The agent of node `node` is alive: a heartbeat, for the node lifecycle controller
    /// ([`crate::nodelifecycle`]).
    Heartbeat {
        /// The node's name.
        node: String,
    },
}

/// A pure reconciler (the scheduler loop, a controller): each round its owner gives it the
/// state, the time, whether to look at everything (`full`) or the keys changed since its last
/// round, and the fates of the commands it returned last round; it returns the commands to
/// propose.
pub trait Reconciler: Send + 'static {
    /// Its name, for logs, counters and inputs.
    const NAME: &'static str;

    /// The kinds whose changes it reads in `changed`, or `None` for every kind. Its owner
    /// lists only keys of these kinds, so that writes of others (the events every controller
    /// writes, say) neither wake it nor fill the list a round takes (over which the round
    /// looks at everything), as a Kubernetes controller's informers watch only its kinds.
    const KINDS: Option<&'static [crate::object::Kind]> = None;

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

    /// When, by the clock of `now_ms`, the reconciler wants a round even if nothing changed
    /// (a deadline or a delay of its own: a progress deadline, `minReadySeconds`); its owner
    /// then runs an incremental round with no changed keys.
    fn wake_at_ms(&self) -> Option<i64> {
        None
    }
    /// Takes a message sent to it (its owner calls this before the round that follows, with
    /// that round's `now_ms`); ignored unless the reconciler expects messages.
    fn receive(&mut self, now_ms: i64, message: Message) {
        let _ = (now_ms, message);
    }
    /// The messages it sends other reconcilers, by their [`Reconciler::NAME`]: its owner takes
    /// them after each round and delivers them before the addressee's next round (dropped
    /// when no reconciler of that name has run under that owner, or too many inputs wait
    /// for it).
    fn outbox(&mut self) -> Vec<(&'static str, Message)> {
        Vec::new()
    }
    /// The events it reports (Kubernetes' `Scheduled`, `SuccessfulCreate`, ...), taken by its
    /// owner after each round and proposed as [`crate::events::commands`] beside the round's
    /// commands; the fates of those writes are not reported back.
    fn events(&mut self) -> Vec<crate::events::Record> {
        Vec::new()
    }
}

/// A state the reconcilers' tests drive round by round, as the framework would.
#[cfg(test)]
pub(crate) mod world {
    use super::{Fate, Reconciler};
    use crate::command::{Command, Entry, Outcome, Request};
    use crate::core_v1::Pod;
    use crate::ids::{ClientId, Uid};
    use crate::manifest::parse_manifests;
    use crate::object::{Kind, Object, ObjectKey};
    use crate::state::State;

    pub(crate) struct World {
        pub(crate) state: State,
        pub(crate) now_ms: i64,
        serial: u64,
    }

    impl World {
        /// An empty state (but for the `default` namespace).
        pub(crate) fn new() -> Self {
            let mut w = Self { state: State::new(), now_ms: 1_000, serial: 0 };
            w.apply(Vec::new());
            w
        }

        /// A state holding the objects of `yaml`.
        pub(crate) fn with(yaml: &str) -> Self {
            let mut w = Self::new();
            w.create(yaml);
            w
        }

        /// Applies `commands` in one entry, a second later; checks the state's invariants.
        pub(crate) fn apply(&mut self, commands: Vec<Command>) -> Vec<Outcome> {
            self.now_ms += 1_000;
            let index = self.state.applied_index() + 1;
            let requests = commands
                .into_iter()
                .map(|command| {
                    self.serial += 1;
                    Request { client: ClientId(9), serial: self.serial, acked_below: 0, retry: false, command }
                })
                .collect();
            let out = self.state.apply(index, Entry::new(self.now_ms, requests));
            self.state.check_invariants().expect("invariants hold");
            out.outcomes
        }

        /// Applies a round's commands as the framework would: their fates, and the keys they
        /// changed.
        pub(crate) fn run(&mut self, commands: Vec<Command>) -> (Vec<(Command, Fate)>, Vec<ObjectKey>) {
            let outcomes = self.apply(commands.clone());
            let changed =
                outcomes.iter().flat_map(|o| o.iter().flat_map(|s| s.changes.iter().map(|c| c.key.clone()))).collect();
            (commands.into_iter().zip(outcomes.into_iter().map(Fate::Applied)).collect(), changed)
        }

        /// Creates the objects of `yaml`, which must succeed; the keys it changed.
        pub(crate) fn create(&mut self, yaml: &str) -> Vec<ObjectKey> {
            let objects = parse_manifests(yaml).expect("valid");
            let (outcomes, changed) = self.run(objects.into_iter().map(Command::Create).collect());
            assert!(outcomes.iter().all(|(_, o)| matches!(o, Fate::Applied(Ok(_)))), "{outcomes:?}");
            changed
        }

        /// Pod `name` of the `default` namespace.
        pub(crate) fn pod(&self, name: &str) -> Pod {
            match self.state.get(&ObjectKey::new(Kind::Pod, "default", name)) {
                Some(Object::Pod(p)) => (**p).clone(),
                other => panic!("no pod {name}: {other:?}"),
            }
        }

        /// Every pod.
        pub(crate) fn pods(&self) -> Vec<Pod> {
            self.state.list(Kind::Pod, None).filter_map(|o| o.as_pod().cloned()).collect()
        }

        /// The uid of the object at (`kind`, `namespace`, `name`), which must exist.
        pub(crate) fn uid(&self, kind: Kind, namespace: &str, name: &str) -> Uid {
            self.state.get(&ObjectKey::new(kind, namespace, name)).and_then(|o| o.meta().uid).expect("exists")
        }

        /// Whether the object at (`kind`, `namespace`, `name`) exists.
        pub(crate) fn has(&self, kind: Kind, namespace: &str, name: &str) -> bool {
            self.state.get(&ObjectKey::new(kind, namespace, name)).is_some()
        }

        /// Runs rounds of `r` from the keys `changed` until it proposes nothing and has no
        /// work left; the rounds that proposed something.
        pub(crate) fn settle<R: Reconciler>(&mut self, r: &mut R, changed: Vec<ObjectKey>) -> usize {
            self.settle_with(r, changed, Vec::new())
        }

        /// Applies `commands`, a round of `r`, then settles `r` from what they did.
        pub(crate) fn settle_after<R: Reconciler>(&mut self, r: &mut R, commands: Vec<Command>) -> usize {
            let (outcomes, changed) = self.run(commands);
            self.settle_with(r, changed, outcomes)
        }

        fn settle_with<R: Reconciler>(
            &mut self,
            r: &mut R,
            mut changed: Vec<ObjectKey>,
            mut outcomes: Vec<(Command, Fate)>,
        ) -> usize {
            for round in 0..20 {
                let commands = r.reconcile(&self.state, self.now_ms, false, &changed, &outcomes);
                if commands.is_empty() && !r.more() {
                    return round;
                }
                (outcomes, changed) = self.run(commands);
            }
            panic!("{} did not settle", R::NAME);
        }
    }
}
