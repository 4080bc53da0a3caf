//! The leader-only loop framework's rounds: a full first round, then the keys that changed, the
//! outcomes of the loop's last commands, outside inputs (which wake it), and the node's clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use orch_core::Command;
use orch_raft::ControlPlane;
use orch_raft::leader::{FullRound, InputError, LeaderLoop, LoopFactory, Loops, NoEvents, Round};

use crate::control_plane::eventually;

/// What one round showed, in short.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    full: bool,
    changed: Vec<String>,
    outcomes: Vec<String>,
    inputs: Vec<u32>,
    now_ms: i64,
}

/// Records its rounds; on an input of 7 it proposes creating the namespace `default`, which
/// exists (so the next round sees the refusal).
struct Recorder {
    rounds: Arc<Mutex<Vec<Seen>>>,
}

impl LeaderLoop for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
        let inputs: Vec<u32> = round.inputs.into_iter().filter_map(|i| i.downcast::<u32>().ok()).map(|b| *b).collect();
        let seen = Seen {
            full: round.full,
            changed: round.changed.iter().map(|k| k.name.to_string()).collect(),
            outcomes: round
                .outcomes
                .iter()
                .map(|(_, o)| match o {
                    Ok(Ok(_)) => "ok".to_owned(),
                    Ok(Err(e)) => format!("refused: {e}"),
                    Err(why) => format!("unknown: {why}"),
                })
                .collect(),
            inputs: inputs.clone(),
            now_ms: round.now_ms,
        };
        self.rounds.lock().expect("lock").push(seen);
        if inputs.contains(&7) {
            let ns = orch_core::parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: default}\n")
                .expect("valid");
            return ns.into_iter().map(Command::Create).collect();
        }
        Vec::new()
    }
}

#[derive(Debug)]
struct Fixed;

impl orch_raft::clock::Clock for Fixed {
    fn now_ms(&self) -> i64 {
        1_234_567
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_shows_the_changed_keys_the_last_outcomes_the_inputs_and_the_node_s_clock() {
    let dir = tempfile::tempdir().expect("dir");
    let cp = ControlPlane::builder(1, dir.path()).single_node().clock(Arc::new(Fixed)).start().await.expect("starts");
    let rounds = Arc::new(Mutex::new(Vec::new()));
    let factory: LoopFactory = {
        let rounds = Arc::clone(&rounds);
        Arc::new(move || Box::new(Recorder { rounds: Arc::clone(&rounds) }) as Box<dyn LeaderLoop>)
    };
    let loops = Loops::spawn(cp.clone(), vec![factory], Duration::from_secs(600), Arc::new(NoEvents));
    let find = |f: &dyn Fn(&Seen) -> bool| rounds.lock().expect("lock").iter().find(|r| f(r)).cloned();
    let first = eventually("the first round", || find(&|_| true)).await;
    assert!(first.full, "the first round looks at everything: {first:?}");
    // The node's clock when the term's loops started, advanced by the monotonic clock since.
    assert!((1_234_567..1_234_567 + 60_000).contains(&first.now_ms), "the node's clock, not the system's: {first:?}");

    // A write, then a second write of the same key: a later round lists the key (a full
    // round lists none, so this is an incremental round), and once however often it changed.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: x}]}";
    let commands = orch_core::parse_manifests(pod).expect("valid").into_iter().map(Command::Create).collect();
    cp.propose(commands).await.expect("writes");
    let written = eventually("a round for the write", || find(&|r| r.changed.contains(&"p".to_owned()))).await;
    assert_eq!(written.changed.iter().filter(|k| *k == "p").count(), 1, "{written:?}");

    // An input wakes the loop; its command is refused, and the round after says so.
    loops.send("recorder", Box::new(7_u32)).expect("a loop of that name");
    assert_eq!(loops.send("nobody", Box::new(1_u32)), Err(InputError::NoSuchLoop("nobody".to_owned())));
    let woken = eventually("a round for the input", || find(&|r| r.inputs == [7])).await;
    assert!(woken.outcomes.is_empty(), "{woken:?}");
    loops.send("recorder", Box::new(8_u32)).expect("sent");
    let after = eventually("the round after", || find(&|r| r.inputs == [8])).await;
    assert_eq!(after.outcomes.len(), 1, "{after:?}");
    assert!(after.outcomes[0].starts_with("refused: "), "{after:?}");
    loops.stop().await;
    cp.shutdown().await.expect("stops");
}

/// Inputs wait in a bounded queue per loop: one more than the limit is refused, and nothing
/// sent to a loop that never ran is kept; an input sent under a key replaces the one waiting
/// under it.
#[tokio::test(flavor = "current_thread")]
async fn inputs_beyond_the_limit_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let cp = ControlPlane::builder(1, dir.path()).single_node().start().await.expect("starts");
    let rounds = Arc::new(Mutex::new(Vec::new()));
    let factory: LoopFactory = {
        let rounds = Arc::clone(&rounds);
        Arc::new(move || Box::new(Recorder { rounds: Arc::clone(&rounds) }) as Box<dyn LeaderLoop>)
    };
    let loops = Loops::spawn(cp.clone(), vec![factory], Duration::from_secs(600), Arc::new(NoEvents));
    assert_eq!(loops.send("recorder", Box::new(1_u32)), Err(InputError::NoSuchLoop("recorder".to_owned())));
    eventually("the first round", || rounds.lock().expect("lock").first().cloned()).await;
    // One thread, and no await between the sends: the loop cannot take any of them meanwhile.
    for i in 0..orch_raft::leader::LOOP_INPUTS_PENDING_MAX {
        loops.send("recorder", Box::new(u32::try_from(i).expect("small"))).expect("room for it");
    }
    assert_eq!(loops.send("recorder", Box::new(0_u32)), Err(InputError::Full("recorder")));
    let taken = eventually("a round with the inputs", || {
        rounds.lock().expect("lock").iter().find(|r| !r.inputs.is_empty()).map(|r| r.inputs.len())
    })
    .await;
    assert_eq!(taken, orch_raft::leader::LOOP_INPUTS_PENDING_MAX, "every input, in one round");
    loops.send("recorder", Box::new(0_u32)).expect("room again once the loop took them");
    eventually("the round with it", || rounds.lock().expect("lock").last().filter(|r| r.inputs == [0]).map(|_| ()))
        .await;
    // Under one key, the latest waiting input replaces the one before (no await between the
    // sends: the loop cannot take the first).
    let sender = loops.sender();
    sender.send_latest("recorder", "k", Box::new(4_u32)).expect("sent");
    sender.send_latest("recorder", "k", Box::new(5_u32)).expect("replaces 4");
    let latest = eventually("a round with the latest", || {
        rounds
            .lock()
            .expect("lock")
            .last()
            .filter(|r| !r.inputs.is_empty() && r.inputs != [0])
            .map(|r| r.inputs.clone())
    })
    .await;
    assert_eq!(latest, [5]);
    loops.stop().await;
    cp.shutdown().await.expect("stops");
}

/// Says it has more work for its first five rounds, and proposes nothing.
struct Eager {
    rounds: Arc<std::sync::atomic::AtomicUsize>,
}

impl LeaderLoop for Eager {
    fn name(&self) -> &'static str {
        "eager"
    }

    fn reconcile(&mut self, _round: Round<'_>) -> Vec<Command> {
        self.rounds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Vec::new()
    }

    fn more(&self) -> bool {
        self.rounds.load(std::sync::atomic::Ordering::SeqCst) < 5
    }
}

/// A loop with work left gets its next round at once, though nothing changed and the resync
/// is an hour away; once it has none, it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_with_work_left_gets_the_next_round_at_once() {
    let dir = tempfile::tempdir().expect("dir");
    let cp = ControlPlane::builder(1, dir.path()).single_node().start().await.expect("starts");
    let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let factory: LoopFactory = {
        let rounds = Arc::clone(&rounds);
        Arc::new(move || Box::new(Eager { rounds: Arc::clone(&rounds) }) as Box<dyn LeaderLoop>)
    };
    let loops = Loops::spawn(cp.clone(), vec![factory], Duration::from_secs(3600), Arc::new(NoEvents));
    let count = || rounds.load(std::sync::atomic::Ordering::SeqCst);
    eventually("five rounds", || (count() >= 5).then_some(())).await;
    // A write wakes it once more; nothing else does.
    let ns = orch_core::parse_manifests("apiVersion: v1\nkind: Namespace\nmetadata: {name: more}\n").expect("valid");
    cp.propose(ns.into_iter().map(Command::Create).collect()).await.expect("writes");
    eventually("the round for the write", || (count() == 6).then_some(())).await;
    loops.stop().await;
    assert_eq!(count(), 6, "no round without work or a change");
    cp.shutdown().await.expect("stops");
}

/// Counts its full rounds.
struct Fulls {
    fulls: Arc<std::sync::atomic::AtomicUsize>,
}

impl LeaderLoop for Fulls {
    fn name(&self) -> &'static str {
        "fulls"
    }

    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
        if round.full {
            self.fulls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        Vec::new()
    }
}

/// The resync is periodic: changes that keep waking a loop do not put it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_loop_is_still_resynced() {
    let dir = tempfile::tempdir().expect("dir");
    let cp = ControlPlane::builder(1, dir.path()).single_node().start().await.expect("starts");
    let fulls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let factory: LoopFactory = {
        let fulls = Arc::clone(&fulls);
        Arc::new(move || Box::new(Fulls { fulls: Arc::clone(&fulls) }) as Box<dyn LeaderLoop>)
    };
    let reasons = Arc::new(Reasons::default());
    let loops = Loops::spawn(cp.clone(), vec![factory], Duration::from_millis(300), reasons.clone());
    let count = || fulls.load(std::sync::atomic::Ordering::SeqCst);
    eventually("the first round", || (count() >= 1).then_some(())).await;
    // A write every 20 ms, far more often than the resync: a second full round comes anyway.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    while count() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "no resync while changes kept coming");
        let ns = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: busy-{i}}}\n");
        let ns = orch_core::parse_manifests(&ns).expect("valid");
        cp.propose(ns.into_iter().map(Command::Create).collect()).await.expect("writes");
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    loops.stop().await;
    // Each full round was reported, with its reason: the start, then resyncs.
    let seen = reasons.0.lock().expect("lock").clone();
    assert!(seen.len() >= 3 && seen[0] == FullRound::Start, "{seen:?}");
    assert!(seen[1..].iter().all(|r| *r == FullRound::Resync), "{seen:?}");
    cp.shutdown().await.expect("stops");
}

/// Records the reasons of a loop's full rounds.
#[derive(Default)]
struct Reasons(Mutex<Vec<FullRound>>);

impl orch_raft::leader::LoopEvents for Reasons {
    fn full_round(&self, _name: &'static str, why: FullRound) {
        self.0.lock().expect("lock").push(why);
    }
}

/// Asks, in its first round, to be woken 300 ms later; records its rounds.
struct Alarm {
    rounds: Arc<Mutex<Vec<(bool, usize, i64)>>>,
    wake: Option<i64>,
}

impl LeaderLoop for Alarm {
    fn name(&self) -> &'static str {
        "alarm"
    }

    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
        let mut rounds = self.rounds.lock().expect("lock");
        self.wake = rounds.is_empty().then_some(round.now_ms + 300);
        rounds.push((round.full, round.changed.len(), round.now_ms));
        Vec::new()
    }

    fn wake_at_ms(&self) -> Option<i64> {
        self.wake
    }
}

/// A loop's wake-up time gets it an incremental round with nothing changed, no earlier, though
/// the resync is an hour away; then it waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_is_woken_when_it_asked_to_be() {
    let dir = tempfile::tempdir().expect("dir");
    let cp = ControlPlane::builder(1, dir.path()).single_node().start().await.expect("starts");
    let rounds = Arc::new(Mutex::new(Vec::new()));
    let factory: LoopFactory = {
        let rounds = Arc::clone(&rounds);
        Arc::new(move || Box::new(Alarm { rounds: Arc::clone(&rounds), wake: None }) as Box<dyn LeaderLoop>)
    };
    let loops = Loops::spawn(cp.clone(), vec![factory], Duration::from_secs(3600), Arc::new(NoEvents));
    let seen = || rounds.lock().expect("lock").clone();
    let both = eventually("the woken round", || {
        let r = seen();
        (r.len() >= 2).then_some(r)
    })
    .await;
    let (first, woken) = (both[0], both[1]);
    assert!(first.0, "the first round is full");
    assert_eq!((woken.0, woken.1), (false, 0), "an incremental round, nothing changed");
    assert!(woken.2 >= first.2 + 300, "not before the time asked for: {both:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    loops.stop().await;
    assert_eq!(seen().len(), 2, "no round without a change or a wake-up");
    cp.shutdown().await.expect("stops");
}

/// An input is for the loops of the term it was sent in: one that waits while its node does not
/// lead (a heartbeat taken just before a step-down, say) is dropped when the node leads again,
/// not handed to the next term's loop as if it were fresh (the loop of the term it was sent in
/// may still take it, while it is being stopped). A loop's outbox reaches the loop it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_of_an_earlier_term_are_dropped_and_latest_ones_replace_each_other() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let (nodes, _) = crate::control_plane::three_bootstrapped(&dirs).await;
    // Per node: (instance, input) for each input a "recorder" took; instances count up as
    // each term makes a fresh loop.
    let logs: Vec<Log> = (0..3).map(|_| Arc::default()).collect();
    let made: Vec<Arc<std::sync::atomic::AtomicUsize>> = (0..3).map(|_| Arc::default()).collect();
    let loops: Vec<Loops> = nodes
        .iter()
        .zip(&logs)
        .zip(&made)
        .map(|((cp, log), made)| {
            let log = Arc::clone(log);
            let made = Arc::clone(made);
            let recorder: LoopFactory = Arc::new(move || {
                let instance = made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::new(Instance { instance, log: Arc::clone(&log) }) as Box<dyn LeaderLoop>
            });
            let poster: LoopFactory = Arc::new(|| Box::new(Poster { rounds: 0 }) as Box<dyn LeaderLoop>);
            Loops::spawn(cp.clone(), vec![recorder, poster], Duration::from_secs(600), Arc::new(NoEvents))
        })
        .collect();
    let leader = eventually("a leader", || nodes.iter().position(|n| n.metrics().leader == Some(n.id()))).await;
    let took = |i: usize, input: u32| -> Option<usize> {
        logs[i].lock().expect("lock").iter().find(|(_, v)| *v == input).map(|(instance, _)| *instance)
    };
    eventually("the poster's input", || took(leader, 99)).await;

    // Leadership moves away; an input sent to the former leader's loops waits there...
    let other = (leader + 1) % 3;
    transfer(&nodes[leader], nodes[other].id()).await;
    eventually("the former leader to know it", || {
        (nodes[leader].metrics().leader != Some(nodes[leader].id())).then_some(())
    })
    .await;
    // (Once the old term's loop is stopped, so that nothing takes the input meanwhile.)
    eventually("the old term's loop to stop", || took(leader, STOPPED)).await;
    loops[leader].send("recorder", Box::new(42_u32)).expect("queued: the loop ran here");
    // ... and is dropped when leadership comes back: the new term's loop never takes it.
    let before = made[leader].load(std::sync::atomic::Ordering::SeqCst);
    transfer(&nodes[other], nodes[leader].id()).await;
    // The framework notices a new term within its poll; the old term's loop runs until then.
    eventually("the new term's loop", || {
        (made[leader].load(std::sync::atomic::Ordering::SeqCst) > before).then_some(())
    })
    .await;
    loops[leader].send("recorder", Box::new(43_u32)).expect("sent");
    let new_term = eventually("the new term's input", || took(leader, 43)).await;
    assert_eq!(new_term, before, "taken by the new term's loop");
    assert_eq!(took(leader, 42), None, "an input of an earlier term reached a later one");
    for l in loops {
        l.stop().await;
    }
    for n in &nodes {
        n.shutdown().await.expect("stops");
    }
}

/// Per loop instance, the inputs it took: (instance, input).
type Log = Arc<Mutex<Vec<(usize, u32)>>>;

/// What an [`Instance`] records when it is dropped (its term over).
const STOPPED: u32 = u32::MAX;

/// Records the inputs it takes, with the number of its instance, and [`STOPPED`] when dropped.
struct Instance {
    instance: usize,
    log: Log,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Ok(mut log) = self.log.lock() {
            log.push((self.instance, STOPPED));
        }
    }
}

impl LeaderLoop for Instance {
    fn name(&self) -> &'static str {
        "recorder"
    }

    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
        let mut log = self.log.lock().expect("lock");
        for input in round.inputs {
            if let Ok(v) = input.downcast::<u32>() {
                log.push((self.instance, *v));
            }
        }
        Vec::new()
    }
}

/// Moves leadership from `from` (which leads) to node `to`, asking again while an election
/// intervenes.
async fn transfer(from: &ControlPlane, to: u64) {
    for _ in 0..50 {
        if from.transfer_leadership(to).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("leadership did not move to {to}");
}

/// Posts input 99 to the recorder in each of its first 50 rounds (which follow each other at
/// once), so that some post finds the recorder started.
struct Poster {
    rounds: usize,
}

impl LeaderLoop for Poster {
    fn name(&self) -> &'static str {
        "poster"
    }

    fn reconcile(&mut self, _round: Round<'_>) -> Vec<Command> {
        self.rounds += 1;
        Vec::new()
    }

    fn more(&self) -> bool {
        self.rounds < 50
    }

    fn outbox(&mut self) -> Vec<orch_raft::leader::Outgoing> {
        if self.rounds > 50 {
            return Vec::new();
        }
        vec![orch_raft::leader::Outgoing { to: "recorder", key: None, input: Box::new(99_u32) }]
    }
}

/// Proposes, in its first round, one batch too large for a log entry (ten namespaces of
/// 250 KiB of annotations each): the proposal fails, and nothing else happens.
struct Oversized {
    rounds: Arc<Mutex<Vec<Vec<String>>>>,
}

impl LeaderLoop for Oversized {
    fn name(&self) -> &'static str {
        "oversized"
    }

    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
        let fates =
            round.outcomes.iter().map(|(_, o)| if o.is_err() { "unknown" } else { "known" }.to_owned()).collect();
        let mut rounds = self.rounds.lock().expect("lock");
        rounds.push(fates);
        if rounds.len() > 1 {
            return Vec::new();
        }
        let namespaces = (0..10)
            .map(|i| {
                let mut ns = orch_core::Namespace::default();
                ns.metadata.name = format!("big-{i}").into();
                ns.metadata.annotations.insert("pad", "x".repeat(250 * 1024));
                Command::Create(orch_core::Object::from(ns))
            })
            .collect();
        vec![Command::Batch(namespaces)]
    }
}

/// A round whose proposal failed gets the next round soon, with the commands' fates, though
/// nothing changes and the resync is an hour away (the loop would otherwise learn of the
/// failure, and propose again, only at the resync).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_proposal_gets_its_loop_a_round_soon() {
    let dir = tempfile::tempdir().expect("dir");
    let cp = ControlPlane::builder(1, dir.path()).single_node().start().await.expect("starts");
    let rounds = Arc::new(Mutex::new(Vec::new()));
    let factory: LoopFactory = {
        let rounds = Arc::clone(&rounds);
        Arc::new(move || Box::new(Oversized { rounds: Arc::clone(&rounds) }) as Box<dyn LeaderLoop>)
    };
    let loops = Loops::spawn(cp.clone(), vec![factory], Duration::from_secs(3600), Arc::new(NoEvents));
    let seen = || rounds.lock().expect("lock").clone();
    let both = eventually("the round after the failed proposal", || {
        let r = seen();
        (r.len() >= 2).then_some(r)
    })
    .await;
    assert_eq!(both[1], ["unknown"], "the failed command's fate: {both:?}");
    loops.stop().await;
    assert_eq!(seen().len(), 2, "then no round without a change: {:?}", seen());
    cp.shutdown().await.expect("stops");
}

/// The node's clock, moved by the test.
#[derive(Debug, Default)]
struct Movable(std::sync::atomic::AtomicI64);

impl orch_raft::clock::Clock for Movable {
    fn now_ms(&self) -> i64 {
        orch_raft::clock::SystemClock.now_ms() + self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A loop's time is the node's clock when its term began, advanced by the monotonic clock:
/// the node's clock stepping back an hour (an NTP step, a VM restored) does not put off a
/// wake-up the loop asked for by an hour, nor does time go backwards within a term (as
/// Kubernetes' work queues time their delays on the monotonic clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_s_time_is_monotonic_through_a_clock_step() {
    let dir = tempfile::tempdir().expect("dir");
    let clock = Arc::new(Movable::default());
    let cp = ControlPlane::builder(1, dir.path()).single_node().clock(clock.clone()).start().await.expect("starts");
    let rounds = Arc::new(Mutex::new(Vec::new()));
    let factory: LoopFactory = {
        let rounds = Arc::clone(&rounds);
        Arc::new(move || Box::new(Alarm { rounds: Arc::clone(&rounds), wake: None }) as Box<dyn LeaderLoop>)
    };
    let loops = Loops::spawn(cp.clone(), vec![factory], Duration::from_secs(3600), Arc::new(NoEvents));
    let seen = || rounds.lock().expect("lock").clone();
    eventually("the first round", || (!seen().is_empty()).then_some(())).await;
    clock.0.store(-3_600_000, std::sync::atomic::Ordering::Relaxed);
    let both: Vec<i64> = eventually("the round it asked for", || {
        let r = seen();
        (r.len() >= 2).then(|| r.iter().map(|(_, _, now_ms)| *now_ms).collect())
    })
    .await;
    assert!(both[1] >= both[0] + 300, "woken when asked, at {both:?}, not an hour late");
    assert!(both[1] < both[0] + 60_000, "the loop's time did not follow the step back: {both:?}");
    loops.stop().await;
    cp.shutdown().await.expect("stops");
}

/// Records the changed keys of its rounds, reading only the kinds it is given.
struct KindsOnly {
    name: &'static str,
    kinds: Option<&'static [orch_core::Kind]>,
    rounds: Arc<Mutex<Vec<Seen>>>,
}

impl LeaderLoop for KindsOnly {
    fn name(&self) -> &'static str {
        self.name
    }

    fn kinds(&self) -> Option<&'static [orch_core::Kind]> {
        self.kinds
    }

    fn reconcile(&mut self, round: Round<'_>) -> Vec<Command> {
        let changed = round.changed.iter().map(|k| format!("{}/{}", k.kind, k.name)).collect();
        let seen = Seen { full: round.full, changed, outcomes: Vec::new(), inputs: Vec::new(), now_ms: round.now_ms };
        self.rounds.lock().expect("lock").push(seen);
        Vec::new()
    }
}

/// A loop that reads only namespaces lists only their keys, and a change of another kind
/// gets it no round; a loop that reads everything (the witness) sees both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_is_told_of_and_woken_by_the_kinds_it_reads_only() {
    let dir = tempfile::tempdir().expect("dir");
    let cp = ControlPlane::builder(1, dir.path()).single_node().start().await.expect("starts");
    let (only, witness) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let factory = |name: &'static str, kinds: Option<&'static [orch_core::Kind]>, rounds: &Arc<Mutex<Vec<Seen>>>| {
        let rounds = Arc::clone(rounds);
        Arc::new(move || Box::new(KindsOnly { name, kinds, rounds: Arc::clone(&rounds) }) as Box<dyn LeaderLoop>)
            as LoopFactory
    };
    let loops = Loops::spawn(
        cp.clone(),
        vec![factory("namespaces", Some(&[orch_core::Kind::Namespace]), &only), factory("witness", None, &witness)],
        Duration::from_secs(600),
        Arc::new(NoEvents),
    );
    let saw = |rounds: &Arc<Mutex<Vec<Seen>>>, key: &str| {
        rounds.lock().expect("lock").iter().any(|r| r.changed.iter().any(|k| k == key)).then_some(())
    };
    eventually("the first rounds", || {
        (!only.lock().expect("lock").is_empty() && !witness.lock().expect("lock").is_empty()).then_some(())
    })
    .await;
    let write = |yaml: &str| {
        let commands = orch_core::parse_manifests(yaml).expect("valid").into_iter().map(Command::Create).collect();
        let cp = cp.clone();
        async move { cp.propose(commands).await.expect("writes") }
    };
    // The first write also makes the `default` namespace: a namespace first, then the pod.
    write("apiVersion: v1\nkind: Namespace\nmetadata: {name: n0}\n").await;
    eventually("the namespace loop sees the first namespace", || saw(&only, "Namespace/n0")).await;
    write("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: x}]}").await;
    eventually("the witness sees the pod", || saw(&witness, "Pod/p")).await;
    write("apiVersion: v1\nkind: Namespace\nmetadata: {name: n1}\n").await;
    eventually("the namespace loop sees the namespace", || saw(&only, "Namespace/n1")).await;
    eventually("the witness sees it too", || saw(&witness, "Namespace/n1")).await;
    let rounds = only.lock().expect("lock").clone();
    assert!(rounds[0].full, "{rounds:?}");
    for r in &rounds[1..] {
        assert!(!r.full, "{rounds:?}");
        assert!(!r.changed.is_empty(), "no round for the pod alone: {rounds:?}");
        assert!(r.changed.iter().all(|k| k.starts_with("Namespace/")), "only namespaces listed: {rounds:?}");
    }
    loops.stop().await;
    cp.shutdown().await.expect("stops");
}
