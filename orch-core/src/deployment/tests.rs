//! The Deployment controller stepped with the ReplicaSet controller and a stand-in kubelet
//! (pods bound to one node, Running and Ready, deletions finished), round by round.

use super::*;
use crate::command::Outcome;
use crate::core_v1::{Pod, PodCondition};
use crate::reconcile::world::World;
use crate::replicaset::{self, ReplicaSets};

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: n}\nstatus: {capacity: {cpu: '1000', pods: '1000'}, \
                    conditions: [{type: Ready, status: 'True'}]}\n";

fn deployment(replicas: i32, strategy: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: {replicas}\n  \
         selector: {{matchLabels: {{app: web}}}}\n  strategy: {strategy}\n  template:\n    \
         metadata: {{labels: {{app: web}}}}\n    spec: {{containers: [{{name: c, image: 'nginx:1'}}]}}\n"
    )
}

/// The controllers and the stand-in kubelet over one state.
struct Cluster {
    w: World,
    sets: ReplicaSets,
    deployments: Deployments,
    /// Keys changed since each controller's last round, and its last round's fates.
    for_sets: (Vec<ObjectKey>, Vec<(Command, Fate)>),
    for_deployments: (Vec<ObjectKey>, Vec<(Command, Fate)>),
    /// The kubelet makes pods Ready.
    ready: bool,
    /// The kubelet finishes deletions.
    finish: bool,
    /// Checked after every entry: at most this many active pods, at least this many
    /// available (Ready for `minReadySeconds`) ones.
    bounds: Option<(usize, usize, i32)>,
    /// When set, the kubelet is slow in a seeded way: each step it does each thing it could
    /// do (bind, make Ready, finish a deletion) with even odds, but at least one.
    slow: Option<u64>,
}

impl Cluster {
    fn new(yaml: &str) -> Self {
        let mut c = Self {
            w: World::with(NODE),
            sets: ReplicaSets::new(replicaset::Settings::default()),
            deployments: Deployments::new(),
            for_sets: (Vec::new(), Vec::new()),
            for_deployments: (Vec::new(), Vec::new()),
            ready: true,
            finish: true,
            bounds: None,
            slow: None,
        };
        c.apply(parse(yaml).into_iter().map(Command::Create).collect());
        c
    }

    /// Applies `commands` in one entry; every controller will see what changed.
    fn apply(&mut self, commands: Vec<Command>) -> Vec<(Command, Fate)> {
        let (fates, changed) = self.w.run(commands);
        self.for_sets.0.extend(changed.iter().cloned());
        self.for_deployments.0.extend(changed);
        if let Some((most, fewest, min_ready)) = self.bounds {
            let active = self.active_pods();
            let available = active.iter().filter(|p| replicaset::available(p, min_ready, self.w.now_ms)).count();
            assert!(active.len() <= most, "{} pods, at most {most} allowed", active.len());
            assert!(available >= fewest, "{available} pods available, at least {fewest} wanted");
        }
        fates
    }

    /// One round of each; whether any proposed something.
    fn step(&mut self) -> bool {
        let now = self.w.now_ms;
        let (changed, fates) = std::mem::take(&mut self.for_sets);
        let commands = self.sets.reconcile(&self.w.state, now, false, &changed, &fates);
        let mut busy = !commands.is_empty();
        self.for_sets.1 = self.apply(commands);
        let (changed, fates) = std::mem::take(&mut self.for_deployments);
        let commands = self.deployments.reconcile(&self.w.state, now, false, &changed, &fates);
        busy |= !commands.is_empty();
        self.for_deployments.1 = self.apply(commands);
        let kubelet = self.kubelet();
        busy |= !kubelet.is_empty();
        self.apply(kubelet);
        busy
    }

    /// What the stand-in kubelet does now: bind, start and make Ready, finish deletions.
    fn kubelet(&mut self) -> Vec<Command> {
        let now = Time::from_millis(self.w.now_ms);
        let mut commands = Vec::new();
        for pod in self.w.pods() {
            let key = ObjectKey::new(Kind::Pod, "default", &pod.metadata.name);
            if pod.metadata.deletion_timestamp.is_some() {
                if self.finish {
                    commands.push(Command::Delete {
                        key,
                        grace_period_seconds: Some(0),
                        preconditions: Preconditions::default(),
                        propagation_policy: None,
                    });
                }
            } else if pod.spec.node_name.is_none() {
                commands.push(Command::Bind {
                    namespace: "default".into(),
                    name: pod.metadata.name.to_string(),
                    node: "n".into(),
                    preconditions: Preconditions::default(),
                });
            } else if self.ready && !replicaset::available(&pod, 0, self.w.now_ms) {
                let mut p = pod.clone();
                p.status.phase = Some(PodPhase::Running);
                p.status.conditions.retain(|c| c.type_ != "Ready");
                p.status.conditions.push(PodCondition::new("Ready", ConditionStatus::True, now));
                commands.push(Command::UpdateStatus(Object::from(p)));
            }
        }
        if let Some(seed) = self.slow.as_mut() {
            let first = commands.first().cloned();
            let mut kept: Vec<Command> = commands.into_iter().filter(|_| splitmix(seed) & 1 == 0).collect();
            if kept.is_empty() {
                kept.extend(first);
            }
            return kept;
        }
        commands
    }

    /// Steps until nothing moves and no controller waits for a time of its own (the clock
    /// is moved to it), checking `each` after every step.
    fn settle(&mut self, mut each: impl FnMut(&Self)) {
        for _ in 0..400 {
            let busy = self.step();
            each(self);
            if !busy {
                match self.sets.wake_at_ms().into_iter().chain(self.deployments.wake_at_ms()).min() {
                    // A progress deadline far off is not waited for.
                    Some(at) if at <= self.w.now_ms + 60_000 => self.w.now_ms = self.w.now_ms.max(at),
                    _ => return,
                }
            }
        }
        panic!("did not settle");
    }

    fn deployment(&self) -> Deployment {
        match self.w.state.get(&ObjectKey::new(Kind::Deployment, "default", "web")) {
            Some(Object::Deployment(d)) => (**d).clone(),
            other => panic!("no deployment: {other:?}"),
        }
    }

    /// Its sets, oldest first.
    fn sets(&self) -> Vec<ReplicaSet> {
        controlled_sets(&self.w.state, &self.deployment()).iter().map(|rs| (**rs).clone()).collect()
    }

    fn edit(&mut self, f: impl FnOnce(&mut Deployment)) {
        let mut d = self.deployment();
        f(&mut d);
        let fates = self.apply(vec![Command::Update(Object::from(d))]);
        assert!(matches!(fates[0].1, Fate::Applied(Ok(_))), "{fates:?}");
    }

    fn active_pods(&self) -> Vec<Pod> {
        self.w.pods().into_iter().filter(replicaset::active).collect()
    }

    fn images(&self) -> BTreeMap<String, usize> {
        let mut images = BTreeMap::new();
        for p in self.active_pods() {
            *images.entry(p.spec.containers[0].image.to_string()).or_insert(0) += 1;
        }
        images
    }
}

/// The next of a splitmix64 sequence.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn parse(yaml: &str) -> Vec<Object> {
    crate::manifest::parse_manifests(yaml).expect("valid")
}

fn progressing(d: &Deployment) -> (ConditionStatus, String) {
    let c = condition(&d.status.conditions, PROGRESSING).expect("a Progressing condition");
    (c.status, c.reason.as_deref().unwrap_or_default().to_owned())
}

/// A Deployment deleted with `propagationPolicy: Orphan` leaves its set and pods; created
/// again, it adopts the set (Kubernetes' controller reference manager) instead of making a
/// second one (whose name the first holds): no pod is added or replaced.
#[test]
fn a_deployment_created_again_adopts_its_orphaned_set() {
    let mut c = Cluster::new(&deployment(3, "{type: RollingUpdate}"));
    c.settle(|_| {});
    let pods_before: Vec<String> = c.active_pods().iter().map(|p| p.metadata.name.to_string()).collect();
    let delete = Command::Delete {
        key: ObjectKey::new(Kind::Deployment, "default", "web"),
        grace_period_seconds: None,
        preconditions: Preconditions::default(),
        propagation_policy: Some(crate::command::PropagationPolicy::Orphan),
    };
    // The garbage collector's part, by hand: the set's reference removed, then the finalizer.
    c.apply(vec![delete]);
    let mut orphan = Object::from(c.sets()[0].clone());
    orphan.meta_mut().owner_references.clear();
    let mut gone = c.w.state.get(&ObjectKey::new(Kind::Deployment, "default", "web")).cloned().expect("held");
    gone.meta_mut().finalizers.clear();
    let fates = c.apply(vec![Command::Update(orphan), Command::Update(gone)]);
    assert!(fates.iter().all(|(_, f)| matches!(f, Fate::Applied(Ok(_)))), "{fates:?}");
    assert!(!c.w.has(Kind::Deployment, "default", "web"));
    c.settle(|_| {});
    assert_eq!(c.w.state.list(Kind::ReplicaSet, None).count(), 1, "the orphaned set stays, alone");

    c.apply(parse(&deployment(3, "{type: RollingUpdate}")).into_iter().map(Command::Create).collect());
    c.settle(|_| {});
    assert_eq!(c.w.state.list(Kind::ReplicaSet, None).count(), 1, "adopted, not duplicated");
    let sets = c.sets();
    assert_eq!(sets.len(), 1, "{sets:?}");
    let d = c.deployment();
    assert_eq!(sets[0].metadata.controller_ref().map(|r| r.uid), d.metadata.uid);
    assert_eq!(sets[0].metadata.controller_ref().and_then(|r| r.block_owner_deletion), Some(true));
    let pods_after: Vec<String> = c.active_pods().iter().map(|p| p.metadata.name.to_string()).collect();
    assert_eq!(pods_after, pods_before, "the same pods");
    assert_eq!(d.status.available_replicas, Some(3));
}

/// A new Deployment gets one set, named and labelled with its template's hash, revision 1,
/// sized to its replicas; once the pods are Ready the status says the rollout is complete.
#[test]
fn a_deployment_gets_its_set_and_completes() {
    let mut c = Cluster::new(&deployment(3, "{type: RollingUpdate}"));
    c.settle(|_| {});
    let d = c.deployment();
    let sets = c.sets();
    assert_eq!(sets.len(), 1);
    let rs = &sets[0];
    let hash = template_hash(&d.spec.template, None);
    assert_eq!(rs.metadata.name, format!("web-{hash}"));
    assert!(hash.len() <= 10 && hash.bytes().all(|b| ALPHANUMS.contains(&b)), "{hash}");
    assert_eq!(rs.metadata.labels.get(POD_TEMPLATE_HASH_LABEL), Some(hash.as_str()));
    assert_eq!(rs.spec.selector.match_labels.get(POD_TEMPLATE_HASH_LABEL), Some(hash.as_str()));
    assert_eq!(rs.spec.template.metadata.labels.get(POD_TEMPLATE_HASH_LABEL), Some(hash.as_str()));
    assert_eq!(rs.revision(), Some(1));
    assert_eq!(d.metadata.annotations.get(REVISION_ANNOTATION), Some("1"));
    assert_eq!(rs.spec.replicas, Some(3));
    assert_eq!(c.active_pods().len(), 3);
    let s = &d.status;
    assert_eq!(
        (s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas, s.unavailable_replicas),
        (Some(3), Some(3), Some(3), Some(3), Some(0))
    );
    assert_eq!(s.observed_generation, d.metadata.generation);
    assert_eq!(progressing(&d), (ConditionStatus::True, NEW_RS_AVAILABLE.to_owned()));
    let available = condition(&s.conditions, AVAILABLE).expect("Available");
    assert_eq!(available.status, ConditionStatus::True);
    assert!(c.deployments.wake_at_ms().is_none(), "nothing to wait for");
    // One event, on the Deployment, as Kubernetes': its set scaled up from nothing.
    let events: Vec<_> = c.deployments.events().into_iter().map(|e| (e.kind, e.name, e.reason, e.message)).collect();
    assert_eq!(
        events,
        [(
            Kind::Deployment,
            "web".to_owned(),
            "ScalingReplicaSet",
            format!("Scaled up replica set web-{hash} from 0 to 3")
        )]
    );
}

/// `ScalingReplicaSet` waits for the set's write: a refused one (proposed again later) adds
/// no event.
#[test]
fn a_refused_set_write_reports_no_scaling() {
    let mut c = Cluster::new(&deployment(3, "{type: RollingUpdate}"));
    let commands = c.deployments.reconcile(&c.w.state, c.w.now_ms, true, &[], &[]);
    assert!(commands.iter().any(|cmd| matches!(cmd, Command::Create(Object::ReplicaSet(_)))), "{commands:?}");
    let refused: Vec<(Command, Fate)> = commands
        .into_iter()
        .map(|cmd| (cmd, Fate::Applied(Err(crate::command::ApplyError::BadRequest { reason: "no".into() }))))
        .collect();
    c.deployments.reconcile(&c.w.state, c.w.now_ms, false, &[], &refused);
    assert!(c.deployments.events().is_empty());
}

/// A rolling update never has more pods than replicas + maxSurge, nor fewer Ready than
/// replicas - maxUnavailable; it ends with every pod on the new template, revision 2.
#[test]
fn a_rolling_update_stays_within_max_surge_and_max_unavailable() {
    for (surge, unavailable) in [(1, 0), (0, 1), (2, 1), (3, 3)] {
        let strategy =
            format!("{{type: RollingUpdate, rollingUpdate: {{maxSurge: {surge}, maxUnavailable: {unavailable}}}}}");
        let mut c = Cluster::new(&deployment(5, &strategy));
        c.settle(|_| {});
        assert_eq!(c.images(), BTreeMap::from([("nginx:1".to_owned(), 5)]));
        c.bounds = Some((5 + surge as usize, 5 - unavailable as usize, 0));
        c.edit(|d| d.spec.template.spec.containers[0].image = "nginx:2".into());
        let mut most = 0;
        let mut fewest = usize::MAX;
        c.settle(|c| {
            let active = c.active_pods();
            let ready = active.iter().filter(|p| replicaset::available(p, 0, i64::MAX)).count();
            most = most.max(active.len());
            fewest = fewest.min(ready);
            let spec: i32 = c.sets().iter().map(|rs| rs.spec.replicas.unwrap_or(1)).sum();
            assert!(spec <= 5 + surge, "{spec} pods wanted with maxSurge {surge}");
        });
        assert!(most <= 5 + surge as usize, "{most} pods with maxSurge {surge}");
        assert!(fewest >= 5 - unavailable as usize, "{fewest} ready with maxUnavailable {unavailable}");
        assert_eq!(c.images(), BTreeMap::from([("nginx:2".to_owned(), 5)]), "surge {surge}");
        let sets = c.sets();
        assert_eq!(sets.len(), 2);
        assert_eq!((sets[0].spec.replicas, sets[0].revision()), (Some(0), Some(1)));
        assert_eq!((sets[1].spec.replicas, sets[1].revision()), (Some(5), Some(2)));
        let d = c.deployment();
        assert_eq!(d.metadata.annotations.get(REVISION_ANNOTATION), Some("2"));
        assert_eq!(progressing(&d), (ConditionStatus::True, NEW_RS_AVAILABLE.to_owned()));
        assert_eq!(d.status.updated_replicas, Some(5));
    }
}

/// Recreate: no new pod exists while an old one does, terminating ones included.
#[test]
fn recreate_starts_no_new_pod_while_an_old_one_remains() {
    let mut c = Cluster::new(&deployment(3, "{type: Recreate}"));
    c.settle(|_| {});
    c.edit(|d| d.spec.template.spec.containers[0].image = "nginx:2".into());
    // The old pods terminate but are not gone yet: the new set does not start.
    c.finish = false;
    c.settle(|_| {});
    let images: Vec<String> = c.w.pods().iter().map(|p| p.spec.containers[0].image.to_string()).collect();
    assert_eq!(images, vec!["nginx:1"; 3], "the old pods are still terminating");
    assert!(c.w.pods().iter().all(|p| p.metadata.deletion_timestamp.is_some()));
    c.finish = true;
    c.settle(|c| {
        let images: BTreeSet<String> = c.w.pods().iter().map(|p| p.spec.containers[0].image.to_string()).collect();
        assert!(images.len() <= 1, "old and new pods at once: {images:?}");
    });
    assert_eq!(c.images(), BTreeMap::from([("nginx:2".to_owned(), 3)]));
    assert_eq!(progressing(&c.deployment()), (ConditionStatus::True, NEW_RS_AVAILABLE.to_owned()));
}

/// `rollout undo` brings the old template back: its set becomes the new one under the next
/// revision, remembering the one it had.
#[test]
fn a_rollback_makes_the_old_set_new_again_under_the_next_revision() {
    let mut c = Cluster::new(&deployment(2, "{type: RollingUpdate}"));
    c.settle(|_| {});
    c.edit(|d| d.spec.template.spec.containers[0].image = "nginx:2".into());
    c.settle(|_| {});
    let first = c.sets()[0].metadata.name.clone();
    let fates = c.apply(vec![Command::RolloutUndo { namespace: "default".into(), name: "web".into(), to_revision: 0 }]);
    assert!(matches!(fates[0].1, Fate::Applied(Ok(_))), "{fates:?}");
    c.settle(|_| {});
    assert_eq!(c.images(), BTreeMap::from([("nginx:1".to_owned(), 2)]));
    let sets = c.sets();
    assert_eq!(sets.len(), 2, "no third set: the first is reused");
    let back = sets.iter().find(|rs| rs.metadata.name == first).expect("the first set");
    assert_eq!(back.revision(), Some(3));
    assert_eq!(back.metadata.annotations.get(REVISION_HISTORY_ANNOTATION), Some("1"));
    assert_eq!(back.spec.replicas, Some(2));
    assert_eq!(c.deployment().metadata.annotations.get(REVISION_ANNOTATION), Some("3"));
    // Revision 1 no longer exists; 2 does.
    let d = c.deployment();
    assert!(rollback_template(&c.w.state, &d, 1).is_err());
    let two = rollback_template(&c.w.state, &d, 2).expect("revision 2");
    assert_eq!(two.spec.containers[0].image.as_str(), "nginx:2");
    assert!(!two.metadata.labels.contains_key(POD_TEMPLATE_HASH_LABEL));
}

/// Old, empty sets beyond `revisionHistoryLimit` are deleted, lowest revision first.
#[test]
fn old_sets_beyond_the_history_limit_are_deleted() {
    let mut c = Cluster::new(&deployment(1, "{type: RollingUpdate}"));
    c.edit(|d| d.spec.revision_history_limit = Some(1));
    c.settle(|_| {});
    for image in ["nginx:2", "nginx:3", "nginx:4"] {
        c.edit(|d| d.spec.template.spec.containers[0].image = image.into());
        c.settle(|_| {});
    }
    let revisions: Vec<Option<i64>> = c.sets().iter().map(|rs| rs.revision()).collect();
    assert_eq!(revisions, vec![Some(3), Some(4)]);
}

/// Pods that never become Ready: after `progressDeadlineSeconds` without progress the
/// rollout is reported stalled; the controller asks to be woken for it.
#[test]
fn a_stalled_rollout_exceeds_its_progress_deadline() {
    let mut c = Cluster::new(&deployment(2, "{type: RollingUpdate}"));
    // Beyond what `settle` waits for: the test moves the clock itself.
    c.edit(|d| d.spec.progress_deadline_seconds = Some(120));
    c.ready = false;
    c.settle(|_| {});
    let d = c.deployment();
    let (status, reason) = progressing(&d);
    assert_eq!(status, ConditionStatus::True);
    assert_ne!(reason, NEW_RS_AVAILABLE);
    let updated = condition(&d.status.conditions, PROGRESSING).and_then(|c| c.last_update_time).expect("updated");
    let wake = c.deployments.wake_at_ms().expect("a timer for the deadline");
    assert_eq!(wake, updated.as_millis() + 120_000 + 1);
    // Not yet due: nothing to do.
    assert!(c.deployments.reconcile(&c.w.state, wake - 1, false, &[], &[]).is_empty());
    let commands = c.deployments.reconcile(&c.w.state, wake, false, &[], &[]);
    c.apply(commands);
    assert_eq!(progressing(&c.deployment()), (ConditionStatus::False, TIMED_OUT.to_owned()));
    assert!(c.deployments.wake_at_ms().is_none());
    // Pods Ready at last: the rollout completes.
    c.ready = true;
    c.settle(|_| {});
    assert_eq!(progressing(&c.deployment()), (ConditionStatus::True, NEW_RS_AVAILABLE.to_owned()));
}

/// A paused Deployment does not roll out a new template, but scales; resumed, it rolls out.
#[test]
fn a_paused_deployment_scales_but_does_not_roll_out_until_resumed() {
    let mut c = Cluster::new(&deployment(2, "{type: RollingUpdate}"));
    c.settle(|_| {});
    c.edit(|d| {
        d.spec.paused = Some(true);
        d.spec.template.spec.containers[0].image = "nginx:2".into();
    });
    c.settle(|_| {});
    assert_eq!(c.sets().len(), 1);
    assert_eq!(progressing(&c.deployment()), (ConditionStatus::Unknown, PAUSED.to_owned()));
    let fates = c.apply(vec![Command::Scale { key: ObjectKey::new(Kind::Deployment, "default", "web"), replicas: 4 }]);
    assert!(matches!(fates[0].1, Fate::Applied(Ok(_))));
    c.settle(|_| {});
    assert_eq!(c.images(), BTreeMap::from([("nginx:1".to_owned(), 4)]));
    c.edit(|d| d.spec.paused = None);
    c.settle(|_| {});
    assert_eq!(c.images(), BTreeMap::from([("nginx:2".to_owned(), 4)]));
    assert_eq!(c.sets().len(), 2);
    assert_eq!(progressing(&c.deployment()), (ConditionStatus::True, NEW_RS_AVAILABLE.to_owned()));
}

/// A Deployment of 10 in the middle of a rollout that cannot finish (the new pods never
/// become Ready): 10 old, 3 new (maxSurge 3).
fn stuck_mid_rollout() -> Cluster {
    let strategy = "{type: RollingUpdate, rollingUpdate: {maxSurge: 3, maxUnavailable: 0}}";
    let mut c = Cluster::new(&deployment(10, strategy));
    c.settle(|_| {});
    c.ready = false;
    c.edit(|d| d.spec.template.spec.containers[0].image = "nginx:2".into());
    c.settle(|_| {});
    c
}

/// Scaled in the middle of a rollout, the Deployment spreads the new replicas over its active
/// sets in proportion to their sizes (the surge included), then finishes the rollout.
#[test]
fn scaling_during_a_rollout_is_proportional() {
    let mut c = stuck_mid_rollout();
    let sizes: Vec<i32> = c.sets().iter().map(|rs| rs.spec.replicas.unwrap_or(0)).collect();
    assert_eq!(sizes, vec![10, 3], "the surge, stuck: the new pods never become Ready");
    let fates = c.apply(vec![Command::Scale { key: ObjectKey::new(Kind::Deployment, "default", "web"), replicas: 20 }]);
    assert!(matches!(fates[0].1, Fate::Applied(Ok(_))));
    c.step();
    // 20 + 3 allowed, 13 there: 10 to add, in proportion: 10 * 10 / 13 = 7 to the old set,
    // 10 * 3 / 13 = 2 to the new one, the 1 left over to the larger.
    let sizes: Vec<i32> = c.sets().iter().map(|rs| rs.spec.replicas.unwrap_or(0)).collect();
    assert_eq!(sizes.iter().sum::<i32>(), 23, "{sizes:?}");
    assert_eq!(sizes, vec![18, 5]);
    c.ready = true;
    c.settle(|_| {});
    assert_eq!(c.images(), BTreeMap::from([("nginx:2".to_owned(), 20)]));
}

/// Another object holds the new set's name: the collision count goes up and the set gets
/// another name.
#[test]
fn a_name_collision_raises_the_collision_count() {
    let mut c = Cluster::new(&deployment(1, "{type: RollingUpdate}"));
    let d = c.deployment();
    let taken = format!("web-{}", template_hash(&d.spec.template, None));
    let squatter = format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: {taken}}}\nspec:\n  replicas: 0\n  \
         selector: {{matchLabels: {{app: other}}}}\n  template:\n    metadata: {{labels: {{app: other}}}}\n    \
         spec: {{containers: [{{name: c, image: busybox}}]}}\n"
    );
    c.apply(parse(&squatter).into_iter().map(Command::Create).collect());
    c.settle(|_| {});
    let d = c.deployment();
    assert_eq!(d.status.collision_count, Some(1));
    let sets = c.sets();
    assert_eq!(sets.len(), 1);
    assert_eq!(sets[0].metadata.name, format!("web-{}", template_hash(&d.spec.template, Some(1))));
    assert_ne!(sets[0].metadata.name, taken);
    assert_eq!(c.active_pods().len(), 1);
}

/// A round that runs again on the state from before its earlier proposals applied (their
/// outcome unknown) proposes the same writes, and the state machine refuses the repeats: no
/// second set, no size applied twice.
#[test]
fn a_round_repeated_on_a_stale_state_changes_nothing_twice() {
    let mut c = Cluster::new(&deployment(3, "{type: RollingUpdate}"));
    c.settle(|_| {});
    c.edit(|d| d.spec.template.spec.containers[0].image = "nginx:2".into());
    let changed = std::mem::take(&mut c.for_deployments.0);
    let stale = c.w.state.clone();
    let first = c.deployments.reconcile(&stale, c.w.now_ms, false, &changed, &[]);
    assert!(first.iter().any(|cmd| matches!(cmd, Command::Create(Object::ReplicaSet(_)))), "{first:?}");
    let unknown: Vec<(Command, Fate)> = first.iter().map(|cmd| (cmd.clone(), Fate::Unknown)).collect();
    let again = c.deployments.reconcile(&stale, c.w.now_ms, false, &changed, &unknown);
    assert_eq!(again, first, "the same decisions from the same state");
    let applied: Vec<Outcome> = c.w.apply(first);
    assert!(applied.iter().all(Result::is_ok), "{applied:?}");
    let repeated = c.w.apply(again);
    assert!(repeated.iter().all(Result::is_err), "every repeat refused: {repeated:?}");
    assert_eq!(c.sets().len(), 2);
}

const GOLDEN_HASH: &str = "785ff75df5";

/// The hash is a function of the template and the collision count only.
#[test]
fn the_template_hash_is_stable() {
    let d = parse(&deployment(1, "{type: Recreate}"));
    let Object::Deployment(d) = &d[0] else { panic!("a deployment") };
    let hash = template_hash(&d.spec.template, None);
    // Pinned: the hash names the sets already stored, so a change of the template's JSON form
    // (a field renamed or reordered) must be deliberate.
    assert_eq!(hash, GOLDEN_HASH);
    assert_ne!(hash, template_hash(&d.spec.template, Some(1)));
    let mut other = d.spec.template.clone();
    other.metadata.labels.insert("tier", "front");
    assert_ne!(hash, template_hash(&other, None));
    let mut with_hash = d.spec.template.clone();
    with_hash.metadata.labels.insert(POD_TEMPLATE_HASH_LABEL, hash.clone());
    assert!(same_template(&with_hash, &d.spec.template));
    assert!(!same_template(&other, &d.spec.template));
}

/// With `minReadySeconds`, a new pod counts only once Ready that long: old pods go no faster
/// (maxUnavailable 0 keeps every replica available throughout, counting availability so).
#[test]
fn a_rolling_update_waits_min_ready_seconds_for_each_new_pod() {
    let strategy = "{type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}";
    let mut c = Cluster::new(&deployment(3, strategy));
    c.edit(|d| d.spec.min_ready_seconds = Some(10));
    c.settle(|_| {});
    assert_eq!(c.deployment().status.available_replicas, Some(3));
    c.bounds = Some((4, 3, 10));
    let started = c.w.now_ms;
    c.edit(|d| d.spec.template.spec.containers[0].image = "nginx:2".into());
    c.settle(|_| {});
    assert_eq!(c.images(), BTreeMap::from([("nginx:2".to_owned(), 3)]));
    assert!(c.w.now_ms - started >= 30_000, "three new pods, one at a time, 10 s each");
    assert_eq!(progressing(&c.deployment()), (ConditionStatus::True, NEW_RS_AVAILABLE.to_owned()));
}

/// Scaled down in the middle of a rollout, the sets shrink in proportion; scaled to zero,
/// every set goes to zero.
#[test]
fn scaling_down_during_a_rollout_is_proportional_and_zero_empties_every_set() {
    let mut c = stuck_mid_rollout();
    let key = ObjectKey::new(Kind::Deployment, "default", "web");
    c.apply(vec![Command::Scale { key: key.clone(), replicas: 5 }]);
    c.step();
    // 5 + 3 (maxSurge) = 8 allowed of 13: take 5.
    let sizes: Vec<i32> = c.sets().iter().map(|rs| rs.spec.replicas.unwrap_or(0)).collect();
    assert_eq!(sizes.iter().sum::<i32>(), 8, "{sizes:?}");
    assert_eq!(sizes, vec![6, 2], "round(10 * 8 / 13) = 6, round(3 * 8 / 13) = 2");
    c.apply(vec![Command::Scale { key, replicas: 0 }]);
    c.settle(|_| {});
    let sizes: Vec<i32> = c.sets().iter().map(|rs| rs.spec.replicas.unwrap_or(0)).collect();
    assert_eq!(sizes, vec![0, 0]);
    assert!(c.active_pods().is_empty());
}

/// What a client may write does not break the controller: a set claiming the largest
/// revision, and a set in another namespace naming the Deployment as its controller (owner
/// references never cross namespaces: it is not the Deployment's).
#[test]
fn hostile_sets_neither_break_nor_join_a_deployment() {
    let mut c = Cluster::new(&deployment(1, "{type: RollingUpdate}"));
    c.settle(|_| {});
    let uid = c.deployment().metadata.uid.expect("uid");
    let set = |namespace: &str, name: &str, revision: &str| {
        format!(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  \
             annotations: {{deployment.kubernetes.io/revision: '{revision}'}}\n  \
             ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: web, uid: '{uid}', controller: true}}]\n\
             spec:\n  replicas: 0\n  selector: {{matchLabels: {{app: odd}}}}\n  template:\n    \
             metadata: {{labels: {{app: odd}}}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n"
        )
    };
    let other = "apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n";
    let yaml = format!("{other}---\n{}---\n{}", set("default", "max", &i64::MAX.to_string()), set("other", "far", "5"));
    let fates = c.apply(parse(&yaml).into_iter().map(Command::Create).collect());
    assert!(fates.iter().all(|(_, f)| matches!(f, Fate::Applied(Ok(_)))), "{fates:?}");
    c.edit(|d| d.spec.template.spec.containers[0].image = "nginx:2".into());
    c.settle(|_| {});
    assert_eq!(c.images(), BTreeMap::from([("nginx:2".to_owned(), 1)]));
    let names: Vec<String> = c.sets().iter().map(|rs| rs.metadata.name.to_string()).collect();
    assert!(!names.contains(&"far".to_owned()), "{names:?}");
    assert!(names.contains(&"max".to_owned()), "{names:?}");
}

/// `revision-history` grows by one revision per reuse, and past its cap loses the oldest.
#[test]
fn the_revision_history_is_capped_oldest_first() {
    assert_eq!(with_revision(None, 1), "1");
    assert_eq!(with_revision(Some("1,3"), 5), "1,3,5");
    let long: String = (1..=600).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
    let capped = with_revision(Some(&long), 601);
    assert!(capped.len() <= REVISION_HISTORY_MAX_CHARS, "{}", capped.len());
    assert!(capped.ends_with(",600,601") && !capped.starts_with("1,"), "{capped}");
}

/// `maxSurge` or `maxUnavailable` as written: a count, or a percentage of the replicas.
fn fencepost(n: u8, percent: bool) -> String {
    if percent { format!("'{}%'", [0, 25, 50, 100][usize::from(n % 4)]) } else { (n % 4).to_string() }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..Default::default() })]

    /// However the pods come up (a seeded, slow kubelet) and whatever the fenceposts, a
    /// rolling update never has more than replicas + maxSurge active pods nor fewer than
    /// replicas - maxUnavailable available ones after any entry, including when the template
    /// changes again mid-rollout; it ends with every replica on the last template. The bounds
    /// are resolved here from Kubernetes' rule (surge rounded up, unavailable down, never
    /// both zero), not by the controller's code.
    #[test]
    fn a_rolling_update_keeps_its_bounds_at_every_step(
        replicas in 1i32..9,
        surge in 0u8..4,
        unavailable in 0u8..4,
        percent in proptest::bool::ANY,
        seed in proptest::num::u64::ANY,
        again_after in proptest::option::of(0usize..12),
    ) {
        let strategy = format!(
            "{{type: RollingUpdate, rollingUpdate: {{maxSurge: {}, maxUnavailable: {}}}}}",
            fencepost(surge, percent),
            fencepost(unavailable, percent)
        );
        let resolve = |n: u8, up: bool| -> i32 {
            if !percent {
                return i32::from(n % 4);
            }
            let scaled = [0, 25, 50, 100][usize::from(n % 4)] * replicas;
            if up { (scaled + 99) / 100 } else { scaled / 100 }
        };
        let most = replicas + resolve(surge, true);
        let mut least_unavailable = resolve(unavailable, false);
        if most == replicas && least_unavailable == 0 {
            least_unavailable = 1;
        }
        let fewest = (replicas - least_unavailable).max(0);
        if surge % 4 == 0 && unavailable % 4 == 0 {
            // Refused by validation, as in Kubernetes: both may not be zero as written.
            return Ok(());
        }
        let mut c = Cluster::new(&deployment(replicas, &strategy));
        c.slow = Some(seed);
        c.settle(|_| {});
        proptest::prop_assert_eq!(c.images(), BTreeMap::from([("nginx:1".to_owned(), replicas as usize)]));
        c.bounds = Some((most as usize, fewest as usize, 0));
        c.edit(|d| d.spec.template.spec.containers[0].image = "nginx:2".into());
        let mut last = "nginx:2";
        if let Some(steps) = again_after {
            for _ in 0..steps {
                c.step();
            }
            c.edit(|d| d.spec.template.spec.containers[0].image = "nginx:3".into());
            last = "nginx:3";
        }
        c.settle(|_| {});
        proptest::prop_assert_eq!(c.images(), BTreeMap::from([(last.to_owned(), replicas as usize)]));
        proptest::prop_assert_eq!(progressing(&c.deployment()), (ConditionStatus::True, NEW_RS_AVAILABLE.to_owned()));
    }
}
