use super::*;
use crate::reconcile::world::World;

const GRACE: i64 = 10_000;

fn controller() -> NodeLifecycle {
    NodeLifecycle::new(Settings { grace_ms: GRACE, writes_per_round: 1_024 })
}

fn node(name: &str, ready: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus:\n  capacity: {{cpu: '4', memory: 8Gi, pods: '10'}}\n  \
         conditions: [{{type: Ready, status: '{ready}'}}, {{type: MemoryPressure, status: 'False'}}]\n---\n"
    )
}

/// Creates a pod bound to `node` with `tolerations` (a flow sequence), Running and Ready.
fn pod(w: &mut World, name: &str, node: &str, tolerations: &str) {
    w.create(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec: {{nodeName: {node}, tolerations: {tolerations}, \
         containers: [{{name: c, image: x}}]}}\n"
    ));
    let mut p = w.pod(name);
    p.status.phase = Some(PodPhase::Running);
    p.status.conditions.push(PodCondition::new("Ready", ConditionStatus::True, Time::from_millis(w.now_ms)));
    w.run(vec![Command::UpdateStatus(Object::from(p))]);
}

fn get_node(w: &World, name: &str) -> Node {
    match w.state.get(&ObjectKey::new(Kind::Node, "", name)) {
        Some(Object::Node(n)) => (**n).clone(),
        other => panic!("no node {name}: {other:?}"),
    }
}

fn ready(w: &World, name: &str) -> Option<ConditionStatus> {
    ready_status(&get_node(w, name))
}

fn taints(w: &World, name: &str) -> Vec<String> {
    get_node(w, name).spec.taints.iter().map(|t| t.key.to_string()).collect()
}

/// Runs rounds at the world's time until the controller proposes nothing; the commands of
/// each round that proposed something.
fn settle(w: &mut World, c: &mut NodeLifecycle) -> Vec<Vec<Command>> {
    settle_from(w, c, Vec::new(), Vec::new())
}

/// As [`settle`], from a round that sees `changed` and `outcomes`.
fn settle_from(
    w: &mut World,
    c: &mut NodeLifecycle,
    mut changed: Vec<ObjectKey>,
    mut outcomes: Vec<(Command, Fate)>,
) -> Vec<Vec<Command>> {
    let mut rounds = Vec::new();
    for _ in 0..20 {
        let commands = c.reconcile(&w.state, w.now_ms, false, &changed, &outcomes);
        if commands.is_empty() && !c.more() {
            return rounds;
        }
        rounds.push(commands.clone());
        // The round's writes land at the round's time (World moves its clock a second on).
        w.now_ms -= 1_000;
        (outcomes, changed) = w.run(commands);
    }
    panic!("the node lifecycle controller did not settle");
}

/// Taints `node` by hand with a `NoExecute` taint `dedicated` (no `timeAdded`), then hears it
/// and runs a round on the change: its commands.
fn dedicated(w: &mut World, c: &mut NodeLifecycle, node: &str) -> Vec<Command> {
    let mut n = get_node(w, node);
    n.spec.taints.push(Taint {
        key: "dedicated".into(),
        value: None,
        effect: Some(TaintEffect::NoExecute),
        time_added: None,
    });
    let (_, changed) = w.run(vec![Command::Update(Object::from(n))]);
    heartbeat(c, w, node);
    c.reconcile(&w.state, w.now_ms, false, &changed, &[])
}

fn heartbeat(c: &mut NodeLifecycle, w: &World, node: &str) {
    c.receive(w.now_ms, Message::Heartbeat { node: node.into() });
}

/// A node unheard for the grace period becomes Unknown (one status write), then gets the
/// unreachable NoExecute taint; heard again, it is Ready and the taint goes. Nothing is
/// written while heartbeats arrive in time (liveness without log writes), and the loop
/// asks to be woken when the grace runs out.
#[test]
fn a_node_unheard_for_the_grace_period_is_unknown_and_tainted_until_heard_again() {
    let mut w = World::with(&node("n1", "True"));
    let mut c = controller();
    assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty());
    let start = w.now_ms;
    assert_eq!(c.wake_at_ms(), Some(start + GRACE + 1));
    for _ in 0..5 {
        w.now_ms += GRACE / 2;
        heartbeat(&mut c, &w, "n1");
        assert!(settle(&mut w, &mut c).is_empty(), "heartbeats in time write nothing");
    }
    let index = w.state.applied_index();
    w.now_ms += GRACE + 1;
    let rounds = settle(&mut w, &mut c);
    assert_eq!(rounds.len(), 2, "the condition, then the taint: {rounds:?}");
    assert_eq!(ready(&w, "n1"), Some(ConditionStatus::Unknown));
    let n = get_node(&w, "n1");
    let memory = n.status.conditions.iter().find(|c| c.type_ == "MemoryPressure").expect("kept");
    assert_eq!((memory.status, memory.reason.as_deref()), (ConditionStatus::Unknown, Some(STATUS_UNKNOWN)));
    assert_eq!(taints(&w, "n1"), [UNREACHABLE_TAINT]);
    assert!(n.spec.taints[0].time_added.is_some());
    assert_eq!(w.state.applied_index(), index + 2);
    // Time passing without news writes nothing more.
    w.now_ms += 10 * GRACE;
    assert!(settle(&mut w, &mut c).is_empty());
    heartbeat(&mut c, &w, "n1");
    let rounds = settle(&mut w, &mut c);
    assert_eq!(rounds.len(), 2, "{rounds:?}");
    assert_eq!(ready(&w, "n1"), Some(ConditionStatus::True));
    let n = get_node(&w, "n1");
    let memory = n.status.conditions.iter().find(|c| c.type_ == "MemoryPressure").expect("kept");
    assert_eq!(memory.status, ConditionStatus::False);
    assert!(taints(&w, "n1").is_empty());
}

/// A fresh controller (a new term) gives every node a full grace period from its first
/// round, however long ago the node was last heard.
#[test]
fn after_a_leader_change_every_node_gets_a_full_grace_period() {
    let mut w = World::with(&node("n1", "True"));
    w.now_ms += 100 * GRACE;
    let mut c = controller();
    assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty());
    w.now_ms += GRACE;
    assert!(settle(&mut w, &mut c).is_empty(), "still within the grace");
    w.now_ms += 1;
    assert_eq!(settle(&mut w, &mut c).len(), 2);
    assert_eq!(ready(&w, "n1"), Some(ConditionStatus::Unknown));
    // A new term does not hear the node either: it stays Unknown and tainted, and is
    // Ready again only once heard.
    let mut c = controller();
    assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty());
    heartbeat(&mut c, &w, "n1");
    settle(&mut w, &mut c);
    assert_eq!(ready(&w, "n1"), Some(ConditionStatus::True));
}

/// A `Ready=False` the agent wrote stays while it heartbeats, and gets the not-ready taint; a
/// node registered without a `Ready` condition and never heard is `Unknown` after the grace
/// ("never updated"); heartbeats of nodes that do not exist are dropped.
#[test]
fn not_ready_is_the_agent_s_word_and_a_silent_new_node_is_never_updated() {
    let mut w = World::with(&(node("sick", "False") + "apiVersion: v1\nkind: Node\nmetadata: {name: bare}\n"));
    let mut c = controller();
    heartbeat(&mut c, &w, "ghost");
    heartbeat(&mut c, &w, "sick");
    settle(&mut w, &mut c);
    assert_eq!(ready(&w, "sick"), Some(ConditionStatus::False));
    assert_eq!(taints(&w, "sick"), [NOT_READY_TAINT]);
    assert_eq!(ready(&w, "bare"), None);
    assert!(!c.seen.contains_key("ghost"), "a heartbeat of no node keeps nothing");
    assert!(c.heard.is_empty());
    w.now_ms += GRACE / 2;
    heartbeat(&mut c, &w, "sick");
    w.now_ms += GRACE / 2 + 1;
    settle(&mut w, &mut c);
    assert_eq!(ready(&w, "sick"), Some(ConditionStatus::False), "heard in time");
    let bare = get_node(&w, "bare");
    let condition = bare.status.conditions.iter().find(|c| c.type_ == "Ready").expect("added");
    assert_eq!((condition.status, condition.reason.as_deref()), (ConditionStatus::Unknown, Some(NEVER_UPDATED)));
    assert_eq!(taints(&w, "bare"), [UNREACHABLE_TAINT]);
}

/// The pods of an unreachable node are marked not Ready; each is evicted when its toleration
/// runs out (counted from the taint's `timeAdded`): at once without one, after its
/// `tolerationSeconds`, never without a limit; the default 300 s toleration is added to
/// pods at creation. A pod on a node with a NoExecute taint it does not tolerate is evicted
/// at once; one already terminating or finished is left alone.
#[test]
fn pods_are_evicted_from_a_lost_node_when_their_tolerations_run_out() {
    let exists =
        |seconds: &str| format!("[{{key: {UNREACHABLE_TAINT}, operator: Exists, effect: NoExecute{seconds}}}]");
    let mut w = World::with(&(node("n1", "True") + &node("n2", "True")));
    pod(&mut w, "default-300", "n1", "[]");
    pod(&mut w, "short", "n1", &exists(", tolerationSeconds: 5"));
    pod(&mut w, "forever", "n1", &exists(""));
    pod(&mut w, "other", "n2", "[]");
    let defaults = w.pod("default-300").spec.tolerations;
    assert_eq!(defaults.len(), 2, "{defaults:?}");
    assert!(defaults.iter().all(|t| t.toleration_seconds == Some(300) && t.effect == Some(TaintEffect::NoExecute)));
    let mut c = controller();
    assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty());
    heartbeat(&mut c, &w, "n2");
    w.now_ms += GRACE + 1;
    heartbeat(&mut c, &w, "n2");
    let lost_at = w.now_ms;
    settle(&mut w, &mut c);
    assert_eq!(taints(&w, "n1"), [UNREACHABLE_TAINT]);
    let added = get_node(&w, "n1").spec.taints[0].time_added.expect("set").as_millis();
    for name in ["default-300", "short", "forever"] {
        let p = w.pod(name);
        let r = p.status.conditions.iter().find(|c| c.type_ == "Ready").expect("ready");
        assert_eq!((r.status, r.reason()), (ConditionStatus::False, Some("NodeUnreachable")), "{name}");
        assert!(p.metadata.deletion_timestamp.is_none(), "{name} is not evicted yet");
    }
    assert!(w.pod("other").status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == ConditionStatus::True));
    assert_eq!(c.wake_at_ms(), Some(added + 5_000), "woken for the short toleration");
    w.now_ms = added + 5_000;
    heartbeat(&mut c, &w, "n2");
    settle(&mut w, &mut c);
    assert!(w.pod("short").metadata.deletion_timestamp.is_some(), "evicted after 5 s");
    assert!(w.pod("default-300").metadata.deletion_timestamp.is_none());
    let due = c.evict_at.get(&ObjectKey::new(Kind::Pod, "default", "default-300")).copied();
    assert_eq!(due, Some(added + 300_000));
    w.now_ms = added + 300_000 - 1;
    heartbeat(&mut c, &w, "n2");
    settle(&mut w, &mut c);
    assert!(w.pod("default-300").metadata.deletion_timestamp.is_none());
    w.now_ms += 1;
    heartbeat(&mut c, &w, "n2");
    settle(&mut w, &mut c);
    assert!(w.pod("default-300").metadata.deletion_timestamp.is_some(), "evicted after 300 s");
    assert!(w.pod("forever").metadata.deletion_timestamp.is_none(), "tolerated without a limit");
    assert_eq!(lost_at, added, "the taint is written in the round after the condition, at its time");
    // Events: the node lost, then each eviction, as Kubernetes' controllers say them.
    let said: Vec<_> = c.events().into_iter().map(|e| (e.component, e.reason, e.message)).collect();
    assert_eq!(
        said,
        [
            (COMPONENT, "NodeNotReady", "Node n1 status is now: NodeNotReady".to_owned()),
            (EVICTION_COMPONENT, "TaintManagerEviction", "Marking for deletion Pod default/short".to_owned()),
            (EVICTION_COMPONENT, "TaintManagerEviction", "Marking for deletion Pod default/default-300".to_owned()),
        ]
    );
    // A NoExecute taint nobody tolerates, put on n2 by hand: its pod goes at once.
    let commands = dedicated(&mut w, &mut c, "n2");
    assert!(matches!(&commands[..], [Command::Delete { key, .. }] if key.name == "other"), "{commands:?}");
}

/// A round that has more writes than it may propose leaves the rest to the next, which it
/// asks for at once.
#[test]
fn a_round_proposes_at_most_its_limit_and_asks_for_more() {
    let nodes: String = (0..5).map(|i| node(&format!("n{i}"), "True")).collect();
    let mut w = World::with(&nodes);
    let mut c = NodeLifecycle::new(Settings { grace_ms: GRACE, writes_per_round: 2 });
    assert!(c.reconcile(&w.state, w.now_ms, true, &[], &[]).is_empty());
    w.now_ms += GRACE + 1;
    let first = c.reconcile(&w.state, w.now_ms, false, &[], &[]);
    assert_eq!(first.len(), 2);
    assert!(c.more(), "three nodes left for the next round");
    // Those two writes refused (say): the next round writes two again, and asks for more.
    let again = c.reconcile(&w.state, w.now_ms, false, &[], &[]);
    assert_eq!(again, first);
    assert!(c.more());
    let rounds = settle(&mut w, &mut c);
    assert!(rounds.iter().all(|r| r.len() <= 2), "{rounds:?}");
    for i in 0..5 {
        assert_eq!(ready(&w, &format!("n{i}")), Some(ConditionStatus::Unknown));
        assert_eq!(taints(&w, &format!("n{i}")), [UNREACHABLE_TAINT]);
    }
}

/// A node whose agent says `Ready=False` gets the not-ready taint, its pods are marked not
/// Ready, and a pod without a toleration of the taint is evicted, under the resourceVersion
/// it was judged at: a pod changed since is looked at again. A pod bound to a node tainted
/// long ago gets its full toleration from its binding.
#[test]
fn a_not_ready_node_s_pods_are_evicted_as_judged_and_late_pods_get_their_full_toleration() {
    let mut w = World::with(&node("sick", "False"));
    pod(&mut w, "plain", "sick", "[]");
    let mut c = controller();
    heartbeat(&mut c, &w, "sick");
    // The taint, and the pod marked not Ready (the default 300 s toleration of not-ready
    // holds it).
    let commands = c.reconcile(&w.state, w.now_ms, true, &[], &[]);
    assert!(matches!(&commands[..], [Command::Update(_), Command::UpdateStatus(_)]), "{commands:?}");
    let (outcomes, changed) = w.run(commands);
    assert!(settle_from(&mut w, &mut c, changed, outcomes).is_empty(), "nothing more to write");
    assert_eq!(taints(&w, "sick"), [NOT_READY_TAINT]);
    let r = w.pod("plain").status.conditions.into_iter().find(|c| c.type_ == "Ready").expect("ready");
    assert_eq!((r.status, r.reason()), (ConditionStatus::False, Some("NodeNotReady")));
    assert!(c.evict_at.contains_key(&ObjectKey::new(Kind::Pod, "default", "plain")));

    // A pod bound to the node 200 s after the taint was added is evicted 300 s after its
    // binding, not 100 s after.
    let added = get_node(&w, "sick").spec.taints[0].time_added.expect("set").as_millis();
    w.now_ms = added + 200_000;
    heartbeat(&mut c, &w, "sick");
    pod(&mut w, "late", "sick", "[]");
    let bound =
        w.pod("late").status.conditions.iter().find(|c| c.type_ == "PodScheduled").and_then(|c| c.last_transition_time);
    let bound = bound.expect("scheduled").as_millis();
    settle_from(&mut w, &mut c, vec![ObjectKey::new(Kind::Pod, "default", "late")], Vec::new());
    let due = c.evict_at.get(&ObjectKey::new(Kind::Pod, "default", "late")).copied();
    assert_eq!(due, Some(bound + 300_000));

    // A NoExecute taint the pods do not tolerate: evicted at once, each under the
    // resourceVersion it was judged at; a pod written in between is refused its delete, and
    // the next round judges it again from the state.
    let commands = dedicated(&mut w, &mut c, "sick");
    let key = ObjectKey::new(Kind::Pod, "default", "plain");
    let judged = w.state.get(&key).and_then(|o| o.meta().resource_version);
    assert!(
        commands.iter().any(|c| matches!(c, Command::Delete { key: k, preconditions, .. }
            if *k == key && preconditions.resource_version == judged)),
        "{commands:?}"
    );
    let mut touched = w.pod("plain");
    touched.status.message = Some("written in between".into());
    w.run(vec![Command::UpdateStatus(Object::from(touched))]);
    let (outcomes, changed) = w.run(commands);
    assert!(outcomes.iter().any(|(_, f)| !matches!(f, Fate::Applied(Ok(_)))), "the stale delete is refused");
    assert!(w.pod("plain").metadata.deletion_timestamp.is_none());
    settle_from(&mut w, &mut c, changed, outcomes);
    assert!(w.pod("plain").metadata.deletion_timestamp.is_some(), "judged again, and evicted");
    assert!(w.pod("late").metadata.deletion_timestamp.is_some());
}

/// One step of [`skipping_the_node_pass_changes_no_decision`]'s script.
#[derive(Clone, Debug)]
enum Step {
    /// Time passes (in tenths of the grace period).
    Wait(i64),
    Heartbeat(usize),
    /// The node's agent writes its Ready condition (True, False or Unknown).
    Agent(usize, usize),
    /// A pod bound to the node, tolerating its taints for a while or not at all.
    Pod(usize, bool),
    /// A round whose proposals are lost: the next round is told their fate is unknown.
    Lost,
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        (0i64..14).prop_map(Step::Wait),
        (0usize..4).prop_map(Step::Heartbeat),
        (0usize..4, 0usize..3).prop_map(|(i, s)| Step::Agent(i, s)),
        (0usize..4, any::<bool>()).prop_map(|(i, t)| Step::Pod(i, t)),
        Just(Step::Lost),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// The controller looks at its nodes only when one may need a write; a twin that looks
    /// at every node every round, stepped through the same script on the same state, makes
    /// the same writes after every round, and the controller asks to be woken no later.
    #[test]
    fn skipping_the_node_pass_changes_no_decision(steps in proptest::collection::vec(step(), 1..40)) {
        let nodes: String = (0..4).map(|i| node(&format!("n{i}"), "True")).collect();
        let mut w = World::with(&nodes);
        let mut c = NodeLifecycle::new(Settings { grace_ms: GRACE, writes_per_round: 2 });
        let mut twin = NodeLifecycle::new(Settings { grace_ms: GRACE, writes_per_round: 2 });
        twin.always_look = true;
        let (mut changed, mut outcomes, mut full) = (Vec::new(), Vec::new(), true);
        let mut pods = 0;
        for step in steps {
            let mut lost = false;
            match step {
                Step::Wait(tenths) => w.now_ms += tenths * GRACE / 10,
                Step::Heartbeat(i) => {
                    heartbeat(&mut c, &w, &format!("n{i}"));
                    heartbeat(&mut twin, &w, &format!("n{i}"));
                }
                Step::Agent(i, status) => {
                    let mut n = get_node(&w, &format!("n{i}"));
                    let status = [ConditionStatus::True, ConditionStatus::False, ConditionStatus::Unknown][status];
                    for c in n.status.conditions.iter_mut().filter(|c| c.type_ == "Ready") {
                        c.status = status;
                    }
                    changed.extend(w.run(vec![Command::UpdateStatus(Object::from(n))]).1);
                }
                Step::Pod(i, tolerates) => {
                    pods += 1;
                    let tolerations = if tolerates {
                        "[{operator: Exists, effect: NoExecute, tolerationSeconds: 5}]"
                    } else {
                        "[]"
                    };
                    let name = format!("p{pods}");
                    pod(&mut w, &name, &format!("n{i}"), tolerations);
                    changed.push(ObjectKey::new(Kind::Pod, w.pod(&name).metadata.namespace_str(), &name));
                }
                Step::Lost => lost = true,
            }
            let a = c.reconcile(&w.state, w.now_ms, full, &changed, &outcomes);
            let b = twin.reconcile(&w.state, w.now_ms, full, &changed, &outcomes);
            proptest::prop_assert_eq!(&a, &b);
            proptest::prop_assert_eq!(c.more(), twin.more());
            // A heartbeat since the last look may have put a node's grace off: the controller
            // may wake before it needs to (and then looks), never after.
            if let Some(due) = twin.wake_at_ms() {
                proptest::prop_assert!(c.wake_at_ms().is_some_and(|at| at <= due), "{:?} > {due}", c.wake_at_ms());
            }
            full = false;
            (outcomes, changed) = if lost {
                (a.into_iter().map(|command| (command, Fate::Unknown)).collect(), Vec::new())
            } else {
                w.run(a)
            };
        }
    }
}
