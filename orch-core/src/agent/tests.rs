mod config;

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::core_v1::{ContainerStatus, PodCondition};
use crate::defaults::apply_defaults;
use crate::manifest::parse_manifests;
use crate::meta::ConditionStatus;
use crate::object::Object;
use crate::time::Time;

const T0: i64 = 1_000_000;

fn pod(name: &str, spec: &str) -> Arc<Pod> {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  nodeName: n1\n{spec}"
    );
    let mut obj = parse_manifests(&yaml).expect("manifest").pop().expect("one object");
    apply_defaults(&mut obj);
    let Object::Pod(mut p) = obj else { panic!("not a pod") };
    let seq = name.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    Arc::make_mut(&mut p).metadata.uid = Some(Uid::derive(7, seq));
    p
}

const ONE: &str = "  containers:\n  - {name: app, image: busybox, command: [sleep, '1000']}\n";
const TWO: &str = "  containers:\n  - {name: a, image: local, command: [sleep, '1000']}\n  - {name: b, image: local, command: [sleep, '1000']}\n";

fn uid(p: &Pod) -> Uid {
    p.metadata.uid.expect("uid")
}

fn key(p: &Pod) -> ObjectKey {
    ObjectKey::new(Kind::Pod, "default", &p.metadata.name)
}

/// An agent, a store of its pods and a runtime that does what it is told at once.
struct World {
    agent: Agent,
    now: i64,
    rev: u64,
    store: BTreeMap<ObjectKey, Arc<Pod>>,
    /// Every action, in order.
    log: Vec<Action>,
    /// The runs the runtime has going: (uid, container) -> attempt.
    live: BTreeMap<(Uid, String), u32>,
    sandboxes: BTreeMap<Uid, ()>,
    next_ip: u8,
    writes: usize,
}

impl World {
    fn new(settings: Settings) -> Self {
        Self {
            agent: Agent::new(settings),
            now: T0,
            rev: 10,
            store: BTreeMap::new(),
            log: Vec::new(),
            live: BTreeMap::new(),
            sandboxes: BTreeMap::new(),
            next_ip: 2,
            writes: 0,
        }
    }

    fn synced() -> Self {
        let mut w = Self::new(Settings { host_ip: Some("192.168.0.1".into()), ..Settings::new("n1") });
        w.agent.synced(T0);
        w
    }

    /// Puts `pod` in the store and tells the agent.
    fn put(&mut self, pod: Arc<Pod>) {
        self.rev += 1;
        self.store.insert(key(&pod), pod.clone());
        self.agent.pod(&pod, self.rev, self.now);
    }

    /// Takes the agent's actions; the runtime answers sandbox and start requests, the store
    /// applies status writes and deletes; until nothing more happens. The actions taken.
    fn settle(&mut self) -> Vec<Action> {
        let mut taken = Vec::new();
        loop {
            let actions = self.agent.take_actions();
            let writes = self.agent.statuses(self.now);
            if actions.is_empty() && writes.is_empty() {
                return taken;
            }
            for a in actions {
                self.log.push(a.clone());
                taken.push(a.clone());
                match a {
                    Action::CreateSandbox { uid, .. } => {
                        self.sandboxes.insert(uid, ());
                        let ip = format!("10.244.0.{}", self.next_ip);
                        self.next_ip += 1;
                        self.agent.runtime(RuntimeEvent::SandboxReady { uid, ip: Some(ip) }, self.now);
                    }
                    Action::StartContainer { uid, pod, container, attempt, .. } => {
                        let name = pod.spec.containers[container].name.to_string();
                        let old = self.live.insert((uid, name.clone()), attempt);
                        assert!(old.is_none(), "two runs of {name} at once");
                        self.agent.runtime(RuntimeEvent::ContainerStarted { uid, container: name, attempt }, self.now);
                    }
                    Action::RemoveSandbox { uid } => {
                        assert!(!self.live.keys().any(|(u, _)| *u == uid), "sandbox removed under a live run");
                        assert!(self.sandboxes.remove(&uid).is_some());
                        self.agent.runtime(RuntimeEvent::SandboxRemoved { uid }, self.now);
                    }
                    Action::DeletePod { key, uid }
                        if self.store.get(&key).is_some_and(|p| p.metadata.uid == Some(uid)) =>
                    {
                        self.store.remove(&key);
                        self.agent.pod_gone(&key, self.now);
                    }
                    _ => {}
                }
            }
            for w in writes {
                self.writes += 1;
                let p = self.store.get_mut(&w.key).expect("written pod in the store");
                assert_eq!(p.metadata.uid, Some(w.uid));
                let old = Object::Pod(p.clone());
                Arc::make_mut(p).status = w.status;
                let errors = crate::validation::validate_status_update(&Object::Pod(p.clone()), &old);
                assert!(errors.is_empty(), "the store refuses the agent's status: {errors:?}");
                self.rev += 1;
                self.agent.status_written(w.uid, Written::Applied { revision: self.rev });
                let p = p.clone();
                self.agent.pod(&p, self.rev, self.now);
            }
        }
    }

    /// The runtime reports that a run ended.
    fn exit(&mut self, p: &Pod, container: &str, code: i32) {
        self.exit_with(p, container, Exit { code, ..Exit::default() });
    }

    fn exit_with(&mut self, p: &Pod, container: &str, exit: Exit) {
        let attempt = self.live.remove(&(uid(p), container.to_owned())).expect("a live run");
        self.agent.runtime(
            RuntimeEvent::ContainerExited { uid: uid(p), container: container.into(), attempt, exit },
            self.now,
        );
    }

    /// Moves the clock to `at` and ticks.
    fn at(&mut self, at: i64) {
        self.now = at;
        self.agent.tick(at);
    }

    fn stored(&self, p: &Pod) -> Arc<Pod> {
        self.store.get(&key(p)).expect("stored").clone()
    }

    fn status(&self, p: &Pod, container: &str) -> ContainerStatus {
        let p = self.stored(p);
        p.status.container_statuses.iter().find(|c| c.name == container).expect("container status").clone()
    }

    fn condition(&self, p: &Pod, type_: &str) -> PodCondition {
        let p = self.stored(p);
        p.status.conditions.iter().find(|c| c.type_ == type_).expect("condition").clone()
    }

    fn phase(&self, p: &Pod) -> Option<PodPhase> {
        self.stored(p).status.phase
    }

    fn waiting_reason(&self, p: &Pod, container: &str) -> Option<String> {
        self.status(p, container).state.waiting.and_then(|w| w.reason).map(|r| r.to_string())
    }

    /// Answers the probes asked for with `ok`; how many.
    fn answer_probes(&mut self, actions: &[Action], kind: ProbeKind, ok: bool) -> usize {
        let mut n = 0;
        for a in actions {
            if let Action::Probe { uid, container, attempt, kind: k, .. } = a
                && *k == kind
            {
                n += 1;
                let event = RuntimeEvent::ProbeDone {
                    uid: *uid,
                    container: container.clone(),
                    attempt: *attempt,
                    kind,
                    ok,
                    message: if ok { String::new() } else { "connection refused".into() },
                };
                self.agent.runtime(event, self.now);
            }
        }
        n
    }
}

fn count(actions: &[Action], f: impl Fn(&Action) -> bool) -> usize {
    actions.iter().filter(|a| f(a)).count()
}

fn starts(actions: &[Action]) -> usize {
    count(actions, |a| matches!(a, Action::StartContainer { .. }))
}

#[test]
fn a_pod_gets_a_sandbox_then_its_containers_then_is_running_and_ready() {
    let mut w = World::synced();
    let p = pod("web", TWO);
    w.put(p.clone());
    let actions = w.settle();
    assert!(matches!(actions[0], Action::CreateSandbox { .. }));
    assert_eq!(starts(&actions), 2);
    let stored = w.stored(&p);
    assert_eq!(stored.status.phase, Some(PodPhase::Running));
    assert_eq!(stored.status.pod_ip.as_deref(), Some("10.244.0.2"));
    assert_eq!(stored.status.pod_ips.len(), 1);
    assert_eq!(stored.status.host_ip.as_deref(), Some("192.168.0.1"));
    assert_eq!(stored.status.start_time, Some(Time::from_millis(T0)));
    for type_ in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert_eq!(w.condition(&p, type_).status, ConditionStatus::True, "{type_}");
    }
    let a = w.status(&p, "a");
    assert!(a.ready && a.started == Some(true) && a.restart_count == 0);
    assert!(a.state.running.is_some());
    // Nothing changes: nothing more is done or written.
    let writes = w.writes;
    w.at(T0 + 60_000);
    assert!(w.settle().is_empty());
    assert_eq!(w.writes, writes);
    assert_eq!(w.agent.next_wake(), None);
}

#[test]
fn status_is_written_once_per_change_and_again_only_when_its_fate_is_unknown() {
    let mut w = World::synced();
    let p = pod("web", ONE);
    w.put(p.clone());
    // Sandbox and start answered without settling: the writes are taken by hand.
    let _ = w.agent.take_actions();
    w.agent.runtime(RuntimeEvent::SandboxReady { uid: uid(&p), ip: Some("10.244.0.9".into()) }, w.now);
    w.agent.runtime(RuntimeEvent::ContainerStarted { uid: uid(&p), container: "app".into(), attempt: 1 }, w.now);
    let first = w.agent.statuses(w.now);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].uid, uid(&p));
    // One write out per pod: nothing more until its fate is known, even after a change.
    w.agent.runtime(
        RuntimeEvent::ContainerExited { uid: uid(&p), container: "app".into(), attempt: 1, exit: Exit::default() },
        w.now,
    );
    assert!(w.agent.statuses(w.now).is_empty());
    w.agent.status_written(uid(&p), Written::Unknown);
    let again = w.agent.statuses(w.now);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].status.container_statuses[0].restart_count, 0);
    // Applied, and the watch shows it back: no write.
    w.agent.status_written(uid(&p), Written::Applied { revision: 50 });
    let mut echo = (*p).clone();
    echo.status = again[0].status.clone();
    w.agent.pod(&Arc::new(echo.clone()), 50, w.now);
    assert!(w.agent.statuses(w.now).is_empty());
    // A watch event older than the applied write does not count.
    w.agent.pod(&p, 49, w.now);
    assert!(w.agent.statuses(w.now).is_empty());
    // Someone else changes the status in the store: written back after the resync period.
    echo.status.phase = Some(PodPhase::Pending);
    w.agent.pod(&Arc::new(echo), 51, w.now);
    assert!(w.agent.statuses(w.now).is_empty());
    w.at(w.now + STATUS_RESYNC_MS);
    assert_eq!(w.agent.statuses(w.now).len(), 1);
}

#[test]
fn a_container_that_keeps_exiting_restarts_at_once_then_after_a_doubling_back_off() {
    let mut w = World::synced();
    let p = pod("crash", ONE);
    w.put(p.clone());
    w.settle();
    // First exit: restarted at once.
    w.exit(&p, "app", 1);
    let actions = w.settle();
    assert_eq!(starts(&actions), 1);
    let s = w.status(&p, "app");
    assert_eq!(s.restart_count, 1);
    assert!(s.state.running.is_some());
    assert_eq!(s.last_state.terminated.as_ref().map(|t| t.exit_code), Some(1));
    assert_eq!(s.last_state.terminated.as_ref().and_then(|t| t.reason.clone()).as_deref(), Some("Error"));
    // Then 10 s, 20 s: CrashLoopBackOff while it waits.
    for delay in [10_000, 20_000, 40_000] {
        w.exit(&p, "app", 2);
        assert_eq!(starts(&w.settle()), 0);
        assert_eq!(w.waiting_reason(&p, "app").as_deref(), Some(CRASH_LOOP_BACK_OFF));
        assert_eq!(w.phase(&p), Some(PodPhase::Running));
        assert_eq!(w.condition(&p, "Ready").status, ConditionStatus::False);
        assert_eq!(w.agent.next_wake(), Some(w.now + delay));
        w.at(w.now + delay - 1);
        assert_eq!(starts(&w.settle()), 0);
        w.at(w.now + 1);
        assert_eq!(starts(&w.settle()), 1);
        assert!(w.status(&p, "app").state.running.is_some());
    }
    assert_eq!(w.status(&p, "app").restart_count, 4);
}

#[test]
fn restart_policies_decide_what_runs_again_and_the_phase() {
    for (policy, code, phase, restarted) in [
        ("OnFailure", 0, PodPhase::Succeeded, false),
        ("OnFailure", 3, PodPhase::Running, true),
        ("Never", 3, PodPhase::Failed, false),
        ("Never", 0, PodPhase::Succeeded, false),
        ("Always", 0, PodPhase::Running, true),
    ] {
        let mut w = World::synced();
        let p = pod("job", &format!("  restartPolicy: {policy}\n{ONE}"));
        w.put(p.clone());
        w.settle();
        w.exit(&p, "app", code);
        let actions = w.settle();
        assert_eq!(starts(&actions) == 1, restarted, "{policy} {code}");
        assert_eq!(w.phase(&p), Some(phase), "{policy} {code}");
        if !restarted {
            // Done for good: its sandbox (and address) goes; the pod stays with its phase.
            assert_eq!(count(&actions, |a| matches!(a, Action::RemoveSandbox { .. })), 1);
            assert!(w.sandboxes.is_empty());
            let s = w.status(&p, "app");
            assert_eq!(s.state.terminated.as_ref().map(|t| t.exit_code), Some(code));
            assert_eq!(w.condition(&p, "Ready").reason(), Some("PodCompleted"));
            assert_eq!(w.agent.next_wake(), None);
        }
    }
}

#[test]
fn a_container_over_its_memory_limit_is_reported_oom_killed() {
    let mut w = World::synced();
    let p = pod("hog", &format!("  restartPolicy: Never\n{ONE}"));
    w.put(p.clone());
    w.settle();
    w.exit_with(&p, "app", Exit { code: 137, signal: Some(9), oom_killed: true });
    w.settle();
    let t = w.status(&p, "app").state.terminated.expect("terminated");
    assert_eq!((t.exit_code, t.signal, t.reason.as_deref()), (137, Some(9), Some("OOMKilled")));
    assert_eq!(w.phase(&p), Some(PodPhase::Failed));
}

#[test]
fn a_deleted_pod_gets_sigterm_then_sigkill_at_its_grace_end_then_goes() {
    let mut w = World::synced();
    let p = pod("web", &format!("  terminationGracePeriodSeconds: 5\n{TWO}"));
    w.put(p.clone());
    w.settle();
    let mut deleting = (*w.stored(&p)).clone();
    deleting.metadata.deletion_timestamp = Some(Time::from_millis(w.now + 5_000));
    deleting.metadata.deletion_grace_period_seconds = Some(5);
    w.put(Arc::new(deleting));
    let actions = w.settle();
    assert_eq!(count(&actions, |a| matches!(a, Action::Signal { signal: Signal::Term, .. })), 2);
    assert_eq!(w.condition(&p, "Ready").status, ConditionStatus::False);
    // One stops by itself; the other does not.
    w.exit(&p, "a", 0);
    assert!(w.settle().iter().all(|a| !matches!(a, Action::KillPod { .. } | Action::RemoveSandbox { .. })));
    assert_eq!(w.agent.next_wake(), Some(T0 + 5_000));
    w.at(T0 + 4_999);
    assert!(w.settle().is_empty());
    w.at(T0 + 5_000);
    let actions = w.settle();
    assert_eq!(actions, vec![Action::KillPod { uid: uid(&p) }]);
    // Nothing is started again meanwhile, and nothing more is done until the run ends.
    w.at(T0 + 60_000);
    assert!(w.settle().is_empty());
    w.exit_with(&p, "b", Exit { code: 137, signal: Some(9), oom_killed: false });
    let actions = w.settle();
    assert_eq!(count(&actions, |a| matches!(a, Action::RemoveSandbox { .. })), 1);
    assert_eq!(count(&actions, |a| matches!(a, Action::DeletePod { .. })), 1);
    assert!(w.store.is_empty() && w.sandboxes.is_empty() && w.live.is_empty());
    assert_eq!(w.agent.pods().count(), 0);
    assert_eq!(starts(&w.log), 2);
}

/// The watch was told its revision expired, and the agent lists its node's pods again: what
/// changed in the gap is acted on once (a pod deleted for good is stopped, one marked for
/// deletion gets SIGTERM, a new one starts), what did not change is left alone (nothing is
/// started twice), and the same list again does nothing.
#[test]
fn a_relist_after_an_expired_watch_misses_nothing_and_repeats_nothing() {
    let mut w = World::new(Settings { host_ip: Some("192.168.0.1".into()), ..Settings::new("n1") });
    let (a, b, c, d) = (pod("a", ONE), pod("b", ONE), pod("c", ONE), pod("d", ONE));
    // The first list: what the agent runs.
    for p in [&a, &b, &c] {
        w.rev += 1;
        w.store.insert(key(p), (*p).clone());
    }
    let first: Vec<Arc<Pod>> = w.store.values().cloned().collect();
    w.agent.listed(&first, w.rev, w.now);
    w.settle();
    assert_eq!(starts(&w.log), 3);
    assert_eq!(w.phase(&a), Some(PodPhase::Running));
    // The gap, which the agent's watch missed: `a` deleted for good, `b` marked for deletion,
    // `d` created; `c` unchanged.
    w.store.remove(&key(&a));
    let mut deleting = (*w.stored(&b)).clone();
    deleting.metadata.deletion_timestamp = Some(Time::from_millis(w.now + 30_000));
    deleting.metadata.deletion_grace_period_seconds = Some(30);
    w.store.insert(key(&b), Arc::new(deleting));
    w.store.insert(key(&d), d.clone());
    w.rev += 3;
    let relist: Vec<Arc<Pod>> = w.store.values().cloned().collect();
    w.agent.listed(&relist, w.rev, w.now);
    let actions = w.settle();
    let signalled =
        |p: &Pod| count(&actions, |x| matches!(x, Action::Signal { uid: u, signal: Signal::Term, .. } if *u == uid(p)));
    assert_eq!(signalled(&a), 1, "the pod deleted in the gap is stopped: {actions:?}");
    assert_eq!(signalled(&b), 1, "the pod marked for deletion in the gap gets SIGTERM: {actions:?}");
    assert_eq!(signalled(&c), 0);
    assert_eq!(starts(&actions), 1, "only the new pod starts: {actions:?}");
    assert!(actions.iter().any(|x| matches!(x, Action::StartContainer { uid: u, .. } if *u == uid(&d))), "{actions:?}");
    // The same list again (a second expiry with nothing changed): nothing to do.
    w.agent.listed(&relist, w.rev, w.now);
    assert!(w.settle().is_empty(), "nothing is done twice");
    // `a` goes once its run ends; it was never in the store again.
    w.exit(&a, "app", 143);
    let actions = w.settle();
    assert_eq!(count(&actions, |x| matches!(x, Action::RemoveSandbox { uid: u } if *u == uid(&a))), 1);
    assert_eq!(count(&actions, |x| matches!(x, Action::DeletePod { .. })), 0);
}

#[test]
fn a_pod_that_left_the_store_is_stopped_and_forgotten_without_a_delete() {
    let mut w = World::synced();
    let p = pod("web", ONE);
    w.put(p.clone());
    w.settle();
    w.store.clear();
    w.agent.pod_gone(&key(&p), w.now);
    let actions = w.settle();
    assert_eq!(count(&actions, |a| matches!(a, Action::Signal { .. })), 1);
    w.exit(&p, "app", 143);
    let actions = w.settle();
    assert_eq!(count(&actions, |a| matches!(a, Action::RemoveSandbox { .. })), 1);
    assert_eq!(count(&w.log, |a| matches!(a, Action::DeletePod { .. })), 0);
    assert_eq!(w.agent.pods().count(), 0);
    // A pod of the same name but another uid is another pod.
    let q = pod("web", ONE);
    let mut q2 = (*q).clone();
    q2.metadata.uid = Some(Uid::derive(8, 1));
    w.put(Arc::new(q2));
    assert_eq!(starts(&w.settle()), 1);
}

#[test]
fn a_failing_liveness_probe_restarts_the_container() {
    let mut w = World::synced();
    let spec = "  containers:\n  - name: app\n    image: local\n    command: [server]\n    livenessProbe: {tcpSocket: {port: 80}, initialDelaySeconds: 2, periodSeconds: 1, failureThreshold: 2}\n";
    let p = pod("live", spec);
    w.put(p.clone());
    w.settle();
    assert_eq!(w.agent.next_wake(), Some(T0 + 2_000));
    w.at(T0 + 2_000);
    let actions = w.settle();
    assert_eq!(w.answer_probes(&actions, ProbeKind::Liveness, true), 1);
    for i in 0..2 {
        w.at(T0 + 3_000 + i * 1_000);
        let actions = w.settle();
        assert_eq!(w.answer_probes(&actions, ProbeKind::Liveness, false), 1);
    }
    let actions = w.settle();
    assert_eq!(count(&actions, |a| matches!(a, Action::Signal { .. })), 1);
    assert!(actions.iter().any(|a| matches!(a, Action::Event(r) if r.reason == "Killing")));
    assert!(actions.iter().any(|a| matches!(a, Action::Event(r) if r.reason == "Unhealthy")));
    // No probe of a run being stopped; SIGKILL after the grace period if it does not stop.
    w.at(T0 + 4_000 + 30_000);
    let actions = w.settle();
    assert_eq!(count(&actions, |a| matches!(a, Action::Probe { .. })), 0);
    assert_eq!(count(&actions, |a| matches!(a, Action::KillContainer { .. })), 1);
    w.exit_with(&p, "app", Exit { code: 137, signal: Some(9), oom_killed: false });
    let actions = w.settle();
    assert_eq!(starts(&actions), 1);
    assert_eq!(w.status(&p, "app").restart_count, 1);
}

#[test]
fn a_failing_readiness_probe_turns_the_pod_not_ready_and_back() {
    let mut w = World::synced();
    let spec = "  containers:\n  - name: app\n    image: local\n    command: [server]\n    readinessProbe: {httpGet: {port: 80, path: /ready}, periodSeconds: 1, failureThreshold: 1}\n";
    let p = pod("ready", spec);
    w.put(p.clone());
    let actions = w.settle();
    // Not ready until the probe passes.
    assert_eq!(w.condition(&p, "Ready").status, ConditionStatus::False);
    assert!(!w.status(&p, "app").ready);
    assert_eq!(w.answer_probes(&actions, ProbeKind::Readiness, true), 1);
    w.settle();
    assert_eq!(w.condition(&p, "Ready").status, ConditionStatus::True);
    let since = w.condition(&p, "Ready").last_transition_time;
    w.at(T0 + 1_000);
    let actions = w.settle();
    assert_eq!(w.answer_probes(&actions, ProbeKind::Readiness, false), 1);
    w.settle();
    assert_eq!(w.condition(&p, "Ready").status, ConditionStatus::False);
    assert_eq!(w.condition(&p, "Ready").last_transition_time, Some(Time::from_millis(T0 + 1_000)));
    assert_ne!(w.condition(&p, "Ready").last_transition_time, since);
    // Readiness does not restart anything.
    assert_eq!(starts(&w.log), 1);
    w.at(T0 + 2_000);
    let actions = w.settle();
    w.answer_probes(&actions, ProbeKind::Readiness, true);
    w.settle();
    assert_eq!(w.condition(&p, "Ready").status, ConditionStatus::True);
}

#[test]
fn liveness_and_readiness_wait_for_the_startup_probe() {
    let mut w = World::synced();
    let spec = "  containers:\n  - name: app\n    image: local\n    command: [server]\n    startupProbe: {exec: {command: [check]}, periodSeconds: 1, failureThreshold: 3}\n    livenessProbe: {exec: {command: [check]}, periodSeconds: 1}\n    readinessProbe: {exec: {command: [check]}, periodSeconds: 1}\n";
    let p = pod("slow", spec);
    w.put(p.clone());
    let actions = w.settle();
    assert_eq!(count(&actions, |a| matches!(a, Action::Probe { kind: ProbeKind::Startup, .. })), 1);
    assert_eq!(
        count(&actions, |a| matches!(a, Action::Probe { kind: ProbeKind::Liveness | ProbeKind::Readiness, .. })),
        0
    );
    w.answer_probes(&actions, ProbeKind::Startup, false);
    w.settle();
    assert_eq!(w.status(&p, "app").started, Some(false));
    w.at(T0 + 1_000);
    let actions = w.settle();
    assert_eq!(count(&actions, |a| matches!(a, Action::Probe { kind: ProbeKind::Liveness, .. })), 0);
    w.answer_probes(&actions, ProbeKind::Startup, true);
    let actions = w.settle();
    assert_eq!(w.status(&p, "app").started, Some(true));
    // Now the other two, and no more startup tries.
    assert_eq!(count(&actions, |a| matches!(a, Action::Probe { kind: ProbeKind::Liveness, .. })), 1);
    assert_eq!(w.answer_probes(&actions, ProbeKind::Readiness, true), 1);
    w.at(T0 + 2_000);
    let actions = w.settle();
    assert_eq!(count(&actions, |a| matches!(a, Action::Probe { kind: ProbeKind::Startup, .. })), 0);
    assert_eq!(w.condition(&p, "Ready").status, ConditionStatus::True);
}

#[test]
fn a_startup_probe_that_keeps_failing_restarts_the_container() {
    let mut w = World::synced();
    let spec = "  containers:\n  - name: app\n    image: local\n    command: [server]\n    startupProbe: {exec: {command: [check]}, periodSeconds: 1, failureThreshold: 2}\n";
    let p = pod("never", spec);
    w.put(p.clone());
    let actions = w.settle();
    w.answer_probes(&actions, ProbeKind::Startup, false);
    w.at(T0 + 1_000);
    let actions = w.settle();
    w.answer_probes(&actions, ProbeKind::Startup, false);
    let actions = w.settle();
    assert_eq!(count(&actions, |a| matches!(a, Action::Signal { .. })), 1);
}

#[test]
fn a_container_without_a_command_or_with_an_image_under_strict_images_waits_with_the_reason() {
    let mut w = World::synced();
    let spec = "  containers:\n  - {name: bare, image: nginx}\n  - {name: ok, image: local, command: [sleep, '9']}\n";
    let p = pod("bare", spec);
    w.put(p.clone());
    let actions = w.settle();
    // The other container runs; the pod stays Pending.
    assert_eq!(starts(&actions), 1);
    assert_eq!(w.waiting_reason(&p, "bare").as_deref(), Some(CREATE_CONTAINER_CONFIG_ERROR));
    let message = w.status(&p, "bare").state.waiting.and_then(|s| s.message).expect("a message");
    assert!(message.contains("command"), "{message}");
    assert_eq!(w.phase(&p), Some(PodPhase::Pending));
    assert_eq!(w.agent.next_wake(), None);

    let mut w = World::new(Settings { strict_images: true, ..Settings::new("n1") });
    w.agent.synced(T0);
    let p = pod("imaged", ONE);
    w.put(p.clone());
    let actions = w.settle();
    assert_eq!(starts(&actions), 0);
    assert_eq!(w.waiting_reason(&p, "app").as_deref(), Some(CREATE_CONTAINER_CONFIG_ERROR));
    let message = w.status(&p, "app").state.waiting.and_then(|s| s.message).expect("a message");
    assert!(message.contains("strict images") && message.contains("busybox"), "{message}");
}

#[test]
fn an_image_that_is_not_pulled_gets_a_warning_event_once() {
    let mut w = World::synced();
    let p = pod("web", ONE);
    w.put(p.clone());
    w.settle();
    w.exit(&p, "app", 1);
    w.settle();
    let warned = count(
        &w.log,
        |a| matches!(a, Action::Event(r) if r.reason == "ImageNotPulled" && r.type_ == EventType::Warning),
    );
    assert_eq!(warned, 1);
}

#[test]
fn a_container_the_runtime_cannot_start_waits_with_the_error_and_is_retried_with_back_off() {
    let mut w = World::synced();
    let p = pod("nocmd", ONE);
    w.put(p.clone());
    let _ = w.agent.take_actions();
    w.agent.runtime(RuntimeEvent::SandboxReady { uid: uid(&p), ip: Some("10.244.0.5".into()) }, w.now);
    let mut carried = Vec::new();
    let mut last = PodStatus::default();
    for (i, delay) in [0, 0, 10_000, 20_000].into_iter().enumerate() {
        if delay > 0 {
            // Not before the back-off.
            w.at(w.now + delay - 1);
            assert!(!w.agent.take_actions().iter().any(|a| matches!(a, Action::StartContainer { .. })));
            w.at(w.now + 1);
        }
        let mut actions = std::mem::take(&mut carried);
        actions.extend(w.agent.take_actions());
        let attempt = u32::try_from(i + 1).unwrap_or(0);
        assert!(
            actions.iter().any(|a| matches!(a, Action::StartContainer { attempt: n, .. } if *n == attempt)),
            "{i}: {actions:?}"
        );
        let event = RuntimeEvent::ContainerFailed {
            uid: uid(&p),
            container: "app".into(),
            attempt,
            reason: RUN_CONTAINER_ERROR,
            message: "exec: \"sleep\": executable file not found in $PATH".into(),
        };
        w.agent.runtime(event, w.now);
        // Written on change only: the same failure again changes nothing.
        let writes = w.agent.statuses(w.now);
        assert_eq!(writes.len(), usize::from(i == 0), "{i}");
        if let Some(write) = writes.first() {
            last = write.status.clone();
        }
        let s = &last.container_statuses[0];
        let waiting = s.state.waiting.as_ref().expect("waiting");
        assert_eq!(waiting.reason.as_deref(), Some(RUN_CONTAINER_ERROR));
        assert!(waiting.message.as_deref().is_some_and(|m| m.contains("not found")));
        assert_eq!(s.restart_count, 0);
        assert_eq!(last.phase, Some(PodPhase::Pending));
        if !writes.is_empty() {
            w.agent.status_written(uid(&p), Written::Applied { revision: 100 + u64::try_from(i).unwrap_or(0) });
        }
        carried = w.agent.take_actions();
        assert!(carried.iter().any(|a| matches!(a, Action::Event(r) if r.reason == "Failed")));
    }
}

#[test]
fn a_sandbox_that_cannot_be_made_is_retried_with_back_off_and_reported() {
    let mut w = World::synced();
    let p = pod("net", ONE);
    w.put(p.clone());
    let actions = w.agent.take_actions();
    assert!(matches!(actions[0], Action::CreateSandbox { .. }));
    w.agent.runtime(RuntimeEvent::SandboxFailed { uid: uid(&p), message: "cni: bridge failed".into() }, w.now);
    let actions = w.agent.take_actions();
    assert!(actions.iter().any(|a| matches!(a, Action::Event(r) if r.reason == "FailedCreatePodSandBox")));
    // At once the first time, then after the back-off.
    assert!(actions.iter().any(|a| matches!(a, Action::CreateSandbox { .. })));
    w.agent.runtime(RuntimeEvent::SandboxFailed { uid: uid(&p), message: "cni: bridge failed".into() }, w.now);
    let _ = w.agent.take_actions();
    assert_eq!(w.agent.next_wake(), Some(T0 + 10_000));
    w.at(T0 + 10_000);
    assert!(w.settle().iter().any(|a| matches!(a, Action::CreateSandbox { .. })));
    assert_eq!(w.phase(&p), Some(PodPhase::Running));
}

#[test]
fn a_restarted_agent_adopts_what_runs_without_restarting_it_and_cleans_up_the_rest() {
    // Before: a pod runs with one restart.
    let mut before = World::synced();
    let p = pod("kept", TWO);
    before.put(p.clone());
    before.settle();
    before.exit(&p, "a", 1);
    before.settle();
    let stored = before.stored(&p);
    let writes = before.writes;
    // After: the runtime reports that pod's runs (b's exit happened while no agent ran) and
    // one of a pod the store no longer has.
    let mut w = World::new(Settings { host_ip: Some("192.168.0.1".into()), ..Settings::new("n1") });
    w.now = T0 + 5_000;
    let ip = stored.status.pod_ip.as_ref().map(ToString::to_string);
    let found = vec![
        Found { name: "a".into(), attempt: 2, started_ms: T0, exit: None },
        Found {
            name: "b".into(),
            attempt: 1,
            started_ms: T0,
            exit: Some((Exit { code: 2, ..Exit::default() }, T0 + 4_000)),
        },
    ];
    w.agent.adopt(key(&p), uid(&p), ip, found, w.now);
    w.live.insert((uid(&p), "a".into()), 2);
    w.sandboxes.insert(uid(&p), ());
    let orphan = Uid::derive(99, 0);
    let orphan_key = ObjectKey::new(Kind::Pod, "default", "old");
    let found = vec![Found { name: "x".into(), attempt: 1, started_ms: T0, exit: None }];
    w.agent.adopt(orphan_key, orphan, Some("10.244.0.77".into()), found, w.now);
    w.live.insert((orphan, "x".into()), 1);
    w.sandboxes.insert(orphan, ());
    // Nothing happens until the list is in.
    assert!(w.settle().is_empty());
    w.rev = 100;
    w.put(stored.clone());
    w.agent.synced(w.now);
    let actions = w.settle();
    // No new sandbox; a keeps running; b's exit is restarted (its second run); the orphan is
    // stopped.
    assert_eq!(count(&actions, |a| matches!(a, Action::CreateSandbox { .. })), 0);
    assert_eq!(starts(&actions), 1);
    assert!(actions.iter().any(|a| matches!(a, Action::StartContainer { attempt: 2, container: 1, .. })));
    assert!(actions.iter().any(|a| matches!(a, Action::Signal { uid, .. } if *uid == orphan)));
    assert_eq!(w.status(&p, "a").restart_count, 1);
    assert_eq!(w.status(&p, "b").restart_count, 1);
    assert!(w.status(&p, "a").ready);
    w.exit(
        &Pod { metadata: crate::meta::ObjectMeta { uid: Some(orphan), ..Default::default() }, ..Pod::default() },
        "x",
        143,
    );
    let actions = w.settle();
    assert!(actions.iter().any(|a| matches!(a, Action::RemoveSandbox { uid } if *uid == orphan)));
    assert_eq!(count(&w.log, |a| matches!(a, Action::DeletePod { .. })), 0);
    assert_eq!(w.agent.pods().count(), 1);
    assert!(writes > 0);
}

#[test]
fn an_adopted_pod_whose_status_is_unchanged_is_not_written() {
    let mut before = World::synced();
    let p = pod("same", ONE);
    before.put(p.clone());
    before.settle();
    let stored = before.stored(&p);
    let mut w = World::new(Settings { host_ip: Some("192.168.0.1".into()), ..Settings::new("n1") });
    w.now = T0 + 5_000;
    let ip = stored.status.pod_ip.as_ref().map(ToString::to_string);
    w.agent.adopt(
        key(&p),
        uid(&p),
        ip,
        vec![Found { name: "app".into(), attempt: 1, started_ms: T0, exit: None }],
        w.now,
    );
    w.put(stored);
    w.agent.synced(w.now);
    assert!(w.settle().is_empty());
    assert_eq!(w.writes, 0);
}

#[test]
fn a_pod_the_store_says_is_done_is_not_run_again() {
    let mut before = World::synced();
    let p = pod("job", &format!("  restartPolicy: Never\n{ONE}"));
    before.put(p.clone());
    before.settle();
    before.exit(&p, "app", 0);
    before.settle();
    let stored = before.stored(&p);
    assert_eq!(stored.status.phase, Some(PodPhase::Succeeded));
    let mut w = World::synced();
    w.put(stored);
    assert!(w.settle().is_empty());
}

#[test]
fn reports_of_runs_it_does_not_know_are_ignored() {
    let mut w = World::synced();
    let p = pod("web", ONE);
    w.put(p.clone());
    w.settle();
    let stale =
        RuntimeEvent::ContainerExited { uid: uid(&p), container: "app".into(), attempt: 7, exit: Exit::default() };
    w.agent.runtime(stale, w.now);
    w.agent.runtime(
        RuntimeEvent::ContainerExited {
            uid: Uid::derive(1, 1),
            container: "app".into(),
            attempt: 1,
            exit: Exit::default(),
        },
        w.now,
    );
    assert!(w.settle().is_empty());
    assert!(w.status(&p, "app").state.running.is_some());
}

#[test]
fn a_pod_bound_elsewhere_is_not_run() {
    let mut w = World::synced();
    let mut p = (*pod("web", ONE)).clone();
    p.spec.node_name = Some("other".into());
    w.agent.pod(&Arc::new(p), 11, w.now);
    assert!(w.agent.take_actions().is_empty());
    assert_eq!(w.agent.pods().count(), 0);
}

#[test]
fn a_run_whose_start_was_out_when_its_pod_was_killed_is_killed_on_its_own() {
    let mut w = World::synced();
    let p = pod("late", &format!("  terminationGracePeriodSeconds: 1\n{ONE}"));
    w.put(p.clone());
    // The sandbox is made; the start goes out but is not answered yet.
    let _ = w.agent.take_actions();
    w.agent.runtime(RuntimeEvent::SandboxReady { uid: uid(&p), ip: Some("10.244.0.9".into()) }, w.now);
    assert_eq!(starts(&w.agent.take_actions()), 1);
    let mut deleting = (*p).clone();
    deleting.metadata.deletion_timestamp = Some(Time::from_millis(w.now + 1_000));
    deleting.metadata.deletion_grace_period_seconds = Some(1);
    w.agent.pod(&Arc::new(deleting), 20, w.now);
    w.at(w.now + 1_000);
    assert_eq!(w.agent.take_actions(), vec![Action::KillPod { uid: uid(&p) }]);
    // The start lands after the kill: that run is SIGKILLed by itself, not left to SIGTERM.
    w.agent.runtime(RuntimeEvent::ContainerStarted { uid: uid(&p), container: "app".into(), attempt: 1 }, w.now);
    let actions = w.agent.take_actions();
    assert!(
        actions.contains(&Action::KillContainer { uid: uid(&p), container: "app".into(), attempt: 1 }),
        "{actions:?}"
    );
}

#[test]
fn a_status_someone_else_wrote_while_a_write_was_out_is_written_back() {
    let mut w = World::synced();
    let p = pod("race", ONE);
    w.put(p.clone());
    let _ = w.agent.take_actions();
    w.agent.runtime(RuntimeEvent::SandboxReady { uid: uid(&p), ip: Some("10.244.0.9".into()) }, w.now);
    w.agent.runtime(RuntimeEvent::ContainerStarted { uid: uid(&p), container: "app".into(), attempt: 1 }, w.now);
    let ours = w.agent.statuses(w.now);
    assert_eq!(ours.len(), 1);
    // Ours applies at 30; meanwhile the watch shows another writer's at 31 (Ready=False, as
    // the node lifecycle controller writes).
    let mut theirs = (*p).clone();
    theirs.status = ours[0].status.clone();
    theirs.status.conditions.retain(|c| c.type_ != "Ready");
    theirs.status.conditions.push(PodCondition::new("Ready", ConditionStatus::False, Time::from_millis(w.now)));
    w.agent.pod(&Arc::new(theirs), 31, w.now);
    w.agent.status_written(uid(&p), Written::Applied { revision: 30 });
    // Not at once: the kubelet's status manager puts its own back at its sync period.
    assert!(w.agent.statuses(w.now).is_empty(), "no tight loop of writes against another writer");
    assert_eq!(w.agent.next_wake(), Some(w.now + STATUS_RESYNC_MS));
    w.at(w.now + STATUS_RESYNC_MS - 1);
    assert!(w.agent.statuses(w.now).is_empty());
    w.at(w.now + 1);
    let again = w.agent.statuses(w.now);
    assert_eq!(again.len(), 1, "the store's status differs from the agent's");
    let ready = again[0].status.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status);
    assert_eq!(ready, Some(ConditionStatus::True));
}

/// A status someone else writes over the agent's (the node lifecycle controller marking a
/// lost node's pods not Ready) is put back after [`STATUS_RESYNC_MS`], not at once, so that
/// the two never write in a tight loop; a change of the agent's own is written at once.
#[test]
fn a_status_someone_else_wrote_over_the_agents_is_put_back_after_the_resync_period() {
    let mut w = World::synced();
    let p = pod("over", ONE);
    w.put(p.clone());
    w.settle();
    assert_eq!(w.condition(&p, "Ready").status, ConditionStatus::True);
    let writes = w.writes;
    let mut theirs = (*w.stored(&p)).clone();
    theirs.status.conditions.retain(|c| c.type_ != "Ready");
    theirs.status.conditions.push(PodCondition::new("Ready", ConditionStatus::False, Time::from_millis(w.now)));
    w.put(Arc::new(theirs.clone()));
    w.settle();
    assert_eq!(w.writes, writes, "not written back at once");
    assert_eq!(w.condition(&p, "Ready").status, ConditionStatus::False);
    // It goes on for a while (each round of the other writer's): still nothing.
    w.at(w.now + 4_000);
    w.put(Arc::new(theirs));
    w.settle();
    assert_eq!(w.writes, writes);
    w.at(T0 + STATUS_RESYNC_MS);
    w.settle();
    assert_eq!(w.writes, writes + 1, "written back once the resync period passed");
    assert_eq!(w.condition(&p, "Ready").status, ConditionStatus::True);
    assert_eq!(
        w.condition(&p, "Ready").last_transition_time,
        Some(Time::from_millis(T0)),
        "the condition keeps the time of the agent's own report"
    );

    // Overwritten again, and the agent's own status changes (the container exits): at once.
    let mut theirs = (*w.stored(&p)).clone();
    theirs.status.conditions.retain(|c| c.type_ != "Ready");
    theirs.status.conditions.push(PodCondition::new("Ready", ConditionStatus::False, Time::from_millis(w.now)));
    w.put(Arc::new(theirs));
    w.settle();
    assert_eq!(w.writes, writes + 1);
    w.exit(&p, "app", 3);
    w.settle();
    assert!(w.writes > writes + 1, "a change of the agent's own is written at once");
    assert_eq!(w.status(&p, "app").restart_count, 1);
}

/// A pod whose status is to be written back and that leaves the store before the time: once
/// the time passed, the agent's wake-ups are in the future (the loop sleeps, never spins on a
/// write that cannot go).
#[test]
fn a_write_back_that_cannot_go_does_not_keep_the_agent_awake() {
    let mut w = World::synced();
    let p = pod("left", ONE);
    w.put(p.clone());
    w.settle();
    let mut theirs = (*w.stored(&p)).clone();
    theirs.status.conditions.retain(|c| c.type_ != "Ready");
    theirs.status.conditions.push(PodCondition::new("Ready", ConditionStatus::False, Time::from_millis(w.now)));
    w.put(Arc::new(theirs));
    w.settle();
    assert_eq!(w.agent.next_wake(), Some(w.now + STATUS_RESYNC_MS));
    w.store.clear();
    w.agent.pod_gone(&key(&p), w.now);
    w.settle();
    w.at(w.now + STATUS_RESYNC_MS);
    w.settle();
    assert!(w.agent.next_wake().is_none_or(|t| t > w.now), "{:?} at {}", w.agent.next_wake(), w.now);
}

#[test]
fn a_liveness_kill_restarts_under_on_failure_whatever_the_exit_code() {
    let mut w = World::synced();
    let spec = "  restartPolicy: OnFailure\n  containers:\n  - name: app\n    image: local\n    command: [server]\n    livenessProbe: {tcpSocket: {port: 80}, periodSeconds: 1, failureThreshold: 1}\n";
    let p = pod("graceful", spec);
    w.put(p.clone());
    let actions = w.settle();
    w.answer_probes(&actions, ProbeKind::Liveness, false);
    let actions = w.settle();
    assert!(
        actions.iter().any(
            |a| matches!(a, Action::Event(r) if r.reason == "Killing" && r.message.ends_with("will be restarted"))
        )
    );
    // It stops cleanly on SIGTERM (exit 0): restarted all the same.
    w.exit(&p, "app", 0);
    assert_eq!(starts(&w.settle()), 1);
    assert_eq!(w.phase(&p), Some(PodPhase::Running));
}

mod random {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// Add pod `i` (restart policy, probes) if it is not there.
        Add(u8, u8, bool),
        /// Start a graceful deletion of pod `i` with this grace (s).
        Delete(u8, i64),
        /// Pod `i` leaves the store.
        Gone(u8),
        /// A run of pod `i`'s container `c` ends with this code (OOM-killed or not).
        Exit(u8, u8, i32, bool),
        /// The probes out come back so.
        Probes(bool),
        /// Time passes (ms).
        Wait(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4u8, 0..3u8, any::<bool>()).prop_map(|(i, p, b)| Op::Add(i, p, b)),
            (0..4u8, 0..3i64).prop_map(|(i, g)| Op::Delete(i, g)),
            (0..4u8).prop_map(Op::Gone),
            (0..4u8, 0..2u8, 0..3i32, any::<bool>()).prop_map(|(i, c, x, o)| Op::Exit(i, c, x, o)),
            any::<bool>().prop_map(Op::Probes),
            (0..40_000i64).prop_map(Op::Wait),
        ]
    }

    fn spec(policy: u8, probes: bool) -> String {
        let policy = ["Always", "OnFailure", "Never"][usize::from(policy % 3)];
        let probe = if probes {
            "    livenessProbe: {tcpSocket: {port: 80}, periodSeconds: 1, failureThreshold: 2}\n    readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 2}\n"
        } else {
            ""
        };
        format!(
            "  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 3\n  containers:\n  - name: a\n    image: local\n    command: [a]\n{probe}  - name: b\n    image: local\n    command: [b]\n"
        )
    }

    /// Runs `ops`; the actions taken, in order.
    fn run(ops: &[Op]) -> Vec<Action> {
        let mut w = World::synced();
        let mut generation = 0u32;
        let mut uids: BTreeMap<u8, Uid> = BTreeMap::new();
        let mut deleting: BTreeMap<Uid, ()> = BTreeMap::new();
        let mut probes_out: Vec<Action> = Vec::new();
        for op in ops {
            match op {
                Op::Add(i, policy, probes) => {
                    let name = format!("p{i}");
                    if w.store.contains_key(&ObjectKey::new(Kind::Pod, "default", &name)) {
                        continue;
                    }
                    generation += 1;
                    let mut p = (*pod(&name, &spec(*policy, *probes))).clone();
                    p.metadata.uid = Some(Uid::derive(1_000, generation));
                    uids.insert(*i, Uid::derive(1_000, generation));
                    w.put(Arc::new(p));
                }
                Op::Delete(i, grace) => {
                    let key = ObjectKey::new(Kind::Pod, "default", &format!("p{i}"));
                    let Some(p) = w.store.get(&key) else { continue };
                    let mut p = (**p).clone();
                    if p.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    p.metadata.deletion_timestamp = Some(Time::from_millis(w.now + grace * 1_000));
                    p.metadata.deletion_grace_period_seconds = Some(*grace);
                    deleting.insert(p.metadata.uid.expect("uid"), ());
                    w.put(Arc::new(p));
                }
                Op::Gone(i) => {
                    let key = ObjectKey::new(Kind::Pod, "default", &format!("p{i}"));
                    if let Some(p) = w.store.remove(&key) {
                        deleting.insert(p.metadata.uid.expect("uid"), ());
                        w.agent.pod_gone(&key, w.now);
                    }
                }
                Op::Exit(i, c, code, oom) => {
                    let Some(uid) = uids.get(i).copied() else { continue };
                    let name = if *c == 0 { "a" } else { "b" };
                    if let Some(attempt) = w.live.remove(&(uid, name.to_owned())) {
                        let exit = Exit { code: *code, signal: None, oom_killed: *oom };
                        w.agent.runtime(
                            RuntimeEvent::ContainerExited { uid, container: name.into(), attempt, exit },
                            w.now,
                        );
                    }
                }
                Op::Probes(ok) => {
                    for a in std::mem::take(&mut probes_out) {
                        if let Action::Probe { kind, .. } = &a {
                            w.answer_probes(std::slice::from_ref(&a), *kind, *ok);
                        }
                    }
                }
                Op::Wait(ms) => w.at(w.now + ms),
            }
            for a in w.settle() {
                match &a {
                    Action::Probe { .. } => probes_out.push(a.clone()),
                    Action::StartContainer { uid, .. } | Action::CreateSandbox { uid, .. } => {
                        assert!(!deleting.contains_key(uid), "started something of a pod being stopped: {a:?}");
                    }
                    Action::KillPod { uid } | Action::KillContainer { uid, .. } => {
                        // The runtime kills: the runs end.
                        let ended: Vec<(Uid, String)> = w.live.keys().filter(|(u, _)| u == uid).cloned().collect();
                        for (u, name) in ended {
                            if matches!(&a, Action::KillContainer { container, .. } if *container != name) {
                                continue;
                            }
                            let attempt = w.live.remove(&(u, name.clone())).unwrap_or(0);
                            let exit = Exit { code: 137, signal: Some(9), oom_killed: false };
                            w.agent.runtime(
                                RuntimeEvent::ContainerExited { uid: u, container: name, attempt, exit },
                                w.now,
                            );
                        }
                    }
                    _ => {}
                }
            }
            w.settle_probes(&mut probes_out);
        }
        // Everything ends: whatever runs exits, the deadlines pass; a pod being stopped or gone
        // leaves nothing behind.
        for _ in 0..3 {
            let live: Vec<(Uid, String)> = w.live.keys().cloned().collect();
            for (uid, name) in live {
                if deleting.contains_key(&uid) {
                    let attempt = w.live.remove(&(uid, name.clone())).unwrap_or(0);
                    w.agent.runtime(
                        RuntimeEvent::ContainerExited { uid, container: name, attempt, exit: Exit::default() },
                        w.now,
                    );
                }
            }
            w.at(w.now + 400_000);
            w.settle();
        }
        for uid in deleting.keys() {
            assert!(!w.sandboxes.contains_key(uid), "a stopped pod's sandbox is left");
            assert!(!w.agent.pods().any(|(_, u)| u == *uid) || w.store.values().any(|p| p.metadata.uid == Some(*uid)));
        }
        w.log
    }

    impl World {
        /// Probes asked for while settling are kept to be answered later.
        fn settle_probes(&mut self, out: &mut Vec<Action>) {
            for a in self.settle() {
                if matches!(a, Action::Probe { .. }) {
                    out.push(a);
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Whatever happens: no two runs of a container at once, no sandbox removed under a
        /// run, nothing started for a pod being stopped, every status write one the store
        /// takes, a stopped pod's sandbox gone in the end; and the same inputs give the same
        /// actions.
        #[test]
        fn the_agent_keeps_its_invariants_and_is_deterministic(ops in prop::collection::vec(op(), 1..60)) {
            let first = run(&ops);
            let second = run(&ops);
            prop_assert_eq!(first, second);
        }
    }
}
